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

#: Ops per simulation step at the Atari shape on the device path, as measured: 139, of
#: which the model's write takes 2, its miss mask 1 and ``with_length`` 7, and 30 are views
#: (no kernel launched on a GPU: ``VIEWS``). History: 396 at B=8 before the rewrite that
#: made the count independent of B; 201 after it (203 with the one-time descriptor copy
#: that the warm-up, run with the CPU shortcuts on, used to leave to the measured step);
#: 166 after the op trims of docs/architecture.md ("Ops per simulation step"); 139 with
#: zkv64 without a finaliser (11 ops per ``keys_of``) and the FIFO put's trims.
BUDGET = 139
VIEWS = 30


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


def _count(envs: int, capacity: int) -> DispatchCounter:
    with pytest.MonkeyPatch.context() as m:
        # Set up on the device path too: its warm-up fills the caches the step reads.
        m.setattr(checks, "CPU_SHORTCUTS", False)
        _, step = _setup(envs, capacity)
        counter = DispatchCounter()
        with counter:
            step()
    return counter


def ops_per_sim_step(envs: int = 8, capacity: int = 25) -> int:
    return _count(envs, capacity).ops


def test_atari_sim_step_fits_the_budget() -> None:
    counter = _count(8, 25)
    ops, views = counter.ops, counter.views
    assert 0 < ops <= BUDGET, f"{ops} ops per simulation step (budget {BUDGET})"
    assert 0 < views <= VIEWS, f"{views} of the {ops} ops are views (at most {VIEWS})"


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


def test_the_counter_tells_views_from_computing_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: one view among three ops in every lookup: the ops move by three, the views
    by one."""
    base = _count(8, 25)
    original = CacheManager.lookup_many

    def with_extra(self: CacheManager, *args: object, **kwargs: object) -> object:
        torch.zeros(2).unsqueeze(0).neg()
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(CacheManager, "lookup_many", with_extra)
    planted = _count(8, 25)
    assert (planted.ops, planted.views) == (base.ops + 3, base.views + 1)
