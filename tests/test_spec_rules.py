"""Property tests of the reference model's rules: batch folds, batch/entry rules, keys, errors."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zerokv_spec.entry import (
    Correction,
    Entry,
    append,
    assemble,
    overflow_drop,
    remove_registers,
    split,
    window,
)
from zerokv_spec.errors import (
    BatchError,
    ConfigError,
    EntryError,
    EnvIdError,
    KeyNotFoundError,
    KeyRangeError,
    SlotRangeError,
    UnsupportedOperationError,
    ZeroKVError,
)
from zerokv_spec.keys import Latent, zkv64_key
from zerokv_spec.manager import CacheManager, ManagerConfig, Scope
from zerokv_spec.pool import Policy, PriorityPool, SlotPool, make_pool
from zerokv_spec.validate import positive_int

POLICIES = st.sampled_from(Policy)
KEYS = st.integers(min_value=0, max_value=7)
FPS = st.one_of(st.none(), st.integers(min_value=0, max_value=2))
SMALL = st.integers(min_value=-50, max_value=50).map(float)


def snapshot(obj: object) -> Any:
    """A deep, structurally comparable copy of ``obj`` (pools and managers compare by identity)."""
    if isinstance(obj, (SlotPool, CacheManager)):
        return {name: snapshot(value) for name, value in vars(obj).items()}
    if isinstance(obj, list):
        return [snapshot(item) for item in obj]
    return copy.deepcopy(obj)


def pool_state(pool: SlotPool[int]) -> tuple[Any, ...]:
    return (
        list(pool.slot_keys),
        list(pool.slot_fingerprints),
        list(pool.slot_values),
        pool.stats.as_dict(),
        pool.eviction_order(),
    )


@st.composite
def filled_pool(draw: st.DrawFn) -> SlotPool[int]:
    """A pool of a random policy and capacity after a few random puts, gets and evicts."""
    pool: SlotPool[int] = make_pool(draw(POLICIES), draw(st.integers(1, 5)))
    prio = pool.policy is Policy.PRIORITY
    for i, (op, key, fp) in enumerate(draw(st.lists(st.tuples(st.integers(0, 2), KEYS, FPS)))):
        if op == 0:
            pool.put(key, i, fp, float(key % 3) if prio else None)
        elif op == 1:
            pool.get(key, fp)
        elif key in pool:
            pool.evict(key)
    return pool


# --------------------------------------------------------------------------- batch folds


@given(
    filled_pool(),
    st.lists(st.tuples(KEYS, FPS, st.integers(-2, 2).map(float)), max_size=10),
)
def test_put_many_is_fold_of_put(
    pool: SlotPool[int], items: list[tuple[int, int | None, float]]
) -> None:
    folded = copy.deepcopy(pool)
    prio = pool.policy is Policy.PRIORITY
    keys = [k for k, _, _ in items]
    values = list(range(100, 100 + len(items)))
    fps = [f for _, f, _ in items]
    prios: list[float | None] = [p if prio else None for _, _, p in items]
    got = pool.put_many(keys, values, fps, prios)
    want = [folded.put(k, v, f, p) for k, v, f, p in zip(keys, values, fps, prios)]
    assert got == want
    assert pool_state(pool) == pool_state(folded)
    pool.check()


@given(filled_pool(), st.lists(st.tuples(KEYS, FPS), max_size=10))
def test_get_many_is_fold_of_get(pool: SlotPool[int], items: list[tuple[int, int | None]]) -> None:
    folded = copy.deepcopy(pool)
    got = pool.get_many([k for k, _ in items], [f for _, f in items])
    want = [folded.get(k, f) for k, f in items]
    assert got == want
    assert pool_state(pool) == pool_state(folded)


# --------------------------------------------------------------------------- entry rules


@st.composite
def entries(draw: st.DrawFn, num_layers: int, max_size: int, min_size: int = 0) -> Entry:
    size = draw(st.integers(min_size, max_size))
    layer = st.lists(SMALL, min_size=size, max_size=size).map(tuple)
    k = tuple(draw(layer) for _ in range(num_layers))
    v = tuple(draw(layer) for _ in range(num_layers))
    return Entry(k, v)


@st.composite
def entry_lists(draw: st.DrawFn, max_size: int = 8) -> list[Entry]:
    layers = draw(st.integers(1, 2))
    return draw(st.lists(entries(layers, max_size), min_size=1, max_size=4))


@given(entry_lists(), st.integers(0, 3))
def test_split_assemble_roundtrip(es: list[Entry], extra: int) -> None:
    longest = max(e.size for e in es)
    for width in (None, longest + extra):
        batch = assemble(es, width)
        assert batch.width == (longest if width is None else width)
        assert split(batch) == tuple(es)


@given(entry_lists(), st.integers(0, 3), st.integers(1, 4), st.integers(4, 12), st.data())
def test_append_then_split(
    es: list[Entry], extra: int, t: int, context_length: int, data: st.DataObject
) -> None:
    batch = assemble(es, max(e.size for e in es) + extra)
    layers, rows, width = batch.num_layers, batch.rows, batch.width
    new_row = st.lists(SMALL, min_size=t, max_size=t).map(tuple)
    new_k = [[data.draw(new_row) for _ in range(rows)] for _ in range(layers)]
    new_v = [[data.draw(new_row) for _ in range(rows)] for _ in range(layers)]
    out = split(append(batch, new_k, new_v, context_length))
    excess = width + t - context_length
    drop = 0 if excess <= 0 else excess + excess % 2  # rounded up to even
    assert overflow_drop(width, t, context_length) == drop
    kept = 0 if drop >= width else width - drop
    assert len(out) == rows
    for b, (old, new) in enumerate(zip(es, out)):
        survive = min(old.size, kept)
        for layer in range(layers):
            old_k = old.k[layer][old.size - survive :]
            old_v = old.v[layer][old.size - survive :]
            assert new.k[layer] == old_k + tuple(new_k[layer][b])
            assert new.v[layer] == old_v + tuple(new_v[layer][b])


@st.composite
def corrections(draw: st.DrawFn, num_layers: int, cl: int) -> Correction:
    row = st.lists(SMALL, min_size=cl - 3, max_size=cl - 3).map(tuple)
    return Correction(
        tuple(draw(row) for _ in range(num_layers)), tuple(draw(row) for _ in range(num_layers))
    )


@given(st.integers(4, 10), st.integers(1, 2), st.data())
def test_window(cl: int, layers: int, data: st.DataObject) -> None:
    entry = data.draw(entries(layers, cl))
    corr = data.draw(corrections(layers, cl))
    out = window(entry, cl, corr)
    if entry.size < cl - 1:
        assert out == entry
        return
    assert out.size == cl - 3
    for layer in range(layers):
        for j in range(cl - 3):
            assert out.k[layer][j] == entry.k[layer][j + 2] + corr.k[layer][j]
            assert out.v[layer][j] == entry.v[layer][j + 2] + corr.v[layer][j]


@given(st.integers(2, 6).map(lambda h: 2 * h), st.integers(1, 5), st.data())
def test_window_append_keeps_odd_sizes(cl: int, rounds: int, data: st.DataObject) -> None:
    odd = st.integers(0, (cl - 4) // 2).map(lambda i: 2 * i + 1)
    sizes = data.draw(st.lists(odd, min_size=1, max_size=4))
    es = [Entry(((1.0,) * n,), ((2.0,) * n,)) for n in sizes]
    corr = Correction.zero(1, cl)
    for r in range(rounds):
        batch = assemble(es)
        new = [[(float(r), float(r))] * batch.rows]
        es = [window(e, cl, corr) for e in split(append(batch, new, new, cl))]
        assert all(e.size % 2 == 1 and e.size <= cl - 3 for e in es)


@given(entry_lists(), st.integers(0, 3), st.data())
def test_remove_registers_lengths(es: list[Entry], extra: int, data: st.DataObject) -> None:
    batch = assemble(es, max(e.size for e in es) + extra)
    r = data.draw(st.integers(0, batch.width))
    out = remove_registers(batch, r)
    assert out.width == batch.width - r
    assert out.lengths == tuple(max(0, n - r) for n in batch.lengths)
    with pytest.raises(BatchError):
        remove_registers(batch, batch.width + 1)


# --------------------------------------------------------------------------- keys


@given(st.binary(min_size=8, max_size=8))
def test_key_deterministic_and_bound_to_dtype_and_shape(data: bytes) -> None:
    latents = [
        Latent(data, "float32", (2,)),
        Latent(data, "float64", (1,)),
        Latent(data, "float16", (4,)),
        Latent(data, "bfloat16", (4,)),
        Latent(data, "float16", (2, 2)),
        Latent(data, "float16", (1, 4)),
        Latent(data, "float32", (1, 2)),
    ]
    keys = [zkv64_key(lat) for lat in latents]
    assert keys == [zkv64_key(Latent(lat.data, lat.dtype, lat.shape)) for lat in latents]
    assert len(set(keys)) == len(keys)
    assert all(-(2**63) <= k < 2**63 for k in keys)


# --------------------------------------------------------------------------- bad inputs


def refused(obj: object, error: type[ZeroKVError], call: Callable[[], object]) -> None:
    """``call`` raises ``error`` and leaves ``obj`` exactly as it was."""
    before = snapshot(obj)
    with pytest.raises(error):
        call()
    assert snapshot(obj) == before


@pytest.mark.parametrize("policy", list(Policy))
@pytest.mark.parametrize("capacity", [0, -1])
def test_capacity_below_one(policy: Policy, capacity: int) -> None:
    with pytest.raises(ConfigError):
        make_pool(policy, capacity)
    with pytest.raises(ConfigError):
        ManagerConfig(1, 1, 6, capacity, 1)


@pytest.mark.parametrize("bad", [0, -1, True, False, 1.0, "2", None])
def test_positive_int_is_the_one_check_of_sizes(bad: object) -> None:
    """``positive_int`` refuses anything but an int >= 1, with one message everywhere."""
    assert positive_int(1, "n") == 1
    assert positive_int(2**70, "n") == 2**70
    message = f"must be an int >= 1, got {bad!r}"
    with pytest.raises(ConfigError, match=re.escape(f"n {message}")):
        positive_int(bad, "n")
    for name, make in (
        ("capacity", lambda: make_pool(Policy.LRU, bad)),  # type: ignore[arg-type]
        ("env_num", lambda: ManagerConfig(bad, 1, 6, 2, 2)),  # type: ignore[arg-type]
        ("num_layers", lambda: ManagerConfig(1, bad, 6, 2, 2)),  # type: ignore[arg-type]
        ("root_capacity", lambda: ManagerConfig(1, 1, 6, bad, 2)),  # type: ignore[arg-type]
        ("recurrent_capacity", lambda: ManagerConfig(1, 1, 6, 2, bad)),  # type: ignore[arg-type]
        ("num_simulations", lambda: ManagerConfig.legacy(1, 1, 6, bad)),  # type: ignore[arg-type]
        ("max_cache_size", lambda: ManagerConfig.legacy(1, 1, 6, 4, bad)),  # type: ignore[arg-type]
    ):
        with pytest.raises(ConfigError, match=re.escape(f"{name} {message}")):
            make()


@given(filled_pool(), st.sampled_from([2**63, -(2**63) - 1, 2**64]))
def test_pool_bad_inputs_change_nothing(pool: SlotPool[int], bad: int) -> None:
    refused(pool, KeyRangeError, lambda: pool.put(bad, 0))
    refused(pool, KeyRangeError, lambda: pool.get(bad))
    refused(pool, KeyRangeError, lambda: pool.put(0, 0, bad))
    refused(pool, KeyRangeError, lambda: pool.put_many([0, bad], [1, 2]))
    refused(pool, KeyRangeError, lambda: pool.evict(bad))
    refused(pool, BatchError, lambda: pool.put_many([0, 1], [1]))
    refused(pool, BatchError, lambda: pool.put_many([0], [1], [None, None]))
    refused(pool, BatchError, lambda: pool.get_many([0, 1], [None]))
    absent = next(k for k in range(100) if k not in pool)
    refused(pool, KeyNotFoundError, lambda: pool.evict(absent))
    refused(pool, SlotRangeError, lambda: pool.key_at(pool.capacity))
    refused(pool, SlotRangeError, lambda: pool.key_at(-1))


@given(
    st.sampled_from(Scope),
    POLICIES,
    st.lists(st.tuples(st.integers(0, 1), KEYS, st.integers(0, 6)), max_size=8),
    st.integers(7, 9),
)
def test_manager_bad_inputs_change_nothing(
    scope: Scope, policy: Policy, stores: list[tuple[int, int, int]], too_long: int
) -> None:
    mgr = CacheManager(ManagerConfig(2, 1, 6, 2, 3, policy=policy, scope=scope))
    for env, key, size in stores:
        e = Entry(((1.0,) * size,), ((0.0,) * size,))
        mgr.store_root(env, key, e)
        mgr.store_recurrent(env, key, e)
    long_entry = Entry(((1.0,) * too_long,), ((0.0,) * too_long,))
    ok = Entry(((1.0,),), ((1.0,),))
    refused(mgr, EntryError, lambda: mgr.store_root(0, 1, long_entry))
    refused(mgr, EntryError, lambda: mgr.store_recurrent(0, 1, long_entry))
    for bad in (-1, 2, 5):
        refused(mgr, EnvIdError, partial(mgr.store_root, bad, 1, ok))
        refused(mgr, EnvIdError, partial(mgr.store_recurrent, bad, 1, ok))
        refused(mgr, EnvIdError, partial(mgr.lookup, bad, 1))
        refused(mgr, EnvIdError, partial(mgr.clear_env, bad))
        refused(mgr, EnvIdError, partial(mgr.store_root_many, [0, bad], [1, 2], [ok, ok]))
    refused(mgr, KeyRangeError, lambda: mgr.lookup(0, 2**63))
    refused(mgr, BatchError, lambda: mgr.store_root_many([0, 1], [1], [ok, ok]))
    refused(mgr, BatchError, lambda: mgr.store_recurrent_many([0], [1], [ok, ok]))
    refused(mgr, EntryError, lambda: mgr.store_root_many([0, 1], [1, 2], [ok, long_entry]))
    mgr.check()


def test_store_root_many_checks_priorities_against_each_rows_root_pool() -> None:
    """``store_root_many`` checks row ``b``'s priority against ``roots[env_ids[b]]``.

    Through the public API every pool of a manager has the manager's policy, so checking
    against the recurrent pool (as the spec once did) gives the same answers. To tell the
    two apart, this test gives the manager a recurrent pool of another policy.
    """
    ok = Entry(((1.0,),), ((1.0,),))
    # Priority root pools, FIFO recurrent pool: a root priority is accepted and stored.
    prio = CacheManager(ManagerConfig(2, 1, 6, 2, 3, policy=Policy.PRIORITY))
    prio.recurrent = make_pool(Policy.FIFO, 3)
    prio.store_root_many([0, 1], [1, 2], [ok, ok], priorities=[2.0, None])
    root = prio.roots[0]
    assert isinstance(root, PriorityPool)
    assert root.priority[root.slot_of(1)] == 2.0
    # FIFO root pools, priority recurrent pool: refused before any row is stored.
    fifo = CacheManager(ManagerConfig(2, 1, 6, 2, 3, policy=Policy.FIFO))
    fifo.recurrent = make_pool(Policy.PRIORITY, 3)
    store = partial(fifo.store_root_many, [0, 0], [1, 2], [ok, ok], priorities=[None, 1.0])
    refused(fifo, UnsupportedOperationError, store)
