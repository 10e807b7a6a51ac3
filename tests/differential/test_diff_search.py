"""Differential machine for UniZero's search loop: the manager's hot path against the spec.

``test_diff_manager.py`` explores every operation on tiny pools; this machine drives the
path a search actually takes, on pools large enough for it to matter (root pools of 4 - 9
slots, a recurrent pool of 6 - 16): ``gather_reserve`` with the model's 2 new tokens
(sometimes 1 or 3) written in place, or the fused ``gather_append``, at the static width
``cl``; the window rule with a correction (zero or not); and stores of mostly fresh keys,
so a FIFO pool takes whole batches into consecutive slots (the CPU path then writes the
rows straight into a slab slice) while re-expanded nodes and duplicate rows scatter.
Rules:

* ``root_step`` - root lookups of each environment's previous root key, the batch,
  ``store_root_batch`` of the current keys (an environment may appear once);
* ``simulate`` - hierarchical lookups of parent keys (stored root or recurrent keys, an
  unknown key now and then), the batch, ``store_recurrent_batch`` of child keys
  (fresh, or a stored key again: a re-expansion);
* ``clear_recurrent`` (before a search, as UniZero does) and ``clear_env`` (episode end).

The batch after ``gather_append`` and every put result are compared row by row; the
invariant compares the whole manager (``common.assert_same_manager``). Every index backend
of ``common.BACKENDS`` runs, so the host path and the device path (with and without the
CPU shortcuts) are each held against the spec.
"""

from __future__ import annotations

import itertools

from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, precondition, rule

import zerokv
from zerokv.testing import (
    Shape,
    assert_same_manager,
    decode_batch,
    encode_correction,
    encode_new_tokens,
    keys_tensor,
    run_both,
)
from zerokv.testing.stateful import (
    BACKENDS,
    DiffMachine,
    assert_put_results,
    cache_config,
    clear_both,
    shapes,
)
from zerokv_spec.entry import Correction
from zerokv_spec.manager import CacheManager, Scope, TierLookup
from zerokv_spec.pool import Policy


class SearchMachine(DiffMachine):
    """A collector's root steps and searches, spec manager vs implementation manager."""

    @initialize(
        shape=shapes((6, 7, 8)),
        env_num=st.sampled_from([2, 3]),
        root_capacity=st.integers(4, 9),
        recurrent_capacity=st.integers(6, 16),
        policy=st.sampled_from([Policy.FIFO, Policy.FIFO, Policy.LRU]),
        scope=st.sampled_from(list(Scope)),
        backend=st.sampled_from(BACKENDS),
        nonzero=st.booleans(),
        data=st.data(),
    )
    def setup(
        self,
        shape: Shape,
        env_num: int,
        root_capacity: int,
        recurrent_capacity: int,
        policy: Policy,
        scope: Scope,
        backend: str,
        nonzero: bool,
        data: st.DataObject,
    ) -> None:
        self.shape = shape
        config = cache_config(
            shape,
            env_num,
            root_capacity=root_capacity,
            recurrent_capacity=recurrent_capacity,
            policy=policy,
            scope=scope,
            index=self.use_backend(backend),
        )
        self.impl = zerokv.CacheManager(config)
        self.spec = CacheManager(config.spec_config())
        cl, layers = shape.context_length, shape.num_layers
        if nonzero:
            value = st.integers(-3, 3).map(float)
            row = st.lists(value, min_size=cl - 3, max_size=cl - 3).map(tuple)
            table = st.lists(row, min_size=layers, max_size=layers).map(tuple)
            self.correction = Correction(data.draw(table), data.draw(table))
        else:
            self.correction = Correction.zero(layers, cl)
        self.icorrection = encode_correction(self.correction, shape)
        self.fresh = itertools.count(1000)  # keys never used before
        self.root_key: dict[int, int] = {}  # env -> its newest root key
        self.stored: list[tuple[int, int]] = []  # (env, key) of recurrent stores
        self.ready = True

    # ------------------------------------------------------------------ one step
    def step(
        self,
        data: st.DataObject,
        envs: list[int],
        parents: list[int],
        children: list[int],
        tiers: str,
    ) -> None:
        """Lookup ``parents``, ``gather_append``, store ``children`` (root or recurrent)."""
        spec_found: list[TierLookup] = self.spec.lookup_many(envs, parents, None, tiers)
        found = self.impl.lookup_many(envs, keys_tensor(parents), None, None, tiers)
        tier_rows = [int(r.tier) for r in spec_found]
        assert found.tier.tolist() == tier_rows, f"tiers: spec {tier_rows} impl {found.tier}"
        t = data.draw(st.sampled_from([2, 2, 2, 1, 3]), label="new tokens")
        new_k, new_v = self.source.new_tokens(self.shape.num_layers, len(envs), t)
        new_kv = encode_new_tokens(new_k, new_v, self.shape)
        batch = self.spec.gather_append(spec_found, new_k, new_v)
        if data.draw(st.booleans(), label="reserve"):
            ibatch = self.impl.gather_reserve(found, t)
            ibatch.kv[:, :, :, :, -t:, :] = new_kv  # the model writes in place
        else:
            ibatch = self.impl.gather_append(found, new_kv)
        got = decode_batch(ibatch, self.shape)
        assert got == batch, f"gather_append differs:\n spec {batch}\n impl {got}"
        if tiers == "root":
            spec_store, impl_store = self.spec.store_root_batch, self.impl.store_root_batch
        else:
            spec_store = self.spec.store_recurrent_batch
            impl_store = self.impl.store_recurrent_batch
        both = run_both(
            lambda: spec_store(envs, children, batch, self.correction),
            lambda: impl_store(envs, keys_tensor(children), ibatch, self.icorrection),
        )
        assert both is not None, "a valid store raised on both sides"
        assert_put_results(*both)
        inserted = sum(r.inserted for r in both[0])
        event(f"store: {inserted} of {len(envs)} rows inserted")

    # ------------------------------------------------------------------ rules
    @precondition(lambda self: self.ready)
    @rule(data=st.data())
    def root_step(self, data: st.DataObject) -> None:
        env_num = self.impl.config.env_num
        envs = data.draw(
            st.lists(st.integers(0, env_num - 1), min_size=1, max_size=env_num, unique=True),
            label="environments",
        )
        parents = [self.root_key.get(e, -1) for e in envs]
        children = [next(self.fresh) for _ in envs]
        self.step(data, envs, parents, children, "root")
        self.root_key.update(zip(envs, children))

    @precondition(lambda self: self.ready)
    @rule(data=st.data())
    def simulate(self, data: st.DataObject) -> None:
        env_num = self.impl.config.env_num
        rows = data.draw(st.integers(1, 2 * env_num), label="rows")
        envs = data.draw(
            st.lists(st.integers(0, env_num - 1), min_size=rows, max_size=rows), label="envs"
        )
        parents, children = [], []
        for env in envs:
            known = [self.root_key[env]] if env in self.root_key else []
            known += [k for e, k in self.stored if e == env]
            kind = data.draw(st.sampled_from(["known", "known", "known", "unknown"]))
            if kind == "known" and known:
                parents.append(data.draw(st.sampled_from(known), label="parent"))
            else:
                parents.append(-2)
            again = [k for e, k in self.stored if e == env]
            if again and data.draw(st.integers(0, 4), label="re-expand") == 0:
                children.append(data.draw(st.sampled_from(again), label="child again"))
            else:
                children.append(next(self.fresh))
        self.step(data, envs, parents, children, "recurrent")
        self.stored.extend(zip(envs, children))

    @precondition(lambda self: self.ready)
    @rule()
    def clear_recurrent(self) -> None:
        clear_both(self.spec, self.impl, "recurrent")
        self.stored.clear()

    @precondition(lambda self: self.ready)
    @rule(data=st.data())
    def clear_env(self, data: st.DataObject) -> None:
        env = data.draw(st.integers(0, self.impl.config.env_num - 1), label="env")
        clear_both(self.spec, self.impl, "env", env)
        self.root_key.pop(env, None)

    @invariant()
    def same_state(self) -> None:
        if self.ready:
            assert_same_manager(self.spec, self.impl, self.shape)


TestSearch = SearchMachine.TestCase
