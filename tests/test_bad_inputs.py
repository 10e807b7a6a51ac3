"""The standing bad-input table: every public entry point, one mistake at a time.

Each row names an entry point, a mistake and the zerokv error type it must raise. A row is
run against a subject that holds state (stored entries in both tiers, a fresh lookup, a
gathered batch), and the test requires the typed error **and** an unchanged subject:
statistics, slot keys, the slab's bits, the generation, the search budget. The subjects:

* ``CacheManager`` on the host path (the host index), on the device path (the device
  index with the CPU shortcuts on) and on the exact CUDA code path (shortcuts off);
* ``ShadowManager`` around each of those: the same error type must come out (never a
  ``ShadowDivergence``: the spec refuses what the manager refuses) and the shadow must
  stay in step for the next valid call;
* ``SlotPool``, the module functions and types (``Batch``, ``Entries``, ``Correction``,
  ``split``, the key functions, ``CacheConfig``), and the spec (``zerokv_spec``).

Grow the table whenever an entry point lands (the LightZero adapter's rows live with the
adapter's tests). ``test_every_manager_entry_point_has_a_row`` fails when a public
``CacheManager`` method has no row.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import torch

import zerokv
from zerokv import (
    Batch,
    BatchError,
    CacheConfig,
    CacheManager,
    ConfigError,
    Correction,
    DeviceError,
    DTypeError,
    Entries,
    EntryError,
    EnvIdError,
    InputError,
    KeyNotFoundError,
    KeyRangeError,
    SearchCapacityError,
    ShadowDivergence,
    ShadowManager,
    ShapeError,
    SlotPool,
    SlotRangeError,
    StaleLookupError,
    Tier,
    UnsupportedOperationError,
    ZeroKVError,
    kernels,
)
from zerokv.diagnostics import HitRateMonitor
from zerokv.errors import (
    NodeDepthError,
    NodeMissingError,
    NodeOccupiedError,
    NodeRangeError,
    StaleSearchError,
)
from zerokv.lightzero import BatchView, install
from zerokv.search import NodeAddress, SearchCache, SearchConfig
from zerokv.testing.backends import BACKENDS, COMPILED, index_of
from zerokv.testing.backends import backend as using_backend
from zerokv_spec import entry as spec_entry
from zerokv_spec import keys as spec_keys
from zerokv_spec.manager import CacheManager as SpecManager
from zerokv_spec.manager import ManagerConfig

L, H, D, CL = 2, 2, 3, 8
ENVS = 2
TOO_BIG = 1 << 63


def keys(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


def kv(rows: int, width: int = CL, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.ones(L, 2, rows, H, width, D, dtype=dtype)


def correction(**shape: int) -> Correction:
    dims = {"layers": L, "heads": H, "positions": CL - 3, "dim": D} | shape
    return Correction(torch.zeros(dims["layers"], 2, dims["heads"], dims["positions"], dims["dim"]))


@dataclass
class Subject:
    """A manager (or shadow) holding state, and the values the rows use."""

    m: Any  # CacheManager or ShadowManager: the same public surface
    found: Any  # a fresh lookup of two rows (env 0 key 1 root hit, env 1 key 2 root hit)
    stale: Any  # a lookup made before the last store
    other: Any  # a lookup of another manager
    batch: Batch  # a verified two-row batch (gather_reserve of ``found``)
    entries: Entries  # one valid entry (3 tokens)


def build(kind: str, backend: str, shadow: bool) -> Subject:
    config = CacheConfig(
        env_num=ENVS,
        num_layers=L,
        num_heads=H,
        head_dim=D,
        context_length=CL,
        root_capacity=3,
        recurrent_capacity=4,
        index=index_of(backend),
        compile=backend == COMPILED,
    )
    m: Any = ShadowManager(config) if shadow else CacheManager(config)
    entries = Entries(kv(1) * 0.5, keys(3), True)
    m.store_root_many([0], keys(1), entries)
    m.store_root_many([1], keys(2), entries)
    stale = m.lookup_many([0], keys(1))
    m.store_recurrent_many([0], keys(3), entries)
    found = m.lookup_many([0, 1], keys(1, 2))
    other = CacheManager(config).lookup_many([0], keys(1))
    batch = m.gather_reserve(found, 2)
    found = m.lookup_many([0, 1], keys(1, 2))  # gather_reserve left it fresh; keep it so
    return Subject(m, found, stale, other, batch, entries)


def snapshot(subject: Subject) -> tuple[object, ...]:
    """What a refused call must leave as it was (the shadow's implementation side)."""
    m = subject.m.impl if isinstance(subject.m, ShadowManager) else subject.m
    kv_bits = m.slab.kv.view(torch.int32).clone()
    return (
        kv_bits,
        m.slab.lengths.clone(),
        m.stats(),
        [m.root_stats(e) for e in range(ENVS)],
        m.recurrent_stats(),
        [m.root_slot_keys(e) for e in range(ENVS)],
        m.recurrent_slot_keys(),
        m.generation,
        (m.search_budget, m.search_used),
    )


def same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    return all(
        torch.equal(x, y) if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) else x == y
        for x, y in zip(a, b)
    )


#: A bad call on its subject (a ``Subject``, a ``SlotPool``, a spec manager or nothing).
Call = Callable[[Any], object]


@dataclass(frozen=True)
class Row:
    entry: str
    mistake: str
    call: Call
    error: type[ZeroKVError]


def row(entry: str, mistake: str, error: type[ZeroKVError], call: Call) -> Row:
    return Row(entry, mistake, call, error)


def over_budget(s: Subject) -> object:
    s.m.begin_search(1)
    s.m.store_recurrent_many([0], keys(7), s.entries)
    return s.m.store_recurrent_many([0], keys(8), s.entries)  # the second store: refused


MANAGER_ROWS: tuple[Row, ...] = (
    # lookup_many
    row("lookup_many", "env id out of range", EnvIdError, lambda s: s.m.lookup_many([2], keys(1))),
    row("lookup_many", "negative env id", EnvIdError, lambda s: s.m.lookup_many([-1], keys(1))),
    row("lookup_many", "bool env id", EnvIdError, lambda s: s.m.lookup_many([True], keys(1))),
    row(
        "lookup_many",
        "float env-id tensor",
        EnvIdError,
        lambda s: s.m.lookup_many(torch.tensor([0.0]), keys(1)),
    ),
    row(
        "lookup_many",
        "bool env-id tensor",
        EnvIdError,
        lambda s: s.m.lookup_many(torch.tensor([True]), keys(1)),
    ),
    row("lookup_many", "a set of env ids", EnvIdError, lambda s: s.m.lookup_many({0}, keys(1))),
    row("lookup_many", "env ids a str", EnvIdError, lambda s: s.m.lookup_many("0", keys(1))),
    row(
        "lookup_many",
        "2-d env-id tensor",
        EnvIdError,
        lambda s: s.m.lookup_many(torch.zeros(1, 1, dtype=torch.int64), keys(1)),
    ),
    row(
        "lookup_many",
        "more env ids than keys",
        BatchError,
        lambda s: s.m.lookup_many([0, 1], keys(1)),
    ),
    row("lookup_many", "int32 keys", DTypeError, lambda s: s.m.lookup_many([0], keys(1).int())),
    row("lookup_many", "2-d keys", ShapeError, lambda s: s.m.lookup_many([0], keys(1).view(1, 1))),
    row("lookup_many", "keys a list", DTypeError, lambda s: s.m.lookup_many([0], [1])),
    row("lookup_many", "float keys", DTypeError, lambda s: s.m.lookup_many([0], torch.ones(1))),
    row(
        "lookup_many",
        "keys on the meta device",
        DeviceError,
        lambda s: s.m.lookup_many([0], keys(1).to("meta")),
    ),
    row(
        "lookup_many",
        "fingerprints of another length",
        BatchError,
        lambda s: s.m.lookup_many([0], keys(1), keys(1, 2)),
    ),
    row(
        "lookup_many",
        "int32 fingerprints",
        DTypeError,
        lambda s: s.m.lookup_many([0], keys(1), keys(1).int()),
    ),
    row(
        "lookup_many",
        "has_fingerprint without fingerprints",
        BatchError,
        lambda s: s.m.lookup_many([0], keys(1), None, torch.tensor([True])),
    ),
    row(
        "lookup_many",
        "int has_fingerprint",
        DTypeError,
        lambda s: s.m.lookup_many([0], keys(1), keys(1), torch.ones(1)),
    ),
    row(
        "lookup_many",
        "has_fingerprint of another shape",
        ShapeError,
        lambda s: s.m.lookup_many([0], keys(1), keys(1), torch.tensor([True, False])),
    ),
    row(
        "lookup_many",
        "unknown tiers",
        BatchError,
        lambda s: s.m.lookup_many([0], keys(1), tiers="roots"),
    ),
    # gather, gather_append, gather_reserve, read
    row("gather", "None for a lookup", BatchError, lambda s: s.m.gather(None)),
    row("gather", "a str for a lookup", BatchError, lambda s: s.m.gather("found")),
    row("gather", "a stale lookup", StaleLookupError, lambda s: s.m.gather(s.stale)),
    row("gather", "another manager's lookup", StaleLookupError, lambda s: s.m.gather(s.other)),
    row("gather", "negative width", BatchError, lambda s: s.m.gather(s.found, -1)),
    row("gather", "float width", BatchError, lambda s: s.m.gather(s.found, 1.5)),
    row("gather", "width 10**12", BatchError, lambda s: s.m.gather(s.found, 10**12)),
    row("gather", "narrower than the longest entry", BatchError, lambda s: s.m.gather(s.found, 2)),
    row(
        "gather",
        "an empty lookup",
        BatchError,
        lambda s: s.m.gather(s.m.lookup_many([], keys())),
    ),
    row("gather_reserve", "no tokens", BatchError, lambda s: s.m.gather_reserve(s.found, 0)),
    row(
        "gather_reserve",
        "more tokens than cl",
        BatchError,
        lambda s: s.m.gather_reserve(s.found, CL + 1),
    ),
    row(
        "gather_reserve",
        "a bool token count",
        BatchError,
        lambda s: s.m.gather_reserve(s.found, True),
    ),
    row(
        "gather_reserve",
        "a stale lookup",
        StaleLookupError,
        lambda s: s.m.gather_reserve(s.stale, 2),
    ),
    row(
        "gather_append",
        "new tokens of another shape",
        ShapeError,
        lambda s: s.m.gather_append(s.found, torch.zeros(L, 2, 1, H, 2, D)),
    ),
    row(
        "gather_append",
        "float64 new tokens",
        DTypeError,
        lambda s: s.m.gather_append(s.found, torch.zeros(L, 2, 2, H, 2, D, dtype=torch.float64)),
    ),
    row(
        "gather_append",
        "a stale lookup",
        StaleLookupError,
        lambda s: s.m.gather_append(s.stale, torch.zeros(L, 2, 1, H, 2, D)),
    ),
    row("read", "None for a lookup", BatchError, lambda s: s.m.read(None)),
    row("read", "a stale lookup", StaleLookupError, lambda s: s.m.read(s.stale)),
    # store_root_batch / store_recurrent_batch
    row(
        "store_root_batch",
        "not a Batch",
        BatchError,
        lambda s: s.m.store_root_batch([0, 1], keys(5, 6), kv(2), correction()),
    ),
    row(
        "store_root_batch",
        "not a Correction",
        BatchError,
        lambda s: s.m.store_root_batch([0, 1], keys(5, 6), s.batch, torch.zeros(1)),
    ),
    row(
        "store_root_batch",
        "correction with another layer count",
        BatchError,
        lambda s: s.m.store_root_batch([0, 1], keys(5, 6), s.batch, correction(layers=1)),
    ),
    row(
        "store_root_batch",
        "correction with another head count",
        ShapeError,
        lambda s: s.m.store_root_batch([0, 1], keys(5, 6), s.batch, correction(heads=1)),
    ),
    row(
        "store_root_batch",
        "float64 correction",
        DTypeError,
        lambda s: s.m.store_root_batch(
            [0, 1], keys(5, 6), s.batch, Correction(torch.zeros(L, 2, H, CL - 3, D).double())
        ),
    ),
    row(
        "store_root_batch",
        "a batch wider than cl",
        BatchError,
        lambda s: s.m.store_root_batch(
            [0], keys(5), Batch(kv(1, CL + 2), keys(CL + 1)), correction()
        ),
    ),
    row(
        "store_root_batch",
        "batch rows != keys",
        BatchError,
        lambda s: s.m.store_root_batch([0], keys(5), s.batch, correction()),
    ),
    row(
        "store_root_batch",
        "5-d batch kv",
        ShapeError,
        lambda s: s.m.store_root_batch([0], keys(5), Batch(kv(1)[0], keys(1)), correction()),
    ),
    row(
        "store_root_batch",
        "float64 batch",
        DTypeError,
        lambda s: s.m.store_root_batch(
            [0], keys(5), Batch(kv(1, dtype=torch.float64), keys(1)), correction()
        ),
    ),
    row(
        "store_root_batch",
        "int32 lengths",
        ShapeError,
        lambda s: s.m.store_root_batch([0], keys(5), Batch(kv(1), keys(1).int()), correction()),
    ),
    row(
        "store_root_batch",
        "a length beyond a narrow batch's width",
        BatchError,
        lambda s: s.m.store_root_batch([0], keys(5), Batch(kv(1, 4), keys(6)), correction()),
    ),
    row(
        "store_root_batch",
        "a negative length",
        BatchError,
        lambda s: s.m.store_root_batch([0], keys(5), Batch(kv(1), keys(-3)), correction()),
    ),
    row(
        "store_recurrent_batch",
        "a length of 2**40",
        BatchError,
        lambda s: s.m.store_recurrent_batch([0], keys(5), Batch(kv(1), keys(2**40)), correction()),
    ),
    row(
        "store_recurrent_batch",
        "env id out of range",
        EnvIdError,
        lambda s: s.m.store_recurrent_batch([0, 5], keys(5, 6), s.batch, correction()),
    ),
    row(
        "store_recurrent_batch",
        "a non-finite correction",
        BatchError,
        lambda s: s.m.store_recurrent_batch([0, 1], keys(5, 6), s.batch, _nan_after_construction()),
    ),
    row(
        "store_root_batch",
        "priorities on a FIFO pool",
        UnsupportedOperationError,
        lambda s: s.m.store_root_batch(
            [0, 1], keys(5, 6), s.batch, correction(), None, None, torch.zeros(2).double()
        ),
    ),
    row(
        "store_root_batch",
        "float32 priorities",
        DTypeError,
        lambda s: s.m.store_root_batch(
            [0, 1], keys(5, 6), s.batch, correction(), None, None, torch.zeros(2)
        ),
    ),
    row(
        "store_root_batch",
        "priorities of another length",
        BatchError,
        lambda s: s.m.store_root_batch(
            [0, 1], keys(5, 6), s.batch, correction(), None, None, torch.zeros(3).double()
        ),
    ),
    row(
        "store_root_batch",
        "has_priority without priorities",
        BatchError,
        lambda s: s.m.store_root_batch(
            [0, 1], keys(5, 6), s.batch, correction(), None, None, None, torch.ones(2).bool()
        ),
    ),
    row(
        "store_recurrent_many",
        "a store beyond the declared search",
        SearchCapacityError,
        over_budget,
    ),
    # store_root_many / store_recurrent_many
    row(
        "store_root_many",
        "not Entries",
        BatchError,
        lambda s: s.m.store_root_many([0], keys(5), kv(1)),
    ),
    row(
        "store_root_many",
        "entries narrower than cl",
        ShapeError,
        lambda s: s.m.store_root_many([0], keys(5), Entries(kv(1, 4), keys(1))),
    ),
    row(
        "store_root_many",
        "an entry length of -3",
        EntryError,
        lambda s: s.m.store_root_many([0], keys(5), Entries(kv(1), keys(-3))),
    ),
    row(
        "store_root_many",
        "an entry length of cl + 1",
        EntryError,
        lambda s: s.m.store_root_many([0], keys(5), Entries(kv(1), keys(CL + 1))),
    ),
    row(
        "store_recurrent_many",
        "an entry length of 2**40",
        EntryError,
        lambda s: s.m.store_recurrent_many([0], keys(5), Entries(kv(1), keys(2**40))),
    ),
    row(
        "store_recurrent_many",
        "entries rows != keys",
        BatchError,
        lambda s: s.m.store_recurrent_many([0, 1], keys(5, 6), s.entries),
    ),
    row(
        "store_recurrent_many",
        "float64 entries",
        DTypeError,
        lambda s: s.m.store_recurrent_many(
            [0], keys(5), Entries(kv(1, dtype=torch.float64), keys(1))
        ),
    ),
    # priorities, searches, clears, inspection
    row(
        "set_priority",
        "a FIFO pool",
        UnsupportedOperationError,
        lambda s: s.m.set_priority(Tier.ROOT, 0, 1, 1.0),
    ),
    row("set_priority", "Tier.MISS", BatchError, lambda s: s.m.set_priority(Tier.MISS, 0, 1, 1.0)),
    row(
        "set_priority",
        "env id out of range",
        EnvIdError,
        lambda s: s.m.set_priority(Tier.ROOT, 9, 1, 1.0),
    ),
    row(
        "set_priority",
        "a key past int64",
        KeyRangeError,
        lambda s: s.m.set_priority(Tier.ROOT, 0, TOO_BIG, 1.0),
    ),
    row("begin_search", "negative nodes", SearchCapacityError, lambda s: s.m.begin_search(-1)),
    row(
        "begin_search", "more nodes than slots", SearchCapacityError, lambda s: s.m.begin_search(5)
    ),
    row("begin_search", "float nodes", SearchCapacityError, lambda s: s.m.begin_search(1.5)),
    row("clear_env", "env id out of range", EnvIdError, lambda s: s.m.clear_env(9)),
    row("clear_env", "a str env id", EnvIdError, lambda s: s.m.clear_env("0")),
    row("root_stats", "env id out of range", EnvIdError, lambda s: s.m.root_stats(9)),
    row("root_slot_keys", "negative env id", EnvIdError, lambda s: s.m.root_slot_keys(-1)),
    row("entry_at", "Tier.MISS", BatchError, lambda s: s.m.entry_at(Tier.MISS, 0, 0)),
    row("entry_at", "a str tier", BatchError, lambda s: s.m.entry_at("root", 0, 0)),
    row("entry_at", "slot out of range", SlotRangeError, lambda s: s.m.entry_at(Tier.ROOT, 0, 9)),
    row("entry_at", "negative slot", SlotRangeError, lambda s: s.m.entry_at(Tier.RECURRENT, 0, -1)),
    row("entry_at", "env id out of range", EnvIdError, lambda s: s.m.entry_at(Tier.ROOT, 5, 0)),
)


def _nan_after_construction() -> Correction:
    """A correction built finite, then edited in place to hold a NaN."""
    c = correction()
    c.table[0, 0, 0, 0, 0] = float("nan")
    return c


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    name = str(request.param)
    with using_backend(name):
        yield name


@pytest.mark.parametrize("bad", MANAGER_ROWS, ids=lambda r: f"{r.entry}: {r.mistake}")
def test_manager_refuses_and_changes_nothing(bad: Row, backend: str) -> None:
    subject = build("manager", backend, shadow=False)
    before = snapshot(subject)
    with pytest.raises(bad.error) as raised:
        bad.call(subject)
    assert type(raised.value) is bad.error, f"{bad.mistake}: {raised.value!r}"
    if bad.call is not over_budget:  # that row makes valid stores before the refused one
        assert same(before, snapshot(subject)), f"{bad.entry}: {bad.mistake} changed the state"
    subject.m.check()


@pytest.mark.compiled
@pytest.mark.parametrize("bad", MANAGER_ROWS, ids=lambda r: f"{r.entry}: {r.mistake}")
def test_compiled_manager_refuses_and_changes_nothing(bad: Row) -> None:
    """The compiled path (``CacheConfig(compile=True)``): the same typed error and an
    unchanged state for every row of the manager's table."""
    with using_backend("device-exact"):
        subject = build("manager", COMPILED, shadow=False)
        before = snapshot(subject)
        with pytest.raises(bad.error) as raised:
            bad.call(subject)
        assert type(raised.value) is bad.error, f"{bad.mistake}: {raised.value!r}"
        if bad.call is not over_budget:
            assert same(before, snapshot(subject)), f"{bad.entry}: {bad.mistake} changed the state"


@pytest.mark.parametrize("bad", MANAGER_ROWS, ids=lambda r: f"{r.entry}: {r.mistake}")
def test_shadow_follows_the_manager_on_bad_input(bad: Row, backend: str) -> None:
    """The shadow raises the manager's typed error (not ``ShadowDivergence``) and stays in
    step: a valid lookup and gather afterwards compare clean."""
    subject = build("shadow", backend, shadow=True)
    before = snapshot(subject)
    with pytest.raises(ZeroKVError) as raised:
        bad.call(subject)
    assert not isinstance(raised.value, ShadowDivergence)
    assert type(raised.value) is bad.error, f"{bad.mistake}: {raised.value!r}"
    if bad.call is not over_budget:
        assert same(before, snapshot(subject))
    found = subject.m.lookup_many([0, 1], keys(1, 2))
    subject.m.gather(found)
    subject.m.check()


def test_every_manager_entry_point_has_a_row() -> None:
    """A public CacheManager method without a row in the table fails this test."""
    public = {
        name
        for name, member in inspect.getmembers(CacheManager, inspect.isfunction)
        if not name.startswith("_")
    }
    no_arguments = {
        "clear_all",
        "clear_roots",
        "clear_recurrent",
        "end_search",
        "reset_stats",
        "stats",
        "recurrent_stats",
        "recurrent_slot_keys",
        "recurrent_size",
        "root_sizes",
        "stored_entries",
        "check",
    }
    pure = {"keys_of"}  # its rows are in MODULE_ROWS (the key functions)
    covered = {r.entry for r in MANAGER_ROWS}
    missing = public - covered - no_arguments - pure
    assert not missing, f"CacheManager methods without a bad-input row: {sorted(missing)}"


# --------------------------------------------------------------------------- pools


def pool() -> SlotPool:
    p = SlotPool(3, num_layers=L, num_heads=H, head_dim=D, context_length=CL, num_pools=2)
    p.put_many(keys(1), Entries(kv(1), keys(2), True))
    return p


def pool_state(p: SlotPool) -> tuple[object, ...]:
    return (
        p.slab.kv.view(torch.int32).clone(),
        p.slab.lengths.clone(),
        [p.slot_keys(i) for i in range(2)],
        [p.stats(i) for i in range(2)],
    )


POOL_ROWS: tuple[Row, ...] = (
    row("SlotPool.get_many", "int32 keys", DTypeError, lambda p: p.get_many(keys(1).int())),
    row(
        "SlotPool.get_many",
        "pool id out of range",
        EnvIdError,
        lambda p: p.get_many(keys(1), None, None, [2]),
    ),
    row(
        "SlotPool.get_many",
        "pool ids of another length",
        ShapeError,
        lambda p: p.get_many(keys(1), None, None, [0, 1]),
    ),
    row(
        "SlotPool.peek_many",
        "fingerprints of another length",
        BatchError,
        lambda p: p.peek_many(keys(1), keys(1, 2)),
    ),
    row("SlotPool.put_many", "not Entries", BatchError, lambda p: p.put_many(keys(1), kv(1))),
    row(
        "SlotPool.put_many",
        "an entry length of 9",
        EntryError,
        lambda p: p.put_many(keys(1), Entries(kv(1), keys(9))),
    ),
    row(
        "SlotPool.put_many",
        "priorities on FIFO",
        UnsupportedOperationError,
        lambda p: p.put_many(keys(1), Entries(kv(1), keys(1)), None, None, torch.zeros(1).double()),
    ),
    row("SlotPool.evict", "an absent key", KeyNotFoundError, lambda p: p.evict(99)),
    row("SlotPool.evict", "a key past int64", KeyRangeError, lambda p: p.evict(TOO_BIG)),
    row("SlotPool.key_at", "slot out of range", SlotRangeError, lambda p: p.key_at(3)),
    row("SlotPool.slot_of", "an absent key", KeyNotFoundError, lambda p: p.slot_of(42)),
    row(
        "SlotPool.set_priority",
        "a FIFO pool",
        UnsupportedOperationError,
        lambda p: p.set_priority(1, 1.0),
    ),
    row("SlotPool.clear", "pool id out of range", InputError, lambda p: p.clear(5)),
    row("SlotPool.size", "a bool pool id", InputError, lambda p: p.size(True)),
)


@pytest.mark.parametrize("bad", POOL_ROWS, ids=lambda r: f"{r.entry}: {r.mistake}")
def test_pool_refuses_and_changes_nothing(bad: Row, backend: str) -> None:
    p = pool() if backend == "host" else _device_pool()
    before = pool_state(p)
    with pytest.raises(bad.error) as raised:
        bad.call(p)
    assert type(raised.value) is bad.error, f"{bad.mistake}: {raised.value!r}"
    assert same(before, pool_state(p))


def _device_pool() -> SlotPool:
    p = SlotPool(
        3, num_layers=L, num_heads=H, head_dim=D, context_length=CL, num_pools=2, index="device"
    )
    p.put_many(keys(1), Entries(kv(1), keys(2), True))
    return p


# --------------------------------------------------------------------------- types and functions


def config(**change: object) -> CacheConfig:
    fields: dict[str, object] = {
        "env_num": 1,
        "num_layers": 1,
        "num_heads": 1,
        "head_dim": 1,
        "context_length": CL,
        "root_capacity": 1,
        "recurrent_capacity": 1,
    }
    return CacheConfig(**(fields | change))  # type: ignore[arg-type]


def big_manager() -> object:
    return CacheManager(config(root_capacity=2**62))


NONE: Any = None
MODULE_ROWS: tuple[Row, ...] = (
    row("CacheConfig", "a bogus device", ConfigError, lambda _: config(device="bogus")),
    row("CacheConfig", "the meta device", ConfigError, lambda _: config(device="meta")),
    row("CacheConfig", "a device of another type", ConfigError, lambda _: config(device=3)),
    row("CacheConfig", "float8 K/V", ConfigError, lambda _: config(dtype=torch.float8_e4m3fn)),
    row("CacheConfig", "int32 K/V", ConfigError, lambda _: config(dtype=torch.int32)),
    row("CacheConfig", "capacity 0", ConfigError, lambda _: config(root_capacity=0)),
    row("CacheConfig", "context length 3", ConfigError, lambda _: config(context_length=3)),
    row("CacheConfig", "an unknown index backend", ConfigError, lambda _: config(index="gpu")),
    row("CacheManager", "capacity 2**62 (no memory)", ConfigError, lambda _: big_manager()),
    row(
        "CacheManager",
        "the spec's config",
        ConfigError,
        lambda _: CacheManager(config().spec_config()),  # type: ignore[arg-type]
    ),
    row(
        "Correction",
        "a NaN",
        BatchError,
        lambda _: Correction(torch.full((1, 2, 1, 5, 1), float("nan"))),
    ),
    row("Correction", "4-d", ShapeError, lambda _: Correction(torch.zeros(1, 2, 5, 1))),
    row("Correction", "not a tensor", DTypeError, lambda _: Correction(NONE)),
    row(
        "Batch.checked",
        "a length beyond the width",
        BatchError,
        lambda _: Batch.checked(kv(1, 4), keys(5)),
    ),
    row(
        "Batch.with_length",
        "a length beyond the width",
        BatchError,
        lambda _: Batch(kv(1, 4), keys(1)).with_length(torch.ones(1, dtype=torch.bool), 5),
    ),
    row(
        "Batch.with_length",
        "int row flags",
        DTypeError,
        lambda _: Batch(kv(1, 4), keys(1)).with_length(keys(1), 1),
    ),
    row(
        "Batch.with_length",
        "flags for another row count",
        ShapeError,
        lambda _: Batch(kv(1, 4), keys(1)).with_length(torch.ones(2, dtype=torch.bool), 1),
    ),
    row(
        "Batch.with_length",
        "a float length",
        BatchError,
        lambda _: Batch(kv(1, 4), keys(1)).with_length(torch.ones(1, dtype=torch.bool), 1.0),  # type: ignore[arg-type]
    ),
    row(
        "Entries.checked",
        "a length beyond cl",
        EntryError,
        lambda _: Entries.checked(kv(1), keys(9)),
    ),
    row(
        "split",
        "a length beyond the width",
        BatchError,
        lambda _: zerokv.split(Batch(kv(1, 4), keys(6)), CL),
    ),
    row(
        "store_rows",
        "a negative length",
        BatchError,
        lambda _: zerokv.store_rows(Batch(kv(1), keys(-1)), CL, correction()),
    ),
    row(
        "window",
        "an entry length of 9",
        EntryError,
        lambda _: zerokv.window(Entries(kv(1), keys(9)), correction()),
    ),
    row(
        "append",
        "new tokens of another shape",
        ShapeError,
        lambda _: zerokv.append(Batch(kv(1), keys(1)), torch.zeros(1), CL),
    ),
    row("assemble", "no rows", BatchError, lambda _: zerokv.assemble(Entries(kv(0), keys()))),
    row(
        "remove_registers",
        "more than the width",
        BatchError,
        lambda _: zerokv.remove_registers(Batch(kv(1), keys(1)), CL + 1),
    ),
    row(
        "zkv64_keys",
        "int latents",
        DTypeError,
        lambda _: zerokv.zkv64_keys(torch.zeros(2, 3, dtype=torch.int32)),
    ),
    row("zkv64_keys", "a 0-d latent", ShapeError, lambda _: zerokv.zkv64_keys(torch.tensor(1.0))),
    row("zkv64_keys", "not a tensor", DTypeError, lambda _: zerokv.zkv64_keys([1.0])),  # type: ignore[arg-type]
    row(
        "legacy_keys",
        "int latents",
        DTypeError,
        lambda _: zerokv.legacy_keys(torch.zeros(1, 2, dtype=torch.int64)),
    ),
    row(
        "weak_keys",
        "bool latents",
        DTypeError,
        lambda _: zerokv.weak_keys(torch.zeros(1, 2, dtype=torch.bool)),
    ),
    row(
        "ShadowManager",
        "neither a manager nor a config",
        ConfigError,
        lambda _: ShadowManager(NONE),
    ),
    # CacheConfig.legacy: a misspelt option, a size it computes itself.
    row(
        "CacheConfig.legacy",
        "a misspelt option",
        ConfigError,
        lambda _: CacheConfig.legacy(1, L, H, D, CL, 4, complie=True),
    ),
    row(
        "CacheConfig.legacy",
        "root_capacity (computed)",
        ConfigError,
        lambda _: CacheConfig.legacy(1, L, H, D, CL, 4, root_capacity=5),
    ),
    # zerokv.kernels
    row("Kernels", "compiled='yes'", ConfigError, lambda _: kernels.Kernels("yes")),  # type: ignore[arg-type]
    row("Kernels", "an unknown mode", ConfigError, lambda _: kernels.Kernels(True, "fast")),
    row(
        "Kernels",
        "a mode without compiling",
        ConfigError,
        lambda _: kernels.Kernels(False, "default"),
    ),
    row(
        "compiled_kernels",
        "an unknown mode",
        ConfigError,
        lambda _: kernels.compiled_kernels(torch.device("cpu"), "fast"),
    ),
    row(
        "compiled_kernels", "not a device", ConfigError, lambda _: kernels.compiled_kernels("bogus")
    ),
    # BatchView (LightZero's KeysValues over a zerokv batch)
    row("BatchView", "a window past the columns", BatchError, lambda _: BatchView(kv(1), 6, 9)),
    row("BatchView", "end before start", BatchError, lambda _: BatchView(kv(1), 6, 3)),
    row("BatchView", "a float start", BatchError, lambda _: BatchView(kv(1), 1.0, 3)),  # type: ignore[arg-type]
    row(
        "BatchView",
        "a 5-d batch",
        ShapeError,
        lambda _: BatchView(torch.zeros(1, 2, 1, 1, 8), 0, 1),
    ),
    # install (checked at install time, not when LightZero builds a manager)
    row("install", "a module name", ConfigError, lambda _: install("lzero")),  # type: ignore[arg-type]
    row(
        "install",
        "a bogus device",
        ConfigError,
        lambda _: install(_fake_lightzero(), device="nonsense"),
    ),
    row(
        "install",
        "an int dtype",
        ConfigError,
        lambda _: install(_fake_lightzero(), dtype=torch.int32),
    ),
    row("install", "shadow='yes'", ConfigError, lambda _: install(_fake_lightzero(), shadow="yes")),
    row(
        "install",
        "a negative window",
        ConfigError,
        lambda _: install(_fake_lightzero(), hit_rate_window=-1),
    ),
    row("install", "an unknown option", ConfigError, lambda _: install(_fake_lightzero(), speed=2)),
)


_FAKES: list[Any] = []


def _fake_lightzero() -> Any:
    """A stand-in for LightZero's kv_cache_manager module (its class must stay put)."""
    import types

    module = types.ModuleType("fake_kv_cache_manager")
    module.KVCacheManager = type("KVCacheManager", (), {})  # type: ignore[attr-defined]
    _FAKES.append((module, module.KVCacheManager))
    return module


def test_a_refused_install_leaves_the_module_as_it_was() -> None:
    _FAKES.clear()
    for bad in [r for r in MODULE_ROWS if r.entry == "install"]:
        with pytest.raises(ConfigError):
            bad.call(NONE)
    assert _FAKES and all(m.KVCacheManager is cls for m, cls in _FAKES)


# --------------------------------------------------------------------------- HitRateMonitor

MONITOR_ROWS: tuple[Row, ...] = (
    row(
        "HitRateMonitor.update", "a str count", ConfigError, lambda m: m.update("root", "10", 0, 0)
    ),
    row(
        "HitRateMonitor.update",
        "a negative count",
        ConfigError,
        lambda m: m.update("root", 10, -1, 0),
    ),
    row(
        "HitRateMonitor.update",
        "a float count",
        ConfigError,
        lambda m: m.update("root", 10, 0, 1.5),
    ),
    row(
        "HitRateMonitor.update", "a bool count", ConfigError, lambda m: m.update("root", True, 0, 0)
    ),
    row(
        "HitRateMonitor.update",
        "a tier that is not a str",
        ConfigError,
        lambda m: m.update(0, 1, 0, 0),
    ),
    row("HitRateMonitor", "window 0", ConfigError, lambda m: HitRateMonitor(0)),
)


@pytest.mark.parametrize("bad", MONITOR_ROWS, ids=lambda r: f"{r.entry}: {r.mistake}")
def test_monitor_refuses_and_changes_nothing(bad: Row) -> None:
    monitor = HitRateMonitor(4)
    monitor.update("root", 2, 1, 1)
    before = (dict(monitor._opened), set(monitor.warned))
    with pytest.raises(bad.error) as raised:
        bad.call(monitor)
    assert type(raised.value) is bad.error, f"{bad.mistake}: {raised.value!r}"
    assert (dict(monitor._opened), set(monitor.warned)) == before
    assert monitor.update("root", 6, 1, 2) is True  # the next valid update still counts


# --------------------------------------------------------------------------- SearchCache


def search_subject() -> tuple[SearchCache, int]:
    cache = SearchCache(SearchConfig(2, 2, 3, L, H, D, CL))
    batch = cache.fresh_roots(2, 1)
    batch.kv.fill_(1.0)
    cache.store_roots([0, 1], batch, correction())
    search = cache.begin_search([0, 1])
    parents = [NodeAddress(0, 0), NodeAddress(0, 1)]
    child = cache.gather_reserve(search, parents, 2)
    child.kv[..., -2:, :] = 2.0
    cache.store_nodes(
        search, parents, [NodeAddress(1, 0), NodeAddress(1, 1)], [1, 1], child, correction()
    )
    return cache, search


def _expand(cache: SearchCache, search: int, parents: list[NodeAddress], **change: Any) -> object:
    batch = cache.gather_reserve(search, parents, 2)
    args: dict[str, Any] = {
        "children": [NodeAddress(2, r) for r in range(len(parents))],
        "depths": [2] * len(parents),
        "batch": batch,
        "correction": correction(),
    } | change
    return cache.store_nodes(
        search, parents, args["children"], args["depths"], args["batch"], args["correction"]
    )


A00, A01, A10, A11 = NodeAddress(0, 0), NodeAddress(0, 1), NodeAddress(1, 0), NodeAddress(1, 1)
SEARCH_ROWS: tuple[Row, ...] = (
    row("begin_search", "no rows", NodeRangeError, lambda c: c[0].begin_search([])),
    row(
        "begin_search",
        "more rows than preallocated",
        NodeRangeError,
        lambda c: c[0].begin_search([0, 1, 0]),
    ),
    row("begin_search", "an env id out of range", EnvIdError, lambda c: c[0].begin_search([2])),
    row(
        "gather_reserve",
        "an earlier search",
        StaleSearchError,
        lambda c: c[0].gather_reserve(c[1] - 1, [A00], 2),
    ),
    row(
        "gather_reserve",
        "a bool search",
        StaleSearchError,
        lambda c: c[0].gather_reserve(True, [A00], 2),
    ),
    row(
        "gather_reserve",
        "an index past the simulations",
        NodeRangeError,
        lambda c: c[0].gather_reserve(c[1], [NodeAddress(4, 0)], 2),
    ),
    row(
        "gather_reserve",
        "a row past the search",
        NodeRangeError,
        lambda c: c[0].gather_reserve(c[1], [NodeAddress(0, 2)], 2),
    ),
    row(
        "gather_reserve",
        "not a NodeAddress",
        NodeRangeError,
        lambda c: c[0].gather_reserve(c[1], [(0, 0)], 2),
    ),
    row(
        "gather_reserve",
        "an unwritten parent",
        NodeMissingError,
        lambda c: c[0].gather_reserve(c[1], [NodeAddress(2, 0)], 2),
    ),
    row("gather_reserve", "no parents", BatchError, lambda c: c[0].gather_reserve(c[1], [], 2)),
    row(
        "gather_reserve", "0 new tokens", BatchError, lambda c: c[0].gather_reserve(c[1], [A10], 0)
    ),
    row(
        "store_nodes",
        "an occupied child",
        NodeOccupiedError,
        lambda c: _expand(c[0], c[1], [A00, A01], children=[A10, A11], depths=[1, 1]),
    ),
    row(
        "store_nodes",
        "one child twice",
        NodeOccupiedError,
        lambda c: _expand(c[0], c[1], [A10, A11], children=[NodeAddress(2, 0)] * 2),
    ),
    row(
        "store_nodes",
        "a child at index 0",
        NodeRangeError,
        lambda c: _expand(c[0], c[1], [A10, A11], children=[A00, A01]),
    ),
    row(
        "store_nodes",
        "a wrong depth",
        NodeDepthError,
        lambda c: _expand(c[0], c[1], [A10, A11], depths=[2, 3]),
    ),
    row(
        "store_nodes",
        "a bool depth",
        NodeRangeError,
        lambda c: _expand(c[0], c[1], [A10, A11], depths=[True, 2]),
    ),
    row(
        "store_nodes",
        "fewer depths",
        BatchError,
        lambda c: _expand(c[0], c[1], [A10, A11], depths=[2]),
    ),
    row(
        "store_nodes",
        "a batch of another row count",
        BatchError,
        lambda c: _expand(c[0], c[1], [A10, A11], batch=Batch(kv(3), keys(1, 1, 1))),
    ),
    row(
        "store_nodes",
        "a NaN correction",
        BatchError,
        lambda c: _expand(c[0], c[1], [A10, A11], correction=_nan_correction()),
    ),
    row(
        "store_roots",
        "an env twice",
        EnvIdError,
        lambda c: c[0].store_roots([0, 0], c[0].fresh_roots(2, 1), correction()),
    ),
    row("fresh_roots", "more rows than environments", BatchError, lambda c: c[0].fresh_roots(3, 1)),
    row("clear_env", "an env id out of range", EnvIdError, lambda c: c[0].clear_env(5)),
    row("SearchConfig", "0 simulations", ConfigError, lambda c: SearchConfig(2, 2, 0, L, H, D, CL)),
    row(
        "SearchConfig", "context length 3", ConfigError, lambda c: SearchConfig(2, 2, 3, L, H, D, 3)
    ),
)


def _nan_correction() -> Correction:
    bad = correction()
    bad.table[0, 0, 0, 0, 0] = float("nan")
    return bad


def _search_state(c: SearchCache) -> tuple[object, ...]:
    return (
        c.slab.kv.clone().view(torch.int32),
        c.slab.lengths.clone(),
        list(c.root_lengths),
        list(c.node_lengths),
        list(c.node_depths),
        c.search,
        c.env_ids,
        c.host_reads,
    )


@pytest.mark.parametrize("bad", SEARCH_ROWS, ids=lambda r: f"{r.entry}: {r.mistake}")
def test_search_cache_refuses_and_changes_nothing(bad: Row) -> None:
    subject = search_subject()
    before = _search_state(subject[0])
    with pytest.raises(bad.error) as raised:
        bad.call(subject)
    assert type(raised.value) is bad.error, f"{bad.mistake}: {raised.value!r}"
    after = _search_state(subject[0])
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])  # type: ignore[arg-type]
    assert before[2:] == after[2:]
    # The cache still works: the next expansion goes through.
    _expand(subject[0], subject[1], [A10, A11])


@pytest.mark.parametrize("bad", MODULE_ROWS, ids=lambda r: f"{r.entry}: {r.mistake}")
def test_types_and_functions_refuse(bad: Row) -> None:
    with pytest.raises(bad.error) as raised:
        bad.call(NONE)
    assert type(raised.value) is bad.error, f"{bad.mistake}: {raised.value!r}"


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_a_config_error_that_says_how_to_get_cuda() -> None:
    with pytest.raises(ConfigError, match="CUDA build of torch"):
        config(device="cuda")


# --------------------------------------------------------------------------- spec


def spec_manager() -> SpecManager:
    m = SpecManager(ManagerConfig(2, 1, CL, 2, 2))
    m.store_root(0, 1, spec_entry.Entry(((1.0,),), ((1.0,),)))
    return m


SPEC_ROWS: tuple[Row, ...] = (
    row("spec lookup_many", "a set of env ids", EnvIdError, lambda m: m.lookup_many({0}, [1])),
    row("spec lookup_many", "a float env id", EnvIdError, lambda m: m.lookup_many([0.0], [1])),
    row("spec lookup", "a key past int64", KeyRangeError, lambda m: m.lookup(0, TOO_BIG)),
    row("spec gather", "a stale lookup", StaleLookupError, lambda m: m.gather([_stale_lookup(m)])),
    row("spec gather", "not lookups", BatchError, lambda m: m.gather([None])),
    row(
        "spec store_root_batch",
        "not a Batch",
        BatchError,
        lambda m: m.store_root_batch([0], [1], NONE, spec_entry.Correction.zero(1, CL)),
    ),
    row(
        "spec store_root_batch",
        "a batch wider than cl",
        BatchError,
        lambda m: m.store_root_batch(
            [0],
            [1],
            spec_entry.Batch((((0.0,) * (CL + 1),),), (((0.0,) * (CL + 1),),), (1,), CL + 1),
            spec_entry.Correction.zero(1, CL),
        ),
    ),
    row(
        "spec store_root_many",
        "entries not a sequence",
        BatchError,
        lambda m: m.store_root_many([0], [1], NONE),
    ),
    row("spec zkv64_key", "bytes for a latent", InputError, lambda _: spec_keys.zkv64_key(b"..")),  # type: ignore[arg-type]
    row("spec weak_key", "bytes for a latent", InputError, lambda _: spec_keys.weak_key(b"..")),  # type: ignore[arg-type]
    row(
        "spec Batch.with_length",
        "a negative length",
        BatchError,
        lambda _: spec_entry.Batch((((0.0,),),), (((0.0,),),), (1,), 1).with_length([True], -1),
    ),
    row("spec ManagerConfig", "capacity 0", ConfigError, lambda _: ManagerConfig(1, 1, CL, 0, 1)),
)


def _stale_lookup(m: SpecManager) -> object:
    found = m.lookup(0, 1)
    m.clear_recurrent()
    return found


@pytest.mark.parametrize("bad", SPEC_ROWS, ids=lambda r: f"{r.entry}: {r.mistake}")
def test_spec_refuses_and_changes_nothing(bad: Row) -> None:
    m = spec_manager()
    with pytest.raises(bad.error) as raised:
        bad.call(m)
    assert type(raised.value) is bad.error, f"{bad.mistake}: {raised.value!r}"
    m.check()


def test_table_sizes() -> None:
    """The counts the closing note reports (and a guard against rows silently dropped)."""
    assert len(MANAGER_ROWS) >= 75
    assert len(POOL_ROWS) >= 14 and len(MODULE_ROWS) >= 31 and len(SPEC_ROWS) >= 12
