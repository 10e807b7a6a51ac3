"""Stateful tests of the reference model (``zerokv_spec``) against independent models.

One Hypothesis state machine per eviction policy drives a pool through every public
operation (keys from a small range so hits, duplicates and wrap-around are common,
capacities 1..5) and compares each result with a model written here from the rules alone:

* FIFO - a window of the last ``capacity`` insertions since the last clear: insertion
  ``n`` goes to slot ``n % capacity`` and evicts whatever insertion ``n - capacity``
  left there (nothing if it was evicted explicitly). So FIFO evicts in order of first
  insertion, and an explicit ``evict`` leaves a hole that only the ring pointer refills.
* LRU - a recency list, least recent first; a new key takes the lowest free slot, else
  the front of the list is evicted; ``get`` hits and every ``put`` move a key to the back.
* PRIORITY - per key a priority and an insertion counter; a new key takes the lowest free
  slot, else the key with the smallest ``(priority, insertion)`` is evicted.

A fourth machine drives a ``CacheManager`` (root pools per environment, recurrent pool,
hierarchical lookup, clears, searches, statistics) against one model pool per tier.
After every step the invariants run ``check()`` and compare the whole observable state.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from zerokv_spec.entry import Entry
from zerokv_spec.errors import (
    BatchError,
    EnvIdError,
    InputError,
    KeyNotFoundError,
    KeyRangeError,
    SearchCapacityError,
    SlotRangeError,
    StaleLookupError,
    UnsupportedOperationError,
)
from zerokv_spec.keys import scoped_key
from zerokv_spec.manager import CacheManager, ManagerConfig, Scope, Tier, TierLookup
from zerokv_spec.pool import FIFOPool, Lookup, Policy, PutResult, SlotPool, make_pool

KEYS = st.integers(0, 5)
FINGERPRINTS = st.none() | st.integers(0, 1)
PRIORITIES = st.none() | st.integers(0, 3).map(float)

# --------------------------------------------------------------------------- models

Status = str  # "hit", "miss" or "collision"


class PoolModel:
    """What a pool must do, independent of the spec's code. Subclasses add the policy."""

    policy: Policy

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.entries: dict[Any, tuple[Any, Any]] = {}  # key -> (fingerprint, value)
        self.slots: dict[Any, int] = {}  # key -> slot
        self.counts = dict.fromkeys(
            ("queries", "hits", "misses", "collisions", "inserts", "updates", "evictions"), 0
        )
        self.counts["removals"] = 0

    # ---- policy hooks
    def place(self, key: Any) -> tuple[int, Any]:
        """Slot for a new key and the key evicted from it (None)."""
        raise NotImplementedError

    def used(self, key: Any, inserted: bool, priority: float | None) -> None:
        """Bookkeeping after a get hit (inserted False, priority None) or a put."""

    def forget(self, key: Any) -> None:
        """Bookkeeping after ``key`` left the pool."""

    def reset(self) -> None:
        """Bookkeeping of an empty pool (clear)."""

    def order(self) -> list[Any]:
        raise NotImplementedError

    # ---- operations
    def free_slots(self) -> list[int]:
        taken = set(self.slots.values())
        return [s for s in range(self.capacity) if s not in taken]

    def match(self, key: Any, fingerprint: Any) -> tuple[Status, Any]:
        if key not in self.entries:
            return "miss", None
        stored_fp, value = self.entries[key]
        if fingerprint is not None and stored_fp != fingerprint:
            return "collision", None
        return "hit", value

    def get(self, key: Any, fingerprint: Any, *, strict: bool = False) -> tuple[Status, Any]:
        status, value = (
            self.match_strict(key, fingerprint) if strict else self.match(key, fingerprint)
        )
        self.counts["queries"] += 1
        if status == "hit":
            self.counts["hits"] += 1
            self.used(key, False, None)
        else:
            self.counts["misses"] += 1
            self.counts["collisions"] += status == "collision"
        return status, value

    def match_strict(self, key: Any, fingerprint: Any) -> tuple[Status, Any]:
        """Verification where "no fingerprint" is a value too (scoped recurrent keys)."""
        if key not in self.entries:
            return "miss", None
        stored_fp, value = self.entries[key]
        return ("hit", value) if stored_fp == fingerprint else ("collision", None)

    def put(
        self, key: Any, value: Any, fingerprint: Any, priority: float | None = None
    ) -> tuple[int, Any, bool]:
        evicted = None
        if key in self.slots:
            slot, inserted = self.slots[key], False
            self.counts["updates"] += 1
        else:
            slot, evicted = self.place(key)
            inserted = True
            if evicted is not None:
                del self.entries[evicted], self.slots[evicted]
                self.forget(evicted)
                self.counts["evictions"] += 1
            self.slots[key] = slot
            self.counts["inserts"] += 1
        self.entries[key] = (fingerprint, value)
        self.used(key, inserted, priority)
        return slot, evicted, inserted

    def evict(self, key: Any) -> bool:
        if key not in self.slots:
            return False
        del self.entries[key], self.slots[key]
        self.forget(key)
        self.counts["removals"] += 1
        return True

    def clear(self) -> None:
        self.entries, self.slots = {}, {}
        self.reset()

    def slot_keys(self) -> list[Any]:
        keys: list[Any] = [None] * self.capacity
        for key, slot in self.slots.items():
            keys[slot] = key
        return keys


class FifoModel(PoolModel):
    policy = Policy.FIFO

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.reset()

    def reset(self) -> None:
        self.window: deque[Any] = deque()  # the last `capacity` insertions; None: removed
        self.inserted = 0  # insertions since the last clear

    def place(self, key: Any) -> tuple[int, Any]:
        slot = self.inserted % self.capacity
        self.inserted += 1
        self.window.append(key)
        victim = self.window.popleft() if len(self.window) > self.capacity else None
        return slot, victim

    def forget(self, key: Any) -> None:
        # An evicted key already left the window; a removed one leaves a hole.
        self.window = deque(None if k == key else k for k in self.window)

    def order(self) -> list[Any]:
        return [k for k in self.window if k is not None]

    @property
    def pointer(self) -> int:
        return self.inserted % self.capacity


class LruModel(PoolModel):
    policy = Policy.LRU

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.recency: list[Any] = []  # least recently used first

    def reset(self) -> None:
        self.recency = []

    def place(self, key: Any) -> tuple[int, Any]:
        free = self.free_slots()
        if free:
            return free[0], None
        return self.slots[self.recency[0]], self.recency[0]

    def used(self, key: Any, inserted: bool, priority: float | None) -> None:
        if key in self.recency:
            self.recency.remove(key)
        self.recency.append(key)

    def forget(self, key: Any) -> None:
        self.recency.remove(key)

    def order(self) -> list[Any]:
        return list(self.recency)


class PriorityModel(PoolModel):
    policy = Policy.PRIORITY

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.priority: dict[Any, float] = {}
        self.insertion: dict[Any, int] = {}
        self.counter = 0

    def reset(self) -> None:
        self.priority, self.insertion = {}, {}

    def place(self, key: Any) -> tuple[int, Any]:
        free = self.free_slots()
        if free:
            return free[0], None
        victim = self.order()[0]
        return self.slots[victim], victim

    def used(self, key: Any, inserted: bool, priority: float | None) -> None:
        if inserted:
            self.insertion[key] = self.counter
            self.counter += 1
            self.priority[key] = 0.0 if priority is None else priority
        elif priority is not None:
            self.priority[key] = priority

    def forget(self, key: Any) -> None:
        del self.priority[key], self.insertion[key]

    def order(self) -> list[Any]:
        return sorted(self.entries, key=lambda k: (self.priority[k], self.insertion[k]))


MODELS: dict[Policy, type[PoolModel]] = {
    Policy.FIFO: FifoModel,
    Policy.LRU: LruModel,
    Policy.PRIORITY: PriorityModel,
}


def state_of(obj: object) -> Any:
    """A comparable deep copy of everything ``obj`` holds (pools and managers have no
    ``==`` of their own), to compare the state before and after a refusal."""
    if isinstance(obj, (SlotPool, CacheManager)):
        return {name: state_of(value) for name, value in vars(obj).items()}
    if isinstance(obj, list):
        return [state_of(x) for x in obj]
    return copy.deepcopy(obj)


def expect_refusal(obj: object, error: type[Exception], call: Callable[[], object]) -> None:
    """``call`` raises ``error`` (exactly that type or a subclass) and changes nothing."""
    before = state_of(obj)
    with pytest.raises(error):
        call()
    assert state_of(obj) == before


# --------------------------------------------------------------------------- pool machines


class PoolMachine(RuleBasedStateMachine):
    """A spec pool of ``policy`` and its model, driven by the same operations."""

    policy: Policy = Policy.FIFO

    def __init__(self) -> None:
        super().__init__()
        self.pool: SlotPool[int] = make_pool(self.policy, 1)
        self.model: PoolModel = MODELS[self.policy](1)
        self.writes = 0

    @initialize(capacity=st.integers(1, 5))
    def start(self, capacity: int) -> None:
        self.pool = make_pool(self.policy, capacity)
        self.model = MODELS[self.policy](capacity)

    def value(self) -> int:
        self.writes += 1
        return self.writes

    def priority(self, priority: float | None) -> float | None:
        return priority if self.policy is Policy.PRIORITY else None

    def check_put(self, result: PutResult, expected: tuple[int, Any, bool]) -> None:
        assert (result.slot, result.evicted, result.inserted) == expected

    def check_lookup(self, result: Lookup[int], key: int, expected: tuple[Status, Any]) -> None:
        status, value = expected
        assert result.status.name.lower() == status
        assert result.value == value
        assert result.slot == (self.model.slots[key] if status == "hit" else None)

    # ---- rules
    @rule(key=KEYS, fingerprint=FINGERPRINTS, priority=PRIORITIES)
    def put(self, key: int, fingerprint: int | None, priority: float | None) -> None:
        value, prio = self.value(), self.priority(priority)
        expected = self.model.put(key, value, fingerprint, prio)
        self.check_put(self.pool.put(key, value, fingerprint, prio), expected)
        assert self.pool.slot_of(key) == expected[0]
        assert expected[1] is None or expected[1] not in self.pool

    @rule(
        puts=st.lists(st.tuples(KEYS, FINGERPRINTS, PRIORITIES), max_size=6),
    )
    def put_many(self, puts: list[tuple[int, int | None, float | None]]) -> None:
        keys = [k for k, _, _ in puts]
        values = [self.value() for _ in puts]
        fps = [f for _, f, _ in puts]
        prios = [self.priority(p) for _, _, p in puts]
        expected = [self.model.put(k, v, f, p) for k, v, f, p in zip(keys, values, fps, prios)]
        results = self.pool.put_many(keys, values, fps, prios)
        assert len(results) == len(expected)
        for result, exp in zip(results, expected):
            self.check_put(result, exp)

    @rule(key=KEYS, fingerprint=FINGERPRINTS)
    def get(self, key: int, fingerprint: int | None) -> None:
        expected = self.model.get(key, fingerprint)
        self.check_lookup(self.pool.get(key, fingerprint), key, expected)

    @rule(gets=st.lists(st.tuples(KEYS, FINGERPRINTS), max_size=6))
    def get_many(self, gets: list[tuple[int, int | None]]) -> None:
        results = self.pool.get_many([k for k, _ in gets], [f for _, f in gets])
        assert len(results) == len(gets)
        for result, (key, fp) in zip(results, gets):
            self.check_lookup(result, key, self.model.get(key, fp))

    @rule(key=KEYS, fingerprint=FINGERPRINTS)
    def peek(self, key: int, fingerprint: int | None) -> None:
        before = state_of(self.pool)
        assert self.pool.peek(key, fingerprint) == self.model.match(key, fingerprint)[1]
        assert state_of(self.pool) == before  # no statistics, no recency

    @rule(keys=st.lists(KEYS, max_size=4))
    def peek_many(self, keys: list[int]) -> None:
        expected = [self.model.match(k, None)[1] for k in keys]
        assert self.pool.peek_many(keys) == expected

    @rule(key=KEYS)
    def evict(self, key: int) -> None:
        if self.model.evict(key):
            self.pool.evict(key)
            assert key not in self.pool
        else:
            expect_refusal(self.pool, KeyNotFoundError, lambda: self.pool.evict(key))

    @rule()
    def clear(self) -> None:
        stats = copy.copy(self.pool.stats)
        self.model.clear()
        self.pool.clear()
        assert len(self.pool) == 0
        assert self.pool.stats == stats

    @rule(key=KEYS, priority=st.integers(0, 3).map(float))
    def set_priority(self, key: int, priority: float) -> None:
        if not isinstance(self.model, PriorityModel):
            call = partial(self.pool.set_priority, key, priority)
            expect_refusal(self.pool, UnsupportedOperationError, call)
        elif key not in self.model.entries:
            call = partial(self.pool.set_priority, key, priority)
            expect_refusal(self.pool, KeyNotFoundError, call)
        else:
            self.model.priority[key] = priority
            self.pool.set_priority(key, priority)

    @rule(key=KEYS, slot=st.integers(-1, 6))
    def index(self, key: int, slot: int) -> None:
        if key in self.model.slots:
            assert self.pool.slot_of(key) == self.model.slots[key]
        else:
            expect_refusal(self.pool, KeyNotFoundError, lambda: self.pool.slot_of(key))
        if 0 <= slot < self.model.capacity:
            assert self.pool.key_at(slot) == self.model.slot_keys()[slot]
        else:
            expect_refusal(self.pool, SlotRangeError, lambda: self.pool.key_at(slot))

    @rule(case=st.integers(0, 5))
    def bad_input(self, case: int) -> None:
        pool: Any = self.pool
        calls: list[tuple[type[Exception], Callable[[], object]]] = [
            (KeyRangeError, lambda: pool.get(1 << 63)),
            (KeyRangeError, lambda: pool.put(0, 0, fingerprint=-(1 << 63) - 1)),
            (KeyRangeError, lambda: pool.put_many([0, 1, 1.0], [0, 0, 0])),
            (BatchError, lambda: pool.put_many([0, 1], [0])),
            (BatchError, lambda: pool.get_many([0, 1], [None])),
            (
                InputError if self.policy is Policy.PRIORITY else UnsupportedOperationError,
                lambda: pool.put(0, 0, priority=float("nan")),
            ),
        ]
        error, call = calls[case]
        expect_refusal(self.pool, error, call)

    # ---- invariants
    @invariant()
    def invariants_hold(self) -> None:
        self.pool.check()
        stats = self.pool.stats
        assert stats.hits + stats.misses == stats.queries
        assert stats.collisions <= stats.misses
        assert len(self.pool) <= self.pool.capacity

    @invariant()
    def agrees_with_model(self) -> None:
        assert self.pool.slot_keys == self.model.slot_keys()
        assert self.pool.eviction_order() == self.model.order()
        assert self.pool.stats.as_dict() == self.model.counts
        for key, (fp, value) in self.model.entries.items():
            slot = self.model.slots[key]
            assert (self.pool.slot_fingerprints[slot], self.pool.slot_values[slot]) == (fp, value)
        if isinstance(self.pool, FIFOPool) and isinstance(self.model, FifoModel):
            assert self.pool.next == self.model.pointer


class FIFOMachine(PoolMachine):
    policy = Policy.FIFO


class LRUMachine(PoolMachine):
    policy = Policy.LRU


class PriorityMachine(PoolMachine):
    policy = Policy.PRIORITY


TestFIFOPool = FIFOMachine.TestCase
TestLRUPool = LRUMachine.TestCase
TestPriorityPool = PriorityMachine.TestCase


# --------------------------------------------------------------------------- manager machine

ENV_IDS = st.integers(0, 2)


def tagged(env_id: int, key: int, write: int) -> Entry:
    """A 1-layer entry naming who wrote it."""
    return Entry(((float(env_id), float(key), float(write)),), ((float(write), 0.0, 0.0),))


class ManagerMachine(RuleBasedStateMachine):
    """A ``CacheManager`` and one model pool per tier (recurrent keys per the scope)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.lookups = 0
        self.manager = CacheManager(ManagerConfig(1, 1, 4, 1, 1))
        self.roots: list[PoolModel] = []
        self.recurrent: PoolModel = FifoModel(1)
        self.budget: int | None = None
        self.used = 0
        #: The last lookups, and whether a store or clear has succeeded since (stale).
        self.last_found: list[TierLookup] = []
        self.changed_since = False

    @initialize(
        env_num=st.integers(1, 3),
        root_capacity=st.integers(1, 3),
        recurrent_capacity=st.integers(1, 4),
        policy=st.sampled_from(Policy),
        scope=st.sampled_from(Scope),
    )
    def start(
        self,
        env_num: int,
        root_capacity: int,
        recurrent_capacity: int,
        policy: Policy,
        scope: Scope,
    ) -> None:
        config = ManagerConfig(env_num, 1, 4, root_capacity, recurrent_capacity, policy, scope)
        self.manager = CacheManager(config)
        self.roots = [MODELS[policy](root_capacity) for _ in range(env_num)]
        self.recurrent = MODELS[policy](recurrent_capacity)

    @property
    def config(self) -> ManagerConfig:
        return self.manager.config

    def env(self, env_id: int) -> int:
        return env_id % self.config.env_num

    def recurrent_model_key(self, env_id: int, key: int, fp: int | None) -> tuple[Any, Any]:
        """The model's recurrent key and fingerprint for ``(env_id, key, fp)``.

        GLOBAL: the key and fingerprint themselves (LightZero's sharing). ENV: keys are per
        environment and every entry and lookup carries a fingerprint, a missing one
        counting as 0 (``keys.scoped_fingerprint``), so a key-only lookup hits an entry
        stored without a fingerprint or with fingerprint 0, and collides with any other.
        """
        if self.config.scope is Scope.GLOBAL:
            return key, fp
        return (env_id, key), ("env", env_id, 0 if fp is None else fp)

    def tier_lookup(self, env_id: int, key: int, fp: int | None, tiers: str) -> TierLookup:
        """What the models say a lookup returns (counting it in the tier models)."""
        self.lookups += 1
        root_collided = False
        if tiers != "recurrent":
            status, value = self.roots[env_id].get(key, fp)
            if status == "hit":
                return TierLookup(Tier.ROOT, self.roots[env_id].slots[key], value)
            root_collided = status == "collision"
            if tiers == "root":
                return TierLookup(Tier.MISS, None, None, root_collided)
        rkey, rfp = self.recurrent_model_key(env_id, key, fp)
        strict = self.config.scope is Scope.ENV
        rstatus, rvalue = self.recurrent.get(rkey, rfp, strict=strict)
        if rstatus == "hit":
            return TierLookup(Tier.RECURRENT, self.recurrent.slots[rkey], rvalue)
        return TierLookup(Tier.MISS, None, None, rstatus == "collision" or root_collided)

    def check_found(self, found: TierLookup, expected: TierLookup, env_id: int) -> None:
        # The generation is checked by its rule (``gather_last``), not by its numbering.
        assert replace(found, generation=0) == expected
        if found.entry is not None and self.config.scope is Scope.ENV:
            assert found.entry.k[0][0] == env_id  # never another environment's entry

    # ---- stores
    @rule(env_id=ENV_IDS, key=KEYS, fp=FINGERPRINTS, priority=PRIORITIES)
    def store_root(self, env_id: int, key: int, fp: int | None, priority: float | None) -> None:
        e = self.env(env_id)
        prio = priority if self.config.policy is Policy.PRIORITY else None
        self.writes += 1
        entry = tagged(e, key, self.writes)
        others = [state_of(p) for i, p in enumerate(self.manager.roots) if i != e]
        recurrent = state_of(self.manager.recurrent)
        expected = self.roots[e].put(key, entry, fp, prio)
        result = self.manager.store_root(e, key, entry, fp, prio)
        self.changed_since = True
        assert (result.slot, result.evicted, result.inserted) == expected
        assert [state_of(p) for i, p in enumerate(self.manager.roots) if i != e] == others
        assert state_of(self.manager.recurrent) == recurrent

    def store_recurrent_model(self, e: int, key: int, entry: Entry, fp: int | None) -> Any:
        rkey, rfp = self.recurrent_model_key(e, key, fp)
        return self.recurrent.put(rkey, entry, rfp)

    @rule(env_id=ENV_IDS, key=KEYS, fp=FINGERPRINTS)
    def store_recurrent(self, env_id: int, key: int, fp: int | None) -> None:
        e = self.env(env_id)
        self.writes += 1
        entry = tagged(e, key, self.writes)
        if self.budget is not None and self.used + 1 > self.budget:
            call = partial(self.manager.store_recurrent, e, key, entry, fp)
            expect_refusal(self.manager, SearchCapacityError, call)
            return
        roots = [state_of(p) for p in self.manager.roots]
        expected = self.store_recurrent_model(e, key, entry, fp)
        result = self.manager.store_recurrent(e, key, entry, fp)
        self.changed_since = True
        if self.budget is not None:
            self.used += 1
        slot, evicted, inserted = expected
        evicted_key = None if evicted is None else self.recurrent_pool_key(evicted)
        assert (result.slot, result.evicted, result.inserted) == (slot, evicted_key, inserted)
        assert [state_of(p) for p in self.manager.roots] == roots

    @rule(rows=st.lists(st.tuples(ENV_IDS, KEYS), max_size=4), recurrent=st.booleans())
    def store_many(self, rows: list[tuple[int, int]], recurrent: bool) -> None:
        envs = [self.env(e) for e, _ in rows]
        keys = [k for _, k in rows]
        entries = []
        for e, k in zip(envs, keys):
            self.writes += 1
            entries.append(tagged(e, k, self.writes))
        if recurrent:
            if self.budget is not None and self.used + len(rows) > self.budget:
                call = partial(self.manager.store_recurrent_many, envs, keys, entries)
                expect_refusal(self.manager, SearchCapacityError, call)
                return
            expected = [
                self.store_recurrent_model(e, k, x, None) for e, k, x in zip(envs, keys, entries)
            ]
            results = self.manager.store_recurrent_many(envs, keys, entries)
            if self.budget is not None:
                self.used += len(rows)
        else:
            expected = [self.roots[e].put(k, x, None) for e, k, x in zip(envs, keys, entries)]
            results = self.manager.store_root_many(envs, keys, entries)
        self.changed_since = self.changed_since or bool(rows)  # no rows: nothing changed
        assert [(r.slot, r.inserted) for r in results] == [(x[0], x[2]) for x in expected]

    # ---- lookups
    @rule(
        env_id=ENV_IDS,
        key=KEYS,
        fp=FINGERPRINTS,
        tiers=st.sampled_from(["hierarchical", "root", "recurrent"]),
    )
    def lookup(self, env_id: int, key: int, fp: int | None, tiers: str) -> None:
        e = self.env(env_id)
        one = {
            "hierarchical": self.manager.lookup,
            "root": self.manager.lookup_root,
            "recurrent": self.manager.lookup_recurrent,
        }[tiers]
        queries = self.manager.stats.queries
        found = one(e, key, fp)
        assert self.manager.stats.queries == queries + 1  # one query, whatever tiers it visits
        self.check_found(found, self.tier_lookup(e, key, fp, tiers), e)
        self.last_found, self.changed_since = [found], False

    @rule(rows=st.lists(st.tuples(ENV_IDS, KEYS), max_size=4))
    def lookup_many(self, rows: list[tuple[int, int]]) -> None:
        envs = [self.env(e) for e, _ in rows]
        keys = [k for _, k in rows]
        found = self.manager.lookup_many(envs, keys)
        assert len(found) == len(rows)
        for f, e, k in zip(found, envs, keys):
            self.check_found(f, self.tier_lookup(e, k, None, "hierarchical"), e)
        if found:
            self.last_found, self.changed_since = found, False

    @precondition(lambda self: bool(self.last_found))
    @rule()
    def gather_last(self) -> None:
        """The last lookups gather iff no store or clear succeeded since (generations)."""
        if self.changed_since:
            call = partial(self.manager.gather, self.last_found, 4)
            expect_refusal(self.manager, StaleLookupError, call)
        else:
            batch = self.manager.gather(self.last_found, 4)
            assert batch.rows == len(self.last_found)

    # ---- clears, searches, statistics
    @rule(env_id=ENV_IDS)
    def clear_env(self, env_id: int) -> None:
        e = self.env(env_id)
        others = [state_of(p) for i, p in enumerate(self.manager.roots) if i != e]
        self.roots[e].clear()
        self.manager.clear_env(e)
        self.changed_since = True
        assert len(self.manager.roots[e]) == 0
        assert [state_of(p) for i, p in enumerate(self.manager.roots) if i != e] == others

    @rule(which=st.sampled_from(["roots", "recurrent", "all"]))
    def clear(self, which: str) -> None:
        stats = copy.deepcopy(self.manager.stats)
        if which in ("roots", "all"):
            for model in self.roots:
                model.clear()
        if which in ("recurrent", "all"):
            self.recurrent.clear()
        {
            "roots": self.manager.clear_roots,
            "recurrent": self.manager.clear_recurrent,
            "all": self.manager.clear_all,
        }[which]()
        self.changed_since = True
        assert self.manager.stats == stats

    @rule(nodes=st.integers(0, 6))
    def begin_search(self, nodes: int) -> None:
        if nodes > self.config.recurrent_capacity:
            expect_refusal(
                self.manager, SearchCapacityError, lambda: self.manager.begin_search(nodes)
            )
            return
        self.manager.begin_search(nodes)
        self.budget, self.used = nodes, 0

    @precondition(lambda self: self.budget is not None)
    @rule()
    def end_search(self) -> None:
        self.manager.end_search()
        self.budget, self.used = None, 0

    @rule()
    def reset_stats(self) -> None:
        self.manager.reset_stats()
        for model in (*self.roots, self.recurrent):
            model.counts = dict.fromkeys(model.counts, 0)
        self.lookups = 0

    @rule(env_id=ENV_IDS, key=KEYS, priority=st.integers(0, 3).map(float), root=st.booleans())
    def set_priority(self, env_id: int, key: int, priority: float, root: bool) -> None:
        e = self.env(env_id)
        tier = Tier.ROOT if root else Tier.RECURRENT
        model = self.roots[e] if root else self.recurrent
        model_key = key if root else self.recurrent_model_key(e, key, None)[0]
        call = partial(self.manager.set_priority, tier, e, key, priority)
        if not isinstance(model, PriorityModel):
            expect_refusal(self.manager, UnsupportedOperationError, call)
        elif model_key not in model.entries:
            expect_refusal(self.manager, KeyNotFoundError, call)
        else:
            call()
            model.priority[model_key] = priority

    @rule(env_id=st.integers(-2, 4), key=KEYS)
    def bad_env_or_key(self, env_id: int, key: int) -> None:
        call: Callable[[], object]
        if 0 <= env_id < self.config.env_num:
            call = partial(self.manager.lookup, env_id, 1 << 63)
            expect_refusal(self.manager, KeyRangeError, call)
        else:
            call = partial(self.manager.store_root, env_id, key, tagged(0, key, 0))
            expect_refusal(self.manager, EnvIdError, call)

    # ---- invariants
    @invariant()
    def invariants_hold(self) -> None:
        self.manager.check()
        s = self.manager.stats
        assert s.queries == self.lookups
        assert s.hits + s.misses == s.queries
        assert s.hits == s.root_hits + s.recurrent_hits
        assert (self.manager.search_budget, self.manager.search_used) == (self.budget, self.used)

    @invariant()
    def tiers_agree_with_models(self) -> None:
        for pool, model in zip(self.manager.roots, self.roots):
            assert pool.slot_keys == model.slot_keys()
            assert pool.stats.as_dict() == model.counts
        rec = self.manager.recurrent
        assert rec.stats.as_dict() == self.recurrent.counts
        expected = [
            None if k is None else self.recurrent_pool_key(k) for k in self.recurrent.slot_keys()
        ]
        assert rec.slot_keys == expected

    def recurrent_pool_key(self, model_key: Any) -> int:
        if self.config.scope is Scope.GLOBAL:
            return int(model_key)
        env_id, key = model_key
        return scoped_key(key, env_id)


TestManager = ManagerMachine.TestCase


def test_fifo_model_refills_holes_in_turn() -> None:
    """The FIFO window rule on a hand example, for the model and the spec alike."""
    model = FifoModel(3)
    assert [model.put(k, k, None)[:2] for k in (1, 2, 3)] == [(0, None), (1, None), (2, None)]
    assert model.evict(2)
    assert model.put(4, 4, None)[:2] == (0, 1)  # the ring evicts 1, not the hole at slot 1
    assert model.put(5, 5, None)[:2] == (1, None)  # the hole is refilled when its turn comes
    assert model.order() == [3, 4, 5]
    pool: SlotPool[int] = make_pool(Policy.FIFO, 3)
    for k in (1, 2, 3):
        pool.put(k, k)
    pool.evict(2)
    assert (pool.put(4, 4).slot, pool.put(5, 5).slot) == (0, 1)
    assert pool.eviction_order() == [3, 4, 5]
