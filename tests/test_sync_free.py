"""The hot path (hash -> lookup -> gather -> append, or gather_reserve and in-place writes ->
split/window -> store) never reads a device value on the host.

On CUDA this is checked directly with ``torch.cuda.set_sync_debug_mode("error")`` (skipped
without a GPU). On the CPU every tensor method that would synchronise on a GPU is replaced
by one that records the call, the CPU-only shortcuts are switched off
(``checks.CPU_SHORTCUTS``: the code then takes exactly the CUDA path), and the hot path
must record nothing. A last test shows the instrument bites: with the shortcuts on, the
same run records the CPU-only host reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import torch

from zerokv import CacheConfig, CacheManager, Correction, append, checks

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


def _manager(device: str, compile: bool = False) -> CacheManager:
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
        compile=compile,
    )
    return CacheManager(cfg)


@dataclass(frozen=True)
class Inputs:
    """Everything the model would produce, made on the device before the checked region."""

    correction: Correction
    root: torch.Tensor
    tokens: list[torch.Tensor]
    children: list[torch.Tensor]


def _inputs(mgr: CacheManager, steps: int) -> Inputs:
    cfg = mgr.config
    dev = mgr.device
    gen = torch.Generator(device="cpu").manual_seed(0)
    rows = 4
    table = torch.randn(
        cfg.num_layers, 2, cfg.num_heads, cfg.context_length - 3, cfg.head_dim, generator=gen
    )
    shape = (cfg.num_layers, 2, rows, cfg.num_heads, 2, cfg.head_dim)
    return Inputs(
        Correction(table.to(dev)),
        torch.randn(rows, 16, generator=gen).to(dev),
        [torch.randn(shape, generator=gen).to(dev) for _ in range(steps + 1)],
        [torch.randn(rows, 16, generator=gen).to(dev) for _ in range(steps)],
    )


def _hot_path(mgr: CacheManager, inputs: Inputs) -> None:
    """Root step then one simulation per prepared child, as UniZero runs them (batched)."""
    cl = mgr.config.context_length
    env_ids = [0, 1, 2, 3]
    keys, fps = mgr.keys_of(inputs.root)
    found = mgr.lookup_many(env_ids, keys, fps, tiers="root")
    batch = append(mgr.gather(found), inputs.tokens[0], cl)
    mgr.store_root_batch(env_ids, keys, batch, inputs.correction, fps)
    parents = inputs.root
    for tokens, children in zip(inputs.tokens[1:], inputs.children, strict=True):
        keys, fps = mgr.keys_of(parents)
        found = mgr.lookup_many(env_ids, keys, fps)
        batch = mgr.gather_reserve(found, tokens.shape[4])  # room for the model's tokens
        batch.kv[:, :, :, :, -tokens.shape[4] :, :] = tokens  # the model writes in place
        # A miss row's fresh entry (here: the new tokens and one zero column) sets its length.
        batch = batch.with_length(found.tier == 0, tokens.shape[4] + 1)
        child_keys, child_fps = mgr.keys_of(children)
        mgr.store_recurrent_batch(env_ids, child_keys, batch, inputs.correction, child_fps)
        parents = children


def test_cpu_hot_path_reads_nothing_on_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    mgr = _manager("cpu")
    _hot_path(mgr, _inputs(mgr, 1))  # warm caches (env-id tensors, hash tables) first
    monkeypatch.setattr(checks, "CPU_SHORTCUTS", False)
    inputs = _inputs(mgr, 3)
    with record_host_reads(monkeypatch) as calls:
        _hot_path(mgr, inputs)
    assert calls == []
    # The work really happened: lookups were counted and the recurrent pool filled.
    stats = mgr.stats()
    assert stats.queries == 2 * 4 + 4 * 4 and stats.hits > 0
    assert sum(k is not None for k in mgr.recurrent_slot_keys()) == 12


@pytest.mark.compiled
def test_compiled_kernels_take_no_host_shortcut(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compiled kernels run the CUDA code path on the CPU too: with the CPU shortcuts left
    on, nothing on the hot path reads a device value (``Kernels.shortcuts``)."""
    mgr = _manager("cpu", compile=True)
    assert checks.CPU_SHORTCUTS
    inputs = _inputs(mgr, 3)
    _hot_path(mgr, inputs)  # compiles every signature of the run (compiling reads values)
    mgr.clear_all()
    mgr.reset_stats()
    with record_host_reads(monkeypatch) as calls:
        _hot_path(mgr, inputs)
    assert calls == []
    assert mgr.stats().queries == 4 + 3 * 4  # the root step, then three simulations


def test_instrument_catches_host_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    mgr = _manager("cpu")
    _hot_path(mgr, _inputs(mgr, 1))
    monkeypatch.setattr(checks, "CPU_SHORTCUTS", True)
    inputs = _inputs(mgr, 3)
    with record_host_reads(monkeypatch) as calls:
        _hot_path(mgr, inputs)
    # The CPU-only shortcuts read device values (free on a CPU): the instrument sees them.
    assert calls, "the instrument recorded nothing although the CPU shortcuts read values"
    with record_host_reads(monkeypatch) as calls:
        mgr.stats()
    assert "Tensor.tolist" in calls


@pytest.mark.cuda
def test_cuda_hot_path_is_sync_free() -> None:
    mgr = _manager("cuda")
    _hot_path(mgr, _inputs(mgr, 1))
    inputs = _inputs(mgr, 3)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        _hot_path(mgr, inputs)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert mgr.stats().queries == 2 * 4 + 4 * 4
