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
"""

from __future__ import annotations

import torch

from zerokv.entry import Batch, Entries, _fit_width
from zerokv.errors import BatchError, ConfigError

__all__ = ["Slab"]


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
    ) -> None:
        for name, value in (
            ("num_slots", num_slots),
            ("num_layers", num_layers),
            ("num_heads", num_heads),
            ("head_dim", head_dim),
            ("context_length", context_length),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
        if not dtype.is_floating_point:
            raise ConfigError(f"the K/V dtype must be a floating type, got {dtype}")
        self.num_slots = num_slots
        self.context_length = context_length
        self.zero = num_slots
        self.trash = num_slots + 1
        shape = (num_layers, 2, num_slots + 2, num_heads, context_length, head_dim)
        self.kv = torch.zeros(shape, device=device, dtype=dtype)
        self.lengths = torch.zeros(num_slots + 2, dtype=torch.int64, device=self.kv.device)

    @property
    def device(self) -> torch.device:
        return self.kv.device

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
            kv = _fit_width(kv, width)
        return Batch(kv, lengths)

    def read(self, slots: torch.Tensor) -> Entries:
        """Copies of the entries in ``slots`` (slab layout)."""
        return Entries(self.kv.index_select(2, slots), self.lengths.index_select(0, slots))

    def write(self, slots: torch.Tensor, entries: Entries) -> None:
        """Store ``entries`` row ``b`` in slot ``slots[b]`` (TRASH may repeat)."""
        dst, src = self.kv, entries.kv
        if src.untyped_storage().data_ptr() == dst.untyped_storage().data_ptr():
            src = src.clone()  # entries viewing the slab: a scatter must not read its output
        for wide in (torch.complex128, torch.int64):
            # index_copy_ moves one element at a time: copying the same bytes as a quarter
            # as many 16-byte elements is several times faster on the CPU. A copy moves
            # bits unchanged; nothing is computed on them.
            if _viewable(dst, wide) and _viewable(src, wide):
                dst, src = dst.view(wide), src.view(wide)
                break
        dst.index_copy_(2, slots, src)
        self.lengths.index_copy_(0, slots, entries.lengths)


def _viewable(kv: torch.Tensor, wide: torch.dtype) -> bool:
    """Whether ``kv.view(wide)`` (a wider element type over the same bytes) is allowed."""
    item, size = kv.element_size(), torch.empty((), dtype=wide).element_size()
    if kv.dtype.is_complex or item >= size or kv.dim() == 0 or kv.stride(-1) != 1:
        return False
    offsets = (kv.shape[-1], kv.storage_offset(), *kv.stride()[:-1])
    return all(v * item % size == 0 for v in offsets)
