"""The index backends a test runs a cache on, by name (no hypothesis needed).

* ``"host"`` - the host index (``HostIndex``), a CPU cache's default;
* ``"device"`` - the device-resident index (``SlotIndex``) with the CPU shortcuts on;
* ``"device-exact"`` - the same with the shortcuts off: exactly the code path CUDA runs;
* ``COMPILED`` - the device index with compiled kernels (``CacheConfig(compile=True)``),
  which tests run on their own (compilation is slow): pass ``compile=name == COMPILED``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from zerokv import checks

__all__ = ["BACKENDS", "COMPILED", "backend", "index_of", "shortcuts_of"]

BACKENDS: tuple[str, ...] = ("device", "device-exact", "host")
COMPILED = "compiled"


def index_of(name: str) -> str:
    """The ``index=`` argument of a cache on backend ``name``."""
    return "host" if name == "host" else "device"


def shortcuts_of(name: str) -> bool:
    """Whether the CPU shortcuts are on for backend ``name``."""
    return name != "device-exact"


@contextmanager
def backend(name: str) -> Iterator[str]:
    """The CPU shortcuts set for backend ``name`` inside the block; yields its ``index=``."""
    with checks.shortcuts(shortcuts_of(name)):
        yield index_of(name)
