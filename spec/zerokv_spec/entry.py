"""Entries and batches: assemble, append, split, the window rule, register removal.

A token is modelled as one number (``float``): the implementation stores a ``[H, d]``
vector per token and position, and the tests encode a token's identity into those values,
so that the implementation's tensors can be checked exactly against these sequences.

* ``Entry`` - what one cache slot holds: for every layer ``l < L`` a key sequence
  ``k[l]`` and a value sequence ``v[l]`` of the same length ``size`` (valid tokens, oldest
  first). An entry stored in a pool of context length ``cl`` has ``size <= cl``.
* ``Batch`` - ``B`` rows of width ``S`` for every layer. Row ``b`` holds ``lengths[b]``
  real tokens *right-aligned* (columns ``[S - lengths[b], S)``) after ``S - lengths[b]``
  zero tokens of left padding; ``mask()[b][j]`` is True exactly for real columns.

Rules (the domain facts of UniZero's cache, made exact):

* ``assemble(entries, width)`` - ``S = max(sizes)`` (or ``width``, which must be at least
  that); row ``b`` = ``S - s_b`` zeros, then the entry's tokens.
* ``append(batch, new_k, new_v, context_length)`` - the model writes ``t`` new tokens at
  columns ``[S, S + t)`` of every row. If ``S + t > cl`` the batch first drops its ``d``
  oldest columns, ``d = S + t - cl`` rounded up to even; when ``d >= S`` every row is
  emptied instead. Each row keeps the real tokens that survive.
* ``split(batch)`` - row ``b`` becomes the entry of its real tokens; no padding survives.
* ``window(entry, cl, correction)`` - when ``size >= cl - 1``: keep tokens ``[2, cl - 1)``
  (the oldest observation+action pair goes, and so does token ``cl - 1`` when
  ``size == cl``), add ``correction.k[l][j]`` / ``correction.v[l][j]`` to token ``j``, and
  the size becomes ``cl - 3``. Shorter entries are unchanged.
* ``remove_registers(batch, r)`` - drop the ``r`` newest columns: ``S' = S - r`` and
  ``lengths[b]' = max(0, lengths[b] - r)``.
* ``store_rows(batch, cl, correction)`` - what a store writes: ``window(split(batch))``.

Vocabulary: ``context_length`` (``cl``) bounds the tokens of an entry or a batch row;
``capacity`` always counts a pool's slots, never tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from zerokv_spec.errors import BatchError, ConfigError, EntryError

__all__ = [
    "MIN_CONTEXT_LENGTH",
    "Batch",
    "Correction",
    "Entry",
    "append",
    "assemble",
    "check_context_length",
    "overflow_drop",
    "remove_registers",
    "split",
    "store_rows",
    "validate_entry",
    "window",
]

Tokens = tuple[float, ...]
#: The window rule keeps ``cl - 3 >= 1`` tokens, so contexts are at least 4 long.
MIN_CONTEXT_LENGTH = 4


def check_context_length(context_length: int) -> None:
    """Raise ``ConfigError`` unless ``context_length`` is an int >= ``MIN_CONTEXT_LENGTH``."""
    if isinstance(context_length, bool) or not isinstance(context_length, int):
        raise ConfigError(f"context_length must be an int, got {type(context_length).__name__}")
    if context_length < MIN_CONTEXT_LENGTH:
        raise ConfigError(f"context_length must be >= {MIN_CONTEXT_LENGTH}, got {context_length}")


@dataclass(frozen=True)
class Entry:
    """Per layer, the key and value tokens of one cache entry (oldest first)."""

    k: tuple[Tokens, ...]
    v: tuple[Tokens, ...]

    def __post_init__(self) -> None:
        if len(self.k) < 1 or len(self.k) != len(self.v):
            raise EntryError(
                f"an entry needs the same number (>= 1) of K and V layers, "
                f"got {len(self.k)} and {len(self.v)}"
            )
        size = len(self.k[0])
        for layer in (*self.k, *self.v):
            if len(layer) != size:
                raise EntryError(
                    f"every layer of an entry must hold {size} tokens, got {len(layer)}"
                )

    @property
    def num_layers(self) -> int:
        return len(self.k)

    @property
    def size(self) -> int:
        return len(self.k[0])

    @staticmethod
    def empty(num_layers: int) -> Entry:
        """An entry with no tokens."""
        return Entry(tuple(() for _ in range(num_layers)), tuple(() for _ in range(num_layers)))


def validate_entry(entry: Entry, num_layers: int, context_length: int) -> None:
    """Raise ``EntryError`` unless ``entry`` fits a pool of this shape."""
    if not isinstance(entry, Entry):
        raise EntryError(f"expected an Entry, got {type(entry).__name__}")
    if entry.num_layers != num_layers:
        raise EntryError(f"entry has {entry.num_layers} layers, the cache has {num_layers}")
    if entry.size > context_length:
        raise EntryError(
            f"entry holds {entry.size} tokens, more than the context length {context_length}"
        )


@dataclass(frozen=True)
class Correction:
    """The window rule's per-layer, per-position additions (``cl - 3`` positions)."""

    k: tuple[Tokens, ...]
    v: tuple[Tokens, ...]

    @staticmethod
    def zero(num_layers: int, context_length: int) -> Correction:
        """The all-zero table (rotary positions need no correction)."""
        row = (0.0,) * (context_length - 3)
        return Correction((row,) * num_layers, (row,) * num_layers)

    def check(self, num_layers: int, context_length: int) -> None:
        """Raise ``BatchError`` unless the table has ``num_layers`` x ``cl - 3`` finite
        values (a NaN or an infinity would destroy every windowed entry it touches)."""
        if len(self.k) != num_layers or len(self.v) != num_layers:
            raise BatchError(
                f"correction needs {num_layers} layers, got {len(self.k)} K and {len(self.v)} V"
            )
        for layer in (*self.k, *self.v):
            if len(layer) != context_length - 3:
                raise BatchError(
                    f"correction needs {context_length - 3} positions per layer, got {len(layer)}"
                )
            if not all(math.isfinite(x) for x in layer):
                raise BatchError(f"correction values must be finite, got {layer}")


@dataclass(frozen=True)
class Batch:
    """``k[l][b][j]``: layer ``l``, row ``b``, column ``j`` (right-aligned, left-padded)."""

    k: tuple[tuple[Tokens, ...], ...]
    v: tuple[tuple[Tokens, ...], ...]
    lengths: tuple[int, ...]
    width: int

    def __post_init__(self) -> None:
        if len(self.k) < 1 or len(self.k) != len(self.v):
            raise BatchError(f"a batch needs equal K/V layer counts >= 1, got {len(self.k)}")
        rows = len(self.lengths)
        if self.width < 0 or any(not 0 <= n <= self.width for n in self.lengths):
            raise BatchError(f"lengths {self.lengths} do not fit width {self.width}")
        for layer in (*self.k, *self.v):
            if len(layer) != rows or any(len(row) != self.width for row in layer):
                raise BatchError(f"every layer must be {rows} rows of width {self.width}")

    @property
    def num_layers(self) -> int:
        return len(self.k)

    @property
    def rows(self) -> int:
        return len(self.lengths)

    def mask(self) -> tuple[tuple[bool, ...], ...]:
        """``mask[b][j]`` is True iff column ``j`` of row ``b`` holds a real token."""
        return tuple(tuple(j >= self.width - n for j in range(self.width)) for n in self.lengths)

    def with_length(self, rows: Sequence[bool], length: int) -> Batch:
        """This batch with the rows where ``rows[b]`` is True holding ``length`` tokens:
        their last ``length`` columns, whatever those hold (the columns before are padding,
        read as zeros). UniZero's miss rows: the model writes a fresh entry into a gathered
        row and the row's length follows."""
        if len(rows) != self.rows:
            raise BatchError(f"rows must have {self.rows} flags, got {len(rows)}")
        if isinstance(length, bool) or not isinstance(length, int):
            raise BatchError(f"length must be an int, got {type(length).__name__}")
        if not 0 <= length <= self.width:
            raise BatchError(f"length must lie in [0, {self.width}], got {length}")
        lengths = tuple(length if r else n for r, n in zip(rows, self.lengths, strict=True))
        pad = [self.width - n for n in lengths]

        def padded(layers: tuple[tuple[Tokens, ...], ...]) -> tuple[tuple[Tokens, ...], ...]:
            return tuple(
                tuple((0.0,) * pad[b] + row[pad[b] :] for b, row in enumerate(layer))
                for layer in layers
            )

        return Batch(padded(self.k), padded(self.v), lengths, self.width)


def assemble(entries: Sequence[Entry], width: int | None = None) -> Batch:
    """Left-pad ``entries`` to a common width (their longest, or ``width``)."""
    if len(entries) == 0:
        raise BatchError("cannot assemble an empty batch")
    num_layers = entries[0].num_layers
    for e in entries:
        if e.num_layers != num_layers:
            raise BatchError(f"entries have {e.num_layers} and {num_layers} layers")
    longest = max(e.size for e in entries)
    if width is None:
        width = longest
    elif width < longest:
        raise BatchError(f"width {width} is smaller than the longest entry ({longest})")

    def rows(layers: Sequence[Sequence[Tokens]]) -> tuple[tuple[Tokens, ...], ...]:
        return tuple(
            tuple((0.0,) * (width - len(seq)) + tuple(seq) for seq in per_layer)
            for per_layer in layers
        )

    k_by_layer = [[e.k[layer] for e in entries] for layer in range(num_layers)]
    v_by_layer = [[e.v[layer] for e in entries] for layer in range(num_layers)]
    return Batch(rows(k_by_layer), rows(v_by_layer), tuple(e.size for e in entries), width)


def overflow_drop(width: int, new_tokens: int, context_length: int) -> int:
    """Columns ``append`` drops before writing (``>= width`` means the batch is emptied)."""
    excess = width + new_tokens - context_length
    if excess <= 0:
        return 0
    return excess + (excess % 2)


def append(
    batch: Batch,
    new_k: Sequence[Sequence[Tokens]],
    new_v: Sequence[Sequence[Tokens]],
    context_length: int,
) -> Batch:
    """Write ``t`` new tokens per row after the overflow rule (module docstring)."""
    layers, rows = batch.num_layers, batch.rows
    if len(new_k) != layers or len(new_v) != layers:
        raise BatchError(f"new tokens need {layers} layers, got {len(new_k)} K / {len(new_v)} V")
    t = len(new_k[0][0]) if rows and len(new_k[0]) else 0
    for per_layer in (*new_k, *new_v):
        if len(per_layer) != rows or any(len(row) != t for row in per_layer):
            raise BatchError(f"new tokens must be {rows} rows of {t} tokens in every layer")
    if t < 1:
        raise BatchError("append needs at least one new token")
    if t > context_length:
        raise BatchError(f"cannot append {t} tokens to a context of length {context_length}")
    drop = overflow_drop(batch.width, t, context_length)
    if drop >= batch.width:
        kept_width, lengths = 0, tuple(0 for _ in batch.lengths)
    else:
        kept_width = batch.width - drop
        lengths = tuple(min(n, kept_width) for n in batch.lengths)

    def grow(
        old: tuple[tuple[Tokens, ...], ...], new: Sequence[Sequence[Tokens]]
    ) -> tuple[tuple[Tokens, ...], ...]:
        return tuple(
            tuple(
                tuple(old[layer][b][batch.width - kept_width :]) + tuple(new[layer][b])
                for b in range(rows)
            )
            for layer in range(layers)
        )

    return Batch(
        grow(batch.k, new_k), grow(batch.v, new_v), tuple(n + t for n in lengths), kept_width + t
    )


def split(batch: Batch) -> tuple[Entry, ...]:
    """Each row's real tokens as an entry (left-aligned, no padding)."""
    return tuple(
        Entry(
            tuple(batch.k[layer][b][batch.width - n :] for layer in range(batch.num_layers)),
            tuple(batch.v[layer][b][batch.width - n :] for layer in range(batch.num_layers)),
        )
        for b, n in enumerate(batch.lengths)
    )


def window(entry: Entry, context_length: int, correction: Correction) -> Entry:
    """The window rule (module docstring)."""
    check_context_length(context_length)
    correction.check(entry.num_layers, context_length)
    if entry.size > context_length:
        raise EntryError(f"entry of {entry.size} tokens exceeds the context {context_length}")
    if entry.size < context_length - 1:
        return entry
    keep = slice(2, context_length - 1)

    def shifted(seqs: tuple[Tokens, ...], corr: tuple[Tokens, ...]) -> tuple[Tokens, ...]:
        return tuple(
            tuple(x + c for x, c in zip(seq[keep], corr_layer))
            for seq, corr_layer in zip(seqs, corr)
        )

    return Entry(shifted(entry.k, correction.k), shifted(entry.v, correction.v))


def remove_registers(batch: Batch, count: int) -> Batch:
    """Drop the ``count`` newest columns (temporary register tokens)."""
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= batch.width:
        raise BatchError(f"register count must be an int in [0, {batch.width}], got {count!r}")
    width = batch.width - count

    def cut(layers: tuple[tuple[Tokens, ...], ...]) -> tuple[tuple[Tokens, ...], ...]:
        return tuple(tuple(row[:width] for row in layer) for layer in layers)

    lengths = tuple(min(width, max(0, n - count)) for n in batch.lengths)
    return Batch(cut(batch.k), cut(batch.v), lengths, width)


def store_rows(batch: Batch, context_length: int, correction: Correction) -> tuple[Entry, ...]:
    """What a store writes for each row: the window rule applied to ``split(batch)``."""
    return tuple(window(e, context_length, correction) for e in split(batch))
