"""``Rows``: the per-row arguments of one batched call, validated once.

Every batched manager call names its rows the same way: an environment id, a key, and
optionally a fingerprint and a priority per row (the spec's ``env_ids``, ``keys``,
``fingerprints``, ``priorities`` of its ``*_many`` operations). ``Rows.checked`` validates
them once, in the spec's order, raising the spec's error types before anything changes;
everything below the manager (the indexes, the slab) takes the ``Rows`` value instead of
six loose arguments.

A ``Rows`` has two views of the same values:

* the **tensors** (``keys``, ``fingerprints`` and so on, on the cache's device), which the
  device-resident index reads without leaving the device;
* the **host view** (``host()``: Python lists, built once on first use), which the host
  index reads. On the CPU the tensors' values already live in host memory, so the view
  costs one ``tolist`` per field; on CUDA nothing ever asks for it.

Env ids are always host values (a sequence of ints or a CPU tensor): they come from the
environment manager on the host, so checking them costs no synchronisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import torch

from zerokv.errors import BatchError, DeviceError, DTypeError, EnvIdError, InputError, ShapeError

__all__ = ["HostRows", "Rows", "check_keys", "env_id_list", "env_tensor"]


@dataclass(frozen=True, slots=True)
class HostRows:
    """The host view of ``Rows``: one list per field.

    ``fingerprints[b]`` is None where row ``b`` gives no fingerprint (none given, or its
    ``has_fingerprint`` is False); ``priorities`` is None when no priorities were given,
    and ``priorities[b]`` None where row ``b`` gives none.
    """

    env_ids: tuple[int, ...]
    keys: list[int]
    fingerprints: list[int | None]
    priorities: list[float | None] | None


@dataclass(frozen=True, slots=True)
class Rows:
    """The per-row arguments of a batched call (module docstring); build with ``checked``."""

    env_ids: tuple[int, ...]
    #: ``env_ids`` as a ``[B]`` int64 tensor on the cache's device.
    env_tensor: torch.Tensor
    keys: torch.Tensor
    fingerprints: torch.Tensor | None = None
    has_fingerprint: torch.Tensor | None = None
    priorities: torch.Tensor | None = None
    has_priority: torch.Tensor | None = None
    _host: list[HostRows] = field(default_factory=list, compare=False, repr=False)

    @staticmethod
    def checked(
        env_ids: Sequence[int] | torch.Tensor,
        keys: torch.Tensor,
        fingerprints: torch.Tensor | None,
        has_fingerprint: torch.Tensor | None,
        *,
        env_num: int,
        device: torch.device,
    ) -> Rows:
        """Validated rows (the spec's order: row counts first, then each row's values)."""
        ids = env_id_list(env_ids)
        check_keys(keys, device)
        if keys.shape[0] != len(ids):
            raise BatchError(f"got {len(ids)} env ids but {keys.shape[0]} keys")
        _check_fingerprints(fingerprints, has_fingerprint, len(ids), device)
        check_env_range(ids, env_num)
        return Rows(ids, env_tensor(ids, device), keys, fingerprints, has_fingerprint)

    def with_priorities(
        self, priorities: torch.Tensor | None, has_priority: torch.Tensor | None
    ) -> Rows:
        """These rows with per-row priorities (their types and shapes checked here;
        whether the pools take priorities at all is the index's check)."""
        _check_priorities(priorities, has_priority, self.count, self.keys.device)
        if priorities is None:
            return self
        return Rows(
            self.env_ids,
            self.env_tensor,
            self.keys,
            self.fingerprints,
            self.has_fingerprint,
            priorities,
            has_priority,
        )

    @property
    def count(self) -> int:
        return len(self.env_ids)

    def host(self) -> HostRows:
        """The host view (built on first use; see the module docstring)."""
        if not self._host:
            self._host.append(self._host_view())
        return self._host[0]

    def _host_view(self) -> HostRows:
        keys: list[int] = self.keys.tolist()
        fps: list[int | None]
        if self.fingerprints is None:
            fps = [None] * len(keys)
        elif self.has_fingerprint is None:
            fps = self.fingerprints.tolist()
        else:
            given = self.has_fingerprint.tolist()
            fps = [f if g else None for f, g in zip(self.fingerprints.tolist(), given)]
        prios: list[float | None] | None = None
        if self.priorities is not None:
            values: list[float] = self.priorities.tolist()
            flags = [True] * len(values)
            if self.has_priority is not None:
                flags = self.has_priority.tolist()
            prios = [p if f else None for p, f in zip(values, flags)]
        return HostRows(self.env_ids, keys, fps, prios)

    def check_finite_priorities(self) -> None:
        """The given priorities must be finite (the spec's ``InputError``).

        Called after the index accepted priorities at all (the spec raises
        ``UnsupportedOperationError`` first). It reads the priorities, which only priority
        pools pay (they are off UniZero's hot path).
        """
        if self.priorities is None:
            return
        bad = ~torch.isfinite(self.priorities)
        if self.has_priority is not None:
            bad = bad & self.has_priority
        if bool(bad.any()):
            raise InputError(f"priorities must be finite, got {self.priorities[bad].tolist()}")


@lru_cache(maxsize=64)
def env_tensor(ids: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """``ids`` as an int64 tensor on ``device`` (cached: a batch's ids rarely change)."""
    return torch.tensor(ids, dtype=torch.int64).to(device)


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


def _check_fingerprints(
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


def _check_priorities(
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


def env_id_list(
    env_ids: Sequence[int] | torch.Tensor, env_num: int | None = None
) -> tuple[int, ...]:
    """Env ids as host ints (a CPU tensor is accepted, a GPU one not); with ``env_num``
    also checked to lie in ``[0, env_num)``."""
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
