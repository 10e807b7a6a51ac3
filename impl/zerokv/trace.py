"""Per-row tracing: the one switch for zerokv's per-row debug records.

zerokv logs through ``logging.getLogger("zerokv")``. Per-call summaries (a pool cleared, a
manager built) follow the logging level as usual. **Per-row records** - one record per
looked-up or stored row, naming its key, tier and slot - are different: forming them reads
the rows' keys and slots from the device (one synchronisation per call on CUDA) and formats
one string per row. So they are never formed because of a logging level alone. LightZero's
world model sets the *root* logger to DEBUG when it is imported
(``lzero/model/unizero_world_models/world_model.py``); a search script, a notebook or a
test that imports it would otherwise pay that on every call (measured: LightZero's
CartPole collect step 427 ms instead of 65 ms, 8 environments x 25 simulations).

Per-row records are formed only when tracing is switched on *and* the ``zerokv`` logger is
enabled for DEBUG:

* ``ZEROKV_TRACE=1`` in the environment (read once, at import), or
* ``zerokv.trace.set_tracing(True)`` / ``with zerokv.trace.tracing(): ...`` in code.

**What it costs:** on the CPU about 5 us per row and call (a Python record per row); on
CUDA additionally one device-to-host synchronisation per traced call. Use it to debug a
cache, never to measure one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from zerokv.errors import ConfigError

__all__ = ["ENV_VAR", "per_row", "set_tracing", "tracing", "tracing_enabled"]

#: The environment variable that switches tracing on at import ("1", "true", "yes", "on").
ENV_VAR = "ZEROKV_TRACE"

_on = os.environ.get(ENV_VAR, "").strip().lower() in ("1", "true", "yes", "on")


def tracing_enabled() -> bool:
    """Whether per-row tracing is switched on (the level decides the rest)."""
    return _on


def set_tracing(on: bool) -> None:
    """Switch per-row tracing on or off for the whole process."""
    global _on
    if not isinstance(on, bool):
        raise ConfigError(f"set_tracing takes a bool, got {on!r}")
    _on = on


@contextmanager
def tracing(on: bool = True) -> Iterator[None]:
    """Per-row tracing switched ``on`` (or off) inside a ``with`` block."""
    if not isinstance(on, bool):
        raise ConfigError(f"tracing takes a bool, got {on!r}")
    before = _on
    set_tracing(on)
    try:
        yield
    finally:
        set_tracing(before)


def per_row(logger: logging.Logger) -> bool:
    """Whether a hot path may form per-row records on ``logger``: tracing is on and the
    logger is enabled for DEBUG. One bool test when tracing is off (the default)."""
    return _on and logger.isEnabledFor(logging.DEBUG)
