"""Argument checks shared by every public entry point of the implementation.

Everything here looks only at host metadata (type, shape, dtype, device) or at host
values (env ids given as Python ints or a CPU tensor), so validation never synchronises
with a GPU. A failed check raises the ``zerokv.errors`` type the spec raises for the same
mistake, before anything is changed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from zerokv.entry import Batch, Entries
from zerokv.errors import (
    BatchError,
    DeviceError,
    DTypeError,
    EnvIdError,
    InputError,
    ShapeError,
)

__all__ = [
    "check_batch",
    "check_entries",
    "check_env_range",
    "check_fingerprints",
    "check_finite_priorities",
    "check_keys",
    "check_priorities",
    "env_id_list",
]


def check_keys(keys: object, device: torch.device, name: str = "keys") -> torch.Tensor:
    """``keys`` must be a ``[B]`` int64 tensor on ``device``."""
    if not isinstance(keys, torch.Tensor):
        raise DTypeError(f"{name} must be a torch.Tensor of int64, got {type(keys).__name__}")
    if keys.dtype != torch.int64:
        raise DTypeError(f"{name} must have dtype torch.int64, got {keys.dtype}")
    if keys.dim() != 1:
        raise ShapeError(f"{name} must be one-dimensional [B], got shape {tuple(keys.shape)}")
    if keys.device != device:
        raise DeviceError(f"{name} must be on {device}, got {keys.device}")
    return keys


def check_fingerprints(
    fingerprints: torch.Tensor | None,
    has_fingerprint: torch.Tensor | None,
    rows: int,
    device: torch.device,
) -> None:
    """Optional ``[B]`` int64 fingerprints and an optional ``[B]`` bool mask of which count."""
    if fingerprints is None:
        if has_fingerprint is not None:
            raise BatchError("has_fingerprint was given without fingerprints")
        return
    check_keys(fingerprints, device, "fingerprints")
    if fingerprints.shape[0] != rows:
        # The spec's error for the same mistake (a fingerprint list of another length).
        raise BatchError(f"got {rows} keys but {fingerprints.shape[0]} fingerprints")
    if has_fingerprint is not None:
        if not isinstance(has_fingerprint, torch.Tensor) or has_fingerprint.dtype != torch.bool:
            raise DTypeError("has_fingerprint must be a bool tensor")
        if tuple(has_fingerprint.shape) != (rows,):
            raise ShapeError(
                f"has_fingerprint must have shape ({rows},), got {tuple(has_fingerprint.shape)}"
            )
        if has_fingerprint.device != device:
            raise DeviceError(f"has_fingerprint must be on {device}, got {has_fingerprint.device}")


def check_priorities(
    priorities: torch.Tensor | None,
    has_priority: torch.Tensor | None,
    rows: int,
    device: torch.device,
) -> None:
    """Optional ``[B]`` float64 priorities and an optional ``[B]`` bool mask of which count."""
    if priorities is None:
        if has_priority is not None:
            raise BatchError("has_priority was given without priorities")
        return
    if not isinstance(priorities, torch.Tensor) or priorities.dtype != torch.float64:
        raise DTypeError("priorities must be a float64 tensor")
    if priorities.dim() != 1:
        raise ShapeError(f"priorities must have shape ({rows},), got {tuple(priorities.shape)}")
    if priorities.shape[0] != rows:
        raise BatchError(f"got {rows} keys but {priorities.shape[0]} priorities")
    if priorities.device != device:
        raise DeviceError(f"priorities must be on {device}, got {priorities.device}")
    if has_priority is not None and (
        not isinstance(has_priority, torch.Tensor)
        or has_priority.dtype != torch.bool
        or tuple(has_priority.shape) != (rows,)
        or has_priority.device != device
    ):
        raise ShapeError(f"has_priority must be a ({rows},) bool tensor on {device}")


def check_finite_priorities(
    priorities: torch.Tensor | None, has_priority: torch.Tensor | None
) -> None:
    """The given priorities must be finite (the spec's ``InputError``).

    Call it after the index accepted priorities at all (``UnsupportedOperationError`` for
    FIFO / LRU comes first, as in the spec). It reads one device value, which only
    priority pools pay (they are off UniZero's hot path).
    """
    if priorities is None:
        return
    bad = ~torch.isfinite(priorities)
    if has_priority is not None:
        bad = bad & has_priority
    if bool(bad.any()):
        raise InputError(f"priorities must be finite, got {priorities[bad].tolist()}")


def env_id_list(env_ids: Sequence[int] | torch.Tensor, env_num: int | None) -> tuple[int, ...]:
    """Env ids as host ints in ``[0, env_num)`` (a CPU tensor is accepted, a GPU one not).

    With ``env_num`` None only the types are checked (``check_env_range`` follows).
    """
    if isinstance(env_ids, torch.Tensor):
        if env_ids.device.type != "cpu":
            raise DeviceError(
                "env ids must be host values (a sequence of ints or a CPU tensor), "
                f"got a tensor on {env_ids.device}; checking it would synchronise"
            )
        if env_ids.dim() != 1 or env_ids.dtype.is_floating_point or env_ids.dtype == torch.bool:
            raise EnvIdError(f"env ids must be a 1-d integer tensor, got {env_ids.dtype}")
        ids = tuple(int(e) for e in env_ids.tolist())
    else:
        if isinstance(env_ids, (str, bytes)) or not isinstance(env_ids, Sequence):
            raise EnvIdError(f"env ids must be a sequence of ints, got {type(env_ids).__name__}")
        for e in env_ids:
            if isinstance(e, bool) or not isinstance(e, int):
                raise EnvIdError(f"env id must be an int, got {type(e).__name__}")
        ids = tuple(env_ids)
    if env_num is not None:
        check_env_range(ids, env_num)
    return ids


def check_env_range(ids: Sequence[int], env_num: int) -> None:
    """Raise ``EnvIdError`` unless every id lies in ``[0, env_num)``."""
    for e in ids:
        if not 0 <= e < env_num:
            raise EnvIdError(f"env id must lie in [0, {env_num}), got {e}")


def _check_kv(
    kv: torch.Tensor,
    what: str,
    rows: int,
    shape: tuple[int, int, int],
    device: torch.device,
    dtype: torch.dtype,
) -> None:
    layers, heads, head_dim = shape
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
    if kv.dtype != dtype:
        raise DTypeError(f"{what} kv must have dtype {dtype}, got {kv.dtype}")
    if kv.device != device:
        raise DeviceError(f"{what} kv must be on {device}, got {kv.device}")


def check_batch(
    batch: object,
    rows: int,
    shape: tuple[int, int, int],
    context_length: int,
    device: torch.device,
    dtype: torch.dtype,
) -> Batch:
    """A ``Batch`` of ``rows`` rows of this cache's shape, no wider than the context."""
    if not isinstance(batch, Batch):
        raise BatchError(f"expected a zerokv Batch, got {type(batch).__name__}")
    _check_kv(batch.kv, "batch", rows, shape, device, dtype)
    if batch.width > context_length:
        raise BatchError(
            f"batch width {batch.width} exceeds the context length {context_length}: "
            "rows could hold more tokens than an entry can"
        )
    if tuple(batch.lengths.shape) != (rows,) or batch.lengths.dtype != torch.int64:
        raise ShapeError(f"batch lengths must be ({rows},) int64")
    return batch


def check_entries(
    entries: object,
    rows: int,
    shape: tuple[int, int, int],
    context_length: int,
    device: torch.device,
    dtype: torch.dtype,
) -> Entries:
    """``Entries`` of ``rows`` rows in this cache's slab layout."""
    if not isinstance(entries, Entries):
        raise BatchError(f"expected zerokv Entries, got {type(entries).__name__}")
    _check_kv(entries.kv, "entries", rows, shape, device, dtype)
    if entries.kv.shape[4] != context_length:
        raise ShapeError(
            f"entries must be {context_length} columns wide (slab layout), "
            f"got {entries.kv.shape[4]}"
        )
    if tuple(entries.lengths.shape) != (rows,) or entries.lengths.dtype != torch.int64:
        raise ShapeError(f"entry lengths must be ({rows},) int64")
    return entries
