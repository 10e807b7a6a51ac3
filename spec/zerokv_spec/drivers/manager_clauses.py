"""Manager clauses: the record of one manager operation and the contracts of manager runs.

``apply_manager_op`` applies one encoded manager operation and records it as a
``ManagerCase``; ``manager_step_failures`` lists the clauses it violates (tiers, counting,
environment isolation, clears) and ``manager_run_failures`` those of a whole run (every
step, the latest-write oracle, isolation, the statistics identities).
"""

from __future__ import annotations

from dataclasses import dataclass

from zerokv_spec.drivers.clauses import Clauses, failed
from zerokv_spec.drivers.encodings import (
    CLEAR_ALL,
    CLEAR_ENV,
    CLEAR_RECURRENT,
    LOOKUP,
    LOOKUP_RECURRENT,
    LOOKUP_ROOT,
    LOOKUPS,
    STORE_RECURRENT,
    STORE_ROOT,
)
from zerokv_spec.drivers.fixtures import entry_env, tagged_entry
from zerokv_spec.drivers.snapshots import ManagerSnap, manager_snapshot
from zerokv_spec.entry import Entry
from zerokv_spec.errors import ZeroKVError
from zerokv_spec.manager import CacheManager, Scope, Tier, TierLookup


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
