"""Property tests of the reference model's rules (``zerokv_spec`` alone, no torch).

* batch operations are the left-to-right folds of the single ones (pools and manager);
* batches: assemble/split round trip, append's overflow rule per row, the window rule and
  its odd-size cycle, register removal, ``store_rows``;
* keys: ``zkv64`` is deterministic, matches an independent implementation of its
  docstring, and binds shape and dtype; scoped keys keep environments apart;
* legacy pool sizes;
* every bad input raises its documented error type and leaves the state unchanged.
"""

from __future__ import annotations

import copy
import math
import struct
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zerokv_spec.entry import (
    MIN_CONTEXT_LENGTH,
    Batch,
    Correction,
    Entry,
    append,
    assemble,
    remove_registers,
    split,
    store_rows,
    window,
)
from zerokv_spec.errors import (
    BatchError,
    ConfigError,
    EntryError,
    EnvIdError,
    InputError,
    KeyNotFoundError,
    KeyRangeError,
    SearchCapacityError,
    SlotRangeError,
    UnsupportedOperationError,
    ZeroKVError,
)
from zerokv_spec.keys import (
    INT64_MAX,
    INT64_MIN,
    Latent,
    check_key,
    scoped_fingerprint,
    scoped_key,
    weak_key,
    zkv64,
    zkv64_fingerprint,
    zkv64_key,
)
from zerokv_spec.manager import (
    CacheManager,
    ManagerConfig,
    Scope,
    Tier,
    legacy_recurrent_capacity,
    legacy_root_capacity,
)
from zerokv_spec.pool import Policy, PriorityPool, SlotPool, make_pool

KEYS = st.integers(0, 6)
FINGERPRINTS = st.none() | st.integers(0, 2)
PRIORITIES = st.none() | st.integers(0, 3).map(float)
TOKENS = st.floats(-1e3, 1e3, allow_nan=False, width=32)


def state_of(obj: object) -> Any:
    """A comparable deep copy of everything ``obj`` holds (pools have no ``==``)."""
    if isinstance(obj, (SlotPool, CacheManager)):
        return {name: state_of(value) for name, value in vars(obj).items()}
    if isinstance(obj, list):
        return [state_of(x) for x in obj]
    return copy.deepcopy(obj)


# --------------------------------------------------------------------------- strategies


@st.composite
def pools(draw: st.DrawFn, policy: Policy | None = None) -> SlotPool[int]:
    """A pool in a state reached by random puts, gets and evictions (not only fresh)."""
    chosen = draw(st.sampled_from(Policy)) if policy is None else policy
    pool: SlotPool[int] = make_pool(chosen, draw(st.integers(1, 5)))
    prio = PRIORITIES if chosen is Policy.PRIORITY else st.none()
    history = st.tuples(st.integers(0, 2), KEYS, FINGERPRINTS, prio)
    for i, (op, key, fp, p) in enumerate(draw(st.lists(history, max_size=12))):
        if op == 0:
            pool.put(key, 100 + i, fp, p)
        elif op == 1:
            pool.get(key, fp)
        elif key in pool:
            pool.evict(key)
    return pool


@st.composite
def entries(draw: st.DrawFn, layers: int, max_size: int, min_size: int = 0) -> Entry:
    size = draw(st.integers(min_size, max_size))
    tokens = st.tuples(*[TOKENS] * size)
    k = tuple(draw(tokens) for _ in range(layers))
    v = tuple(draw(tokens) for _ in range(layers))
    return Entry(k, v)


@st.composite
def entry_lists(draw: st.DrawFn, max_size: int = 6, max_rows: int = 4) -> list[Entry]:
    layers = draw(st.integers(1, 3))
    return draw(st.lists(entries(layers, max_size), min_size=1, max_size=max_rows))


# --------------------------------------------------------------------------- batch folds


@given(pool=pools(), puts=st.lists(st.tuples(KEYS, FINGERPRINTS, PRIORITIES), max_size=8))
def test_put_many_is_the_fold_of_put(
    pool: SlotPool[int], puts: list[tuple[int, int | None, float | None]]
) -> None:
    keys = [k for k, _, _ in puts]  # duplicates included
    values = [1000 + i for i in range(len(puts))]
    fps = [f for _, f, _ in puts]
    prios = [p if pool.policy is Policy.PRIORITY else None for _, _, p in puts]
    single = copy.deepcopy(pool)
    folded = [single.put(k, v, f, p) for k, v, f, p in zip(keys, values, fps, prios)]
    assert pool.put_many(keys, values, fps, prios) == folded
    assert state_of(pool) == state_of(single)


@given(pool=pools(), gets=st.lists(st.tuples(KEYS, FINGERPRINTS), max_size=8))
def test_get_many_and_peek_many_are_folds(
    pool: SlotPool[int], gets: list[tuple[int, int | None]]
) -> None:
    keys, fps = [k for k, _ in gets], [f for _, f in gets]
    single = copy.deepcopy(pool)
    assert pool.peek_many(keys, fps) == [single.peek(k, f) for k, f in zip(keys, fps)]
    assert pool.get_many(keys, fps) == [single.get(k, f) for k, f in zip(keys, fps)]
    assert state_of(pool) == state_of(single)


def tagged(env_id: int, key: int, write: int) -> Entry:
    return Entry(((float(env_id), float(key), float(write)),), ((float(write), 0.0, 0.0),))


@given(
    scope=st.sampled_from(Scope),
    policy=st.sampled_from(Policy),
    rows=st.lists(st.tuples(st.integers(0, 2), KEYS, FINGERPRINTS), max_size=6),
    lookups=st.lists(st.tuples(st.integers(0, 2), KEYS, FINGERPRINTS), max_size=6),
    tiers=st.sampled_from(["hierarchical", "root", "recurrent"]),
)
def test_manager_batch_operations_are_folds(
    scope: Scope,
    policy: Policy,
    rows: list[tuple[int, int, int | None]],
    lookups: list[tuple[int, int, int | None]],
    tiers: str,
) -> None:
    m = CacheManager(ManagerConfig(3, 1, 4, 2, 3, policy, scope))
    single = copy.deepcopy(m)
    envs, keys, fps = [e for e, _, _ in rows], [k for _, k, _ in rows], [f for _, _, f in rows]
    stored = [tagged(e, k, i) for i, (e, k, _) in enumerate(rows)]
    assert m.store_root_many(envs, keys, stored, fps) == [
        single.store_root(e, k, x, f) for e, k, x, f in zip(envs, keys, stored, fps)
    ]
    assert m.store_recurrent_many(envs, keys, stored, fps) == [
        single.store_recurrent(e, k, x, f) for e, k, x, f in zip(envs, keys, stored, fps)
    ]
    one = {"hierarchical": single.lookup, "root": single.lookup_root}.get(
        tiers, single.lookup_recurrent
    )
    l_envs, l_keys = [e for e, _, _ in lookups], [k for _, k, _ in lookups]
    l_fps = [f for _, _, f in lookups]
    assert m.lookup_many(l_envs, l_keys, l_fps, tiers) == [
        one(e, k, f) for e, k, f in zip(l_envs, l_keys, l_fps)
    ]
    assert state_of(m) == state_of(single)


# --------------------------------------------------------------------------- batches


@given(rows=entry_lists(), extra=st.none() | st.integers(0, 3))
def test_assemble_split_round_trip(rows: list[Entry], extra: int | None) -> None:
    longest = max(e.size for e in rows)
    width = None if extra is None else longest + extra
    batch = assemble(rows, width)
    assert batch.width == (longest if extra is None else longest + extra)
    assert batch.lengths == tuple(e.size for e in rows)
    for b, e in enumerate(rows):
        pad = batch.width - e.size
        assert batch.mask()[b] == (False,) * pad + (True,) * e.size
        for layer in range(e.num_layers):
            assert batch.k[layer][b] == (0.0,) * pad + e.k[layer]
            assert batch.v[layer][b] == (0.0,) * pad + e.v[layer]
    assert split(batch) == tuple(rows)


def overflow(width: int, t: int, context_length: int) -> int:
    """Columns ``append`` drops: the excess over the context length, rounded up to even."""
    excess = width + t - context_length
    return 0 if excess <= 0 else excess + excess % 2


@given(rows=entry_lists(), extra=st.integers(0, 2), t=st.integers(1, 3), data=st.data())
def test_append_then_split_is_per_entry_append(
    rows: list[Entry], extra: int, t: int, data: st.DataObject
) -> None:
    batch = assemble(rows, max(e.size for e in rows) + extra)
    cl = data.draw(st.integers(t, batch.width + t + 2), label="context_length")
    layers = rows[0].num_layers
    new = st.lists(st.tuples(*[TOKENS] * t), min_size=len(rows), max_size=len(rows))
    new_k = [data.draw(new, label="new K") for _ in range(layers)]
    new_v = [data.draw(new, label="new V") for _ in range(layers)]
    out = append(batch, new_k, new_v, cl)
    drop = overflow(batch.width, t, cl)
    kept = 0 if drop >= batch.width else batch.width - drop
    assert drop % 2 == 0
    assert out.width == kept + t <= cl
    for b, (e, row) in enumerate(zip(rows, split(out))):
        survive = min(e.size, kept)  # the newest tokens of the row that fit
        for layer in range(layers):
            assert row.k[layer] == e.k[layer][e.size - survive :] + tuple(new_k[layer][b])
            assert row.v[layer] == e.v[layer][e.size - survive :] + tuple(new_v[layer][b])


@st.composite
def window_cases(draw: st.DrawFn) -> tuple[int, Entry, Correction]:
    cl = draw(st.integers(MIN_CONTEXT_LENGTH, 10))
    layers = draw(st.integers(1, 3))
    entry = draw(entries(layers, cl))
    row = st.tuples(*[TOKENS] * (cl - 3))
    k = tuple(draw(row) for _ in range(layers))
    v = tuple(draw(row) for _ in range(layers))
    return cl, entry, Correction(k, v)


@given(case=window_cases())
def test_window_rule(case: tuple[int, Entry, Correction]) -> None:
    cl, entry, corr = case
    out = window(entry, cl, corr)
    if entry.size < cl - 1:
        assert out == entry
        return
    assert out.size == cl - 3
    for layer in range(entry.num_layers):
        for j in range(cl - 3):
            assert out.k[layer][j] == entry.k[layer][j + 2] + corr.k[layer][j]
            assert out.v[layer][j] == entry.v[layer][j + 2] + corr.v[layer][j]
    assert window(out, cl, corr) == out  # a windowed entry is short: idempotent


@given(
    half=st.integers(2, 8),
    starts=st.lists(st.integers(0, 10), min_size=1, max_size=4),
    steps=st.integers(1, 12),
)
def test_store_cycle_keeps_sizes_odd(half: int, starts: list[int], steps: int) -> None:
    """With even ``cl`` and 2 new tokens per store, sizes stay odd and at most ``cl - 3``."""
    cl = 2 * half
    sizes = [2 * (s % (half - 1)) + 1 for s in starts]  # odd, at most cl - 3
    rows = [Entry(((0.5,) * n,), ((0.5,) * n,)) for n in sizes]
    zero = Correction.zero(1, cl)
    for _ in range(steps):
        sizes = [e.size for e in rows]
        new = [[(1.0, 2.0)] * len(rows)]
        rows = list(store_rows(append(assemble(rows), new, new, cl), cl, zero))
        assert [e.size for e in rows] == [s + 2 if s + 2 < cl - 1 else cl - 3 for s in sizes]
        assert all(e.size % 2 == 1 and e.size <= cl - 3 for e in rows)


@given(rows=entry_lists(), extra=st.integers(0, 2), data=st.data())
def test_remove_registers(rows: list[Entry], extra: int, data: st.DataObject) -> None:
    batch = assemble(rows, max(e.size for e in rows) + extra)
    r = data.draw(st.integers(0, batch.width), label="registers")
    out = remove_registers(batch, r)
    assert out.width == batch.width - r
    assert out.lengths == tuple(max(0, n - r) for n in batch.lengths)
    for e, row in zip(rows, split(out)):  # the r newest tokens go, the oldest stay
        assert row.k == tuple(x[: max(0, e.size - r)] for x in e.k)
        assert row.v == tuple(x[: max(0, e.size - r)] for x in e.v)


@given(case=window_cases(), rows=st.integers(1, 3))
def test_store_rows_is_window_of_split(case: tuple[int, Entry, Correction], rows: int) -> None:
    cl, entry, corr = case
    batch = assemble([entry] * rows)
    assert store_rows(batch, cl, corr) == tuple(window(e, cl, corr) for e in split(batch))


def test_gather_gives_a_miss_an_empty_row() -> None:
    m = CacheManager(ManagerConfig(2, 1, 4, 2, 2))
    m.store_root(0, 7, tagged(0, 7, 1))
    batch = m.gather([m.lookup(0, 7), m.lookup(1, 7)])
    assert batch.lengths == (3, 0)
    assert split(batch) == (tagged(0, 7, 1), Entry.empty(1))


# --------------------------------------------------------------------------- keys

DTYPE_CODES = {"float16": 1, "bfloat16": 2, "float32": 3, "float64": 4}


def reference_zkv64(data: bytes, dtype: str, shape: tuple[int, ...], seed: int) -> int:
    """``zkv64`` written again from the ``zerokv_spec.keys`` docstring alone."""
    mask = (1 << 64) - 1

    def fmix(x: int) -> int:
        x &= mask
        x ^= x >> 33
        x = (x * 0xFF51AFD7ED558CCD) & mask
        x ^= x >> 33
        x = (x * 0xC4CEB9FE1A85EC53) & mask
        return x ^ (x >> 33)

    padded = data + bytes(-len(data) % 4)
    words = struct.unpack(f"<{len(padded) // 4}i", padded)
    state, acc = seed & mask, 0
    for w in words:  # splitmix64 stream: A_i, then odd M_i
        state = (state + 0x9E3779B97F4A7C15) & mask
        a = fmix(state)
        state = (state + 0x9E3779B97F4A7C15) & mask
        acc = (acc + ((w ^ a) & mask) * (fmix(state) | 1)) & mask
    desc = fmix(seed ^ (DTYPE_CODES[dtype] << 56) ^ len(data))
    for dim in shape:
        desc = fmix(desc ^ dim)
    out = (acc + desc) & mask
    return out - (1 << 64) if out >= 1 << 63 else out


@st.composite
def latents(draw: st.DrawFn) -> Latent:
    dtype = draw(st.sampled_from(sorted(DTYPE_CODES)))
    size = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}[dtype]
    shape = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=3)))
    return Latent(
        draw(st.binary(min_size=math.prod(shape) * size, max_size=math.prod(shape) * size)),
        dtype,
        shape,
    )


@given(latent=latents())
def test_zkv64_is_deterministic_and_follows_its_definition(latent: Latent) -> None:
    again = Latent(bytes(latent.data), latent.dtype, tuple(latent.shape))
    key, fingerprint = zkv64_key(latent), zkv64_fingerprint(latent)
    assert (zkv64_key(again), zkv64_fingerprint(again)) == (key, fingerprint)
    assert INT64_MIN <= key <= INT64_MAX and INT64_MIN <= fingerprint <= INT64_MAX
    assert key != fingerprint
    for seed, value in ((0x9E3779B97F4A7C15, key), (0xD6E8FEB86659FD93, fingerprint)):
        assert reference_zkv64(latent.data, latent.dtype, latent.shape, seed) == value
        assert zkv64(latent, seed) == value
    assert 0 <= weak_key(latent) < 4


@given(data=st.binary(min_size=8, max_size=8))
def test_shape_and_dtype_are_part_of_the_key(data: bytes) -> None:
    """Equal bytes read as other shapes or dtypes are other keys (LightZero's were not)."""
    views = [
        Latent(data, "float32", (2,)),
        Latent(data, "float32", (1, 2)),
        Latent(data, "float32", (2, 1)),
        Latent(data, "float16", (4,)),
        Latent(data, "bfloat16", (4,)),
        Latent(data, "float64", (1,)),
    ]
    assert len({zkv64_key(v) for v in views}) == len(views)
    assert len({zkv64_fingerprint(v) for v in views}) == len(views)


@given(data=st.binary(min_size=4, max_size=32).filter(lambda b: len(b) % 4 == 0), flip=st.data())
def test_every_byte_counts(data: bytes, flip: st.DataObject) -> None:
    i = flip.draw(st.integers(0, len(data) - 1), label="byte")
    bit = flip.draw(st.integers(0, 7), label="bit")
    changed = data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1 :]
    shape = (len(data) // 4,)
    assert zkv64_key(Latent(data, "float32", shape)) != zkv64_key(Latent(changed, "float32", shape))


@given(
    data=st.binary(min_size=4, max_size=64).filter(lambda b: len(b) % 4 == 0),
    word=st.data(),
)
def test_rows_that_differ_in_one_word_never_collide(data: bytes, word: st.DataObject) -> None:
    """Not a probability: with ``M_j`` odd (invertible modulo 2**64), changing word ``j``
    to any other value moves the sum, for the key and the fingerprint alike."""
    j = word.draw(st.integers(0, len(data) // 4 - 1), label="word")
    new = word.draw(
        st.binary(min_size=4, max_size=4).filter(lambda w: w != data[4 * j : 4 * j + 4])
    )
    changed = data[: 4 * j] + new + data[4 * j + 4 :]
    shape = (len(data) // 4,)
    a, b = Latent(data, "float32", shape), Latent(changed, "float32", shape)
    assert zkv64_key(a) != zkv64_key(b)
    assert zkv64_fingerprint(a) != zkv64_fingerprint(b)


@given(
    keys=st.lists(st.integers(INT64_MIN, INT64_MAX), min_size=2, max_size=6, unique=True),
    env=st.integers(0, 7),
)
def test_scoping_keeps_keys_apart(keys: list[int], env: int) -> None:
    scoped = [scoped_key(k, env) for k in keys]
    assert len(set(scoped)) == len(keys)  # a bijection within one environment
    assert all(INT64_MIN <= s <= INT64_MAX for s in scoped)
    assert scoped_key(keys[0], env) != scoped_key(keys[0], env + 1)
    assert scoped_fingerprint(None, env) == scoped_fingerprint(0, env)  # missing counts as 0
    assert scoped_fingerprint(keys[0], env) != scoped_fingerprint(keys[0], env + 1)


def test_scoped_recurrent_entries_stay_apart() -> None:
    """ENV scope: equal keys of two environments are two entries; GLOBAL: last writer wins."""
    for scope, winner in ((Scope.ENV, 0), (Scope.GLOBAL, 1)):
        m = CacheManager(ManagerConfig(2, 1, 4, 1, 4, scope=scope))
        m.store_recurrent(0, 5, tagged(0, 5, 0))
        m.store_recurrent(1, 5, tagged(1, 5, 1))
        found = m.lookup(0, 5)
        assert found.tier is Tier.RECURRENT and found.entry == tagged(winner, 5, winner)
        assert len(m.recurrent) == (2 if scope is Scope.ENV else 1)


# --------------------------------------------------------------------------- sizes


@given(n=st.integers(1, 10_000), cap=st.integers(1, 10_000), envs=st.integers(1, 16))
def test_legacy_pool_sizes(n: int, cap: int, envs: int) -> None:
    assert legacy_root_capacity(n, cap) == min(cap, max(256, 2 * n))
    assert legacy_recurrent_capacity(n, envs) == n * envs
    config = ManagerConfig.legacy(envs, 2, 8, n, cap)
    assert (config.root_capacity, config.recurrent_capacity) == (
        min(cap, max(256, 2 * n)),
        n * envs,
    )


def test_legacy_sizes_of_the_atari_config() -> None:
    """Atari: 8 environments; sized from 50 simulations the recurrent ring has 400 slots."""
    config = ManagerConfig.legacy(env_num=8, num_layers=2, context_length=8, num_simulations=50)
    assert (config.root_capacity, config.recurrent_capacity) == (256, 400)
    collect = ManagerConfig.legacy(env_num=8, num_layers=2, context_length=8, num_simulations=25)
    assert (collect.root_capacity, collect.recurrent_capacity) == (256, 200)


# --------------------------------------------------------------------------- bad inputs


def expect_refusal(obj: object, error: type[Exception], call: Callable[[], object]) -> None:
    """``call`` raises ``error`` and leaves ``obj`` exactly as it was."""
    before = state_of(obj)
    with pytest.raises(error):
        call()
    assert state_of(obj) == before


POOL_BAD_INPUTS: list[tuple[str, type[Exception], Callable[[Any], object]]] = [
    ("get: key above int64", KeyRangeError, lambda p: p.get(INT64_MAX + 1)),
    ("get: key below int64", KeyRangeError, lambda p: p.get(INT64_MIN - 1)),
    ("get: bool key", KeyRangeError, lambda p: p.get(True)),
    ("get: float key", KeyRangeError, lambda p: p.get(1.0)),
    ("get: fingerprint out of range", KeyRangeError, lambda p: p.get(0, 1 << 64)),
    ("peek: str key", KeyRangeError, lambda p: p.peek("0")),
    ("put: key out of range", KeyRangeError, lambda p: p.put(1 << 63, 0)),
    ("put: float fingerprint", KeyRangeError, lambda p: p.put(0, 0, 0.5)),
    ("evict: absent key", KeyNotFoundError, lambda p: p.evict(99)),
    ("evict: key out of range", KeyRangeError, lambda p: p.evict(1 << 63)),
    ("slot_of: absent key", KeyNotFoundError, lambda p: p.slot_of(99)),
    ("key_at: slot == capacity", SlotRangeError, lambda p: p.key_at(p.capacity)),
    ("key_at: negative slot", SlotRangeError, lambda p: p.key_at(-1)),
    ("key_at: bool slot", SlotRangeError, lambda p: p.key_at(False)),
    ("put_many: fewer values", BatchError, lambda p: p.put_many([0, 1], [0])),
    ("put_many: fewer fingerprints", BatchError, lambda p: p.put_many([0, 1], [0, 0], [None])),
    ("put_many: fewer priorities", BatchError, lambda p: p.put_many([0], [0], None, [])),
    (
        "put_many: a bad key last",
        KeyRangeError,
        lambda p: p.put_many([0, 1, -(1 << 64)], [0, 0, 0]),
    ),
    ("get_many: fewer fingerprints", BatchError, lambda p: p.get_many([0, 1], [None])),
    ("get_many: a bad key last", KeyRangeError, lambda p: p.get_many([0, 1 << 63])),
    ("peek_many: a bad key last", KeyRangeError, lambda p: p.peek_many([0, None])),
    # A bad fingerprint in a batch read (the spec's peek checks each row; no pre-check).
    (
        "peek_many: a bad fingerprint last",
        KeyRangeError,
        lambda p: p.peek_many([0, 1], [None, 1 << 64]),
    ),
    ("peek_many: a str fingerprint", KeyRangeError, lambda p: p.peek_many([0], ["1"])),
    (
        "get_many: a bad fingerprint last",
        KeyRangeError,
        lambda p: p.get_many([0, 1], [0, -(1 << 64)]),
    ),
]

PRIORITY_BAD_INPUTS: list[tuple[str, type[Exception], Callable[[Any], object]]] = [
    ("put: NaN priority", InputError, lambda p: p.put(0, 0, None, math.nan)),
    ("put: infinite priority", InputError, lambda p: p.put(0, 0, None, math.inf)),
    ("put: str priority", InputError, lambda p: p.put(0, 0, None, "1")),
    ("put: bool priority", InputError, lambda p: p.put(0, 0, None, True)),
    (
        "put_many: a NaN priority last",
        InputError,
        lambda p: p.put_many([0, 1], [0, 0], None, [None, math.nan]),
    ),
    ("set_priority: None", InputError, lambda p: p.set_priority(0, None)),
    ("set_priority: NaN", InputError, lambda p: p.set_priority(0, math.nan)),
    ("set_priority: absent key", KeyNotFoundError, lambda p: p.set_priority(99, 1.0)),
]

NO_PRIORITY_BAD_INPUTS: list[tuple[str, type[Exception], Callable[[Any], object]]] = [
    ("put: a priority", UnsupportedOperationError, lambda p: p.put(0, 0, None, 1.0)),
    (
        "put_many: a priority",
        UnsupportedOperationError,
        lambda p: p.put_many([0], [0], None, [1.0]),
    ),
    ("set_priority", UnsupportedOperationError, lambda p: p.set_priority(0, 1.0)),
]


@pytest.mark.parametrize("name, error, call", POOL_BAD_INPUTS, ids=[c[0] for c in POOL_BAD_INPUTS])
@given(pool=pools())
def test_pool_bad_input(
    pool: SlotPool[int], name: str, error: type[Exception], call: Callable[[Any], object]
) -> None:
    expect_refusal(pool, error, partial(call, pool))


@pytest.mark.parametrize(
    "name, error, call",
    PRIORITY_BAD_INPUTS + NO_PRIORITY_BAD_INPUTS,
    ids=[c[0] for c in PRIORITY_BAD_INPUTS + NO_PRIORITY_BAD_INPUTS],
)
@given(data=st.data())
def test_pool_priority_bad_input(
    data: st.DataObject, name: str, error: type[Exception], call: Callable[[Any], object]
) -> None:
    wants_priority = name in {c[0] for c in PRIORITY_BAD_INPUTS}
    policies = [Policy.PRIORITY] if wants_priority else [Policy.FIFO, Policy.LRU]
    pool = data.draw(pools(data.draw(st.sampled_from(policies), label="policy")), label="pool")
    expect_refusal(pool, error, partial(call, pool))


ENTRY = tagged(0, 0, 0)
MANAGER_BAD_INPUTS: list[tuple[str, type[Exception], Callable[[Any], object]]] = [
    ("lookup: env id == env_num", EnvIdError, lambda m: m.lookup(2, 0)),
    ("lookup: negative env id", EnvIdError, lambda m: m.lookup(-1, 0)),
    ("lookup: bool env id", EnvIdError, lambda m: m.lookup(True, 0)),
    ("lookup_root: key out of range", KeyRangeError, lambda m: m.lookup_root(0, 1 << 63)),
    (
        "lookup_recurrent: bad fingerprint",
        KeyRangeError,
        lambda m: m.lookup_recurrent(0, 0, 1 << 63),
    ),
    (
        "store_root: too many layers",
        EntryError,
        lambda m: m.store_root(0, 0, Entry(((1.0,), (1.0,)), ((1.0,), (1.0,)))),
    ),
    (
        "store_root: longer than the context",
        EntryError,
        lambda m: m.store_root(0, 0, Entry(((1.0,) * 5,), ((1.0,) * 5,))),
    ),
    ("store_root: not an Entry", EntryError, lambda m: m.store_root(0, 0, ((1.0,),))),
    ("store_recurrent: bad env id", EnvIdError, lambda m: m.store_recurrent(5, 0, ENTRY)),
    (
        "store_root_many: a bad env id last",
        EnvIdError,
        lambda m: m.store_root_many([0, 3], [0, 1], [ENTRY, ENTRY]),
    ),
    ("store_root_many: fewer keys", BatchError, lambda m: m.store_root_many([0, 1], [0], [ENTRY])),
    (
        "store_recurrent_many: fewer entries",
        BatchError,
        lambda m: m.store_recurrent_many([0], [0], []),
    ),
    (
        "store_recurrent_many: fewer fingerprints",
        BatchError,
        lambda m: m.store_recurrent_many([0], [0], [ENTRY], []),
    ),
    ("lookup_many: unknown tiers", BatchError, lambda m: m.lookup_many([0], [0], None, "all")),
    ("lookup_many: fewer keys", BatchError, lambda m: m.lookup_many([0, 1], [0])),
    (
        "store_root_batch: rows != keys",
        BatchError,
        lambda m: m.store_root_batch([0], [0], assemble([ENTRY, ENTRY]), Correction.zero(1, 4)),
    ),
    (
        "store_recurrent_batch: wrong correction",
        BatchError,
        lambda m: m.store_recurrent_batch([0], [0], assemble([ENTRY]), Correction.zero(1, 6)),
    ),
    ("set_priority: tier MISS", BatchError, lambda m: m.set_priority(Tier.MISS, 0, 0, 1.0)),
    ("clear_env: bad env id", EnvIdError, lambda m: m.clear_env(2)),
    (
        "begin_search: more nodes than slots",
        SearchCapacityError,
        lambda m: m.begin_search(m.config.recurrent_capacity + 1),
    ),
    ("begin_search: negative", SearchCapacityError, lambda m: m.begin_search(-1)),
    ("gather: nothing", BatchError, lambda m: m.gather([])),
]


@pytest.mark.parametrize(
    "name, error, call", MANAGER_BAD_INPUTS, ids=[c[0] for c in MANAGER_BAD_INPUTS]
)
@given(
    policy=st.sampled_from(Policy),
    scope=st.sampled_from(Scope),
    stores=st.lists(st.tuples(st.integers(0, 1), KEYS, st.booleans()), max_size=6),
)
def test_manager_bad_input(
    policy: Policy,
    scope: Scope,
    stores: list[tuple[int, int, bool]],
    name: str,
    error: type[Exception],
    call: Callable[[Any], object],
) -> None:
    m = CacheManager(ManagerConfig(2, 1, 4, 2, 3, policy, scope))
    for i, (env, key, root) in enumerate(stores):
        (m.store_root if root else m.store_recurrent)(env, key, tagged(env, key, i))
        m.lookup(env, key)
    expect_refusal(m, error, partial(call, m))


@given(used=st.integers(0, 3), rows=st.integers(1, 4))
def test_a_search_over_budget_changes_nothing(used: int, rows: int) -> None:
    m = CacheManager(ManagerConfig(1, 1, 4, 2, 4))
    m.begin_search(3)
    for k in range(used):
        m.store_recurrent(0, k, tagged(0, k, k))
    many = partial(m.store_recurrent_many, [0] * rows, list(range(10, 10 + rows)), [ENTRY] * rows)
    if used + rows > 3:
        expect_refusal(m, SearchCapacityError, many)
    else:
        many()
        assert m.search_used == used + rows
    if m.search_used == 3:
        expect_refusal(m, SearchCapacityError, partial(m.store_recurrent, 0, 50, ENTRY))
    m.end_search()
    m.store_recurrent(0, 50, ENTRY)  # no declared search: not limited


A_STRING: Any = "fifo"  # a policy / scope spelled as a string: refused
NOTHING: Any = None
BATCH = assemble([Entry(((1.0, 2.0),), ((3.0, 4.0),)), Entry(((5.0,),), ((6.0,),))])
PURE_BAD_INPUTS: list[tuple[str, type[Exception], Callable[[], object]]] = [
    ("assemble: no entries", BatchError, lambda: assemble([])),
    ("assemble: width below the longest", BatchError, lambda: assemble([ENTRY], 2)),
    (
        "assemble: mixed layer counts",
        BatchError,
        lambda: assemble([ENTRY, Entry(((1.0,), (1.0,)), ((1.0,), (1.0,)))]),
    ),
    ("append: wrong layer count", BatchError, lambda: append(BATCH, [], [], 8)),
    ("append: wrong row count", BatchError, lambda: append(BATCH, [[(1.0,)]], [[(1.0,)]], 8)),
    (
        "append: ragged new tokens",
        BatchError,
        lambda: append(BATCH, [[(1.0,), (1.0, 2.0)]], [[(1.0,), (1.0,)]], 8),
    ),
    ("append: no new token", BatchError, lambda: append(BATCH, [[(), ()]], [[(), ()]], 8)),
    (
        "append: more tokens than the context length",
        BatchError,
        lambda: append(BATCH, [[(1.0,) * 3] * 2], [[(1.0,) * 3] * 2], 2),
    ),
    ("window: context below 4", ConfigError, lambda: window(ENTRY, 3, Correction.zero(1, 4))),
    ("window: bool context", ConfigError, lambda: window(ENTRY, True, Correction.zero(1, 4))),
    (
        "window: correction of other length",
        BatchError,
        lambda: window(ENTRY, 5, Correction.zero(1, 4)),
    ),
    (
        "window: correction of other layers",
        BatchError,
        lambda: window(ENTRY, 4, Correction.zero(2, 4)),
    ),
    (
        "window: entry longer than the context",
        EntryError,
        lambda: window(Entry(((1.0,) * 6,), ((1.0,) * 6,)), 5, Correction.zero(1, 5)),
    ),
    ("remove_registers: more than the width", BatchError, lambda: remove_registers(BATCH, 3)),
    ("remove_registers: negative", BatchError, lambda: remove_registers(BATCH, -1)),
    ("remove_registers: bool", BatchError, lambda: remove_registers(BATCH, True)),
    ("Entry: ragged layers", EntryError, lambda: Entry(((1.0,), (1.0, 2.0)), ((1.0,), (1.0,)))),
    ("Entry: K and V layer counts differ", EntryError, lambda: Entry(((1.0,),), ())),
    ("Entry: no layer", EntryError, lambda: Entry((), ())),
    ("Batch: length above width", BatchError, lambda: Batch((((0.0,),),), (((0.0,),),), (2,), 1)),
    ("Latent: unknown dtype", InputError, lambda: Latent(b"\0" * 4, "int32", (1,))),
    ("Latent: bytes do not fit the shape", InputError, lambda: Latent(b"\0" * 4, "float32", (2,))),
    ("Latent: negative dimension", InputError, lambda: Latent(b"", "float32", (-1,))),
    ("check_key: out of range", KeyRangeError, lambda: check_key(1 << 63)),
    ("PriorityPool: NaN default priority", ConfigError, lambda: PriorityPool(2, math.nan)),
    ("PriorityPool: bool default priority", ConfigError, lambda: PriorityPool(2, True)),
    ("make_pool: capacity 0", ConfigError, lambda: make_pool(Policy.FIFO, 0)),
    ("make_pool: bool capacity", ConfigError, lambda: make_pool(Policy.LRU, True)),
    ("make_pool: unknown policy", ConfigError, lambda: make_pool(A_STRING, 1)),
    ("ManagerConfig: no environment", ConfigError, lambda: ManagerConfig(0, 1, 4, 1, 1)),
    ("ManagerConfig: context below 4", ConfigError, lambda: ManagerConfig(1, 1, 3, 1, 1)),
    ("ManagerConfig: recurrent capacity 0", ConfigError, lambda: ManagerConfig(1, 1, 4, 1, 0)),
    (
        "ManagerConfig: policy as a string",
        ConfigError,
        lambda: ManagerConfig(1, 1, 4, 1, 1, A_STRING),
    ),
    (
        "ManagerConfig: scope as a string",
        ConfigError,
        lambda: ManagerConfig(1, 1, 4, 1, 1, Policy.FIFO, A_STRING),
    ),
    ("ManagerConfig.legacy: no simulation", ConfigError, lambda: ManagerConfig.legacy(1, 1, 4, 0)),
    ("CacheManager: not a config", ConfigError, lambda: CacheManager(NOTHING)),
]


@pytest.mark.parametrize("name, error, call", PURE_BAD_INPUTS, ids=[c[0] for c in PURE_BAD_INPUTS])
def test_bad_input_raises_its_documented_type(
    name: str, error: type[Exception], call: Callable[[], object]
) -> None:
    with pytest.raises(error) as raised:
        call()
    assert isinstance(raised.value, ZeroKVError)


def test_error_types_are_also_builtin_types() -> None:
    """Callers may catch the builtin base types the error module promises."""
    assert issubclass(KeyNotFoundError, KeyError) and issubclass(SlotRangeError, IndexError)
    assert issubclass(InputError, ValueError) and issubclass(UnsupportedOperationError, TypeError)
    assert issubclass(SearchCapacityError, RuntimeError)
    assert str(KeyNotFoundError("key 3 is not stored")) == "key 3 is not stored"
