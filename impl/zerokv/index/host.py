"""The host index: the slot index in host memory, for caches whose tensors are on the CPU.

On the CPU a tensor's values already live in host memory, so reading keys costs one
``tolist`` and a Python dict answers a lookup in O(1). Each batched operation of the
device index (``zerokv.index.device``) costs a fixed number of small tensor operations,
which on a CPU take longer than the whole batch of dict operations. ``HostIndex`` has the
observable behaviour of the device index (the spec's fold semantics, the same results and
write targets); the differential tests run both against the spec.

Built like the spec's pools: ``HostIndex`` holds the policy-independent state and the
fold; ``HostFIFOIndex``, ``HostLRUIndex`` and ``HostPriorityIndex`` override only the
hooks that differ (``victim``, ``on_insert``, ``on_update``, ``on_hit``, ``reset_policy``,
``eviction_order``, ``check_policy``). Per pool it keeps ``slot_keys`` / ``slot_fingerprints``
lists, an ``index`` dict (key -> slot) and the policy's bookkeeping with the spec's names
(``next``; ``last_use`` and ``clock``; ``priority``, ``inserted_at`` and ``clock``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from zerokv import checks
from zerokv.errors import (
    BatchError,
    ContractViolation,
    InputError,
    KeyNotFoundError,
    SlotRangeError,
    UnsupportedOperationError,
)
from zerokv.index.base import (
    STATS_FIELDS,
    Found,
    Lookup,
    Placement,
    PoolState,
    PutResult,
    Region,
    TierLookup,
    check_priority_value,
)
from zerokv.rows import HostRows, Rows
from zerokv_spec.keys import (
    check_key,
    env_fingerprint_tag,
    env_key_tag,
    scoped_key,
    to_signed,
    to_unsigned,
)
from zerokv_spec.pool import Policy
from zerokv_spec.stats import PoolStats

__all__ = ["HostFIFOIndex", "HostFound", "HostIndex", "HostLRUIndex", "HostPriorityIndex"]

_Q, _H, _M, _C, _I, _U, _E, _R = range(8)


@dataclass
class HostFound(Found):
    """A lookup in progress, in host lists (one entry per row)."""

    tier: list[int]
    slot: list[int]
    collided: list[bool]
    global_slot: list[int]
    device: torch.device

    def result(self, owner: int, generation: int) -> TierLookup:
        # A collision counts only for a row that no tier hit.
        collided = [c and t == 0 for c, t in zip(self.collided, self.tier)]
        # One host-to-tensor conversion for all four fields (each costs microseconds).
        both = torch.tensor(
            [self.tier, self.slot, self.global_slot, collided],
            dtype=torch.int64,
            device=self.device,
        )
        return TierLookup(both[0], both[1], both[3].bool(), both[2], owner, generation)


@dataclass(frozen=True)
class _PoolRows:
    """Rows mapped onto this index's pools (host lists); fingerprint None: none given."""

    pools: list[int]
    keys: list[int]
    fingerprints: list[int | None]


class HostIndex:
    """A group of pools indexed in host memory (module docstring)."""

    policy = Policy.FIFO

    def __init__(self, region: Region, device: torch.device | str = "cpu") -> None:
        self.region = region
        self.num_pools = region.num_pools
        self.capacity = region.capacity
        self.device = torch.device(device)
        self.stats = [[0] * len(STATS_FIELDS) for _ in range(self.num_pools)]
        self.slot_keys_: list[list[int | None]] = [[] for _ in range(self.num_pools)]
        self.slot_fingerprints: list[list[int | None]] = [[] for _ in range(self.num_pools)]
        self.index: list[dict[int, int]] = [{} for _ in range(self.num_pools)]
        self._tags: tuple[list[int], list[int]] | None = None
        if region.bound_envs is not None:
            envs = range(region.bound_envs)
            self._tags = (
                [to_signed(env_key_tag(e)) for e in envs],
                [to_signed(env_fingerprint_tag(e)) for e in envs],
            )
        self.reset_policy(None)
        for p in range(self.num_pools):
            self._reset(p)

    def _reset(self, p: int) -> None:
        # In place: the lists and the dict keep their identity, so a live view of them (the
        # LightZero drop-in's ``_key_to_index``) stays live across clears.
        cap = self.capacity
        self.slot_keys_[p][:] = [None] * cap
        self.slot_fingerprints[p][:] = [None] * cap
        self.index[p].clear()
        self.reset_policy(p)

    # ------------------------------------------------------------------ rows
    def _pool_rows(self, host: HostRows) -> _PoolRows:
        """Each row's pool (its env id, or 0 in a shared region) and its (bound) key."""
        ids = host.env_ids
        pools = [0] * len(ids) if self.region.shared else list(ids)
        if self._tags is None:
            return _PoolRows(pools, host.keys, host.fingerprints)
        kt, ft = self._tags
        # Python's xor of two int64 values is an int64: the bound values stay signed.
        keys = [k ^ kt[e] for k, e in zip(host.keys, ids)]
        bound: list[int | None] = [(f or 0) ^ ft[e] for f, e in zip(host.fingerprints, ids)]
        return _PoolRows(pools, keys, bound)

    def _pool_key(self, env_id: int, key: int) -> tuple[int, int]:
        """The pool and stored key of one row."""
        check_key(key)
        if self.region.shared:
            if self.region.bound_envs is not None:
                key = scoped_key(key, env_id)
            return 0, key
        self.check_pool_id(env_id)
        return env_id, key

    # ------------------------------------------------------------------ lookups
    def get_one(
        self, p: int, key: int, fingerprint: int | None = None, count: bool = True
    ) -> tuple[int, int]:
        """``get`` (``count``) or ``peek`` of one row of pool ``p``: ``(status, slot)``
        (``LookupStatus`` code; slot -1 unless a hit). The batched fold calls this per row;
        single-key callers (the LightZero drop-in) call it directly, with no tensors."""
        slot = self.index[p].get(key)
        if slot is not None and (
            fingerprint is None or self.slot_fingerprints[p][slot] == fingerprint
        ):
            if count:
                stats = self.stats[p]
                stats[_Q] += 1
                stats[_H] += 1
                if self.tracks_hits:
                    self.on_hit(p, slot)
            return 1, slot
        if count:
            stats = self.stats[p]
            stats[_Q] += 1
            stats[_M] += 1
            stats[_C] += slot is not None
        return (0 if slot is None else 2), -1

    def counted_get(self, p: int) -> Callable[[int], int | None]:
        """``get_one(p, key)`` without fingerprints, as a function of the key alone: the
        slot, or None. For single-key callers whose lookup is a hot path (the LightZero
        drop-in): one call, no tuple. It stays valid across clears and statistics resets
        (both keep the dict and the counters in place)."""
        index, stats = self.index[p], self.stats[p]
        on_hit = self.on_hit if self.tracks_hits else None
        queries, hits, misses = _Q, _H, _M  # cell variables: cheaper than globals

        def get(key: int) -> int | None:
            slot = index.get(key)
            stats[queries] += 1
            if slot is None:
                stats[misses] += 1
                return None
            stats[hits] += 1
            if on_hit is not None:
                on_hit(p, slot)
            return slot

        return get

    def _get(
        self, rows: _PoolRows, active: list[bool] | None, count: bool
    ) -> tuple[list[int], list[int]]:
        """Status codes and slots per row of a batched ``get`` (``count``) or ``peek``."""
        n = len(rows.keys)
        status, slots = [0] * n, [-1] * n
        get_one = self.get_one
        for b in range(n):
            if active is None or active[b]:
                status[b], slots[b] = get_one(
                    rows.pools[b], rows.keys[b], rows.fingerprints[b], count
                )
        return status, slots

    def get_many(self, rows: Rows, *, count: bool = True) -> Lookup:
        """Batched ``get`` (``count``) or ``peek``."""
        status, slots = self._get(self._pool_rows(rows.host()), None, count)
        both = torch.tensor([status, slots], dtype=torch.int64, device=self.device)
        return Lookup(both[0], both[1])

    def lookup(self, rows: Rows, found: Found | None) -> HostFound:
        """A tier of a manager lookup: counts and fills the rows ``found`` has not hit."""
        pool_rows = self._pool_rows(rows.host())
        n = len(pool_rows.keys)
        if found is None:
            found = HostFound([0] * n, [-1] * n, [False] * n, [self.region.zero] * n, self.device)
            active = None
        else:
            assert isinstance(found, HostFound)
            active = [t == 0 for t in found.tier]
        status, slots = self._get(pool_rows, active, True)
        region, cap = self.region, self.capacity
        code = int(region.tier)
        for b in range(n):
            if status[b] == 1:
                found.tier[b], found.slot[b] = code, slots[b]
                found.global_slot[b] = region.base + pool_rows.pools[b] * cap + slots[b]
            elif status[b] == 2:
                found.collided[b] = True
        return found

    #: Whether the policy keeps per-hit bookkeeping (``on_hit``); FIFO and PRIORITY do not,
    #: and their lookups skip the call (a lookup is the drop-in's sub-microsecond hot path).
    tracks_hits = False

    def on_hit(self, p: int, slot: int) -> None:
        """Policy bookkeeping for a counted hit (policies with ``tracks_hits``)."""

    # ------------------------------------------------------------------ puts
    def check_priorities(self, rows: Rows) -> None:
        if rows.priorities is not None:
            raise UnsupportedOperationError(f"{self.policy.value} pools take no priority")

    def put_one(
        self, p: int, key: int, fingerprint: int | None = None, priority: float | None = None
    ) -> tuple[int, bool, int | None]:
        """``put`` of one row into pool ``p``: ``(slot, inserted, evicted key or None)``.
        The batched fold calls this per row; single-key callers call it directly."""
        index, stats = self.index[p], self.stats[p]
        slot = index.get(key)
        if slot is not None:
            stats[_U] += 1
            self.on_update(p, slot, priority)
            self.slot_fingerprints[p][slot] = fingerprint
            return slot, False, None
        slot = self.choose_slot(p)
        evicted = self.slot_keys_[p][slot]
        if evicted is not None:
            del index[evicted]
            stats[_E] += 1
        self.slot_keys_[p][slot] = key
        index[key] = slot
        stats[_I] += 1
        self.on_insert(p, slot, priority)
        self.slot_fingerprints[p][slot] = fingerprint
        return slot, True, evicted

    def put(self, rows: Rows) -> Placement:
        """Batched ``put``: the spec's left-to-right fold."""
        self.check_priorities(rows)
        host = rows.host()
        pool_rows = self._pool_rows(host)
        n = len(pool_rows.keys)
        slots, evicted, ev_mask, inserted = [0] * n, [0] * n, [False] * n, [False] * n
        writer: dict[tuple[int, int], int] = {}
        put_one = self.put_one
        for b in range(n):
            p = pool_rows.pools[b]
            prio = host.priorities[b] if host.priorities is not None else None
            slot, new, old = put_one(p, pool_rows.keys[b], pool_rows.fingerprints[b], prio)
            slots[b], inserted[b] = slot, new
            if old is not None:
                evicted[b], ev_mask[b] = old, True
            writer[(p, slot)] = b
        region = self.region
        write = [
            region.base + p * self.capacity + s if writer[(p, s)] == b else region.trash
            for b, (p, s) in enumerate(zip(pool_rows.pools, slots))
        ]
        if checks.ENABLED:
            self.check()
        # One host-to-tensor conversion for all five fields (each costs microseconds).
        both = torch.tensor(
            [slots, evicted, write, ev_mask, inserted], dtype=torch.int64, device=self.device
        )
        flags = both[3:].bool()
        return Placement(PutResult(both[0], both[1], flags[0], flags[1], both[2]), write)

    def choose_slot(self, p: int) -> int:
        """Where a new key goes: the lowest empty slot, else the policy's ``victim``."""
        if len(self.index[p]) < self.capacity:
            return self.slot_keys_[p].index(None)
        return self.victim(p)

    def victim(self, p: int) -> int:
        """The slot whose key the policy evicts from a full pool ``p``."""
        raise NotImplementedError

    def on_insert(self, p: int, slot: int, priority: float | None) -> None:
        """Policy bookkeeping after a new key went into ``slot``."""

    def on_update(self, p: int, slot: int, priority: float | None) -> None:
        """Policy bookkeeping after a stored key was written again."""

    def reset_policy(self, p: int | None) -> None:
        """Reset the policy's bookkeeping of pool ``p`` (None: create it for every pool)."""

    def on_remove(self, p: int, slot: int) -> None:
        """Policy bookkeeping after an explicit removal."""

    # ------------------------------------------------------------------ removal
    def check_pool_id(self, pool_id: int) -> None:
        if isinstance(pool_id, bool) or not isinstance(pool_id, int):
            raise InputError(f"pool id must be an int, got {type(pool_id).__name__}")
        if not 0 <= pool_id < self.num_pools:
            raise InputError(f"pool id must lie in [0, {self.num_pools}), got {pool_id}")

    def check_slot(self, slot: int) -> int:
        if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < self.capacity:
            raise SlotRangeError(f"slot must be an int in [0, {self.capacity}), got {slot!r}")
        return slot

    def evict(self, env_id: int, key: int) -> int:
        """Remove ``key`` (a row of env ``env_id``); returns its slot."""
        p, stored = self._pool_key(env_id, key)
        slot = self._slot_in(p, stored)
        del self.index[p][stored]
        self.slot_keys_[p][slot] = None
        self.slot_fingerprints[p][slot] = None
        self.on_remove(p, slot)
        self.stats[p][_R] += 1
        return slot

    def clear(self, pool_id: int | None = None) -> None:
        """Empty one pool (or all); statistics are kept."""
        if pool_id is None:
            for p in range(self.num_pools):
                self._reset(p)
        else:
            self.check_pool_id(pool_id)
            self._reset(pool_id)

    def set_priority(self, env_id: int, key: int, priority: float) -> None:
        raise UnsupportedOperationError(f"{self.policy.value} pools have no priorities")

    def reset_stats(self, pool_id: int | None = None) -> None:
        """Zero the counters of one pool (or of all)."""
        rows = self.stats if pool_id is None else [self.stats[pool_id]]
        for row in rows:
            row[:] = [0] * len(STATS_FIELDS)

    # ------------------------------------------------------------------ queries
    def size(self, pool_id: int) -> int:
        self.check_pool_id(pool_id)
        return len(self.index[pool_id])

    def sizes(self) -> list[int]:
        """Entries stored in each pool."""
        return [len(i) for i in self.index]

    def slot_of(self, env_id: int, key: int) -> int:
        """The slot holding ``key`` (a row of env ``env_id``)."""
        return self._slot_in(*self._pool_key(env_id, key))

    def _slot_in(self, p: int, key: int) -> int:
        slot = self.index[p].get(key)
        if slot is None:
            raise KeyNotFoundError(f"key {key} is not stored in this pool")
        return slot

    def key_at(self, pool_id: int, slot: int) -> int | None:
        self.check_pool_id(pool_id)
        return self.slot_keys_[pool_id][self.check_slot(slot)]

    def slot_keys(self, pool_id: int) -> list[int | None]:
        self.check_pool_id(pool_id)
        return list(self.slot_keys_[pool_id])

    def _live(self, p: int) -> list[tuple[int, int]]:
        """``(slot, key)`` of every occupied slot of pool ``p``."""
        return [(s, k) for s, k in enumerate(self.slot_keys_[p]) if k is not None]

    def eviction_order(self, pool_id: int) -> list[int]:
        raise NotImplementedError

    def stats_of(self, pool_id: int | None = None) -> PoolStats:
        if pool_id is None:
            row = [sum(col) for col in zip(*self.stats)]
        else:
            self.check_pool_id(pool_id)
            row = self.stats[pool_id]
        return PoolStats(**dict(zip(STATS_FIELDS, row)))

    def view(self, pool_id: int) -> PoolState:
        """Everything observable about pool ``pool_id``."""
        keys = self.slot_keys(pool_id)
        return PoolState(
            slot_keys=tuple(keys),
            fingerprints=tuple(self.slot_fingerprints[pool_id]),
            eviction_order=tuple(self.eviction_order(pool_id)),
            size=self.size(pool_id),
            stats=self.stats_of(pool_id),
            priorities=self.slot_priorities(pool_id),
            pointer=self.pointer(pool_id),
        )

    def slot_priorities(self, pool_id: int) -> tuple[float | None, ...]:
        """Per slot priorities (PRIORITY pools; empty for the other policies)."""
        return ()

    def pointer(self, pool_id: int) -> int | None:
        """The FIFO ring pointer (FIFO pools; None for the other policies)."""
        return None

    def check(self) -> None:
        """Runtime contracts: bijection, clean empty slots, policy bookkeeping, statistics."""
        for p in range(self.num_pools):
            keys = self.slot_keys_[p]
            for k, s in self.index[p].items():
                if keys[s] != k:
                    raise ContractViolation(f"pool {p}: index maps {k} to slot {s}")
            live = [s for s, k in enumerate(keys) if k is not None]
            if len(live) != len(self.index[p]):
                raise ContractViolation(f"pool {p}: {len(live)} slots, {len(self.index[p])} keys")
            if any(
                self.slot_fingerprints[p][s] is not None for s, k in enumerate(keys) if k is None
            ):
                raise ContractViolation(f"pool {p}: an empty slot keeps a fingerprint")
            self.check_policy(p, live)
            self.stats_of(p).check()

    def check_policy(self, p: int, live: list[int]) -> None:
        """The policy's own runtime contract for pool ``p`` (``live``: occupied slots)."""


class HostFIFOIndex(HostIndex):
    """LightZero's ring per pool; ``next[p]`` is pool ``p``'s pointer."""

    policy = Policy.FIFO

    def reset_policy(self, p: int | None) -> None:
        if p is None:
            self.next = [0] * self.num_pools
        else:
            self.next[p] = 0

    def choose_slot(self, p: int) -> int:
        return self.next[p]

    def on_insert(self, p: int, slot: int, priority: float | None) -> None:
        self.next[p] = (self.next[p] + 1) % self.capacity

    def eviction_order(self, pool_id: int) -> list[int]:
        self.check_pool_id(pool_id)
        keys, start = self.slot_keys_[pool_id], self.next[pool_id]
        ring = (keys[(start + i) % self.capacity] for i in range(self.capacity))
        return [k for k in ring if k is not None]

    def pointer(self, pool_id: int) -> int | None:
        return self.next[pool_id]

    def check_policy(self, p: int, live: list[int]) -> None:
        if not 0 <= self.next[p] < self.capacity:
            raise ContractViolation(f"pool {p}: ring pointer {self.next[p]}")


class _ClockedIndex(HostIndex):
    """A policy that stamps slots with a per-pool clock (``times``, -1 empty)."""

    def reset_policy(self, p: int | None) -> None:
        if p is None:
            self.clock = [0] * self.num_pools
            self.times = [[-1] * self.capacity for _ in range(self.num_pools)]
        else:
            self.clock[p] = 0
            self.times[p] = [-1] * self.capacity

    def stamp(self, p: int, slot: int) -> None:
        self.times[p][slot] = self.clock[p]
        self.clock[p] += 1

    def on_remove(self, p: int, slot: int) -> None:
        self.times[p][slot] = -1

    def check_policy(self, p: int, live: list[int]) -> None:
        times = [self.times[p][s] for s in live]
        if len(set(times)) != len(times) or any(not 0 <= t < self.clock[p] for t in times):
            raise ContractViolation(f"pool {p}: times {times} vs clock {self.clock[p]}")


class HostLRUIndex(_ClockedIndex):
    """Least recently used; ``times`` are the last uses (the spec's ``last_use``)."""

    policy = Policy.LRU
    tracks_hits = True

    @property
    def last_use(self) -> list[list[int]]:
        return self.times

    def victim(self, p: int) -> int:
        return min(range(self.capacity), key=self.times[p].__getitem__)

    def on_hit(self, p: int, slot: int) -> None:
        self.stamp(p, slot)

    def on_insert(self, p: int, slot: int, priority: float | None) -> None:
        self.stamp(p, slot)

    def on_update(self, p: int, slot: int, priority: float | None) -> None:
        self.stamp(p, slot)

    def eviction_order(self, pool_id: int) -> list[int]:
        self.check_pool_id(pool_id)
        stamps = self.times[pool_id]
        return [k for s, k in sorted(self._live(pool_id), key=lambda sk: stamps[sk[0]])]


class HostPriorityIndex(_ClockedIndex):
    """Lowest priority first, ties by earliest insertion (``times`` are the spec's
    ``inserted_at``)."""

    policy = Policy.PRIORITY

    def reset_policy(self, p: int | None) -> None:
        super().reset_policy(p)
        if p is None:
            self.priority = [[0.0] * self.capacity for _ in range(self.num_pools)]
        else:
            self.priority[p] = [0.0] * self.capacity

    @property
    def inserted_at(self) -> list[list[int]]:
        return self.times

    def check_priorities(self, rows: Rows) -> None:
        if rows.priorities is not None and rows.priorities.dtype != torch.float64:
            raise BatchError(f"priorities must be float64, got {rows.priorities.dtype}")

    def _rank(self, p: int, slot: int) -> tuple[float, int]:
        return self.priority[p][slot], self.times[p][slot]

    def victim(self, p: int) -> int:
        return min(range(self.capacity), key=lambda s: self._rank(p, s))

    def on_insert(self, p: int, slot: int, priority: float | None) -> None:
        self.stamp(p, slot)
        self.priority[p][slot] = 0.0 if priority is None else float(priority)

    def on_update(self, p: int, slot: int, priority: float | None) -> None:
        if priority is not None:
            self.priority[p][slot] = float(priority)

    def on_remove(self, p: int, slot: int) -> None:
        super().on_remove(p, slot)
        self.priority[p][slot] = 0.0

    def set_priority(self, env_id: int, key: int, priority: float) -> None:
        value = check_priority_value(priority)
        p, stored = self._pool_key(env_id, key)
        self.priority[p][self._slot_in(p, stored)] = value

    def eviction_order(self, pool_id: int) -> list[int]:
        self.check_pool_id(pool_id)
        live = sorted(self._live(pool_id), key=lambda sk: self._rank(pool_id, sk[0]))
        return [k for _, k in live]

    def slot_priorities(self, pool_id: int) -> tuple[float | None, ...]:
        keys = self.slot_keys_[pool_id]
        return tuple(q if k is not None else None for q, k in zip(self.priority[pool_id], keys))


# Kept for readers of the spec: the spec's ``to_unsigned`` is what Python's xor of two
# signed values already respects (the bound keys stay in the signed 64-bit range).
assert to_signed(to_unsigned(-1) ^ 0) == -1
