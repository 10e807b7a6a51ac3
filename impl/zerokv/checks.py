"""Runtime contracts of the implementation: off by default, free when off.

When ``ENABLED`` is true (tests switch it on with ``enabled()``), every mutating index
operation re-checks the index's invariants afterwards (``SlotIndex.check``: key <-> slot
bijection, clean empty slots, pointer and recency ranges, statistics identities) and the
manager checks slot and length ranges of what it writes. The checks read device values,
so they synchronise; with ``ENABLED`` false the hot path only tests one module attribute.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["CPU_SHORTCUTS", "ENABLED", "enabled", "host_reads_are_free", "shortcuts"]

ENABLED = False

#: On the CPU a "device" value is already in host memory, so the hot path may look at one
#: to skip work (stop the FIFO fixed point early, skip a gather). On CUDA it never does.
#: Tests switch this off to run the exact CUDA code path on the CPU and prove it
#: synchronisation-free (tests/test_sync_free.py).
CPU_SHORTCUTS = True


def host_reads_are_free(device: torch.device) -> bool:
    """Whether the hot path may read a value of ``device`` on the host at no cost."""
    return CPU_SHORTCUTS and device.type == "cpu"


@contextmanager
def shortcuts(on: bool = True) -> Iterator[None]:
    """Switch the CPU shortcuts on (or off: the exact CUDA code path) inside a ``with``
    block."""
    global CPU_SHORTCUTS
    previous = CPU_SHORTCUTS
    CPU_SHORTCUTS = on
    try:
        yield
    finally:
        CPU_SHORTCUTS = previous


@contextmanager
def enabled(on: bool = True) -> Iterator[None]:
    """Switch the runtime contracts on (or off) inside a ``with`` block."""
    global ENABLED
    previous = ENABLED
    ENABLED = on
    try:
        yield
    finally:
        ENABLED = previous
