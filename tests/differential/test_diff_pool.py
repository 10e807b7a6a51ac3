"""Differential machines for one ``zerokv.SlotPool`` against ``zerokv_spec.pool`` pools.

One machine per policy (FIFO, LRU, PRIORITY) and index (device, host). Each draws a
capacity (1 .. 5, one-slot pools often), a shape, the CPU shortcuts on or off for the
device ``SlotIndex`` (off: exactly the CUDA code path; the ``Host*`` machines run
``HostIndex`` instead) and ``num_pools`` (1 or 2: with 2 the implementation holds both
pools in one instance and every batched call carries ``pool_ids``; the spec has one pool
per id and folds the rows over them). Rules:

* ``get_many`` / ``peek_many`` - batches with duplicate keys, fingerprints absent, present
  or mixed (``has_fingerprint``), right (the stored one) or deliberately wrong
  (collisions); status, slot and the returned K/V (``read`` and ``gather`` at several
  widths) are compared row by row;
* ``put_many`` - batches up to ``2 * capacity + 2`` rows with duplicate keys, keys evicted
  and stored again in the same batch, priorities (PRIORITY) given, absent or mixed; slot,
  evicted key and inserted flag are compared row by row;
* ``evict``, ``clear`` (one pool or all), ``set_priority``, ``reset_stats``;
* host queries ``slot_of`` / ``key_at`` / ``in`` / ``len``, errors included.

After every step the invariant compares the complete ``PoolView`` of every pool (slot
keys, fingerprints, eviction order, size, statistics, stored K/V, priorities, FIFO pointer)
and runs the implementation's own runtime contract.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, precondition, rule

import zerokv
from zerokv.testing import (
    Shape,
    assert_views,
    decode_batch,
    decode_entries,
    encode_entries,
    fingerprint_tensors,
    impl_pool_view,
    keys_tensor,
    priority_tensors,
    run_both,
    spec_pool_view,
)
from zerokv.testing.stateful import (
    FINGERPRINTS,
    KEYS,
    PRIORITIES,
    DiffMachine,
    assert_put_results,
    entry_sizes,
    shapes,
)
from zerokv_spec.entry import Entry, assemble
from zerokv_spec.pool import Lookup, LookupStatus, Policy, PutResult, SlotPool, make_pool
from zerokv_spec.stats import PoolStats

Rows = list[tuple[int, int]]  # (pool id, key) per row


class PoolMachine(DiffMachine):
    """Spec pools vs one implementation ``SlotPool`` of ``policy`` (module docstring)."""

    policy: ClassVar[Policy] = Policy.FIFO
    #: ``HostIndex`` (True) or the device ``SlotIndex`` with the CPU shortcuts drawn on or
    #: off (False). One test case per index, so that 40 examples exercise each of them.
    host: ClassVar[bool] = False

    @initialize(
        capacity=st.sampled_from([3, 1, 2, 4, 5, 1]),
        num_pools=st.sampled_from([1, 2]),
        shape=shapes(),
        keys=st.permutations(KEYS),
        shortcuts=st.booleans(),
    )
    def setup(
        self, capacity: int, num_pools: int, shape: Shape, keys: list[int], shortcuts: bool
    ) -> None:
        backend = "host" if self.host else "device" if shortcuts else "device-exact"
        self.shape = shape
        self.capacity = capacity
        self.num_pools = num_pools
        # A key universe a little larger than the pools: hits, evictions and re-stores.
        self.keys = keys[: min(len(keys), capacity * num_pools + 2)]
        self.impl = zerokv.SlotPool(
            capacity,
            policy=self.policy,
            num_layers=shape.num_layers,
            num_heads=shape.num_heads,
            head_dim=shape.head_dim,
            context_length=shape.context_length,
            num_pools=num_pools,
            index=self.use_backend(backend),
        )
        self.spec: list[SlotPool[Entry]] = [
            make_pool(self.policy, capacity) for _ in range(num_pools)
        ]
        self.ready = True

    # ------------------------------------------------------------------ drawing
    def draw_rows(self, data: st.DataObject, max_rows: int) -> Rows:
        """Rows of (pool, key); keys stored in the row's pool are preferred (hits)."""
        n = data.draw(st.integers(0, max_rows), label="rows")
        rows: Rows = []
        for _ in range(n):
            pool = data.draw(st.integers(0, self.num_pools - 1))
            rows.append((pool, self.draw_key(data, pool)))
        return rows

    def pool_ids(self, data: st.DataObject, rows: Rows) -> torch.Tensor | None:
        if self.num_pools == 1 and data.draw(st.booleans(), label="implicit pool ids"):
            return None
        return keys_tensor([p for p, _ in rows])

    def stored_fingerprint(self, pool: int, key: int) -> int | None:
        spec = self.spec[pool]
        slot = spec.index.get(key)
        return None if slot is None else spec.slot_fingerprints[slot]

    def draw_fingerprints(
        self, data: st.DataObject, rows: Rows
    ) -> tuple[list[int | None], torch.Tensor | None, torch.Tensor | None]:
        mode = data.draw(st.sampled_from(["none", "all", "mixed"]), label="fingerprint mode")
        choices = {"none": ["absent"], "all": ["stored", "stored", "random"]}.get(
            mode, ["absent", "stored", "stored", "random"]
        )
        fps: list[int | None] = []
        for pool, key in rows:
            how = data.draw(st.sampled_from(choices))
            random_fp = data.draw(st.sampled_from(FINGERPRINTS))
            stored = self.stored_fingerprint(pool, key)
            if how == "absent":
                fps.append(None)
            elif how == "stored" and stored is not None:
                fps.append(stored)
            else:
                fps.append(random_fp)  # often a deliberate mismatch
        garbage = data.draw(
            st.lists(st.sampled_from(FINGERPRINTS), min_size=len(rows), max_size=len(rows))
        )
        implicit = data.draw(st.booleans(), label="implicit has_fingerprint")
        fp_t, has_t = fingerprint_tensors(fps, garbage, implicit)
        return fps, fp_t, has_t

    # ------------------------------------------------------------------ lookups
    def check_lookups(
        self,
        data: st.DataObject,
        rows: Rows,
        statuses: list[LookupStatus],
        values: list[Entry | None],
        out: zerokv.Lookup,
        pid_t: torch.Tensor | None,
    ) -> None:
        expected_status = [int(s) for s in statuses]
        got_status = out.status.tolist()
        assert got_status == expected_status, f"status: spec {expected_status} impl {got_status}"
        for status in statuses:
            event(f"lookup: {status.name}")
        expected_slot = [
            self.spec[p].index[k] if s is LookupStatus.HIT else -1
            for (p, k), s in zip(rows, statuses)
        ]
        got_slot = out.slot.tolist()
        assert got_slot == expected_slot, f"slot: spec {expected_slot} impl {got_slot}"
        empty = Entry.empty(self.shape.num_layers)
        expected = [v if v is not None else empty for v in values]
        got = list(decode_entries(self.impl.read(out, pid_t), self.shape))
        assert got == expected, f"read K/V differ:\n spec {expected}\n impl {got}"
        if not rows:
            return
        longest = max(e.size for e in expected)
        width = data.draw(
            st.sampled_from([None, longest, longest + 1, self.shape.context_length + 1]),
            label="gather width",
        )
        spec_batch = assemble(expected, self.shape.context_length if width is None else width)
        got_batch = decode_batch(self.impl.gather(out, width, pid_t), self.shape)
        assert got_batch == spec_batch, f"gather differs:\n spec {spec_batch}\n impl {got_batch}"

    @precondition(lambda self: self.ready)
    @rule(data=st.data())
    def get_many(self, data: st.DataObject) -> None:
        self.do_get_many(data)

    @precondition(lambda self: self.ready)
    @rule(data=st.data())
    def put_then_get(self, data: st.DataObject) -> None:
        """A put and a lookup in one step (swarm testing often disables single rules)."""
        self.do_put_many(data)
        self.do_get_many(data)

    def do_get_many(self, data: st.DataObject) -> None:
        rows = self.draw_rows(data, 2 * self.capacity + 2)
        fps, fp_t, has_t = self.draw_fingerprints(data, rows)
        pid_t = self.pool_ids(data, rows)
        keys = [k for _, k in rows]
        results: list[Lookup[Entry]]
        if self.num_pools == 1:
            results = self.spec[0].get_many(keys, fps)
        else:
            results = [self.spec[p].get(k, f) for (p, k), f in zip(rows, fps)]
        out = self.impl.get_many(keys_tensor(keys), fp_t, has_t, pid_t)
        self.check_lookups(
            data, rows, [r.status for r in results], [r.value for r in results], out, pid_t
        )

    @precondition(lambda self: self.ready)
    @rule(data=st.data())
    def peek_many(self, data: st.DataObject) -> None:
        rows = self.draw_rows(data, self.capacity + 2)
        fps, fp_t, has_t = self.draw_fingerprints(data, rows)
        pid_t = self.pool_ids(data, rows)
        keys = [k for _, k in rows]
        statuses = [self.spec[p]._match(k, f)[0] for (p, k), f in zip(rows, fps)]
        values: list[Entry | None]
        if self.num_pools == 1:
            values = self.spec[0].peek_many(keys, fps)
        else:
            values = [self.spec[p].peek(k, f) for (p, k), f in zip(rows, fps)]
        out = self.impl.peek_many(keys_tensor(keys), fp_t, has_t, pid_t)
        self.check_lookups(data, rows, statuses, values, out, pid_t)

    # ------------------------------------------------------------------ puts
    @precondition(lambda self: self.ready)
    @rule(data=st.data())
    def put_many(self, data: st.DataObject) -> None:
        self.do_put_many(data)

    def do_put_many(self, data: st.DataObject) -> None:
        rows = self.draw_rows(data, 2 * self.capacity + 2)
        fps, fp_t, has_t = self.draw_fingerprints(data, rows)
        pid_t = self.pool_ids(data, rows)
        keys = [k for _, k in rows]
        cl = self.shape.context_length
        entries = [
            self.source.entry(self.shape.num_layers, data.draw(entry_sizes(cl), label="size"))
            for _ in rows
        ]
        prios: list[float | None] = [None] * len(rows)
        prio_t: torch.Tensor | None = None
        has_prio: torch.Tensor | None = None
        if self.policy is Policy.PRIORITY:
            prios = data.draw(
                st.lists(
                    st.none() | st.sampled_from(PRIORITIES),
                    min_size=len(rows),
                    max_size=len(rows),
                ),
                label="priorities",
            )
            prio_t, has_prio = priority_tensors(
                prios, garbage=-7.0, implicit=data.draw(st.booleans())
            )
        results: list[PutResult]
        if self.num_pools == 1:
            results = self.spec[0].put_many(keys, entries, fps, prios)
        else:
            results = [
                self.spec[p].put(k, e, f, pr) for (p, k), e, f, pr in zip(rows, entries, fps, prios)
            ]
        out = self.impl.put_many(
            keys_tensor(keys),
            encode_entries(entries, self.shape),
            fp_t,
            has_t,
            prio_t,
            has_prio,
            pid_t,
        )
        assert_put_results(results, out)

    # ------------------------------------------------------------------ removal
    def draw_key(self, data: st.DataObject, pool: int) -> int:
        stored = list(self.spec[pool].index)
        prefer_stored: bool = bool(stored) and data.draw(st.booleans())
        return data.draw(st.sampled_from(stored if prefer_stored else self.keys))

    @precondition(lambda self: self.ready)
    @rule(data=st.data(), what=st.sampled_from(["evict", "clear", "evict", "clear", "reset_stats"]))
    def remove(self, data: st.DataObject, what: str) -> None:
        """``evict`` (a stored key or any key), ``clear`` (one pool or all), ``reset_stats``."""
        if what == "evict":
            pool = data.draw(st.integers(0, self.num_pools - 1))
            key = self.draw_key(data, pool)
            spec = self.spec[pool]
            run_both(lambda: spec.evict(key), lambda: self.impl.evict(key, pool))
        elif what == "clear":
            which = data.draw(st.none() | st.integers(0, self.num_pools - 1))
            for p, pool_ in enumerate(self.spec):
                if which is None or p == which:
                    pool_.clear()
            self.impl.clear(which)
        else:
            for pool_ in self.spec:
                pool_.stats.reset()
            self.impl.reset_stats()

    @precondition(lambda self: self.ready and self.policy is Policy.PRIORITY)
    @rule(data=st.data(), priority=st.sampled_from(PRIORITIES))
    def set_priority(self, data: st.DataObject, priority: float) -> None:
        self.do_set_priority(data, priority)

    def do_set_priority(self, data: st.DataObject, priority: float) -> None:
        pool = data.draw(st.integers(0, self.num_pools - 1))
        key = self.draw_key(data, pool)
        spec = self.spec[pool]
        run_both(
            lambda: spec.set_priority(key, priority),
            lambda: self.impl.set_priority(key, priority, pool),
        )

    # ------------------------------------------------------------------ host queries
    @precondition(lambda self: self.ready)
    @rule(data=st.data())
    def host_queries(self, data: st.DataObject) -> None:
        pool = data.draw(st.integers(0, self.num_pools - 1))
        key = self.draw_key(data, pool)
        spec = self.spec[pool]
        both = run_both(lambda: spec.slot_of(key), lambda: self.impl.slot_of(key, pool))
        if both is not None:
            assert both[0] == both[1], f"slot_of({key}): spec {both[0]} impl {both[1]}"
        slot = data.draw(st.integers(-1, self.capacity))
        got = run_both(lambda: spec.key_at(slot), lambda: self.impl.key_at(slot, pool))
        if got is not None:
            assert got[0] == got[1], f"key_at({slot}): spec {got[0]} impl {got[1]}"
        assert (key in self.spec[0]) == (key in self.impl), f"{key} in pool 0 differs"
        assert len(self.spec[0]) == len(self.impl)
        if self.policy is not Policy.PRIORITY:  # refused by both (UnsupportedOperationError)
            self.do_set_priority(data, data.draw(st.sampled_from(PRIORITIES)))

    # ------------------------------------------------------------------ invariant
    @precondition(lambda self: self.ready)
    @invariant()
    def same_state(self) -> None:
        total = PoolStats()
        for p, spec in enumerate(self.spec):
            view = impl_pool_view(self.impl, p, self.shape)
            assert_views(spec_pool_view(spec), view, f"pool {p}")
            assert spec.occupancy == self.impl.size(p) / self.capacity
            total = total + spec.stats
        assert self.impl.stats(None) == total, f"summed stats differ: {self.impl.stats(None)}"
        self.impl.check()


class FIFOPoolMachine(PoolMachine):
    policy = Policy.FIFO


class LRUPoolMachine(PoolMachine):
    policy = Policy.LRU


class PriorityPoolMachine(PoolMachine):
    policy = Policy.PRIORITY


class HostFIFOPoolMachine(PoolMachine):
    policy, host = Policy.FIFO, True


class HostLRUPoolMachine(PoolMachine):
    policy, host = Policy.LRU, True


class HostPriorityPoolMachine(PoolMachine):
    policy, host = Policy.PRIORITY, True


TestFIFOPool = FIFOPoolMachine.TestCase
TestLRUPool = LRUPoolMachine.TestCase
TestPriorityPool = PriorityPoolMachine.TestCase
TestHostFIFOPool = HostFIFOPoolMachine.TestCase
TestHostLRUPool = HostLRUPoolMachine.TestCase
TestHostPriorityPool = HostPriorityPoolMachine.TestCase
