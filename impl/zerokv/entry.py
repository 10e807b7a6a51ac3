"""Entries and batches as tensors: ``zerokv_spec.entry``'s rules, batched.

Layouts (``L`` layers, ``B`` rows, ``H`` heads, ``d`` head size, ``cl`` context length):

* ``Entries`` - ``B`` cache entries as stored in a slab: ``kv`` is ``[L, 2, B, H, cl, d]``
  (``kv[l, 0]`` keys, ``kv[l, 1]`` values) with each row's ``lengths[b]`` tokens
  **right-aligned** in columns ``[cl - lengths[b], cl)`` and zeros before them.
* ``Batch`` - what the transformer attends to: ``kv`` is ``[L, 2, B, H, W, d]``, rows
  right-aligned with zero left padding, ``mask()[b, j]`` true for real tokens. ``kv[l, 0]``
  is layer ``l``'s ``[B, H, W, d]`` key block.

Because entries are stored right-aligned, assembling a batch of width ``W <= cl`` from a
slab is a gather plus a slice: no per-row shift. The only per-row shift happens once per
store, fused with the window rule into one ``torch.gather`` (``store_rows``).

The functions carry the spec's names: ``assemble``, ``append``, ``split``, ``window``,
``remove_registers``, ``store_rows``.

**Verified lengths.** A length outside ``[0, W]`` would make a store fabricate tokens, so
every place lengths enter zerokv checks them. Checking a device tensor reads it on the
host (a synchronisation on CUDA), so the check is paid once, where lengths come from
outside: ``Entries`` and ``Batch`` carry ``verified``, true for the values zerokv makes
itself (a gather, a read, ``append``, ``split``, ...: their lengths come from the slab,
whose lengths are in range by construction, or from verified inputs by arithmetic that
keeps them in range) and for ``checked`` ones; an unverified value has its lengths read and
checked once when it enters a store, ``split``, ``window`` or ``store_rows``
(``check_lengths``). The MCTS hot path (``gather_reserve`` -> the model writes its tokens
-> ``store_*_batch``) therefore reads nothing. Editing a verified value's ``lengths`` in
place is outside this contract.

None of these functions reads a device value on the host, except ``assemble(width=None)``
(the longest entry decides the width, as in the spec), the validating constructors
``Batch.checked`` / ``Entries.checked``, and the length check of an unverified value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

import torch

from zerokv import checks
from zerokv.errors import BatchError, DeviceError, DTypeError, EntryError, ShapeError, ZeroKVError
from zerokv_spec.entry import check_context_length, overflow_drop

__all__ = [
    "Batch",
    "Correction",
    "Entries",
    "RowPlan",
    "append",
    "assemble",
    "check_lengths",
    "check_new_tokens",
    "check_token_count",
    "plan_rows",
    "remove_registers",
    "split",
    "store_rows",
    "window",
    "write_rows",
]


def _check_tensor(
    t: object, name: str, ndim: int, dtype: torch.dtype | None, device: torch.device | None
) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise DTypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ShapeError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if dtype is not None and t.dtype != dtype:
        raise DTypeError(f"{name} must have dtype {dtype}, got {t.dtype}")
    if device is not None and t.device != device:
        raise DeviceError(f"{name} must be on {device}, got {t.device}")
    return t


def _check_lengths(lengths: object, rows: int, device: torch.device) -> torch.Tensor:
    t = _check_tensor(lengths, "lengths", 1, torch.int64, device)
    if t.shape[0] != rows:
        raise ShapeError(f"lengths must have {rows} rows, got {t.shape[0]}")
    return t


def _out_of_range(lengths: torch.Tensor, limit: int) -> bool:
    """Whether a length lies outside ``[0, limit]`` (reads the lengths)."""
    return bool(lengths.numel()) and bool(((lengths < 0) | (lengths > limit)).any())


@lru_cache(maxsize=64)
def _padding_bits(
    width: int, length: int, ints: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[1, W]`` masks of the integer type ``ints``: 0 in the columns left of a row of
    ``length`` tokens and -1 (all bits) in its last ``length``, and all -1 (cached: reused
    every step, made once per shape)."""
    keep = torch.arange(width, device=device) >= width - length
    bits = keep.to(ints).neg().view(1, width)
    return bits, torch.full_like(bits, -1)


@dataclass(frozen=True)
class _Lengths:
    """``kv`` ``[L, 2, B, H, W, d]`` with ``lengths`` ``[B]``; ``verified``: the lengths are
    known to lie in ``[0, W]`` (module docstring), so no check needs to read them."""

    kv: torch.Tensor
    lengths: torch.Tensor
    verified: bool = field(default=False, compare=False, repr=False)

    @property
    def rows(self) -> int:
        return int(self.kv.shape[2])

    @property
    def width(self) -> int:
        return int(self.kv.shape[4])


def check_lengths(value: _Lengths, error: type[ZeroKVError] = BatchError) -> None:
    """Raise ``error`` unless every length of ``value`` lies in ``[0, W]`` (reads the
    lengths unless ``value.verified``)."""
    if not value.verified and _out_of_range(value.lengths, value.width):
        raise error(f"lengths must lie in [0, {value.width}], got {value.lengths.tolist()}")


@dataclass(frozen=True)
class Entries(_Lengths):
    """``B`` entries in slab layout (module docstring); construct with ``checked``."""

    @staticmethod
    def checked(kv: torch.Tensor, lengths: torch.Tensor) -> Entries:
        """Validate shapes, dtypes, devices and ``0 <= lengths <= cl`` (reads lengths)."""
        kv = _check_tensor(kv, "entries kv", 6, None, None)
        if kv.shape[1] != 2:
            raise ShapeError(f"entries kv must be [L, 2, B, H, cl, d], got {tuple(kv.shape)}")
        entries = Entries(kv, _check_lengths(lengths, kv.shape[2], kv.device))
        check_lengths(entries, EntryError)
        return Entries(kv, entries.lengths, True)

    @property
    def context_length(self) -> int:
        return int(self.kv.shape[4])


@dataclass(frozen=True)
class Batch(_Lengths):
    """A right-aligned, left-padded batch (module docstring); construct with ``checked``."""

    @staticmethod
    def checked(kv: torch.Tensor, lengths: torch.Tensor) -> Batch:
        """Validate shapes, dtypes, devices and ``0 <= lengths <= W`` (reads lengths)."""
        kv = _check_tensor(kv, "batch kv", 6, None, None)
        if kv.shape[1] != 2:
            raise ShapeError(f"batch kv must be [L, 2, B, H, W, d], got {tuple(kv.shape)}")
        batch = Batch(kv, _check_lengths(lengths, kv.shape[2], kv.device))
        check_lengths(batch)
        return Batch(kv, batch.lengths, True)

    @property
    def num_layers(self) -> int:
        return int(self.kv.shape[0])

    def k(self, layer: int) -> torch.Tensor:
        """Layer ``layer``'s keys ``[B, H, W, d]``."""
        return self.kv[layer, 0]

    def v(self, layer: int) -> torch.Tensor:
        """Layer ``layer``'s values ``[B, H, W, d]``."""
        return self.kv[layer, 1]

    def mask(self) -> torch.Tensor:
        """``[B, W]`` bool: True where a row holds a real token (not padding)."""
        cols = torch.arange(self.width, device=self.kv.device)
        return cols.unsqueeze(0) >= (self.width - self.lengths).unsqueeze(1)

    def with_length(self, rows: torch.Tensor, length: int) -> Batch:
        """This batch with the rows where ``rows[b]`` is True holding ``length`` tokens:
        their last ``length`` columns, whatever the caller wrote there (the spec's
        ``Batch.with_length``). UniZero's miss rows: the model writes a fresh entry into
        the gathered (empty) row, then the row's length follows.

        In place: the flagged rows' columns before their new length are zeroed in ``kv``
        (they are padding now), and the result shares ``kv``; use it instead of this
        batch. ``length`` is a host int, checked against ``[0, W]`` here, so a verified
        batch stays verified and its store reads nothing: the sync-free way to set
        lengths (``Batch(kv, lengths)`` with edited lengths is read and checked at its
        store instead)."""
        _check_tensor(rows, "rows", 1, torch.bool, self.kv.device)
        if rows.shape[0] != self.rows:
            raise ShapeError(f"rows must have {self.rows} flags, got {rows.shape[0]}")
        if isinstance(length, bool) or not isinstance(length, int):
            raise BatchError(f"length must be an int, got {type(length).__name__}")
        if not 0 <= length <= self.width:
            raise BatchError(f"length must lie in [0, {self.width}], got {length}")
        if length < self.width:
            ints = _INT_OF_SIZE[self.kv.element_size()]
            padding, whole = _padding_bits(self.width, length, ints, self.kv.device)
            bits = torch.where(rows.view(-1, 1), padding, whole)
            # A bit mask, not masked_fill_: exact for any value and several times faster.
            self.kv.view(ints).bitwise_and_(bits.view(1, 1, self.rows, 1, self.width, 1))
        return Batch(self.kv, self.lengths.masked_fill(rows, length), self.verified)


@dataclass(frozen=True)
class Correction:
    """The window rule's table ``[L, 2, H, cl - 3, d]`` (``table[l, 0, :, j]`` is dK_l[j]).

    ``padded`` is the table placed at slab columns ``[3, cl)``: ``[L, 2, 1, H, cl, d]``.
    Build one per weight update and reuse it for every store.

    The table is read at each store: an in-place edit of ``table`` (``table.add_(...)``, a
    recomputed position table copied in) takes effect at the next store. ``padded`` and the
    spec's rule that every value is finite are derived once per version of the table
    (torch counts in-place edits in ``table._version``), so the finiteness check reads the
    device once per construction or edit, never per store.
    """

    table: torch.Tensor
    _padded: list[torch.Tensor] = field(default_factory=list, init=False, repr=False, compare=False)
    _version: list[int] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_tensor(self.table, "correction", 5, None, None)
        self._derive()

    def _derive(self) -> torch.Tensor:
        """Validate the table as it is now and place it at slab columns ``[3, cl)``."""
        t = self.table
        if t.dim() != 5 or t.shape[1] != 2:
            raise ShapeError(f"correction must be [L, 2, H, cl - 3, d], got {tuple(t.shape)}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise BatchError("correction values must be finite")
        padded = torch.nn.functional.pad(t, (0, 0, 3, 0)).unsqueeze(2)
        self._padded[:] = [padded]
        self._version[:] = [t._version]
        return padded

    @property
    def padded(self) -> torch.Tensor:
        """The table at slab columns ``[3, cl)`` (re-derived after an edit of ``table``)."""
        if self._version[0] != self.table._version:
            return self._derive()
        return self._padded[0]

    @staticmethod
    def zero(
        num_layers: int,
        num_heads: int,
        head_dim: int,
        context_length: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> Correction:
        """The all-zero table (rotary positions need no correction)."""
        check_context_length(context_length)
        shape = (num_layers, 2, num_heads, context_length - 3, head_dim)
        return Correction(torch.zeros(shape, device=device, dtype=dtype))

    @property
    def context_length(self) -> int:
        return int(self.table.shape[3]) + 3

    def check(self, like: torch.Tensor, context_length: int) -> None:
        """Raise unless the table (as it is now) fits ``like`` (``[L, 2, B, H, *, d]``) and
        ``context_length``."""
        self.padded  # noqa: B018 - re-validates an edited table before anything uses it
        want = (like.shape[0], 2, like.shape[3], context_length - 3, like.shape[5])
        got = tuple(self.table.shape)
        if got != want:
            # Layers / positions have a spec twin (``Correction.check``: ``BatchError``);
            # heads and head size exist only here.
            spec_dims_differ = (got[0], got[3]) != (want[0], want[3])
            if spec_dims_differ and (got[1], got[2], got[4]) == (want[1], want[2], want[4]):
                raise BatchError(f"correction must have shape {want}, got {got}")
            raise ShapeError(f"correction must have shape {want}, got {got}")
        if self.table.dtype != like.dtype:
            raise DTypeError(f"correction must have dtype {like.dtype}, got {self.table.dtype}")
        if self.table.device != like.device:
            raise DeviceError(f"correction must be on {like.device}, got {self.table.device}")


def _fit_width(kv: torch.Tensor, width: int) -> torch.Tensor:
    """Right-aligned rows of ``kv`` cut or left-padded to ``width`` columns."""
    have = kv.shape[4]
    if width <= have:
        return kv[:, :, :, :, have - width :, :]
    return torch.nn.functional.pad(kv, (0, 0, width - have, 0))


def assemble(entries: Entries, width: int | None = None) -> Batch:
    """``zerokv_spec.entry.assemble``: a batch of width ``width`` (default: the longest)."""
    if entries.rows == 0:
        raise BatchError("cannot assemble an empty batch")
    longest = int(entries.lengths.max().item())
    if width is None:
        width = longest
    elif width < longest:
        raise BatchError(f"width {width} is smaller than the longest entry ({longest})")
    return Batch(_fit_width(entries.kv, width), entries.lengths.clone(), entries.verified)


def check_token_count(t: object, context_length: int) -> int:
    """``t`` new tokens per row must be an int with ``1 <= t <= context_length``."""
    if isinstance(t, bool) or not isinstance(t, int):
        raise BatchError(f"the number of new tokens must be an int, got {t!r}")
    if t < 1:
        raise BatchError("append needs at least one new token")
    if t > context_length:
        raise BatchError(f"cannot append {t} tokens to a context of {context_length} tokens")
    return t


def check_new_tokens(kv: torch.Tensor, rows: int, new_kv: object, context_length: int) -> int:
    """``new_kv`` must be ``[L, 2, rows, H, t, d]`` like ``kv``, ``1 <= t <= context_length``."""
    new = _check_tensor(new_kv, "new tokens", 6, kv.dtype, kv.device)
    t = int(new.shape[4])
    want = (kv.shape[0], 2, rows, kv.shape[3], t, kv.shape[5])
    if tuple(new.shape) != want:
        raise ShapeError(f"new tokens must have shape {want}, got {tuple(new.shape)}")
    return check_token_count(t, context_length)


def append(batch: Batch, new_kv: torch.Tensor, context_length: int) -> Batch:
    """``zerokv_spec.entry.append``: ``new_kv`` is ``[L, 2, B, H, t, d]``."""
    kv = batch.kv
    t = check_new_tokens(kv, batch.rows, new_kv, context_length)
    drop = overflow_drop(batch.width, t, context_length)
    if drop >= batch.width:
        lengths = torch.full_like(batch.lengths, t)
        return Batch(new_kv.clone(), lengths, True)
    kept = batch.width - drop
    grown = torch.cat([kv[:, :, :, :, drop:, :], new_kv], dim=4)
    return Batch(grown, batch.lengths.clamp(max=kept) + t, batch.verified)


def remove_registers(batch: Batch, count: int) -> Batch:
    """``zerokv_spec.entry.remove_registers``: drop the ``count`` newest columns."""
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= batch.width:
        raise BatchError(f"register count must be an int in [0, {batch.width}], got {count!r}")
    width = batch.width - count
    lengths = (batch.lengths - count).clamp(min=0)
    return Batch(batch.kv[:, :, :, :, :width, :], lengths, batch.verified)


class RowTables(NamedTuple):
    """Per-length lookup tables of a store into a ``cl``-wide slab (index = a row's length
    ``n`` in ``[0, cl]``): its stored length under the window rule, whether it is windowed
    (as an int, and as 0/1 in the K/V dtype: the correction's weight), whether it moves by
    one column (exactly ``cl`` tokens, windowed), and its kept-columns bit mask. A store
    looks its rows up with one ``index_select`` each instead of computing them. The last
    three are laid out along dimension 2 of a ``[L, 2, B, H, cl, d]`` batch
    (``[1, 1, cl + 1, 1, 1 or cl, 1]``), so a lookup broadcasts against the batch as it is
    (no view per store). A named tuple: kernels take it whole (compiled code sees its
    tensors)."""

    out_len: torch.Tensor
    windowed: torch.Tensor
    weight: torch.Tensor
    shift: torch.Tensor
    bits: torch.Tensor


@lru_cache(maxsize=32)
def row_tables(cl: int, dtype: torch.dtype, device: torch.device) -> RowTables:
    sizes = torch.arange(cl + 1, device=device)
    windowed = sizes >= cl - 1
    out_len = torch.where(windowed, torch.full_like(sizes, cl - 3), sizes)
    ints = _INT_OF_SIZE[dtype.itemsize]
    per_row = (1, 1, cl + 1, 1, 1, 1)
    return RowTables(
        out_len,
        windowed.long(),
        windowed.to(dtype).view(per_row),
        (sizes == cl).view(per_row),
        _keep_bits(cl, ints, device).view(1, 1, cl + 1, 1, cl, 1),
    )


def _shift_rows(
    batch: Batch, context_length: int, correction: Correction | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row moved into slab layout, with the window rule when ``correction`` is given
    (the checks and tables here, the tensor work in ``shift_rows``).

    Lengths must lie in ``[0, W]`` (callers check unverified ones first)."""
    cl = context_length
    check_context_length(cl)
    width = batch.width
    if width > cl:
        raise BatchError(f"a batch of width {width} does not fit the context length {cl}")
    if correction is not None:
        correction.check(batch.kv, cl)
    kv, lengths = batch.kv, batch.lengths
    if width == 0:
        return torch.zeros_like(_fit_width(kv, cl)), lengths
    table = row_tables(cl, kv.dtype, kv.device)
    padded = None if correction is None else correction.padded
    return shift_rows(kv, lengths, padded, table, cl)


def shift_rows(
    kv: torch.Tensor,
    lengths: torch.Tensor,
    padded: torch.Tensor | None,
    table: RowTables,
    context_length: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel of a store's row layout (``table``: ``row_tables``; ``padded``: the
    correction, None for a plain split): each row of ``kv`` (``[L, 2, B, H, W, d]``,
    ``1 <= W <= cl``) moved to the right of a ``cl``-wide row, windowed when ``padded``
    is given, masked beyond its stored length; and the stored lengths.

    A tensor made here is the result (never the caller's ``kv``, which stays unchanged)."""
    cl = context_length
    width = int(kv.shape[4])
    out_len = lengths if padded is None else table.out_len.index_select(0, lengths)
    rows = int(kv.shape[2])
    if width == cl:
        # The static layout: every row already sits where the slab wants it, except a row
        # of exactly cl tokens under the window rule, which moves by one column.
        moved = kv
        if padded is not None:
            shift = table.shift.index_select(2, lengths)
            moved = torch.where(shift, kv.roll(1, 4), kv)
    else:
        # Slab column c holds token c - (cl - out_len) of the result, which is token
        # (that + 2) of the row when windowed: its batch column is width - length + token.
        shift_by = width - lengths - cl + out_len
        if padded is not None:
            shift_by = shift_by + 2 * table.windowed.index_select(0, lengths)
        cols = torch.arange(cl, device=kv.device)
        index = (cols.unsqueeze(0) + shift_by.unsqueeze(1)).clamp(0, width - 1)
        shape = kv.shape
        moved = torch.gather(
            kv,
            4,
            index.view(1, 1, rows, 1, cl, 1).expand(shape[0], 2, rows, shape[3], cl, shape[5]),
        )
    out = moved
    if padded is not None:
        weight = table.weight.index_select(2, lengths)
        out = torch.addcmul(moved, padded, weight)
    bits = table.bits.index_select(2, out_len)
    # Never write into the caller's batch; a tensor made here may be reused.
    return _masked(out, bits, None if out is kv else out), out_len


#: The integer type of each float size: masks are applied to the bits of the values.
_INT_OF_SIZE = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _masked(kv: torch.Tensor, bits: torch.Tensor, dest: torch.Tensor | None) -> torch.Tensor:
    """``kv`` with the columns where ``bits`` is 0 set to +0.0 (``bits`` -1 keeps a value).

    The mask works on the values' bits (an AND with all ones or all zeros), so it is exact
    for every value, NaN and inf included, and costs what a multiply costs; a multiply by a
    0/1 mask turns NaN * 0 into NaN, and ``torch.where`` is several times slower on a CPU.
    With ``dest`` the result is written there (``dest`` may be ``kv`` itself).
    """
    ints = _INT_OF_SIZE[kv.element_size()]
    if dest is None or torch.compiler.is_compiling():  # a compiled kernel fuses it anyway
        return torch.bitwise_and(kv.view(ints), bits).view(kv.dtype)
    torch.bitwise_and(kv.view(ints), bits, out=dest.view(ints))
    return dest


@dataclass(frozen=True)
class RowPlan:
    """Host lists for a store on the CPU: each row's length, window flag, stored length."""

    lengths: list[int]
    windowed: list[bool]
    out_lengths: list[int]


@lru_cache(maxsize=32)
def _keep_bits(cl: int, ints: torch.dtype, device: torch.device) -> torch.Tensor:
    """``[cl + 1, cl]``: row ``n`` is -1 (all bits) in the last ``n`` columns, else 0."""
    cols = torch.arange(cl, device=device)
    sizes = torch.arange(cl + 1, device=device)
    return (cols.unsqueeze(0) >= (cl - sizes).unsqueeze(1)).to(ints).neg()


def plan_rows(batch: Batch, context_length: int, correction: Correction) -> RowPlan | None:
    """The store plan when ``write_rows`` applies, else None (use ``store_rows``).

    Only where host reads are free (the CPU): it reads the lengths. It applies to a
    static-width batch (``W == cl``) with no row of exactly ``cl`` tokens under the window
    rule: then every row already sits in the columns the slab stores it in, and a store is
    a mask of the kept columns plus the correction of the windowed rows. Lengths outside
    ``[0, W]`` raise ``BatchError``.
    """
    cl = context_length
    kv = batch.kv
    if not checks.host_reads_are_free(kv.device) or batch.width != cl or batch.rows == 0:
        return None
    correction.check(kv, cl)
    lengths: list[int] = batch.lengths.tolist()
    if min(lengths) < 0 or max(lengths) > cl:
        raise BatchError(f"batch lengths must lie in [0, {cl}], got {lengths}")
    if cl in lengths:
        return None
    windowed = [n >= cl - 1 for n in lengths]
    out = [cl - 3 if w else n for n, w in zip(lengths, windowed)]
    return RowPlan(lengths, windowed, out)


def write_rows(
    batch: Batch,
    plan: RowPlan,
    correction: Correction,
    dest: torch.Tensor | None,
    out_lengths: torch.Tensor,
) -> torch.Tensor:
    """``store_rows(batch, cl, correction).kv`` for a ``plan_rows`` plan, written to ``dest``.

    ``dest`` (``[L, 2, B, H, cl, d]``, e.g. a slice of a slab) receives the rows; with None
    a new tensor does. ``out_lengths`` is ``plan.out_lengths`` as a tensor. The result is
    ``store_rows``'s: the kept columns, +0.0 elsewhere (a bit mask: exact for any value),
    plus the table on windowed rows.
    """
    kv = batch.kv
    rows, cl = batch.rows, batch.width
    bits = _keep_bits(cl, _INT_OF_SIZE[kv.element_size()], kv.device)
    bits = bits.index_select(0, out_lengths).view(1, 1, rows, 1, cl, 1)
    out = _masked(kv, bits, dest)
    if all(plan.windowed):
        out.add_(correction.padded)
    elif any(plan.windowed):
        weight = torch.tensor(plan.windowed, dtype=kv.dtype, device=kv.device)
        out.addcmul_(correction.padded, weight.view(1, 1, rows, 1, 1, 1))
    return out


def split(batch: Batch, context_length: int) -> Entries:
    """``zerokv_spec.entry.split``: every row's real tokens in slab layout."""
    check_lengths(batch)
    kv, lengths = _shift_rows(batch, context_length, None)
    return Entries(kv, lengths, True)


def window(entries: Entries, correction: Correction) -> Entries:
    """``zerokv_spec.entry.window`` for every entry."""
    check_lengths(entries, EntryError)
    batch = Batch(entries.kv, entries.lengths, True)
    kv, lengths = _shift_rows(batch, entries.context_length, correction)
    return Entries(kv, lengths, True)


def store_rows(batch: Batch, context_length: int, correction: Correction) -> Entries:
    """``zerokv_spec.entry.store_rows``: split and window rule fused into one gather."""
    check_lengths(batch)
    kv, lengths = _shift_rows(batch, context_length, correction)
    return Entries(kv, lengths, True)
