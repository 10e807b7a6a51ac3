"""Manager drivers: the CrossHair drivers of ``zerokv_spec.manager`` (5 of them).

``manager_ops_driver`` (sequences of stores, lookups and clears on two environments),
``manager_isolation_driver`` (who reads which entry, by scope), ``manager_search_driver``
(the search budget), ``manager_gather_driver`` (``gather_append`` / ``gather_reserve``)
and ``manager_bad_input_driver``; each with the record and clauses only it uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from zerokv_spec.drivers.clauses import (  # noqa: F401 - error_failures: in post: lines
    Clauses,
    ErrorCase,
    error_failures,
    failed,
    padding_is_zero,
)
from zerokv_spec.drivers.encodings import ABSENT_KEY, FIFO_CODE, MOp, pick
from zerokv_spec.drivers.fixtures import entry_env, make_entry, tagged_entry, token
from zerokv_spec.drivers.manager_clauses import (  # noqa: F401 - manager_run_failures: idem
    ManagerRun,
    apply_manager_op,
    manager_run_failures,
)
from zerokv_spec.drivers.snapshots import ManagerSnap, make_manager, manager_snapshot
from zerokv_spec.entry import Batch, Correction, Entry, Tokens, assemble, overflow_drop
from zerokv_spec.errors import ZeroKVError
from zerokv_spec.manager import CacheManager, Scope, Tier, TierLookup
from zerokv_spec.pool import Policy


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
