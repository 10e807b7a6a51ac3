"""Which executor runs the hot path's kernels: eager torch, or ``torch.compile``.

The tensor work of every hot-path phase is a **kernel**: a pure function of tensors and
static Python values (ints, bools, None) that mutates only the state tensors it is handed,
in place, and never reads a device value on the host. Each kernel lives with the concept
it computes:

==========================================  =============================================
kernel                                      phase of a simulation step
==========================================  =============================================
``zerokv.keys.zkv64_mix``                   ``keys_of``: hash the latents' words
``zerokv.index.device.lookup_tiers``        ``lookup_many``: every tier, in turn
``zerokv.slab.gather_rows``                 ``gather_reserve`` / ``gather_append``
``zerokv.index.device.fifo_put``            store: FIFO slots, evictions, index writes
``zerokv.slab.store_window``                store: window rule and the slab scatter
``zerokv.pool.put_and_store``               store into a FIFO device index: both above
==========================================  =============================================

The components around them (``CacheManager``, ``SlotIndex``, ``Slab``) keep everything that
is not tensor work: validation, host-side caches (row maps, pair masks, tables), host
counters, statistics bookkeeping, the thread guard. So the same kernels run in both modes,
and a kernel's eager run is the reference its compiled run is tested against.

This module owns the choice between the two: a ``Kernels`` value is called with a kernel
and returns what runs it, the function itself (``EAGER``) or its compiled version
(``compiled_kernels(device)``: ``torch.compile`` with ``fullgraph=True`` - a graph break
is an error, not a silent fallback - and ``dynamic=False``; inductor on the CPU,
``mode="reduce-overhead"`` (CUDA graphs) on CUDA). A compiled kernel is compiled once per
static signature (tensor shapes, which optional tensors are given, the static ints): an
MCTS step has one batch size per phase, so a search compiles each kernel once or twice.
``torch._dynamo``'s per-function recompile limit is raised to ``RECOMPILE_LIMIT`` so that
batches of other sizes (ready-env subsets) and every cache of a process get compiled code
too: dynamo's default of 8 signatures per function would make a ``fullgraph`` compile fail
at the ninth. Dynamo checks the signature that hit last first, so many signatures do not
slow a steady loop down.

**CUDA graphs.** Under ``"reduce-overhead"`` a kernel's results live in memory its CUDA graph
reuses: they stay valid until the same kernel runs again with the same signature (for
example the batch of one ``gather_reserve`` until the next one). The MCTS step uses each
result before that; a caller that keeps one longer clones it, or picks
``CacheConfig(compile_mode="default")`` (compiled kernels without CUDA graphs). The state
kernels update in place (index and slab tensors) is allocated once and marked static
(``Kernels.pin``), as CUDA graphs need.

``CacheConfig(compile=True)`` gives a manager compiled kernels. Compiled kernels take the
CUDA code path on every device: the CPU host shortcuts (``zerokv.checks``) are for the eager
kernels only (``Kernels.shortcuts``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import TypeVar, cast

import torch

from zerokv import checks
from zerokv.errors import ConfigError

__all__ = ["COMPILE_MODES", "EAGER", "RECOMPILE_LIMIT", "Kernels", "compiled_kernels"]

F = TypeVar("F", bound=Callable[..., object])

#: Signatures per kernel that get compiled code: ``torch._dynamo.config.recompile_limit``
#: (default 8) is raised to at least this when compiled kernels are first made, and
#: ``accumulated_recompile_limit`` to at least 16 times it. Past the limit a ``fullgraph``
#: compile raises (dynamo's ``FailOnRecompileLimitHit``) instead of running eagerly.
RECOMPILE_LIMIT = 256


class Kernels:
    """Runs kernels eagerly (``compiled`` False) or compiled (module docstring)."""

    def __init__(self, compiled: bool = False, mode: str | None = None) -> None:
        if not isinstance(compiled, bool):
            raise ConfigError(f"Kernels(compiled) must be a bool, got {compiled!r}")
        if mode is not None and mode not in COMPILE_MODES:
            raise ConfigError(f"compile mode must be None or one of {COMPILE_MODES}, got {mode!r}")
        if mode is not None and not compiled:
            raise ConfigError("a compile mode needs compiled=True")
        self.compiled = compiled
        #: ``torch.compile``'s mode (None: inductor's default; CUDA: "reduce-overhead").
        self.mode = mode
        self._done: dict[Callable[..., object], Callable[..., object]] = {}

    def __call__(self, kernel: F) -> F:
        """What runs ``kernel``: itself, or its compiled version (made once)."""
        if not self.compiled:
            return kernel
        done = self._done.get(kernel)
        if done is None:
            done = torch.compile(kernel, fullgraph=True, dynamic=False, mode=self.mode)
            self._done[kernel] = done
        return cast(F, done)

    def pin(self, *state: torch.Tensor) -> None:
        """Declare tensors that kernels update in place and that keep their address for
        the cache's life (index and slab state): under CUDA graphs
        (``mode="reduce-overhead"``) they are marked static, so a graph updates them
        where they are instead of copying them in and out (or declining to capture)."""
        if self.compiled and self.mode == "reduce-overhead":
            for tensor in state:
                torch._dynamo.mark_static_address(tensor)

    def shortcuts(self, device: torch.device) -> bool:
        """Whether a kernel's caller may take a CPU host shortcut: eager kernels only."""
        return not self.compiled and checks.host_reads_are_free(device)

    def __deepcopy__(self, memo: dict[int, object]) -> Kernels:
        return self  # an executor shared by caches, not state of any of them

    def __getstate__(self) -> dict[str, object]:
        # Compiled functions are not picklable; an unpickled executor compiles anew.
        return {"compiled": self.compiled, "mode": self.mode, "_done": {}}

    def __repr__(self) -> str:
        if not self.compiled:
            return "Kernels(eager)"
        return f"Kernels(compiled, mode={self.mode!r})"


#: The eager kernels: every cache's default.
EAGER = Kernels()


#: ``torch.compile``'s modes a cache may ask for (``CacheConfig.compile_mode``).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compiled_kernels(device: torch.device | str, mode: str | None = None) -> Kernels:
    """The compiled kernels for caches on ``device`` (one set per device and mode, shared
    by every cache there, so a kernel compiles once per signature per process). ``mode``
    None: ``"reduce-overhead"`` (CUDA graphs) on CUDA, inductor's default elsewhere.
    ``device`` may be a ``torch.device`` or its name; ``ConfigError`` for anything else
    and for an unknown mode."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"not a device: {device!r} ({err})") from None
    if mode is not None and mode not in COMPILE_MODES:
        raise ConfigError(f"compile mode must be None or one of {COMPILE_MODES}, got {mode!r}")
    return _compiled_kernels(dev, mode)


@lru_cache(maxsize=16)
def _compiled_kernels(device: torch.device, mode: str | None) -> Kernels:
    dynamo = torch._dynamo.config
    dynamo.recompile_limit = max(dynamo.recompile_limit, RECOMPILE_LIMIT)
    dynamo.accumulated_recompile_limit = max(
        dynamo.accumulated_recompile_limit, 16 * RECOMPILE_LIMIT
    )
    if mode is None:
        mode = "reduce-overhead" if device.type == "cuda" else None
    return Kernels(True, mode)
