"""Reliability: what a careful user found, each case pinned by a test that fails without its fix.

* out-of-range lengths are refused wherever they enter (no fabricated tokens);
* a lookup does not outlive the pools it describes (stale lookups are refused);
* two threads on one manager get ``ConcurrentUseError``, never wrong K/V;
* an in-place edit of a ``Correction`` takes effect (and is validated) at the next store;
* key functions accept zero-row latents.

Bad inputs that must raise a typed error and change nothing live in the standing table of
``tests/test_bad_inputs.py``; this module holds the behaviours behind them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
import torch

from zerokv import (
    Batch,
    BatchError,
    CacheConfig,
    CacheManager,
    ConcurrentUseError,
    Correction,
    Entries,
    EntryError,
    StaleLookupError,
    Tier,
    split,
)
from zerokv.keys import keys_and_fingerprints, legacy_keys, weak_keys, zkv64_keys
from zerokv.testing.backends import BACKENDS, backend

L, H, D, CL = 1, 1, 2, 8


@pytest.fixture(params=BACKENDS)
def manager(request: pytest.FixtureRequest) -> Iterator[CacheManager]:
    """A small manager on each index backend ("device-exact": the CUDA code path)."""
    with backend(str(request.param)) as index:
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
        yield CacheManager(config)


def state(mgr: CacheManager) -> tuple[object, ...]:
    """Everything a refused call must leave as it was."""
    return (
        mgr.slab.kv.clone(),
        mgr.slab.lengths.clone(),
        mgr.stats(),
        [mgr.root_stats(e) for e in range(2)],
        mgr.recurrent_stats(),
        [mgr.root_slot_keys(e) for e in range(2)],
        mgr.recurrent_slot_keys(),
        mgr.generation,
    )


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32) if t.dtype == torch.float32 else t


def assert_same_state(a: tuple[object, ...], b: tuple[object, ...]) -> None:
    for x, y in zip(a, b):
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            assert torch.equal(_bits(x), _bits(y))  # bit for bit (NaN-safe)
        else:
            assert x == y


def keys(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


def fill(mgr: CacheManager, env: int, key: int, value: float, size: int = 3) -> None:
    """Store a root entry of ``size`` tokens all equal to ``value`` under ``key``."""
    kv = torch.zeros(L, 2, 1, H, CL, D)
    kv[:, :, :, :, CL - size :, :] = value
    mgr.store_root_many([env], keys(key), Entries(kv, keys(size)))


# --------------------------------------------------------------------------- lengths


def test_a_narrow_batch_cannot_store_fabricated_tokens(manager: CacheManager) -> None:
    """The issue's example: a 4-wide batch with lengths [6] in a cl = 8 pool."""
    kv = torch.arange(4.0).repeat_interleave(D).view(1, 1, 1, 1, 4, D).expand(L, 2, 1, H, 4, D)
    batch = Batch(kv.contiguous(), keys(6))
    before = state(manager)
    with pytest.raises(BatchError, match=r"lengths must lie in \[0, 4\]"):
        manager.store_root_batch([0], keys(1), batch, Correction.zero(L, H, D, CL))
    assert_same_state(before, state(manager))


@pytest.mark.parametrize("length", [-3, CL + 1, 2**40])
@pytest.mark.parametrize("width", [4, CL])
def test_batch_lengths_outside_the_width_are_refused(
    manager: CacheManager, length: int, width: int
) -> None:
    batch = Batch(torch.ones(L, 2, 2, H, width, D), keys(1, length))
    before = state(manager)
    for store in (manager.store_root_batch, manager.store_recurrent_batch):
        with pytest.raises(BatchError):
            store([0, 1], keys(1, 2), batch, Correction.zero(L, H, D, CL))
    assert_same_state(before, state(manager))


@pytest.mark.parametrize("length", [-3, CL + 1, 2**40])
def test_entries_lengths_outside_the_context_are_refused(
    manager: CacheManager, length: int
) -> None:
    entries = Entries(torch.ones(L, 2, 1, H, CL, D), keys(length))
    before = state(manager)
    for store in (manager.store_root_many, manager.store_recurrent_many):
        with pytest.raises(EntryError):
            store([0], keys(1), entries)
    assert_same_state(before, state(manager))
    manager.check()


def test_split_refuses_lengths_outside_the_width() -> None:
    with pytest.raises(BatchError):
        split(Batch(torch.ones(L, 2, 1, H, 4, D), keys(6)), CL)


def test_values_zerokv_makes_are_verified_and_stored_without_a_read(
    manager: CacheManager,
) -> None:
    """The hot path's batch (gather_reserve) is verified: its store reads no length."""
    found = manager.lookup_many([0, 1], keys(5, 6))
    batch = manager.gather_reserve(found, 2)
    assert batch.verified and manager.read(found).verified
    assert not Batch(batch.kv, batch.lengths).verified  # built outside: checked at the store
    manager.store_root_batch([0, 1], keys(7, 8), batch, Correction.zero(L, H, D, CL))
    assert manager.root_sizes() == [1, 1]


# --------------------------------------------------------------------------- stale lookups


def test_a_lookup_does_not_outlive_a_clear_and_a_store(manager: CacheManager) -> None:
    """The issue's sequence: lookup, clear_env, a store of another key into the same slot,
    then gather: the lookup would now name the other key's data."""
    fill(manager, 0, 1, 1.0)
    found = manager.lookup_many([0], keys(1))
    assert found.tier.tolist() == [Tier.ROOT]
    manager.clear_env(0)
    fill(manager, 0, 2, 2.0)  # key 2 takes the slot key 1 had
    for use in (
        lambda: manager.gather(found),
        lambda: manager.gather_reserve(found, 2),
        lambda: manager.gather_append(found, torch.zeros(L, 2, 1, H, 2, D)),
        lambda: manager.read(found),
    ):
        with pytest.raises(StaleLookupError):
            use()
    again = manager.lookup_many([0], keys(1))  # a fresh lookup describes the pools as they are
    assert again.tier.tolist() == [Tier.MISS]


@pytest.mark.parametrize(
    "change",
    ["store_root", "store_recurrent", "clear_env", "clear_roots", "clear_recurrent", "clear_all"],
)
def test_every_store_and_clear_makes_earlier_lookups_stale(
    manager: CacheManager, change: str
) -> None:
    found = manager.lookup_many([0], keys(1))
    manager.gather(found)  # fresh: fine, and a gather changes nothing
    manager.lookup_many([1], keys(2))  # another lookup changes nothing either
    manager.gather(found)
    entries = Entries(torch.zeros(L, 2, 1, H, CL, D), keys(1), True)
    {
        "store_root": lambda: manager.store_root_many([0], keys(3), entries),
        "store_recurrent": lambda: manager.store_recurrent_many([0], keys(3), entries),
        "clear_env": lambda: manager.clear_env(1),
        "clear_roots": manager.clear_roots,
        "clear_recurrent": manager.clear_recurrent,
        "clear_all": manager.clear_all,
    }[change]()
    with pytest.raises(StaleLookupError):
        manager.gather(found)


def test_stores_and_clears_through_the_tiers_make_lookups_stale(manager: CacheManager) -> None:
    """The reliability report's bypass: clearing and storing through ``manager.root`` (a
    documented attribute) used to leave a lookup of key 1 gathering key 2's K/V."""
    fill(manager, 0, 1, 1.0)
    found = manager.lookup_many([0], keys(1))
    manager.root.clear(0)
    with pytest.raises(StaleLookupError):
        manager.gather(found)
    kv = torch.full((L, 2, 1, H, CL, D), 2.0)
    found = manager.lookup_many([0], keys(1))
    manager.root.put_many(keys(2), Entries(kv, keys(8)), pool_ids=[0])
    with pytest.raises(StaleLookupError):
        manager.gather(found)
    found = manager.lookup_many([0], keys(2))
    manager.recurrent.put_many(keys(7), Entries(kv, keys(8)))
    with pytest.raises(StaleLookupError):
        manager.gather(found)


def test_a_standalone_pool_refuses_a_stale_lookup() -> None:
    from zerokv import SlotPool

    pool = SlotPool(2, num_layers=L, num_heads=H, head_dim=D, context_length=CL)
    kv = torch.ones(L, 2, 1, H, CL, D)
    pool.put_many(keys(1), Entries(kv, keys(3)))
    found = pool.get_many(keys(1))
    assert pool.gather(found).lengths.tolist() == [3]
    pool.clear()
    pool.put_many(keys(2), Entries(kv * 2, keys(3)))
    with pytest.raises(StaleLookupError, match="pool changed"):
        pool.gather(found)
    with pytest.raises(StaleLookupError, match="pool changed"):
        pool.read(found)
    other = SlotPool(2, num_layers=L, num_heads=H, head_dim=D, context_length=CL)
    with pytest.raises(StaleLookupError, match="another pool"):
        other.gather(pool.get_many(keys(2)))


def test_a_store_of_no_rows_changes_nothing_and_stales_nothing(manager: CacheManager) -> None:
    found = manager.lookup_many([0], keys(1))
    empty = Entries(torch.zeros(L, 2, 0, H, CL, D), keys(), True)
    manager.store_root_many([], keys(), empty)
    manager.gather(found)


def test_a_lookup_of_another_manager_is_refused(manager: CacheManager) -> None:
    other = CacheManager(manager.config)
    found = other.lookup_many([0], keys(1))
    with pytest.raises(StaleLookupError, match="another manager"):
        manager.gather(found)


# --------------------------------------------------------------------------- threads


def test_a_second_thread_is_refused_while_the_first_is_inside(
    manager: CacheManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministic: thread A is held inside a store; thread B's calls are refused at
    once and change nothing; after A leaves, B's call goes through."""
    inside, release = threading.Event(), threading.Event()
    write = manager.slab.write

    def slow_write(slots: torch.Tensor, entries: Entries) -> None:
        inside.set()
        assert release.wait(10)
        write(slots, entries)

    monkeypatch.setattr(manager.slab, "write", slow_write)
    entries = Entries(torch.ones(L, 2, 1, H, CL, D), keys(2), True)
    worker = threading.Thread(target=manager.store_root_many, args=([0], keys(1), entries))
    worker.start()
    try:
        assert inside.wait(10)
        queries = manager.queries
        calls: list[Callable[[], object]] = [
            lambda: manager.lookup_many([0], keys(1)),
            lambda: manager.store_recurrent_many([0], keys(9), entries),
            manager.clear_all,
            manager.stats,
            # The tiers are guarded by the manager's lock (no bypass through them).
            lambda: manager.root.clear(0),
            lambda: manager.recurrent.put_many(keys(5), entries),
            lambda: manager.root.get_many(keys(1), pool_ids=[0]),
        ]
        for call in calls:
            with pytest.raises(ConcurrentUseError, match="another thread"):
                call()
        assert manager.queries == queries
    finally:
        release.set()
        worker.join(10)
    monkeypatch.undo()
    assert manager.lookup_many([0], keys(1)).tier.tolist() == [Tier.ROOT]
    assert manager.recurrent_size() == 0


def test_two_threads_hammering_one_manager_never_read_wrong_kv() -> None:
    """The issue's race (two threads, hits returning another key's K/V): every call either
    completes alone or is refused; every hit returns its own key's data."""
    config = CacheConfig(
        env_num=1,
        num_layers=L,
        num_heads=H,
        head_dim=D,
        context_length=CL,
        root_capacity=4,
        recurrent_capacity=4,
    )
    mgr = CacheManager(config)
    wrong: list[tuple[int, float]] = []
    refused = [0, 0]

    def worker(offset: int) -> None:
        for step in range(400):
            key = offset + step % 6
            try:
                found = mgr.lookup_many([0], keys(key))
                got = mgr.read(found)
                if bool(found.tier[0] == Tier.ROOT):
                    value = float(got.kv[0, 0, 0, 0, -1, 0])
                    if value != key:
                        wrong.append((key, value))
                else:
                    fill(mgr, 0, key, float(key))
            except (ConcurrentUseError, StaleLookupError):
                refused[offset // 100] += 1

    threads = [threading.Thread(target=worker, args=(o,)) for o in (0, 100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert wrong == []
    mgr.check()


# --------------------------------------------------------------------------- corrections


def test_an_edited_correction_takes_effect_at_the_next_store(manager: CacheManager) -> None:
    correction = Correction.zero(L, H, D, CL)
    batch = Batch.checked(torch.ones(L, 2, 1, H, CL, D), keys(CL - 1))  # windowed
    manager.store_root_batch([0], keys(1), batch, correction)
    correction.table.add_(100.0)  # the edit the issue saw ignored
    manager.store_root_batch([0], keys(2), batch, correction)
    first = manager.read(manager.lookup_many([0], keys(1)))
    second = manager.read(manager.lookup_many([0], keys(2)))
    assert float(first.kv[0, 0, 0, 0, -1, 0]) == 1.0
    assert float(second.kv[0, 0, 0, 0, -1, 0]) == 101.0


def test_an_edit_that_makes_a_correction_non_finite_is_refused(manager: CacheManager) -> None:
    correction = Correction.zero(L, H, D, CL)
    correction.table[0, 0, 0, 0, 0] = float("nan")
    batch = Batch.checked(torch.ones(L, 2, 1, H, CL, D), keys(2))
    before = state(manager)
    with pytest.raises(BatchError, match="finite"):
        manager.store_root_batch([0], keys(1), batch, correction)
    assert_same_state(before, state(manager))


# --------------------------------------------------------------------------- keys


@pytest.mark.parametrize("shape", [(0, 8), (0, 2, 3), (0,)])
def test_key_functions_accept_zero_rows(shape: tuple[int, ...]) -> None:
    latents = torch.zeros(shape)
    for fn in (zkv64_keys, weak_keys, legacy_keys):
        out = fn(latents)
        assert out.shape == (0,) and out.dtype == torch.int64
    k, f = keys_and_fingerprints(latents)
    assert k.shape == f.shape == (0,)


# --------------------------------------------------------------------------- copies


def _roundtrips() -> list[Callable[[object], object]]:
    import copy
    import io
    import pickle

    def saved(x: object) -> object:
        buffer = io.BytesIO()
        torch.save(x, buffer)
        buffer.seek(0)
        return torch.load(buffer, weights_only=False)

    return [copy.deepcopy, lambda x: pickle.loads(pickle.dumps(x)), saved]


@pytest.mark.parametrize("roundtrip", _roundtrips(), ids=["deepcopy", "pickle", "torch.save"])
def test_a_copied_manager_is_independent(
    manager: CacheManager, roundtrip: Callable[[object], object]
) -> None:
    """A copy has the same entries and statistics, its own lock and owner: the original's
    lookups are refused there, and clearing one leaves the other (it used to raise an
    untyped ``TypeError: cannot pickle '_thread.RLock'``)."""
    fill(manager, 0, 1, 1.0)
    copied = roundtrip(manager)
    assert isinstance(copied, CacheManager)
    assert copied.root_slot_keys(0) == manager.root_slot_keys(0)
    assert copied.stats() == manager.stats()
    with pytest.raises(StaleLookupError, match="another manager"):
        copied.gather(manager.lookup_many([0], keys(1)))
    found = copied.lookup_many([0], keys(1))
    assert torch.equal(
        copied.gather(found).kv, manager.gather(manager.lookup_many([0], keys(1))).kv
    )
    assert copied._busy is copied.root._busy is copied.recurrent._busy
    assert copied._busy is not manager._busy
    copied.clear_all()
    assert manager.root_sizes() == [1, 0] and copied.root_sizes() == [0, 0]


@pytest.mark.parametrize("roundtrip", _roundtrips(), ids=["deepcopy", "pickle", "torch.save"])
def test_a_copied_search_cache_is_independent(roundtrip: Callable[[object], object]) -> None:
    from zerokv import NodeAddress, SearchCache, SearchConfig

    cache = SearchCache(SearchConfig(2, 2, 3, L, H, D, CL))
    batch = cache.fresh_roots(2, 1)
    batch.kv.fill_(1.0)
    cache.store_roots([0, 1], batch, Correction.zero(L, H, D, CL))
    search = cache.begin_search([0, 1])
    copied = roundtrip(cache)
    assert isinstance(copied, SearchCache)
    assert copied.root_lengths == [1, 1]
    parents = [NodeAddress(0, 0), NodeAddress(0, 1)]
    got = copied.gather_reserve(search, parents, 2)
    want = cache.gather_reserve(search, parents, 2)
    assert torch.equal(got.kv, want.kv) and got.host_lengths == want.host_lengths
    copied.clear_roots()
    assert cache.root_lengths == [1, 1]
