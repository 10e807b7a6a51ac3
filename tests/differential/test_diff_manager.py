"""Differential machines for ``zerokv.CacheManager`` against ``zerokv_spec.manager``.

Two machines, ``Scope.ENV`` and ``Scope.GLOBAL``; each draws the policy, the index
backend (``common.BACKENDS``), the shape,
``env_num`` (1 .. 3, mostly 2), tiny root and recurrent capacities, and a key universe
shared by every environment (so the same key lives in two environments' pools and, with
``Scope.ENV``, twice in the recurrent pool). Both managers get equal configurations
(``CacheConfig.spec_config()``). Rules:

* ``lookup`` - hierarchical / root / recurrent lookups of batches with duplicate keys and
  fingerprints absent / right / wrong / mixed; tier, slot, collided flag and the K/V read
  back are compared row by row; env ids given as a list or a CPU tensor;
* ``gather_last`` - the last lookup gathered later, after whatever rules ran since: both
  sides gather the same batch, or both refuse a stale lookup (``StaleLookupError``);
* ``expand`` - one MCTS step: lookup, ``gather`` (static width ``cl`` or the dynamic
  longest width) and ``append`` of ``t`` = 1 .. 3 new tokens (the overflow rule at width
  ``cl``), or the fused ``gather_append``; optional ``remove_registers``, then
  ``store_root_batch`` or
  ``store_recurrent_batch`` with a correction table (zero or not); the batch is compared
  after every stage and the put results row by row;
* ``store_many`` - ``store_root_many`` / ``store_recurrent_many`` of fresh entries;
* ``clear_env`` / ``clear_roots`` / ``clear_recurrent`` / ``clear_all`` (also in the middle
  of a declared search), ``begin_search`` (refusals included) / ``end_search``,
  ``set_priority`` on either tier (refused for FIFO / LRU, ``KeyNotFoundError``,
  ``Tier.MISS``), ``reset_stats``, ``entry_at``.

Every call goes through ``run_both``: an error (a store over the search budget, say) must be
the same type on both sides. The invariant compares the manager statistics, the per-tier
and per-environment pool statistics, the complete view of every root pool and of the
recurrent pool (slot keys - scoped keys in ``Scope.ENV`` -, fingerprints, eviction order,
stored K/V, priorities, FIFO pointer), the search budget, and runs the implementation's
runtime contract.
"""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, precondition, rule

import zerokv
from zerokv.testing import (
    Shape,
    assert_same_manager,
    decode_batch,
    decode_entries,
    encode_correction,
    encode_entries,
    encode_new_tokens,
    fingerprint_tensors,
    keys_tensor,
    priority_tensors,
    run_both,
)
from zerokv.testing.stateful import (
    BACKENDS,
    COMPILED,
    FINGERPRINTS,
    KEYS,
    PRIORITIES,
    DiffMachine,
    assert_put_results,
    cache_config,
    clear_both,
    entry_sizes,
    shapes,
)
from zerokv_spec import entry as spec_entry
from zerokv_spec.entry import Correction, Entry
from zerokv_spec.manager import CacheManager, Scope, Tier, TierLookup
from zerokv_spec.pool import Policy

Rows = list[tuple[int, int]]  # (env id, key) per row
TIERS = ("hierarchical", "root", "recurrent")


class ManagerMachine(DiffMachine):
    """Spec manager vs implementation manager (module docstring)."""

    scope: ClassVar[Scope] = Scope.ENV

    @initialize(
        shape=shapes(),
        env_num=st.sampled_from([2, 2, 1, 3]),
        root_capacity=st.sampled_from([1, 2, 3]),
        recurrent_capacity=st.sampled_from([1, 2, 3, 5]),
        policy=st.sampled_from(list(Policy)),
        keys=st.permutations(KEYS),
        backend=st.sampled_from(BACKENDS),
    )
    def setup(
        self,
        shape: Shape,
        env_num: int,
        root_capacity: int,
        recurrent_capacity: int,
        policy: Policy,
        keys: list[int],
        backend: str,
    ) -> None:
        self.shape = shape
        self.config = cache_config(
            shape,
            env_num,
            root_capacity=root_capacity,
            recurrent_capacity=recurrent_capacity,
            policy=policy,
            scope=self.scope,
            index=self.use_backend(backend),
            compile=backend == COMPILED,
        )
        self.impl = zerokv.CacheManager(self.config)
        self.spec = CacheManager(self.config.spec_config())
        self.keys = keys[: max(3, root_capacity + 2)]
        self.last_fp: dict[int, int] = {}
        self.stored_keys: set[int] = set()
        self.last_lookup: tuple[list[TierLookup], zerokv.TierLookup] | None = None
        self.ready = True

    # ------------------------------------------------------------------ drawing
    def draw_rows(self, data: st.DataObject, max_rows: int) -> Rows:
        """Rows of (env, key); keys stored recently are preferred (hits)."""
        n = data.draw(st.integers(0, max_rows), label="rows")
        env = st.integers(0, self.config.env_num - 1)
        key = st.sampled_from(self.keys)
        if self.stored_keys:
            key = st.sampled_from(sorted(self.stored_keys)) | key
        return data.draw(st.lists(st.tuples(env, key), min_size=n, max_size=n), label="rows")

    def env_arg(self, data: st.DataObject, rows: Rows) -> list[int] | torch.Tensor:
        envs = [e for e, _ in rows]
        if data.draw(st.booleans(), label="env ids as a tensor"):
            return torch.tensor(envs, dtype=torch.int64).view(len(envs))
        return envs

    def draw_fingerprints(
        self, data: st.DataObject, rows: Rows
    ) -> tuple[list[int | None], torch.Tensor | None, torch.Tensor | None]:
        mode = data.draw(st.sampled_from(["none", "all", "mixed"]), label="fingerprint mode")
        choices = {"none": ["absent"], "all": ["last", "last", "random"]}.get(
            mode, ["absent", "last", "last", "random"]
        )
        fps: list[int | None] = []
        for _, key in rows:
            how = data.draw(st.sampled_from(choices))
            random_fp = data.draw(st.sampled_from(FINGERPRINTS))
            if how == "absent":
                fps.append(None)
            elif how == "last" and key in self.last_fp:
                fps.append(self.last_fp[key])
            else:
                fps.append(random_fp)
        garbage = data.draw(
            st.lists(st.sampled_from(FINGERPRINTS), min_size=len(rows), max_size=len(rows))
        )
        fp_t, has_t = fingerprint_tensors(fps, garbage, data.draw(st.booleans()))
        return fps, fp_t, has_t

    def draw_priorities(
        self, data: st.DataObject, n: int
    ) -> tuple[list[float | None], torch.Tensor | None, torch.Tensor | None]:
        if self.config.policy is not Policy.PRIORITY:
            return [None] * n, None, None
        prios = data.draw(st.lists(st.none() | st.sampled_from(PRIORITIES), min_size=n, max_size=n))
        p_t, has_p = priority_tensors(prios, garbage=-9.0, implicit=data.draw(st.booleans()))
        return prios, p_t, has_p

    def draw_correction(self, data: st.DataObject) -> Correction:
        cl, layers = self.shape.context_length, self.shape.num_layers
        if data.draw(st.booleans(), label="zero correction"):
            return Correction.zero(layers, cl)
        value = st.integers(-3, 3).map(float)
        row = st.lists(value, min_size=cl - 3, max_size=cl - 3).map(tuple)
        table = st.lists(row, min_size=layers, max_size=layers).map(tuple)
        return Correction(data.draw(table), data.draw(table))

    def remember(self, rows: Rows, fps: list[int | None]) -> None:
        for (_, key), fp in zip(rows, fps):
            self.stored_keys.add(key)
            if fp is not None:
                self.last_fp[key] = fp

    # ------------------------------------------------------------------ lookups
    def do_lookup(
        self, data: st.DataObject, max_rows: int
    ) -> tuple[Rows, list[TierLookup], zerokv.TierLookup] | None:
        rows = self.draw_rows(data, max_rows)
        fps, fp_t, has_t = self.draw_fingerprints(data, rows)
        tiers = data.draw(st.sampled_from(TIERS), label="tiers")
        envs = [e for e, _ in rows]
        keys = [k for _, k in rows]
        env_arg = self.env_arg(data, rows)
        both = run_both(
            lambda: self.spec.lookup_many(envs, keys, fps, tiers),
            lambda: self.impl.lookup_many(env_arg, keys_tensor(keys), fp_t, has_t, tiers),
        )
        assert both is not None, "a valid lookup raised on both sides"
        spec, found = both
        want = [(int(r.tier), -1 if r.slot is None else r.slot, r.collided) for r in spec]
        got = list(
            zip(
                found.tier.tolist(),
                found.slot.tolist(),
                [bool(c) for c in found.collided.tolist()],
            )
        )
        assert got == want, f"lookup (tier, slot, collided):\n spec {want}\n impl {got}"
        for r in spec:
            event(f"lookup {tiers}: {r.tier.name}{' (collided)' if r.collided else ''}")
        empty = Entry.empty(self.shape.num_layers)
        expected = [r.entry if r.entry is not None else empty for r in spec]
        read = list(decode_entries(self.impl.read(found), self.shape))
        assert read == expected, f"looked-up K/V differ:\n spec {expected}\n impl {read}"
        if rows:
            self.last_lookup = (spec, found)
        return rows, spec, found

    @precondition(lambda self: self.ready and self.last_lookup is not None)
    @rule()
    def gather_last(self) -> None:
        """The last lookup, gathered later: fresh on both sides, or stale on both (a store or
        a clear happened since: ``StaleLookupError``)."""
        assert self.last_lookup is not None
        spec_found, found = self.last_lookup
        cl = self.shape.context_length
        both = run_both(lambda: self.spec.gather(spec_found, cl), lambda: self.impl.gather(found))
        event(f"gather of the last lookup: {'fresh' if both is not None else 'stale'}")
        if both is not None:
            batch, ibatch = both
            got = decode_batch(ibatch, self.shape)
            assert got == batch, f"gather of the last lookup:\n spec {batch}\n impl {got}"

    @precondition(lambda self: self.ready)
    @rule(data=st.data())
    def lookup(self, data: st.DataObject) -> None:
        self.do_lookup(data, 6)

    @precondition(lambda self: self.ready)
    @rule(data=st.data())
    def expand(self, data: st.DataObject) -> None:
        """Lookup -> gather -> append -> (remove registers) -> store a batch."""
        looked = self.do_lookup(data, 5)
        assert looked is not None
        rows, spec_found, impl_found = looked
        if not rows:
            return
        cl, layers = self.shape.context_length, self.shape.num_layers
        static = data.draw(st.booleans(), label="static width")
        longest = max(0 if r.entry is None else r.entry.size for r in spec_found)
        # gather then append, or (static width only) the fused gather_append, or
        # gather_reserve followed by the model writing its tokens in place.
        mode = "separate"
        if static:
            mode = data.draw(st.sampled_from(["separate", "fused", "reserve"]), label="mode")
        t = data.draw(st.integers(1, 3), label="new tokens")
        new_k, new_v = self.source.new_tokens(layers, len(rows), t)
        new_kv = encode_new_tokens(new_k, new_v, self.shape)
        if mode == "fused":
            event("gather_append")
            batch = self.spec.gather_append(spec_found, new_k, new_v)
            ibatch = self.impl.gather_append(impl_found, new_kv)
            got = decode_batch(ibatch, self.shape)
            assert got == batch, f"gather_append differs:\n spec {batch}\n impl {got}"
        elif mode == "reserve":
            event("gather_reserve")
            reserved = self.spec.gather_reserve(spec_found, t)
            ibatch = self.impl.gather_reserve(impl_found, t)
            # Zero tokens have no encoding of their own: check them and the lengths here,
            # the kept columns once the model's tokens are in.
            assert ibatch.width == reserved.width
            assert ibatch.lengths.tolist() == list(reserved.lengths)
            assert not ibatch.kv[:, :, :, :, -t:, :].any(), "reserved columns are not zero"
            ibatch.kv[:, :, :, :, -t:, :] = new_kv  # the model writes its tokens in place
            batch = self.spec.gather_append(spec_found, new_k, new_v)
            got = decode_batch(ibatch, self.shape)
            assert got == batch, f"written batch differs:\n spec {batch}\n impl {got}"
        else:
            batch = self.spec.gather(spec_found, cl if static else None)
            ibatch = self.impl.gather(impl_found, cl if static else longest)
            got = decode_batch(ibatch, self.shape)
            assert got == batch, f"gather differs:\n spec {batch}\n impl {got}"
            drop = spec_entry.overflow_drop(batch.width, t, cl)
            event(f"append: drop {drop} of {batch.width}")
            batch = spec_entry.append(batch, new_k, new_v, cl)
            ibatch = zerokv.append(ibatch, new_kv, cl)
            got = decode_batch(ibatch, self.shape)
            assert got == batch, f"append differs:\n spec {batch}\n impl {got}"

        registers = data.draw(st.integers(0, 2), label="registers")
        if registers and registers <= batch.width:
            batch = spec_entry.remove_registers(batch, registers)
            ibatch = zerokv.remove_registers(ibatch, registers)
            got = decode_batch(ibatch, self.shape)
            assert got == batch, f"remove_registers differs:\n spec {batch}\n impl {got}"

        tier = data.draw(st.sampled_from([Tier.ROOT, Tier.RECURRENT]), label="store tier")
        envs = [e for e, _ in rows]
        keys = data.draw(
            st.lists(st.sampled_from(self.keys), min_size=len(rows), max_size=len(rows))
        )
        store_rows = list(zip(envs, keys))
        fps, fp_t, has_t = self.draw_fingerprints(data, store_rows)
        prios, p_t, has_p = self.draw_priorities(data, len(rows))
        correction = self.draw_correction(data)
        icorrection = encode_correction(correction, self.shape)
        env_arg = self.env_arg(data, store_rows)
        spec_store = (
            self.spec.store_root_batch if tier is Tier.ROOT else self.spec.store_recurrent_batch
        )
        impl_store = (
            self.impl.store_root_batch if tier is Tier.ROOT else self.impl.store_recurrent_batch
        )
        both = run_both(
            lambda: spec_store(envs, keys, batch, correction, fps, prios),
            lambda: impl_store(
                env_arg, keys_tensor(keys), ibatch, icorrection, fp_t, has_t, p_t, has_p
            ),
        )
        if both is not None:
            assert_put_results(*both)
            self.remember(store_rows, fps)

    # ------------------------------------------------------------------ stores
    @precondition(lambda self: self.ready)
    @rule(data=st.data(), tier=st.sampled_from([Tier.ROOT, Tier.RECURRENT]))
    def store_many(self, data: st.DataObject, tier: Tier) -> None:
        self.do_store_many(data, tier)

    @precondition(lambda self: self.ready)
    @rule(data=st.data(), tier=st.sampled_from([Tier.ROOT, Tier.RECURRENT]))
    def store_then_lookup(self, data: st.DataObject, tier: Tier) -> None:
        """A store and a lookup in one step (swarm testing often disables single rules)."""
        self.do_store_many(data, tier)
        self.do_lookup(data, 6)

    def do_store_many(self, data: st.DataObject, tier: Tier) -> None:
        cap = self.config.root_capacity if tier is Tier.ROOT else self.config.recurrent_capacity
        rows = self.draw_rows(data, 2 * cap + 2)
        fps, fp_t, has_t = self.draw_fingerprints(data, rows)
        prios, p_t, has_p = self.draw_priorities(data, len(rows))
        cl = self.shape.context_length
        entries = [
            self.source.entry(self.shape.num_layers, data.draw(entry_sizes(cl))) for _ in rows
        ]
        envs = [e for e, _ in rows]
        keys = [k for _, k in rows]
        env_arg = self.env_arg(data, rows)
        spec_store = (
            self.spec.store_root_many if tier is Tier.ROOT else self.spec.store_recurrent_many
        )
        impl_store = (
            self.impl.store_root_many if tier is Tier.ROOT else self.impl.store_recurrent_many
        )
        both = run_both(
            lambda: spec_store(envs, keys, entries, fps, prios),
            lambda: impl_store(
                env_arg,
                keys_tensor(keys),
                encode_entries(entries, self.shape),
                fp_t,
                has_t,
                p_t,
                has_p,
            ),
        )
        if both is not None:
            assert_put_results(*both)
            self.remember(rows, fps)

    # ------------------------------------------------------------------ clearing
    @precondition(lambda self: self.ready)
    @rule(data=st.data(), which=st.sampled_from(["env", "env", "roots", "recurrent", "all"]))
    def clear(self, data: st.DataObject, which: str) -> None:
        """``clear_env`` / ``clear_roots`` / ``clear_recurrent`` / ``clear_all``."""
        if self.spec.search_budget is not None:
            event(f"clear {which} during a search")
        env = data.draw(st.integers(0, self.config.env_num - 1)) if which == "env" else 0
        clear_both(self.spec, self.impl, which, env)

    # ------------------------------------------------------------------ searches
    @precondition(lambda self: self.ready)
    @rule(data=st.data(), begin=st.sampled_from([True, True, False]))
    def search(self, data: st.DataObject, begin: bool) -> None:
        """``begin_search`` (over the capacity: refused by both) or ``end_search``."""
        if begin:
            nodes = data.draw(st.integers(0, self.config.recurrent_capacity + 2), label="nodes")
            run_both(lambda: self.spec.begin_search(nodes), lambda: self.impl.begin_search(nodes))
        else:
            self.spec.end_search()
            self.impl.end_search()

    # ------------------------------------------------------------------ priorities
    @precondition(lambda self: self.ready and self.config.policy is Policy.PRIORITY)
    @rule(data=st.data())
    def set_priority(self, data: st.DataObject) -> None:
        self.do_set_priority(data)

    def do_set_priority(self, data: st.DataObject) -> None:
        tier = data.draw(st.sampled_from([Tier.ROOT, Tier.RECURRENT, Tier.RECURRENT, Tier.MISS]))
        priority = data.draw(st.sampled_from(PRIORITIES))
        env = data.draw(st.integers(0, self.config.env_num - 1))
        key = data.draw(st.sampled_from(self.keys))
        run_both(
            lambda: self.spec.set_priority(tier, env, key, priority),
            lambda: self.impl.set_priority(tier, env, key, priority),
        )

    @precondition(lambda self: self.ready)
    @rule(data=st.data(), tier=st.sampled_from([Tier.ROOT, Tier.RECURRENT]))
    def inspect(self, data: st.DataObject, tier: Tier) -> None:
        """``entry_at``, ``reset_stats`` and (FIFO / LRU: refused) ``set_priority``."""
        env = data.draw(st.integers(0, self.config.env_num - 1))
        pool = self.spec.roots[env] if tier is Tier.ROOT else self.spec.recurrent
        slot = data.draw(st.integers(0, pool.capacity - 1))
        (got,) = decode_entries(self.impl.entry_at(tier, env, slot), self.shape)
        value = pool.slot_values[slot]
        if value is not None:
            assert got == value, f"entry_at({tier!r}, {env}, {slot}): spec {value} impl {got}"
        if data.draw(st.booleans(), label="reset stats"):
            self.spec.reset_stats()
            self.impl.reset_stats()
        if self.config.policy is not Policy.PRIORITY:
            self.do_set_priority(data)

    # ------------------------------------------------------------------ invariant
    @precondition(lambda self: self.ready)
    @invariant()
    def same_state(self) -> None:
        assert_same_manager(self.spec, self.impl, self.shape)


class EnvScopeManagerMachine(ManagerMachine):
    scope = Scope.ENV


class GlobalScopeManagerMachine(ManagerMachine):
    scope = Scope.GLOBAL


class CompiledManagerMachine(ManagerMachine):
    """The same rules on a manager with compiled kernels (``CacheConfig(compile=True)``),
    at one shape and one pair of pool sizes per scope: every kernel compiles once per
    signature it meets (batch size, tiers, fingerprint mode, plain or folded FIFO put), so
    the run's time goes to the rules rather than to compilation."""

    @initialize(
        policy=st.sampled_from([Policy.FIFO, Policy.FIFO, Policy.LRU]),
        keys=st.permutations(KEYS),
    )
    def setup(self, policy: Policy, keys: list[int]) -> None:
        shape = Shape(num_layers=1, num_heads=2, head_dim=2, context_length=6)
        ManagerMachine.setup(self, shape, 2, 2, 3, policy, keys, COMPILED)

    def draw_rows(self, data: st.DataObject, max_rows: int) -> Rows:
        # At most 3 rows: batches of 0 .. 3 rows meet every case of the rules (duplicates,
        # evictions within a batch with capacity 2 and 3) in fewer signatures to compile.
        return super().draw_rows(data, min(max_rows, 3))


class CompiledEnvScopeManagerMachine(CompiledManagerMachine):
    scope = Scope.ENV


class CompiledGlobalScopeManagerMachine(CompiledManagerMachine):
    scope = Scope.GLOBAL


TestEnvScopeManager = EnvScopeManagerMachine.TestCase
TestGlobalScopeManager = GlobalScopeManagerMachine.TestCase
#: Fewer runs than the other machines: compilation, not the rules, takes the time.
_COMPILED_RUNS = settings(max_examples=12, stateful_step_count=20)
CompiledEnvScopeManagerMachine.TestCase.settings = _COMPILED_RUNS
CompiledGlobalScopeManagerMachine.TestCase.settings = _COMPILED_RUNS
TestCompiledEnvScopeManager = pytest.mark.compiled(CompiledEnvScopeManagerMachine.TestCase)
TestCompiledGlobalScopeManager = pytest.mark.compiled(CompiledGlobalScopeManagerMachine.TestCase)
