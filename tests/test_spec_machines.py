"""Hypothesis state machines over the reference model alone (no torch).

One machine per eviction policy drives a single pool (capacity 1..5, keys 0..7 so hits,
duplicates and ring wrap-around are common) and compares every result with an independent
model written here from the rules in ``zerokv_spec.pool``'s docstring:

* FIFO - a ring list of slot contents plus a pointer (LightZero's rule): a new key takes
  slot ``next`` evicting its occupant, the pointer advances only on new keys, updates are in
  place, ``clear`` resets the pointer.
* LRU - an ordered dict of keys, least recent first; a new key takes the lowest free slot,
  else the least recent key is evicted.
* PRIORITY - ``(priority, insertion order)``; the minimum is the victim.

A fourth machine drives a ``CacheManager`` (both scopes, every policy) against a model of
what each (tier, environment-or-global, key) last stored, and checks env isolation, the
statistics identities and that over-budget search stores change nothing.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from zerokv_spec.entry import Entry
from zerokv_spec.errors import (
    KeyNotFoundError,
    SearchCapacityError,
    SlotRangeError,
    UnsupportedOperationError,
)
from zerokv_spec.manager import CacheManager, ManagerConfig, Scope, Tier, TierLookup
from zerokv_spec.pool import (
    FIFOPool,
    Lookup,
    LookupStatus,
    Policy,
    PutResult,
    SlotPool,
    make_pool,
)

KEYS = st.integers(min_value=0, max_value=7)
FPS = st.one_of(st.none(), st.integers(min_value=0, max_value=2))
PRIOS = st.integers(min_value=-2, max_value=2).map(float)


def pool_snapshot(pool: SlotPool[int]) -> dict[str, Any]:
    """Every attribute of ``pool`` (deep-copied), to compare before/after a refused call."""
    return copy.deepcopy(vars(pool))


# --------------------------------------------------------------------------- pool models


class PoolModel:
    """Policy-independent part of the model: slot contents, fingerprints and values."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.slots: list[int | None] = [None] * capacity
        self.fps: dict[int, int | None] = {}
        self.values: dict[int, int] = {}

    def slot_of(self, key: int) -> int:
        return self.slots.index(key)

    def lowest_free(self) -> int | None:
        for s, k in enumerate(self.slots):
            if k is None:
                return s
        return None

    # policy hooks ------------------------------------------------------------
    def new_slot(self) -> int:
        raise NotImplementedError

    def used(self, key: int, inserted: bool, priority: float | None) -> None:
        """A put (``inserted`` tells new or update) or a get hit (priority None)."""

    def hit(self, key: int) -> None:
        """A get hit."""

    def removed(self, key: int) -> None:
        """``key`` left the pool (eviction or explicit evict)."""

    def cleared(self) -> None:
        """Policy state of an empty pool."""

    def order(self) -> list[int]:
        raise NotImplementedError

    # operations --------------------------------------------------------------
    def lookup(self, key: int, fp: int | None) -> tuple[LookupStatus, int | None, int | None]:
        if key not in self.fps:
            return LookupStatus.MISS, None, None
        if fp is not None and self.fps[key] != fp:
            return LookupStatus.COLLISION, None, None
        return LookupStatus.HIT, self.slot_of(key), self.values[key]

    def get(self, key: int, fp: int | None) -> tuple[LookupStatus, int | None, int | None]:
        result = self.lookup(key, fp)
        if result[0] is LookupStatus.HIT:
            self.hit(key)
        return result

    def put(self, key: int, value: int, fp: int | None, priority: float | None) -> PutResult:
        evicted: int | None = None
        if key in self.fps:
            slot = self.slot_of(key)
            inserted = False
        else:
            slot = self.new_slot()
            evicted = self.slots[slot]
            if evicted is not None:
                del self.fps[evicted]
                del self.values[evicted]
                self.removed(evicted)
            self.slots[slot] = key
            inserted = True
        self.fps[key] = fp
        self.values[key] = value
        self.used(key, inserted, priority)
        return PutResult(slot, evicted, inserted)

    def evict(self, key: int) -> None:
        self.slots[self.slot_of(key)] = None
        del self.fps[key]
        del self.values[key]
        self.removed(key)

    def clear(self) -> None:
        self.slots = [None] * self.capacity
        self.fps = {}
        self.values = {}
        self.cleared()


class FIFOModel(PoolModel):
    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.next = 0

    def new_slot(self) -> int:
        return self.next

    def used(self, key: int, inserted: bool, priority: float | None) -> None:
        if inserted:
            self.next = (self.next + 1) % self.capacity

    def cleared(self) -> None:
        self.next = 0

    def order(self) -> list[int]:
        ring = self.slots[self.next :] + self.slots[: self.next]
        return [k for k in ring if k is not None]


class LRUModel(PoolModel):
    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.recency: OrderedDict[int, None] = OrderedDict()

    def new_slot(self) -> int:
        free = self.lowest_free()
        if free is not None:
            return free
        return self.slot_of(next(iter(self.recency)))

    def used(self, key: int, inserted: bool, priority: float | None) -> None:
        self.recency[key] = None
        self.recency.move_to_end(key)

    def hit(self, key: int) -> None:
        self.recency.move_to_end(key)

    def removed(self, key: int) -> None:
        del self.recency[key]

    def cleared(self) -> None:
        self.recency.clear()

    def order(self) -> list[int]:
        return list(self.recency)


class PriorityModel(PoolModel):
    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.rank: dict[int, tuple[float, int]] = {}
        self.counter = 0

    def new_slot(self) -> int:
        free = self.lowest_free()
        if free is not None:
            return free
        return self.slot_of(min(self.rank, key=lambda k: self.rank[k]))

    def used(self, key: int, inserted: bool, priority: float | None) -> None:
        if inserted:
            self.rank[key] = (0.0 if priority is None else priority, self.counter)
            self.counter += 1
        elif priority is not None:
            self.rank[key] = (priority, self.rank[key][1])

    def removed(self, key: int) -> None:
        del self.rank[key]

    def cleared(self) -> None:
        self.rank.clear()

    def order(self) -> list[int]:
        return sorted(self.rank, key=lambda k: self.rank[k])


# --------------------------------------------------------------------------- pool machines


class PoolMachine(RuleBasedStateMachine):
    """Shared rules; subclasses pick the pool class and the model."""

    policy = Policy.FIFO
    model_type: type[PoolModel] = FIFOModel

    def __init__(self) -> None:
        super().__init__()
        self.pool: SlotPool[int] = make_pool(self.policy, 1)
        self.model: PoolModel = self.model_type(1)
        self.counter = 0

    @property
    def has_priorities(self) -> bool:
        return self.policy is Policy.PRIORITY

    def next_value(self) -> int:
        self.counter += 1
        return self.counter

    @initialize(capacity=st.integers(min_value=1, max_value=5))
    def setup(self, capacity: int) -> None:
        self.pool = make_pool(self.policy, capacity)
        self.model = self.model_type(capacity)
        assert self.pool.capacity == capacity

    def check_lookup(
        self, got: Lookup[int], want: tuple[LookupStatus, int | None, int | None]
    ) -> None:
        assert (got.status, got.slot, got.value) == want

    @rule(key=KEYS, fp=FPS)
    def get(self, key: int, fp: int | None) -> None:
        self.check_lookup(self.pool.get(key, fp), self.model.get(key, fp))

    @rule(key=KEYS, fp=FPS)
    def peek(self, key: int, fp: int | None) -> None:
        before = copy.deepcopy(self.pool.stats)
        order = self.pool.eviction_order()
        status, _, value = self.model.lookup(key, fp)
        assert self.pool.peek(key, fp) == (value if status is LookupStatus.HIT else None)
        assert self.pool.stats == before
        assert self.pool.eviction_order() == order

    @rule(key=KEYS, fp=FPS, prio=st.one_of(st.none(), PRIOS))
    def put(self, key: int, fp: int | None, prio: float | None) -> None:
        value = self.next_value()
        if not self.has_priorities and prio is not None:
            snap = pool_snapshot(self.pool)
            try:
                self.pool.put(key, value, fp, prio)
            except UnsupportedOperationError:
                assert pool_snapshot(self.pool) == snap
                return
            raise AssertionError("a priority on a non-priority pool was accepted")
        assert self.pool.put(key, value, fp, prio) == self.model.put(key, value, fp, prio)

    @rule(items=st.lists(st.tuples(KEYS, FPS, st.one_of(st.none(), PRIOS)), min_size=0, max_size=6))
    def put_many(self, items: list[tuple[int, int | None, float | None]]) -> None:
        keys = [k for k, _, _ in items]
        fps = [f for _, f, _ in items]
        prios = [p if self.has_priorities else None for _, _, p in items]
        values = [self.next_value() for _ in items]
        got = self.pool.put_many(keys, values, fps, prios)
        want = [self.model.put(k, v, f, p) for k, v, f, p in zip(keys, values, fps, prios)]
        assert got == want

    @rule(items=st.lists(st.tuples(KEYS, FPS), min_size=0, max_size=6))
    def get_many(self, items: list[tuple[int, int | None]]) -> None:
        got = self.pool.get_many([k for k, _ in items], [f for _, f in items])
        assert len(got) == len(items)
        for lookup, (k, f) in zip(got, items):
            self.check_lookup(lookup, self.model.get(k, f))

    @rule(key=KEYS)
    def evict(self, key: int) -> None:
        if key in self.model.fps:
            self.pool.evict(key)
            self.model.evict(key)
            assert key not in self.pool
            return
        snap = pool_snapshot(self.pool)
        try:
            self.pool.evict(key)
        except KeyNotFoundError:
            assert pool_snapshot(self.pool) == snap
            return
        raise AssertionError(f"evict of absent key {key} did not raise")

    @rule()
    def clear(self) -> None:
        stats = copy.deepcopy(self.pool.stats)
        self.pool.clear()
        self.model.clear()
        assert len(self.pool) == 0
        assert self.pool.stats == stats

    @rule(key=KEYS, prio=PRIOS)
    def set_priority(self, key: int, prio: float) -> None:
        snap = pool_snapshot(self.pool)
        if not self.has_priorities:
            try:
                self.pool.set_priority(key, prio)
            except UnsupportedOperationError:
                assert pool_snapshot(self.pool) == snap
                return
            raise AssertionError("set_priority on a non-priority pool did not raise")
        if key not in self.model.fps:
            try:
                self.pool.set_priority(key, prio)
            except KeyNotFoundError:
                assert pool_snapshot(self.pool) == snap
                return
            raise AssertionError("set_priority of an absent key did not raise")
        self.pool.set_priority(key, prio)
        assert isinstance(self.model, PriorityModel)
        self.model.rank[key] = (prio, self.model.rank[key][1])

    @rule(key=KEYS, slot=st.integers(min_value=-1, max_value=6))
    def slot_of_key_at(self, key: int, slot: int) -> None:
        if key in self.model.fps:
            assert self.pool.slot_of(key) == self.model.slot_of(key)
        else:
            try:
                self.pool.slot_of(key)
            except KeyNotFoundError:
                pass
            else:
                raise AssertionError(f"slot_of absent key {key} did not raise")
        if 0 <= slot < self.model.capacity:
            assert self.pool.key_at(slot) == self.model.slots[slot]
        else:
            try:
                self.pool.key_at(slot)
            except SlotRangeError:
                return
            raise AssertionError(f"key_at({slot}) out of range did not raise")

    @invariant()
    def consistent(self) -> None:
        self.pool.check()
        assert self.pool.slot_keys == self.model.slots
        assert self.pool.eviction_order() == self.model.order()
        assert len(self.pool) == len(self.model.fps)
        for key, value in self.model.values.items():
            assert self.pool.peek(key) == value


class FIFOMachine(PoolMachine):
    policy = Policy.FIFO
    model_type = FIFOModel

    @invariant()
    def pointer(self) -> None:
        assert isinstance(self.pool, FIFOPool) and isinstance(self.model, FIFOModel)
        assert self.pool.next == self.model.next


class LRUMachine(PoolMachine):
    policy = Policy.LRU
    model_type = LRUModel


class PriorityMachine(PoolMachine):
    policy = Policy.PRIORITY
    model_type = PriorityModel


TestFIFOMachine = FIFOMachine.TestCase
TestLRUMachine = LRUMachine.TestCase
TestPriorityMachine = PriorityMachine.TestCase


# --------------------------------------------------------------------------- manager machine

CL = 6
TOKENS = st.lists(st.integers(min_value=-3, max_value=3).map(float), min_size=0, max_size=CL)
ENTRIES = st.builds(lambda ks: Entry((tuple(ks),), (tuple(-x for x in ks),)), TOKENS)

#: Model of one tier's stored item: (fingerprint as stored, entry).
Stored = tuple[int | None, Entry]


class ManagerMachine(RuleBasedStateMachine):
    """A manager against a model of the latest entry per (tier, env-or-global, key)."""

    def __init__(self) -> None:
        super().__init__()
        self.mgr = CacheManager(ManagerConfig(1, 1, CL, 1, 1))
        # Root tier: (env, key) -> stored; slot maps per env: slot -> key.
        self.roots: dict[tuple[int, int], Stored] = {}
        self.root_slots: list[dict[int, int]] = []
        # Recurrent tier: (env or -1 in GLOBAL scope, key) -> stored; slot -> model key.
        self.rec: dict[tuple[int, int], Stored] = {}
        self.rec_slots: dict[int, tuple[int, int]] = {}
        self.budget: int | None = None
        self.used = 0
        self.queries = 0
        self.hits = 0

    @initialize(
        env_num=st.integers(min_value=2, max_value=3),
        root_cap=st.integers(min_value=1, max_value=4),
        rec_cap=st.integers(min_value=1, max_value=4),
        scope=st.sampled_from(Scope),
        policy=st.sampled_from(Policy),
    )
    def setup(
        self, env_num: int, root_cap: int, rec_cap: int, scope: Scope, policy: Policy
    ) -> None:
        cfg = ManagerConfig(env_num, 1, CL, root_cap, rec_cap, policy=policy, scope=scope)
        self.mgr = CacheManager(cfg)
        self.root_slots = [{} for _ in range(env_num)]
        assert len(self.mgr.roots) == env_num

    @property
    def envs(self) -> st.SearchStrategy[int]:
        return st.integers(min_value=0, max_value=self.mgr.config.env_num - 1)

    def rec_key(self, env: int, key: int) -> tuple[int, int]:
        return (-1 if self.mgr.config.scope is Scope.GLOBAL else env, key)

    # lookups -------------------------------------------------------------
    def model_root(self, env: int, key: int, fp: int | None) -> tuple[Stored | None, bool]:
        stored = self.roots.get((env, key))
        if stored is None:
            return None, False
        if fp is not None and stored[0] != fp:
            return None, True
        return stored, False

    def model_rec(self, env: int, key: int, fp: int | None) -> tuple[Stored | None, bool]:
        stored = self.rec.get(self.rec_key(env, key))
        if stored is None:
            return None, False
        if self.mgr.config.scope is Scope.ENV:
            # Scoped fingerprints: a missing fingerprint counts as 0 on both sides.
            ok = (fp or 0) == (stored[0] or 0)
        else:
            ok = fp is None or stored[0] == fp
        return (stored, False) if ok else (None, True)

    def expect(self, got: TierLookup, tier: Tier, found: Stored | None, collided: bool) -> None:
        self.queries += 1
        if found is None:
            assert got.tier is Tier.MISS and got.entry is None and got.slot is None
            assert got.collided == collided
        else:
            self.hits += 1
            assert got.tier is tier
            assert got.entry == found[1]

    @rule(data=st.data(), key=KEYS, fp=FPS, mode=st.sampled_from(["hier", "root", "rec"]))
    def lookup_any(self, data: st.DataObject, key: int, fp: int | None, mode: str) -> None:
        self.lookup(data.draw(self.envs), key, fp, mode)

    def lookup(self, env: int, key: int, fp: int | None, mode: str) -> None:
        if mode == "root":
            found, col = self.model_root(env, key, fp)
            self.expect(self.mgr.lookup_root(env, key, fp), Tier.ROOT, found, col)
        elif mode == "rec":
            found, col = self.model_rec(env, key, fp)
            self.expect(self.mgr.lookup_recurrent(env, key, fp), Tier.RECURRENT, found, col)
        else:
            rfound, rcol = self.model_root(env, key, fp)
            got = self.mgr.lookup(env, key, fp)
            if rfound is not None:
                self.expect(got, Tier.ROOT, rfound, False)
            else:
                found, col = self.model_rec(env, key, fp)
                self.expect(got, Tier.RECURRENT, found, col or (found is None and rcol))

    @precondition(lambda self: bool(self.roots) or bool(self.rec))
    @rule(data=st.data(), fp=FPS, mode=st.sampled_from(["hier", "root", "rec"]))
    def lookup_stored(self, data: st.DataObject, fp: int | None, mode: str) -> None:
        """Look up a stored key, from its own environment or another one."""
        env, key = data.draw(st.sampled_from(sorted([*self.roots, *self.rec])))
        if env < 0 or data.draw(st.booleans()):
            env = data.draw(self.envs)
        self.lookup(env, key, fp, mode)

    # stores --------------------------------------------------------------
    @rule(data=st.data(), key=KEYS, fp=FPS, entry=ENTRIES)
    def store_root(self, data: st.DataObject, key: int, fp: int | None, entry: Entry) -> None:
        env = data.draw(self.envs)
        result = self.mgr.store_root(env, key, entry, fp)
        slots = self.root_slots[env]
        if result.inserted:
            assert (env, key) not in self.roots
            if result.evicted is not None:
                assert slots[result.slot] == result.evicted
                del self.roots[(env, result.evicted)]
            else:
                assert result.slot not in slots
            slots[result.slot] = key
        else:
            assert slots[result.slot] == key and result.evicted is None
        self.roots[(env, key)] = (fp, entry)

    def rec_snapshot(self) -> Any:
        pools = [*self.mgr.roots, self.mgr.recurrent]
        return copy.deepcopy(
            (
                [(p.slot_keys, p.slot_values, p.stats) for p in pools],
                self.mgr.stats,
                self.mgr.search_used,
                self.mgr.search_budget,
            )
        )

    @rule(data=st.data(), key=KEYS, fp=FPS, entry=ENTRIES)
    def store_recurrent(self, data: st.DataObject, key: int, fp: int | None, entry: Entry) -> None:
        env = data.draw(self.envs)
        if self.budget is not None and self.used >= self.budget:
            snap = self.rec_snapshot()
            try:
                self.mgr.store_recurrent(env, key, entry, fp)
            except SearchCapacityError:
                assert self.rec_snapshot() == snap
                return
            raise AssertionError("a store beyond the declared search did not raise")
        result = self.mgr.store_recurrent(env, key, entry, fp)
        if self.budget is not None:
            self.used += 1
        mkey = self.rec_key(env, key)
        if result.inserted:
            assert mkey not in self.rec
            if result.evicted is not None:
                del self.rec[self.rec_slots[result.slot]]
            else:
                assert result.slot not in self.rec_slots
            self.rec_slots[result.slot] = mkey
        else:
            assert self.rec_slots[result.slot] == mkey and result.evicted is None
        self.rec[mkey] = (fp, entry)

    @rule(data=st.data(), n=st.integers(min_value=0, max_value=3), entry=ENTRIES)
    def store_recurrent_many(self, data: st.DataObject, n: int, entry: Entry) -> None:
        """Only the refusal path: a batch over the budget changes nothing."""
        if self.budget is None or self.used + n <= self.budget:
            return
        envs = [data.draw(self.envs) for _ in range(n)]
        snap = self.rec_snapshot()
        try:
            self.mgr.store_recurrent_many(envs, list(range(n)), [entry] * n)
        except SearchCapacityError:
            assert self.rec_snapshot() == snap
            return
        raise AssertionError("a batch beyond the declared search did not raise")

    # searches and clears -------------------------------------------------
    @rule(nodes=st.integers(min_value=0, max_value=5))
    def begin_search(self, nodes: int) -> None:
        if nodes > self.mgr.config.recurrent_capacity:
            snap = self.rec_snapshot()
            try:
                self.mgr.begin_search(nodes)
            except SearchCapacityError:
                assert self.rec_snapshot() == snap
                return
            raise AssertionError("a search larger than the recurrent pool was accepted")
        self.mgr.begin_search(nodes)
        self.budget, self.used = nodes, 0
        assert self.mgr.search_budget == nodes

    @precondition(lambda self: self.budget is not None)
    @rule()
    def end_search(self) -> None:
        self.mgr.end_search()
        self.budget, self.used = None, 0
        assert self.mgr.search_budget is None

    @rule(data=st.data())
    def clear_env(self, data: st.DataObject) -> None:
        env = data.draw(self.envs)
        self.mgr.clear_env(env)
        self.roots = {k: v for k, v in self.roots.items() if k[0] != env}
        self.root_slots[env] = {}
        assert len(self.mgr.roots[env]) == 0

    def clear_model_roots(self) -> None:
        self.roots = {}
        self.root_slots = [{} for _ in self.root_slots]

    def clear_model_rec(self) -> None:
        self.rec = {}
        self.rec_slots = {}

    @rule()
    def clear_roots(self) -> None:
        self.mgr.clear_roots()
        self.clear_model_roots()
        assert all(len(p) == 0 for p in self.mgr.roots)

    @rule()
    def clear_recurrent(self) -> None:
        self.mgr.clear_recurrent()
        self.clear_model_rec()
        assert len(self.mgr.recurrent) == 0

    @rule()
    def clear_all(self) -> None:
        queries = self.mgr.stats.queries
        self.mgr.clear_all()
        self.clear_model_roots()
        self.clear_model_rec()
        assert self.mgr.stats.queries == queries

    # invariants ----------------------------------------------------------
    @invariant()
    def consistent(self) -> None:
        self.mgr.check()
        s = self.mgr.stats
        assert s.hits + s.misses == s.queries
        assert s.hits == s.root_hits + s.recurrent_hits
        assert (s.queries, s.hits) == (self.queries, self.hits)
        assert [len(p) for p in self.mgr.roots] == [len(slots) for slots in self.root_slots]
        assert len(self.mgr.recurrent) == len(self.rec)
        assert self.mgr.search_used == self.used

    @invariant()
    def isolation(self) -> None:
        """Every stored entry is found, untouched by stats, under exactly its own env."""
        for (env, key), (_, entry) in self.roots.items():
            assert self.mgr.roots[env].peek(key) == entry
            for other in range(self.mgr.config.env_num):
                if (other, key) not in self.roots:
                    assert self.mgr.roots[other].peek(key) is None
        for env in range(self.mgr.config.env_num):
            for key in range(8):
                stored = self.rec.get(self.rec_key(env, key))
                rkey, rfp = self.mgr.recurrent_key(env, key, None if stored is None else stored[0])
                assert self.mgr.recurrent.peek(rkey, rfp) == (None if stored is None else stored[1])


TestManagerMachine = ManagerMachine.TestCase
