"""Pool views: everything observable about a pool, from the spec and from the implementation.

``PoolState`` (``zerokv.index.PoolState``) is what an index observes about one pool: slot
keys, fingerprints, eviction order, size, statistics, priorities and the FIFO pointer.
``spec_pool_state`` builds the same value from a spec pool, so the two compare with
``==``. ``PoolView`` adds the stored values: decoded K/V (``zerokv.testing.encoding``) on
the implementation's side, the spec's entries on the other.

The implementation's side is read through the index protocol (``IndexBackend.view``), never
through a backend's internals, so a new backend is covered without touching this module.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch

from zerokv.index import PoolState
from zerokv.manager import CacheManager
from zerokv.pool import SlotPool
from zerokv.testing.encoding import Shape, decode_entries
from zerokv_spec.entry import Entry
from zerokv_spec.manager import CacheManager as SpecManager
from zerokv_spec.pool import FIFOPool, PriorityPool
from zerokv_spec.pool import SlotPool as SpecPool
from zerokv_spec.stats import PoolStats

__all__ = [
    "PoolView",
    "assert_same_manager",
    "assert_views",
    "impl_pool_view",
    "spec_pool_state",
    "spec_pool_view",
    "state_differences",
]


@dataclass(frozen=True)
class PoolView:
    """A pool's ``PoolState`` plus its stored values (None for an empty slot)."""

    state: PoolState
    values: tuple[Entry | None, ...]


def spec_pool_state(pool: SpecPool[Any]) -> PoolState:
    """The spec pool's ``PoolState``."""
    priorities: tuple[float | None, ...] = ()
    if isinstance(pool, PriorityPool):
        priorities = tuple(
            p if k is not None else None for p, k in zip(pool.priority, pool.slot_keys)
        )
    return PoolState(
        slot_keys=tuple(pool.slot_keys),
        fingerprints=tuple(pool.slot_fingerprints),
        eviction_order=tuple(pool.eviction_order()),
        size=len(pool),
        stats=PoolStats(**pool.stats.as_dict()),
        priorities=priorities,
        pointer=pool.next if isinstance(pool, FIFOPool) else None,
    )


def spec_pool_view(pool: SpecPool[Entry]) -> PoolView:
    return PoolView(spec_pool_state(pool), tuple(pool.slot_values))


def impl_pool_view(pool: SlotPool, pool_id: int, shape: Shape) -> PoolView:
    """The view of pool ``pool_id`` of an implementation ``SlotPool`` (decoded K/V)."""
    state = pool.index.view(pool_id)
    first = pool.region.base + pool_id * pool.capacity
    slots = torch.arange(first, first + pool.capacity, dtype=torch.int64, device=pool.device)
    stored = decode_entries(pool.slab.read(slots), shape)
    values = tuple(e if k is not None else None for e, k in zip(stored, state.slot_keys))
    return PoolView(state, values)


def state_differences(spec: PoolState, impl: PoolState) -> list[tuple[str, object, object]]:
    """``(field, spec value, implementation value)`` for every field that differs."""
    return [
        (f.name, getattr(spec, f.name), getattr(impl, f.name))
        for f in fields(PoolState)
        if getattr(spec, f.name) != getattr(impl, f.name)
    ]


def assert_views(spec: PoolView, impl: PoolView, what: str) -> None:
    """Raise ``AssertionError`` listing every field in which the two views differ."""
    diffs = state_differences(spec.state, impl.state)
    if spec.values != impl.values:
        diffs.append(("values", spec.values, impl.values))
    if not diffs:
        return
    lines = [f"{what}: spec and implementation differ"]
    lines += [f"  {name}:\n    spec {a}\n    impl {b}" for name, a, b in diffs]
    raise AssertionError("\n".join(lines))


def assert_same_manager(spec: SpecManager, impl: CacheManager, shape: Shape) -> None:
    """Statistics, every pool's complete view and the search budget of two managers."""
    assert impl.stats() == spec.stats, f"manager stats: spec {spec.stats} impl {impl.stats()}"
    assert impl.root_stats() == spec.root_stats()
    assert impl.recurrent_stats() == spec.recurrent.stats
    for env, pool in enumerate(spec.roots):
        assert impl.root_stats(env) == pool.stats
        assert impl.root_slot_keys(env) == pool.slot_keys
        view = impl_pool_view(impl.root, env, shape)
        assert_views(spec_pool_view(pool), view, f"root pool of env {env}")
    assert impl.recurrent_slot_keys() == spec.recurrent.slot_keys
    view = impl_pool_view(impl.recurrent, 0, shape)
    assert_views(spec_pool_view(spec.recurrent), view, "recurrent pool")
    assert (impl.search_budget, impl.search_used) == (spec.search_budget, spec.search_used)
    impl.check()
