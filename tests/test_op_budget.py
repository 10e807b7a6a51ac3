"""The device path's op count per simulation step: measured, fixed, and independent of B
and of the pool sizes.

The count is what ``zerokv.bench``'s ``DispatchCounter`` sees for one simulation step
(keys of the parents, lookup, ``gather_reserve``, the model's write, keys of the children,
store) with the device index and the CPU shortcuts off: exactly the ops CUDA launches.
The budget pins today's count, so a change that adds ops (or makes the count grow with B)
fails here and has to say why; the last test shows the counter sees an added op.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from zerokv import CacheConfig, CacheManager, Correction, checks
from zerokv.bench.workload import DispatchCounter

#: Ops per simulation step at the Atari shape on the device path, as measured: 203, of
#: which the model's write takes 2 and ``with_length`` 8 (a bit mask through int views: two
#: more view ops than ``masked_fill_``, and 8x faster on the CPU). (Before the rewrite that
#: made the count independent of B, the phases alone took 396 at B=8 and grew with B.)
BUDGET = 203


def _setup(envs: int, capacity: int) -> tuple[CacheManager, Callable[[], None]]:
    cfg = CacheConfig.legacy(
        env_num=envs,
        num_layers=2,
        num_heads=8,
        head_dim=96,
        context_length=8,
        num_simulations=capacity,
        index="device",
    )
    mgr = CacheManager(cfg)
    gen = torch.Generator().manual_seed(0)
    env_ids = list(range(envs))
    table = torch.randn(2, 2, 8, 5, 96, generator=gen)
    correction = Correction(table)
    latents = [torch.randn(envs, 64, generator=gen) for _ in range(4)]
    tokens = torch.randn(2, 2, envs, 8, 1, 96, generator=gen)

    def step(parents: torch.Tensor, children: torch.Tensor) -> None:
        keys, fps = mgr.keys_of(parents)
        found = mgr.lookup_many(env_ids, keys, fps)
        batch = mgr.gather_reserve(found, 1)
        batch.kv[:, :, :, :, -1:, :] = tokens
        batch = batch.with_length(found.tier == 0, 1)
        child_keys, child_fps = mgr.keys_of(children)
        mgr.store_recurrent_batch(env_ids, child_keys, batch, correction, child_fps)

    # Root entries for the parents, and a warm-up step (caches per env tuple and shape).
    keys, fps = mgr.keys_of(latents[0])
    found = mgr.lookup_many(env_ids, keys, fps, tiers="root")
    mgr.store_root_batch(env_ids, keys, mgr.gather_reserve(found, 1), correction, fps)
    step(latents[0], latents[1])
    return mgr, lambda: step(latents[1], latents[2])


def ops_per_sim_step(envs: int = 8, capacity: int = 25) -> int:
    _, step = _setup(envs, capacity)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(checks, "CPU_SHORTCUTS", False)
        counter = DispatchCounter()
        with counter:
            step()
    return counter.ops


def test_atari_sim_step_fits_the_budget() -> None:
    ops = ops_per_sim_step()
    assert 0 < ops <= BUDGET, f"{ops} ops per simulation step (budget {BUDGET})"


@pytest.mark.parametrize(("envs", "capacity"), [(2, 25), (16, 25), (8, 5), (8, 100)])
def test_op_count_does_not_grow_with_batch_or_pool_size(envs: int, capacity: int) -> None:
    assert ops_per_sim_step(envs, capacity) == ops_per_sim_step()


def test_the_counter_sees_an_added_op(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: one extra op in every lookup; the count must move by exactly that."""
    base = ops_per_sim_step()
    original = CacheManager.lookup_many

    def with_extra(self: CacheManager, *args: object, **kwargs: object) -> object:
        torch.zeros(1).add_(1)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(CacheManager, "lookup_many", with_extra)
    assert ops_per_sim_step() == base + 2  # zeros + add_
