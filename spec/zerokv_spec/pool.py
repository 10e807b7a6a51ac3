"""Slot pools: the reference definition of storage, lookup, verification and eviction.

A pool has ``capacity`` slots numbered ``0 .. capacity-1``. Each slot is empty or holds one
entry: a key, an optional fingerprint and a value. ``index`` maps each stored key to its
slot; together with ``slot_keys`` it is a bijection between stored keys and occupied slots.

``SlotPool`` holds everything common to the policies; a policy subclass overrides only
``choose_slot`` (where a new key goes), ``on_use`` / ``on_remove`` / ``on_clear`` (its own
bookkeeping) and ``eviction_order``:

* ``FIFOPool`` - LightZero's ring, exactly: a pointer ``next``; a *new* key takes slot
  ``next`` (evicting the key stored there, if any) and the pointer advances by one modulo
  the capacity. Re-storing a stored key overwrites its slot in place and does not move the
  pointer. An explicit ``evict`` leaves a hole that the ring does not look for: the hole is
  reused only when the pointer reaches it. ``clear`` resets the pointer to 0.
* ``LRUPool`` - a new key takes the lowest-numbered empty slot; when none is empty it
  evicts the least recently used key. A *use* is a hit of ``get`` and every ``put``
  (insert or update); ``peek`` and misses are not uses.
* ``PriorityPool`` - every key has a priority (set by ``put``, default 0.0, changed by
  ``set_priority``). A new key takes the lowest-numbered empty slot, else evicts the key
  with the lowest priority; ties go to the key inserted earliest (updates keep a key's
  insertion time). Lookups do not change anything.

Verification: ``get`` and ``peek`` take an optional fingerprint. A lookup *with* a
fingerprint hits only an entry stored with the same fingerprint; a stored key whose
fingerprint differs (or that was stored without one) is a *collision*: it is counted, it
is a miss, and the entry is not returned. A lookup *without* a fingerprint trusts the key
(LightZero's behaviour) and hits whatever is stored under it.

Batch operations (``get_many``, ``peek_many``, ``put_many``) are by definition the
left-to-right fold of the single operations, duplicates included; they validate every
argument before changing anything.

Every public operation checks its arguments first and raises a ``zerokv_spec.errors`` type
without changing the pool, and checks the class invariants afterwards (``check``), raising
``ContractViolation`` if they fail.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Generic, TypeVar

from zerokv_spec.errors import (
    BatchError,
    ConfigError,
    ContractViolation,
    InputError,
    KeyNotFoundError,
    SlotRangeError,
    UnsupportedOperationError,
)
from zerokv_spec.keys import check_key
from zerokv_spec.stats import PoolStats
from zerokv_spec.validate import positive_int

__all__ = [
    "FIFOPool",
    "LRUPool",
    "Lookup",
    "LookupStatus",
    "Policy",
    "PriorityPool",
    "PutResult",
    "SlotPool",
    "make_pool",
]

V = TypeVar("V")


class Policy(str, Enum):
    """The eviction policies."""

    FIFO = "fifo"
    LRU = "lru"
    PRIORITY = "priority"


class LookupStatus(IntEnum):
    """Outcome of one lookup. The integer values are the implementation's status codes."""

    MISS = 0
    HIT = 1
    COLLISION = 2


@dataclass(frozen=True)
class Lookup(Generic[V]):
    """Result of ``get``: status, the slot (hits only) and the value (hits only)."""

    status: LookupStatus
    slot: int | None
    value: V | None

    @property
    def hit(self) -> bool:
        return self.status is LookupStatus.HIT


@dataclass(frozen=True)
class PutResult:
    """Result of ``put``: the slot written, the key evicted to make room, new or updated."""

    slot: int
    evicted: int | None
    inserted: bool


def _check_fingerprint(fingerprint: int | None) -> None:
    if fingerprint is not None:
        check_key(fingerprint, "fingerprint")


@dataclass(eq=False)
class SlotPool(Generic[V]):
    """State and policy-independent behaviour of one pool (see the module docstring).

    Invariants (``check``):
    - ``capacity >= 1`` and every per-slot list has ``capacity`` items;
    - ``index[k] == s`` iff ``slot_keys[s] == k`` (a bijection on the occupied slots);
    - an empty slot has no fingerprint and no value;
    - the statistics identities of ``PoolStats.check``;
    - the policy's own invariant (``check_policy``).
    """

    capacity: int
    slot_keys: list[int | None] = field(init=False)
    slot_fingerprints: list[int | None] = field(init=False)
    slot_values: list[V | None] = field(init=False)
    index: dict[int, int] = field(init=False)
    stats: PoolStats = field(init=False)

    policy = Policy.FIFO  # overridden by each subclass

    def __post_init__(self) -> None:
        positive_int(self.capacity, "capacity")
        self.slot_keys = [None] * self.capacity
        self.slot_fingerprints = [None] * self.capacity
        self.slot_values = [None] * self.capacity
        self.index = {}
        self.stats = PoolStats()
        self.reset_policy()

    # ------------------------------------------------------------------ policy hooks
    def reset_policy(self) -> None:
        """Reset the policy's bookkeeping to that of an empty pool."""

    def choose_slot(self) -> int:
        """The slot a new key is written to (an occupied slot's key is evicted)."""
        raise NotImplementedError

    def on_use(self, slot: int, *, inserted: bool, priority: float | None) -> None:
        """Bookkeeping after a hit (``inserted`` False, no priority) or a put."""

    def on_hit(self, slot: int) -> None:
        """Bookkeeping after a ``get`` hit."""

    def on_remove(self, slot: int) -> None:
        """Bookkeeping after the key in ``slot`` was evicted or removed."""

    def eviction_order(self) -> list[int]:
        """Stored keys in the order the policy would evict them, first victim first."""
        raise NotImplementedError

    def check_policy(self) -> None:
        """Raise ``ContractViolation`` if the policy's bookkeeping is inconsistent."""

    def check_priority_argument(self, priority: float | None) -> None:
        if priority is not None:
            raise UnsupportedOperationError(
                f"{self.policy.value} pools take no priority; got priority={priority!r}"
            )

    # ------------------------------------------------------------------ invariants
    def check(self) -> None:
        """Raise ``ContractViolation`` unless every class invariant holds."""
        cap = self.capacity
        if cap < 1:
            raise ContractViolation(f"capacity {cap} < 1")
        for name in ("slot_keys", "slot_fingerprints", "slot_values"):
            if len(getattr(self, name)) != cap:
                raise ContractViolation(f"{name} has {len(getattr(self, name))} items, not {cap}")
        for key, slot in self.index.items():
            if not 0 <= slot < cap or self.slot_keys[slot] != key:
                raise ContractViolation(f"index maps key {key} to slot {slot} holding another key")
        for slot, held in enumerate(self.slot_keys):
            if held is None:
                if self.slot_fingerprints[slot] is not None or self.slot_values[slot] is not None:
                    raise ContractViolation(f"empty slot {slot} keeps a fingerprint or value")
            elif self.index.get(held) != slot:
                raise ContractViolation(f"slot {slot} holds key {held} missing from the index")
        self.stats.check()
        self.check_policy()

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, key: object) -> bool:
        return key in self.index

    @property
    def occupancy(self) -> float:
        """Stored entries per slot, in ``[0, 1]``."""
        return len(self.index) / self.capacity

    def slot_of(self, key: int) -> int:
        """The slot holding ``key``; ``KeyNotFoundError`` if it is not stored."""
        check_key(key)
        if key not in self.index:
            raise KeyNotFoundError(f"key {key} is not stored in this pool")
        return self.index[key]

    def key_at(self, slot: int) -> int | None:
        """The key stored in ``slot`` (None when empty); ``SlotRangeError`` out of range."""
        if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < self.capacity:
            raise SlotRangeError(f"slot must be an int in [0, {self.capacity}), got {slot!r}")
        return self.slot_keys[slot]

    def occupied(self) -> list[tuple[int, int]]:
        """``(slot, key)`` for every occupied slot, in slot order."""
        return [(s, k) for s, k in enumerate(self.slot_keys) if k is not None]

    def _match(self, key: int, fingerprint: int | None) -> tuple[LookupStatus, int | None]:
        slot = self.index.get(key)
        if slot is None:
            return LookupStatus.MISS, None
        if fingerprint is not None and self.slot_fingerprints[slot] != fingerprint:
            return LookupStatus.COLLISION, None
        return LookupStatus.HIT, slot

    def peek(self, key: int, fingerprint: int | None = None) -> V | None:
        """The value stored under ``key`` if it verifies; no statistics, no recency."""
        check_key(key)
        _check_fingerprint(fingerprint)
        status, slot = self._match(key, fingerprint)
        return self.slot_values[slot] if slot is not None and status is LookupStatus.HIT else None

    def get(self, key: int, fingerprint: int | None = None) -> Lookup[V]:
        """Look ``key`` up: one query, counted as a hit or a miss (plus a collision)."""
        check_key(key)
        _check_fingerprint(fingerprint)
        status, slot = self._match(key, fingerprint)
        self.stats.queries += 1
        if status is LookupStatus.HIT and slot is not None:
            self.stats.hits += 1
            self.on_hit(slot)
            result: Lookup[V] = Lookup(status, slot, self.slot_values[slot])
        else:
            self.stats.misses += 1
            if status is LookupStatus.COLLISION:
                self.stats.collisions += 1
            result = Lookup(status, None, None)
        self.check()
        return result

    # ------------------------------------------------------------------ updates
    def put(
        self,
        key: int,
        value: V,
        fingerprint: int | None = None,
        priority: float | None = None,
    ) -> PutResult:
        """Insert ``key`` or update it in place; returns the slot and any evicted key."""
        check_key(key)
        _check_fingerprint(fingerprint)
        self.check_priority_argument(priority)
        return self._put_checked(key, value, fingerprint, priority)

    def _put_checked(
        self, key: int, value: V, fingerprint: int | None, priority: float | None
    ) -> PutResult:
        evicted: int | None = None
        slot = self.index.get(key)
        inserted = slot is None
        if slot is None:
            slot = self.choose_slot()
            evicted = self.slot_keys[slot]
            if evicted is not None:
                del self.index[evicted]
                self.on_remove(slot)
                self.stats.evictions += 1
            self.slot_keys[slot] = key
            self.index[key] = slot
            self.stats.inserts += 1
        else:
            self.stats.updates += 1
        self.slot_fingerprints[slot] = fingerprint
        self.slot_values[slot] = value
        self.on_use(slot, inserted=inserted, priority=priority)
        self.check()
        if self.index.get(key) != slot:
            raise ContractViolation(f"put({key}) did not leave the key in slot {slot}")
        return PutResult(slot, evicted, inserted)

    def evict(self, key: int) -> None:
        """Remove ``key`` (counted as a removal); ``KeyNotFoundError`` if it is absent."""
        slot = self.slot_of(key)
        del self.index[key]
        self.slot_keys[slot] = None
        self.slot_fingerprints[slot] = None
        self.slot_values[slot] = None
        self.on_remove(slot)
        self.stats.removals += 1
        self.check()

    def clear(self) -> None:
        """Empty every slot and reset the policy; statistics are kept."""
        self.slot_keys = [None] * self.capacity
        self.slot_fingerprints = [None] * self.capacity
        self.slot_values = [None] * self.capacity
        self.index = {}
        self.reset_policy()
        self.check()

    def set_priority(self, key: int, priority: float) -> None:
        """Change a stored key's priority (priority pools only)."""
        raise UnsupportedOperationError(f"{self.policy.value} pools have no priorities")

    # ------------------------------------------------------------------ batch folds
    def get_many(
        self, keys: Sequence[int], fingerprints: Sequence[int | None] | None = None
    ) -> list[Lookup[V]]:
        """``[get(k, f) for k, f in zip(keys, fingerprints)]``, arguments checked first."""
        fps = _batch_fingerprints(keys, fingerprints)
        for k, f in zip(keys, fps):
            check_key(k)
            _check_fingerprint(f)
        return [self.get(k, f) for k, f in zip(keys, fps)]

    def peek_many(
        self, keys: Sequence[int], fingerprints: Sequence[int | None] | None = None
    ) -> list[V | None]:
        """``[peek(k, f) ...]``. Each ``peek`` checks its key and fingerprint and changes
        nothing, so a bad row raises with every pool as it was: no separate pre-check."""
        fps = _batch_fingerprints(keys, fingerprints)
        return [self.peek(k, f) for k, f in zip(keys, fps)]

    def put_many(
        self,
        keys: Sequence[int],
        values: Sequence[V],
        fingerprints: Sequence[int | None] | None = None,
        priorities: Sequence[float | None] | None = None,
    ) -> list[PutResult]:
        """The left-to-right fold of ``put``; every argument is checked before any change."""
        fps = _batch_fingerprints(keys, fingerprints)
        if len(values) != len(keys):
            raise BatchError(f"put_many got {len(keys)} keys but {len(values)} values")
        prios: Sequence[float | None] = [None] * len(keys) if priorities is None else priorities
        if len(prios) != len(keys):
            raise BatchError(f"put_many got {len(keys)} keys but {len(prios)} priorities")
        for k, f, p in zip(keys, fps, prios):
            check_key(k)
            _check_fingerprint(f)
            self.check_priority_argument(p)
        return [self._put_checked(k, v, f, p) for k, v, f, p in zip(keys, values, fps, prios)]


def _batch_fingerprints(
    keys: Sequence[int], fingerprints: Sequence[int | None] | None
) -> Sequence[int | None]:
    if fingerprints is None:
        return [None] * len(keys)
    if len(fingerprints) != len(keys):
        raise BatchError(f"got {len(keys)} keys but {len(fingerprints)} fingerprints")
    return fingerprints


def _lowest_empty(pool: SlotPool[V]) -> int | None:
    for slot, key in enumerate(pool.slot_keys):
        if key is None:
            return slot
    return None


@dataclass(eq=False)
class FIFOPool(SlotPool[V]):
    """LightZero's ring (module docstring). Invariant: ``0 <= next < capacity``."""

    next: int = field(init=False, default=0)

    policy = Policy.FIFO

    def reset_policy(self) -> None:
        self.next = 0

    def choose_slot(self) -> int:
        return self.next

    def on_use(self, slot: int, *, inserted: bool, priority: float | None) -> None:
        if inserted:
            self.next = (self.next + 1) % self.capacity

    def eviction_order(self) -> list[int]:
        order = (self.slot_keys[(self.next + i) % self.capacity] for i in range(self.capacity))
        return [k for k in order if k is not None]

    def check_policy(self) -> None:
        if not 0 <= self.next < self.capacity:
            raise ContractViolation(f"ring pointer {self.next} outside [0, {self.capacity})")


@dataclass(eq=False)
class LRUPool(SlotPool[V]):
    """Least recently used (module docstring).

    ``last_use[s]`` is the logical time of slot ``s``'s last use (-1 when empty); ``clock``
    is the next time. Invariants: occupied slots have distinct times in ``[0, clock)``.
    """

    last_use: list[int] = field(init=False)
    clock: int = field(init=False, default=0)

    policy = Policy.LRU

    def reset_policy(self) -> None:
        self.last_use = [-1] * self.capacity
        self.clock = 0

    def choose_slot(self) -> int:
        empty = _lowest_empty(self)
        if empty is not None:
            return empty
        return min(range(self.capacity), key=lambda s: self.last_use[s])

    def _touch(self, slot: int) -> None:
        self.last_use[slot] = self.clock
        self.clock += 1

    def on_use(self, slot: int, *, inserted: bool, priority: float | None) -> None:
        self._touch(slot)

    def on_hit(self, slot: int) -> None:
        self._touch(slot)

    def on_remove(self, slot: int) -> None:
        self.last_use[slot] = -1

    def eviction_order(self) -> list[int]:
        return [k for _, k in sorted(self.occupied(), key=lambda sk: self.last_use[sk[0]])]

    def check_policy(self) -> None:
        if len(self.last_use) != self.capacity:
            raise ContractViolation("last_use does not cover every slot")
        times = [self.last_use[s] for s, k in enumerate(self.slot_keys) if k is not None]
        if len(set(times)) != len(times) or any(not 0 <= t < self.clock for t in times):
            raise ContractViolation(f"recency times {times} not distinct in [0, {self.clock})")
        if any(self.last_use[s] != -1 for s, k in enumerate(self.slot_keys) if k is None):
            raise ContractViolation("an empty slot has a recency time")


@dataclass(eq=False)
class PriorityPool(SlotPool[V]):
    """Lowest priority first, ties by earliest insertion (module docstring).

    ``priority[s]`` and ``inserted_at[s]`` describe slot ``s`` (0.0 and -1 when empty);
    ``clock`` is the next insertion time. Invariants: occupied slots have distinct
    insertion times in ``[0, clock)`` and finite priorities.
    """

    default_priority: float = 0.0
    priority: list[float] = field(init=False)
    inserted_at: list[int] = field(init=False)
    clock: int = field(init=False, default=0)

    policy = Policy.PRIORITY

    def __post_init__(self) -> None:
        d = self.default_priority
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d):
            raise ConfigError(f"default_priority must be a finite float, got {d!r}")
        super().__post_init__()

    def reset_policy(self) -> None:
        self.priority = [0.0] * self.capacity
        self.inserted_at = [-1] * self.capacity
        self.clock = 0

    def check_priority_argument(self, priority: float | None) -> None:
        if priority is None:
            return
        if isinstance(priority, bool) or not isinstance(priority, (int, float)):
            raise InputError(f"priority must be a float, got {type(priority).__name__}")
        if not math.isfinite(priority):
            raise InputError(f"priority must be finite, got {priority}")

    def choose_slot(self) -> int:
        empty = _lowest_empty(self)
        if empty is not None:
            return empty
        return min(range(self.capacity), key=self._rank)

    def _rank(self, slot: int) -> tuple[float, int]:
        return (self.priority[slot], self.inserted_at[slot])

    def on_use(self, slot: int, *, inserted: bool, priority: float | None) -> None:
        if inserted:
            self.inserted_at[slot] = self.clock
            self.clock += 1
            self.priority[slot] = self.default_priority if priority is None else float(priority)
        elif priority is not None:
            self.priority[slot] = float(priority)

    def on_remove(self, slot: int) -> None:
        self.priority[slot] = 0.0
        self.inserted_at[slot] = -1

    def set_priority(self, key: int, priority: float) -> None:
        """Change the priority of stored ``key``."""
        if priority is None:
            raise InputError("priority must be a float, got None")
        self.check_priority_argument(priority)
        slot = self.slot_of(key)
        self.priority[slot] = float(priority)
        self.check()

    def eviction_order(self) -> list[int]:
        return [k for _, k in sorted(self.occupied(), key=lambda sk: self._rank(sk[0]))]

    def check_policy(self) -> None:
        if len(self.priority) != self.capacity or len(self.inserted_at) != self.capacity:
            raise ContractViolation("priority bookkeeping does not cover every slot")
        times = [self.inserted_at[s] for s, k in enumerate(self.slot_keys) if k is not None]
        if len(set(times)) != len(times) or any(not 0 <= t < self.clock for t in times):
            raise ContractViolation(f"insertion times {times} not distinct in [0, {self.clock})")
        if any(not math.isfinite(p) for p in self.priority):
            raise ContractViolation("a priority is not finite")


def make_pool(policy: Policy, capacity: int) -> SlotPool[V]:
    """A new empty pool of ``policy`` with ``capacity`` slots."""
    if policy is Policy.FIFO:
        return FIFOPool(capacity)
    if policy is Policy.LRU:
        return LRUPool(capacity)
    if policy is Policy.PRIORITY:
        return PriorityPool(capacity)
    raise ConfigError(f"unknown policy {policy!r}")
