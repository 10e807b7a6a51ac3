"""Tests of ``zerokv.lightzero.KVCacheManager`` (LightZero's manager API) and shadow mode.

* a stand-in with LightZero's ``KeysValues`` layout, written for this project;
* (a) a differential test against LightZero's semantics modelled on ``zerokv_spec``;
* (b) isolation: nothing a caller holds aliases a pool (copy-on-write snapshots);
* (c) statistics: exact counts, one hierarchical lookup = one query;
* (d) bad inputs raise the documented errors and change nothing;
* (e) shadow mode: the drop-in checked against ``zerokv.ShadowManager`` (``CacheManager``
  and the spec) catches planted divergences of the drop-in's own rings and storage, and
  ``ShadowManager`` catches planted divergences of ``CacheManager``.

The LightZero surface itself (names, keywords, defaults) is tested in
``test_lightzero_conformance.py``; the real LightZero model in ``test_lightzero_main.py``.
"""

from __future__ import annotations

import copy
import logging
import random
import types
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import event, given
from hypothesis import strategies as st

from zerokv import Entries, trace
from zerokv.errors import (
    ConfigError,
    DeviceError,
    DTypeError,
    EntryError,
    EnvIdError,
    KeyRangeError,
    ShapeError,
    ZeroKVError,
)
from zerokv.lightzero import (
    KVCacheManager,
    KVSnapshot,
    LayoutKeysValues,
    lightzero_key,
    unsigned_key,
)
from zerokv.shadow import ShadowDivergence, ShadowManager
from zerokv_spec.entry import Entry
from zerokv_spec.errors import ContractViolation
from zerokv_spec.keys import to_signed
from zerokv_spec.manager import CacheManager as SpecManager
from zerokv_spec.manager import ManagerConfig, Scope, Tier
from zerokv_spec.pool import Policy

L, H, D, CL = 2, 2, 3, 8  # layers, heads, head size, context length (infer_context_length 4)


# --------------------------------------------------------------------------- stand-in


class StandinCache:
    """One side of one layer in LightZero's layout: ``_cache`` (1, H, cap, d), ``_size``."""

    def __init__(
        self, num_heads: int, capacity: int, head_dim: int, dtype: torch.dtype = torch.float32
    ) -> None:
        self._cache_shape = (1, num_heads, capacity, head_dim)
        shape = self._cache_shape

        def reset() -> torch.Tensor:
            return torch.zeros(shape, dtype=dtype)

        self._reset = reset  # a closure, like LightZero's
        self._cache = self._reset()
        self._size = 0
        self._history: list[int] = []  # a mutable attribute: must not be shared either

    def get(self) -> torch.Tensor:
        return self._cache[:, :, : self._size, :]

    def update(self, x: torch.Tensor) -> None:
        """Append ``x`` (1, H, t, d); on overflow drop the oldest tokens (rounded to even)."""
        t, cap = int(x.shape[2]), int(self._cache.shape[2])
        self._history.append(t)
        if self._size + t > cap:
            shift = self._size + t - cap
            shift += shift % 2
            if shift >= self._size:
                self._size = 0
            else:
                kept = self._cache[:, :, shift : self._size].clone()
                self._size -= shift
                self._cache[:, :, : self._size] = kept
        self._cache[:, :, self._size : self._size + t] = x
        self._size += t


class StandinKVCache:
    def __init__(self, k_cache: StandinCache, v_cache: StandinCache) -> None:
        self._k_cache = k_cache
        self._v_cache = v_cache


class StandinKeysValues:
    """``len(kv)`` layers; ``kv._keys_values[l]._k_cache`` / ``._v_cache``; ``kv.size``."""

    def __init__(
        self,
        num_layers: int = L,
        num_heads: int = H,
        capacity: int = CL,
        head_dim: int = D,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self._keys_values = tuple(
            StandinKVCache(
                StandinCache(num_heads, capacity, head_dim, dtype),
                StandinCache(num_heads, capacity, head_dim, dtype),
            )
            for _ in range(num_layers)
        )

    def __len__(self) -> int:
        return len(self._keys_values)

    def __getitem__(self, index: int) -> StandinKVCache:
        return self._keys_values[index]

    @property
    def size(self) -> int:
        return self._keys_values[0]._k_cache._size

    def clone(self) -> StandinKeysValues:
        return copy.deepcopy(self)


def caches_of(kv: Any) -> list[Any]:
    """The 2L caches of a KeysValues-like object, K then V per layer."""
    return [side for layer in kv._keys_values for side in (layer._k_cache, layer._v_cache)]


def make_kv(size: int, seed: int, num_layers: int = L, capacity: int = CL) -> StandinKeysValues:
    """Random tokens in [0, size) and random garbage after them (never to be read)."""
    gen = torch.Generator().manual_seed(seed)
    kv = StandinKeysValues(num_layers, H, capacity, D)
    for cache in caches_of(kv):
        cache._cache = torch.randn(cache._cache_shape, generator=gen)
        cache._size = size
    return kv


def expected_tensors(kv: Any) -> tuple[list[torch.Tensor], int]:
    """What a lookup must return: the stored caches, whole (LightZero copies whole caches:
    the valid tokens left-aligned, then whatever the stored object held after them)."""
    return [cache._cache.clone() for cache in caches_of(kv)], int(kv.size)


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def assert_object(got: Any, want: tuple[list[torch.Tensor], int]) -> None:
    """``got`` has the layout and exactly the expected tokens (bit for bit) and sizes."""
    tensors, size = want
    assert got is not None
    assert len(got) == len(tensors) // 2
    assert got.size == size
    for cache, expected in zip(caches_of(got), tensors):
        assert cache._size == size
        assert cache._cache.shape == expected.shape
        assert torch.equal(bits(cache._cache), bits(expected))


def lz_config(
    num_simulations: int = 2,
    max_cache_size: int | None = 3,
    with_shape: bool = True,
    **extra: object,
) -> types.SimpleNamespace:
    cfg: dict[str, object] = {"num_simulations": num_simulations}
    if max_cache_size is not None:
        cfg["max_cache_size"] = max_cache_size
    if with_shape:
        cfg.update(num_layers=L, num_heads=H, embed_dim=H * D, infer_context_length=CL // 2)
    cfg.update(extra)
    return types.SimpleNamespace(**cfg)


# --------------------------------------------------------------------------- (a) model


class LightZeroModel:
    """LightZero's manager semantics on the spec: legacy sizes, FIFO, ``Scope.GLOBAL``.

    The spec pools decide hits, slots and evictions; the tensors live in ``side``, keyed by
    ``(pool, env, key)`` and maintained through every eviction and clear.
    """

    def __init__(
        self, env_num: int, num_simulations: int, max_cache_size: int, num_layers: int = L
    ) -> None:
        cfg = ManagerConfig.legacy(
            env_num, num_layers, CL, num_simulations, max_cache_size, Policy.FIFO, Scope.GLOBAL
        )
        self.spec = SpecManager(cfg)
        self.side: dict[tuple[str, int, int], tuple[list[torch.Tensor], int]] = {}
        self.num_layers = num_layers

    def set(self, tier: Tier, env_id: int, key: int, kv: Any) -> None:
        signed = to_signed(key)
        tensors, size = expected_tensors(kv)
        tokens = tuple((0.5,) * size for _ in range(self.num_layers))
        entry = Entry(tokens, tokens)
        if tier is Tier.ROOT:
            result, pool = self.spec.store_root(env_id, signed, entry), ("root", env_id)
        else:
            result, pool = self.spec.store_recurrent(0, signed, entry), ("recur", 0)
        if result.evicted is not None:
            del self.side[(*pool, result.evicted)]
        self.side[(*pool, signed)] = (tensors, size)

    def get(self, tiers: str, env_id: int, key: int) -> tuple[list[torch.Tensor], int] | None:
        signed = to_signed(key)
        if tiers == "root":
            found = self.spec.lookup_root(env_id, signed)
        elif tiers == "recurrent":
            found = self.spec.lookup_recurrent(0, signed)
        else:
            found = self.spec.lookup(env_id, signed)
        if found.tier is Tier.MISS:
            return None
        pool = ("root", env_id) if found.tier is Tier.ROOT else ("recur", 0)
        tensors, size = self.side[(*pool, signed)]
        assert found.entry is not None and found.entry.size == size
        return tensors, size

    def clear(self, what: str, env_id: int = 0) -> None:
        if what == "all":
            self.spec.clear_all()
            self.side.clear()
        elif what == "roots":
            self.spec.clear_roots()
            self.side = {k: v for k, v in self.side.items() if k[0] != "root"}
        elif what == "env":
            self.spec.clear_env(env_id)
            self.side = {k: v for k, v in self.side.items() if k[:2] != ("root", env_id)}
        else:
            self.spec.clear_recurrent()
            self.side = {k: v for k, v in self.side.items() if k[0] != "recur"}


def assert_summary_matches(summary: dict[str, Any], model: LightZeroModel) -> None:
    spec = model.spec
    for name in ("queries", "hits", "misses", "root_hits", "recurrent_hits"):
        assert summary[name] == getattr(spec.stats, name), name
    fields = ("queries", "hits", "misses", "inserts", "updates", "evictions")
    for env, pool in enumerate(spec.roots):
        row = summary["init"]["per_env"][env]
        assert row["size"] == len(pool)
        assert {f: row[f] for f in fields} == {f: getattr(pool.stats, f) for f in fields}
    rec = summary["recur"]
    assert rec["size"] == len(spec.recurrent)
    assert {f: rec[f] for f in fields} == {f: getattr(spec.recurrent.stats, f) for f in fields}
    assert summary["init"]["size"] == sum(len(p) for p in spec.roots)


KEYS = [0, 1, 2, 3, 2**63, -(2**63), 2**64 - 1, -1]  # 6 distinct keys: twins alias
OP_NAMES = (
    ["set_init"] * 4
    + ["set_recur"] * 4
    + ["get_init"] * 3
    + ["get_recur"] * 3
    + ["hier"] * 4
    + ["clear_all", "clear_init", "clear_recur", "clear_env"]
)
OPS = st.tuples(
    st.sampled_from(OP_NAMES),
    st.integers(0, 2),  # env id (reduced modulo env_num)
    st.sampled_from(KEYS),
    st.integers(0, CL),  # size of a stored object
    st.integers(0, 2**16),  # seed of its tensors
)


def run_differential(
    ops: list[tuple[str, int, int, int, int]],
    env_num: int,
    num_simulations: int,
    max_cache_size: int,
    eager: bool,
    shadow: bool,
) -> dict[str, Any]:
    cfg = lz_config(num_simulations, max_cache_size, with_shape=eager)
    dtype = torch.float32 if eager else None
    manager = KVCacheManager(cfg, env_num, device="cpu", dtype=dtype, shadow=shadow)
    model = LightZeroModel(env_num, num_simulations, max_cache_size)
    for name, env, key, size, seed in ops:
        env %= env_num
        if name == "set_init":
            kv = make_kv(size, seed)
            manager.set_init_cache(env, key, kv)
            model.set(Tier.ROOT, env, key, kv)
        elif name == "set_recur":
            kv = make_kv(size, seed)
            manager.set_recur_cache(key, kv)
            model.set(Tier.RECURRENT, env, key, kv)
        elif name in ("get_init", "get_recur", "hier"):
            if name == "get_init":
                got, want = manager.get_init_cache(env, key), model.get("root", env, key)
            elif name == "get_recur":
                got, want = manager.get_recur_cache(key), model.get("recurrent", env, key)
            else:
                got, want = manager.hierarchical_get(env, key), model.get("hierarchical", env, key)
            if want is None:
                assert got is None, (name, env, key)
            else:
                assert_object(got, want)
        elif name == "clear_all":
            manager.clear_all()
            model.clear("all")
        elif name == "clear_init":
            manager.clear_init_caches()
            model.clear("roots")
        elif name == "clear_env":
            manager.clear_init_cache(env)
            model.clear("env", env)
        else:
            manager.clear_recur_cache()
            model.clear("recur")
        assert_summary_matches(manager.get_stats_summary(), model)
    return manager.get_stats_summary()


def report(summary: dict[str, Any]) -> None:
    """Hypothesis events: how often the runs wrapped a ring and hit."""
    event(f"root evictions: {summary['init']['evictions'] > 0}")
    event(f"recurrent evictions: {summary['recur']['evictions'] > 0}")
    event(f"hits: {summary['hits'] > 0}")


@given(
    ops=st.lists(OPS, min_size=10, max_size=60),
    env_num=st.integers(1, 3),
    num_simulations=st.integers(1, 3),
    max_cache_size=st.integers(1, 3),
    eager=st.booleans(),
)
def test_differential_against_spec_model(
    ops: list[tuple[str, int, int, int, int]],
    env_num: int,
    num_simulations: int,
    max_cache_size: int,
    eager: bool,
) -> None:
    report(run_differential(ops, env_num, num_simulations, max_cache_size, eager, shadow=False))


@given(
    ops=st.lists(OPS, min_size=10, max_size=40),
    env_num=st.integers(1, 3),
    num_simulations=st.integers(1, 3),
    eager=st.booleans(),
)
def test_shadow_mode_passes_a_clean_random_run(
    ops: list[tuple[str, int, int, int, int]], env_num: int, num_simulations: int, eager: bool
) -> None:
    report(run_differential(ops, env_num, num_simulations, 2, eager, shadow=True))


@pytest.mark.parametrize("shadow", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_long_seeded_random_runs(seed: int, shadow: bool) -> None:
    """Long runs that surely wrap both rings many times (Hypothesis' lists are short)."""
    rng = random.Random(seed)
    ops = [
        (
            rng.choice(OP_NAMES[:-4]) if rng.random() > 0.02 else rng.choice(OP_NAMES[-4:]),
            rng.randrange(3),
            rng.choice([*KEYS, 4, 5, 6]),
            rng.randrange(CL + 1),
            rng.randrange(2**16),
        )
        for _ in range(300)
    ]
    summary = run_differential(ops, 2, 2, 3, eager=seed % 2 == 0, shadow=shadow)
    assert summary["init"]["evictions"] > 5 and summary["recur"]["evictions"] > 5
    assert summary["root_hits"] > 5 and summary["recurrent_hits"] > 5


def test_rings_wrap_in_fifo_order_with_legacy_sizes() -> None:
    """Root ring min(max_cache_size, max(256, 2N)); recurrent ring N * env_num; FIFO."""
    manager = KVCacheManager(lz_config(num_simulations=2, max_cache_size=3), 2)
    assert (manager.root_capacity, manager.recurrent_capacity) == (3, 4)
    for key in range(4):
        manager.set_init_cache(1, key, make_kv(3, key))
    assert manager.get_init_cache(1, 0) is None  # the 4th new key evicted the 1st
    assert_object(manager.get_init_cache(1, 3), expected_tensors(make_kv(3, 3)))
    manager.set_init_cache(1, 1, make_kv(5, 99))  # stored key: in place, pointer unmoved
    manager.set_init_cache(1, 4, make_kv(1, 4))  # evicts key 1 (the oldest), not key 2
    assert manager.get_init_cache(1, 1) is None
    assert manager.get_init_cache(1, 2) is not None
    for key in range(5):
        manager.set_recur_cache(key, make_kv(2, key))
    assert manager.get_recur_cache(0) is None and manager.get_recur_cache(4) is not None
    assert KVCacheManager(lz_config(100, None), 8).root_capacity == 256
    big = KVCacheManager(lz_config(200, None), 8)
    assert (big.root_capacity, big.recurrent_capacity) == (400, 1600)
    assert KVCacheManager(lz_config(3000, None), 1).root_capacity == 5000


def test_recurrent_keys_are_global_last_writer_wins() -> None:
    manager = KVCacheManager(lz_config(), 2)
    manager.set_recur_cache(7, make_kv(3, 1))
    manager.set_recur_cache(7, make_kv(4, 2))
    for env in (0, 1):
        assert_object(manager.hierarchical_get(env, 7), expected_tensors(make_kv(4, 2)))
    # LightZero's unsigned xxh64 digests and their signed twins name the same entry.
    manager.set_init_cache(0, 2**64 - 5, make_kv(2, 3))
    assert_object(manager.get_init_cache(0, -5), expected_tensors(make_kv(2, 3)))
    assert lightzero_key(2**63) == -(2**63) and lightzero_key(5) == 5


def test_shape_from_config_or_first_object() -> None:
    explicit = KVCacheManager(
        {"num_simulations": 2, "num_layers": 3, "num_heads": 2, "embed_dim": 6,
         "context_length": 10, "infer_context_length": 4, "device": "cpu"},
        1,
        dtype=torch.float32,
    )  # fmt: skip
    assert explicit.allocated  # everything known: allocated at once
    assert explicit.context_length == 10  # an explicit context_length wins
    assert explicit.num_layers == 3
    explicit.set_init_cache(0, 1, make_kv(4, 0, num_layers=3, capacity=10))
    with pytest.raises(ShapeError, match=r"\(1, 2, 10, 3\)"):
        explicit.set_init_cache(0, 1, make_kv(4, 0, num_layers=3, capacity=8))
    inferred = KVCacheManager(lz_config(with_shape=False), 1)
    assert not inferred.allocated and inferred.get_init_cache(0, 1) is None
    inferred.set_init_cache(0, 1, make_kv(4, 0, num_layers=3, capacity=6))
    assert (inferred.num_layers, inferred.context_length) == (3, 6)
    got = inferred.get_init_cache(0, 1)
    assert isinstance(got, KVSnapshot)
    assert isinstance(got.clone(), StandinKeysValues)  # the caller's own class
    assert isinstance(got.materialize(), StandinKeysValues)
    assert_object(got, expected_tensors(make_kv(4, 0, num_layers=3, capacity=6)))
    assert inferred.get_stats_summary()["init"]["queries"] == 2  # the early miss counts
    # LightZero's defaults: num_simulations 50, max_cache_size 5000.
    default = KVCacheManager(types.SimpleNamespace(), 2)
    assert (default.root_capacity, default.recurrent_capacity) == (256, 100)
    with pytest.raises(ConfigError, match="num_simulations"):
        KVCacheManager(types.SimpleNamespace(num_simulations=0), 1)
    with pytest.raises(ConfigError):
        KVCacheManager(lz_config(embed_dim=7), 1)
    with pytest.raises(ConfigError):
        KVCacheManager(lz_config(), 0)


# --------------------------------------------------------------------------- (b) isolation


def scribble(kv: Any) -> None:
    """Mutate every tensor of ``kv`` in place, its sizes, and append through its API."""
    for cache in caches_of(kv):
        cache._cache.fill_(float("nan"))
        cache._size = 1
    for cache in caches_of(kv):
        if isinstance(cache, StandinCache):
            cache.update(torch.full((1, H, 2, D), 7.0))


def test_isolation_every_tensor_mutated_after_the_call() -> None:
    manager = KVCacheManager(lz_config(), 2)
    given_root, given_rec = make_kv(5, 1), make_kv(3, 2)
    want_root, want_rec = expected_tensors(given_root), expected_tensors(given_rec)
    manager.set_init_cache(0, 11, given_root)
    manager.set_recur_cache(22, given_rec)
    scribble(given_root)  # the objects given to set_* ...
    scribble(given_rec)
    getters: list[tuple[Callable[[], Any], tuple[list[torch.Tensor], int]]] = [
        (lambda: manager.get_init_cache(0, 11), want_root),
        (lambda: manager.hierarchical_get(0, 11), want_root),
        (lambda: manager.get_recur_cache(22), want_rec),
        (lambda: manager.hierarchical_get(1, 22), want_rec),
    ]
    store = manager._store
    assert store is not None
    slab = store.data.untyped_storage().data_ptr()
    for get, want in getters:
        first, second = get(), get()
        assert_object(first, want)
        pointers = [c._cache.untyped_storage().data_ptr() for c in caches_of(first)]
        pointers2 = [c._cache.untyped_storage().data_ptr() for c in caches_of(second)]
        pointers3 = [c._cache.untyped_storage().data_ptr() for c in caches_of(get().clone())]
        assert slab not in pointers and slab not in pointers3
        assert not set(pointers) & set(pointers2) and not set(pointers3) & set(pointers)
        assert first is not second and first._keys_values[0] is not second._keys_values[0]
        scribble(first)  # ... and every object a lookup returned
        first._keys_values[1]._v_cache._cache = torch.zeros(1)
        assert caches_of(first)[0]._history == [2]
        assert all(c._history == [] for c in caches_of(second))
        assert_object(second, want)
        assert_object(get(), want)


def test_isolation_of_the_template_object() -> None:
    """The first object given becomes the template; mutating its structure changes nothing."""
    manager = KVCacheManager(lz_config(), 1)
    first = make_kv(2, 5)
    manager.set_init_cache(0, 1, first)
    first._keys_values[0]._k_cache._cache_shape = (9, 9, 9, 9)
    got = manager.get_init_cache(0, 1)
    assert got is not None
    assert got._keys_values[0]._k_cache._cache_shape == (1, H, CL, D)
    got._keys_values[0]._k_cache.update(torch.ones(1, H, 2, D))  # LightZero-style append
    assert got.size == 4
    assert_object(manager.get_init_cache(0, 1), expected_tensors(make_kv(2, 5)))


# --------------------------------------------------------------------------- (c) statistics


def test_statistics_exact_counts_and_one_query_per_hierarchical_get() -> None:
    manager = KVCacheManager(lz_config(num_simulations=2, max_cache_size=3), 2)
    assert manager.get_init_cache(0, 5) is None  # before any storage exists: still counted
    manager.reset_stats()
    manager.set_init_cache(0, 10, make_kv(3, 0))
    manager.set_init_cache(1, 20, make_kv(3, 1))
    manager.set_recur_cache(30, make_kv(3, 2))
    assert manager.get_init_cache(0, 10) is not None  # root hit
    assert manager.get_init_cache(0, 20) is None  # 20 is env 1's
    assert manager.get_recur_cache(30) is not None
    assert manager.get_recur_cache(10) is None  # roots are not searched
    assert manager.hierarchical_get(0, 10) is not None  # root hit: recurrent not visited
    assert manager.hierarchical_get(1, 30) is not None  # root miss, recurrent hit
    assert manager.hierarchical_get(1, 99) is None  # both miss: still ONE query
    s = manager.get_stats_summary()
    assert (s["queries"], s["hits"], s["misses"]) == (7, 4, 3)
    assert (s["root_hits"], s["recurrent_hits"]) == (2, 2)
    assert s["hit_rate"] == pytest.approx(4 / 7)
    init, rec = s["init"], s["recur"]
    assert (init["queries"], init["hits"], init["misses"]) == (5, 2, 3)
    assert init["hit_rate"] == pytest.approx(2 / 5)
    assert [(e["queries"], e["hits"]) for e in init["per_env"]] == [(3, 2), (2, 0)]
    assert (rec["queries"], rec["hits"], rec["misses"]) == (4, 2, 2)
    assert (init["inserts"], init["evictions"], rec["inserts"]) == (2, 0, 1)
    for key in (11, 12, 13):  # env 0's ring of 3 now wraps: key 10 evicted
        manager.set_init_cache(0, key, make_kv(1, key))
    manager.set_init_cache(0, 13, make_kv(1, 0))  # an update in place
    s = manager.get_stats_summary()
    env0 = s["init"]["per_env"][0]
    assert (env0["inserts"], env0["updates"], env0["evictions"], env0["size"]) == (4, 1, 1, 3)
    assert env0["occupancy"] == 1.0 and env0["capacity"] == 3
    assert (s["init"]["size"], s["init"]["capacity"], s["recur"]["size"]) == (4, 6, 1)
    assert s["recur"]["occupancy"] == pytest.approx(1 / 4)
    manager.reset_stats()
    s = manager.get_stats_summary()
    assert (s["queries"], s["init"]["queries"], s["recur"]["evictions"]) == (0, 0, 0)
    assert s["init"]["size"] == 4  # resetting statistics keeps the entries
    quiet = KVCacheManager(lz_config(), 1, enable_stats=False)
    quiet.set_recur_cache(1, make_kv(1, 1))
    summary = quiet.get_stats_summary()
    assert summary["stats_enabled"] is False and "queries" not in summary
    assert summary["recur"]["size"] == 1


def test_debug_logs_name_pool_key_and_slot(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    manager = KVCacheManager(lz_config(), 2)
    with caplog.at_level(logging.DEBUG, logger="zerokv.lightzero"), trace.tracing():
        manager.set_init_cache(1, 42, make_kv(2, 0))
        manager.hierarchical_get(1, 42)
        manager.get_recur_cache(43)
    text = caplog.text
    assert "set_init_cache: key 42 -> root pool of env 1, slot 0" in text
    assert "hierarchical_get: env 1 key 42: hit in the root pool of env 1, slot 0" in text
    assert "get_recur_cache: env 0 key 43: miss" in text
    assert all(r.name == "zerokv.lightzero" for r in caplog.records if "key" in r.getMessage())
    assert capsys.readouterr() == ("", "")


# --------------------------------------------------------------------------- (d) bad inputs


def _set_cache(kv: Any, layer: int, side: str, value: object) -> Any:
    getattr(kv._keys_values[layer], side)._cache = value
    return kv


def _set_size(kv: Any, layer: int, side: str, value: object) -> Any:
    getattr(kv._keys_values[layer], side)._size = value
    return kv


def _without(kv: Any, attr: str) -> Any:
    delattr(kv._keys_values[1], attr)
    return kv


class _NoLen:
    _keys_values = ()


class _BadSize(StandinKeysValues):
    @property
    def size(self) -> int:
        return 1


BAD_OBJECTS: list[tuple[str, Callable[[], object], type[ZeroKVError], str]] = [
    ("no len", lambda: object(), EntryError, "KeysValues-like"),
    ("no _keys_values", lambda: [1, 2], EntryError, "_keys_values"),
    ("len mismatch", lambda: _NoLen(), EntryError, "len"),
    ("3 layers", lambda: make_kv(2, 0, num_layers=3), EntryError, "expected 2 layers, got 3"),
    ("missing _v_cache", lambda: _without(make_kv(2, 0), "_v_cache"), EntryError, "_v_cache"),
    ("list cache", lambda: _set_cache(make_kv(2, 0), 1, "_k_cache", [0.0]), DTypeError, "list"),
    (
        "wrong heads",
        lambda: _set_cache(make_kv(2, 0), 1, "_v_cache", torch.zeros(1, 3, CL, D)),
        ShapeError,
        r"must have shape \(1, 2, 8, 3\), got \(1, 3, 8, 3\)",
    ),
    (
        "wrong capacity",
        lambda: make_kv(2, 0, capacity=CL + 2),
        ShapeError,
        r"\(1, 2, 8, 3\), got \(1, 2, 10, 3\)",
    ),
    (
        "batched cache",
        lambda: _set_cache(make_kv(2, 0), 0, "_k_cache", torch.zeros(2, H, CL, D)),
        ShapeError,
        r"\(1, H, cl, d\)",
    ),
    (
        "float64",
        lambda: _set_cache(make_kv(2, 0), 1, "_k_cache", torch.zeros(1, H, CL, D).double()),
        DTypeError,
        "must have dtype torch.float32, got torch.float64",
    ),
    (
        "meta device",
        lambda: _set_cache(make_kv(2, 0), 1, "_v_cache", torch.zeros(1, H, CL, D, device="meta")),
        DeviceError,
        "must be on cpu, got meta",
    ),
    ("ragged", lambda: _set_size(make_kv(2, 0), 1, "_v_cache", 3), EntryError, "same size"),
    ("too long", lambda: make_kv(CL + 1, 0), EntryError, r"\[0, 8\]"),
    ("negative", lambda: make_kv(-1, 0), EntryError, r"\[0, 8\]"),
    ("float size", lambda: _set_size(make_kv(2, 0), 0, "_k_cache", 2.0), EntryError, "int"),
    ("kv.size", lambda: _BadSize(), EntryError, "kv.size"),
]


def _snapshot(manager: KVCacheManager) -> tuple[object, ...]:
    store = manager._store
    assert store is not None
    return (
        manager.get_stats_summary(),
        [pool.slot_keys() for pool in manager.init_pools],
        manager.recur_pool.slot_keys(),
        list(store.sizes),
        store.data.clone(),
    )


def _assert_same(a: tuple[object, ...], b: tuple[object, ...]) -> None:
    assert a[:4] == b[:4]
    x, y = a[4], b[4]
    assert isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)
    assert torch.equal(bits(x), bits(y))


@pytest.mark.parametrize("shadow", [False, True])
@pytest.mark.parametrize(("name", "build", "error", "message"), BAD_OBJECTS)
def test_bad_objects_raise_and_change_nothing(
    name: str, build: Callable[[], object], error: type[ZeroKVError], message: str, shadow: bool
) -> None:
    manager = KVCacheManager(lz_config(), 2, shadow=shadow)
    manager.set_init_cache(0, 1, make_kv(3, 1))
    manager.set_recur_cache(2, make_kv(2, 2))
    before = _snapshot(manager)
    setters: list[Callable[[object], object]] = [
        lambda kv: manager.set_init_cache(1, 5, kv),
        lambda kv: manager.set_recur_cache(5, kv),
    ]
    for setter in setters:
        with pytest.raises(error, match=message):
            setter(build())
        _assert_same(before, _snapshot(manager))
    assert manager.get_init_cache(1, 5) is None and manager.get_recur_cache(5) is None


BAD_ARGS: list[tuple[str, Callable[[KVCacheManager], object], type[ZeroKVError]]] = [
    ("env too big", lambda m: m.set_init_cache(2, 1, make_kv(1, 0)), EnvIdError),
    ("env negative", lambda m: m.get_init_cache(-1, 1), EnvIdError),
    ("env bool", lambda m: m.hierarchical_get(True, 1), EnvIdError),
    ("env str", lambda m: m.clear_init_cache("0"), EnvIdError),  # type: ignore[arg-type]
    ("key 2**64", lambda m: m.set_init_cache(0, 2**64, make_kv(1, 0)), KeyRangeError),
    ("key < -2**63", lambda m: m.get_recur_cache(-(2**63) - 1), KeyRangeError),
    ("key float", lambda m: m.set_recur_cache(1.5, make_kv(1, 0)), KeyRangeError),  # type: ignore[arg-type]
    ("key str", lambda m: m.hierarchical_get(0, "k"), KeyRangeError),  # type: ignore[arg-type]
    ("key bool", lambda m: m.get_init_cache(0, True), KeyRangeError),
]


@pytest.mark.parametrize(("name", "call", "error"), BAD_ARGS)
def test_bad_env_ids_and_keys_raise_and_change_nothing(
    name: str, call: Callable[[KVCacheManager], object], error: type[ZeroKVError]
) -> None:
    manager = KVCacheManager(lz_config(), 2)
    manager.set_init_cache(0, 1, make_kv(3, 1))
    before = _snapshot(manager)
    with pytest.raises(error):
        call(manager)
    _assert_same(before, _snapshot(manager))


def test_bad_first_object_allocates_nothing() -> None:
    manager = KVCacheManager(lz_config(with_shape=False), 1)
    with pytest.raises(EntryError):
        manager.set_init_cache(0, 1, _set_size(make_kv(2, 0), 1, "_k_cache", 3))
    assert not manager.allocated and manager.num_layers is None
    manager.set_init_cache(0, 1, make_kv(2, 0))
    assert manager.num_layers == L and manager.get_init_cache(0, 1) is not None


# --------------------------------------------------------------------------- (e) shadow


def shadow_adapter() -> tuple[KVCacheManager, ShadowManager]:
    manager = KVCacheManager(lz_config(), 2, dtype=torch.float32, device="cpu", shadow=True)
    inner = manager.shadow_manager
    assert isinstance(inner, ShadowManager)
    return manager, inner


def test_shadow_catches_a_corrupted_slab_write(monkeypatch: pytest.MonkeyPatch) -> None:
    manager, shadow = shadow_adapter()
    write = shadow.impl.slab.write

    def corrupt(slots: torch.Tensor, entries: Entries) -> None:
        write(slots, Entries(entries.kv + 1.0, entries.lengths))

    monkeypatch.setattr(shadow.impl.slab, "write", corrupt)
    with pytest.raises(ShadowDivergence, match="store_root_many") as info:
        manager.set_init_cache(0, 1, make_kv(3, 0))
    assert info.value.operation == "store_root_many" and "stored K/V" in info.value.what
    assert isinstance(info.value, ContractViolation)


def test_shadow_catches_an_altered_slot() -> None:
    manager, shadow = shadow_adapter()
    manager.set_init_cache(1, 1, make_kv(3, 0))
    slot = shadow.impl.config.root_capacity * 1  # env 1, slot 0
    shadow.impl.slab.kv[1, 0, slot, 0, CL - 1, 0] += 1.0
    with pytest.raises(ShadowDivergence, match="read") as info:
        manager.get_init_cache(1, 1)
    assert info.value.operation == "read"
    assert "1 elements differ" in str(info.value)


def test_shadow_catches_a_corrupted_index() -> None:
    manager, shadow = shadow_adapter()
    manager.set_init_cache(0, 1, make_kv(3, 0))
    shadow.impl.root.evict(1, pool_id=0)  # the index forgets a key behind the shadow's back
    with pytest.raises(ShadowDivergence, match=r"lookup_many\(tiers='root'\)") as info:
        manager.get_init_cache(0, 1)
    assert "(tier, slot, collided)" in info.value.what
    assert info.value.implementation == (0, None, False)
    assert info.value.spec == (1, 0, False)


def test_shadow_catches_a_write_behind_its_back() -> None:
    manager, shadow = shadow_adapter()
    manager.set_recur_cache(1, make_kv(3, 0))
    entries = Entries(torch.zeros(L, 2, 1, H, CL, D), torch.tensor([0]))
    shadow.impl.store_recurrent_many([0], torch.tensor([9]), entries)  # moves the ring
    with pytest.raises(ShadowDivergence, match="store_recurrent_many") as info:
        manager.set_recur_cache(2, make_kv(3, 0))
    assert info.value.implementation == (2, None, True)  # slot 2, where the spec says 1
    assert info.value.spec == (1, None, True)


def test_shadow_catches_wrong_statistics() -> None:
    manager, shadow = shadow_adapter()
    shadow.impl.queries += 1  # one phantom lookup
    with pytest.raises(ShadowDivergence, match="manager statistics"):
        manager.hierarchical_get(0, 1)


def test_shadow_catches_an_error_the_spec_does_not_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    _, shadow = shadow_adapter()

    def refuse(env_id: int) -> None:
        raise EnvIdError("planted")

    monkeypatch.setattr(shadow.impl, "clear_env", refuse)
    with pytest.raises(ShadowDivergence, match="clear_env") as info:
        shadow.clear_env(0)
    assert info.value.spec == "succeeded"


# --------------------------------------------------------------------------- (f) snapshots


def held_snapshot_survives_overwrite(manager: KVCacheManager) -> None:
    """A lookup result held (not cloned) while its slot is overwritten keeps the old entry."""
    old = make_kv(3, 1)
    manager.set_recur_cache(1, old)
    held = manager.get_recur_cache(1)
    materialized = manager.get_recur_cache(1)
    assert held is not None and materialized is not None
    materialized.materialize()
    manager.clear_recur_cache()  # the ring restarts at slot 0: the next store reuses it
    manager.set_recur_cache(2, make_kv(5, 2))
    assert manager.get_recur_cache(1) is None
    assert held.size == 3
    assert_object(held.clone(), expected_tensors(old))
    assert_object(held, expected_tensors(old))
    assert_object(materialized, expected_tensors(old))
    assert_object(manager.get_recur_cache(2), expected_tensors(make_kv(5, 2)))


def test_snapshots_are_copy_on_write() -> None:
    held_snapshot_survives_overwrite(KVCacheManager(lz_config(), 2))
    manager = KVCacheManager(lz_config(), 2)  # a stored key overwritten in place
    manager.set_init_cache(1, 5, make_kv(2, 7))
    held = manager.get_init_cache(1, 5)
    manager.set_init_cache(1, 5, make_kv(6, 8))
    assert held is not None
    assert_object(held.clone(), expected_tensors(make_kv(2, 7)))
    assert_object(manager.get_init_cache(1, 5), expected_tensors(make_kv(6, 8)))


def test_copy_on_write_check_bites(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted bug: the store believes no snapshot holds the row (no copy before a write)."""
    import zerokv.lightzero.store as store_module

    monkeypatch.setattr(store_module, "_getrefcount", lambda obj: 0)
    with pytest.raises(AssertionError):
        held_snapshot_survives_overwrite(KVCacheManager(lz_config(), 2))


def test_unheld_rows_are_overwritten_without_a_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """LightZero's pattern (clone every hit, drop the handle) costs no copy-on-write copy."""
    manager = KVCacheManager(lz_config(), 2)
    manager.set_recur_cache(1, make_kv(3, 1))
    got = manager.get_recur_cache(1)
    assert got is not None
    cloned = got.clone()
    del got
    store = manager._store
    assert store is not None
    reads: list[int] = []
    monkeypatch.setattr(store, "rows", _CountingRows(store.rows, reads))
    manager.clear_recur_cache()
    manager.set_recur_cache(2, make_kv(5, 2))
    assert len(reads) == 1  # the write only: no copy for a snapshot
    held = manager.get_recur_cache(2)
    manager.clear_recur_cache()
    manager.set_recur_cache(3, make_kv(1, 3))
    assert len(reads) == 3  # a held snapshot: its row is copied first
    assert held is not None and held.size == 5
    assert_object(cloned, expected_tensors(make_kv(3, 1)))


class _CountingRows(list[torch.Tensor]):
    """The store's row views; records every row read (a write reads its row once, plus
    once more when it first copies the row for a snapshot still held)."""

    def __init__(self, rows: list[torch.Tensor], reads: list[int]) -> None:
        super().__init__(rows)
        self.reads = reads

    def __getitem__(self, index: Any) -> Any:
        self.reads.append(index)
        return super().__getitem__(index)


def test_snapshot_reads_like_keys_values_and_never_aliases() -> None:
    manager = KVCacheManager(lz_config(), 1)
    given = make_kv(4, 3)
    manager.set_init_cache(0, 9, given)
    got = manager.get_init_cache(0, 9)
    assert got is not None and len(got) == L and got.size == 4
    assert got[0] is got._keys_values[0]  # reads go to the snapshot's own object
    got[0]._k_cache._size = 1  # mutate the snapshot's own object
    assert got.size == 1 and got.clone().size == 1
    import copy as copy_module
    import pickle

    again = manager.get_init_cache(0, 9)
    assert again is not None and again.size == 4
    assert_object(copy_module.deepcopy(again), expected_tensors(given))
    assert "KVSnapshot(size=4" in repr(again)
    plain = KVCacheManager(lz_config(), 1)
    layout = LayoutKeysValues.empty(L, H, CL, D)
    layout._keys_values[1]._v_cache._cache.fill_(2.0)
    plain.set_recur_cache(1, layout)
    pickled = pickle.loads(pickle.dumps(plain.get_recur_cache(1)))
    assert isinstance(pickled, LayoutKeysValues)
    assert_object(pickled, expected_tensors(layout))


class _Index:
    """An integer-like (``__index__``), like numpy's integers."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


def test_integer_likes_as_env_ids_and_keys() -> None:
    manager = KVCacheManager(lz_config(), 2)
    manager.set_init_cache(_Index(1), _Index(2**64 - 1), make_kv(2, 0))  # type: ignore[arg-type]
    assert manager.get_init_cache(1, -1) is not None
    assert manager.hierarchical_get(_Index(1), 2**64 - 1) is not None  # type: ignore[arg-type]
    assert unsigned_key(-1) == 2**64 - 1 and unsigned_key(_Index(5)) == 5
    with pytest.raises(KeyRangeError):
        unsigned_key(1.0)


# --------------------------------------------------------------------------- (g) pools


def test_pools_as_lightzero_uses_them() -> None:
    manager = KVCacheManager(lz_config(num_simulations=2, max_cache_size=3), 2)
    assert [p.name for p in manager.init_pools] == ["init_env0", "init_env1"]
    assert (manager.recur_pool.name, manager.wm_pool.name) == ("recurrent", "world_model")
    assert [p.pool_size for p in (*manager.init_pools, manager.recur_pool, manager.wm_pool)] == [
        3,
        3,
        4,
        2,
    ]
    manager.set_init_cache(0, 2**64 - 1, make_kv(2, 0))
    manager.set_init_cache(1, 7, make_kv(2, 1))
    manager.set_recur_cache(-2, make_kv(2, 2))
    view = manager.init_pools[0]._key_to_index
    assert dict(view) == {2**64 - 1: 0}  # LightZero's unsigned form
    assert manager.init_pools[0].key_to_slot is view
    contexts = {2**64 - 1: "kept", 5: "stale"}
    assert contexts.keys() - view.keys() == {5}  # what LightZero's rebuild mode computes
    with pytest.raises(TypeError):
        view[3] = 1  # type: ignore[index]
    assert dict(manager.recur_pool._key_to_index) == {2**64 - 2: 0}
    assert manager.recur_pool.slot_keys() == [2**64 - 2, None, None, None]
    assert len(manager.init_pools[0]) == 1 and len(manager.recur_pool) == 1
    assert manager.init_pools[1].get(7) is not None and manager.init_pools[0].get(7) is None
    manager.init_pools[0].clear()  # what LightZero's policy does at an episode end
    assert len(manager.init_pools[0]) == 0 and dict(view) == {}  # the view is live
    assert len(manager.init_pools[1]) == 1
    stats = manager.init_pools[1].stats
    assert stats is not None
    assert repr(stats) == "CacheStats(hits=1, misses=0, evictions=0, hit_rate=100.00%)"
    assert (stats.total_queries, stats.miss_rate) == (1, 0.0)
    assert manager.wm_pool.set(3, make_kv(1, 3)) == 0
    assert manager.set_wm_cache(4, make_kv(1, 4)) == 1
    assert manager.get_wm_cache(3) is not None and manager.wm_pool.get(5) is None
    assert manager.set_wm_cache(6, make_kv(1, 6)) == 0  # a ring of env_num slots
    assert manager.get_wm_cache(3) is None
    summary = manager.get_stats_summary()
    assert summary["wm"]["evictions"] == 1 and summary["wm"]["queries"] == 3
    assert summary["queries"] == 2  # the world-model pool is outside the overall counters
    manager.recur_pool.set(9, make_kv(1, 9))
    assert manager.recur_pool.get(9) is not None
    manager.recur_pool.clear()
    assert manager.recur_clear_count == 0  # only clear_recur_cache counts, as in LightZero
    manager.clear_recur_cache()
    assert manager.recur_clear_count == 1 == manager._clear_recur_counter
    manager.keys_values_wm_list.append(object())
    manager.keys_values_wm_size_list.append(3)
    manager.clear_all()
    assert manager.keys_values_wm_list == [] and manager.keys_values_wm_size_list == []
    assert manager.clear_all_count == 1 and len(manager.wm_pool) == 0
    assert repr(manager.init_pools[0]).startswith("KVCachePool(name='init_env0', size=0/3")
    assert repr(manager).startswith("KVCacheManager(env_num=2, init_caches=[0, 0]")


def test_clears_are_logged_like_lightzero(caplog: pytest.LogCaptureFixture) -> None:
    manager = KVCacheManager(lz_config(), 1, True, 3, 2)
    with caplog.at_level(logging.INFO, logger="zerokv.lightzero"):
        for _ in range(6):
            manager.clear_recur_cache()
        for _ in range(4):
            manager.clear_all()
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert sum("recurrent" in m for m in infos) == 2  # calls 3 and 6
    assert sum("every KV cache pool" in m for m in infos) == 2  # calls 2 and 4
    with pytest.raises(ConfigError):
        KVCacheManager(lz_config(), 1, True, -1)


# --------------------------------------------------------------------------- (h) shadow mode


def _shadowed() -> KVCacheManager:
    manager = KVCacheManager(lz_config(), 2, shadow=True)
    manager.set_init_cache(0, 1, make_kv(3, 1))
    manager.set_recur_cache(2, make_kv(4, 2))
    assert manager.hierarchical_get(0, 1) is not None
    assert manager.hierarchical_get(1, 2) is not None
    return manager


def test_shadow_catches_a_corrupted_row_of_the_drop_in() -> None:
    manager = _shadowed()
    store = manager._store
    assert store is not None
    store.rows[manager._roots[0].base][0, 0, 1, 0] += 1.0  # a valid token of env 0's root
    with pytest.raises(ShadowDivergence, match="stored K/V"):
        manager.get_init_cache(0, 1)


def test_shadow_catches_a_key_the_drop_in_forgot() -> None:
    manager = _shadowed()
    manager._recur.index.pop(2)
    with pytest.raises(ShadowDivergence, match=r"\(tier, slot\)") as info:
        manager.hierarchical_get(1, 2)
    assert info.value.implementation == (int(Tier.MISS), -1)
    assert info.value.spec == (int(Tier.RECURRENT), 0)


def test_shadow_catches_a_wrong_slot_of_the_drop_in() -> None:
    manager = _shadowed()
    manager._roots[1].next = 2  # the drop-in's ring pointer moves behind its back
    with pytest.raises(ShadowDivergence, match="slot, evicted key") as info:
        manager.set_init_cache(1, 5, make_kv(2, 5))
    assert info.value.implementation == (2, None) and info.value.spec == (0, None)


def test_shadow_catches_wrong_counters_of_the_drop_in() -> None:
    manager = _shadowed()
    manager._hier_root_hits += 1
    with pytest.raises(ShadowDivergence, match="queries, root_hits"):
        manager.get_recur_cache(2)


def test_shadow_without_planted_bugs_after_resets_and_early_misses() -> None:
    manager = KVCacheManager(lz_config(with_shape=False), 2, shadow=True)
    assert manager.hierarchical_get(0, 1) is None  # before the storage exists
    manager.set_init_cache(0, 1, make_kv(3, 1))
    assert manager.hierarchical_get(0, 1) is not None
    manager.reset_stats()
    manager.set_recur_cache(2, make_kv(4, 2))
    assert manager.get_recur_cache(2) is not None and manager.get_init_cache(1, 1) is None
    manager.clear_init_caches()
    manager.clear_all()
    assert manager.hierarchical_get(0, 1) is None


# --------------------------------------------------------------------------- (i) install


def _fake_lightzero_module() -> types.ModuleType:
    module = types.ModuleType("fake_lzero_kv_cache_manager")

    class LightZeroManager:
        pass

    module.KVCacheManager = LightZeroManager  # type: ignore[attr-defined]
    return module


def test_install_is_one_line_and_reversible() -> None:
    from zerokv.lightzero import install, installed, is_installed, uninstall

    module = _fake_lightzero_module()
    theirs = module.KVCacheManager
    assert not is_installed(module)
    assert install(module) is theirs
    assert module.KVCacheManager is KVCacheManager and is_installed(module)
    assert install(module) is theirs  # twice: still remembers LightZero's class
    assert uninstall(module) is True
    assert module.KVCacheManager is theirs and not is_installed(module)
    assert uninstall(module) is False
    with installed(module) as original:
        assert original is theirs and module.KVCacheManager is KVCacheManager
    assert module.KVCacheManager is theirs
    install(module)
    with installed(module):  # already installed: left installed afterwards
        pass
    assert is_installed(module)
    uninstall(module)
    empty = types.ModuleType("no_manager")
    with pytest.raises(ImportError, match="no KVCacheManager"):
        install(empty)


def test_install_with_options() -> None:
    from zerokv.lightzero import install, installed, is_installed, uninstall

    module = _fake_lightzero_module()
    theirs = module.KVCacheManager
    assert install(module, shadow=True, hit_rate_window=32) is theirs
    configured = module.KVCacheManager
    assert is_installed(module) and issubclass(configured, KVCacheManager)
    built = configured(config=lz_config(), env_num=2, enable_stats=True)
    assert built.shadow is True and built.hit_rate_monitor.window == 32
    assert configured(lz_config(), 2, shadow=False).shadow is False  # explicit wins
    assert install(module) is theirs  # reinstalling replaces the options only
    assert module.KVCacheManager is KVCacheManager
    with installed(module, shadow=True):
        assert module.KVCacheManager is not KVCacheManager
    assert module.KVCacheManager is KVCacheManager  # as before the block
    assert uninstall(module) and module.KVCacheManager is theirs
    expected = r"\['device', 'dtype', 'hit_rate_window', 'shadow'\], got \['num_simulations'\]"
    with pytest.raises(ConfigError, match=expected):
        install(module, num_simulations=3)
    assert module.KVCacheManager is theirs


def test_install_without_lightzero_main_names_the_version() -> None:
    import importlib.util

    from zerokv.lightzero import LIGHTZERO_MODULE, install

    try:
        present = importlib.util.find_spec(LIGHTZERO_MODULE) is not None
    except ImportError:  # "lzero" itself is missing
        present = False
    if present:
        pytest.skip("LightZero main is installed here")
    with pytest.raises(ImportError, match="9f717c80"):
        install()


def test_stores_under_inference_mode_and_with_grad() -> None:
    """Storage allocated inside torch.inference_mode() stays usable outside it; tensors
    that require grad are stored detached."""
    manager = KVCacheManager(lz_config(with_shape=False), 1)
    with torch.inference_mode():
        manager.set_recur_cache(1, make_kv(3, 1))
        inside = manager.get_recur_cache(1)
        assert inside is not None
        assert_object(inside.clone(), expected_tensors(make_kv(3, 1)))
    given = make_kv(2, 2)
    for cache in caches_of(given):
        cache._cache.requires_grad_(True)
    manager.set_recur_cache(2, given)
    got = manager.get_recur_cache(2)
    assert got is not None
    copy = got.clone()
    assert not any(c._cache.requires_grad for c in caches_of(copy))
    assert_object(copy, (list(t.detach() for t in expected_tensors(given)[0]), 2))
