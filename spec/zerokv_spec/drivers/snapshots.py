"""Snapshots: pool and manager states, built from encoded arguments and frozen.

``restore`` builds a valid pool of any reachable state from a slot description and
``make_manager`` a small manager from codes; ``snapshot`` / ``manager_snapshot`` freeze
everything observable into ``PoolSnap`` / ``ManagerSnap`` records that compare with ``==``.
``PoolSnap.policy_order`` recomputes the eviction order from the raw policy state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from zerokv_spec.drivers.encodings import POLICIES, RESTORED_VALUE, SlotSpec, decode_slot, pick
from zerokv_spec.manager import CacheManager, ManagerConfig, Scope
from zerokv_spec.pool import FIFOPool, LRUPool, Policy, PriorityPool, SlotPool, make_pool
from zerokv_spec.stats import ManagerStats, PoolStats

V = TypeVar("V")


@dataclass(frozen=True)
class PoolSnap:
    """Everything observable about a pool, frozen; two snapshots compare with ``==``.

    ``next`` is the FIFO pointer (0 for other policies), ``last_use`` the LRU times,
    ``priority`` / ``inserted_at`` the PRIORITY bookkeeping (empty tuples for other
    policies), ``clock`` the LRU / PRIORITY clock, ``order`` the spec's ``eviction_order``.
    """

    policy: Policy
    keys: tuple[int | None, ...]
    fingerprints: tuple[int | None, ...]
    values: tuple[object, ...]
    stats: PoolStats
    next: int
    last_use: tuple[int, ...]
    priority: tuple[float, ...]
    inserted_at: tuple[int, ...]
    clock: int
    order: tuple[int, ...]

    @property
    def capacity(self) -> int:
        return len(self.keys)

    def __len__(self) -> int:
        return sum(1 for k in self.keys if k is not None)

    def slot_of(self, key: int | None) -> int | None:
        """The slot holding ``key`` (None when not stored)."""
        for slot, held in enumerate(self.keys):
            if held is not None and held == key:
                return slot
        return None

    def lowest_empty(self) -> int | None:
        for slot, held in enumerate(self.keys):
            if held is None:
                return slot
        return None

    def occupied(self) -> list[int]:
        return [s for s, k in enumerate(self.keys) if k is not None]

    def priority_of(self, key: int) -> float:
        """PRIORITY: the priority of stored ``key``."""
        slot = self.slot_of(key)
        assert slot is not None
        return self.priority[slot]

    def policy_order(self) -> tuple[int, ...]:
        """The eviction order recomputed from the raw policy state (not ``eviction_order``).

        FIFO: the ring from ``next``; LRU: ascending last use; PRIORITY: ascending
        ``(priority, insertion time)``.
        """
        if self.policy is Policy.FIFO:
            ring = [self.keys[(self.next + i) % self.capacity] for i in range(self.capacity)]
            return tuple(k for k in ring if k is not None)
        if self.policy is Policy.LRU:
            slots = sorted(self.occupied(), key=lambda s: self.last_use[s])
        else:
            slots = sorted(self.occupied(), key=lambda s: (self.priority[s], self.inserted_at[s]))
        return tuple(k for k in (self.keys[s] for s in slots) if k is not None)


def snapshot(pool: SlotPool[V]) -> PoolSnap:
    """Freeze ``pool``'s observable state."""
    nxt, clock = 0, 0
    last_use: tuple[int, ...] = ()
    priority: tuple[float, ...] = ()
    inserted_at: tuple[int, ...] = ()
    if isinstance(pool, FIFOPool):
        nxt = pool.next
    elif isinstance(pool, LRUPool):
        last_use, clock = tuple(pool.last_use), pool.clock
    elif isinstance(pool, PriorityPool):
        priority, inserted_at = tuple(pool.priority), tuple(pool.inserted_at)
        clock = pool.clock
    return PoolSnap(
        pool.policy,
        tuple(pool.slot_keys),
        tuple(pool.slot_fingerprints),
        tuple(pool.slot_values),
        replace(pool.stats),
        nxt,
        last_use,
        priority,
        inserted_at,
        clock,
        tuple(pool.eviction_order()),
    )


def restore(
    policy: int, capacity: int, slots: Sequence[SlotSpec], pointer: int = 0
) -> SlotPool[int]:
    """A valid pool of ``POLICIES[policy]`` in the state ``slots`` describes.

    Arguments are decoded with ``pick`` (``capacity`` to ``1..3``). Slot ``s`` holds the
    key ``decode_slot(slots[s])`` names (value ``RESTORED_VALUE + key``) unless that is -1,
    an earlier slot holds it, or ``slots`` is shorter: then ``s`` stays empty. LRU last-use
    times and PRIORITY insertion times are ``rank * capacity + s`` (distinct by
    construction) and the clock is one past the largest; ``pointer`` is the FIFO pointer.
    """
    capacity = 1 + pick(capacity - 1, 3)
    pool: SlotPool[int] = make_pool(POLICIES[pick(policy, 3)], capacity)
    stored: list[int] = []
    times: list[int] = []
    for s in range(min(capacity, len(slots))):
        key, fp, rank, prio = decode_slot(slots[s])
        if key < 0 or key in stored:
            continue
        stored.append(key)
        pool.slot_keys[s] = key
        pool.slot_fingerprints[s] = fp
        pool.slot_values[s] = RESTORED_VALUE + key
        pool.index[key] = s
        time = rank * capacity + s
        times.append(time)
        if isinstance(pool, LRUPool):
            pool.last_use[s] = time
        elif isinstance(pool, PriorityPool):
            pool.inserted_at[s] = time
            pool.priority[s] = float(prio)
    if isinstance(pool, FIFOPool):
        pool.next = pick(pointer, capacity)
    elif isinstance(pool, (LRUPool, PriorityPool)):
        pool.clock = max(times, default=-1) + 1
    pool.check()
    return pool


@dataclass(frozen=True)
class ManagerSnap:
    """Everything observable about a manager, frozen."""

    roots: tuple[PoolSnap, ...]
    recurrent: PoolSnap
    stats: ManagerStats
    search: tuple[int | None, int]


def manager_snapshot(m: CacheManager) -> ManagerSnap:
    return ManagerSnap(
        tuple(snapshot(p) for p in m.roots),
        snapshot(m.recurrent),
        replace(m.stats),
        (m.search_budget, m.search_used),
    )


def make_manager(
    policy: int, scope: int, root_capacity: int, recurrent_capacity: int, env_num: int = 2
) -> CacheManager:
    """A manager of 1-layer entries, context length 4 (codes decoded by ``pick``)."""
    return CacheManager(
        ManagerConfig(
            env_num=env_num,
            num_layers=1,
            context_length=4,
            root_capacity=1 + pick(root_capacity - 1, 2),
            recurrent_capacity=1 + pick(recurrent_capacity - 1, 4),
            policy=POLICIES[pick(policy, 3)],
            scope=(Scope.ENV, Scope.GLOBAL)[pick(scope, 2)],
        )
    )
