"""``ShadowManager``: every comparison it makes is shown to fire.

Each case plants one fault behind the shadow's back (a wrong result from the wrapped
manager, a corrupted slab, index, side table or spec) and requires ``ShadowDivergence``
naming that comparison. ``test_every_comparison_has_a_case`` reads the shadow's source and
fails when a comparison site has no case here, so deleting any comparison (the K/V check of
``entry_at``, say) makes a test fail.

The shadow on bad input (it raises the manager's typed error and stays in step) is held by
``tests/test_bad_inputs.py``.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

import zerokv.shadow as shadow_module
from zerokv import (
    Batch,
    CacheConfig,
    CacheManager,
    ConfigError,
    ContractViolation,
    Correction,
    Entries,
    EnvIdError,
    ShadowDivergence,
    ShadowManager,
    Tier,
)
from zerokv.index import TierLookup
from zerokv.shadow import ShadowTierLookup
from zerokv_spec.entry import Entry

L, H, D, CL = 2, 2, 3, 8


def keys(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


def entry(value: float, size: int = 3) -> Entries:
    kv = torch.zeros(L, 2, 1, H, CL, D)
    kv[:, :, :, :, CL - size :, :] = value
    return Entries(kv, keys(size), True)


def shadow_with_state(index: str = "host") -> ShadowManager:
    """Root entries (env 0 key 1, env 1 key 2) and a recurrent entry (env 0 key 3)."""
    config = CacheConfig(
        env_num=2,
        num_layers=L,
        num_heads=H,
        head_dim=D,
        context_length=CL,
        root_capacity=3,
        recurrent_capacity=4,
        index=index,
    )
    s = ShadowManager(config)
    s.store_root_many([0], keys(1), entry(1.0))
    s.store_root_many([1], keys(2), entry(2.0))
    s.store_recurrent_many([0], keys(3), entry(3.0))
    return s


def found(s: ShadowManager) -> ShadowTierLookup:
    return s.lookup_many([0, 1], keys(1, 2))


# --------------------------------------------------------------------------- plants


def _wrong_result(s: ShadowManager, name: str, change: Callable[[object], object]) -> None:
    """Make the wrapped manager's ``name`` return ``change(its true result)``."""
    real = getattr(s.impl, name)

    def wrong(*args: object, **kwargs: object) -> object:
        return change(real(*args, **kwargs))

    setattr(s.impl, name, wrong)


def _lengths_plus_one(x: object) -> object:
    assert isinstance(x, (Batch, Entries))
    return dataclasses.replace(x, lengths=x.lengths + 1)


def _kv_plus_one(x: object) -> object:
    assert isinstance(x, (Batch, Entries))
    return dataclasses.replace(x, kv=x.kv + 1.0)


def _side_row(s: ShadowManager, change: Callable[[shadow_module._Stored], object]) -> None:
    key = (Tier.ROOT, 0, 1)
    s.side[key] = change(s.side[key])  # type: ignore[assignment]


def _host_stats(s: ShadowManager, tier: str, pool: int, counter: int) -> None:
    """Bump a counter of a pool's own statistics (host index: one list per pool)."""
    index = getattr(s.impl, tier).index
    index.stats[pool][counter] += 1


def plant_refused_call(s: ShadowManager) -> None:
    def refuse(env_id: int) -> None:
        raise EnvIdError("planted")

    s.impl.clear_env = refuse  # type: ignore[method-assign]
    s.clear_env(0)


def plant_unrepresentable(s: ShadowManager) -> None:
    real = s.impl.lookup_many
    s.impl.lookup_many = lambda env_ids, *a, **k: real([0], *a, **k)  # type: ignore[method-assign]
    s.lookup_many({0}, keys(1))  # type: ignore[arg-type]  # a set: the spec cannot take it


def plant_spec_refusal(s: ShadowManager) -> None:
    s.impl.clear_env = lambda env_id: None  # type: ignore[method-assign]
    s.clear_env(9)


def plant_missing_side_row(s: ShadowManager) -> None:
    del s.side[(Tier.ROOT, 0, 1)]
    found(s)


def plant_missing_spec_entry(s: ShadowManager) -> None:
    pool = s.spec.roots[1]
    pool.peek = lambda key, fingerprint=None: None  # type: ignore[method-assign]
    s.store_root_many([1], keys(4), entry(4.0))


def plant_side_length(s: ShadowManager) -> None:
    _side_row(s, lambda r: dataclasses.replace(r, length=r.length + 1))
    found(s)


def plant_side_version(s: ShadowManager) -> None:
    _side_row(s, lambda r: dataclasses.replace(r, version=r.version + 100))
    found(s)


def plant_manager_stats(s: ShadowManager) -> None:
    s.impl.queries += 1  # one phantom lookup
    found(s)


def plant_root_pool_stats(s: ShadowManager) -> None:
    _host_stats(s, "root", 1, 4)  # a phantom insert in env 1's pool
    found(s)


def plant_recurrent_pool_stats(s: ShadowManager) -> None:
    _host_stats(s, "recurrent", 0, 4)
    found(s)


def plant_pool_state_keys(s: ShadowManager) -> None:
    s.impl.root.index.evict(0, 1)  # the index forgets a key behind the shadow's back
    s.store_root_many([1], keys(4), entry(4.0))


def plant_pool_state_fingerprints(s: ShadowManager) -> None:
    s.impl.root.index.slot_fingerprints[0][0] = 77  # type: ignore[attr-defined]
    s.store_root_many([1], keys(4), entry(4.0))


def plant_search_budget(s: ShadowManager) -> None:
    s.impl.search_used += 1
    s.clear_all()


def plant_lookup_row(s: ShadowManager) -> None:
    s.impl.root.evict(1, pool_id=0)
    found(s)


def _global_slot_plus_one(x: object) -> object:
    assert isinstance(x, TierLookup)
    return dataclasses.replace(x, global_slot=x.global_slot + 1)


def plant_global_slot(s: ShadowManager) -> None:
    _wrong_result(s, "lookup_many", _global_slot_plus_one)
    found(s)


def plant_gather_lengths(s: ShadowManager) -> None:
    f = found(s)
    _wrong_result(s, "gather", _lengths_plus_one)
    s.gather(f)


def plant_spec_batch_lengths(s: ShadowManager) -> None:
    f = found(s)
    longer = Entry(((9.0,) * 4,) * L, ((9.0,) * 4,) * L)
    rows = tuple(dataclasses.replace(r, entry=longer) for r in f.spec_rows)
    s.gather(dataclasses.replace(f, spec_rows=rows))


def plant_gather_kv(s: ShadowManager) -> None:
    f = found(s)
    s.impl.slab.kv[0, 0, 0, 0, CL - 1, 0] += 1.0
    s.gather(f)


def plant_fused_lengths(s: ShadowManager) -> None:
    f = found(s)
    _wrong_result(s, "gather_reserve", _lengths_plus_one)
    s.gather_reserve(f, 2)


def plant_fused_kv(s: ShadowManager) -> None:
    f = found(s)
    _wrong_result(s, "gather_append", _kv_plus_one)
    s.gather_append(f, torch.zeros(L, 2, 2, H, 2, D))


def plant_read_lengths(s: ShadowManager) -> None:
    f = found(s)
    _wrong_result(s, "read", _lengths_plus_one)
    s.read(f)


def plant_read_kv(s: ShadowManager) -> None:
    f = found(s)
    s.impl.slab.kv[1, 1, 0, 1, CL - 1, 2] -= 1.0
    s.read(f)


def _as_float64(x: object) -> object:
    assert isinstance(x, Entries)
    return dataclasses.replace(x, kv=x.kv.double())


def plant_read_dtype(s: ShadowManager) -> None:
    f = found(s)
    _wrong_result(s, "read", _as_float64)
    s.read(f)


def plant_put_row(s: ShadowManager) -> None:
    s.impl.store_recurrent_many([0], keys(9), entry(0.0))  # moves the ring behind its back
    s.store_recurrent_many([0], keys(5), entry(5.0))


def _corrupt_writes(s: ShadowManager, change: Callable[[object], object]) -> None:
    """Make the slab write ``change(entries)`` instead of what it is given."""
    write = s.impl.slab.write

    def corrupt(slots: torch.Tensor, entries: Entries) -> None:
        changed = change(entries)
        assert isinstance(changed, Entries)
        write(slots, changed)

    s.impl.slab.write = corrupt  # type: ignore[method-assign]


def plant_stored_length(s: ShadowManager) -> None:
    _corrupt_writes(s, _lengths_plus_one)
    s.store_root_many([1], keys(4), entry(4.0))


def plant_stored_kv(s: ShadowManager) -> None:
    _corrupt_writes(s, _kv_plus_one)
    s.store_root_many([1], keys(4), entry(4.0))


def plant_stats_method(s: ShadowManager) -> None:
    s.impl.queries += 1
    s.stats()


def plant_root_stats_method(s: ShadowManager) -> None:
    _host_stats(s, "root", 0, 4)
    s.root_stats(0)


def plant_recurrent_stats_method(s: ShadowManager) -> None:
    _host_stats(s, "recurrent", 0, 4)
    s.recurrent_stats()


def plant_root_slot_keys_method(s: ShadowManager) -> None:
    s.impl.root.index.evict(0, 1)
    s.root_slot_keys(0)


def plant_recurrent_slot_keys_method(s: ShadowManager) -> None:
    s.impl.recurrent.index.evict(0, 3)
    s.recurrent_slot_keys()


def plant_root_sizes_method(s: ShadowManager) -> None:
    s.impl.root.index.evict(1, 2)
    s.root_sizes()


def plant_recurrent_size_method(s: ShadowManager) -> None:
    s.impl.recurrent.index.evict(0, 3)
    s.recurrent_size()


def plant_entry_at_length(s: ShadowManager) -> None:
    _wrong_result(s, "entry_at", _lengths_plus_one)
    s.entry_at(Tier.ROOT, 0, 0)


def plant_entry_at_kv(s: ShadowManager) -> None:
    s.impl.slab.kv[0, 1, 0, 0, CL - 1, 0] += 1.0  # env 0's root slot 0
    s.entry_at(Tier.ROOT, 0, 0)


@dataclass(frozen=True)
class Plant:
    name: str
    plant: Callable[[ShadowManager], None]
    what: str  # a regex the divergence's ``what`` must match


PLANTS = (
    Plant("an error the spec does not raise", plant_refused_call, r"outcome of a refused call"),
    Plant("arguments the spec cannot take", plant_unrepresentable, r"representable arguments"),
    Plant("a call the spec refuses", plant_spec_refusal, r"spec refusal"),
    Plant("a side-table row lost", plant_missing_side_row, r"side table has no row"),
    Plant("a spec entry lost", plant_missing_spec_entry, r"spec entry of"),
    Plant("a side-table length", plant_side_length, r"length of the entry of"),
    Plant("a side-table version", plant_side_version, r"version of"),
    Plant("a phantom lookup", plant_manager_stats, r"^manager statistics$"),
    Plant("a root pool counter", plant_root_pool_stats, r"^root pool 1 statistics$"),
    Plant("a recurrent pool counter", plant_recurrent_pool_stats, r"^recurrent pool statistics$"),
    Plant("a key forgotten", plant_pool_state_keys, r"root pool 0 state, field slot_keys"),
    Plant("a fingerprint changed", plant_pool_state_fingerprints, r"state, field fingerprints"),
    Plant("the search count", plant_search_budget, r"search \(budget, used\)"),
    Plant("a lookup row", plant_lookup_row, r"row 0 \(tier, slot, collided\)"),
    Plant("a global slot", plant_global_slot, r"row 0 global slot"),
    Plant("gather lengths", plant_gather_lengths, r"^batch lengths$"),
    Plant("the spec's batch lengths", plant_spec_batch_lengths, r"spec batch lengths"),
    Plant("gather K/V", plant_gather_kv, r"^batch K/V: 1 elements differ"),
    Plant("fused lengths", plant_fused_lengths, r"fused batch lengths"),
    Plant("fused K/V", plant_fused_kv, r"fused batch K/V: .* elements differ"),
    Plant("read lengths", plant_read_lengths, r"^entry lengths$"),
    Plant("read K/V", plant_read_kv, r"^entries K/V: 1 elements differ"),
    Plant("read dtype", plant_read_dtype, r"entries K/V \(shape, dtype\)"),
    Plant("a put row", plant_put_row, r"row 0 \(slot, evicted, inserted\)"),
    Plant("a stored length", plant_stored_length, r"stored length of"),
    Plant("stored K/V", plant_stored_kv, r"stored K/V of"),
    Plant("stats()", plant_stats_method, r"stats\(\): manager statistics"),
    Plant("root_stats()", plant_root_stats_method, r"root_stats\(\): statistics of env 0"),
    Plant("recurrent_stats()", plant_recurrent_stats_method, r"recurrent_stats\(\): statistics"),
    Plant("root_slot_keys()", plant_root_slot_keys_method, r"root_slot_keys\(\): slot keys"),
    Plant("recurrent_slot_keys()", plant_recurrent_slot_keys_method, r"recurrent_slot_keys\(\)"),
    Plant("root_sizes()", plant_root_sizes_method, r"root_sizes\(\): sizes"),
    Plant("recurrent_size()", plant_recurrent_size_method, r"recurrent_size\(\): size"),
    Plant("entry_at length", plant_entry_at_length, r"length in slot 0"),
    Plant("entry_at K/V", plant_entry_at_kv, r"K/V in slot 0: 1 elements differ"),
)


@pytest.mark.parametrize("plant", PLANTS, ids=lambda p: p.name)
def test_each_comparison_fires(plant: Plant) -> None:
    s = shadow_with_state()
    with pytest.raises(ShadowDivergence) as caught:
        plant.plant(s)
    assert re.search(plant.what, caught.value.what), (
        f"{plant.name}: the divergence was {caught.value.what!r}, expected {plant.what!r}"
    )
    assert isinstance(caught.value, ContractViolation)


def _comparison_patterns() -> list[str]:
    """The ``what`` of every comparison site in ``zerokv.shadow`` as a regex (an f-string's
    fields become ``.*``), plus the two sites inside ``_same_tensor``."""
    tree = ast.parse(inspect.getsource(shadow_module))
    helpers = {"_same", "_same_tensor", "_diverge"}
    patterns: list[str] = []
    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef) or func.name in helpers:
            continue
        for node in ast.walk(func):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in helpers
                and len(node.args) >= 2
            ):
                continue
            what = node.args[1]
            if isinstance(what, ast.Constant) and isinstance(what.value, str):
                patterns.append("^" + re.escape(what.value))
            elif isinstance(what, ast.JoinedStr):
                parts = [
                    re.escape(str(v.value)) if isinstance(v, ast.Constant) else ".*"
                    for v in what.values
                ]
                patterns.append("^" + "".join(parts))
    patterns += [r"\(shape, dtype\)$", r"elements differ, first at"]
    return patterns


def _observed_whats(plants: tuple[Plant, ...]) -> list[str]:
    whats = []
    for plant in plants:
        s = shadow_with_state()
        try:
            plant.plant(s)
        except ShadowDivergence as err:
            whats.append(err.what)
    return whats


def _uncovered(plants: tuple[Plant, ...]) -> list[str]:
    """Comparison sites of the shadow that no plant makes fire."""
    examples = _observed_whats(plants)
    return [p for p in _comparison_patterns() if not any(re.search(p, w) for w in examples)]


def test_every_comparison_has_a_case() -> None:
    """Adding a comparison to the shadow without a case here fails this test (and every
    case's own test fails when its comparison is deleted)."""
    assert len(_comparison_patterns()) >= 30
    assert _uncovered(PLANTS) == []


def test_an_uncovered_comparison_is_reported() -> None:
    """The meta test bites: without the entry_at K/V case, that comparison is uncovered."""
    without = tuple(p for p in PLANTS if p.name != "entry_at K/V")
    assert _uncovered(without) == ["^K/V\\ in\\ slot\\ .*"]


# --------------------------------------------------------------------------- clean runs


@pytest.mark.parametrize("index", ["host", "device"])
def test_a_clean_batch_run_compares_clean(index: str) -> None:
    """The batched paths (store with the window rule, gathers, read, entry_at) agree."""
    config = CacheConfig.legacy(3, L, H, D, CL, num_simulations=2, max_cache_size=2, index=index)
    shadow = ShadowManager(config)
    gen = torch.Generator().manual_seed(0)
    correction = Correction(torch.randn(L, 2, H, CL - 3, D, generator=gen))
    envs = [0, 1, 2, 1]
    for step in range(6):
        lengths = torch.tensor([CL, CL - 1, 3, step % CL])
        batch = Batch(torch.randn(L, 2, 4, H, CL, D, generator=gen), lengths)
        keys_ = torch.tensor([step, step + 1, step, step + 2])  # duplicates within a batch
        shadow.store_root_batch(envs, keys_, batch, correction)
        shadow.store_recurrent_batch(envs, keys_ + 100, batch, correction)
        f = shadow.lookup_many(envs, keys_)
        shadow.gather(f)
        shadow.gather(f, CL + 2)
        shadow.gather_reserve(f, 2)
        shadow.read(shadow.lookup_many(envs, keys_ + 100))
        shadow.lookup_many([0, 1], torch.tensor([step, 1000]), tiers="recurrent")
    assert shadow.entry_at(Tier.ROOT, 1, 0).rows == 1
    assert shadow.entry_at(Tier.RECURRENT, 0, 3).rows == 1
    assert shadow.root_sizes() == [2, 2, 2] and shadow.recurrent_size() == 6
    shadow.begin_search(4)
    shadow.end_search()
    shadow.clear_env(1)
    shadow.check()
    stats = shadow.stats()
    assert stats.queries == 6 * (4 + 4 + 2) and stats.hits + stats.misses == stats.queries


def test_shadow_wraps_only_fresh_managers() -> None:
    config = CacheConfig.legacy(1, L, H, D, CL, num_simulations=2, max_cache_size=2)
    used = CacheManager(config)
    used.store_root_many([0], keys(1), entry(0.0))
    with pytest.raises(ConfigError):
        ShadowManager(used)
    used.clear_all()  # empty again: adopted, statistics included
    shadow = ShadowManager(used)
    assert shadow.root_stats(0).inserts == 1
