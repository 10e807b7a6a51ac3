"""Pool clauses: the record of one pool operation and the contract of every operation.

``apply_op`` applies one encoded operation to a pool and records it as an ``OpCase``
(states before and after, result, error). ``op_failures`` lists the clauses it violates:
those of its operation (``get_failures`` .. ``key_at_failures``, each recomputing what the
policy must do from the raw state before) and the state clauses (``state_failures``) of
both states.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace

from zerokv_spec.drivers.clauses import Clauses, failed
from zerokv_spec.drivers.encodings import (
    CLEAR,
    EVICT,
    GET,
    KEY_AT,
    PEEK,
    PUT,
    SET_PRIORITY,
    SLOT_OF,
    fingerprint_arg,
    priority_arg,
)
from zerokv_spec.drivers.snapshots import PoolSnap, snapshot
from zerokv_spec.errors import ZeroKVError
from zerokv_spec.pool import Lookup, LookupStatus, Policy, PutResult, SlotPool, make_pool
from zerokv_spec.stats import PoolStats


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
