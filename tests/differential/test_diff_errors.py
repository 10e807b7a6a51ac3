"""Differential machine mixing bad inputs into valid traffic: same error, no state change.

The machine holds a spec manager and an implementation manager (equal configurations,
policy / scope / index backend drawn) plus a spec pool and an implementation pool of the
same policy. Valid rules (stores, lookups, searches, pool puts) build up state; the
``bad_*`` rules make one call with one thing wrong and require:

* with a spec twin: both sides raise exactly the same ``zerokv_spec.errors`` type;
* tensor-only mistakes (wrong dtype / shape, ``has_fingerprint`` without fingerprints):
  the implementation raises exactly the expected type (``DTypeError``, ``ShapeError``,
  ``BatchError``);
* in every case *nothing* changes: a full snapshot before and after is compared on both
  sides (spec: every pool's complete state, statistics, budget; implementation: every
  index tensor / host list, the whole slab - K/V and lengths -, counters and budget), and
  the invariant compares spec and implementation as the manager machine does.

Bad inputs covered: env id out of range / negative / bool / a float tensor, mismatched
batch lengths (env ids, fingerprints, entries, batch rows, priorities), unknown tier, a
batch wider than the context with rows longer than it, a correction of the wrong size, a
priority on FIFO / LRU, non-finite priorities, keys outside int64 (host-level calls),
missing keys, slots out of range, searches over the capacity or over the budget, bad
configurations, and the batch rules' own refusals (``append`` past the capacity or with
no token, ``remove_registers`` past the width, ``assemble`` below the longest entry).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, precondition, rule

import zerokv
from zerokv.index import IndexBackend
from zerokv.testing import (
    Shape,
    assert_same_manager,
    assert_views,
    encode_batch,
    encode_correction,
    encode_entries,
    encode_new_tokens,
    impl_pool_view,
    keys_tensor,
    run_both,
    same_error,
    spec_pool_view,
)
from zerokv.testing.stateful import (
    BACKENDS,
    FINGERPRINTS,
    DiffMachine,
    assert_put_results,
    cache_config,
    entry_sizes,
    shapes,
)
from zerokv_spec import entry as spec_entry
from zerokv_spec.entry import Batch, Correction, Entry
from zerokv_spec.errors import (
    BatchError,
    ConfigError,
    DTypeError,
    ShapeError,
    ZeroKVError,
)
from zerokv_spec.manager import CacheManager, ManagerConfig, Scope, Tier
from zerokv_spec.pool import Policy, SlotPool, make_pool

TOO_BIG = 1 << 63  # one past INT64_MAX: outside every key range


@dataclass(frozen=True)
class Case:
    """One bad call: the spec's twin (``None``: tensor-only) and the implementation's."""

    spec: Callable[[], object] | None
    impl: Callable[[], object]
    impl_type: type[ZeroKVError] | None = None  # the expected type when there is no twin


def _index_state(index: IndexBackend) -> dict[str, object]:
    """Every attribute of an index, copied (whatever the backend keeps its state in)."""
    state: dict[str, object] = {}
    for key, value in vars(index).items():
        if key == "device" or key.endswith("_cache"):  # not state: the device, caches
            continue
        state[key] = value.clone() if isinstance(value, torch.Tensor) else copy.deepcopy(value)
    return state


def _equal(x: object, y: object) -> bool:
    """Deep equality where tensors compare by shape and values (containers recursed)."""
    if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
        return (
            isinstance(x, torch.Tensor)
            and isinstance(y, torch.Tensor)
            and x.shape == y.shape
            and torch.equal(x, y)
        )
    if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
        return len(x) == len(y) and all(_equal(a, b) for a, b in zip(x, y))
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_equal(x[k], y[k]) for k in x)
    return x == y


def _same(a: dict[str, object], b: dict[str, object]) -> bool:
    return _equal(a, b)


MANAGER_CASES = (
    "lookup: env out of range",
    "lookup: env id is a bool",
    "lookup: env ids a float tensor",
    "lookup: more env ids than keys",
    "lookup: fingerprints of another length",
    "lookup: unknown tiers",
    "store: env out of range",
    "store: one entry more than keys",
    "store: priorities of another length",
    "store: priority on this policy",
    "store: non-finite priority",
    "store batch: rows longer than the context",
    "store batch: more rows than keys",
    "store batch: correction of the wrong size",
    "store batch: a non-finite correction",
    "store batch: over the search budget",
    "search: over the capacity / negative / a bool",
    "set_priority",
    "clear_env: env out of range",
    "gather: no rows",
    "gather: narrower than the longest entry",
    "gather_reserve: no tokens / too many / a bool",
    "lookup: int32 keys",
    "lookup: 2-d keys",
    "lookup: float fingerprints",
    "lookup: has_fingerprint without fingerprints",
    "lookup: int has_fingerprint",
    "store: float64 entries",
    "store: entries with another head count",
    "store batch: float64 batch",
    "store batch: float64 correction",
    "store: float32 priorities",
    "gather_append: new tokens of another shape / dtype",
)

POOL_CASES = (
    "slot_of: key outside int64",
    "evict: missing key",
    "evict: key outside int64",
    "key_at: slot out of range",
    "set_priority: bad",
    "put_many: one value more than keys",
    "put_many: priorities on this policy / non-finite",
    "get_many: keys not a tensor",
    "put_many: pool ids of another length",
)


class ErrorMachine(DiffMachine):
    """Bad inputs between valid ones (module docstring)."""

    @initialize(
        shape=shapes((4, 5, 6)),
        policy=st.sampled_from(list(Policy)),
        scope=st.sampled_from(list(Scope)),
        root_capacity=st.sampled_from([1, 2, 3]),
        recurrent_capacity=st.sampled_from([1, 2, 4]),
        backend=st.sampled_from(BACKENDS),
        manager_order=st.permutations(range(len(MANAGER_CASES))),
        pool_order=st.permutations(range(len(POOL_CASES))),
    )
    def setup(
        self,
        shape: Shape,
        policy: Policy,
        scope: Scope,
        root_capacity: int,
        recurrent_capacity: int,
        backend: str,
        manager_order: list[int],
        pool_order: list[int],
    ) -> None:
        self.order = {
            MANAGER_CASES: manager_order,
            POOL_CASES: pool_order,
        }
        self.calls: dict[tuple[str, ...], int] = {}
        self.shape = shape
        self.policy = policy
        index = self.use_backend(backend)
        self.config = cache_config(
            shape,
            2,
            root_capacity=root_capacity,
            recurrent_capacity=recurrent_capacity,
            policy=policy,
            scope=scope,
            index=index,
        )
        self.impl = zerokv.CacheManager(self.config)
        self.spec = CacheManager(self.config.spec_config())
        self.ipool = zerokv.SlotPool(
            root_capacity,
            policy=policy,
            num_layers=shape.num_layers,
            num_heads=shape.num_heads,
            head_dim=shape.head_dim,
            context_length=shape.context_length,
            index=index,
        )
        self.spool: SlotPool[Entry] = make_pool(policy, root_capacity)
        self.keys = [0, 1, 2, 3]
        self.ready = True

    # ------------------------------------------------------------------ snapshots
    def spec_snapshot(self) -> dict[str, object]:
        spec = self.spec
        return copy.deepcopy(
            {
                "roots": [vars(p) for p in spec.roots],
                "recurrent": vars(spec.recurrent),
                "stats": spec.stats,
                "budget": (spec.search_budget, spec.search_used),
                "pool": vars(self.spool),
            }
        )

    def impl_snapshot(self) -> dict[str, object]:
        impl = self.impl
        state: dict[str, object] = {
            "kv": impl.slab.kv.clone(),
            "lengths": impl.slab.lengths.clone(),
            "stats": impl.stats(),
            "root stats": [impl.root_stats(e) for e in range(self.config.env_num)],
            "recurrent stats": impl.recurrent_stats(),
            "budget": (impl.search_budget, impl.search_used),
            "pool kv": self.ipool.slab.kv.clone(),
            "pool lengths": self.ipool.slab.lengths.clone(),
        }
        for name, index in (
            ("root", impl.root.index),
            ("recurrent", impl.recurrent.index),
            ("pool", self.ipool.index),
        ):
            for key, value in _index_state(index).items():
                state[f"{name}.{key}"] = value
        return state

    def expect_refusal(self, case: Case, what: str) -> None:
        """The call is refused (same type on both sides) and changes nothing anywhere."""
        spec_before, impl_before = self.spec_snapshot(), self.impl_snapshot()
        impl_exc: ZeroKVError | None = None
        try:
            case.impl()
        except ZeroKVError as e:
            impl_exc = e
        if case.spec is None:
            assert case.impl_type is not None
            assert type(impl_exc) is case.impl_type, (
                f"{what}: expected {case.impl_type.__name__}, the implementation raised "
                f"{impl_exc!r}"
            )
        else:
            spec_exc: ZeroKVError | None = None
            try:
                case.spec()
            except ZeroKVError as e:
                spec_exc = e
            assert spec_exc is not None, f"{what}: the spec accepted a bad call"
            same_error(spec_exc, impl_exc)
        event(f"refused: {what} ({type(impl_exc).__name__})")
        assert self.spec_snapshot() == spec_before, f"{what}: the spec changed state"
        impl_after = self.impl_snapshot()
        changed = [k for k in impl_before if not _same({k: impl_before[k]}, {k: impl_after[k]})]
        assert not changed, f"{what}: the implementation changed {changed}"

    # ------------------------------------------------------------------ valid traffic
    def entries(self, data: st.DataObject, n: int) -> list[Entry]:
        cl = self.shape.context_length
        return [
            self.source.entry(self.shape.num_layers, data.draw(entry_sizes(cl))) for _ in range(n)
        ]

    def rows(self, data: st.DataObject, n: int) -> tuple[list[int], list[int]]:
        envs = data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
        keys = data.draw(st.lists(st.sampled_from(self.keys), min_size=n, max_size=n))
        return envs, keys

    @precondition(lambda self: self.ready)
    @rule(data=st.data(), tier=st.sampled_from([Tier.ROOT, Tier.RECURRENT]))
    def store(self, data: st.DataObject, tier: Tier) -> None:
        n = data.draw(st.integers(1, 4))
        envs, keys = self.rows(data, n)
        fps = data.draw(st.lists(st.none() | st.sampled_from(FINGERPRINTS), min_size=n, max_size=n))
        fp_t = keys_tensor([0 if f is None else f for f in fps])
        has_t = torch.tensor([f is not None for f in fps], dtype=torch.bool).view(n)
        entries = self.entries(data, n)
        ientries = encode_entries(entries, self.shape)
        if tier is Tier.ROOT:
            both = run_both(
                lambda: self.spec.store_root_many(envs, keys, entries, fps),
                lambda: self.impl.store_root_many(envs, keys_tensor(keys), ientries, fp_t, has_t),
            )
        else:
            both = run_both(
                lambda: self.spec.store_recurrent_many(envs, keys, entries, fps),
                lambda: self.impl.store_recurrent_many(
                    envs, keys_tensor(keys), ientries, fp_t, has_t
                ),
            )
        if both is not None:
            assert_put_results(*both)
        pool_keys = keys[: self.ipool.capacity + 1]
        pool_entries = entries[: len(pool_keys)]
        results = self.spool.put_many(pool_keys, pool_entries)
        assert_put_results(
            results,
            self.ipool.put_many(keys_tensor(pool_keys), encode_entries(pool_entries, self.shape)),
        )

    @precondition(lambda self: self.ready)
    @rule(data=st.data())
    def lookup(self, data: st.DataObject) -> None:
        n = data.draw(st.integers(0, 4))
        envs, keys = self.rows(data, n)
        spec = self.spec.lookup_many(envs, keys)
        found = self.impl.lookup_many(envs, keys_tensor(keys))
        assert found.tier.tolist() == [int(r.tier) for r in spec]

    @precondition(lambda self: self.ready)
    @rule(data=st.data())
    def search(self, data: st.DataObject) -> None:
        if data.draw(st.booleans()):
            nodes = data.draw(st.integers(0, self.config.recurrent_capacity))
            self.spec.begin_search(nodes)
            self.impl.begin_search(nodes)
        else:
            self.spec.end_search()
            self.impl.end_search()

    # ------------------------------------------------------------------ bad: manager
    def bad_manager_case(self, data: st.DataObject, which: str) -> Case:
        spec, impl, shape = self.spec, self.impl, self.shape
        cl = shape.context_length
        n = data.draw(st.integers(1, 3))
        envs, keys = self.rows(data, n)
        keys_t = keys_tensor(keys)
        entries = self.entries(data, n)
        ientries = encode_entries(entries, shape)
        if which == "lookup: env out of range":
            bad = data.draw(st.sampled_from([2, 7, -1]))
            envs[-1] = bad
            return Case(
                lambda: spec.lookup_many(envs, keys), lambda: impl.lookup_many(envs, keys_t)
            )
        if which == "lookup: env id is a bool":
            bool_envs: list[int] = [True] * n
            return Case(
                lambda: spec.lookup_many(bool_envs, keys),
                lambda: impl.lookup_many(bool_envs, keys_t),
            )
        if which == "lookup: env ids a float tensor":
            float_envs = torch.zeros(n, dtype=torch.float32)
            spec_envs: list[int] = [0.0] * n  # type: ignore[list-item]
            return Case(
                lambda: spec.lookup_many(spec_envs, keys),
                lambda: impl.lookup_many(float_envs, keys_t),
            )
        if which == "lookup: more env ids than keys":
            more = [*envs, 0]
            return Case(
                lambda: spec.lookup_many(more, keys), lambda: impl.lookup_many(more, keys_t)
            )
        if which == "lookup: fingerprints of another length":
            fps: list[int | None] = [1] * (n + 1)
            return Case(
                lambda: spec.lookup_many(envs, keys, fps),
                lambda: impl.lookup_many(envs, keys_t, keys_tensor([1] * (n + 1))),
            )
        if which == "lookup: unknown tiers":
            return Case(
                lambda: spec.lookup_many(envs, keys, None, "roots"),
                lambda: impl.lookup_many(envs, keys_t, None, None, "roots"),
            )
        if which == "store: env out of range":
            envs[0] = 2
            return Case(
                lambda: spec.store_root_many(envs, keys, entries),
                lambda: impl.store_root_many(envs, keys_t, ientries),
            )
        if which == "store: one entry more than keys":
            extra = [*entries, entries[0]]
            return Case(
                lambda: spec.store_recurrent_many(envs, keys, extra),
                lambda: impl.store_recurrent_many(envs, keys_t, encode_entries(extra, shape)),
            )
        if which == "store: priorities of another length":
            prios: list[float | None] = [1.0] * (n + 1)
            return Case(
                lambda: spec.store_root_many(envs, keys, entries, None, prios),
                lambda: impl.store_root_many(
                    envs, keys_t, ientries, None, None, torch.ones(n + 1, dtype=torch.float64)
                ),
            )
        if which == "store: priority on this policy" or which == "store: non-finite priority":
            value = 1.0 if which == "store: priority on this policy" else float("nan")
            if which == "store: non-finite priority" and self.policy is not Policy.PRIORITY:
                value = float("inf")
            given: list[float | None] = [value] * n
            return Case(
                lambda: spec.store_recurrent_many(envs, keys, entries, None, given),
                lambda: impl.store_recurrent_many(
                    envs, keys_t, ientries, None, None, torch.full((n,), value, dtype=torch.float64)
                ),
            )
        if which == "store batch: rows longer than the context":
            wide = Batch(
                tuple(
                    tuple(tuple(float(j + 1) for j in range(cl + 1)) for _ in range(n))
                    for _ in range(shape.num_layers)
                ),
                tuple(
                    tuple(tuple(float(j + 1) for j in range(cl + 1)) for _ in range(n))
                    for _ in range(shape.num_layers)
                ),
                tuple([cl + 1] * n),
                cl + 1,
            )
            zero = Correction.zero(shape.num_layers, cl)
            return Case(
                lambda: spec.store_root_batch(envs, keys, wide, zero),
                lambda: impl.store_root_batch(
                    envs, keys_t, encode_batch(wide, shape), encode_correction(zero, shape)
                ),
            )
        batch = spec_entry.assemble(entries, cl)
        ibatch = encode_batch(batch, shape)
        zero = Correction.zero(shape.num_layers, cl)
        izero = encode_correction(zero, shape)
        if which == "store batch: more rows than keys":
            more_rows = spec_entry.assemble([*entries, entries[0]], cl)
            return Case(
                lambda: spec.store_recurrent_batch(envs, keys, more_rows, zero),
                lambda: impl.store_recurrent_batch(
                    envs, keys_t, encode_batch(more_rows, shape), izero
                ),
            )
        if which == "store batch: correction of the wrong size":
            row = (0.0,) * (cl - 2)
            bad_corr = Correction((row,) * shape.num_layers, (row,) * shape.num_layers)
            table = torch.zeros(shape.num_layers, 2, shape.num_heads, cl - 2, shape.head_dim)
            return Case(
                lambda: spec.store_root_batch(envs, keys, batch, bad_corr),
                lambda: impl.store_root_batch(envs, keys_t, ibatch, zerokv.Correction(table)),
            )
        if which == "store batch: a non-finite correction":
            odd = data.draw(st.sampled_from([float("nan"), float("inf"), -float("inf")]))
            row = (0.0,) * (cl - 4) + (odd,)
            bad_corr = Correction((row,) * shape.num_layers, (row,) * shape.num_layers)
            table = torch.zeros(shape.num_layers, 2, shape.num_heads, cl - 3, shape.head_dim)
            table[..., -1, :] = odd
            return Case(
                lambda: spec.store_recurrent_batch(envs, keys, batch, bad_corr),
                lambda: impl.store_recurrent_batch(envs, keys_t, ibatch, zerokv.Correction(table)),
            )
        if which == "store batch: over the search budget":
            cap = self.config.recurrent_capacity
            nodes = data.draw(st.integers(0, min(cap, n - 1)))
            spec.begin_search(nodes)  # a valid state change on both sides, before the snapshot
            impl.begin_search(nodes)
            return Case(
                lambda: spec.store_recurrent_batch(envs, keys, batch, zero),
                lambda: impl.store_recurrent_batch(envs, keys_t, ibatch, izero),
            )
        if which == "search: over the capacity / negative / a bool":
            nodes_bad: int = data.draw(
                st.sampled_from([self.config.recurrent_capacity + 1, -1, True])
            )
            return Case(lambda: spec.begin_search(nodes_bad), lambda: impl.begin_search(nodes_bad))
        if which == "set_priority":
            tier = data.draw(st.sampled_from([Tier.MISS, Tier.ROOT, Tier.RECURRENT]))
            key = data.draw(st.sampled_from([TOO_BIG, -TOO_BIG - 1, 99]))
            prio = data.draw(st.sampled_from([1.0, float("nan"), float("-inf")]))
            return Case(
                lambda: spec.set_priority(tier, envs[0], key, prio),
                lambda: impl.set_priority(tier, envs[0], key, prio),
            )
        if which == "gather: no rows":
            nothing = impl.lookup_many([], keys_tensor([]))  # changes nothing: zero rows counted
            return Case(lambda: spec.gather([]), lambda: impl.gather(nothing))
        if which == "gather: narrower than the longest entry":
            found_s = spec.lookup_many(envs, keys)
            found_i = impl.lookup_many(envs, keys_t)  # counted on both sides, before the snapshot
            longest = max(0 if r.entry is None else r.entry.size for r in found_s)
            if longest == 0:  # nothing to be narrower than: an empty gather instead
                nothing_i = impl.lookup_many([], keys_tensor([]))
                return Case(lambda: spec.gather([]), lambda: impl.gather(nothing_i))
            return Case(
                lambda: spec.gather(found_s, longest - 1),
                lambda: impl.gather(found_i, longest - 1),
            )
        if which == "gather_reserve: no tokens / too many / a bool":
            found_s = spec.lookup_many(envs, keys)
            found_i = impl.lookup_many(envs, keys_t)  # counted on both sides, before the snapshot
            t = data.draw(st.sampled_from([0, -1, cl + 1, True]), label="tokens")
            return Case(
                lambda: spec.gather_reserve(found_s, t),
                lambda: impl.gather_reserve(found_i, t),
            )
        if which == "clear_env: env out of range":
            env = data.draw(st.sampled_from([2, -1]))
            return Case(lambda: spec.clear_env(env), lambda: impl.clear_env(env))
        # ---------------------------------------------- tensor-only (no spec twin)
        if which == "lookup: int32 keys":
            return Case(None, lambda: impl.lookup_many(envs, keys_t.int()), DTypeError)
        if which == "lookup: 2-d keys":
            return Case(None, lambda: impl.lookup_many(envs, keys_t.view(n, 1)), ShapeError)
        if which == "lookup: float fingerprints":
            return Case(None, lambda: impl.lookup_many(envs, keys_t, keys_t.double()), DTypeError)
        if which == "lookup: has_fingerprint without fingerprints":
            has = torch.ones(n, dtype=torch.bool)
            return Case(None, lambda: impl.lookup_many(envs, keys_t, None, has), BatchError)
        if which == "lookup: int has_fingerprint":
            return Case(
                None, lambda: impl.lookup_many(envs, keys_t, keys_t, torch.ones(n)), DTypeError
            )
        if which == "store: float64 entries":
            wrong = zerokv.Entries(ientries.kv.double(), ientries.lengths)
            return Case(None, lambda: impl.store_root_many(envs, keys_t, wrong), DTypeError)
        if which == "store: entries with another head count":
            more_heads = zerokv.Entries(torch.cat([ientries.kv] * 2, dim=3), ientries.lengths)
            return Case(
                None, lambda: impl.store_recurrent_many(envs, keys_t, more_heads), ShapeError
            )
        if which == "store batch: float64 batch":
            wrong_b = zerokv.Batch(ibatch.kv.double(), ibatch.lengths)
            return Case(
                None, lambda: impl.store_root_batch(envs, keys_t, wrong_b, izero), DTypeError
            )
        if which == "store batch: float64 correction":
            wrong_c = zerokv.Correction(izero.table.double())
            return Case(
                None, lambda: impl.store_root_batch(envs, keys_t, ibatch, wrong_c), DTypeError
            )
        if which == "store: float32 priorities":
            f32 = torch.ones(n, dtype=torch.float32)
            return Case(
                None,
                lambda: impl.store_root_many(envs, keys_t, ientries, None, None, f32),
                DTypeError,
            )
        if which == "gather_append: new tokens of another shape / dtype":
            spec.lookup_many(envs, keys)  # counted on both sides, before the snapshot
            found_i = impl.lookup_many(envs, keys_t)
            rows = data.draw(st.sampled_from([n, n + 1]), label="rows")
            tokens = torch.zeros(shape.num_layers, 2, rows, shape.num_heads, 2, shape.head_dim)
            if rows == n:
                return Case(None, lambda: impl.gather_append(found_i, tokens.double()), DTypeError)
            return Case(None, lambda: impl.gather_append(found_i, tokens), ShapeError)
        raise AssertionError(f"unknown case {which}")

    def next_case(self, cases: tuple[str, ...]) -> str:
        """Round-robin over a drawn permutation of ``cases``: every case runs once in every
        ``len(cases)`` calls (a choice drawn per call leaves many cases untried)."""
        n = self.calls.get(cases, 0)
        self.calls[cases] = n + 1
        order = self.order[cases]
        return cases[order[n % len(cases)]]

    @precondition(lambda self: self.ready)
    @rule(data=st.data())
    def bad_manager_call(self, data: st.DataObject) -> None:
        """The next four manager cases of the round-robin."""
        for _ in range(4):
            which = self.next_case(MANAGER_CASES)
            if which == "store: priority on this policy" and self.policy is Policy.PRIORITY:
                continue  # a valid call there
            self.expect_refusal(self.bad_manager_case(data, which), which)

    # ------------------------------------------------------------------ bad: pool

    @precondition(lambda self: self.ready)
    @rule(data=st.data())
    def bad_pool_call(self, data: st.DataObject) -> None:
        """The next three pool cases of the round-robin."""
        for _ in range(3):
            self.one_bad_pool_call(data, self.next_case(POOL_CASES))

    def one_bad_pool_call(self, data: st.DataObject, which: str) -> None:
        spool, ipool, shape = self.spool, self.ipool, self.shape
        n = data.draw(st.integers(1, 3))
        keys = data.draw(st.lists(st.sampled_from(self.keys), min_size=n, max_size=n))
        keys_t = keys_tensor(keys)
        entries = self.entries(data, n)
        ientries = encode_entries(entries, shape)
        case: Case
        if which == "slot_of: key outside int64":
            key = data.draw(st.sampled_from([TOO_BIG, -TOO_BIG - 1]))
            case = Case(lambda: spool.slot_of(key), lambda: ipool.slot_of(key))
        elif which == "evict: missing key":
            missing = 99
            case = Case(lambda: spool.evict(missing), lambda: ipool.evict(missing))
        elif which == "evict: key outside int64":
            case = Case(lambda: spool.evict(TOO_BIG), lambda: ipool.evict(TOO_BIG))
        elif which == "key_at: slot out of range":
            slot = data.draw(st.sampled_from([-1, ipool.capacity, ipool.capacity + 3]))
            case = Case(lambda: spool.key_at(slot), lambda: ipool.key_at(slot))
        elif which == "set_priority: bad":
            key = data.draw(st.sampled_from([*keys, 99, TOO_BIG]))
            prio = data.draw(st.sampled_from([float("nan"), float("inf"), 0.5]))
            if self.policy is Policy.PRIORITY and key in spool and prio == 0.5:
                prio = float("nan")
            case = Case(
                lambda: spool.set_priority(key, prio), lambda: ipool.set_priority(key, prio)
            )
        elif which == "put_many: one value more than keys":
            extra = [*entries, entries[0]]
            case = Case(
                lambda: spool.put_many(keys, extra),
                lambda: ipool.put_many(keys_t, encode_entries(extra, shape)),
            )
        elif which == "put_many: priorities on this policy / non-finite":
            value = 1.0 if self.policy is not Policy.PRIORITY else float("nan")
            prios: list[float | None] = [value] * n
            case = Case(
                lambda: spool.put_many(keys, entries, None, prios),
                lambda: ipool.put_many(
                    keys_t, ientries, None, None, torch.full((n,), value, dtype=torch.float64)
                ),
            )
        elif which == "get_many: keys not a tensor":
            case = Case(None, lambda: ipool.get_many(keys), DTypeError)  # type: ignore[arg-type]
        else:
            pids = torch.zeros(n + 1, dtype=torch.int64)
            case = Case(None, lambda: ipool.put_many(keys_t, ientries, pool_ids=pids), ShapeError)
        self.expect_refusal(case, which)

    # ------------------------------------------------------------------ bad: batch rules
    @precondition(lambda self: self.ready)
    @rule(
        data=st.data(),
        which=st.sampled_from(
            [
                "append past the capacity",
                "append no token",
                "remove_registers past the width",
                "assemble below the longest",
                "assemble nothing",
            ]
        ),
    )
    def bad_batch_rule(self, data: st.DataObject, which: str) -> None:
        shape, cl = self.shape, self.shape.context_length
        n = data.draw(st.integers(1, 3))
        entries = self.entries(data, n)
        ientries = encode_entries(entries, shape)
        batch = spec_entry.assemble(entries, cl)
        ibatch = encode_batch(batch, shape)
        case: Case
        if which in ("append past the capacity", "append no token"):
            t = 0 if which == "append no token" else cl + 1
            new_k, new_v = self.source.new_tokens(shape.num_layers, n, t)
            new_kv = encode_new_tokens(new_k, new_v, shape) if t else ibatch.kv[..., :0, :]
            case = Case(
                lambda: spec_entry.append(batch, new_k, new_v, cl),
                lambda: zerokv.append(ibatch, new_kv, cl),
            )
        elif which == "remove_registers past the width":
            count = data.draw(st.sampled_from([cl + 1, -1, True]))
            case = Case(
                lambda: spec_entry.remove_registers(batch, count),
                lambda: zerokv.remove_registers(ibatch, count),
            )
        elif which == "assemble below the longest":
            longest = max(e.size for e in entries)
            width = longest - 1
            case = Case(
                lambda: spec_entry.assemble(entries, width),
                lambda: zerokv.assemble(ientries, width),
            )
        else:
            none = encode_entries([], shape)
            case = Case(lambda: spec_entry.assemble([]), lambda: zerokv.assemble(none))
        if which == "assemble below the longest" and max(e.size for e in entries) == 0:
            return  # width -1 < 0 is a different mistake; nothing to compare
        self.expect_refusal(case, which)

    # ------------------------------------------------------------------ bad: configs
    @precondition(lambda self: self.ready)
    @rule(
        which=st.sampled_from(
            ["context 3", "root capacity 0", "env_num 0", "pool capacity 0", "bool capacity"]
        )
    )
    def bad_config(self, which: str) -> None:
        s = self.shape
        fields: dict[str, int] = {
            "env_num": 2,
            "num_layers": s.num_layers,
            "context_length": s.context_length,
            "root_capacity": 2,
            "recurrent_capacity": 2,
        }
        case: Case
        if which in ("context 3", "root capacity 0", "env_num 0"):
            name = {"context 3": "context_length", "root capacity 0": "root_capacity"}.get(
                which, "env_num"
            )
            fields[name] = 3 if which == "context 3" else 0
            f = fields
            case = Case(
                lambda: ManagerConfig(
                    env_num=f["env_num"],
                    num_layers=f["num_layers"],
                    context_length=f["context_length"],
                    root_capacity=f["root_capacity"],
                    recurrent_capacity=f["recurrent_capacity"],
                ),
                lambda: zerokv.CacheConfig(
                    env_num=f["env_num"],
                    num_layers=f["num_layers"],
                    num_heads=s.num_heads,
                    head_dim=s.head_dim,
                    context_length=f["context_length"],
                    root_capacity=f["root_capacity"],
                    recurrent_capacity=f["recurrent_capacity"],
                ),
            )
        else:
            capacity: int = 0 if which == "pool capacity 0" else True
            case = Case(
                lambda: make_pool(self.policy, capacity),
                lambda: zerokv.SlotPool(
                    capacity,
                    policy=self.policy,
                    num_layers=s.num_layers,
                    num_heads=s.num_heads,
                    head_dim=s.head_dim,
                    context_length=s.context_length,
                ),
            )
        spec_call = case.spec
        assert spec_call is not None
        try:
            spec_call()
        except ConfigError:
            pass
        else:
            raise AssertionError(f"{which}: the spec accepted a bad configuration")
        self.expect_refusal(case, which)

    # ------------------------------------------------------------------ invariant
    @precondition(lambda self: self.ready)
    @invariant()
    def same_state(self) -> None:
        assert_same_manager(self.spec, self.impl, self.shape)
        view = impl_pool_view(self.ipool, 0, self.shape)
        assert_views(spec_pool_view(self.spool), view, "pool")


TestBadInputs = ErrorMachine.TestCase
