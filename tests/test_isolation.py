"""Nothing a caller receives from zerokv (or hands to it) lets it change a pool afterwards.

LightZero's old manager returned the stored object itself, and every stored entry once
aliased one shared object. Here every result is a fresh tensor: the test writes into all
of them, and into everything it passed in, and checks that the pools are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from zerokv import (
    Batch,
    CacheConfig,
    CacheManager,
    Correction,
    Entries,
    SlotPool,
    Tier,
    append,
)


def _scribble(*tensors: torch.Tensor) -> None:
    for t in tensors:
        if t.dtype.is_floating_point:
            t.add_(1000.0)
        elif t.dtype == torch.bool:
            t.logical_not_()
        else:
            t.add_(7)


def _snapshot(mgr: CacheManager) -> tuple[object, ...]:
    return (
        mgr.slab.kv.clone(),
        mgr.slab.lengths.clone(),
        [mgr.root_slot_keys(e) for e in range(mgr.config.env_num)],
        mgr.recurrent_slot_keys(),
        mgr.stats(),
        mgr.root_stats(),
        mgr.recurrent_stats(),
    )


def _same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    return all(
        torch.equal(x, y) if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) else x == y
        for x, y in zip(a, b, strict=True)
    )


def test_manager_results_and_inputs_are_private() -> None:
    cfg = CacheConfig(
        env_num=2,
        num_layers=2,
        num_heads=2,
        head_dim=3,
        context_length=8,
        root_capacity=4,
        recurrent_capacity=4,
    )
    mgr = CacheManager(cfg)
    gen = torch.Generator().manual_seed(0)
    env_ids = [0, 1]
    latents = torch.randn(2, 6, generator=gen)
    table = torch.randn(2, 2, 2, 5, 3, generator=gen)
    corr = Correction(table)
    keys, fps = mgr.keys_of(latents)
    new = torch.randn(2, 2, 2, 2, 2, 3, generator=gen)
    batch = append(mgr.gather(mgr.lookup_many(env_ids, keys, fps, tiers="root")), new, 8)
    put_root = mgr.store_root_batch(env_ids, keys, batch, corr, fps)
    child_keys, child_fps = mgr.keys_of(torch.randn(2, 6, generator=gen))
    put_rec = mgr.store_recurrent_batch(env_ids, child_keys, batch, corr, child_fps)
    found = mgr.lookup_many(env_ids, keys, fps)
    gathered = mgr.gather(found)
    fused = mgr.gather_append(found, new)
    reserved = mgr.gather_reserve(found, 2)
    read = mgr.read(found)
    stored = mgr.entry_at(Tier.ROOT, 0, int(found.slot[0]))
    assert int(found.tier[0]) == int(Tier.ROOT) and int(gathered.lengths[0]) == 2
    before = _snapshot(mgr)
    expected_rows = gathered.kv.clone()

    _scribble(
        latents,
        table,
        corr.padded,
        keys,
        fps,
        new,
        batch.kv,
        batch.lengths,
        put_root.slot,
        put_root.evicted,
        put_root.write,
        put_rec.slot,
        put_rec.write,
        child_keys,
        child_fps,
        found.tier,
        found.slot,
        found.global_slot,
        gathered.kv,
        gathered.lengths,
        fused.kv,
        fused.lengths,
        reserved.kv,
        reserved.lengths,
        read.kv,
        read.lengths,
        stored.kv,
        stored.lengths,
    )
    stats = mgr.stats()
    stats.hits += 100

    assert _same(before, _snapshot(mgr))
    again = mgr.gather(mgr.lookup_many(env_ids, keys - 7, fps - 7))  # undo the key scribble
    assert torch.equal(again.kv, expected_rows)


def test_pool_results_and_inputs_are_private() -> None:
    pool = SlotPool(3, num_layers=1, num_heads=1, head_dim=2, context_length=4)
    kv = torch.arange(2 * 2 * 4 * 2, dtype=torch.float32).view(1, 2, 2, 1, 4, 2)
    entries = Entries(kv, torch.tensor([4, 2]))
    keys = torch.tensor([10, 11])
    out = pool.put_many(keys, entries)
    got = pool.get_many(keys)
    batch = pool.gather(got)
    slab_before = pool.slab.kv.clone()
    _scribble(kv, entries.lengths, keys, out.slot, got.slot, got.status, batch.kv, batch.lengths)
    assert torch.equal(pool.slab.kv, slab_before)
    again = pool.gather(pool.get_many(torch.tensor([10, 11])))
    assert torch.equal(again.lengths, torch.tensor([4, 2]))
    assert pool.slot_keys() == [10, 11, None]


#: One layer, one head, d = 2, cl = 8; a recurrent ring of 8 slots.
RING = CacheConfig(
    env_num=1,
    num_layers=1,
    num_heads=1,
    head_dim=2,
    context_length=8,
    root_capacity=2,
    recurrent_capacity=8,
)


def _ring_at_slot_two(store: Callable[[list[int], torch.Tensor, int], object]) -> None:
    """Store keys 1..4 (4 rows), then 5..10 in pairs: the ring pointer ends at slot 2.
    ``store(envs, keys, rows)`` stores the first ``rows`` rows of a fixed batch."""
    store([0] * 4, torch.tensor([1, 2, 3, 4]), 4)
    for keys in ([5, 6], [7, 8], [9, 10]):
        store([0, 0], torch.tensor(keys), 2)


def test_store_of_a_batch_that_views_the_slab() -> None:
    """A batch built straight on the slab's memory (unusual, but possible) is stored out of
    place: the result equals storing a private copy of the same batch, even when the rows
    it writes overlap the rows it reads."""
    mgrs = [CacheManager(RING), CacheManager(RING)]
    gen = torch.Generator().manual_seed(3)
    kv = torch.randn(1, 2, 4, 1, 8, 2, generator=gen)
    lengths = torch.tensor([3, 3, 5, 5])
    corr = Correction(torch.randn(1, 2, 1, 5, 2, generator=gen))
    for mgr in mgrs:  # the same history in both

        def store(envs: list[int], keys: torch.Tensor, n: int, m: CacheManager = mgr) -> object:
            return m.store_recurrent_batch(envs, keys, Batch(kv[:, :, :n], lengths[:n]), corr)

        _ring_at_slot_two(store)
    base = mgrs[0].recurrent_base
    # Read slots 0..3, write (4 new keys) slots 2..5: each row lands where a later row
    # still has to be read from.
    view = Batch(mgrs[0].slab.kv[:, :, base : base + 4], lengths)
    private = Batch(mgrs[1].slab.kv[:, :, base : base + 4].clone(), lengths)
    new_keys = torch.tensor([11, 12, 13, 14])
    put = mgrs[0].store_recurrent_batch([0] * 4, new_keys, view, corr)
    assert put.slot.tolist() == [2, 3, 4, 5]
    mgrs[1].store_recurrent_batch([0] * 4, new_keys, private, corr)
    assert torch.equal(mgrs[0].slab.kv, mgrs[1].slab.kv)
    assert torch.equal(mgrs[0].slab.lengths, mgrs[1].slab.lengths)


def test_store_many_of_entries_that_view_the_slab() -> None:
    """``store_*_many`` of entries viewing the slab's own rows, overlapping the rows the
    store writes: the same result as storing a private copy."""
    gen = torch.Generator().manual_seed(4)
    kv = torch.randn(1, 2, 4, 1, 8, 2, generator=gen)
    lengths = torch.tensor([8, 8, 8, 8])
    results = []
    for private in (False, True):
        mgr = CacheManager(RING)

        def store_many(
            envs: list[int], keys: torch.Tensor, n: int, m: CacheManager = mgr
        ) -> object:
            return m.store_recurrent_many(envs, keys, Entries(kv[:, :, :n], lengths[:n]))

        _ring_at_slot_two(store_many)
        base = mgr.recurrent_base
        rows = mgr.slab.kv[:, :, base : base + 4]
        entries = Entries(rows.clone() if private else rows, lengths)
        mgr.store_recurrent_many([0] * 4, torch.tensor([11, 12, 13, 14]), entries)
        results.append(mgr.slab.kv.clone())
    assert torch.equal(results[0], results[1])
