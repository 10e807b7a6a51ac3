"""The naive model: an independent re-implementation of the three policies, and runs.

``Model`` keeps a list of slots and per-policy bookkeeping in plain lists and dicts (no
code shared with ``zerokv_spec.pool``). ``run_ops`` applies a sequence of encoded
operations to a pool; ``run_failures`` checks every step's contract, the model's agreement
with each step (``model_failures``) and the latest-write oracle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from zerokv_spec.drivers.encodings import (
    CLEAR,
    EVICT,
    GET,
    KEY_AT,
    OP_NAMES,
    PEEK,
    PUT,
    SET_PRIORITY,
    SLOT_OF,
    WRITTEN_VALUE,
    Op,
    decode_op,
    fingerprint_arg,
    priority_arg,
)
from zerokv_spec.drivers.pool_clauses import OpCase, apply_op, op_failures
from zerokv_spec.drivers.snapshots import PoolSnap, snapshot
from zerokv_spec.pool import Lookup, Policy, PutResult, SlotPool


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
