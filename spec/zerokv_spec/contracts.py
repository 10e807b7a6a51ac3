"""Bounded CrossHair drivers: the contracts of ``zerokv_spec`` stated as PEP 316 docstrings.

Check them with ``crosshair check --analysis_kind=PEP316 spec/zerokv_spec/contracts.py``
(the ``contracts`` nox session does, with the limits set in ``noxfile.py``); one driver with
``crosshair check --analysis_kind=PEP316 zerokv_spec.contracts.fifo_ops_driver``.

How the drivers are built, and why:

* CrossHair checks the contracts of the *top-level* function it analyses, not those of the
  calls it makes, and it cannot efficiently construct dict + list states from class
  invariants. So every contract is a top-level *driver*: a function of a few small ints and
  short lists of int tuples (its ``pre:`` lines bound them) that builds a state, applies
  operations and returns a record of what happened. Its ``post:`` lines state the
  operations' contracts over that record.
* Arbitrary (not only fresh) pool states come from ``restore``, which builds a valid pool
  directly from a symbolic slot description: which key each slot holds, its fingerprint,
  its recency / insertion rank and its priority. Duplicate keys are dropped by ``restore``
  (a later slot holding an earlier slot's key stays empty), so every description is valid.
* Every spec operation runs ``check()`` itself; a broken class invariant raises
  ``ContractViolation`` (an ``AssertionError``), which CrossHair reports as a counterexample
  exactly like a failed ``post:``.
* Pool operations are encoded as ``(opcode, key, arg)`` tuples of small ints (``apply_op``),
  so that CrossHair explores sequences symbolically. ``arg`` is the fingerprint of
  ``GET`` / ``PEEK`` / ``PUT`` (negative: none) and also the priority of a ``PUT`` on a
  priority pool (negative: none), the new priority of ``SET_PRIORITY`` and the slot of
  ``KEY_AT``.
* The ``*_failures`` helpers return the names of the clauses of a contract that a record
  violates (``[]``: the contract holds); a ``post:`` line asserting ``== []`` names the
  helper, and calling the helper on CrossHair's counterexample names the clause.
* ``reference_model`` is an independent, deliberately naive re-implementation of the three
  policies (lists and dicts, no shared code); the sequence drivers compare every
  observation of the spec with it.

Nothing here is imported by ``zerokv_spec/__init__``; the module only reads the spec.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, TypeVar

from zerokv_spec.entry import (
    Batch,
    Correction,
    Entry,
    append,
    assemble,
    remove_registers,
    split,
    store_rows,
    window,
)
from zerokv_spec.errors import ZeroKVError
from zerokv_spec.keys import INT64_MAX, INT64_MIN
from zerokv_spec.manager import CacheManager, ManagerConfig, Scope, Tier, TierLookup
from zerokv_spec.pool import (
    FIFOPool,
    Lookup,
    LookupStatus,
    LRUPool,
    Policy,
    PriorityPool,
    PutResult,
    SlotPool,
    make_pool,
)
from zerokv_spec.stats import ManagerStats, PoolStats

V = TypeVar("V")

# --------------------------------------------------------------------------- encodings

#: Policy codes of the drivers: ``POLICIES[code]``.
POLICIES: tuple[Policy, ...] = (Policy.FIFO, Policy.LRU, Policy.PRIORITY)
FIFO_CODE, LRU_CODE, PRIORITY_CODE = 0, 1, 2

#: Pool opcodes (``apply_op``).
GET, PEEK, PUT, EVICT, CLEAR, SET_PRIORITY, SLOT_OF, KEY_AT = range(8)
OP_NAMES = ("get", "peek", "put", "evict", "clear", "set_priority", "slot_of", "key_at")

#: Drivers draw keys from ``0 .. MAX_KEY``; ``ABSENT_KEY`` is never stored by any driver.
MAX_KEY = 3
ABSENT_KEY = 9
#: A restored key ``k`` holds the value ``RESTORED_VALUE + k``; step ``i`` of a driver
#: writes ``WRITTEN_VALUE + i`` (so a hit shows which write it returns).
RESTORED_VALUE = 100
WRITTEN_VALUE = 1000

#: One slot of a restored pool: ``(key, fingerprint, rank, priority)``; a negative key is an
#: empty slot, a negative fingerprint is none. ``rank`` orders last uses (LRU) or insertions
#: (PRIORITY); ``priority`` is the priority (PRIORITY).
SlotSpec = tuple[int, int, int, int]
#: One pool operation: ``(opcode, key, arg)``.
Op = tuple[int, int, int]

#: Concrete copies of small ints. Looking a symbolic int up here makes CrossHair fix its
#: value (it has to hash it), which keeps 64-bit hashing arithmetic out of the solver.
_SMALL: dict[int, int] = {i: i for i in range(-16, 17)}


def small(x: int) -> int:
    """``x`` itself, as a concrete int (``-16 <= x <= 16``)."""
    return _SMALL[x]


def valid_slot(spec: SlotSpec) -> bool:
    """The bounds a driver's ``pre:`` puts on one ``SlotSpec``."""
    key, fp, rank, prio = spec
    return -1 <= key <= MAX_KEY and -1 <= fp <= 1 and 0 <= rank <= 3 and 0 <= prio <= 2


def valid_op(op: Op, n_ops: int = 8) -> bool:
    """The bounds a driver's ``pre:`` puts on one pool operation."""
    code, key, arg = op
    return 0 <= code < n_ops and 0 <= key <= MAX_KEY and -1 <= arg <= 3


def fingerprint_arg(arg: int) -> int | None:
    """The fingerprint an ``arg`` encodes (``None`` when negative)."""
    return None if arg < 0 else arg


def priority_arg(policy: Policy, arg: int) -> float | None:
    """The priority a ``PUT`` passes: ``float(arg)`` on priority pools, else none."""
    return float(arg) if policy is Policy.PRIORITY and arg >= 0 else None


# --------------------------------------------------------------------------- snapshots


@dataclass(frozen=True)
class PoolSnap:
    """Everything observable about a pool, frozen; two snapshots compare with ``==``."""

    policy: Policy
    keys: tuple[int | None, ...]
    fingerprints: tuple[int | None, ...]
    values: tuple[object, ...]
    stats: PoolStats
    policy_state: tuple[object, ...]
    order: tuple[int, ...]

    @property
    def capacity(self) -> int:
        return len(self.keys)

    def __len__(self) -> int:
        return sum(1 for k in self.keys if k is not None)

    def slot_of(self, key: int | None) -> int | None:
        """The slot holding ``key`` (None when not stored)."""
        if key is None:
            return None
        for slot, held in enumerate(self.keys):
            if held == key:
                return slot
        return None

    def lowest_empty(self) -> int | None:
        for slot, held in enumerate(self.keys):
            if held is None:
                return slot
        return None

    @property
    def next(self) -> int:
        """FIFO ring pointer."""
        value = self.policy_state[0]
        assert isinstance(value, int)
        return value

    def priority_of(self, key: int) -> float:
        """PRIORITY: the priority of stored ``key``."""
        slot = self.slot_of(key)
        priorities = self.policy_state[0]
        assert slot is not None and isinstance(priorities, tuple)
        value = priorities[slot]
        assert isinstance(value, float)
        return value

    def inserted_at(self, slot: int) -> int:
        """PRIORITY: the insertion time of ``slot``."""
        times = self.policy_state[1]
        assert isinstance(times, tuple)
        value = times[slot]
        assert isinstance(value, int)
        return value


def snapshot(pool: SlotPool[V]) -> PoolSnap:
    """Freeze ``pool``'s observable state."""
    state: tuple[object, ...]
    if isinstance(pool, FIFOPool):
        state = (pool.next,)
    elif isinstance(pool, LRUPool):
        state = (tuple(pool.last_use), pool.clock)
    elif isinstance(pool, PriorityPool):
        state = (tuple(pool.priority), tuple(pool.inserted_at), pool.clock)
    else:
        raise TypeError(f"unknown pool type {type(pool).__name__}")
    return PoolSnap(
        pool.policy,
        tuple(pool.slot_keys),
        tuple(pool.slot_fingerprints),
        tuple(pool.slot_values),
        replace(pool.stats),
        state,
        tuple(pool.eviction_order()),
    )


def restore(
    policy: int, capacity: int, slots: Sequence[SlotSpec], pointer: int = 0
) -> SlotPool[int]:
    """A valid pool of ``POLICIES[policy]`` in the state ``slots`` describes.

    Slot ``s`` holds key ``slots[s][0]`` (value ``RESTORED_VALUE + key``) unless that is
    negative or an earlier slot holds it (then ``s`` stays empty). LRU last-use times and
    PRIORITY insertion times are ``rank * capacity + s`` (distinct by construction), the
    clock is one past the largest; ``pointer`` is the FIFO ring pointer.
    """
    pool: SlotPool[int] = make_pool(POLICIES[policy], capacity)
    stored: list[int] = []
    times: list[int] = []
    for s in range(capacity):
        key, fp, rank, prio = slots[s]
        if key < 0 or key in stored:
            continue
        key = small(key)
        stored.append(key)
        pool.slot_keys[s] = key
        pool.slot_fingerprints[s] = None if fp < 0 else small(fp)
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
        pool.next = pointer
    elif isinstance(pool, (LRUPool, PriorityPool)):
        pool.clock = max(times, default=-1) + 1
    pool.check()
    return pool


# --------------------------------------------------------------------------- one operation


@dataclass(frozen=True)
class OpCase:
    """One pool operation: its encoding, the states around it and what it returned/raised."""

    op: int
    key: int
    arg: int
    value: int
    before: PoolSnap
    after: PoolSnap
    result: object
    error: str | None


def apply_op(pool: SlotPool[int], op: int, key: int, arg: int, value: int) -> OpCase:
    """Apply one encoded operation; a ``ZeroKVError`` is recorded, anything else propagates."""
    before = snapshot(pool)
    result: object = None
    error: str | None = None
    try:
        if op == GET:
            result = pool.get(key, fingerprint_arg(arg))
        elif op == PEEK:
            result = pool.peek(key, fingerprint_arg(arg))
        elif op == PUT:
            result = pool.put(key, value, fingerprint_arg(arg), priority_arg(pool.policy, arg))
        elif op == EVICT:
            pool.evict(key)
        elif op == CLEAR:
            pool.clear()
        elif op == SET_PRIORITY:
            pool.set_priority(key, float(arg))
        elif op == SLOT_OF:
            result = pool.slot_of(key)
        elif op == KEY_AT:
            result = pool.key_at(arg)
        else:
            raise ValueError(f"unknown opcode {op}")
    except ZeroKVError as exc:
        error = type(exc).__name__
    return OpCase(op, key, arg, value, before, snapshot(pool), result, error)


Clauses = list[tuple[str, bool]]


def _failed(clauses: Clauses) -> list[str]:
    return [name for name, ok in clauses if not ok]


_COUNTERS = tuple(f.name for f in fields(PoolStats))


def counter_deltas(before: PoolSnap, after: PoolSnap) -> dict[str, int]:
    """``after.stats - before.stats`` per counter."""
    return {n: getattr(after.stats, n) - getattr(before.stats, n) for n in _COUNTERS}


def expect_deltas(before: PoolSnap, after: PoolSnap, **expected: int) -> bool:
    """Counters moved by ``expected`` (unnamed counters: not at all)."""
    deltas = counter_deltas(before, after)
    return all(deltas[n] == expected.get(n, 0) for n in _COUNTERS)


def others_unchanged(before: PoolSnap, after: PoolSnap, slot: int | None) -> bool:
    """Every slot but ``slot`` holds the same key, fingerprint and value."""
    return all(
        before.keys[s] == after.keys[s]
        and before.fingerprints[s] == after.fingerprints[s]
        and before.values[s] == after.values[s]
        for s in range(before.capacity)
        if s != slot
    )


def same_entries(before: PoolSnap, after: PoolSnap) -> bool:
    return (
        before.keys == after.keys
        and before.fingerprints == after.fingerprints
        and before.values == after.values
    )


def without(order: Sequence[int], *keys: int | None) -> tuple[int, ...]:
    return tuple(k for k in order if k not in keys)


def unchanged_after_error(c: OpCase, expected: str) -> Clauses:
    return [(f"raises {expected}", c.error == expected), ("a raising op changes nothing", c.before == c.after)]


def state_failures(s: PoolSnap) -> list[str]:
    """State-level clauses: bijection, size, statistics identities, eviction order."""
    stored = [k for k in s.keys if k is not None]
    return _failed(
        [
            ("stored keys are distinct", len(set(stored)) == len(stored)),
            ("len <= capacity", len(s) <= s.capacity),
            ("hits + misses == queries", s.stats.hits + s.stats.misses == s.stats.queries),
            ("collisions <= misses", s.stats.collisions <= s.stats.misses),
            ("eviction order is a permutation of the stored keys", sorted(s.order) == sorted(stored)),
            (
                "empty slots have no fingerprint or value",
                all(
                    s.fingerprints[i] is None and s.values[i] is None
                    for i in range(s.capacity)
                    if s.keys[i] is None
                ),
            ),
        ]
    )


def get_failures(c: OpCase) -> list[str]:
    """Contract of ``get``: verification, statistics, recency (LRU only), nothing else."""
    b, a, r = c.before, c.after, c.result
    fp = fingerprint_arg(c.arg)
    slot = b.slot_of(c.key)
    verified = slot is not None and (fp is None or b.fingerprints[slot] == fp)
    collided = slot is not None and not verified
    if c.error is not None or not isinstance(r, Lookup):
        return ["get returns a Lookup"]
    recency_ok = (
        a.order == (without(b.order, c.key) + (c.key,) if verified else b.order)
        if b.policy is Policy.LRU
        else a.policy_state == b.policy_state
    )
    return _failed(
        [
            ("hit iff stored and verified", r.hit == verified),
            (
                "collision iff stored but not verified",
                (r.status is LookupStatus.COLLISION) == collided,
            ),
            (
                "a hit returns the stored slot and value",
                slot is None or not verified or (r.slot == slot and r.value == b.values[slot]),
            ),
            ("a miss returns nothing", verified or (r.slot is None and r.value is None)),
            (
                "one query, counted as a hit or a miss (+ collision)",
                expect_deltas(
                    b,
                    a,
                    queries=1,
                    hits=int(verified),
                    misses=int(not verified),
                    collisions=int(collided),
                ),
            ),
            ("entries unchanged", same_entries(b, a)),
            ("a hit is a use (LRU); nothing else moves", recency_ok),
        ]
    )


def peek_failures(c: OpCase) -> list[str]:
    """Contract of ``peek``: the verified value or None; no statistics, no recency."""
    b = c.before
    fp = fingerprint_arg(c.arg)
    slot = b.slot_of(c.key)
    verified = slot is not None and (fp is None or b.fingerprints[slot] == fp)
    expected = b.values[slot] if slot is not None and verified else None
    return _failed(
        [
            ("no error", c.error is None),
            ("returns the verified value or None", c.result == expected),
            ("changes nothing", c.before == c.after),
        ]
    )


def expected_put_slot(b: PoolSnap, key: int) -> int:
    """Where ``put(key)`` must write, by the policy rules of the module docstring."""
    stored = b.slot_of(key)
    if stored is not None:
        return stored
    if b.policy is Policy.FIFO:
        return b.next
    empty = b.lowest_empty()
    if empty is not None:
        return empty
    victim = b.slot_of(b.order[0])
    assert victim is not None
    return victim


def put_failures(c: OpCase) -> list[str]:
    """Contract of ``put``: placement, eviction, overwrite, statistics, policy bookkeeping."""
    b, a, r = c.before, c.after, c.result
    if c.error is not None or not isinstance(r, PutResult):
        return ["put returns a PutResult"]
    inserted = b.slot_of(c.key) is None
    slot = expected_put_slot(b, c.key)
    evicted = b.keys[slot] if inserted else None
    prio = priority_arg(b.policy, c.arg)
    clauses: Clauses = [
        ("inserted iff the key was not stored", r.inserted == inserted),
        ("writes the slot the policy chooses", r.slot == slot),
        ("evicts the key that slot held (inserts only)", r.evicted == evicted),
        ("the key is stored at the returned slot", a.keys[r.slot] == c.key),
        ("the value is written", a.values[r.slot] == c.value),
        ("the fingerprint is written", a.fingerprints[r.slot] == fingerprint_arg(c.arg)),
        ("the evicted key is gone", r.evicted is None or r.evicted not in a.keys),
        ("the victim is first in eviction order", r.evicted is None or r.evicted == b.order[0]),
        ("no other slot changes", others_unchanged(b, a, r.slot)),
        (
            "size",
            len(a) == len(b) + int(inserted) - int(r.evicted is not None)
            and len(a) <= a.capacity,
        ),
        (
            "counters",
            expect_deltas(
                b,
                a,
                inserts=int(inserted),
                updates=int(not inserted),
                evictions=int(r.evicted is not None),
            ),
        ),
    ]
    if b.policy is Policy.FIFO:
        advanced = (b.next + 1) % b.capacity if inserted else b.next
        clauses.append(("FIFO pointer advances by one iff inserted", a.next == advanced))
    elif b.policy is Policy.LRU:
        clauses += [
            ("LRU: full iff an insert evicts", (r.evicted is not None) == (inserted and len(b) == b.capacity)),
            ("LRU: a put is a use", a.order[-1:] == (c.key,)),
            ("LRU: others keep their order", without(a.order, c.key) == without(b.order, c.key, evicted)),
        ]
    else:
        expected_prio = prio if prio is not None else (0.0 if inserted else b.priority_of(c.key))
        clauses += [
            ("PRIORITY: full iff an insert evicts", (r.evicted is not None) == (inserted and len(b) == b.capacity)),
            ("PRIORITY: priority set by put (default 0.0, update keeps)", a.priority_of(c.key) == expected_prio),
            (
                "PRIORITY: an update keeps the insertion time; an insert is the newest",
                a.inserted_at(r.slot) == b.inserted_at(r.slot)
                if not inserted
                else all(
                    a.inserted_at(s) < a.inserted_at(r.slot)
                    for s in range(a.capacity)
                    if s != r.slot and a.keys[s] is not None
                ),
            ),
            (
                "PRIORITY: other keys keep their priorities",
                all(a.priority_of(k) == b.priority_of(k) for k in without(a.order, c.key)),
            ),
        ]
    return _failed(clauses)


def evict_failures(c: OpCase) -> list[str]:
    """Contract of ``evict``: removes a stored key, leaving a hole; else KeyNotFoundError."""
    b, a = c.before, c.after
    slot = b.slot_of(c.key)
    if slot is None:
        return _failed(unchanged_after_error(c, "KeyNotFoundError"))
    clauses: Clauses = [
        ("no error", c.error is None),
        ("the key is gone", c.key not in a.keys),
        (
            "its slot is empty",
            a.keys[slot] is None and a.fingerprints[slot] is None and a.values[slot] is None,
        ),
        ("no other slot changes", others_unchanged(b, a, slot)),
        ("counted as a removal", expect_deltas(b, a, removals=1)),
        ("the others keep their eviction order", a.order == without(b.order, c.key)),
    ]
    if b.policy is Policy.FIFO:
        clauses.append(("FIFO pointer does not move (the hole waits)", a.next == b.next))
    return _failed(clauses)


def clear_failures(c: OpCase) -> list[str]:
    """Contract of ``clear``: every slot empty, policy reset, statistics kept."""
    a = c.after
    fresh = snapshot(make_pool(c.before.policy, c.before.capacity))
    return _failed(
        [
            ("no error", c.error is None),
            ("every slot empty", a.keys == fresh.keys and a.values == fresh.values),
            ("no fingerprints", a.fingerprints == fresh.fingerprints),
            ("policy reset (FIFO pointer 0, clocks 0)", a.policy_state == fresh.policy_state),
            ("statistics kept", a.stats == c.before.stats),
        ]
    )


def set_priority_failures(c: OpCase) -> list[str]:
    """Contract of ``set_priority``: PRIORITY pools change one priority; others refuse."""
    b, a = c.before, c.after
    if b.policy is not Policy.PRIORITY:
        return _failed(unchanged_after_error(c, "UnsupportedOperationError"))
    slot = b.slot_of(c.key)
    if slot is None:
        return _failed(unchanged_after_error(c, "KeyNotFoundError"))
    return _failed(
        [
            ("no error", c.error is None),
            ("the priority is set", a.priority_of(c.key) == float(c.arg)),
            ("entries unchanged", same_entries(b, a)),
            ("statistics unchanged", a.stats == b.stats),
            ("insertion times unchanged", a.policy_state[1:] == b.policy_state[1:]),
            (
                "other priorities unchanged",
                all(a.priority_of(k) == b.priority_of(k) for k in without(b.order, c.key)),
            ),
        ]
    )


def slot_of_failures(c: OpCase) -> list[str]:
    """Contract of ``slot_of``: the slot holding the key, else KeyNotFoundError."""
    slot = c.before.slot_of(c.key)
    if slot is None:
        return _failed(unchanged_after_error(c, "KeyNotFoundError"))
    return _failed(
        [
            ("returns the key's slot", c.error is None and c.result == slot),
            ("changes nothing", c.before == c.after),
        ]
    )


def key_at_failures(c: OpCase) -> list[str]:
    """Contract of ``key_at``: the key in the slot (None when empty), else SlotRangeError."""
    b = c.before
    if not 0 <= c.arg < b.capacity:
        return _failed(unchanged_after_error(c, "SlotRangeError"))
    held = b.keys[c.arg]
    return _failed(
        [
            ("returns the slot's key", c.error is None and c.result == held),
            ("bijection: slot_of(key_at(s)) == s", held is None or b.slot_of(held) == c.arg),
            ("changes nothing", c.before == c.after),
        ]
    )


OP_FAILURES: dict[int, Callable[[OpCase], list[str]]] = {
    GET: get_failures,
    PEEK: peek_failures,
    PUT: put_failures,
    EVICT: evict_failures,
    CLEAR: clear_failures,
    SET_PRIORITY: set_priority_failures,
    SLOT_OF: slot_of_failures,
    KEY_AT: key_at_failures,
}


def op_failures(c: OpCase) -> list[str]:
    """The violated clauses of ``c``'s operation contract plus the state clauses after it."""
    return [f"{OP_NAMES[c.op]}: {n}" for n in OP_FAILURES[c.op](c)] + state_failures(c.after)


# --------------------------------------------------------------------------- the naive model


@dataclass
class ModelSlot:
    key: int
    fingerprint: int | None
    value: int


@dataclass
class Model:
    """A naive pool: a list of slots plus per-policy bookkeeping kept in plain lists/dicts."""

    policy: Policy
    slots: list[ModelSlot | None]
    pointer: int  # FIFO
    recency: list[int]  # LRU: stored keys, least recently used first
    priorities: dict[int, float]  # PRIORITY
    insertion: dict[int, int]  # PRIORITY: key -> insertion counter
    counter: int

    @staticmethod
    def of(s: PoolSnap) -> Model:
        """The model of the state a snapshot shows."""
        slots: list[ModelSlot | None] = []
        for key, fp, value in zip(s.keys, s.fingerprints, s.values):
            assert isinstance(value, (int, type(None)))
            slots.append(None if key is None or value is None else ModelSlot(key, fp, value))
        model = Model(s.policy, slots, 0, [], {}, {}, 0)
        if s.policy is Policy.FIFO:
            model.pointer = s.next
        elif s.policy is Policy.LRU:
            last_use = s.policy_state[0]
            assert isinstance(last_use, tuple)
            occupied = [(last_use[i], k) for i, k in enumerate(s.keys) if k is not None]
            model.recency = [k for _, k in sorted(occupied)]
        else:
            for i, k in enumerate(s.keys):
                if k is not None:
                    model.priorities[k] = s.priority_of(k)
                    model.insertion[k] = s.inserted_at(i)
            model.counter = max(model.insertion.values(), default=-1) + 1
        return model

    def find(self, key: int) -> int | None:
        for i, slot in enumerate(self.slots):
            if slot is not None and slot.key == key:
                return i
        return None

    def order(self) -> tuple[int, ...]:
        """The keys in the order successive new keys would evict them."""
        if self.policy is Policy.FIFO:
            n = len(self.slots)
            ring = [self.slots[(self.pointer + i) % n] for i in range(n)]
            return tuple(s.key for s in ring if s is not None)
        if self.policy is Policy.LRU:
            return tuple(self.recency)
        keys = [s.key for s in self.slots if s is not None]
        return tuple(sorted(keys, key=lambda k: (self.priorities[k], self.insertion[k])))

    def _forget(self, key: int) -> None:
        if key in self.recency:
            self.recency.remove(key)
        self.priorities.pop(key, None)
        self.insertion.pop(key, None)

    def _use(self, key: int) -> None:
        if self.policy is Policy.LRU:
            if key in self.recency:
                self.recency.remove(key)
            self.recency.append(key)

    def step(self, op: int, key: int, arg: int, value: int) -> object:
        """Apply one encoded operation; returns the observation ``observe`` gives the spec."""
        where = self.find(key)
        fp = fingerprint_arg(arg)
        if op in (GET, PEEK):
            slot = None if where is None else self.slots[where]
            ok = slot is not None and (fp is None or slot.fingerprint == fp)
            if op == GET and ok:
                self._use(key)
            return (op, slot.value if slot is not None and ok else None)
        if op == PUT:
            prio = priority_arg(self.policy, arg)
            evicted: int | None = None
            if where is None:
                inserted = True
                if self.policy is Policy.FIFO:
                    where = self.pointer
                    self.pointer = (self.pointer + 1) % len(self.slots)
                elif None in self.slots:
                    where = self.slots.index(None)
                else:
                    victim = self.order()[0]
                    where = self.find(victim)
                    assert where is not None
                old = self.slots[where]
                if old is not None:
                    evicted = old.key
                    self._forget(old.key)
                self.priorities[key] = 0.0 if prio is None else prio
                self.insertion[key] = self.counter
                self.counter += 1
            else:
                inserted = False
                if prio is not None:
                    self.priorities[key] = prio
            self.slots[where] = ModelSlot(key, fp, value)
            self._use(key)
            return (op, where, evicted, inserted)
        if op == EVICT:
            if where is None:
                return (op, "KeyNotFoundError")
            self.slots[where] = None
            self._forget(key)
            return (op, None)
        if op == CLEAR:
            self.slots = [None] * len(self.slots)
            self.pointer, self.recency, self.priorities, self.insertion = 0, [], {}, {}
            return (op, None)
        if op == SET_PRIORITY:
            if self.policy is not Policy.PRIORITY:
                return (op, "UnsupportedOperationError")
            if where is None:
                return (op, "KeyNotFoundError")
            self.priorities[key] = float(arg)
            return (op, None)
        if op == SLOT_OF:
            return (op, "KeyNotFoundError" if where is None else where)
        if op == KEY_AT:
            if not 0 <= arg < len(self.slots):
                return (op, "SlotRangeError")
            held = self.slots[arg]
            return (op, None if held is None else held.key)
        raise ValueError(f"unknown opcode {op}")

    def keys(self) -> tuple[int | None, ...]:
        return tuple(None if s is None else s.key for s in self.slots)

    def values(self) -> tuple[int | None, ...]:
        return tuple(None if s is None else s.value for s in self.slots)


def observe(c: OpCase) -> object:
    """What ``Model.step`` returns for the same operation, read off the spec's record."""
    r = c.result
    if c.op in (GET, PEEK):
        return (c.op, r.value if isinstance(r, Lookup) else r)
    if c.op == PUT:
        assert isinstance(r, PutResult)
        return (c.op, r.slot, r.evicted, r.inserted)
    if c.op in (SLOT_OF, KEY_AT):
        return (c.op, c.error if c.error is not None else r)
    return (c.op, c.error)


@dataclass(frozen=True)
class Run:
    """A sequence of operations applied to one pool."""

    capacity: int
    initial: PoolSnap
    steps: tuple[OpCase, ...]
    final: PoolSnap


def run_ops(pool: SlotPool[int], ops: Sequence[Op]) -> Run:
    initial = snapshot(pool)
    steps = tuple(
        apply_op(pool, small(code), small(key), small(arg), WRITTEN_VALUE + i)
        for i, (code, key, arg) in enumerate(ops)
    )
    return Run(pool.capacity, initial, steps, snapshot(pool))


def model_failures(run: Run) -> list[str]:
    """Steps where the spec disagrees with ``Model`` (observation, keys, values or order)."""
    model = Model.of(run.initial)
    failures: list[str] = []
    for i, c in enumerate(run.steps):
        seen = model.step(c.op, c.key, c.arg, c.value)
        if seen != observe(c):
            failures.append(f"step {i} {OP_NAMES[c.op]}: spec {observe(c)} != model {seen}")
        if model.keys() != c.after.keys or model.values() != c.after.values:
            failures.append(f"step {i} {OP_NAMES[c.op]}: stored keys/values differ")
        if model.order() != c.after.order:
            failures.append(f"step {i} {OP_NAMES[c.op]}: eviction order {c.after.order}")
    return failures


def latest_write_failures(run: Run) -> list[str]:
    """Oracle: every hit returns exactly the most recent value written under its key."""
    latest: dict[int, object] = {
        k: v for k, v in zip(run.initial.keys, run.initial.values) if k is not None
    }
    failures: list[str] = []
    for i, c in enumerate(run.steps):
        if c.op == GET and isinstance(c.result, Lookup) and c.result.hit:
            if c.result.value != latest.get(c.key):
                failures.append(f"step {i}: hit returned {c.result.value}")
        if c.op == PUT:
            latest[c.key] = c.value
    return failures


# --------------------------------------------------------------------------- pool drivers
# Shared bounds: policy in 0..2, capacity 1..3, one SlotSpec per slot, pointer in the ring.


def pool_get_driver(
    policy: int, capacity: int, slots: list[SlotSpec], pointer: int, key: int, fp: int
) -> OpCase:
    """``get`` on an arbitrary state.

    pre: 0 <= policy <= 2
    pre: 1 <= capacity <= 3
    pre: len(slots) == capacity and all(valid_slot(s) for s in slots)
    pre: 0 <= pointer < capacity
    pre: 0 <= key <= MAX_KEY and -1 <= fp <= 1
    post: isinstance(__return__.result, Lookup)
    post: __return__.after.stats.hits + __return__.after.stats.misses == __return__.after.stats.queries
    post: __return__.after.stats.queries == __return__.before.stats.queries + 1
    post: get_failures(__return__) == []
    """
    return apply_op(restore(policy, capacity, slots, pointer), GET, key, fp, 0)


def pool_peek_driver(
    policy: int, capacity: int, slots: list[SlotSpec], pointer: int, key: int, fp: int
) -> OpCase:
    """``peek`` on an arbitrary state: counts nothing, changes nothing.

    pre: 0 <= policy <= 2
    pre: 1 <= capacity <= 3
    pre: len(slots) == capacity and all(valid_slot(s) for s in slots)
    pre: 0 <= pointer < capacity
    pre: 0 <= key <= MAX_KEY and -1 <= fp <= 1
    post: __return__.after == __return__.before
    post: peek_failures(__return__) == []
    """
    return apply_op(restore(policy, capacity, slots, pointer), PEEK, key, fp, 0)


def pool_put_driver(
    policy: int, capacity: int, slots: list[SlotSpec], pointer: int, key: int, arg: int
) -> OpCase:
    """``put`` on an arbitrary state (``arg``: fingerprint, and priority on PRIORITY pools).

    pre: 0 <= policy <= 2
    pre: 1 <= capacity <= 3
    pre: len(slots) == capacity and all(valid_slot(s) for s in slots)
    pre: 0 <= pointer < capacity
    pre: 0 <= key <= MAX_KEY and -1 <= arg <= 2
    post: __return__.after.keys[__return__.result.slot] == key
    post: __return__.result.evicted is None or __return__.result.evicted not in __return__.after.keys
    post: policy != FIFO_CODE or __return__.after.next == ((pointer + 1) % capacity if __return__.result.inserted else pointer)
    post: len(__return__.after) <= capacity
    post: put_failures(__return__) == []
    """
    return apply_op(restore(policy, capacity, slots, pointer), PUT, key, arg, WRITTEN_VALUE)


def pool_evict_driver(
    policy: int, capacity: int, slots: list[SlotSpec], pointer: int, key: int
) -> OpCase:
    """``evict`` of a stored or an absent key on an arbitrary state.

    pre: 0 <= policy <= 2
    pre: 1 <= capacity <= 3
    pre: len(slots) == capacity and all(valid_slot(s) for s in slots)
    pre: 0 <= pointer < capacity
    pre: 0 <= key <= MAX_KEY
    post: key not in __return__.after.keys
    post: __return__.error is None or __return__.after == __return__.before
    post: evict_failures(__return__) == []
    """
    return apply_op(restore(policy, capacity, slots, pointer), EVICT, key, 0, 0)


def pool_clear_driver(policy: int, capacity: int, slots: list[SlotSpec], pointer: int) -> OpCase:
    """``clear`` on an arbitrary state.

    pre: 0 <= policy <= 2
    pre: 1 <= capacity <= 3
    pre: len(slots) == capacity and all(valid_slot(s) for s in slots)
    pre: 0 <= pointer < capacity
    post: len(__return__.after) == 0
    post: __return__.after.stats == __return__.before.stats
    post: clear_failures(__return__) == []
    """
    return apply_op(restore(policy, capacity, slots, pointer), CLEAR, 0, 0, 0)


def pool_set_priority_driver(
    policy: int, capacity: int, slots: list[SlotSpec], key: int, priority: int
) -> OpCase:
    """``set_priority`` on an arbitrary state (FIFO/LRU refuse it).

    pre: 0 <= policy <= 2
    pre: 1 <= capacity <= 3
    pre: len(slots) == capacity and all(valid_slot(s) for s in slots)
    pre: 0 <= key <= MAX_KEY and 0 <= priority <= 3
    post: __return__.error is None or __return__.after == __return__.before
    post: set_priority_failures(__return__) == []
    """
    return apply_op(restore(policy, capacity, slots), SET_PRIORITY, key, priority, 0)


def pool_index_driver(
    policy: int, capacity: int, slots: list[SlotSpec], key: int, slot: int
) -> tuple[OpCase, OpCase]:
    """``slot_of`` and ``key_at`` on an arbitrary state: the key <-> slot bijection.

    pre: 0 <= policy <= 2
    pre: 1 <= capacity <= 3
    pre: len(slots) == capacity and all(valid_slot(s) for s in slots)
    pre: 0 <= key <= MAX_KEY and -1 <= slot <= 3
    post: __return__[0].error is not None or __return__[0].before.keys[__return__[0].result] == key
    post: slot_of_failures(__return__[0]) == []
    post: key_at_failures(__return__[1]) == []
    """
    pool = restore(policy, capacity, slots)
    return apply_op(pool, SLOT_OF, key, 0, 0), apply_op(pool, KEY_AT, 0, slot, 0)


def pool_eviction_order_driver(
    policy: int, capacity: int, slots: list[SlotSpec], pointer: int
) -> tuple[tuple[int, ...], list[int | None]]:
    """``eviction_order`` predicts the victims of ``capacity`` puts of new keys, in order.

    (On PRIORITY pools the new keys get a priority above every stored one.)

    pre: 0 <= policy <= 2
    pre: 1 <= capacity <= 3
    pre: len(slots) == capacity and all(valid_slot(s) for s in slots)
    pre: 0 <= pointer < capacity
    post: [k for k in __return__[1] if k is not None] == list(__return__[0])
    post: sorted(__return__[0]) == sorted({k for k, _, _, _ in slots if k >= 0})
    """
    pool = restore(policy, capacity, slots, pointer)
    order = tuple(pool.eviction_order())
    high = 10.0 if pool.policy is Policy.PRIORITY else None
    evicted = [pool.put(ABSENT_KEY + i, 0, None, high).evicted for i in range(capacity)]
    return order, evicted


def fifo_ops_driver(capacity: int, slots: list[SlotSpec], pointer: int, ops: list[Op]) -> Run:
    """A FIFO ring in an arbitrary state (holes included), then up to 6 operations.

    pre: 1 <= capacity <= 3
    pre: len(slots) == capacity and all(valid_slot(s) for s in slots)
    pre: 0 <= pointer < capacity
    pre: len(ops) <= 6 and all(valid_op(op) for op in ops)
    post: all(op_failures(s) == [] for s in __return__.steps)
    post: model_failures(__return__) == []
    post: latest_write_failures(__return__) == []
    post: len(__return__.final) <= capacity
    """
    return run_ops(restore(FIFO_CODE, capacity, slots, pointer), ops)


def lru_ops_driver(capacity: int, slots: list[SlotSpec], ops: list[Op]) -> Run:
    """An LRU pool in an arbitrary state, then up to 6 operations.

    pre: 1 <= capacity <= 3
    pre: len(slots) == capacity and all(valid_slot(s) for s in slots)
    pre: len(ops) <= 6 and all(valid_op(op) for op in ops)
    post: all(op_failures(s) == [] for s in __return__.steps)
    post: model_failures(__return__) == []
    post: latest_write_failures(__return__) == []
    post: len(__return__.final) <= capacity
    """
    return run_ops(restore(LRU_CODE, capacity, slots), ops)


def priority_ops_driver(capacity: int, slots: list[SlotSpec], ops: list[Op]) -> Run:
    """A PRIORITY pool in an arbitrary state, then up to 6 operations.

    pre: 1 <= capacity <= 3
    pre: len(slots) == capacity and all(valid_slot(s) for s in slots)
    pre: len(ops) <= 6 and all(valid_op(op) for op in ops)
    post: all(op_failures(s) == [] for s in __return__.steps)
    post: model_failures(__return__) == []
    post: latest_write_failures(__return__) == []
    post: len(__return__.final) <= capacity
    """
    return run_ops(restore(PRIORITY_CODE, capacity, slots), ops)


def put_many_fold_driver(
    policy: int,
    capacity: int,
    slots: list[SlotSpec],
    pointer: int,
    keys: list[int],
    args: list[int],
) -> tuple[list[PutResult], PoolSnap, list[PutResult], PoolSnap]:
    """``put_many`` (duplicates allowed) equals the fold of ``put`` on an identical copy.

    pre: 0 <= policy <= 2
    pre: 1 <= capacity <= 3
    pre: len(slots) == capacity and all(valid_slot(s) for s in slots)
    pre: 0 <= pointer < capacity
    pre: len(keys) <= 4 and len(args) == len(keys)
    pre: all(0 <= k <= MAX_KEY for k in keys) and all(-1 <= a <= 2 for a in args)
    post: __return__[0] == __return__[2]
    post: __return__[1] == __return__[3]
    """
    pool = restore(policy, capacity, slots, pointer)
    copy = restore(policy, capacity, slots, pointer)
    ks = [small(k) for k in keys]
    values = [WRITTEN_VALUE + i for i in range(len(ks))]
    fps = [fingerprint_arg(a) for a in args]
    prios = [priority_arg(pool.policy, a) for a in args]
    batch = pool.put_many(ks, values, fps, prios)
    singles = [copy.put(k, v, f, p) for k, v, f, p in zip(ks, values, fps, prios)]
    return batch, snapshot(pool), singles, snapshot(copy)


def get_many_fold_driver(
    policy: int,
    capacity: int,
    slots: list[SlotSpec],
    pointer: int,
    keys: list[int],
    fps: list[int],
) -> tuple[list[object], PoolSnap, list[object], PoolSnap]:
    """``get_many`` and ``peek_many`` equal the folds of ``get`` / ``peek`` on a copy.

    pre: 0 <= policy <= 2
    pre: 1 <= capacity <= 3
    pre: len(slots) == capacity and all(valid_slot(s) for s in slots)
    pre: 0 <= pointer < capacity
    pre: len(keys) <= 4 and len(fps) == len(keys)
    pre: all(0 <= k <= MAX_KEY for k in keys) and all(-1 <= f <= 1 for f in fps)
    post: __return__[0] == __return__[2]
    post: __return__[1] == __return__[3]
    """
    pool = restore(policy, capacity, slots, pointer)
    copy = restore(policy, capacity, slots, pointer)
    ks = [small(k) for k in keys]
    fs = [fingerprint_arg(f) for f in fps]
    batch: list[object] = [*pool.peek_many(ks, fs), *pool.get_many(ks, fs)]
    singles: list[object] = [copy.peek(k, f) for k, f in zip(ks, fs)]
    singles += [copy.get(k, f) for k, f in zip(ks, fs)]
    return batch, snapshot(pool), singles, snapshot(copy)


def bad_pool_call(pool: SlotPool[int], case: int) -> tuple[str, Callable[[], object]]:
    """Bad call number ``case`` on ``pool``: the error type it must raise, and the call."""
    prio = pool.policy is Policy.PRIORITY
    unsupported = "UnsupportedOperationError"
    loose: Any = pool  # for calls with ill-typed arguments, on purpose
    cases: list[tuple[str, Callable[[], object]]] = [
        ("KeyRangeError", lambda: pool.get(INT64_MAX + 1)),
        ("KeyRangeError", lambda: pool.peek(INT64_MIN - 1)),
        ("KeyRangeError", lambda: pool.get(0, fingerprint=1 << 64)),
        ("KeyRangeError", lambda: pool.put(True, 1)),
        ("KeyRangeError", lambda: loose.put(0, 1, 1.5)),
        ("KeyRangeError", lambda: loose.peek_many([0, "1"])),
        ("KeyRangeError", lambda: pool.put_many([0, 1, 1 << 63], [1, 2, 3])),
        ("KeyRangeError", lambda: pool.get_many([0, 1, 1 << 63])),
        ("KeyRangeError", lambda: pool.evict(1 << 63)),
        ("KeyNotFoundError", lambda: pool.evict(ABSENT_KEY)),
        ("KeyNotFoundError", lambda: pool.slot_of(ABSENT_KEY)),
        ("SlotRangeError", lambda: pool.key_at(pool.capacity)),
        ("SlotRangeError", lambda: pool.key_at(-1)),
        ("SlotRangeError", lambda: loose.key_at(True)),
        ("BatchError", lambda: pool.put_many([0, 1], [1])),
        ("BatchError", lambda: pool.put_many([0, 1], [1, 2], fingerprints=[None])),
        ("BatchError", lambda: pool.put_many([0, 1], [1, 2], priorities=[None])),
        ("BatchError", lambda: pool.get_many([0], fingerprints=[1, 2])),
        ("BatchError", lambda: pool.peek_many([0, 1], fingerprints=[1])),
        (
            "InputError" if prio else unsupported,
            lambda: pool.put(0, 1, priority=math.nan if prio else 1.0),
        ),
        (
            "InputError" if prio else unsupported,
            lambda: pool.put_many([0, 1], [1, 2], priorities=[None, math.inf if prio else 1.0]),
        ),
        ("KeyNotFoundError" if prio else unsupported, lambda: pool.set_priority(ABSENT_KEY, 1.0)),
        ("InputError" if prio else unsupported, lambda: pool.set_priority(0, math.inf)),
        ("InputError" if prio else unsupported, lambda: loose.set_priority(0, None)),
    ]
    return cases[case]


BAD_POOL_CASES = 24


def pool_bad_input_driver(
    policy: int, capacity: int, slots: list[SlotSpec], pointer: int, case: int
) -> tuple[str | None, str, PoolSnap, PoolSnap]:
    """Every bad input raises its documented error type and leaves the pool unchanged.

    Returns ``(raised, expected, before, after)``.

    pre: 0 <= policy <= 2
    pre: 1 <= capacity <= 3
    pre: len(slots) == capacity and all(valid_slot(s) for s in slots)
    pre: 0 <= pointer < capacity
    pre: 0 <= case < BAD_POOL_CASES
    post: __return__[0] == __return__[1]
    post: __return__[2] == __return__[3]
    """
    pool = restore(policy, capacity, slots, pointer)
    before = snapshot(pool)
    expected, call = bad_pool_call(pool, small(case))
    raised: str | None = None
    try:
        call()
    except ZeroKVError as exc:
        raised = type(exc).__name__
    return raised, expected, before, snapshot(pool)


# --------------------------------------------------------------------------- entry drivers


def token(row: int, layer: int, position: int, sign: float = 1.0) -> float:
    """A nonzero token value that names its row, layer and position (V tokens: negative)."""
    return sign * float(1 + 100 * row + 10 * layer + position)


def make_entry(row: int, size: int, layers: int) -> Entry:
    """An entry whose tokens name ``(row, layer, position)``."""
    k = tuple(tuple(token(row, layer, j) for j in range(size)) for layer in range(layers))
    v = tuple(tuple(token(row, layer, j, -1.0) for j in range(size)) for layer in range(layers))
    return Entry(k, v)


def make_correction(layers: int, context_length: int) -> Correction:
    """A correction table with distinct, exactly representable values."""
    n = context_length - 3
    k = tuple(tuple(0.5 + layer + 0.25 * j for j in range(n)) for layer in range(layers))
    v = tuple(tuple(-0.5 - layer - 0.25 * j for j in range(n)) for layer in range(layers))
    return Correction(k, v)


def padding_is_zero(batch: Batch) -> bool:
    """Every column left of a row's real tokens is a zero token, in every layer."""
    return all(
        all(x == 0.0 for x in layer[b][: batch.width - n])
        for layers in (batch.k, batch.v)
        for layer in layers
        for b, n in enumerate(batch.lengths)
    )


def assemble_split_driver(
    sizes: list[int], layers: int, extra: int
) -> tuple[tuple[Entry, ...], Batch, tuple[Entry, ...]]:
    """``split(assemble(entries, width)) == entries``; left padding is zero and masked.

    ``extra < 0`` assembles at the natural width, else at ``max(sizes) + extra``.

    pre: 1 <= len(sizes) <= 3 and all(0 <= s <= 4 for s in sizes)
    pre: 1 <= layers <= 2
    pre: -1 <= extra <= 2
    post: __return__[1].width == max(sizes) + max(extra, 0)
    post: __return__[1].lengths == tuple(sizes)
    post: __return__[2] == __return__[0]
    post: all(sum(row) == n for row, n in zip(__return__[1].mask(), sizes))
    post: padding_is_zero(__return__[1])
    """
    entries = tuple(make_entry(b, small(s), small(layers)) for b, s in enumerate(sizes))
    width = None if extra < 0 else max(e.size for e in entries) + small(extra)
    batch = assemble(entries, width)
    return entries, batch, split(batch)


def expected_append_width(width: int, t: int, capacity: int) -> tuple[int, int]:
    """``(dropped columns, width after)`` by the overflow rule, computed independently."""
    excess = width + t - capacity
    drop = 0 if excess <= 0 else (excess if excess % 2 == 0 else excess + 1)
    return drop, (t if drop >= width else width - drop + t)


def append_driver(
    sizes: list[int], extra: int, t: int, capacity: int
) -> tuple[int, int, Batch, Batch, tuple[Entry, ...], tuple[tuple[float, ...], ...]]:
    """``append``: overflow rule (drop an even number of oldest columns), then per-row split.

    Returns ``(t, capacity, batch, result, split(result), expected layer-0 K rows)``.

    pre: 1 <= len(sizes) <= 3 and all(0 <= s <= 5 for s in sizes)
    pre: 0 <= extra <= 1
    pre: 1 <= t <= 3 and t <= capacity <= 6
    post: __return__[3].width == expected_append_width(__return__[2].width, t, capacity)[1]
    post: __return__[3].width <= capacity
    post: expected_append_width(__return__[2].width, t, capacity)[0] % 2 == 0
    post: all(len(r.k[0]) == n for r, n in zip(__return__[4], __return__[3].lengths))
    post: tuple(r.k[0] for r in __return__[4]) == __return__[5]
    post: padding_is_zero(__return__[3])
    """
    layers = 2
    entries = tuple(make_entry(b, small(s), layers) for b, s in enumerate(sizes))
    batch = assemble(entries, max(e.size for e in entries) + small(extra))
    t, capacity = small(t), small(capacity)
    rows = range(len(entries))
    new_k = tuple(
        tuple(tuple(token(b, layer, 50 + j) for j in range(t)) for b in rows)
        for layer in range(layers)
    )
    new_v = tuple(
        tuple(tuple(token(b, layer, 50 + j, -1.0) for j in range(t)) for b in rows)
        for layer in range(layers)
    )
    result = append(batch, new_k, new_v, capacity)
    drop, _ = expected_append_width(batch.width, t, capacity)
    kept = max(batch.width - drop, 0)
    expected = tuple(
        e.k[0][e.size - min(e.size, kept) :] + new_k[0][b] for b, e in enumerate(entries)
    )
    return t, capacity, batch, result, split(result), expected


def window_driver(size: int, context_length: int, layers: int) -> tuple[Entry, Correction, Entry]:
    """The window rule on one entry.

    pre: 4 <= context_length <= 8
    pre: 0 <= size <= context_length
    pre: 1 <= layers <= 2
    post: __return__[2].size == (context_length - 3 if size >= context_length - 1 else size)
    post: size >= context_length - 1 or __return__[2] == __return__[0]
    post: size < context_length - 1 or all(out[j] == old[j + 2] + corr[j] for out, old, corr in zip(__return__[2].k, __return__[0].k, __return__[1].k) for j in range(context_length - 3))
    post: size < context_length - 1 or all(out[j] == old[j + 2] + corr[j] for out, old, corr in zip(__return__[2].v, __return__[0].v, __return__[1].v) for j in range(context_length - 3))
    post: window(__return__[2], context_length, __return__[1]) == __return__[2]
    """
    cl = small(context_length)
    entry = make_entry(0, small(size), small(layers))
    correction = make_correction(entry.num_layers, cl)
    return entry, correction, window(entry, cl, correction)


def window_sizes_driver(context_length: int, sizes: list[int], steps: int) -> list[tuple[int, ...]]:
    """UniZero's store cycle (assemble, append 2 tokens, ``store_rows``) keeps sizes odd.

    Returns the row sizes before each step and after the last one.

    pre: 4 <= context_length <= 12 and context_length % 2 == 0
    pre: 1 <= len(sizes) <= 3
    pre: all(s % 2 == 1 and 1 <= s <= context_length - 3 for s in sizes)
    pre: 1 <= steps <= 4
    post: all(s % 2 == 1 and s <= context_length - 3 for row in __return__ for s in row)
    post: all(n == (s + 2 if s + 2 < context_length - 1 else context_length - 3) for old, new in zip(__return__, __return__[1:]) for s, n in zip(old, new))
    """
    cl = small(context_length)
    entries = tuple(make_entry(b, small(s), 1) for b, s in enumerate(sizes))
    correction = Correction.zero(1, cl)
    history = [tuple(e.size for e in entries)]
    for step in range(steps):
        batch = assemble(entries)
        new = tuple(tuple((token(b, 0, 60 + step), token(b, 0, 70 + step)) for b in range(len(entries))) for _ in range(1))
        batch = append(batch, new, new, cl)
        entries = store_rows(batch, cl, correction)
        history.append(tuple(e.size for e in entries))
    return history


def remove_registers_driver(
    sizes: list[int], extra: int, count: int
) -> tuple[tuple[Entry, ...], Batch, Batch, tuple[Entry, ...]]:
    """``remove_registers`` drops the ``count`` newest columns of every row.

    pre: 1 <= len(sizes) <= 3 and all(0 <= s <= 4 for s in sizes)
    pre: 0 <= extra <= 1
    pre: 0 <= count <= max(sizes) + extra
    post: __return__[2].width == __return__[1].width - count
    post: __return__[2].lengths == tuple(max(0, n - count) for n in sizes)
    post: all(out == row[: len(row) - count] for lo, li in zip(__return__[2].k, __return__[1].k) for out, row in zip(lo, li))
    post: all(r.k == tuple(x[: max(0, e.size - count)] for x in e.k) for r, e in zip(__return__[3], __return__[0]))
    post: padding_is_zero(__return__[2])
    """
    entries = tuple(make_entry(b, small(s), 1) for b, s in enumerate(sizes))
    batch = assemble(entries, max(e.size for e in entries) + small(extra))
    out = remove_registers(batch, small(count))
    return entries, batch, out, split(out)


# --------------------------------------------------------------------------- manager drivers

#: Manager opcodes (``apply_manager_op``); an operation is ``(opcode, env_id, key)``.
STORE_ROOT, STORE_RECURRENT, LOOKUP, LOOKUP_ROOT, LOOKUP_RECURRENT = range(5)
CLEAR_ENV, CLEAR_RECURRENT, CLEAR_ALL = range(5, 8)
MANAGER_OP_NAMES = (
    "store_root",
    "store_recurrent",
    "lookup",
    "lookup_root",
    "lookup_recurrent",
    "clear_env",
    "clear_recurrent",
    "clear_all",
)
MOp = tuple[int, int, int]
LOOKUPS = (LOOKUP, LOOKUP_ROOT, LOOKUP_RECURRENT)


def tagged_entry(env_id: int, key: int, step: int) -> Entry:
    """A 1-layer, 3-token entry naming who wrote it: K tokens ``(env_id, key, step)``."""
    return Entry(((float(env_id), float(key), float(step)),), ((float(step), 0.0, 0.0),))


def entry_env(entry: object) -> int:
    """The environment id a ``tagged_entry`` names."""
    assert isinstance(entry, Entry)
    return int(entry.k[0][0])


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
    """A manager of 1-layer entries, context length 4."""
    return CacheManager(
        ManagerConfig(
            env_num=env_num,
            num_layers=1,
            context_length=4,
            root_capacity=small(root_capacity),
            recurrent_capacity=small(recurrent_capacity),
            policy=POLICIES[policy],
            scope=(Scope.ENV, Scope.GLOBAL)[scope],
        )
    )


@dataclass(frozen=True)
class ManagerCase:
    """One manager operation and the states around it."""

    op: int
    env_id: int
    key: int
    step: int
    recurrent_key: int
    before: ManagerSnap
    after: ManagerSnap
    result: object
    error: str | None


def apply_manager_op(m: CacheManager, op: int, env_id: int, key: int, step: int) -> ManagerCase:
    """Apply one encoded manager operation (stores write ``tagged_entry(env, key, step)``)."""
    before = manager_snapshot(m)
    result: object = None
    error: str | None = None
    entry = tagged_entry(env_id, key, step)
    try:
        if op == STORE_ROOT:
            result = m.store_root(env_id, key, entry)
        elif op == STORE_RECURRENT:
            result = m.store_recurrent(env_id, key, entry)
        elif op == LOOKUP:
            result = m.lookup(env_id, key)
        elif op == LOOKUP_ROOT:
            result = m.lookup_root(env_id, key)
        elif op == LOOKUP_RECURRENT:
            result = m.lookup_recurrent(env_id, key)
        elif op == CLEAR_ENV:
            m.clear_env(env_id)
        elif op == CLEAR_RECURRENT:
            m.clear_recurrent()
        elif op == CLEAR_ALL:
            m.clear_all()
        else:
            raise ValueError(f"unknown manager opcode {op}")
    except ZeroKVError as exc:
        error = type(exc).__name__
    rkey = m.recurrent_key(env_id, key, None)[0]
    return ManagerCase(op, env_id, key, step, rkey, before, manager_snapshot(m), result, error)


def manager_step_failures(c: ManagerCase) -> list[str]:
    """Contract of one manager operation: tiers, counting, isolation, clears."""
    b, a, e = c.before, c.after, c.env_id
    others_same = all(a.roots[i] == b.roots[i] for i in range(len(b.roots)) if i != e)
    roots_same = a.roots == b.roots
    stats_same = a.stats == b.stats
    clauses: Clauses = [("no error", c.error is None)]
    if c.op in LOOKUPS:
        r = c.result
        if not isinstance(r, TierLookup):
            return ["a lookup returns a TierLookup"]
        root_slot = b.roots[e].slot_of(c.key) if c.op != LOOKUP_RECURRENT else None
        rec_slot = b.recurrent.slot_of(c.recurrent_key) if c.op != LOOKUP_ROOT else None
        tier = Tier.ROOT if root_slot is not None else Tier.MISS
        if tier is Tier.MISS and rec_slot is not None:
            tier = Tier.RECURRENT
        pool_b = b.roots[e] if tier is Tier.ROOT else b.recurrent
        slot = root_slot if tier is Tier.ROOT else rec_slot
        visits_root = c.op != LOOKUP_RECURRENT
        visits_recurrent = c.op == LOOKUP_RECURRENT or (c.op == LOOKUP and root_slot is None)
        clauses += [
            ("the tier that holds the key hits (root first)", r.tier is tier),
            (
                "a hit returns the stored entry",
                tier is Tier.MISS or (slot is not None and r.entry == pool_b.values[slot]),
            ),
            ("a miss returns nothing", tier is not Tier.MISS or r.entry is None),
            ("one manager query", a.stats.queries == b.stats.queries + 1),
            (
                "hits == root_hits + recurrent_hits",
                a.stats.root_hits - b.stats.root_hits == int(tier is Tier.ROOT)
                and a.stats.recurrent_hits - b.stats.recurrent_hits == int(tier is Tier.RECURRENT)
                and a.stats.hits - b.stats.hits == int(tier is not Tier.MISS),
            ),
            (
                "the root pool sees one query (lookups that visit it)",
                a.roots[e].stats.queries - b.roots[e].stats.queries == int(visits_root),
            ),
            (
                "the recurrent pool sees one query only after a root miss",
                a.recurrent.stats.queries - b.recurrent.stats.queries == int(visits_recurrent),
            ),
            ("other environments' roots untouched", others_same),
        ]
    elif c.op in (STORE_ROOT, STORE_RECURRENT):
        pool_a = a.roots[e] if c.op == STORE_ROOT else a.recurrent
        key = c.key if c.op == STORE_ROOT else c.recurrent_key
        slot = pool_a.slot_of(key)
        clauses += [
            (
                "the entry is stored under the (scoped) key",
                slot is not None and pool_a.values[slot] == tagged_entry(e, c.key, c.step),
            ),
            ("other environments' roots untouched", others_same),
            (
                "the other tier is untouched",
                a.recurrent == b.recurrent if c.op == STORE_ROOT else roots_same,
            ),
            ("manager statistics unchanged", stats_same),
        ]
    elif c.op == CLEAR_ENV:
        clauses += [
            ("the environment's roots are empty", len(a.roots[e]) == 0),
            ("its statistics are kept", a.roots[e].stats == b.roots[e].stats),
            ("other environments untouched", others_same and a.recurrent == b.recurrent),
            ("manager statistics unchanged", stats_same),
        ]
    elif c.op == CLEAR_RECURRENT:
        clauses += [
            ("the recurrent pool is empty", len(a.recurrent) == 0),
            ("its statistics are kept", a.recurrent.stats == b.recurrent.stats),
            ("roots untouched", roots_same and stats_same),
        ]
    else:
        clauses += [
            ("every pool is empty", all(len(p) == 0 for p in (*a.roots, a.recurrent))),
            (
                "statistics are kept",
                stats_same
                and all(p.stats == q.stats for p, q in zip(a.roots, b.roots))
                and a.recurrent.stats == b.recurrent.stats,
            ),
        ]
    return _failed(clauses)


@dataclass(frozen=True)
class ManagerRun:
    scope: Scope
    steps: tuple[ManagerCase, ...]
    final: ManagerSnap


def manager_oracle_failures(run: ManagerRun) -> list[str]:
    """Every hit returns the latest write under its tier and (scoped) key; ENV never leaks."""
    latest: dict[tuple[int, int], Entry] = {}  # (tier, key) -> entry; root keys carry env
    failures: list[str] = []
    for i, c in enumerate(run.steps):
        root_key = c.env_id * 1000 + c.key
        if c.op == STORE_ROOT:
            latest[(Tier.ROOT, root_key)] = tagged_entry(c.env_id, c.key, c.step)
        elif c.op == STORE_RECURRENT:
            latest[(Tier.RECURRENT, c.recurrent_key)] = tagged_entry(c.env_id, c.key, c.step)
        elif isinstance(c.result, TierLookup) and c.result.tier is not Tier.MISS:
            key = root_key if c.result.tier is Tier.ROOT else c.recurrent_key
            if c.result.entry != latest.get((c.result.tier, key)):
                failures.append(f"step {i}: hit is not the latest write")
            if run.scope is Scope.ENV and entry_env(c.result.entry) != c.env_id:
                failures.append(f"step {i}: env {c.env_id} got another environment's entry")
    return failures


def manager_ops_driver(
    policy: int, scope: int, root_capacity: int, recurrent_capacity: int, ops: list[MOp]
) -> ManagerRun:
    """Two environments; stores, hierarchical and single-tier lookups, clears.

    pre: 0 <= policy <= 2 and 0 <= scope <= 1
    pre: 1 <= root_capacity <= 2 and 1 <= recurrent_capacity <= 3
    pre: len(ops) <= 6
    pre: all(0 <= op <= 7 and 0 <= env <= 1 and 0 <= key <= 2 for op, env, key in ops)
    post: all(manager_step_failures(s) == [] for s in __return__.steps)
    post: manager_oracle_failures(__return__) == []
    post: __return__.final.stats.queries == sum(1 for op, _, _ in ops if op in LOOKUPS)
    post: __return__.final.stats.hits == __return__.final.stats.root_hits + __return__.final.stats.recurrent_hits
    post: __return__.final.stats.hits + __return__.final.stats.misses == __return__.final.stats.queries
    """
    m = make_manager(policy, scope, root_capacity, recurrent_capacity)
    steps = tuple(
        apply_manager_op(m, small(op), small(env), small(key), i)
        for i, (op, env, key) in enumerate(ops)
    )
    return ManagerRun(m.config.scope, steps, manager_snapshot(m))


def manager_isolation_driver(scope: int, key: int, other_key: int) -> tuple[TierLookup, ...]:
    """Envs 0 and 1 store the same key in both tiers; what does each env's lookup return?

    With ``Scope.ENV`` every environment gets its own entries; with ``Scope.GLOBAL`` the
    recurrent tier is shared and the last writer (env 1) wins.

    pre: 0 <= scope <= 1
    pre: 0 <= key <= 2 and 0 <= other_key <= 2
    post: entry_env(__return__[0].entry) == 0 and entry_env(__return__[1].entry) == 1
    post: __return__[0].tier is Tier.ROOT and __return__[1].tier is Tier.ROOT
    post: entry_env(__return__[2].entry) == (0 if scope == 0 else 1)
    post: entry_env(__return__[3].entry) == 1
    post: other_key == key or __return__[4].tier is Tier.MISS
    """
    m = make_manager(FIFO_CODE, scope, 2, 4)
    k, other = small(key), small(other_key)
    for env in (0, 1):
        m.store_root(env, k, tagged_entry(env, k, 0))
        m.store_recurrent(env, k, tagged_entry(env, k, 1))
    return (
        m.lookup(0, k),
        m.lookup(1, k),
        m.lookup_recurrent(0, k),
        m.lookup_recurrent(1, k),
        m.lookup_root(0, other) if other != k else m.lookup_root(0, k),
    )


@dataclass(frozen=True)
class SearchCase:
    op: int
    n: int
    before: ManagerSnap
    after: ManagerSnap
    error: str | None


#: Search-driver opcodes: ``(opcode, n)``.
S_STORE, S_STORE_TWO, S_BEGIN, S_END = range(4)


def search_step_failures(capacity: int, c: SearchCase) -> list[str]:
    """Contract of the search budget: refusals change nothing; accepted stores are counted."""
    b, a = c.before, c.after
    budget, used = b.search
    stores = {S_STORE: 1, S_STORE_TWO: 2}.get(c.op, 0)
    if c.op == S_BEGIN:
        refused = c.n > capacity
        done = a.search == (c.n, 0)
    elif c.op == S_END:
        refused, done = False, a.search == (None, 0)
    else:
        refused = budget is not None and used + stores > budget
        done = a.search == (budget, used + stores if budget is not None else 0)
    clauses: Clauses = [
        ("used <= budget", a.search[0] is None or 0 <= a.search[1] <= a.search[0]),
    ]
    if refused:
        clauses += [
            ("refused with SearchCapacityError", c.error == "SearchCapacityError"),
            ("a refusal changes nothing", a == b),
        ]
    else:
        clauses += [
            ("accepted", c.error is None),
            ("budget bookkeeping", done),
            ("roots untouched", a.roots == b.roots),
            (
                "accepted stores are stored",
                a.recurrent.stats.inserts + a.recurrent.stats.updates
                == b.recurrent.stats.inserts + b.recurrent.stats.updates + stores,
            ),
        ]
    return _failed(clauses)


def manager_search_driver(
    recurrent_capacity: int, nodes: int, ops: list[tuple[int, int]]
) -> list[SearchCase]:
    """``begin_search(nodes)`` then stores / declarations / ends against the budget.

    pre: 1 <= recurrent_capacity <= 3
    pre: 0 <= nodes <= 4
    pre: len(ops) <= 5 and all(0 <= op <= 3 and 0 <= n <= 4 for op, n in ops)
    post: all(search_step_failures(recurrent_capacity, s) == [] for s in __return__)
    """
    m = make_manager(FIFO_CODE, 0, 1, recurrent_capacity, env_num=1)
    steps: list[SearchCase] = []
    for code, n in [(S_BEGIN, nodes), *ops]:
        op, n = small(code), small(n)
        before = manager_snapshot(m)
        error: str | None = None
        try:
            if op == S_STORE:
                m.store_recurrent(0, n, tagged_entry(0, n, len(steps)))
            elif op == S_STORE_TWO:
                keys = [n, n + 1]
                m.store_recurrent_many([0, 0], keys, [tagged_entry(0, k, 0) for k in keys])
            elif op == S_BEGIN:
                m.begin_search(n)
            else:
                m.end_search()
        except ZeroKVError as exc:
            error = type(exc).__name__
        steps.append(SearchCase(op, n, before, manager_snapshot(m), error))
    return steps


def bad_manager_call(m: CacheManager, case: int) -> tuple[str, Callable[[], object]]:
    """Bad call number ``case`` on ``m`` (2 envs, context 4): expected error type, call."""
    prio = m.config.policy is Policy.PRIORITY
    entry = tagged_entry(0, 0, 9)
    two_layers = Entry(((1.0,), (2.0,)), ((1.0,), (2.0,)))
    too_long = Entry(((1.0,) * 5,), ((1.0,) * 5,))
    loose: Any = m
    batch = assemble([entry, entry])
    zero = Correction.zero(1, 4)
    cases: list[tuple[str, Callable[[], object]]] = [
        ("EnvIdError", lambda: m.lookup(2, 0)),
        ("EnvIdError", lambda: m.lookup(-1, 0)),
        ("EnvIdError", lambda: m.lookup_root(True, 0)),
        ("EnvIdError", lambda: m.store_recurrent(2, 0, entry)),
        ("EnvIdError", lambda: m.clear_env(2)),
        ("EnvIdError", lambda: m.store_root_many([0, 5], [0, 1], [entry, entry])),
        ("KeyRangeError", lambda: m.lookup(0, 1 << 63)),
        ("KeyRangeError", lambda: m.lookup_recurrent(0, 0, fingerprint=-(1 << 64))),
        ("KeyRangeError", lambda: m.store_recurrent_many([0, 0], [0, 1 << 63], [entry, entry])),
        ("EntryError", lambda: m.store_root(0, 0, two_layers)),
        ("EntryError", lambda: m.store_recurrent(0, 0, too_long)),
        ("EntryError", lambda: loose.store_root(0, 0, "not an entry")),
        ("BatchError", lambda: m.store_root_many([0], [0, 1], [entry, entry])),
        ("BatchError", lambda: m.store_recurrent_many([0, 0], [0, 1], [entry])),
        ("BatchError", lambda: m.lookup_many([0, 0], [0, 1], tiers="everything")),
        ("BatchError", lambda: m.lookup_many([0, 0], [0, 1, 2])),
        ("BatchError", lambda: m.set_priority(Tier.MISS, 0, 0, 1.0)),
        ("BatchError", lambda: m.store_root_batch([0], [0], batch, zero)),
        ("BatchError", lambda: m.store_recurrent_batch([0, 1], [0, 1], batch, Correction.zero(1, 5))),
        ("SearchCapacityError", lambda: m.begin_search(m.config.recurrent_capacity + 1)),
        ("SearchCapacityError", lambda: m.begin_search(-1)),
        (
            "InputError" if prio else "UnsupportedOperationError",
            lambda: m.store_root(0, 1, entry, priority=math.nan if prio else 1.0),
        ),
        (
            "KeyNotFoundError" if prio else "UnsupportedOperationError",
            lambda: m.set_priority(Tier.RECURRENT, 1, ABSENT_KEY, 1.0),
        ),
    ]
    return cases[case]


BAD_MANAGER_CASES = 23


def manager_bad_input_driver(
    policy: int, scope: int, case: int
) -> tuple[str | None, str, ManagerSnap, ManagerSnap]:
    """Every bad manager input raises its documented type and changes nothing (stats too).

    pre: 0 <= policy <= 2 and 0 <= scope <= 1
    pre: 0 <= case < BAD_MANAGER_CASES
    post: __return__[0] == __return__[1]
    post: __return__[2] == __return__[3]
    """
    m = make_manager(policy, scope, 2, 3)
    m.store_root(0, 0, tagged_entry(0, 0, 0))
    m.store_recurrent(1, 1, tagged_entry(1, 1, 1))
    m.lookup(1, 1)
    m.begin_search(2)
    before = manager_snapshot(m)
    expected, call = bad_manager_call(m, small(case))
    raised: str | None = None
    try:
        call()
    except ZeroKVError as exc:
        raised = type(exc).__name__
    return raised, expected, before, manager_snapshot(m)
