"""The thread rule of zerokv's stateful objects: one call at a time, refused, never waited.

A ``CacheManager`` or a ``SearchCache`` changes its index, slab and counters together in
one call, and nothing serialises two calls. So every public method runs under
``exclusive``: it takes the object's re-entrant lock (``_busy``) *without waiting*, and a
second thread that finds it held gets ``ConcurrentUseError`` with nothing changed. The
guard costs one uncontended acquire and release per call.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from zerokv.errors import ConcurrentUseError

__all__ = ["Guarded", "exclusive"]


class Guarded(Protocol):
    """An object whose public methods are ``exclusive``: it holds the lock ``_busy``."""

    _busy: threading.RLock


P = ParamSpec("P")
R = TypeVar("R")
G = TypeVar("G", bound=Guarded)


def exclusive(method: Callable[Concatenate[G, P], R]) -> Callable[Concatenate[G, P], R]:
    """Run ``method`` holding the object's lock, or refuse at once (module docstring)."""

    @functools.wraps(method)
    def guarded(self: G, /, *args: P.args, **kwargs: P.kwargs) -> R:
        if not self._busy.acquire(blocking=False):
            name = type(self).__name__
            raise ConcurrentUseError(
                f"{name}.{method.__name__} called while another thread is inside this "
                f"{name}; it is not thread-safe (one per thread, or serialise the calls)"
            )
        try:
            return method(self, *args, **kwargs)
        finally:
            self._busy.release()

    return guarded
