"""What every index backend shares: the protocol, its result types and its place in a slab.

An **index** is the key -> slot directory of a group of pools of one policy (the spec's
``SlotPool`` without its values): which key each slot holds, with which fingerprint, and
the policy's bookkeeping. The K/V of the slots live in a ``Slab``; ``Region`` says where.

Two backends implement ``IndexBackend`` with the same observable behaviour (the spec's
fold semantics; the differential tests run both against the spec):

* ``zerokv.index.device`` - state in tensors on the cache's device, batched operations
  without a host synchronisation (what CUDA runs);
* ``zerokv.index.host`` - state in Python lists and dicts (what a CPU cache runs: there a
  dict answers a lookup faster than a handful of tensor operations).

``make_index`` chooses one, once, when a pool is built; nothing above the pools
(``SlotPool``, ``CacheManager``) depends on which one it got. Two places look, to run
more work in one kernel where the device index allows it: ``zerokv.index.fold_lookup``
(all tiers of a lookup in one kernel) and ``SlotPool.store_batch`` (a FIFO put and its
slab store in one kernel); both fall back to the protocol's operations.

Rows are mapped onto pools by the region: a row's pool is its env id, or pool 0 for a
``shared`` region (the recurrent tier); a region with ``bound_envs`` binds each key and
fingerprint to the row's env id (``zerokv_spec.keys.scoped_key``, ``Scope.ENV``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import torch

from zerokv.errors import InputError
from zerokv.rows import Rows
from zerokv_spec.manager import Tier
from zerokv_spec.pool import Policy
from zerokv_spec.stats import PoolStats
from zerokv_spec.validate import positive_int

__all__ = [
    "STATS_FIELDS",
    "Found",
    "IndexBackend",
    "Lookup",
    "Placement",
    "PoolState",
    "PutResult",
    "Region",
    "TierLookup",
    "check_priority_value",
]

#: The statistics counters, in the order the backends keep them.
STATS_FIELDS = (
    "queries",
    "hits",
    "misses",
    "collisions",
    "inserts",
    "updates",
    "evictions",
    "removals",
)


def check_priority_value(priority: object) -> float:
    """A priority given to ``set_priority``: a finite int or float (the spec's rule)."""
    if isinstance(priority, bool) or not isinstance(priority, (int, float)):
        raise InputError(f"priority must be a float, got {type(priority).__name__}")
    if not math.isfinite(priority):
        raise InputError(f"priority must be finite, got {priority}")
    return float(priority)


@dataclass(frozen=True)
class Region:
    """A group of ``num_pools`` pools of ``capacity`` slots inside a slab.

    Pool ``p``'s slot ``s`` is slab slot ``base + p * capacity + s``; ``zero`` is the slab
    slot a miss gathers and ``trash`` the one that absorbs superseded writes (both default
    to the slots right after the region: a slab of its own). ``tier`` is the code a hit
    reports in a ``TierLookup``. ``shared``: every row uses pool 0 (else a row's pool is
    its env id); ``bound_envs``: keys and fingerprints are bound to the env id of the row,
    for env ids below that number.
    """

    num_pools: int
    capacity: int
    base: int = 0
    zero: int = -1
    trash: int = -1
    tier: Tier = Tier.ROOT
    shared: bool = False
    bound_envs: int | None = None

    def __post_init__(self) -> None:
        positive_int(self.num_pools, "num_pools")
        positive_int(self.capacity, "capacity")
        end = self.base + self.slots
        if self.zero < 0:
            object.__setattr__(self, "zero", end)
        if self.trash < 0:
            object.__setattr__(self, "trash", self.zero + 1)

    @property
    def slots(self) -> int:
        return self.num_pools * self.capacity


@dataclass(frozen=True)
class Lookup:
    """``[B]`` tensors of a batched pool lookup (the spec's ``Lookup`` per row): status
    (``LookupStatus`` codes) and slot (-1 unless a hit). ``stamp``: the pool and the
    generation it was made in, set by ``SlotPool.get_many`` / ``peek_many`` (its
    ``gather`` / ``read`` refuse a stale one)."""

    status: torch.Tensor
    slot: torch.Tensor
    stamp: tuple[int, int] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class PutResult:
    """``[B]`` tensors of a batched put (the spec's ``PutResult`` per row).

    ``write`` is the slab slot each row's data goes to: its slot's, or the region's trash
    slot when a later row of the batch writes the same slot.
    """

    slot: torch.Tensor
    evicted: torch.Tensor
    evicted_mask: torch.Tensor
    inserted: torch.Tensor
    write: torch.Tensor


@dataclass(frozen=True)
class Placement:
    """A put's result plus its write targets as host ints when the index has them there
    (the host index; None for the device index)."""

    result: PutResult
    host_write: list[int] | None


@dataclass(frozen=True)
class TierLookup:
    """``[B]`` tensors of a manager lookup (the spec's ``TierLookup`` per row): tier
    (``Tier`` codes), slot in that tier's pool (-1 on a miss), whether a collision was
    seen (misses only), and the slab slot to gather (the slab's zero slot on a miss).

    ``owner`` and ``generation`` name the manager and the generation the lookup was made
    in: it may be gathered or read only there and then (``StaleLookupError`` otherwise).
    """

    tier: torch.Tensor
    slot: torch.Tensor
    collided: torch.Tensor
    global_slot: torch.Tensor
    owner: int = -1
    generation: int = -1


class Found:
    """A lookup in progress across tiers, in one backend's representation.

    Each tier's ``IndexBackend.lookup`` fills the rows no earlier tier hit;
    ``result(owner, generation)`` is the finished ``TierLookup``.
    """

    def result(self, owner: int, generation: int) -> TierLookup:
        raise NotImplementedError


@dataclass(frozen=True)
class PoolState:
    """Everything an index observes about one pool (tests compare it with the spec's)."""

    slot_keys: tuple[int | None, ...]
    fingerprints: tuple[int | None, ...]
    eviction_order: tuple[int, ...]
    size: int
    stats: PoolStats
    #: Per slot (PRIORITY pools only; empty otherwise), None for an empty slot.
    priorities: tuple[float | None, ...]
    #: The FIFO ring pointer (FIFO pools only).
    pointer: int | None


class IndexBackend(Protocol):
    """The operations ``SlotPool`` and ``CacheManager`` use (module docstring).

    Row operations take ``Rows`` (a row's pool is decided by the region); pool queries
    take a pool id in ``[0, num_pools)``. Host queries read device values where the
    backend keeps them there.
    """

    policy: Policy
    region: Region

    # -- batched, tensors in and out
    def get_many(self, rows: Rows, *, count: bool = True) -> Lookup: ...

    def lookup(self, rows: Rows, found: Found | None) -> Found: ...

    def check_priorities(self, rows: Rows) -> None: ...

    def put(self, rows: Rows) -> Placement: ...

    # -- single keys
    def evict(self, env_id: int, key: int) -> int: ...

    def set_priority(self, env_id: int, key: int, priority: float) -> None: ...

    def slot_of(self, env_id: int, key: int) -> int: ...

    # -- pools
    def clear(self, pool_id: int | None = None) -> None: ...

    def check_pool_id(self, pool_id: int) -> None: ...

    def check_slot(self, slot: int) -> int: ...

    def key_at(self, pool_id: int, slot: int) -> int | None: ...

    def slot_keys(self, pool_id: int) -> list[int | None]: ...

    def eviction_order(self, pool_id: int) -> list[int]: ...

    def size(self, pool_id: int) -> int: ...

    def sizes(self) -> list[int]: ...

    def stats_of(self, pool_id: int | None = None) -> PoolStats: ...

    def reset_stats(self) -> None: ...

    def view(self, pool_id: int) -> PoolState: ...

    def check(self) -> None: ...
