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

__all__ = ["ENABLED", "enabled"]

ENABLED = False


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
