"""The hot path (hash -> lookup -> gather -> append -> split/window -> store) never reads a
device value on the host.

On CUDA this is checked directly with ``torch.cuda.set_sync_debug_mode("error")`` (skipped
without a GPU). On the CPU every tensor method that would synchronise on a GPU is replaced
by one that records the call, the CPU-only shortcuts are switched off
(``contracts.CPU_SHORTCUTS``: the code then takes exactly the CUDA path), and the hot path
must record nothing. A last test shows the instrument bites: with the shortcuts on, the
same run records the CPU-only host reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch

from zerokv import CacheConfig, CacheManager, Correction, append, contracts

# Tensor methods whose result lives on the host: each one synchronises on CUDA.
SYNCING_METHODS = (
    "item",
    "tolist",
    "cpu",
    "numpy",
    "nonzero",
    "unique",
    "__bool__",
    "__int__",
    "__float__",
    "__index__",
    "equal",
)
SYNCING_FUNCTIONS = ("equal", "nonzero", "unique", "masked_select")


@contextmanager
def record_host_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Replace every syncing method/function with a wrapper that records its name."""
    calls: list[str] = []

    def wrap(name: str, original: Callable[..., object]) -> Callable[..., object]:
        def recorder(*args: object, **kwargs: object) -> object:
            calls.append(name)
            return original(*args, **kwargs)

        return recorder

    with monkeypatch.context() as m:
        for name in SYNCING_METHODS:
            m.setattr(torch.Tensor, name, wrap(f"Tensor.{name}", getattr(torch.Tensor, name)))
        for name in SYNCING_FUNCTIONS:
            m.setattr(torch, name, wrap(f"torch.{name}", getattr(torch, name)))
        yield calls


def _manager(device: str) -> CacheManager:
    # The device-resident index: the code path CUDA runs (the CPU default is the host index).
    cfg = CacheConfig.legacy(
        env_num=4,
        num_layers=2,
        num_heads=2,
        head_dim=4,
        context_length=8,
        num_simulations=3,
        device=device,
        index="device",
    )
    return CacheManager(cfg)


def _hot_path(mgr: CacheManager, steps: int) -> None:
    """Root step then ``steps`` simulations, as UniZero runs them (all batched)."""
    cfg = mgr.config
    dev = mgr.device
    gen = torch.Generator(device="cpu").manual_seed(0)
    env_ids = [0, 1, 2, 3]
    rows = len(env_ids)
    corr = Correction(
        torch.randn(
            cfg.num_layers, 2, cfg.num_heads, cfg.context_length - 3, cfg.head_dim, generator=gen
        ).to(dev)
    )

    def tokens() -> torch.Tensor:
        shape = (cfg.num_layers, 2, rows, cfg.num_heads, 2, cfg.head_dim)
        return torch.randn(shape, generator=gen).to(dev)

    root = torch.randn(rows, 16, generator=gen).to(dev)
    keys, fps = mgr.keys_of(root)
    found = mgr.lookup(env_ids, keys, fps, tiers="root")
    batch = append(mgr.gather(found), tokens(), cfg.context_length)
    mgr.store_root_batch(env_ids, keys, batch, corr, fps)
    parents = root
    for _ in range(steps):
        keys, fps = mgr.keys_of(parents)
        found = mgr.lookup(env_ids, keys, fps)
        batch = append(mgr.gather(found), tokens(), cfg.context_length)
        children = torch.randn(rows, 16, generator=gen).to(dev)
        child_keys, child_fps = mgr.keys_of(children)
        mgr.store_recurrent_batch(env_ids, child_keys, batch, corr, child_fps)
        parents = children


def test_cpu_hot_path_reads_nothing_on_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    mgr = _manager("cpu")
    _hot_path(mgr, 1)  # warm caches (env-id tensors, hash tables) outside the check
    monkeypatch.setattr(contracts, "CPU_SHORTCUTS", False)
    with record_host_reads(monkeypatch) as calls:
        _hot_path(mgr, 3)
    assert calls == []
    # The work really happened: lookups were counted and the recurrent pool filled.
    stats = mgr.stats()
    assert stats.queries == 2 * 4 + 4 * 4 and stats.hits > 0
    assert sum(k is not None for k in mgr.recurrent_slot_keys()) == 12


def test_instrument_catches_host_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    mgr = _manager("cpu")
    _hot_path(mgr, 1)
    monkeypatch.setattr(contracts, "CPU_SHORTCUTS", True)
    with record_host_reads(monkeypatch) as calls:
        _hot_path(mgr, 3)
    # The CPU-only shortcuts read device values (free on a CPU): the instrument sees them.
    assert calls, "the instrument recorded nothing although the CPU shortcuts read values"
    with record_host_reads(monkeypatch) as calls:
        mgr.stats()
    assert "Tensor.tolist" in calls


@pytest.mark.cuda
def test_cuda_hot_path_is_sync_free() -> None:
    mgr = _manager("cuda")
    _hot_path(mgr, 1)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        _hot_path(mgr, 3)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert mgr.stats().queries == 2 * 4 + 4 * 4
