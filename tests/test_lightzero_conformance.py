"""Conformance of ``zerokv.lightzero.KVCacheManager`` to the surface LightZero's code uses.

Written from reading LightZero main at commit 9f717c80 (``lzero/model/unizero_world_models/
kv_cache_manager.py``, ``world_model.py``, ``lzero/policy/unizero.py``); LightZero is not
needed (its code is not imported, nothing of it is copied). Each entry of ``CHECKS`` is
one thing LightZero's code relies on - a name, a keyword, a default, a return type - and
says where LightZero uses it. ``test_conformance`` runs every check on zerokv's class;
``test_conformance_checks_bite`` runs every check on a mutant of zerokv's class that
breaks exactly that thing, and requires the check to fail. When LightZero main is
importable, ``test_signatures_match_lightzero`` also compares the signatures with
LightZero's own class.
"""

from __future__ import annotations

import importlib
import inspect
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from zerokv.errors import EnvIdError
from zerokv.lightzero import LIGHTZERO_MODULE, KVCacheManager, LayoutKeysValues

L, H, D, CL = 2, 2, 4, 8
REQUIRED = inspect.Parameter.empty

#: The constructor as world_model.py:233-238 calls it (keywords) and its defaults.
CONSTRUCTOR = (
    ("config", REQUIRED),
    ("env_num", REQUIRED),
    ("enable_stats", True),
    ("clear_recur_log_freq", 1000),
    ("clear_all_log_freq", 100),
)

#: Methods: parameter names in order (world_model.py calls them by keyword:
#: env_id=, cache_key=, kv_cache=; reanalysis calls get_init_cache / get_recur_cache
#: positionally, world_model.py:2335-2338).
METHODS: dict[str, tuple[str, ...]] = {
    "get_init_cache": ("env_id", "cache_key"),
    "set_init_cache": ("env_id", "cache_key", "kv_cache"),
    "get_recur_cache": ("cache_key",),
    "set_recur_cache": ("cache_key", "kv_cache"),
    "get_wm_cache": ("cache_key",),
    "set_wm_cache": ("cache_key", "kv_cache"),
    "hierarchical_get": ("env_id", "cache_key"),
    "clear_all": (),
    "clear_init_caches": (),
    "clear_recur_cache": (),
    "get_stats_summary": (),
    "reset_stats": (),
}

#: The stats string of LightZero's CacheStats.__repr__ (the values of get_stats_summary).
STATS_REPR = re.compile(r"CacheStats\(hits=\d+, misses=\d+, evictions=\d+, hit_rate=\d+\.\d\d%\)")


def config(**extra: object) -> types.SimpleNamespace:
    """A world-model config as LightZero's (no num_simulations: zoo configs put it on the
    policy, so the manager's default applies)."""
    values: dict[str, object] = {
        "num_layers": L,
        "num_heads": H,
        "embed_dim": H * D,
        "context_length": CL,
        "device": "cpu",
        "env_num": 3,
    }
    values.update(extra)
    return types.SimpleNamespace(**values)


def kv(size: int, fill: float = 1.0) -> LayoutKeysValues:
    obj = LayoutKeysValues.empty(L, H, CL, D)
    for layer in obj._keys_values:
        for side in (layer._k_cache, layer._v_cache):
            side._cache.fill_(fill)
            side._size = size
    return obj


def build(cls: type[KVCacheManager]) -> Any:
    """As world_model.py:233-238 builds it."""
    return cls(
        config=config(),
        env_num=3,
        enable_stats=True,
        clear_recur_log_freq=1000,
        clear_all_log_freq=100,
    )


# --------------------------------------------------------------------------- checks


def check_constructor(cls: type[KVCacheManager]) -> None:
    """kv_cache_manager.py:322-329; world_model.py:233-238 (keywords)."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    got = [(p.name, p.default) for p in params[: len(CONSTRUCTOR)]]
    assert got == list(CONSTRUCTOR), got
    for p in params[len(CONSTRUCTOR) :]:
        assert p.default is not REQUIRED, f"extra parameter {p.name} must be optional"
    m = build(cls)
    assert m.config is not None and m.env_num == 3 and m.enable_stats is True
    assert (m.clear_recur_log_freq, m.clear_all_log_freq) == (1000, 100)
    assert isinstance(m._clear_recur_counter, int) and isinstance(m._clear_all_counter, int)


def check_default_pool_sizes(cls: type[KVCacheManager]) -> None:
    """kv_cache_manager.py:346-382: num_simulations defaults to 50, max_cache_size to 5000;
    init pools min(max_cache_size, max(256, 2N)), recurrent N * env_num, world-model env_num."""
    m = cls(config(), 3)
    assert [p.pool_size for p in m.init_pools] == [256, 256, 256]
    assert (m.recur_pool.pool_size, m.wm_pool.pool_size) == (150, 3)
    m = cls(config(num_simulations=200, max_cache_size=300), 2)
    assert [p.pool_size for p in m.init_pools] == [300, 300]
    assert m.recur_pool.pool_size == 400


def check_method_signatures(cls: type[KVCacheManager]) -> None:
    """Every method LightZero's code calls, with LightZero's parameter names."""
    for name, params in METHODS.items():
        method = getattr(cls, name, None)
        assert callable(method), f"missing method {name}"
        got = tuple(inspect.signature(method).parameters)[1:]
        assert got[: len(params)] == params, f"{name}{got}"


def check_keyword_calls(cls: type[KVCacheManager]) -> None:
    """world_model.py:1644, 2222, 2229, 2353: calls by keyword; set_* return the slot."""
    m = build(cls)
    slot = m.set_init_cache(env_id=1, cache_key=11, kv_cache=kv(3))
    assert isinstance(slot, int) and slot == 0
    assert m.set_recur_cache(cache_key=12, kv_cache=kv(5)) == 0
    assert m.set_wm_cache(cache_key=13, kv_cache=kv(1)) == 0
    assert m.get_init_cache(env_id=1, cache_key=11) is not None
    assert m.hierarchical_get(env_id=2, cache_key=12) is not None
    assert m.get_wm_cache(cache_key=13) is not None


def check_positional_calls(cls: type[KVCacheManager]) -> None:
    """world_model.py:2335, 2338 (reanalysis): get_init_cache(env, key), get_recur_cache(key)."""
    m = build(cls)
    m.set_init_cache(0, 2**64 - 1, kv(3))  # LightZero's keys: unsigned 64-bit digests
    m.set_recur_cache(2**63, kv(5))
    assert m.get_init_cache(0, 2**64 - 1) is not None
    assert m.get_recur_cache(2**63) is not None
    assert m.get_init_cache(1, 2**64 - 1) is None  # per-environment root pools
    assert m.hierarchical_get(2, 2**63) is not None  # recurrent pool shared by all envs


def check_lookup_results(cls: type[KVCacheManager]) -> None:
    """world_model.py:1662-1668, 2390-2397: a hit has .size (int) and .clone() (a
    KeysValues whose _keys_values[l]._k_cache/_v_cache hold _cache and _size); a miss is
    None (retrieve_or_generate_kvcache tests `is not None`)."""
    m = build(cls)
    m.set_recur_cache(5, kv(3, fill=2.0))
    got = m.hierarchical_get(env_id=0, cache_key=5)
    assert got is not None and got.size == 3 and isinstance(got.size, int)
    copy = got.clone()
    assert len(copy._keys_values) == L and copy.size == 3
    for layer in copy._keys_values:
        for side in (layer._k_cache, layer._v_cache):
            assert side._size == 3 and tuple(side._cache.shape) == (1, H, CL, D)
            assert bool(side._cache[:, :, :3].eq(2.0).all())
    assert m.hierarchical_get(env_id=0, cache_key=6) is None
    assert m.get_init_cache(0, 6) is None and m.get_recur_cache(6) is None


def check_bad_env_id_is_value_error(cls: type[KVCacheManager]) -> None:
    """kv_cache_manager.py:386-396: an env_id outside [0, env_num) raises ValueError."""
    m = build(cls)
    calls: list[Callable[[], object]] = [
        lambda: m.get_init_cache(3, 1),
        lambda: m.set_init_cache(-1, 1, kv(1)),
        lambda: m.hierarchical_get(7, 1),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()
    assert issubclass(EnvIdError, ValueError)


def check_staging_lists(cls: type[KVCacheManager]) -> None:
    """world_model.py:241-242 aliases keys_values_wm_list / keys_values_wm_size_list;
    clear_all empties them (kv_cache_manager.py:455-456)."""
    m = build(cls)
    assert m.keys_values_wm_list == [] and isinstance(m.keys_values_wm_list, list)
    assert m.keys_values_wm_size_list == [] and isinstance(m.keys_values_wm_size_list, list)
    staged, sizes = m.keys_values_wm_list, m.keys_values_wm_size_list
    staged.append(kv(1))
    sizes.append(1)
    m.clear_all()
    assert staged == [] and sizes == [] and m.keys_values_wm_list is staged


def check_pools(cls: type[KVCacheManager]) -> None:
    """unizero.py:2296, 2387: init_pools[eid].clear() at an episode end (a list indexed by
    env id); recur_pool and wm_pool are pools too; len() counts entries (__repr__)."""
    m = build(cls)
    assert isinstance(m.init_pools, list) and len(m.init_pools) == 3
    m.set_init_cache(0, 1, kv(1))
    m.set_init_cache(1, 2, kv(1))
    m.set_recur_cache(3, kv(1))
    m.set_wm_cache(4, kv(1))
    assert [len(p) for p in m.init_pools] == [1, 1, 0]
    assert (len(m.recur_pool), len(m.wm_pool)) == (1, 1)
    m.init_pools[1].clear()
    assert [len(p) for p in m.init_pools] == [1, 0, 0]
    assert m.get_init_cache(1, 2) is None and m.get_init_cache(0, 1) is not None
    m.recur_pool.clear()
    m.wm_pool.clear()
    assert (len(m.recur_pool), len(m.wm_pool)) == (0, 0)
    for pool in (*m.init_pools, m.recur_pool, m.wm_pool):
        assert isinstance(pool.pool_size, int) and isinstance(pool.name, str)


def check_key_views(cls: type[KVCacheManager]) -> None:
    """world_model.py:2283-2294 (rebuild_kv_window_from_tokens):
    `contexts.keys() - pool._key_to_index.keys()` for init_pools[e] and recur_pool; the keys
    are LightZero's (unsigned) and the view is live. zerokv's public name: key_to_slot."""
    m = build(cls)
    m.set_init_cache(2, 2**64 - 3, kv(1))
    m.set_recur_cache(9, kv(1))
    for pool, key in ((m.init_pools[2], 2**64 - 3), (m.recur_pool, 9)):
        view = pool._key_to_index
        assert isinstance(view, Mapping)
        contexts = {key: "context", 77: "stale"}
        assert contexts.keys() - view.keys() == {77}
        assert dict(view) == {key: 0}


def check_key_view_public_name(cls: type[KVCacheManager]) -> None:
    """zerokv's public name for the key view, ``key_to_slot``: read-only and live."""
    m = build(cls)
    m.set_init_cache(2, 5, kv(1))
    view = m.init_pools[2].key_to_slot
    assert dict(view) == {5: 0}
    with pytest.raises(TypeError):
        view[6] = 1  # type: ignore[index,unused-ignore]
    m.init_pools[2].clear()
    assert len(view) == 0


def check_counters(cls: type[KVCacheManager]) -> None:
    """LightZero's counters: _clear_recur_counter / _clear_all_counter
    (kv_cache_manager.py:458, 479)."""
    m = build(cls)
    m.clear_recur_cache()
    m.clear_recur_cache()
    m.clear_all()
    assert m._clear_recur_counter == 2 and m._clear_all_counter == 1


def check_recur_clear_count(cls: type[KVCacheManager]) -> None:
    """recur_clear_count: what LightZero's test of the policy reads on its stand-in manager
    (lzero/policy/tests/test_unizero_eval_cache_isolation.py); LightZero's own class has
    only the private counter."""
    m = build(cls)
    m.clear_recur_cache()
    assert m.recur_clear_count == 1


def check_stats_summary(cls: type[KVCacheManager]) -> None:
    """kv_cache_manager.py:481-496; world_model.py:3231-3233 reads .get('stats_enabled')."""
    m = build(cls)
    m.set_init_cache(0, 1, kv(1))
    m.get_init_cache(0, 1)
    m.get_init_cache(0, 2)
    summary = m.get_stats_summary()
    assert summary["stats_enabled"] is True
    assert list(summary["init_pools"]) == ["env_0", "env_1", "env_2"]
    for text in (*summary["init_pools"].values(), summary["recur_pool"], summary["wm_pool"]):
        assert isinstance(text, str) and STATS_REPR.fullmatch(text), text
    assert summary["init_pools"]["env_0"] == (
        "CacheStats(hits=1, misses=1, evictions=0, hit_rate=50.00%)"
    )
    quiet = cls(config(), 3, enable_stats=False)
    assert quiet.get_stats_summary().get("stats_enabled") is False


def check_pool_stats(cls: type[KVCacheManager]) -> None:
    """KVCachePool.stats (kv_cache_manager.py:33-61): hits, misses, evictions,
    total_queries, hit_rate, miss_rate, reset(); reset_stats() resets them all; None when
    statistics are off."""
    m = cls(config(num_simulations=1, max_cache_size=1), 1)
    m.set_init_cache(0, 1, kv(1))
    m.set_init_cache(0, 2, kv(1))  # a ring of one slot: evicts key 1
    m.get_init_cache(0, 2)
    m.get_init_cache(0, 1)
    stats = m.init_pools[0].stats
    assert stats is not None
    assert (stats.hits, stats.misses, stats.evictions, stats.total_queries) == (1, 1, 1, 2)
    assert stats.hit_rate == 0.5 and stats.miss_rate == 0.5
    m.reset_stats()
    assert (stats.hits, stats.total_queries) == (0, 0)
    assert cls(config(), 1, enable_stats=False).init_pools[0].stats is None


def check_clear_semantics(cls: type[KVCacheManager]) -> None:
    """clear_all empties every pool; clear_init_caches only the root pools;
    clear_recur_cache only the recurrent pool (kv_cache_manager.py:449-479)."""
    m = build(cls)
    for env in range(3):
        m.set_init_cache(env, env, kv(1))
    m.set_recur_cache(10, kv(1))
    m.clear_init_caches()
    assert [len(p) for p in m.init_pools] == [0, 0, 0] and len(m.recur_pool) == 1
    m.set_init_cache(0, 0, kv(1))
    m.clear_recur_cache()
    assert len(m.recur_pool) == 0 and len(m.init_pools[0]) == 1
    m.set_wm_cache(1, kv(1))
    m.clear_all()
    assert len(m.init_pools[0]) == 0 and len(m.wm_pool) == 0


def check_fifo_rings(cls: type[KVCacheManager]) -> None:
    """KVCachePool.set (kv_cache_manager.py:146-185): a stored key is overwritten in its slot
    (pointer unmoved); a new key takes the pointer's slot and evicts its key; clear()
    resets the pointer."""
    m = cls(config(num_simulations=1, max_cache_size=2), 1)
    assert [m.set_init_cache(0, k, kv(1)) for k in (1, 2)] == [0, 1]
    assert m.set_init_cache(0, 1, kv(2)) == 0  # in place
    assert m.set_init_cache(0, 3, kv(1)) == 0  # evicts key 1
    assert m.get_init_cache(0, 1) is None and m.get_init_cache(0, 2) is not None
    m.init_pools[0].clear()
    assert m.set_init_cache(0, 4, kv(1)) == 0


def check_private_copies(cls: type[KVCacheManager]) -> None:
    """world_model.py:2211-2230 stores keys_values_wm_single_env, then reuses the object; the
    pool must keep its own copy (kv_cache_manager.py:187-205)."""
    m = build(cls)
    given = kv(3, fill=1.0)
    m.set_recur_cache(1, given)
    given._keys_values[0]._k_cache._cache.fill_(9.0)
    given._keys_values[0]._k_cache._size = 5
    got = m.get_recur_cache(1)
    assert got is not None and got.size == 3
    assert bool(got.clone()._keys_values[0]._k_cache._cache.eq(1.0).all())


@dataclass(frozen=True)
class Check:
    name: str
    check: Callable[[type[KVCacheManager]], None]
    mutant: type[KVCacheManager]
    #: Whether LightZero's own class passes it too (False: a zerokv addition).
    lightzero: bool = True


# --------------------------------------------------------------------------- mutants
# Each mutant breaks exactly one thing a check guards.


class _DefaultFreq(KVCacheManager):
    def __init__(
        self,
        config: object,
        env_num: int,
        enable_stats: bool = True,
        clear_recur_log_freq: int = 100,
        clear_all_log_freq: int = 100,
        **kw: Any,
    ) -> None:
        super().__init__(config, env_num, enable_stats, clear_recur_log_freq, clear_all_log_freq)


class _RequiresSimulations(KVCacheManager):
    def __init__(self, config: object, env_num: int, *args: Any, **kw: Any) -> None:
        if getattr(config, "num_simulations", None) is None:
            config = types.SimpleNamespace(**{**vars(config), "num_simulations": 25})
        super().__init__(config, env_num, *args, **kw)


class _RenamedKey(KVCacheManager):
    def get_recur_cache(self, key: int) -> Any:
        return super().get_recur_cache(key)


class _PositionalOnly(KVCacheManager):
    def set_init_cache(self, env_id: int, cache_key: int, kv_cache: Any, /) -> int:
        return super().set_init_cache(env_id, cache_key, kv_cache)


class _SignedOnly(KVCacheManager):
    def get_recur_cache(self, cache_key: int) -> Any:
        if cache_key >= 2**63:
            return None  # a manager that only understands signed keys
        return super().get_recur_cache(cache_key)


class _ReturnsStored(KVCacheManager):
    def hierarchical_get(self, env_id: int, cache_key: int) -> Any:
        got = super().hierarchical_get(env_id, cache_key)
        return None if got is None else types.SimpleNamespace(size=got.size)


class _TypeErrorEnv(KVCacheManager):
    def hierarchical_get(self, env_id: int, cache_key: int) -> Any:
        if not 0 <= env_id < self.env_num:
            raise TypeError("bad env")
        return super().hierarchical_get(env_id, cache_key)


class _NoStagingClear(KVCacheManager):
    def clear_all(self) -> None:
        saved = list(self.keys_values_wm_list)
        super().clear_all()
        self.keys_values_wm_list.extend(saved)


class _TuplePools(KVCacheManager):
    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.init_pools = tuple(self.init_pools)  # type: ignore[assignment]


class _SignedPool:
    """A pool whose key view shows zerokv's signed keys instead of LightZero's."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    def __len__(self) -> int:
        return len(self._pool)

    @property
    def _key_to_index(self) -> Mapping[int, int]:
        return {k - 2**64 if k >= 2**63 else k: s for k, s in self._pool.key_to_slot.items()}


class _SignedViews(KVCacheManager):
    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.init_pools = [_SignedPool(p) for p in self.init_pools]  # type: ignore[misc]


class _NoRecurCount(KVCacheManager):
    def clear_recur_cache(self) -> None:
        super().clear_recur_cache()
        self._clear_recur_counter -= 1


class _ClearAllUncounted(KVCacheManager):
    def clear_all(self) -> None:
        super().clear_all()
        self._clear_all_counter = 0


class _WritableView(KVCacheManager):
    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        for pool in self.init_pools:
            pool._view = pool._ring.index  # type: ignore[assignment]


class _DictSummary(KVCacheManager):
    def get_stats_summary(self) -> dict[str, Any]:
        summary = super().get_stats_summary()
        if "init_pools" in summary:
            summary["init_pools"] = {f"env{k[4:]}": v for k, v in summary["init_pools"].items()}
        return summary


class _NoStatsReset(KVCacheManager):
    def reset_stats(self) -> None:
        pass


class _ClearAllKeepsRoots(KVCacheManager):
    def clear_init_caches(self) -> None:
        pass


class _LastInFirstOut(KVCacheManager):
    def set_init_cache(self, env_id: int, cache_key: int, kv_cache: Any) -> int:
        ring = self._roots[env_id]
        if cache_key not in ring.index and ring.keys[ring.next] is not None:
            ring.next = (ring.next - 1) % ring.capacity  # evicts the newest key instead
        return super().set_init_cache(env_id, cache_key, kv_cache)


class _Aliasing(KVCacheManager):
    def set_recur_cache(self, cache_key: int, kv_cache: Any) -> int:
        slot = super().set_recur_cache(cache_key, kv_cache)
        self._aliased = kv_cache
        return slot

    def get_recur_cache(self, cache_key: int) -> Any:
        got = super().get_recur_cache(cache_key)
        if got is None:
            return None
        aliased = self._aliased
        return types.SimpleNamespace(size=aliased.size, clone=lambda: aliased)


CHECKS = [
    Check("constructor", check_constructor, _DefaultFreq),
    Check("default_pool_sizes", check_default_pool_sizes, _RequiresSimulations),
    Check("method_signatures", check_method_signatures, _RenamedKey),
    Check("keyword_calls", check_keyword_calls, _PositionalOnly),
    Check("positional_calls", check_positional_calls, _SignedOnly),
    Check("lookup_results", check_lookup_results, _ReturnsStored),
    Check("bad_env_id_is_value_error", check_bad_env_id_is_value_error, _TypeErrorEnv),
    Check("staging_lists", check_staging_lists, _NoStagingClear),
    Check("pools", check_pools, _TuplePools),
    Check("key_views", check_key_views, _SignedViews),
    Check("key_view_public_name", check_key_view_public_name, _WritableView, lightzero=False),
    Check("counters", check_counters, _ClearAllUncounted),
    Check("recur_clear_count", check_recur_clear_count, _NoRecurCount, lightzero=False),
    Check("stats_summary", check_stats_summary, _DictSummary),
    Check("pool_stats", check_pool_stats, _NoStatsReset),
    Check("clear_semantics", check_clear_semantics, _ClearAllKeepsRoots),
    Check("fifo_rings", check_fifo_rings, _LastInFirstOut),
    Check("private_copies", check_private_copies, _Aliasing),
]


@pytest.mark.parametrize("entry", CHECKS, ids=[c.name for c in CHECKS])
def test_conformance(entry: Check) -> None:
    entry.check(KVCacheManager)


@pytest.mark.parametrize("entry", CHECKS, ids=[c.name for c in CHECKS])
def test_conformance_checks_bite(entry: Check) -> None:
    with pytest.raises((AssertionError, TypeError, AttributeError, pytest.fail.Exception)):
        entry.check(entry.mutant)


def _lightzero_manager() -> type | None:
    try:
        kv_cache_manager = importlib.import_module(LIGHTZERO_MODULE)
    except Exception:  # LightZero main (or its dependencies) not installed
        return None
    cls = getattr(kv_cache_manager, "KVCacheManager", None)
    return cls if isinstance(cls, type) else None


_NO_LIGHTZERO = pytest.mark.skipif(
    _lightzero_manager() is None,
    reason="LightZero main is not importable (lzero.model.unizero_world_models.kv_cache_manager)",
)


@_NO_LIGHTZERO
@pytest.mark.parametrize(
    "entry", [c for c in CHECKS if c.lightzero], ids=[c.name for c in CHECKS if c.lightzero]
)
def test_checks_hold_for_lightzero_main(entry: Check) -> None:
    """The checks encode LightZero's own behaviour: its class passes them too."""
    theirs = _lightzero_manager()
    assert theirs is not None
    entry.check(theirs)


@_NO_LIGHTZERO
def test_signatures_match_lightzero() -> None:
    """With LightZero main installed: the same parameters and defaults as its class."""
    theirs = _lightzero_manager()
    assert theirs is not None
    for name in ("__init__", *METHODS):
        want = list(inspect.signature(getattr(theirs, name)).parameters.values())
        got = list(inspect.signature(getattr(KVCacheManager, name)).parameters.values())
        assert [(p.name, p.default) for p in got[: len(want)]] == [
            (p.name, p.default) for p in want
        ], name
    probe = theirs(config(), 3)
    ours = build(KVCacheManager)
    for attr in vars(probe):
        if not attr.startswith("_") or attr in ("_clear_recur_counter", "_clear_all_counter"):
            assert hasattr(ours, attr), attr
    assert torch.__version__  # the comparison ran with torch imported
