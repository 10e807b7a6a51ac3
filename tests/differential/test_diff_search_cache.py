"""Differential machine for the node-addressed tier: ``zerokv.search.SearchCache`` against
``zerokv_spec.search.SearchCache``.

Rules drive what a policy-level attachment does, plus the bad input around it:

* ``root_step`` - a first step (``fresh_roots``) or a continuing one (``gather_roots``) for a
  set of environments, the model's new tokens written in place, ``store_roots``;
* ``begin_search`` - rows rooted at environments (now and then one without a root entry:
  ``NodeMissingError`` on both);
* ``simulate`` - one expansion of every row: a parent among the row's written nodes or its
  root (now and then an unwritten, out-of-range or earlier search's address, or a wrong
  depth), ``gather_reserve``, the model's tokens, ``store_nodes`` at ``(s + 1, row)`` (now
  and then an occupied child address);
* ``stale_use`` - an earlier search's number (``StaleSearchError`` on both);
* ``clear_env`` and ``end_search``.

Every batch is compared token for token, every error by type (``run_both``), and the
invariant compares every root entry, every written node of the current search and every
host length.
"""

from __future__ import annotations

from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, precondition, rule

from zerokv import search as impl_search
from zerokv.testing import (
    Shape,
    decode_batch,
    decode_entries,
    encode_correction,
    encode_new_tokens,
    run_both,
)
from zerokv.testing.stateful import DiffMachine, shapes
from zerokv_spec import search as spec_search
from zerokv_spec.entry import Batch, Correction
from zerokv_spec.search import NodeAddress


class SearchCacheMachine(DiffMachine):
    """Root steps and searches, spec ``SearchCache`` vs implementation ``SearchCache``."""

    @initialize(
        shape=shapes((4, 5, 6, 7, 8)),
        env_num=st.integers(1, 3),
        max_rows=st.integers(1, 4),
        sims=st.integers(1, 5),
        nonzero=st.booleans(),
        data=st.data(),
    )
    def setup(
        self,
        shape: Shape,
        env_num: int,
        max_rows: int,
        sims: int,
        nonzero: bool,
        data: st.DataObject,
    ) -> None:
        self.shape = shape
        cfg = impl_search.SearchConfig(
            env_num,
            max_rows,
            sims,
            shape.num_layers,
            shape.num_heads,
            shape.head_dim,
            shape.context_length,
        )
        self.impl = impl_search.SearchCache(cfg)
        self.spec = spec_search.SearchCache(cfg.spec_config())
        cl, layers = shape.context_length, shape.num_layers
        if nonzero:
            value = st.integers(-3, 3).map(float)
            row = st.lists(value, min_size=cl - 3, max_size=cl - 3).map(tuple)
            table = st.lists(row, min_size=layers, max_size=layers).map(tuple)
            self.correction = Correction(data.draw(table), data.draw(table))
        else:
            self.correction = Correction.zero(layers, cl)
        self.icorrection = encode_correction(self.correction, shape)
        self.search: int | None = None  # the spec's current search number
        self.old: list[int] = []  # earlier search numbers
        self.sim = 0  # simulations of the current search so far
        # Every environment's first step and a search over all of them, so that most
        # examples spend their steps expanding nodes.
        batch = self.spec.fresh_roots(env_num, 1)
        ibatch = self.impl.fresh_roots(env_num, 1)
        full = self._write_tokens(batch, ibatch, 1, env_num)
        self.spec.store_roots(list(range(env_num)), full, self.correction)
        self.impl.store_roots(list(range(env_num)), ibatch, self.icorrection)
        rows = data.draw(st.integers(1, max_rows), label="first search rows")
        self.envs = [r % env_num for r in range(rows)]
        self.search = self.spec.begin_search(self.envs)
        assert self.impl.begin_search(self.envs) == self.search
        self.ready = True

    # ------------------------------------------------------------------ helpers
    def _write_tokens(self, spec_batch: Batch, ibatch: object, t: int, rows: int) -> Batch:
        """The model's ``t`` new tokens per row, written in place into both batches."""
        from zerokv_spec.entry import append

        new_k, new_v = self.source.new_tokens(self.shape.num_layers, rows, t)
        kv = ibatch.kv  # type: ignore[attr-defined]
        kv[:, :, :, :, -t:, :] = encode_new_tokens(new_k, new_v, self.shape)
        # The spec batch has t zero columns at the end: the same tokens written there.
        cut = Batch(
            tuple(tuple(r[:-t] for r in layer) for layer in spec_batch.k),
            tuple(tuple(r[:-t] for r in layer) for layer in spec_batch.v),
            tuple(n - t for n in spec_batch.lengths),
            spec_batch.width - t,
        )
        cl = self.shape.context_length
        return append(cut, new_k, new_v, cl)

    def _same_batch(self, spec_batch: Batch, ibatch: object) -> None:
        got = decode_batch(ibatch, self.shape)  # type: ignore[arg-type]
        assert got == spec_batch, f"batches differ:\n spec {spec_batch}\n impl {got}"
        host = list(ibatch.host_lengths)  # type: ignore[attr-defined]
        assert host == list(spec_batch.lengths), f"host lengths {host} vs {spec_batch.lengths}"

    # ------------------------------------------------------------------ rules
    @precondition(lambda self: self.ready)
    @rule(data=st.data())
    def root_step(self, data: st.DataObject) -> None:
        env_num = self.impl.env_num
        envs = data.draw(
            st.lists(st.integers(0, env_num - 1), min_size=1, max_size=env_num, unique=True),
            label="environments",
        )
        t = data.draw(st.sampled_from([2, 2, 1]), label="new tokens")
        if data.draw(st.booleans(), label="first step"):
            spec_batch = self.spec.fresh_roots(len(envs), t)
            ibatch = self.impl.fresh_roots(len(envs), t)
        else:
            spec_batch = self.spec.gather_roots(envs, t)
            ibatch = self.impl.gather_roots(envs, t)
        full = self._write_tokens(spec_batch, ibatch, t, len(envs))
        self._same_batch(full, ibatch)
        store_envs = list(envs)
        if data.draw(st.integers(0, 9), label="bad root store") == 0:
            store_envs = store_envs + store_envs[:1]  # a repeated env: EnvIdError
        both = run_both(
            lambda: self.spec.store_roots(store_envs, full, self.correction),
            lambda: self.impl.store_roots(store_envs, ibatch, self.icorrection),
        )
        if both is not None:
            self._ended()

    def _ended(self) -> None:
        if self.search is not None:
            self.old.append(self.search)
        self.search = None

    @precondition(lambda self: self.ready)
    @rule(data=st.data())
    def begin_search(self, data: st.DataObject) -> None:
        env_num = self.impl.env_num
        rooted = [e for e in range(env_num) if self.spec.roots[e] is not None]
        if rooted and data.draw(st.integers(0, 5), label="valid search") > 0:
            rows = data.draw(st.integers(1, self.impl.max_rows), label="rows")
            pick = st.sampled_from(rooted)
        else:  # any rows: a missing root, or more rows than preallocated
            rows = data.draw(st.integers(1, self.impl.max_rows + 1), label="rows")
            pick = st.integers(0, env_num - 1)
        envs = data.draw(st.lists(pick, min_size=rows, max_size=rows), label="envs")
        both = run_both(lambda: self.spec.begin_search(envs), lambda: self.impl.begin_search(envs))
        if both is None:
            event("begin_search refused")
            return
        assert both[0] == both[1], f"search numbers {both}"
        self._ended()
        self.search = both[0]
        self.sim = 0
        self.envs = envs

    def _parent(self, data: st.DataObject, row: int) -> NodeAddress:
        spec = self.spec
        written = [a for a in spec.nodes if a.row == row]
        kind = data.draw(st.sampled_from(["ok"] * 8 + ["unwritten", "range"]), label="parent")
        if kind == "unwritten":
            return NodeAddress(self.impl.num_simulations, row)
        if kind == "range":
            return NodeAddress(data.draw(st.sampled_from([-1, self.impl.num_simulations + 1])), row)
        return data.draw(st.sampled_from([NodeAddress(0, row), *written]), label="parent address")

    @precondition(lambda self: self.ready and self.search is not None)
    @rule(data=st.data())
    def simulate(self, data: st.DataObject) -> None:
        assert self.search is not None
        rows = len(self.envs)
        parents = [self._parent(data, r) for r in range(rows)]
        t = data.draw(st.sampled_from([2, 2, 2, 1]), label="new tokens")
        both = run_both(
            lambda: self.spec.gather_reserve(self.search, parents, t),  # type: ignore[arg-type]
            lambda: self.impl.gather_reserve(self.search, parents, t),  # type: ignore[arg-type]
        )
        if both is None:
            event("gather refused")
            return
        spec_batch, ibatch = both
        full = self._write_tokens(spec_batch, ibatch, t, rows)
        self._same_batch(full, ibatch)
        index = min(self.sim + 1, self.impl.num_simulations)
        if data.draw(st.integers(0, 9), label="occupied child") == 0 and self.spec.nodes:
            index = data.draw(st.sampled_from(sorted({a.index for a in self.spec.nodes})))
        children = [NodeAddress(index, r) for r in range(rows)]
        depths = [0 if p.index == 0 else self.spec.depths.get(p, 0) for p in parents]
        depths = [d + 1 for d in depths]
        if data.draw(st.integers(0, 9), label="wrong depth") == 0:
            depths[0] += 1
        stored = run_both(
            lambda: self.spec.store_nodes(
                self.search,  # type: ignore[arg-type]
                parents,
                children,
                depths,
                full,
                self.correction,
            ),
            lambda: self.impl.store_nodes(
                self.search,  # type: ignore[arg-type]
                parents,
                children,
                depths,
                ibatch,
                self.icorrection,
            ),
        )
        if stored is not None:
            self.sim += 1
            event("expansion stored")

    @precondition(lambda self: self.ready and bool(self.old))
    @rule(data=st.data())
    def stale_use(self, data: st.DataObject) -> None:
        old = data.draw(st.sampled_from(self.old), label="old search")
        parents = [NodeAddress(0, 0)]
        both = run_both(
            lambda: self.spec.gather_reserve(old, parents, 2),
            lambda: self.impl.gather_reserve(old, parents, 2),
        )
        assert both is None, "a stale search was served"

    @precondition(lambda self: self.ready)
    @rule(data=st.data())
    def clear_env(self, data: st.DataObject) -> None:
        env = data.draw(st.integers(0, self.impl.env_num - 1), label="env")
        self.spec.clear_env(env)
        self.impl.clear_env(env)
        self._ended()

    @precondition(lambda self: self.ready)
    @rule()
    def end_search(self) -> None:
        self.spec.end_search()
        self.impl.end_search()
        self._ended()

    # ------------------------------------------------------------------ invariant
    @invariant()
    def same_state(self) -> None:
        if not self.ready:
            return
        spec, impl = self.spec, self.impl
        assert spec.search == impl.search, f"search numbers {spec.search} vs {impl.search}"
        for e in range(impl.env_num):
            want = spec.roots[e]
            assert impl.root_length(e) == (0 if want is None else want.size), f"root {e} length"
            (got,) = decode_entries(impl.root_entry(e), self.shape)
            assert got == spec.root_entry(e), f"root entry of env {e}: spec {want} impl {got}"
        if self.search is None:
            return
        for address, want in spec.nodes.items():
            assert impl.node_length(self.search, address) == want.size
            (got,) = decode_entries(impl.node_entry(self.search, address), self.shape)
            assert got == want, f"node {address} differs:\n spec {want}\n impl {got}"
        assert impl.host_reads == 0, "a store read lengths its gather already knew"


TestSearchCache = SearchCacheMachine.TestCase
