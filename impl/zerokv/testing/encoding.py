"""The token encoding: spec entries and batches as tensors, and back, bit-exactly.

A spec token is one integer-valued float ``t``. The implementation stores ``[H, d]`` per
token and position, so a spec token ``t`` becomes ``t + offset(l, kv, h, e)`` in channel
``(h, e)`` of layer ``l``'s key (``kv = 0``) or value (``kv = 1``) block, where every
channel has its own offset (a multiple of ``OFFSET_STEP``). Everything stays an integer
below ``2**24``, so float32 holds it exactly. Decoding subtracts the offsets and requires

* every channel of a real token to decode to the *same* spec token (a swapped layer, head,
  K/V block or row shows up as a channel disagreement or a wrong token),
* every padding column to be exactly ``0`` in every channel (the spec pads with ``0.0``).

Also here: ``TokenSource`` (fresh token identities) and the conversions of the spec's
per-row arguments (fingerprints, priorities, keys) into the implementation's tensors.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from zerokv import entry as impl
from zerokv_spec.entry import Batch, Correction, Entry

__all__ = [
    "OFFSET_STEP",
    "Row",
    "Shape",
    "TokenSource",
    "Tokens",
    "decode_batch",
    "decode_entries",
    "encode_batch",
    "encode_correction",
    "encode_entries",
    "encode_new_tokens",
    "fingerprint_tensors",
    "keys_tensor",
    "offsets",
    "priority_tensors",
]

Tokens = tuple[float, ...]
#: One entry or batch row as real tokens only: ``(k per layer, v per layer)``.
Row = tuple[tuple[Tokens, ...], tuple[Tokens, ...]]

OFFSET_STEP = 4096.0


@dataclass(frozen=True)
class Shape:
    """The tensor shape of one cache: layers, heads, head size, context length."""

    num_layers: int
    num_heads: int
    head_dim: int
    context_length: int


class TokenSource:
    """Fresh token identities: every token a machine creates is a new integer."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def tokens(self, n: int) -> Tokens:
        return tuple(float(next(self._counter)) for _ in range(n))

    def entry(self, num_layers: int, size: int) -> Entry:
        k = tuple(self.tokens(size) for _ in range(num_layers))
        v = tuple(self.tokens(size) for _ in range(num_layers))
        return Entry(k, v)

    def new_tokens(
        self, num_layers: int, rows: int, t: int
    ) -> tuple[tuple[tuple[Tokens, ...], ...], tuple[tuple[Tokens, ...], ...]]:
        """``append``'s new tokens: ``[layer][row]`` tuples of ``t`` tokens, K and V."""
        k = tuple(tuple(self.tokens(t) for _ in range(rows)) for _ in range(num_layers))
        v = tuple(tuple(self.tokens(t) for _ in range(rows)) for _ in range(num_layers))
        return k, v


def offsets(shape: Shape) -> torch.Tensor:
    """``[L, 2, 1, H, 1, d]`` float64: the distinct offset of every channel."""
    layers, heads, dim = shape.num_layers, shape.num_heads, shape.head_dim
    channel = torch.arange(layers * 2 * heads * dim, dtype=torch.float64)
    return (OFFSET_STEP * (channel + 1)).view(layers, 2, 1, heads, 1, dim)


def _mask(lengths: Sequence[int], width: int) -> torch.Tensor:
    cols = torch.arange(width, dtype=torch.int64)
    starts = width - torch.tensor(list(lengths), dtype=torch.int64)
    return cols.unsqueeze(0) >= starts.unsqueeze(1)


def _encode_rows(rows: Sequence[Row], width: int, shape: Shape) -> torch.Tensor:
    """``[L, 2, B, H, width, d]`` float32: rows right-aligned, zero padding."""
    layers = shape.num_layers
    base = torch.zeros(layers, 2, len(rows), width, dtype=torch.float64)
    lengths = []
    for b, (k, v) in enumerate(rows):
        n = len(k[0])
        if n > width:
            raise AssertionError(f"test bug: a row of {n} tokens does not fit width {width}")
        lengths.append(n)
        for layer in range(layers):
            if n:
                base[layer, 0, b, width - n :] = torch.tensor(k[layer], dtype=torch.float64)
                base[layer, 1, b, width - n :] = torch.tensor(v[layer], dtype=torch.float64)
    mask = _mask(lengths, width).view(1, 1, len(rows), 1, width, 1)
    values = base.view(layers, 2, len(rows), 1, width, 1) + offsets(shape)
    encoded = torch.where(mask, values, torch.zeros((), dtype=torch.float64))
    single = encoded.to(torch.float32)
    if not torch.equal(single.to(torch.float64), encoded):
        raise AssertionError("test bug: token values are not exact in float32")
    return single


def _entry_row(entry: Entry) -> Row:
    return entry.k, entry.v


def encode_entries(entries: Sequence[Entry], shape: Shape) -> impl.Entries:
    """Spec entries as implementation ``Entries`` (slab layout, ``cl`` columns)."""
    rows = [_entry_row(e) for e in entries]
    kv = _encode_rows(rows, shape.context_length, shape)
    lengths = torch.tensor([e.size for e in entries], dtype=torch.int64)
    return impl.Entries.checked(kv, lengths)


def encode_batch(batch: Batch, shape: Shape) -> impl.Batch:
    """A spec batch as an implementation ``Batch`` of the same width."""
    rows: list[Row] = []
    for b, n in enumerate(batch.lengths):
        start = batch.width - n
        for layer in range(batch.num_layers):
            for kv in (batch.k, batch.v):
                if any(x != 0.0 for x in kv[layer][b][:start]):
                    raise AssertionError("test bug: a spec batch with non-zero padding")
        k = tuple(batch.k[layer][b][start:] for layer in range(batch.num_layers))
        v = tuple(batch.v[layer][b][start:] for layer in range(batch.num_layers))
        rows.append((k, v))
    kv_t = _encode_rows(rows, batch.width, shape)
    return impl.Batch.checked(kv_t, torch.tensor(list(batch.lengths), dtype=torch.int64))


def encode_new_tokens(
    new_k: Sequence[Sequence[Tokens]], new_v: Sequence[Sequence[Tokens]], shape: Shape
) -> torch.Tensor:
    """``append``'s new tokens as ``[L, 2, B, H, t, d]``."""
    rows_n = len(new_k[0]) if new_k else 0
    t = len(new_k[0][0]) if rows_n else 0
    rows: list[Row] = [
        (
            tuple(tuple(new_k[layer][b]) for layer in range(len(new_k))),
            tuple(tuple(new_v[layer][b]) for layer in range(len(new_v))),
        )
        for b in range(rows_n)
    ]
    return _encode_rows(rows, t, shape)


def encode_correction(correction: Correction, shape: Shape) -> impl.Correction:
    """A spec correction as the implementation's ``[L, 2, H, cl - 3, d]`` table."""
    table = torch.tensor(
        [
            [list(correction.k[layer]), list(correction.v[layer])]
            for layer in range(shape.num_layers)
        ],
        dtype=torch.float32,
    )
    cl3 = shape.context_length - 3
    table = table.view(shape.num_layers, 2, 1, cl3, 1).expand(
        shape.num_layers, 2, shape.num_heads, cl3, shape.head_dim
    )
    return impl.Correction(table.contiguous())


def _decode(kv: torch.Tensor, lengths: Sequence[int], shape: Shape) -> list[Row]:
    """The real tokens of every row; asserts channel agreement and zero padding."""
    want = (shape.num_layers, 2, len(lengths), shape.num_heads, shape.head_dim)
    got = (kv.shape[0], kv.shape[1], kv.shape[2], kv.shape[3], kv.shape[5])
    assert kv.dim() == 6 and got == want, f"tensor of shape {tuple(kv.shape)}, wanted {want}"
    width = int(kv.shape[4])
    rows = len(lengths)
    assert all(0 <= n <= width for n in lengths), f"lengths {list(lengths)} vs width {width}"
    real = _mask(lengths, width).view(1, 1, rows, 1, width, 1).expand(kv.shape)
    raw = kv.to(torch.float64)
    values = raw - offsets(shape)
    first = values[:, :, :, :1, :, :1]
    disagree = (values != first) & real
    assert not bool(disagree.any()), (
        f"channels of a real token disagree (wrong head/layer/K-V/row routing): "
        f"{values[disagree][:8].tolist()}"
    )
    bad_padding = (raw != 0) & ~real
    assert not bool(bad_padding.any()), f"padding is not zero: {raw[bad_padding][:8].tolist()}"
    tokens = first[:, :, :, 0, :, 0].tolist()  # [L][2][B][W]
    out: list[Row] = []
    for b, n in enumerate(lengths):
        k = tuple(tuple(tokens[layer][0][b][width - n :]) for layer in range(shape.num_layers))
        v = tuple(tuple(tokens[layer][1][b][width - n :]) for layer in range(shape.num_layers))
        out.append((k, v))
    return out


def decode_entries(entries: impl.Entries, shape: Shape) -> tuple[Entry, ...]:
    """Implementation ``Entries`` as spec entries (checks the slab layout)."""
    assert entries.kv.shape[4] == shape.context_length, "entries are not cl columns wide"
    assert entries.lengths.dtype == torch.int64
    rows = _decode(entries.kv, entries.lengths.tolist(), shape)
    return tuple(Entry(k, v) for k, v in rows)


def decode_batch(batch: impl.Batch, shape: Shape) -> Batch:
    """An implementation ``Batch`` as a spec batch (and its mask checked against it)."""
    lengths = [int(n) for n in batch.lengths.tolist()]
    width = batch.width
    rows = _decode(batch.kv, lengths, shape)

    def padded(tokens: Tokens) -> Tokens:
        return (0.0,) * (width - len(tokens)) + tokens

    k = tuple(tuple(padded(r[0][layer]) for r in rows) for layer in range(shape.num_layers))
    v = tuple(tuple(padded(r[1][layer]) for r in rows) for layer in range(shape.num_layers))
    decoded = Batch(k, v, tuple(lengths), width)
    mask = tuple(tuple(bool(x) for x in row) for row in batch.mask().tolist())
    assert mask == decoded.mask(), f"mask {mask} does not match lengths {lengths}"
    return decoded


def fingerprint_tensors(
    fps: Sequence[int | None], garbage: Sequence[int], implicit: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The implementation's ``(fingerprints, has_fingerprint)`` for spec fingerprints.

    Absent rows get ``garbage`` values (drawn from the fingerprint set, so an
    implementation that ignored the mask would verify against them). With ``implicit``
    and every row present, ``has_fingerprint`` is left out (``None``: all present).
    """
    if all(f is None for f in fps) and implicit:
        return None, None
    values = [g if f is None else f for f, g in zip(fps, garbage)]
    fp_t = torch.tensor(values, dtype=torch.int64).view(len(fps))
    if implicit and all(f is not None for f in fps):
        return fp_t, None
    return fp_t, torch.tensor([f is not None for f in fps], dtype=torch.bool).view(len(fps))


def priority_tensors(
    prios: Sequence[float | None], garbage: float, implicit: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The implementation's ``(priorities, has_priority)`` for spec priorities."""
    if all(p is None for p in prios) and implicit:
        return None, None
    values = [garbage if p is None else p for p in prios]
    p_t = torch.tensor(values, dtype=torch.float64).view(len(prios))
    if implicit and all(p is not None for p in prios):
        return p_t, None
    return p_t, torch.tensor([p is not None for p in prios], dtype=torch.bool).view(len(prios))


def keys_tensor(keys: Sequence[int]) -> torch.Tensor:
    return torch.tensor(list(keys), dtype=torch.int64).view(len(keys))
