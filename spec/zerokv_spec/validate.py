"""Argument checks shared by the spec's modules, and importable by the implementation.

This module owns the one spelling of "an int >= 1": ``positive_int``. Every size in a
configuration (capacities, ``env_num``, ``num_layers``, ``num_simulations``...) goes
through it, so the same bad value raises the same ``ConfigError`` with the same message
wherever it is given. (The implementation's ``zerokv.rows`` and ``zerokv.slab`` check tensors; this
module checks plain values and needs only the standard library.)
"""

from __future__ import annotations

from zerokv_spec.errors import ConfigError

__all__ = ["positive_int"]


def positive_int(value: object, name: str) -> int:
    """``value`` if it is an int >= 1 (a bool is not); else ``ConfigError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
    return value
