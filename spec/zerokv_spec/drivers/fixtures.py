"""Fixtures: entries and correction tables whose values say who wrote them.

``token`` / ``make_entry`` name each token's row, layer and position; ``tagged_entry``
names the environment, key and step of a manager store (``entry_env`` reads it back).
"""

from __future__ import annotations

from zerokv_spec.entry import Correction, Entry


def token(row: int, layer: int, position: int, sign: float = 1.0) -> float:
    """A nonzero token value that names its row, layer and position (V tokens: negative)."""
    return sign * float(1 + 100 * row + 10 * layer + position)


def make_entry(row: int, size: int, layers: int) -> Entry:
    """An entry whose tokens name ``(row, layer, position)``."""
    k = tuple(tuple(token(row, layer, j) for j in range(size)) for layer in range(layers))
    v = tuple(tuple(token(row, layer, j, -1.0) for j in range(size)) for layer in range(layers))
    return Entry(k, v)


def make_correction(layers: int, context_length: int) -> Correction:
    """A correction table with distinct, exactly representable values."""
    n = context_length - 3
    k = tuple(tuple(0.5 + layer + 0.25 * j for j in range(n)) for layer in range(layers))
    v = tuple(tuple(-0.5 - layer - 0.25 * j for j in range(n)) for layer in range(layers))
    return Correction(k, v)


def tagged_entry(env_id: int, key: int, step: int) -> Entry:
    """A 1-layer, 3-token entry naming who wrote it: K tokens ``(env_id, key, step)``."""
    return Entry(((float(env_id), float(key), float(step)),), ((float(step), 0.0, 0.0),))


def entry_env(entry: object) -> int:
    """The environment id a ``tagged_entry`` names (-1 for anything else)."""
    return int(entry.k[0][0]) if isinstance(entry, Entry) else -1
