"""Bounded CrossHair drivers: the contracts of ``zerokv_spec`` stated as PEP 316 docstrings.

Check every driver with ``crosshair check --analysis_kind=PEP316 spec/zerokv_spec/contracts.py``
(the ``contracts`` nox session does, with the limits set in ``noxfile.py``), or one with
``crosshair check --analysis_kind=PEP316 zerokv_spec.contracts.fifo_put_driver``.

How the drivers are built, and why:

* CrossHair checks the contracts of the *top-level* function it analyses, not those of the
  calls it makes, and it cannot efficiently construct dict + list states from class
  invariants. So every contract is a top-level *driver*: a function of a few small ints and
  short fixed-length lists of int tuples that builds a state, applies operations and
  returns a frozen record of what happened (states before/after, results, errors).
* Arbitrary (not only fresh) pool states come from ``restore``, which builds a valid pool
  directly from a slot description: which key each slot holds, its fingerprint, its
  recency / insertion rank and its priority, plus the FIFO pointer. So one operation on a
  restored state covers what would otherwise take a long history of operations.
* Every symbolic int is decoded with ``pick`` (``0 <= x < n`` gives ``x``, anything else
  ``n - 1``): CrossHair forks one path per value and explores them systematically, the
  spec then runs on concrete ints, and no element-wise ``pre:`` can fail. Keys passed
  straight into the spec's dicts would be "realized" by CrossHair with little diversity.
* Each driver has one ``post:`` line asserting that a ``*_failures`` helper returns ``[]``.
  A helper lists the *named clauses* of a contract that the record violates (for example
  ``"put: the key is stored at the returned slot"``); call it on CrossHair's counterexample
  to see which clause broke. CrossHair analyses every ``post:`` line separately, re-running
  the same paths, so one line per driver keeps the whole file within its time budget.
* Every spec operation runs ``check()`` itself; a broken class invariant raises
  ``ContractViolation`` (an ``AssertionError``), which CrossHair reports as a counterexample
  just like a failed ``post:``.
* The clauses never trust the spec's own bookkeeping helpers for what they check:
  ``state_failures`` recomputes the eviction order from the raw policy state, the put
  clauses recompute the victim, and ``Model`` is a deliberately naive re-implementation of
  the three policies (plain lists and dicts) that the sequence drivers follow step by step.

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
    Tokens,
    append,
    assemble,
    overflow_drop,
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

#: Drivers draw keys from ``0 .. MAX_KEY``; ``ABSENT_KEY`` and above are never restored.
MAX_KEY = 3
ABSENT_KEY = 9
#: A restored key ``k`` holds the value ``RESTORED_VALUE + k``; step ``i`` of a driver
#: writes ``WRITTEN_VALUE + i`` (so a hit shows which write it returns).
RESTORED_VALUE = 100
WRITTEN_VALUE = 1000

#: One slot of a restored pool: ``(key, fingerprint, rank, priority)``, decoded by
#: ``decode_slot`` to ``key`` in ``-1..MAX_KEY`` (-1: empty), ``fingerprint`` in ``-1..1``
#: (-1: none), ``rank`` in ``0..3`` (orders LRU last uses / PRIORITY insertions) and
#: ``priority`` in ``0..2`` (PRIORITY).
SlotSpec = tuple[int, int, int, int]
#: One pool operation ``(opcode, key, arg)``, decoded by ``decode_op``. ``arg`` is the
#: fingerprint of ``GET`` / ``PEEK`` / ``PUT`` (-1: none), also the priority of a ``PUT`` on
#: a priority pool (-1: none), the new priority of ``SET_PRIORITY``, the slot of ``KEY_AT``.
Op = tuple[int, int, int]


def pick(x: int, n: int) -> int:
    """``x`` as a concrete int when ``0 <= x < n``; any other ``x`` gives ``n - 1``.

    The drivers decode every symbolic argument with ``pick``: it compares ``x`` with each
    candidate, so CrossHair forks one path per value and explores them systematically, and
    everything after it runs on concrete ints (no 64-bit hash arithmetic reaches the solver,
    no list is sized by a symbolic int). Outside CrossHair it is a clamp.
    """
    for value in range(n - 1):
        if x == value:
            return value
    return n - 1


def decode_slot(spec: SlotSpec) -> tuple[int, int | None, int, int]:
    """``(key or -1, fingerprint or None, rank, priority)`` of a raw ``SlotSpec``."""
    key, fp, rank, prio = spec
    f = pick(fp + 1, 3) - 1
    return pick(key + 1, MAX_KEY + 2) - 1, None if f < 0 else f, pick(rank, 4), pick(prio, 3)


def decode_op(op: Op) -> Op:
    """A raw ``(opcode, key, arg)`` reduced to ``0..7``, ``0..MAX_KEY``, ``-1..3``."""
    code, key, arg = op
    return pick(code, 8), pick(key, MAX_KEY + 1), pick(arg + 1, 5) - 1


def fingerprint_arg(arg: int) -> int | None:
    """The fingerprint an ``arg`` encodes (``None`` when negative)."""
    return None if arg < 0 else arg


def priority_arg(policy: Policy, arg: int) -> float | None:
    """The priority a ``PUT`` passes: ``float(arg)`` on priority pools, else none."""
    return float(arg) if policy is Policy.PRIORITY and arg >= 0 else None


# --------------------------------------------------------------------------- snapshots


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


# --------------------------------------------------------------------------- one operation


@dataclass(frozen=True)
class OpCase:
    """One pool operation: its encoding, the states around it, what it returned or raised."""

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


# --------------------------------------------------------------------------- contract clauses

Clauses = list[tuple[str, bool]]


def failed(clauses: Clauses) -> list[str]:
    """The names of the clauses that do not hold."""
    return [name for name, ok in clauses if not ok]


_COUNTERS = tuple(f.name for f in fields(PoolStats))


def counters_moved(before: PoolSnap, after: PoolSnap, **expected: int) -> bool:
    """Every counter moved by ``expected[name]`` (counters not named: not at all)."""
    return all(
        getattr(after.stats, n) - getattr(before.stats, n) == expected.get(n, 0) for n in _COUNTERS
    )


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


def refused(c: OpCase, expected: str) -> Clauses:
    """Clauses of a refused operation: the documented error, and no change at all."""
    return [
        (f"raises {expected}", c.error == expected),
        ("a raising op leaves the state unchanged", c.before == c.after),
    ]


def state_failures(s: PoolSnap) -> list[str]:
    """State clauses: bijection, size, statistics identities, eviction order, empties."""
    stored = [k for k in s.keys if k is not None]
    return failed(
        [
            (
                "state: stored keys are distinct (key <-> slot bijection)",
                len(set(stored)) == len(stored),
            ),
            ("state: len <= capacity", len(s) <= s.capacity),
            ("state: hits + misses == queries", s.stats.hits + s.stats.misses == s.stats.queries),
            ("state: collisions <= misses", s.stats.collisions <= s.stats.misses),
            ("state: eviction_order follows the policy", s.order == s.policy_order()),
            (
                "state: empty slots keep no fingerprint or value",
                all(
                    s.fingerprints[i] is None and s.values[i] is None
                    for i in range(s.capacity)
                    if s.keys[i] is None
                ),
            ),
        ]
    )


def get_failures(c: OpCase) -> list[str]:
    """``get``: verification, one counted query, recency (LRU hits only), nothing else."""
    b, a, r = c.before, c.after, c.result
    fp = fingerprint_arg(c.arg)
    slot = b.slot_of(c.key)
    verified = slot is not None and (fp is None or b.fingerprints[slot] == fp)
    collided = slot is not None and not verified
    if c.error is not None or not isinstance(r, Lookup):
        return ["get: returns a Lookup"]
    if b.policy is Policy.LRU:
        recency = a.order == ((*without(b.order, c.key), c.key) if verified else b.order)
    else:
        recency = (a.next, a.priority, a.inserted_at, a.clock) == (
            b.next,
            b.priority,
            b.inserted_at,
            b.clock,
        )
    return failed(
        [
            ("get: hit iff stored and verified", r.hit == verified),
            (
                "get: collision iff stored but the fingerprint differs",
                (r.status is LookupStatus.COLLISION) == collided,
            ),
            (
                "get: a hit returns the stored slot and value",
                slot is None or not verified or (r.slot == slot and r.value == b.values[slot]),
            ),
            ("get: a miss returns no slot and no value", verified or r.slot is r.value is None),
            (
                "get: one query, counted as a hit or a miss (+ a collision)",
                counters_moved(
                    b,
                    a,
                    queries=1,
                    hits=int(verified),
                    misses=int(not verified),
                    collisions=int(collided),
                ),
            ),
            ("get: entries unchanged", same_entries(b, a)),
            ("get: an LRU hit is a use; nothing else moves", recency),
        ]
    )


def peek_failures(c: OpCase) -> list[str]:
    """``peek``: the verified value or None; counts nothing, changes nothing."""
    b = c.before
    fp = fingerprint_arg(c.arg)
    slot = b.slot_of(c.key)
    verified = slot is not None and (fp is None or b.fingerprints[slot] == fp)
    expected = b.values[slot] if slot is not None and verified else None
    return failed(
        [
            ("peek: no error", c.error is None),
            ("peek: returns the verified value or None", c.result == expected),
            ("peek: changes nothing (no statistics, no recency)", c.before == c.after),
        ]
    )


def expected_victim_slot(b: PoolSnap) -> int:
    """The slot a new key takes, by the policy rules, recomputed from the raw state."""
    if b.policy is Policy.FIFO:
        return b.next
    empty = b.lowest_empty()
    if empty is not None:
        return empty
    if b.policy is Policy.LRU:
        return min(range(b.capacity), key=lambda s: b.last_use[s])
    return min(range(b.capacity), key=lambda s: (b.priority[s], b.inserted_at[s]))


def put_failures(c: OpCase) -> list[str]:
    """``put``: placement, eviction, overwrite in place, statistics, policy bookkeeping."""
    b, a, r = c.before, c.after, c.result
    if c.error is not None or not isinstance(r, PutResult):
        return ["put: returns a PutResult"]
    held = b.slot_of(c.key)
    inserted = held is None
    slot = expected_victim_slot(b) if held is None else held
    evicted = b.keys[slot] if inserted else None
    prio = priority_arg(b.policy, c.arg)
    full = len(b) == b.capacity
    clauses: Clauses = [
        ("put: inserted iff the key was not stored", r.inserted == inserted),
        ("put: writes the slot the policy chooses (an update: its own slot)", r.slot == slot),
        ("put: evicts exactly the key that slot held (inserts only)", r.evicted == evicted),
        ("put: the key is stored at the returned slot", a.keys[r.slot] == c.key),
        ("put: the value is written", a.values[r.slot] == c.value),
        ("put: the fingerprint is written", a.fingerprints[r.slot] == fingerprint_arg(c.arg)),
        ("put: the evicted key is gone", r.evicted is None or r.evicted not in a.keys),
        ("put: the victim is first in eviction order", r.evicted in (None, *b.order[:1])),
        ("put: no other slot changes", others_unchanged(b, a, r.slot)),
        (
            "put: len grows by one per insert, shrinks by one per eviction",
            len(a) == len(b) + int(inserted) - int(r.evicted is not None),
        ),
        (
            "put: counted as an insert or an update (+ an eviction)",
            counters_moved(
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
        clauses.append(("put: the FIFO pointer advances by one iff inserted", a.next == advanced))
    else:
        clauses.append(
            (
                "put: LRU/PRIORITY evict iff an insert finds no empty slot",
                (evicted is None) != (inserted and full),
            )
        )
    if b.policy is Policy.LRU:
        clauses += [
            ("put: an LRU put is a use (most recent)", a.order[-1:] == (c.key,)),
            (
                "put: other LRU keys keep their order",
                without(a.order, c.key) == without(b.order, c.key, evicted),
            ),
        ]
    if b.policy is Policy.PRIORITY:
        expected = prio if prio is not None else (0.0 if inserted else b.priority_of(c.key))
        newest = all(a.inserted_at[s] < a.inserted_at[r.slot] for s in a.occupied() if s != r.slot)
        clauses += [
            (
                "put: priority set by put (insert default 0.0; update keeps)",
                a.priority_of(c.key) == expected,
            ),
            (
                "put: an update keeps the insertion time; an insert is the newest",
                a.inserted_at[r.slot] == b.inserted_at[r.slot] if not inserted else newest,
            ),
            (
                "put: other keys keep their priorities",
                all(a.priority_of(k) == b.priority_of(k) for k in without(a.order, c.key)),
            ),
        ]
    return failed(clauses)


def evict_failures(c: OpCase) -> list[str]:
    """``evict``: a stored key goes, leaving a hole; an absent key: ``KeyNotFoundError``."""
    b, a = c.before, c.after
    slot = b.slot_of(c.key)
    if slot is None:
        return failed(refused(c, "KeyNotFoundError"))
    return failed(
        [
            ("evict: no error", c.error is None),
            ("evict: the key is gone", c.key not in a.keys),
            (
                "evict: its slot is empty (no fingerprint, no value)",
                a.keys[slot] is a.fingerprints[slot] is a.values[slot] is None,
            ),
            ("evict: no other slot changes", others_unchanged(b, a, slot)),
            ("evict: counted as a removal", counters_moved(b, a, removals=1)),
            ("evict: the others keep their eviction order", a.order == without(b.order, c.key)),
            ("evict: the FIFO pointer does not move (the hole waits)", a.next == b.next),
        ]
    )


def clear_failures(c: OpCase) -> list[str]:
    """``clear``: every slot empty, policy bookkeeping reset, statistics kept."""
    a = c.after
    fresh = snapshot(make_pool(c.before.policy, c.before.capacity))
    return failed(
        [
            ("clear: no error", c.error is None),
            ("clear: every slot empty", a.keys == fresh.keys and a.values == fresh.values),
            ("clear: no fingerprints", a.fingerprints == fresh.fingerprints),
            (
                "clear: policy reset (FIFO pointer 0, clocks 0)",
                replace(a, stats=fresh.stats) == fresh,
            ),
            ("clear: statistics kept", a.stats == c.before.stats),
        ]
    )


def set_priority_failures(c: OpCase) -> list[str]:
    """``set_priority``: PRIORITY pools change one priority; FIFO and LRU refuse."""
    b, a = c.before, c.after
    if b.policy is not Policy.PRIORITY:
        return failed(refused(c, "UnsupportedOperationError"))
    if b.slot_of(c.key) is None:
        return failed(refused(c, "KeyNotFoundError"))
    return failed(
        [
            ("set_priority: no error", c.error is None),
            ("set_priority: the priority is set", a.priority_of(c.key) == float(c.arg)),
            (
                "set_priority: nothing else changes",
                replace(a, priority=b.priority, order=b.order) == b
                and all(a.priority_of(k) == b.priority_of(k) for k in without(b.order, c.key)),
            ),
        ]
    )


def slot_of_failures(c: OpCase) -> list[str]:
    """``slot_of``: the slot holding the key, else ``KeyNotFoundError``."""
    slot = c.before.slot_of(c.key)
    if slot is None:
        return failed(refused(c, "KeyNotFoundError"))
    return failed(
        [
            ("slot_of: returns the key's slot", c.error is None and c.result == slot),
            ("slot_of: changes nothing", c.before == c.after),
        ]
    )


def key_at_failures(c: OpCase) -> list[str]:
    """``key_at``: the key in the slot (None when empty), else ``SlotRangeError``."""
    b = c.before
    if not 0 <= c.arg < b.capacity:
        return failed(refused(c, "SlotRangeError"))
    held = b.keys[c.arg]
    return failed(
        [
            ("key_at: returns the slot's key", c.error is None and c.result == held),
            (
                "key_at: bijection, slot_of(key_at(s)) == s",
                held is None or b.slot_of(held) == c.arg,
            ),
            ("key_at: changes nothing", c.before == c.after),
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
    """The violated clauses of ``c``'s operation contract, then of the state after it."""
    return OP_FAILURES[c.op](c) + state_failures(c.before) + state_failures(c.after)


# --------------------------------------------------------------------------- the naive model


@dataclass
class ModelSlot:
    key: int
    fingerprint: int | None
    value: object


@dataclass
class Model:
    """A naive pool: a list of slots plus per-policy bookkeeping in plain lists and dicts."""

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
        slots = [
            None if k is None else ModelSlot(k, f, v)
            for k, f, v in zip(s.keys, s.fingerprints, s.values)
        ]
        model = Model(s.policy, slots, s.next, [], {}, {}, 0)
        by_time: list[tuple[int, int]] = []
        for i, key in enumerate(s.keys):
            if key is None:
                continue
            if s.policy is Policy.LRU:
                by_time.append((s.last_use[i], key))
            elif s.policy is Policy.PRIORITY:
                model.priorities[key] = s.priority[i]
                model.insertion[key] = s.inserted_at[i]
        model.recency = [key for _, key in sorted(by_time)]
        model.counter = s.clock
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
        """Apply one encoded operation; returns what ``observe`` reads off the spec."""
        where = self.find(key)
        fp = fingerprint_arg(arg)
        if op in (GET, PEEK):
            slot = None if where is None else self.slots[where]
            ok = slot is not None and (fp is None or slot.fingerprint == fp)
            if op == GET and ok:
                self._use(key)
            return (op, slot.value if slot is not None and ok else None)
        if op == PUT:
            return (op, *self._put(key, fp, priority_arg(self.policy, arg), value, where))
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

    def _put(
        self, key: int, fp: int | None, prio: float | None, value: int, where: int | None
    ) -> tuple[int, int | None, bool]:
        evicted: int | None = None
        inserted = where is None
        if where is None:
            if self.policy is Policy.FIFO:
                where = self.pointer
                self.pointer = (self.pointer + 1) % len(self.slots)
            elif None in self.slots:
                where = self.slots.index(None)
            else:
                where = self.find(self.order()[0])
                assert where is not None
            old = self.slots[where]
            if old is not None:
                evicted = old.key
                self._forget(old.key)
            self.priorities[key] = 0.0 if prio is None else prio
            self.insertion[key] = self.counter
            self.counter += 1
        elif prio is not None:
            self.priorities[key] = prio
        self.slots[where] = ModelSlot(key, fp, value)
        self._use(key)
        return where, evicted, inserted

    def keys(self) -> tuple[int | None, ...]:
        return tuple(None if s is None else s.key for s in self.slots)

    def values(self) -> tuple[object, ...]:
        return tuple(None if s is None else s.value for s in self.slots)


def observe(c: OpCase) -> object:
    """What ``Model.step`` returns for the same operation, read off the spec's record."""
    r = c.result
    if c.op in (GET, PEEK):
        return (c.op, r.value if isinstance(r, Lookup) else r)
    if c.op == PUT and isinstance(r, PutResult):
        return (c.op, r.slot, r.evicted, r.inserted)
    if c.op in (SLOT_OF, KEY_AT):
        return (c.op, c.error if c.error is not None else r)
    return (c.op, c.error)


@dataclass(frozen=True)
class Run:
    """A sequence of operations applied to one pool."""

    initial: PoolSnap
    steps: tuple[OpCase, ...]
    final: PoolSnap


def run_ops(pool: SlotPool[int], ops: Sequence[Op]) -> Run:
    """Apply the decoded ``ops`` in order; step ``i`` writes ``WRITTEN_VALUE + i``."""
    initial = snapshot(pool)
    steps = tuple(apply_op(pool, *decode_op(op), WRITTEN_VALUE + i) for i, op in enumerate(ops))
    return Run(initial, steps, snapshot(pool))


def model_failures(run: Run) -> list[str]:
    """Steps where the spec disagrees with ``Model`` (observation, entries or order)."""
    model = Model.of(run.initial)
    failures: list[str] = []
    for i, c in enumerate(run.steps):
        name = f"model: step {i} ({OP_NAMES[c.op]})"
        seen = model.step(c.op, c.key, c.arg, c.value)
        if seen != observe(c):
            failures.append(f"{name}: spec gives {observe(c)}, the model {seen}")
        if model.keys() != c.after.keys or model.values() != c.after.values:
            failures.append(f"{name}: stored keys or values differ")
        if model.order() != c.after.order:
            failures.append(f"{name}: eviction order differs")
    return failures


def latest_write_failures(run: Run) -> list[str]:
    """Oracle: every hit returns exactly the most recent value written under its key."""
    latest = {k: v for k, v in zip(run.initial.keys, run.initial.values) if k is not None}
    failures: list[str] = []
    for i, c in enumerate(run.steps):
        if isinstance(c.result, Lookup) and c.result.hit and c.result.value != latest.get(c.key):
            failures.append(f"oracle: step {i} hit returned {c.result.value}, not the latest")
        if c.op == PUT:
            latest[c.key] = c.value
    return failures


def run_failures(run: Run) -> list[str]:
    """Every step's contract, the model's agreement and the latest-write oracle."""
    failures = [f for c in run.steps for f in op_failures(c)]
    return failures + model_failures(run) + latest_write_failures(run)


# --------------------------------------------------------------------------- pool drivers
# Shared bounds: policy code 0..2, capacity 1..3, three raw slot descriptions (the first
# ``capacity`` are used), the FIFO pointer inside the ring; ints are decoded by ``pick``.


def pool_get_driver(
    policy: int, capacity: int, slots: list[SlotSpec], pointer: int, key: int, fp: int
) -> OpCase:
    """``get`` on an arbitrary state (``fp < 0``: a key-only lookup that trusts the key).

    pre: 0 <= policy <= 2 and 1 <= capacity <= 3 and 0 <= pointer < capacity
    pre: len(slots) == 3
    pre: 0 <= key <= MAX_KEY and -1 <= fp <= 1
    post: op_failures(__return__) == []
    """
    pool = restore(policy, capacity, slots, pointer)
    return apply_op(pool, GET, pick(key, MAX_KEY + 1), pick(fp + 1, 3) - 1, 0)


def pool_peek_driver(
    policy: int, capacity: int, slots: list[SlotSpec], pointer: int, key: int, fp: int
) -> OpCase:
    """``peek`` on an arbitrary state: the verified value; counts nothing, changes nothing.

    pre: 0 <= policy <= 2 and 1 <= capacity <= 3 and 0 <= pointer < capacity
    pre: len(slots) == 3
    pre: 0 <= key <= MAX_KEY and -1 <= fp <= 1
    post: op_failures(__return__) == []
    """
    pool = restore(policy, capacity, slots, pointer)
    return apply_op(pool, PEEK, pick(key, MAX_KEY + 1), pick(fp + 1, 3) - 1, 0)


def pool_put_driver(
    policy: int, capacity: int, slots: list[SlotSpec], pointer: int, key: int, arg: int
) -> OpCase:
    """``put`` on an arbitrary state (``arg``: fingerprint, and priority on PRIORITY pools).

    pre: 0 <= policy <= 2 and 1 <= capacity <= 3 and 0 <= pointer < capacity
    pre: len(slots) == 3
    pre: 0 <= key <= MAX_KEY and -1 <= arg <= 2
    post: op_failures(__return__) == []
    """
    pool = restore(policy, capacity, slots, pointer)
    return apply_op(pool, PUT, pick(key, MAX_KEY + 1), pick(arg + 1, 4) - 1, WRITTEN_VALUE)


def fifo_put_driver(capacity: int, slots: list[SlotSpec], pointer: int, key: int) -> OpCase:
    """``put`` on an arbitrary FIFO ring, holes included: a new key takes slot ``next``,
    evicting what it holds, and ``next`` advances by one; an update stays in place.

    pre: 1 <= capacity <= 3 and 0 <= pointer < capacity
    pre: len(slots) == 3
    pre: 0 <= key <= MAX_KEY
    post: op_failures(__return__) == []
    """
    pool = restore(FIFO_CODE, capacity, slots, pointer)
    return apply_op(pool, PUT, pick(key, MAX_KEY + 1), -1, WRITTEN_VALUE)


def lru_put_driver(capacity: int, slots: list[SlotSpec], key: int) -> OpCase:
    """``put`` on an arbitrary LRU pool: the lowest empty slot, else the least recently
    used key is evicted; the key becomes the most recent.

    pre: 1 <= capacity <= 3
    pre: len(slots) == 3
    pre: 0 <= key <= MAX_KEY
    post: op_failures(__return__) == []
    """
    pool = restore(LRU_CODE, capacity, slots)
    return apply_op(pool, PUT, pick(key, MAX_KEY + 1), -1, WRITTEN_VALUE)


def priority_put_driver(capacity: int, slots: list[SlotSpec], key: int, priority: int) -> OpCase:
    """``put`` on an arbitrary PRIORITY pool: the lowest empty slot, else the lowest
    priority is evicted, ties going to the earliest insertion (``priority < 0``: none).

    pre: 1 <= capacity <= 3
    pre: len(slots) == 3
    pre: 0 <= key <= MAX_KEY and -1 <= priority <= 2
    post: op_failures(__return__) == []
    """
    pool = restore(PRIORITY_CODE, capacity, slots)
    return apply_op(pool, PUT, pick(key, MAX_KEY + 1), pick(priority + 1, 4) - 1, WRITTEN_VALUE)


def pool_evict_driver(
    policy: int, capacity: int, slots: list[SlotSpec], pointer: int, key: int
) -> OpCase:
    """``evict`` of a stored or an absent key on an arbitrary state.

    pre: 0 <= policy <= 2 and 1 <= capacity <= 3 and 0 <= pointer < capacity
    pre: len(slots) == 3
    pre: 0 <= key <= MAX_KEY
    post: op_failures(__return__) == []
    """
    pool = restore(policy, capacity, slots, pointer)
    return apply_op(pool, EVICT, pick(key, MAX_KEY + 1), 0, 0)


def pool_clear_driver(policy: int, capacity: int, slots: list[SlotSpec], pointer: int) -> OpCase:
    """``clear`` on an arbitrary state.

    pre: 0 <= policy <= 2 and 1 <= capacity <= 3 and 0 <= pointer < capacity
    pre: len(slots) == 3
    post: op_failures(__return__) == []
    """
    return apply_op(restore(policy, capacity, slots, pointer), CLEAR, 0, 0, 0)


def pool_set_priority_driver(
    policy: int, capacity: int, slots: list[SlotSpec], key: int, priority: int
) -> OpCase:
    """``set_priority`` on an arbitrary state (FIFO and LRU pools refuse it).

    pre: 0 <= policy <= 2 and 1 <= capacity <= 3
    pre: len(slots) == 3
    pre: 0 <= key <= MAX_KEY and 0 <= priority <= 3
    post: op_failures(__return__) == []
    """
    pool = restore(policy, capacity, slots)
    return apply_op(pool, SET_PRIORITY, pick(key, MAX_KEY + 1), pick(priority, 4), 0)


def pool_index_driver(
    policy: int, capacity: int, slots: list[SlotSpec], key: int, slot: int
) -> tuple[OpCase, OpCase]:
    """``slot_of`` and ``key_at`` (slot -1..3, so out of range too): the bijection.

    pre: 0 <= policy <= 2 and 1 <= capacity <= 3
    pre: len(slots) == 3
    pre: 0 <= key <= MAX_KEY and -1 <= slot <= 3
    post: op_failures(__return__[0]) + op_failures(__return__[1]) == []
    """
    pool = restore(policy, capacity, slots)
    by_key = apply_op(pool, SLOT_OF, pick(key, MAX_KEY + 1), 0, 0)
    return by_key, apply_op(pool, KEY_AT, 0, pick(slot + 1, 5) - 1, 0)


@dataclass(frozen=True)
class OrderCase:
    """A pool's state and the keys evicted by ``capacity`` puts of new keys."""

    before: PoolSnap
    evicted: tuple[int | None, ...]


def order_failures(c: OrderCase) -> list[str]:
    """``eviction_order`` lists every stored key once, in the order puts evict them."""
    victims = tuple(k for k in c.evicted if k is not None)
    return failed(
        [
            (
                "eviction_order: the victims of successive new keys, in order",
                victims == c.before.order,
            ),
            (
                "eviction_order: the stored keys, each once",
                sorted(c.before.order) == sorted(k for k in c.before.keys if k is not None),
            ),
        ]
    )


def pool_eviction_order_driver(
    policy: int, capacity: int, slots: list[SlotSpec], pointer: int
) -> OrderCase:
    """``eviction_order`` predicts the victims of ``capacity`` puts of new keys.

    (On PRIORITY pools the new keys get a priority above every stored one.)

    pre: 0 <= policy <= 2 and 1 <= capacity <= 3 and 0 <= pointer < capacity
    pre: len(slots) == 3
    post: order_failures(__return__) == []
    """
    pool = restore(policy, capacity, slots, pointer)
    before = snapshot(pool)
    high = 10.0 if pool.policy is Policy.PRIORITY else None
    puts = range(ABSENT_KEY, ABSENT_KEY + pool.capacity)
    return OrderCase(before, tuple(pool.put(k, 0, None, high).evicted for k in puts))


def fifo_ops_driver(capacity: int, slots: list[SlotSpec], pointer: int, ops: list[Op]) -> Run:
    """A FIFO ring in an arbitrary state (holes included), then 4 encoded operations.

    pre: 1 <= capacity <= 3 and 0 <= pointer < capacity
    pre: len(slots) == 3
    pre: len(ops) == 4
    post: run_failures(__return__) == []
    """
    return run_ops(restore(FIFO_CODE, capacity, slots, pointer), ops)


def lru_ops_driver(capacity: int, slots: list[SlotSpec], ops: list[Op]) -> Run:
    """An LRU pool in an arbitrary state, then 4 encoded operations.

    pre: 1 <= capacity <= 3
    pre: len(slots) == 3
    pre: len(ops) == 4
    post: run_failures(__return__) == []
    """
    return run_ops(restore(LRU_CODE, capacity, slots), ops)


def priority_ops_driver(capacity: int, slots: list[SlotSpec], ops: list[Op]) -> Run:
    """A PRIORITY pool in an arbitrary state, then 4 encoded operations.

    pre: 1 <= capacity <= 3
    pre: len(slots) == 3
    pre: len(ops) == 4
    post: run_failures(__return__) == []
    """
    return run_ops(restore(PRIORITY_CODE, capacity, slots), ops)


@dataclass(frozen=True)
class FoldCase:
    """A batch operation's results and final state, and those of the fold of singles."""

    batch: tuple[list[Any], PoolSnap]
    fold: tuple[list[Any], PoolSnap]


def put_many_fold_driver(
    policy: int, capacity: int, slots: list[SlotSpec], pointer: int, puts: list[tuple[int, int]]
) -> FoldCase:
    """``put_many`` (duplicates allowed) equals the fold of ``put`` on an identical copy.

    ``puts``: ``(key, arg)`` pairs, ``arg`` as for ``PUT`` (fingerprint, and priority).

    pre: 0 <= policy <= 2 and 1 <= capacity <= 3 and 0 <= pointer < capacity
    pre: len(slots) == 3
    pre: len(puts) == 3
    post: __return__.batch == __return__.fold
    """
    pool = restore(policy, capacity, slots, pointer)
    copy = restore(policy, capacity, slots, pointer)
    keys = [pick(k, MAX_KEY + 1) for k, _ in puts]
    args = [pick(a + 1, 4) - 1 for _, a in puts]
    values = [WRITTEN_VALUE + i for i in range(len(keys))]
    fps = [fingerprint_arg(a) for a in args]
    prios = [priority_arg(pool.policy, a) for a in args]
    batch = pool.put_many(keys, values, fps, prios)
    singles = [copy.put(k, v, f, p) for k, v, f, p in zip(keys, values, fps, prios)]
    return FoldCase((batch, snapshot(pool)), (singles, snapshot(copy)))


def get_many_fold_driver(
    policy: int, capacity: int, slots: list[SlotSpec], pointer: int, gets: list[tuple[int, int]]
) -> FoldCase:
    """``peek_many`` then ``get_many`` equal the folds of ``peek`` / ``get`` on a copy.

    ``gets``: ``(key, fingerprint)`` pairs (fingerprint -1: none).

    pre: 0 <= policy <= 2 and 1 <= capacity <= 3 and 0 <= pointer < capacity
    pre: len(slots) == 3
    pre: len(gets) == 3
    post: __return__.batch == __return__.fold
    """
    pool = restore(policy, capacity, slots, pointer)
    copy = restore(policy, capacity, slots, pointer)
    keys = [pick(k, MAX_KEY + 1) for k, _ in gets]
    fps = [fingerprint_arg(pick(f + 1, 3) - 1) for _, f in gets]
    batch: list[Any] = [*pool.peek_many(keys, fps), *pool.get_many(keys, fps)]
    singles: list[Any] = [copy.peek(k, f) for k, f in zip(keys, fps)]
    singles += [copy.get(k, f) for k, f in zip(keys, fps)]
    return FoldCase((batch, snapshot(pool)), (singles, snapshot(copy)))


@dataclass(frozen=True)
class ErrorCase:
    """A call with a bad argument: the error it raised, the one documented, the states."""

    raised: str | None
    expected: str
    before: object
    after: object


def error_failures(c: ErrorCase) -> list[str]:
    return failed(
        [
            (f"bad input: raises the documented {c.expected}", c.raised == c.expected),
            ("bad input: a raising op leaves the state unchanged", c.before == c.after),
        ]
    )


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
) -> ErrorCase:
    """Every bad input raises its documented error type and leaves the pool unchanged.

    pre: 0 <= policy <= 2 and 1 <= capacity <= 3 and 0 <= pointer < capacity
    pre: len(slots) == 3
    pre: 0 <= case < BAD_POOL_CASES
    post: error_failures(__return__) == []
    """
    pool = restore(policy, capacity, slots, pointer)
    before = snapshot(pool)
    expected, call = bad_pool_call(pool, pick(case, BAD_POOL_CASES))
    raised: str | None = None
    try:
        call()
    except ZeroKVError as exc:
        raised = type(exc).__name__
    return ErrorCase(raised, expected, before, snapshot(pool))


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


@dataclass(frozen=True)
class AssembleCase:
    entries: tuple[Entry, ...]
    width: int | None
    batch: Batch
    rows: tuple[Entry, ...]


def assemble_failures(c: AssembleCase) -> list[str]:
    """``assemble`` left-pads to the longest entry (or ``width``); ``split`` undoes it."""
    sizes = tuple(e.size for e in c.entries)
    expected_width = max(sizes) if c.width is None else c.width
    return failed(
        [
            (
                "assemble: width is the longest entry, or the width asked",
                c.batch.width == expected_width,
            ),
            ("assemble: lengths are the entry sizes", c.batch.lengths == sizes),
            (
                "assemble: the mask marks exactly the real tokens",
                all(sum(r) == n for r, n in zip(c.batch.mask(), sizes)),
            ),
            ("assemble: left padding is zero", padding_is_zero(c.batch)),
            ("assemble: split(assemble(entries)) == entries", c.rows == c.entries),
        ]
    )


def assemble_split_driver(sizes: list[int], layers: int, extra: int) -> AssembleCase:
    """``split(assemble(entries, width)) == entries``; padding is zero and masked.

    Sizes decode to ``0..4``; ``extra < 0`` assembles at the natural width, else at the
    longest size plus ``extra``.

    pre: 1 <= len(sizes) <= 3
    pre: 1 <= layers <= 2 and -1 <= extra <= 2
    post: assemble_failures(__return__) == []
    """
    n_layers = 1 + pick(layers - 1, 2)
    entries = tuple(make_entry(b, pick(s, 5), n_layers) for b, s in enumerate(sizes))
    x = pick(extra + 1, 4) - 1
    width = None if x < 0 else max(e.size for e in entries) + x
    batch = assemble(entries, width)
    return AssembleCase(entries, width, batch, split(batch))


def expected_append(width: int, t: int, capacity: int) -> tuple[int, int]:
    """``(columns dropped, width after)`` of ``append`` by the overflow rule, from scratch.

    The excess ``width + t - capacity`` (when positive) rounded up to even is dropped; when
    that is the whole width the rows are emptied and only the ``t`` new columns remain.
    """
    excess = width + t - capacity
    drop = 0 if excess <= 0 else (excess if excess % 2 == 0 else excess + 1)
    return drop, (t if drop >= width else width - drop + t)


@dataclass(frozen=True)
class AppendCase:
    entries: tuple[Entry, ...]
    t: int
    capacity: int
    batch: Batch
    new_k: tuple[tuple[tuple[float, ...], ...], ...]
    result: Batch
    rows: tuple[Entry, ...]


def append_failures(c: AppendCase) -> list[str]:
    """``append`` then ``split``: each row keeps its newest surviving tokens, then the new."""
    drop, width = expected_append(c.batch.width, c.t, c.capacity)
    kept = max(c.batch.width - drop, 0)
    expected_rows = tuple(
        e.k[0][e.size - min(e.size, kept) :] + c.new_k[0][b] for b, e in enumerate(c.entries)
    )
    return failed(
        [
            ("append: width after = t if drop >= S else S - drop + t", c.result.width == width),
            ("append: the width never exceeds the capacity", c.result.width <= c.capacity),
            ("append: an even number of columns is dropped", drop % 2 == 0),
            (
                "append: each row = newest surviving tokens + its new ones",
                tuple(r.k[0] for r in c.rows) == expected_rows,
            ),
            (
                "append: lengths are the rows' real tokens",
                tuple(r.size for r in c.rows) == c.result.lengths,
            ),
            ("append: left padding stays zero", padding_is_zero(c.result)),
        ]
    )


def append_driver(sizes: list[int], extra: int, t: int, capacity: int) -> AppendCase:
    """``append`` t tokens under the overflow rule, then ``split`` (2 layers).

    Sizes decode to ``0..5``; the batch width is the longest size plus ``extra``.

    pre: 1 <= len(sizes) <= 3
    pre: 0 <= extra <= 1
    pre: 1 <= t <= 3 and t <= capacity <= 6
    post: append_failures(__return__) == []
    """
    layers = 2
    entries = tuple(make_entry(b, pick(s, 6), layers) for b, s in enumerate(sizes))
    batch = assemble(entries, max(e.size for e in entries) + pick(extra, 2))
    t = 1 + pick(t - 1, 3)
    capacity = t + pick(capacity - t, 7 - t)
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
    return AppendCase(entries, t, capacity, batch, new_k, result, split(result))


@dataclass(frozen=True)
class WindowCase:
    context_length: int
    entry: Entry
    correction: Correction
    result: Entry


def window_failures(c: WindowCase) -> list[str]:
    """The window rule: ``size >= cl - 1`` keeps tokens ``[2, cl - 1)`` plus the correction."""
    cl, e, r = c.context_length, c.entry, c.result
    fires = e.size >= cl - 1

    def shifted(
        out: Sequence[Sequence[float]],
        old: Sequence[Sequence[float]],
        corr: Sequence[Sequence[float]],
    ) -> bool:
        return all(
            o[j] == x[j + 2] + d[j] for o, x, d in zip(out, old, corr) for j in range(cl - 3)
        )

    return failed(
        [
            (
                "window: size after is cl - 3 if size >= cl - 1, else unchanged",
                r.size == (cl - 3 if fires else e.size),
            ),
            ("window: a short entry is unchanged", fires or r == e),
            (
                "window: K tokens [2, cl-1) shift to [0, cl-3) plus the correction",
                not fires or shifted(r.k, e.k, c.correction.k),
            ),
            ("window: V tokens likewise", not fires or shifted(r.v, e.v, c.correction.v)),
            (
                "window: a windowed entry is short (window is idempotent)",
                window(r, cl, c.correction) == r,
            ),
        ]
    )


def window_driver(size: int, context_length: int, layers: int) -> WindowCase:
    """The window rule on one entry.

    pre: 4 <= context_length <= 8
    pre: 0 <= size <= context_length
    pre: 1 <= layers <= 2
    post: window_failures(__return__) == []
    """
    cl = 4 + pick(context_length - 4, 5)
    entry = make_entry(0, pick(size, cl + 1), 1 + pick(layers - 1, 2))
    correction = make_correction(entry.num_layers, cl)
    return WindowCase(cl, entry, correction, window(entry, cl, correction))


@dataclass(frozen=True)
class CycleCase:
    context_length: int
    sizes: tuple[tuple[int, ...], ...]  # row sizes before each step and after the last


def cycle_failures(c: CycleCase) -> list[str]:
    """With even ``cl`` and ``t = 2`` a store keeps every size odd and ``<= cl - 3``."""
    cl = c.context_length
    steps = zip(c.sizes, c.sizes[1:])
    return failed(
        [
            (
                "window: sizes stay odd and <= cl - 3",
                all(s % 2 == 1 and s <= cl - 3 for row in c.sizes for s in row),
            ),
            (
                "window: a store grows a row by 2 until it reaches cl - 1, then cuts it to cl - 3",
                all(
                    n == (s + 2 if s + 2 < cl - 1 else cl - 3)
                    for old, new in steps
                    for s, n in zip(old, new)
                ),
            ),
        ]
    )


def window_sizes_driver(half_context: int, sizes: list[int], steps: int) -> CycleCase:
    """UniZero's store cycle with even ``cl = 2 * half_context``: assemble the rows, append
    2 tokens (capacity ``cl``), ``store_rows``; rows start at odd sizes ``<= cl - 3``.

    pre: 2 <= half_context <= 6
    pre: 1 <= len(sizes) <= 3
    pre: 1 <= steps <= 4
    post: cycle_failures(__return__) == []
    """
    cl = 2 * (2 + pick(half_context - 2, 5))
    odd_sizes = [2 * pick(s, (cl - 2) // 2) + 1 for s in sizes]
    entries = tuple(make_entry(b, n, 1) for b, n in enumerate(odd_sizes))
    correction = Correction.zero(1, cl)
    history = [tuple(e.size for e in entries)]
    for step in range(1 + pick(steps - 1, 4)):
        rows = range(len(entries))
        new = (tuple((token(b, 0, 60 + step), token(b, 0, 70 + step)) for b in rows),)
        entries = store_rows(append(assemble(entries), new, new, cl), cl, correction)
        history.append(tuple(e.size for e in entries))
    return CycleCase(cl, tuple(history))


@dataclass(frozen=True)
class RegisterCase:
    entries: tuple[Entry, ...]
    count: int
    batch: Batch
    result: Batch
    rows: tuple[Entry, ...]


def register_failures(c: RegisterCase) -> list[str]:
    """``remove_registers(batch, r)``: ``S' = S - r``, ``n' = max(0, n - r)``, newest go."""
    r, b = c.count, c.batch
    return failed(
        [
            ("registers: width S - r", c.result.width == b.width - r),
            (
                "registers: lengths max(0, n - r)",
                c.result.lengths == tuple(max(0, n - r) for n in b.lengths),
            ),
            (
                "registers: every row loses its r newest columns",
                all(
                    out == row[: b.width - r]
                    for lo, li in zip(c.result.k, b.k)
                    for out, row in zip(lo, li)
                ),
            ),
            (
                "registers: each entry keeps its oldest max(0, n - r) tokens",
                all(
                    x.k == tuple(t[: max(0, e.size - r)] for t in e.k)
                    for x, e in zip(c.rows, c.entries)
                ),
            ),
            ("registers: left padding stays zero", padding_is_zero(c.result)),
        ]
    )


def remove_registers_driver(sizes: list[int], extra: int, count: int) -> RegisterCase:
    """``remove_registers`` drops the ``count`` (clamped to the width) newest columns.

    pre: 1 <= len(sizes) <= 3
    pre: 0 <= extra <= 1
    pre: 0 <= count <= 5
    post: register_failures(__return__) == []
    """
    entries = tuple(make_entry(b, pick(s, 5), 1) for b, s in enumerate(sizes))
    batch = assemble(entries, max(e.size for e in entries) + pick(extra, 2))
    r = pick(count, batch.width + 1)
    out = remove_registers(batch, r)
    return RegisterCase(entries, r, batch, out, split(out))


# --------------------------------------------------------------------------- manager drivers

#: Manager opcodes (``apply_manager_op``); an operation is ``(opcode, env_id, key)``.
STORE_ROOT, STORE_RECURRENT, LOOKUP, LOOKUP_ROOT, LOOKUP_RECURRENT = range(5)
CLEAR_ENV, CLEAR_RECURRENT, CLEAR_ALL = range(5, 8)
LOOKUPS = (LOOKUP, LOOKUP_ROOT, LOOKUP_RECURRENT)
MOp = tuple[int, int, int]


def tagged_entry(env_id: int, key: int, step: int) -> Entry:
    """A 1-layer, 3-token entry naming who wrote it: K tokens ``(env_id, key, step)``."""
    return Entry(((float(env_id), float(key), float(step)),), ((float(step), 0.0, 0.0),))


def entry_env(entry: object) -> int:
    """The environment id a ``tagged_entry`` names (-1 for anything else)."""
    return int(entry.k[0][0]) if isinstance(entry, Entry) else -1


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


@dataclass(frozen=True)
class ManagerCase:
    """One manager operation, the recurrent key it maps to, the states around it."""

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


def lookup_failures(c: ManagerCase) -> Clauses:
    """Lookups: root first, then recurrent; one manager query; per-tier counting."""
    b, a, e, r = c.before, c.after, c.env_id, c.result
    if not isinstance(r, TierLookup):
        return [("lookup: returns a TierLookup", False)]
    root_slot = b.roots[e].slot_of(c.key) if c.op != LOOKUP_RECURRENT else None
    rec_slot = b.recurrent.slot_of(c.recurrent_key) if c.op != LOOKUP_ROOT else None
    tier, slot, pool = Tier.MISS, None, b.recurrent
    if root_slot is not None:
        tier, slot, pool = Tier.ROOT, root_slot, b.roots[e]
    elif rec_slot is not None:
        tier, slot = Tier.RECURRENT, rec_slot
    visits_recurrent = c.op == LOOKUP_RECURRENT or (c.op == LOOKUP and root_slot is None)
    hits = (a.stats.hits - b.stats.hits, a.stats.root_hits - b.stats.root_hits)
    return [
        ("lookup: the tier holding the key hits, the root tier first", r.tier is tier),
        ("lookup: a hit returns the stored entry", slot is None or r.entry == pool.values[slot]),
        ("lookup: a miss returns nothing", tier is not Tier.MISS or r.entry is None),
        ("lookup: exactly one manager query", a.stats.queries - b.stats.queries == 1),
        (
            "lookup: hits == root_hits + recurrent_hits",
            hits == (int(tier is not Tier.MISS), int(tier is Tier.ROOT))
            and a.stats.recurrent_hits - b.stats.recurrent_hits == int(tier is Tier.RECURRENT),
        ),
        (
            "lookup: the root pool counts one query when visited",
            a.roots[e].stats.queries - b.roots[e].stats.queries == int(c.op != LOOKUP_RECURRENT),
        ),
        (
            "lookup: the recurrent pool counts a query only after a root miss",
            a.recurrent.stats.queries - b.recurrent.stats.queries == int(visits_recurrent),
        ),
    ]


def manager_step_failures(c: ManagerCase) -> list[str]:
    """One manager operation: tiers, counting, environment isolation, clears."""
    b, a, e = c.before, c.after, c.env_id
    others_same = all(a.roots[i] == b.roots[i] for i in range(len(b.roots)) if i != e)
    clauses: Clauses = [
        ("manager: no error", c.error is None),
        ("manager: other environments' root pools untouched", others_same or c.op == CLEAR_ALL),
    ]
    if c.op in LOOKUPS:
        clauses += lookup_failures(c)
    elif c.op in (STORE_ROOT, STORE_RECURRENT):
        pool = a.roots[e] if c.op == STORE_ROOT else a.recurrent
        slot = pool.slot_of(c.key if c.op == STORE_ROOT else c.recurrent_key)
        other_tier = a.recurrent == b.recurrent if c.op == STORE_ROOT else a.roots == b.roots
        clauses += [
            (
                "store: the entry is stored under the (scoped) key",
                slot is not None and pool.values[slot] == tagged_entry(e, c.key, c.step),
            ),
            ("store: the other tier is untouched", other_tier),
            ("store: manager statistics unchanged", a.stats == b.stats),
        ]
    else:
        pools_before, pools_after = (*b.roots, b.recurrent), (*a.roots, a.recurrent)
        everything = set(range(len(pools_after)))
        cleared = {CLEAR_ENV: {e}, CLEAR_RECURRENT: {len(a.roots)}}.get(c.op, everything)
        clauses += [
            ("clear: the cleared pools are empty", all(len(pools_after[i]) == 0 for i in cleared)),
            (
                "clear: the other pools are untouched",
                all(pools_after[i] == pools_before[i] for i in everything - cleared),
            ),
            (
                "clear: every statistic survives",
                a.stats == b.stats
                and [p.stats for p in pools_after] == [p.stats for p in pools_before],
            ),
        ]
    return failed(clauses)


@dataclass(frozen=True)
class ManagerRun:
    scope: Scope
    steps: tuple[ManagerCase, ...]
    final: ManagerSnap


def manager_run_failures(run: ManagerRun) -> list[str]:
    """Every step's contract; the latest-write oracle; isolation; statistics identities."""
    failures = [f for c in run.steps for f in manager_step_failures(c)]
    latest: dict[tuple[Tier, int, int], Entry] = {}  # (tier, env or -1, key) -> entry
    for i, c in enumerate(run.steps):
        if c.op == STORE_ROOT:
            latest[(Tier.ROOT, c.env_id, c.key)] = tagged_entry(c.env_id, c.key, c.step)
        elif c.op == STORE_RECURRENT:
            latest[(Tier.RECURRENT, -1, c.recurrent_key)] = tagged_entry(c.env_id, c.key, c.step)
        elif isinstance(c.result, TierLookup) and c.result.tier is not Tier.MISS:
            root = c.result.tier is Tier.ROOT
            where = (Tier.ROOT, c.env_id, c.key) if root else (Tier.RECURRENT, -1, c.recurrent_key)
            if c.result.entry != latest.get(where):
                failures.append(f"oracle: step {i} hit is not the latest write")
            if run.scope is Scope.ENV and entry_env(c.result.entry) != c.env_id:
                failures.append(f"isolation: step {i}: env {c.env_id} got another env's entry")
    s = run.final.stats
    lookups = sum(1 for c in run.steps if c.op in LOOKUPS)
    return failures + failed(
        [
            ("stats: one query per lookup", s.queries == lookups),
            ("stats: hits + misses == queries", s.hits + s.misses == s.queries),
            ("stats: hits == root_hits + recurrent_hits", s.hits == s.root_hits + s.recurrent_hits),
        ]
    )


def manager_ops_driver(
    policy: int, scope: int, root_capacity: int, recurrent_capacity: int, ops: list[MOp]
) -> ManagerRun:
    """Two environments; stores, hierarchical and single-tier lookups, clears.

    ``ops``: ``(opcode, env_id, key)`` decoded to ``STORE_ROOT .. CLEAR_ALL``, ``0..1``,
    ``0..2``; ``scope`` 0 is ``Scope.ENV``, 1 ``Scope.GLOBAL``.

    pre: 0 <= policy <= 2 and 0 <= scope <= 1
    pre: 1 <= root_capacity <= 2 and 1 <= recurrent_capacity <= 3
    pre: len(ops) == 4
    post: manager_run_failures(__return__) == []
    """
    m = make_manager(policy, scope, root_capacity, recurrent_capacity)
    steps = tuple(
        apply_manager_op(m, pick(op, 8), pick(env, 2), pick(key, 3), i)
        for i, (op, env, key) in enumerate(ops)
    )
    return ManagerRun(m.config.scope, steps, manager_snapshot(m))


@dataclass(frozen=True)
class IsolationCase:
    scope: Scope
    same_key: bool
    lookups: tuple[TierLookup, ...]


def isolation_failures(c: IsolationCase) -> list[str]:
    """Envs 0 and 1 stored one key in both tiers: who gets which entry."""
    root0, root1, rec0, rec1, other = c.lookups
    last_recurrent_writer = 0 if c.scope is Scope.ENV else 1
    return failed(
        [
            (
                "isolation: each env's lookup hits its own root entry",
                (entry_env(root0.entry), entry_env(root1.entry)) == (0, 1),
            ),
            ("isolation: the root tier answers first", root0.tier is root1.tier is Tier.ROOT),
            (
                "isolation: ENV scope keeps recurrent entries apart; GLOBAL: last writer wins",
                entry_env(rec0.entry) == last_recurrent_writer,
            ),
            ("isolation: env 1 reads its own recurrent entry", entry_env(rec1.entry) == 1),
            ("isolation: an unstored key misses", c.same_key or other.tier is Tier.MISS),
        ]
    )


def manager_isolation_driver(scope: int, key: int, other_key: int) -> IsolationCase:
    """Envs 0 and 1 store the same key in both tiers (env 1 last); then each looks it up.

    pre: 0 <= scope <= 1
    pre: 0 <= key <= 2 and 0 <= other_key <= 2
    post: isolation_failures(__return__) == []
    """
    m = make_manager(FIFO_CODE, scope, 2, 4)
    k, other = pick(key, 3), pick(other_key, 3)
    for env in (0, 1):
        m.store_root(env, k, tagged_entry(env, k, 0))
        m.store_recurrent(env, k, tagged_entry(env, k, 1))
    lookups = (
        m.lookup(0, k),
        m.lookup(1, k),
        m.lookup_recurrent(0, k),
        m.lookup_recurrent(1, k),
        m.lookup_root(0, other),
    )
    return IsolationCase(m.config.scope, k == other, lookups)


#: Search-driver opcodes: ``(opcode, n)``.
S_STORE, S_STORE_TWO, S_BEGIN, S_END = range(4)


@dataclass(frozen=True)
class SearchCase:
    op: int
    n: int
    capacity: int
    before: ManagerSnap
    after: ManagerSnap
    error: str | None


def search_failures(cases: Sequence[SearchCase]) -> list[str]:
    """The search budget: refusals change nothing; accepted stores are counted."""
    clauses: Clauses = []
    for i, c in enumerate(cases):
        b, a = c.before, c.after
        budget, used = b.search
        stores = 1 if c.op == S_STORE else 2 if c.op == S_STORE_TWO else 0
        state: tuple[int | None, int]
        if c.op == S_BEGIN:
            refuse, state = c.n > c.capacity, (c.n, 0)
        elif c.op == S_END:
            refuse, state = False, (None, 0)
        else:
            refuse = budget is not None and used + stores > budget
            state = (budget, used + stores if budget is not None else 0)
        done = a.recurrent.stats.inserts + a.recurrent.stats.updates
        done -= b.recurrent.stats.inserts + b.recurrent.stats.updates
        clauses.append(
            (
                f"search: step {i}: used <= budget",
                a.search[0] is None or 0 <= a.search[1] <= a.search[0],
            )
        )
        if refuse:
            clauses += [
                (
                    f"search: step {i}: refused with SearchCapacityError",
                    c.error == "SearchCapacityError",
                ),
                (f"search: step {i}: a refusal changes nothing", a == b),
            ]
        else:
            clauses += [
                (f"search: step {i}: accepted", c.error is None),
                (f"search: step {i}: budget bookkeeping", a.search == state),
                (f"search: step {i}: accepted stores are stored", done == stores),
            ]
    return failed(clauses)


def manager_search_driver(
    recurrent_capacity: int, nodes: int, ops: list[tuple[int, int]]
) -> list[SearchCase]:
    """``begin_search(nodes)`` then 4 operations against the budget.

    ``ops``: ``(opcode, n)`` decoded to ``S_STORE`` (store key n), ``S_STORE_TWO`` (one
    ``store_recurrent_many`` of keys n, n+1), ``S_BEGIN`` (declare n nodes), ``S_END``, with
    n in ``0..4``.

    pre: 1 <= recurrent_capacity <= 3
    pre: 0 <= nodes <= 4
    pre: len(ops) == 4
    post: search_failures(__return__) == []
    """
    m = make_manager(FIFO_CODE, 0, 1, recurrent_capacity, env_num=1)
    cases: list[SearchCase] = []
    for code, raw in [(S_BEGIN, nodes), *ops]:
        op, n = pick(code, 4), pick(raw, 5)
        before = manager_snapshot(m)
        error: str | None = None
        try:
            if op == S_STORE:
                m.store_recurrent(0, n, tagged_entry(0, n, len(cases)))
            elif op == S_STORE_TWO:
                keys = [n, n + 1]
                m.store_recurrent_many([0, 0], keys, [tagged_entry(0, k, 0) for k in keys])
            elif op == S_BEGIN:
                m.begin_search(n)
            else:
                m.end_search()
        except ZeroKVError as exc:
            error = type(exc).__name__
        after = manager_snapshot(m)
        cases.append(SearchCase(op, n, m.config.recurrent_capacity, before, after, error))
    return cases


def bad_manager_call(m: CacheManager, case: int) -> tuple[str, Callable[[], object]]:
    """Bad call number ``case`` on ``m`` (2 envs, context 4): expected error type, call."""
    prio = m.config.policy is Policy.PRIORITY
    entry = tagged_entry(0, 0, 9)
    two_layers = Entry(((1.0,), (2.0,)), ((1.0,), (2.0,)))
    too_long = Entry(((1.0,) * 5,), ((1.0,) * 5,))
    loose: Any = m  # for calls with ill-typed arguments, on purpose
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
        (
            "BatchError",
            lambda: m.store_recurrent_batch([0, 1], [0, 1], batch, Correction.zero(1, 5)),
        ),
        ("SearchCapacityError", lambda: m.begin_search(m.config.recurrent_capacity + 1)),
        ("SearchCapacityError", lambda: m.begin_search(-1)),
        ("SearchCapacityError", lambda: m.store_recurrent_many([0, 0, 1], [5, 6, 7], [entry] * 3)),
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


BAD_MANAGER_CASES = 24


@dataclass(frozen=True)
class GatherCase:
    """A hierarchical lookup of 1 - 3 rows, then ``gather_append`` or ``gather_reserve``."""

    t: int
    reserve: bool
    entries: tuple[Entry | None, ...]
    new_k: tuple[tuple[Tokens, ...], ...]
    before: ManagerSnap
    after: ManagerSnap
    result: Batch


def gather_step_failures(c: GatherCase) -> list[str]:
    """The batch a search step attends to: each row's newest tokens, then the new ones."""
    cl = 4
    drop = overflow_drop(cl, c.t, cl)
    kept = 0 if drop >= cl else cl - drop
    sizes = [0 if e is None else e.size for e in c.entries]
    rows_ok = True
    for b, e in enumerate(c.entries):
        n = min(sizes[b], kept)
        old = () if e is None else e.k[0][e.size - n :]
        new = tuple(0.0 for _ in range(c.t)) if c.reserve else c.new_k[0][b]
        row = c.result.k[0][b]
        rows_ok = rows_ok and row[c.result.width - n - c.t :] == old + new
    return failed(
        [
            ("gather_append: width = kept columns + t", c.result.width == kept + c.t),
            (
                "gather_append: lengths = min(size, kept) + t",
                c.result.lengths == tuple(min(n, kept) + c.t for n in sizes),
            ),
            ("gather_append: each row = newest kept tokens + the new ones", rows_ok),
            ("gather_append: left padding stays zero", padding_is_zero(c.result)),
            ("gather_append: nothing in the manager changes", c.after == c.before),
        ]
    )


def manager_gather_driver(sizes: list[int], hits: list[int], t: int, reserve: bool) -> GatherCase:
    """Store root entries of the given sizes (``hits`` decides which rows), look every row
    up, then ``gather_append`` t new tokens or ``gather_reserve`` t columns (cl = 4).

    pre: 1 <= len(sizes) <= 3
    pre: len(hits) == len(sizes)
    pre: 1 <= t <= 4
    post: gather_step_failures(__return__) == []
    """
    m = make_manager(0, 0, 3, 1)
    envs = [b % 2 for b in range(len(sizes))]
    keys = [10 + b for b in range(len(sizes))]
    entries: list[Entry | None] = []
    for b, s in enumerate(sizes):
        if pick(hits[b], 2):
            entry = make_entry(b, pick(s, 5), 1)
            m.store_root(envs[b], keys[b], entry)
            entries.append(entry)
        else:
            entries.append(None)
    lookups = m.lookup_many(envs, keys)
    t = 1 + pick(t - 1, 4)
    rows = range(len(sizes))
    new_k = (tuple(tuple(token(b, 0, 60 + j) for j in range(t)) for b in rows),)
    new_v = (tuple(tuple(token(b, 0, 60 + j, -1.0) for j in range(t)) for b in rows),)
    before = manager_snapshot(m)
    result = m.gather_reserve(lookups, t) if reserve else m.gather_append(lookups, new_k, new_v)
    return GatherCase(t, reserve, tuple(entries), new_k, before, manager_snapshot(m), result)


def manager_bad_input_driver(policy: int, scope: int, case: int) -> ErrorCase:
    """Every bad manager input raises its documented type and changes nothing, not even a
    statistic or the search budget (a search of 2 stores is in progress).

    pre: 0 <= policy <= 2 and 0 <= scope <= 1
    pre: 0 <= case < BAD_MANAGER_CASES
    post: error_failures(__return__) == []
    """
    m = make_manager(policy, scope, 2, 3)
    m.store_root(0, 0, tagged_entry(0, 0, 0))
    m.store_recurrent(1, 1, tagged_entry(1, 1, 1))
    m.lookup(1, 1)
    m.begin_search(2)
    before = manager_snapshot(m)
    expected, call = bad_manager_call(m, pick(case, BAD_MANAGER_CASES))
    raised: str | None = None
    try:
        call()
    except ZeroKVError as exc:
        raised = type(exc).__name__
    return ErrorCase(raised, expected, before, manager_snapshot(m))
