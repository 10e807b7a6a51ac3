"""Entry drivers: the CrossHair drivers of ``zerokv_spec.entry`` (5 of them).

``assemble_split_driver`` (left padding, ``split`` undoes ``assemble``), ``append_driver``
(the overflow rule), ``window_driver`` (the window rule on one entry),
``window_sizes_driver`` (UniZero's store cycle keeps sizes odd and short) and
``remove_registers_driver``; each with the record and clauses only it uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from zerokv_spec.drivers.clauses import failed, padding_is_zero
from zerokv_spec.drivers.encodings import pick
from zerokv_spec.drivers.fixtures import make_correction, make_entry, token
from zerokv_spec.entry import (
    Batch,
    Correction,
    Entry,
    append,
    assemble,
    remove_registers,
    split,
    store_rows,
    window,
)


@dataclass(frozen=True)
class AssembleCase:
    entries: tuple[Entry, ...]
    width: int | None
    batch: Batch
    rows: tuple[Entry, ...]


def assemble_failures(c: AssembleCase) -> list[str]:
    """``assemble`` left-pads to the longest entry (or ``width``); ``split`` undoes it."""
    sizes = tuple(e.size for e in c.entries)
    expected_width = max(sizes) if c.width is None else c.width
    return failed(
        [
            (
                "assemble: width is the longest entry, or the width asked",
                c.batch.width == expected_width,
            ),
            ("assemble: lengths are the entry sizes", c.batch.lengths == sizes),
            (
                "assemble: the mask marks exactly the real tokens",
                all(sum(r) == n for r, n in zip(c.batch.mask(), sizes)),
            ),
            ("assemble: left padding is zero", padding_is_zero(c.batch)),
            ("assemble: split(assemble(entries)) == entries", c.rows == c.entries),
        ]
    )


def assemble_split_driver(sizes: list[int], layers: int, extra: int) -> AssembleCase:
    """``split(assemble(entries, width)) == entries``; padding is zero and masked.

    Sizes decode to ``0..4``; ``extra < 0`` assembles at the natural width, else at the
    longest size plus ``extra``.

    pre: 1 <= len(sizes) <= 3
    pre: 1 <= layers <= 2 and -1 <= extra <= 2
    post: assemble_failures(__return__) == []
    """
    n_layers = 1 + pick(layers - 1, 2)
    entries = tuple(make_entry(b, pick(s, 5), n_layers) for b, s in enumerate(sizes))
    x = pick(extra + 1, 4) - 1
    width = None if x < 0 else max(e.size for e in entries) + x
    batch = assemble(entries, width)
    return AssembleCase(entries, width, batch, split(batch))


def expected_append(width: int, t: int, context_length: int) -> tuple[int, int]:
    """``(columns dropped, width after)`` of ``append`` by the overflow rule, from scratch.

    The excess ``width + t - context_length`` (when positive) rounded up to even is dropped; when
    that is the whole width the rows are emptied and only the ``t`` new columns remain.
    """
    excess = width + t - context_length
    drop = 0 if excess <= 0 else (excess if excess % 2 == 0 else excess + 1)
    return drop, (t if drop >= width else width - drop + t)


@dataclass(frozen=True)
class AppendCase:
    entries: tuple[Entry, ...]
    t: int
    context_length: int
    batch: Batch
    new_k: tuple[tuple[tuple[float, ...], ...], ...]
    result: Batch
    rows: tuple[Entry, ...]


def append_failures(c: AppendCase) -> list[str]:
    """``append`` then ``split``: each row keeps its newest surviving tokens, then the new."""
    drop, width = expected_append(c.batch.width, c.t, c.context_length)
    kept = max(c.batch.width - drop, 0)
    expected_rows = tuple(
        e.k[0][e.size - min(e.size, kept) :] + c.new_k[0][b] for b, e in enumerate(c.entries)
    )
    return failed(
        [
            ("append: width after = t if drop >= S else S - drop + t", c.result.width == width),
            (
                "append: the width never exceeds the context length",
                c.result.width <= c.context_length,
            ),
            ("append: an even number of columns is dropped", drop % 2 == 0),
            (
                "append: each row = newest surviving tokens + its new ones",
                tuple(r.k[0] for r in c.rows) == expected_rows,
            ),
            (
                "append: lengths are the rows' real tokens",
                tuple(r.size for r in c.rows) == c.result.lengths,
            ),
            ("append: left padding stays zero", padding_is_zero(c.result)),
        ]
    )


def append_driver(sizes: list[int], extra: int, t: int, context_length: int) -> AppendCase:
    """``append`` t tokens under the overflow rule, then ``split`` (2 layers).

    Sizes decode to ``0..5``; the batch width is the longest size plus ``extra``.

    pre: 1 <= len(sizes) <= 3
    pre: 0 <= extra <= 1
    pre: 1 <= t <= 3 and t <= context_length <= 6
    post: append_failures(__return__) == []
    """
    layers = 2
    entries = tuple(make_entry(b, pick(s, 6), layers) for b, s in enumerate(sizes))
    batch = assemble(entries, max(e.size for e in entries) + pick(extra, 2))
    t = 1 + pick(t - 1, 3)
    cl = t + pick(context_length - t, 7 - t)
    rows = range(len(entries))
    new_k = tuple(
        tuple(tuple(token(b, layer, 50 + j) for j in range(t)) for b in rows)
        for layer in range(layers)
    )
    new_v = tuple(
        tuple(tuple(token(b, layer, 50 + j, -1.0) for j in range(t)) for b in rows)
        for layer in range(layers)
    )
    result = append(batch, new_k, new_v, cl)
    return AppendCase(entries, t, cl, batch, new_k, result, split(result))


@dataclass(frozen=True)
class WindowCase:
    context_length: int
    entry: Entry
    correction: Correction
    result: Entry


def window_failures(c: WindowCase) -> list[str]:
    """The window rule: ``size >= cl - 1`` keeps tokens ``[2, cl - 1)`` plus the correction."""
    cl, e, r = c.context_length, c.entry, c.result
    fires = e.size >= cl - 1

    def shifted(
        out: Sequence[Sequence[float]],
        old: Sequence[Sequence[float]],
        corr: Sequence[Sequence[float]],
    ) -> bool:
        return all(
            o[j] == x[j + 2] + d[j] for o, x, d in zip(out, old, corr) for j in range(cl - 3)
        )

    return failed(
        [
            (
                "window: size after is cl - 3 if size >= cl - 1, else unchanged",
                r.size == (cl - 3 if fires else e.size),
            ),
            ("window: a short entry is unchanged", fires or r == e),
            (
                "window: K tokens [2, cl-1) shift to [0, cl-3) plus the correction",
                not fires or shifted(r.k, e.k, c.correction.k),
            ),
            ("window: V tokens likewise", not fires or shifted(r.v, e.v, c.correction.v)),
            (
                "window: a windowed entry is short (window is idempotent)",
                window(r, cl, c.correction) == r,
            ),
        ]
    )


def window_driver(size: int, context_length: int, layers: int) -> WindowCase:
    """The window rule on one entry.

    pre: 4 <= context_length <= 8
    pre: 0 <= size <= context_length
    pre: 1 <= layers <= 2
    post: window_failures(__return__) == []
    """
    cl = 4 + pick(context_length - 4, 5)
    entry = make_entry(0, pick(size, cl + 1), 1 + pick(layers - 1, 2))
    correction = make_correction(entry.num_layers, cl)
    return WindowCase(cl, entry, correction, window(entry, cl, correction))


@dataclass(frozen=True)
class CycleCase:
    context_length: int
    sizes: tuple[tuple[int, ...], ...]  # row sizes before each step and after the last


def cycle_failures(c: CycleCase) -> list[str]:
    """With even ``cl`` and ``t = 2`` a store keeps every size odd and ``<= cl - 3``."""
    cl = c.context_length
    steps = zip(c.sizes, c.sizes[1:])
    return failed(
        [
            (
                "window: sizes stay odd and <= cl - 3",
                all(s % 2 == 1 and s <= cl - 3 for row in c.sizes for s in row),
            ),
            (
                "window: a store grows a row by 2 until it reaches cl - 1, then cuts it to cl - 3",
                all(
                    n == (s + 2 if s + 2 < cl - 1 else cl - 3)
                    for old, new in steps
                    for s, n in zip(old, new)
                ),
            ),
        ]
    )


def window_sizes_driver(half_context: int, sizes: list[int], steps: int) -> CycleCase:
    """UniZero's store cycle with even ``cl = 2 * half_context``: assemble the rows, append
    2 tokens (context length ``cl``), ``store_rows``; rows start at odd sizes ``<= cl - 3``.

    pre: 2 <= half_context <= 6
    pre: 1 <= len(sizes) <= 3
    pre: 1 <= steps <= 4
    post: cycle_failures(__return__) == []
    """
    cl = 2 * (2 + pick(half_context - 2, 5))
    odd_sizes = [2 * pick(s, (cl - 2) // 2) + 1 for s in sizes]
    entries = tuple(make_entry(b, n, 1) for b, n in enumerate(odd_sizes))
    correction = Correction.zero(1, cl)
    history = [tuple(e.size for e in entries)]
    for step in range(1 + pick(steps - 1, 4)):
        rows = range(len(entries))
        new = (tuple((token(b, 0, 60 + step), token(b, 0, 70 + step)) for b in rows),)
        entries = store_rows(append(assemble(entries), new, new, cl), cl, correction)
        history.append(tuple(e.size for e in entries))
    return CycleCase(cl, tuple(history))


@dataclass(frozen=True)
class RegisterCase:
    entries: tuple[Entry, ...]
    count: int
    batch: Batch
    result: Batch
    rows: tuple[Entry, ...]


def register_failures(c: RegisterCase) -> list[str]:
    """``remove_registers(batch, r)``: ``S' = S - r``, ``n' = max(0, n - r)``, newest go."""
    r, b = c.count, c.batch
    return failed(
        [
            ("registers: width S - r", c.result.width == b.width - r),
            (
                "registers: lengths max(0, n - r)",
                c.result.lengths == tuple(max(0, n - r) for n in b.lengths),
            ),
            (
                "registers: every row loses its r newest columns",
                all(
                    out == row[: b.width - r]
                    for lo, li in zip(c.result.k, b.k)
                    for out, row in zip(lo, li)
                ),
            ),
            (
                "registers: each entry keeps its oldest max(0, n - r) tokens",
                all(
                    x.k == tuple(t[: max(0, e.size - r)] for t in e.k)
                    for x, e in zip(c.rows, c.entries)
                ),
            ),
            ("registers: left padding stays zero", padding_is_zero(c.result)),
        ]
    )


def remove_registers_driver(sizes: list[int], extra: int, count: int) -> RegisterCase:
    """``remove_registers`` drops the ``count`` (clamped to the width) newest columns.

    pre: 1 <= len(sizes) <= 3
    pre: 0 <= extra <= 1
    pre: 0 <= count <= 5
    post: register_failures(__return__) == []
    """
    entries = tuple(make_entry(b, pick(s, 5), 1) for b, s in enumerate(sizes))
    batch = assemble(entries, max(e.size for e in entries) + pick(extra, 2))
    r = pick(count, batch.width + 1)
    out = remove_registers(batch, r)
    return RegisterCase(entries, r, batch, out, split(out))
