"""Pool drivers: the CrossHair drivers of ``zerokv_spec.pool`` (17 of them).

One operation on an arbitrary restored state (``pool_*_driver``, ``fifo_put_driver``,
``lru_put_driver``, ``priority_put_driver``), ``eviction_order`` against successive puts,
four operations against ``Model`` (``fifo_ops_driver``, ``lru_ops_driver``,
``priority_ops_driver``), batch operations against the fold of single ones
(``put_many_fold_driver``, ``get_many_fold_driver``) and every bad input
(``pool_bad_input_driver``). Records and clauses only these drivers use live here too.

Shared bounds: policy code 0..2, capacity 1..3, three raw slot descriptions (the first
``capacity`` are used), the FIFO pointer inside the ring; ints are decoded by ``pick``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zerokv_spec.drivers.clauses import (  # noqa: F401 - error_failures: in post: lines
    ErrorCase,
    error_failures,
    failed,
)
from zerokv_spec.drivers.encodings import (
    ABSENT_KEY,
    CLEAR,
    EVICT,
    FIFO_CODE,
    GET,
    KEY_AT,
    LRU_CODE,
    MAX_KEY,
    PEEK,
    PRIORITY_CODE,
    PUT,
    SET_PRIORITY,
    SLOT_OF,
    WRITTEN_VALUE,
    Op,
    SlotSpec,
    fingerprint_arg,
    pick,
    priority_arg,
)
from zerokv_spec.drivers.model import Run, run_failures, run_ops  # noqa: F401 - in post: lines
from zerokv_spec.drivers.pool_clauses import OpCase, apply_op, op_failures  # noqa: F401 - idem
from zerokv_spec.drivers.snapshots import PoolSnap, restore, snapshot
from zerokv_spec.errors import ZeroKVError
from zerokv_spec.keys import INT64_MAX, INT64_MIN
from zerokv_spec.pool import Policy, SlotPool


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
