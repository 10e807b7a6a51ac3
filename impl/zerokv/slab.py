"""Preallocated K/V storage: one slab for every slot of every pool of a cache.

``kv`` is one tensor ``[L, 2, N + 2, H, cl, d]`` allocated once: slots ``0 .. N-1`` belong
to pools (a manager lays its root pools and its recurrent pool side by side), slot
``ZERO = N`` is never written (a lookup miss gathers an empty row from it) and slot
``TRASH = N + 1`` absorbs the writes a later row of the same batch supersedes (so every
other scatter target is distinct and the result is deterministic on every device).

Why this layout: a batch of ``B`` slots is ``kv.index_select(2, slots)``, one kernel that
yields ``[L, 2, B, H, cl, d]``, in which ``[l, 0]`` is already the contiguous
``[B, H, cl, d]`` key block the attention of layer ``l`` reads. A store is one
``index_copy_`` along the same dimension. Nothing is allocated per entry after
construction, and clearing a pool never touches the slab (the index forgets the slots).

The slab owns every read and write of K/V: ``gather`` / ``gather_append`` /
``gather_reserve`` / ``read`` out of it, ``write`` (ready entries) and ``store`` (a batch,
split and windowed: ``zerokv.entry.store_rows``) into it. Where host reads are free (the
CPU) a store first plans its rows on the host (``plan_store``): when the targets are
consecutive slots (a FIFO pool taking new keys) the rows are computed straight into that
slice of the slab, written once and never staged.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from zerokv.entry import (
    Batch,
    Correction,
    Entries,
    RowPlan,
    RowTables,
    _fit_width,
    check_lengths,
    check_new_tokens,
    check_token_count,
    plan_rows,
    row_tables,
    shift_rows,
    store_rows,
    write_rows,
)
from zerokv.errors import (
    BatchError,
    ConfigError,
    DeviceError,
    DTypeError,
    EntryError,
    ShapeError,
)
from zerokv.index.base import Placement
from zerokv.kernels import EAGER, Kernels
from zerokv_spec.entry import overflow_drop
from zerokv_spec.validate import positive_int

__all__ = ["KV_DTYPES", "Slab", "WindowCall", "storage_device", "storage_dtype"]

#: The K/V dtypes a slab holds (the float types zkv64 and the bit masks cover).
KV_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def storage_dtype(dtype: object) -> torch.dtype:
    """``dtype`` if a slab can hold K/V of it, else ``ConfigError``."""
    if not isinstance(dtype, torch.dtype) or dtype not in KV_DTYPES:
        names = ", ".join(str(d) for d in KV_DTYPES)
        raise ConfigError(f"the K/V dtype must be one of {names}, got {dtype!r}")
    return dtype


def storage_device(device: object) -> torch.device:
    """``device`` as the ``torch.device`` a tensor made there reports ("cuda" becomes
    "cuda:0"), or ``ConfigError`` when it cannot hold a slab here."""
    if not isinstance(device, (str, torch.device)):
        raise ConfigError(f"device must be a str or a torch.device, got {type(device).__name__}")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"not a device: {device!r} ({err})") from None
    if dev.type == "meta":
        raise ConfigError("the meta device holds no data: a cache needs a real device")
    try:
        return torch.empty(0, device=dev).device
    except (RuntimeError, AssertionError, NotImplementedError, ValueError) as err:
        hint = ""
        if dev.type == "cuda":
            hint = "; install a CUDA build of torch (README: using a GPU) on a machine with a GPU"
        raise ConfigError(f"device {dev} is not usable here: {err}{hint}") from None


class Slab:
    """The K/V slab and per-slot lengths (module docstring)."""

    def __init__(
        self,
        num_slots: int,
        num_layers: int,
        num_heads: int,
        head_dim: int,
        context_length: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        kernels: Kernels | None = None,
    ) -> None:
        #: What runs the tensor work of gathers and batch stores (eager or compiled).
        self.kernels = EAGER if kernels is None else kernels
        for name, value in (
            ("num_slots", num_slots),
            ("num_layers", num_layers),
            ("num_heads", num_heads),
            ("head_dim", head_dim),
            ("context_length", context_length),
        ):
            positive_int(value, name)
        dtype = storage_dtype(dtype)
        dev = storage_device(device)
        self.num_slots = num_slots
        self.context_length = context_length
        self.zero = num_slots
        self.trash = num_slots + 1
        shape = (num_layers, 2, num_slots + 2, num_heads, context_length, head_dim)
        try:
            self.kv = torch.zeros(shape, device=dev, dtype=dtype)
        except RuntimeError as err:  # out of memory, or more elements than torch can index
            size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
            raise ConfigError(f"cannot allocate a slab of {size} bytes on {dev}: {err}") from None
        self.lengths = torch.zeros(num_slots + 2, dtype=torch.int64, device=dev)
        self.kernels.pin(self.kv, self.lengths)

    @property
    def device(self) -> torch.device:
        return self.kv.device

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(L, H, d)``: layers, heads and head size of every entry."""
        return (int(self.kv.shape[0]), int(self.kv.shape[3]), int(self.kv.shape[5]))

    @property
    def dtype(self) -> torch.dtype:
        return self.kv.dtype

    @property
    def entry_bytes(self) -> int:
        """Bytes of K/V payload per slot: ``2 * L * H * cl * d * itemsize``."""
        return self.kv[:, :, 0].numel() * self.kv.element_size()

    @property
    def storage_bytes(self) -> int:
        """Bytes of the whole slab (payload of every slot, ZERO and TRASH included)."""
        return self.kv.numel() * self.kv.element_size() + self.lengths.numel() * 8

    # ------------------------------------------------------------------ checks
    def check_batch(self, batch: object, rows: int) -> Batch:
        """A ``Batch`` of ``rows`` rows of this slab's shape, no wider than the context."""
        if not isinstance(batch, Batch):
            raise BatchError(f"expected a zerokv Batch, got {type(batch).__name__}")
        self._check_kv(batch.kv, "batch", rows)
        if batch.width > self.context_length:
            raise BatchError(
                f"batch width {batch.width} exceeds the context length {self.context_length}: "
                "rows could hold more tokens than an entry can"
            )
        if tuple(batch.lengths.shape) != (rows,) or batch.lengths.dtype != torch.int64:
            raise ShapeError(f"batch lengths must be ({rows},) int64")
        check_lengths(batch)
        return Batch(batch.kv, batch.lengths, True)

    def check_entries(self, entries: object, rows: int) -> Entries:
        """``Entries`` of ``rows`` rows in this slab's layout."""
        if not isinstance(entries, Entries):
            raise BatchError(f"expected zerokv Entries, got {type(entries).__name__}")
        self._check_kv(entries.kv, "entries", rows)
        if entries.kv.shape[4] != self.context_length:
            raise ShapeError(
                f"entries must be {self.context_length} columns wide (slab layout), "
                f"got {entries.kv.shape[4]}"
            )
        if tuple(entries.lengths.shape) != (rows,) or entries.lengths.dtype != torch.int64:
            raise ShapeError(f"entry lengths must be ({rows},) int64")
        check_lengths(entries, EntryError)
        return Entries(entries.kv, entries.lengths, True)

    def _check_kv(self, kv: torch.Tensor, what: str, rows: int) -> None:
        layers, heads, head_dim = self.shape
        if kv.dim() != 6:
            raise ShapeError(f"{what} kv must be 6-d [L, 2, B, H, W, d], got {tuple(kv.shape)}")
        got = (kv.shape[0], kv.shape[1], kv.shape[2], kv.shape[3], kv.shape[5])
        want = (layers, 2, rows, heads, head_dim)
        if got[:2] + got[3:] == want[:2] + want[3:] and got[2] != rows:
            # The spec's error for the same mistake (more or fewer entries / rows than keys).
            raise BatchError(f"got {rows} keys but {what} has {kv.shape[2]} rows")
        if got != want:
            raise ShapeError(
                f"{what} kv must be [L={layers}, 2, B={rows}, H={heads}, W, d={head_dim}], "
                f"got {tuple(kv.shape)}"
            )
        if kv.dtype != self.dtype:
            raise DTypeError(f"{what} kv must have dtype {self.dtype}, got {kv.dtype}")
        if kv.device != self.device:
            raise DeviceError(f"{what} kv must be on {self.device}, got {kv.device}")

    # ------------------------------------------------------------------ reads
    def gather(self, slots: torch.Tensor, width: int | None = None) -> Batch:
        """The entries in ``slots`` as a batch of ``width`` columns (default ``cl``)."""
        kv = self.kv.index_select(2, slots)
        lengths = self.lengths.index_select(0, slots)
        if width is not None and width != self.context_length:
            if isinstance(width, bool) or not isinstance(width, int) or width < 0:
                raise BatchError(f"width must be an int >= 0, got {width!r}")
            if width < self.context_length:
                # Narrower than the slab: only valid if no entry is longer (a device read).
                longest = int(lengths.max().item()) if lengths.numel() else 0
                if width < longest:
                    raise BatchError(f"width {width} is smaller than the longest entry ({longest})")
            try:
                kv = _fit_width(kv, width)
            except RuntimeError as err:  # out of memory, or more elements than torch indexes
                raise BatchError(f"cannot allocate a batch of width {width}: {err}") from None
        return Batch(kv, lengths, True)

    def gather_append(self, slots: torch.Tensor, new_kv: torch.Tensor) -> Batch:
        """``append(gather(slots), new_kv, cl)`` in one pass (``new_kv``: the model's ``t``
        new tokens ``[L, 2, B, H, t, d]``): the entries are gathered straight into the
        columns the append keeps, so the batch is written once."""
        t = check_new_tokens(self.kv, int(slots.shape[0]), new_kv, self.context_length)
        return self._gather_with(slots, t, new_kv)

    def gather_reserve(self, slots: torch.Tensor, t: int) -> Batch:
        """``gather_append`` with ``t`` zero tokens: the batch a model then writes into.

        A transformer produces layer ``l``'s new K/V only after attending to the batch's
        layer ``l``, so it cannot hand them over up front: it writes them in place into
        ``batch.kv[l, :, :, :, -t:, :]``, as LightZero's cache update does. Lengths
        already count the ``t`` columns.
        """
        t = check_token_count(t, self.context_length)
        return self._gather_with(slots, t, None)

    def _gather_with(self, slots: torch.Tensor, t: int, new_kv: torch.Tensor | None) -> Batch:
        """The entries in ``slots`` gathered into the columns a ``cl``-wide append of ``t``
        tokens keeps, followed by ``new_kv`` (zeros when None): one ``gather_rows``."""
        drop = overflow_drop(self.context_length, t, self.context_length)
        kv, lengths = self.kernels(gather_rows)(self.kv, self.lengths, slots, drop, t, new_kv)
        return Batch(kv, lengths, True)

    def read(self, slots: torch.Tensor) -> Entries:
        """Copies of the entries in ``slots`` (slab layout)."""
        return Entries(self.kv.index_select(2, slots), self.lengths.index_select(0, slots), True)

    # ------------------------------------------------------------------ writes
    def write(self, slots: torch.Tensor, entries: Entries) -> None:
        """Store ``entries`` row ``b`` in slot ``slots[b]`` (TRASH may repeat)."""
        src = entries.kv
        if self._views_slab(src):
            src = src.clone()  # entries viewing the slab: a scatter must not read its output
        write_rows_at(self.kv, self.lengths, slots, src, entries.lengths)

    def plan_store(self, batch: Batch, correction: Correction) -> RowPlan | None:
        """The host plan of a ``store`` (``zerokv.entry.plan_rows``), or None where host
        reads are not free or the plan does not apply. Call it before the index decides
        the slots: it raises ``BatchError`` for lengths outside ``[0, W]``. Compiled
        kernels take no host shortcut: with them the store is the ``store_window`` kernel."""
        if not self.kernels.shortcuts(self.device):
            return None
        return plan_rows(batch, self.context_length, correction)

    def store(
        self,
        placement: Placement,
        batch: Batch,
        correction: Correction,
        plan: RowPlan | None,
    ) -> None:
        """Store row ``b`` of ``batch`` (split, window rule) in slot ``write[b]`` of the
        placement; ``plan`` is ``plan_store``'s answer for the same batch."""
        targets = placement.result.write
        if plan is None:
            call = self.window_call(batch, correction)
            if call is None:
                self.write(targets, store_rows(batch, self.context_length, correction))
            else:  # one kernel: the rows' layout under the window rule, then the scatter
                self.kernels(store_window)(call, targets)
            return
        host = placement.host_write
        if host is None:
            host = targets.tolist()  # only reached where host reads are free
        lengths = torch.tensor(plan.out_lengths, dtype=torch.int64, device=self.device)
        first, rows = host[0], len(host)
        # A batch that is itself a view of the slab is computed out of place (an in-place
        # write could read rows it has already overwritten).
        if not self._views_slab(batch.kv) and host == list(range(first, first + rows)):
            write_rows(batch, plan, correction, self.kv[:, :, first : first + rows], lengths)
            self.lengths[first : first + rows] = lengths
        else:
            self.write(
                targets, Entries(write_rows(batch, plan, correction, None, lengths), lengths, True)
            )

    def window_call(self, batch: Batch, correction: Correction) -> WindowCall | None:
        """The ``store_window`` arguments of a store of ``batch`` but its targets (checked
        here: lengths and correction), or None where the kernel does not apply (an empty
        batch, or one that views the slab: ``store_rows`` then ``write``)."""
        if batch.width == 0 or self._views_slab(batch.kv):
            return None
        check_lengths(batch)  # store_rows's checks (free for a verified batch)
        correction.check(batch.kv, self.context_length)
        table = row_tables(self.context_length, self.dtype, self.device)
        return WindowCall(
            self.kv,
            self.lengths,
            batch.kv,
            batch.lengths,
            correction.padded,
            table,
            self.context_length,
        )

    def _views_slab(self, kv: torch.Tensor) -> bool:
        """Whether ``kv`` shares the slab's memory."""
        return kv.untyped_storage().data_ptr() == self.kv.untyped_storage().data_ptr()


# ---------------------------------------------------------------------- kernels
# Pure functions of tensors and static ints, run eagerly or compiled (``zerokv.kernels``).


def gather_rows(
    store: torch.Tensor,
    stored_lengths: torch.Tensor,
    slots: torch.Tensor,
    drop: int,
    t: int,
    new_kv: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The entries of ``store`` (``[L, 2, N, H, cl, d]``) in ``slots``, their first
    ``drop`` columns dropped, followed by ``t`` columns of ``new_kv`` (zeros when None);
    and their lengths (kept tokens plus ``t``)."""
    cl = int(store.shape[4])
    lengths = stored_lengths.index_select(0, slots)
    shape = (store.shape[0], 2, int(slots.shape[0]), store.shape[3])
    if drop >= cl:  # the append empties every row
        kv = store.new_zeros((*shape, t, store.shape[5])) if new_kv is None else new_kv.clone()
        return kv, torch.full_like(lengths, t)
    kept = cl - drop
    source = store[:, :, :, :, drop:, :]
    if torch.compiler.is_compiling():
        # Compiled: one fused kernel writes both parts (an ``out=`` view breaks a graph).
        tail = store.new_zeros((*shape, t, store.shape[5])) if new_kv is None else new_kv
        out = torch.cat((source.index_select(2, slots), tail), dim=4)
    else:
        # Eager: the gather lands in its columns directly; the batch is written once.
        out = store.new_empty((*shape, kept + t, store.shape[5]))
        torch.index_select(source, 2, slots, out=out[:, :, :, :, :kept, :])
        tail = out[:, :, :, :, kept:, :]
        if new_kv is None:
            tail.zero_()
        else:
            tail.copy_(new_kv)
    return out, lengths.clamp(max=kept) + t


def write_rows_at(
    store: torch.Tensor,
    stored_lengths: torch.Tensor,
    slots: torch.Tensor,
    kv: torch.Tensor,
    lengths: torch.Tensor,
) -> None:
    """``store``'s slot ``slots[b]`` := row ``b`` of ``kv`` (slab layout), and its length.

    ``kv`` must not share ``store``'s memory (a scatter must not read its own output)."""
    dst, src = store, kv
    if not torch.compiler.is_compiling():
        for wide in (torch.complex128, torch.int64):
            # index_copy_ moves one element at a time: copying the same bytes as a quarter
            # as many 16-byte elements is several times faster on the CPU. A copy moves
            # bits unchanged; nothing is computed on them. (Compiled code copies its own way.)
            if _viewable(dst, wide) and _viewable(src, wide):
                dst, src = dst.view(wide), src.view(wide)
                break
    dst.index_copy_(2, slots, src)
    stored_lengths.index_copy_(0, slots, lengths)


class WindowCall(NamedTuple):
    """A batch store's slab work but its targets (``Slab.window_call``): the slab's K/V
    and lengths, the batch (width >= 1, not a view of the slab), the correction placed at
    its columns, the per-length tables and the context length."""

    store: torch.Tensor
    stored_lengths: torch.Tensor
    kv: torch.Tensor
    lengths: torch.Tensor
    padded: torch.Tensor
    table: RowTables
    context_length: int


def store_window(call: WindowCall, slots: torch.Tensor) -> None:
    """A batch store's slab work: ``zerokv.entry.shift_rows`` (split and window rule) of
    the batch, written to ``slots``."""
    rows, out_len = shift_rows(call.kv, call.lengths, call.padded, call.table, call.context_length)
    write_rows_at(call.store, call.stored_lengths, slots, rows, out_len)


def _viewable(kv: torch.Tensor, wide: torch.dtype) -> bool:
    """Whether ``kv.view(wide)`` (a wider element type over the same bytes) is allowed."""
    item, size = kv.element_size(), wide.itemsize
    if kv.dtype.is_complex or item >= size or kv.dim() == 0 or kv.stride(-1) != 1:
        return False
    offsets = (kv.shape[-1], kv.storage_offset(), *kv.stride()[:-1])
    return all(v * item % size == 0 for v in offsets)
