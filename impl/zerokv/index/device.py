"""The device-resident index: ``zerokv_spec.pool`` semantics for a group of pools, in tensors.

All state lives in flat tensors on the cache's device, one element per slot of the region
(``Region``) plus one **trash** element at the end:

* ``keys``, ``occupied``, ``fingerprints``, ``has_fingerprint`` - the spec's ``slot_keys`` /
  ``slot_fingerprints`` (an empty slot holds key 0, no fingerprint);
* the spec's ``index`` (key -> slot) is not a separate structure: a lookup compares the
  key with all ``capacity`` slots of its pool in one vectorised comparison. For UniZero's
  pool sizes (hundreds to a few thousand slots, batches of tens of rows) this
  ``B x capacity`` comparison is a single small kernel with a static shape and no host
  synchronisation, and it cannot go stale: the bijection key <-> slot is the ``keys``
  tensor itself (the stale-mapping bug of LightZero cannot be expressed);
* ``stats`` - ``[num_pools, 8]`` counters in ``STATS_FIELDS`` order;
* the policy's bookkeeping (``FIFOIndex.next``, ``LRUIndex.last_use``,
  ``PriorityIndex.priority`` / ``inserted_at``), with the spec's names.

Batched operations take ``Rows`` and return ``[B]`` tensors; they never read a device
value on the host. Writes that a later row of the same batch supersedes are routed to
the trash element, so every scatter has distinct targets and the result is deterministic
on every device.

``put`` must equal the spec's left-to-right fold even when rows of one batch interact
(duplicate keys, a stored key that an earlier row evicts, more new keys than slots):

* FIFO (``fifo_put``, one kernel) resolves the whole batch at once. With ``n_i`` the number of
  new keys before row ``i`` (same pool), a key is present at row ``i`` iff
  ``n_i <= I + capacity``, where ``I`` is the insertion number of its latest insertion
  (``offset - capacity`` for a key stored before the batch, ``n_j`` for a new row
  ``j < i``). Row ``i`` is new iff its key is not present; this is a fixed point over the
  batch that is exact after ``B`` rounds (row ``i`` depends only on rows before it). On
  CUDA (and in compiled kernels) exactly ``B`` rounds run (no synchronisation); eager on
  the CPU the loop stops as soon as a round changes nothing. When no insertion can evict a
  key a later row looks for, ``fifo_plain`` gives the fold in closed form.
* ``LRUIndex`` and ``PriorityIndex`` fold the rows one at a time (``SlotIndex.resolve_put``),
  each row a handful of vectorised operations over the pool (no host synchronisation
  either). These policies are not on UniZero's hot path (LightZero uses FIFO).

Each policy is a small subclass overriding the hooks that differ (``victim``,
``on_hits``, ``on_put``, ``on_remove``, ``init_policy`` / ``reset_policy``,
``eviction_order``, ``check_policy``), as in the spec; FIFO overrides ``put`` itself.

The tensor work of ``lookup`` and of FIFO's ``put`` lives in the module's kernels at the
end (``lookup_tier``, ``fifo_put``: pure functions, see ``zerokv.kernels``), run eagerly
or compiled by ``self.kernels``.

Host-level queries (``size``, ``slot_of``, ``key_at``, ``eviction_order``, ``stats_of``,
``evict``) read device values: the spec's answer (or its exception) depends on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import torch

from zerokv import checks
from zerokv.errors import (
    BatchError,
    ContractViolation,
    InputError,
    KeyNotFoundError,
    SlotRangeError,
    UnsupportedOperationError,
)
from zerokv.index.base import (
    STATS_FIELDS,
    Found,
    Lookup,
    Placement,
    PoolState,
    PutResult,
    Region,
    TierLookup,
    check_priority_value,
)
from zerokv.kernels import EAGER, Kernels
from zerokv.keys import env_tags
from zerokv.rows import Rows
from zerokv_spec.keys import check_key, scoped_key
from zerokv_spec.pool import Policy
from zerokv_spec.stats import PoolStats

__all__ = [
    "DeviceFound",
    "FIFOIndex",
    "FifoCall",
    "LRUIndex",
    "PriorityIndex",
    "SlotIndex",
    "lookup_all",
]

_QUERIES, _HITS, _MISSES, _COLLISIONS, _INSERTS, _UPDATES, _EVICTIONS, _REMOVALS = range(8)
_NEG = -(1 << 62)  # "never inserted": below any insertion number, no overflow when shifted


@dataclass(frozen=True)
class _PoolRows:
    """Rows mapped onto this index's pools: pool id, key and fingerprint per row, and
    ``first`` (``pool_ids * capacity``: the flat element of each row's slot 0)."""

    pool_ids: torch.Tensor
    first: torch.Tensor
    keys: torch.Tensor
    fingerprints: torch.Tensor | None
    has_fingerprint: torch.Tensor | None


@dataclass(frozen=True)
class _RowMap:
    """What a tuple of env ids maps to in one index (device tensors, cached per tuple):
    each row's pool, its slot 0's flat element, and its env's key / fingerprint tags."""

    pool_ids: torch.Tensor
    first: torch.Tensor
    key_tag: torch.Tensor | None
    fingerprint_tag: torch.Tensor | None


@dataclass
class DeviceFound(Found):
    """A lookup in progress, in ``[B]`` tensors (``hit``: some tier hit the row;
    ``collided``: a tier saw a collision and no tier hit the row)."""

    tier: torch.Tensor
    slot: torch.Tensor
    collided: torch.Tensor
    global_slot: torch.Tensor
    hit: torch.Tensor

    def result(self, owner: int, generation: int) -> TierLookup:
        # ``collided`` is already false on every row some tier hit (``lookup_tier``).
        return TierLookup(self.tier, self.slot, self.collided, self.global_slot, owner, generation)


class SlotIndex:
    """Policy-independent state and operations (module docstring)."""

    policy = Policy.FIFO

    def __init__(
        self, region: Region, device: torch.device | str = "cpu", kernels: Kernels | None = None
    ) -> None:
        self.region = region
        #: What runs the tensor work of ``lookup`` and FIFO's ``put`` (eager or compiled).
        self.kernels = EAGER if kernels is None else kernels
        self.num_pools = region.num_pools
        self.capacity = region.capacity
        self.device = torch.device(device)
        n = region.slots + 1
        self.trash = n - 1
        self.keys = torch.zeros(n, dtype=torch.int64, device=self.device)
        self.fingerprints = torch.zeros(n, dtype=torch.int64, device=self.device)
        self.occupied = torch.zeros(n, dtype=torch.bool, device=self.device)
        self.has_fingerprint = torch.zeros(n, dtype=torch.bool, device=self.device)
        self.stats = torch.zeros(
            self.num_pools, len(STATS_FIELDS), dtype=torch.int64, device=self.device
        )
        #: Counts not yet added to ``stats`` (``_fold``): per batched get, the rows' pools
        #: their skipped (not queried; None: none) / hit / collision flags; per put, pools,
        #: inserted and evicted.
        #: Keeping the flags the operation computed anyway costs no tensor operation; a
        #: reader of the statistics (or the 32nd pending batch) folds them in at once.
        self._pending_gets: list[
            tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]
        ] = []
        self._pending_puts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._pair_cache: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = {}
        self._map_cache: dict[tuple[int, ...], _RowMap] = {}
        #: Rows stored into each pool since it was last cleared (host counts): a bound on
        #: the insertions there, which tells FIFO puts when the ring cannot wrap.
        self.stored_since_clear = [0] * self.num_pools
        self._tags: tuple[torch.Tensor, torch.Tensor] | None = None
        if region.bound_envs is not None:
            self._tags = env_tags(region.bound_envs, self.device)
        # The kernels' constants, made now: a first use on the hot path would copy them
        # to the device there (and count two more ops in that one call).
        for value in (-1, 0, region.zero):
            _scalar(value, self.device)
        # Views kept once (a view costs an operation each time it is made); the state
        # tensors are only ever written in place, so the views stay theirs.
        self._keys_grid = self._grid(self.keys)
        self._occupied_grid = self._grid(self.occupied)
        self._state = TierState(
            self._keys_grid, self._occupied_grid, self.fingerprints, self.has_fingerprint
        )
        self._trash = torch.tensor(self.trash, device=self.device)
        self._slab_trash = torch.tensor(region.trash, device=self.device)
        self.init_policy()
        self.kernels.pin(self.keys, self.fingerprints, self.occupied, self.has_fingerprint)
        self.kernels.pin(*self.policy_state())

    # ------------------------------------------------------------------ helpers
    def _grid(self, flat: torch.Tensor) -> torch.Tensor:
        """The ``[num_pools, capacity]`` view of a flat per-slot tensor (no trash)."""
        return flat[: self.trash].view(self.num_pools, self.capacity)

    def _pool_range(self, pool_id: int | None) -> slice:
        if pool_id is None:
            return slice(0, self.trash)
        self.check_pool_id(pool_id)
        return slice(pool_id * self.capacity, (pool_id + 1) * self.capacity)

    def _row_map(self, env_ids: tuple[int, ...]) -> _RowMap:
        """``_RowMap`` of ``env_ids`` (built on the host, cached: a batch's env ids rarely
        change, so the hot path spends no operation on pools or tags)."""
        found = self._map_cache.get(env_ids)
        if found is None:
            pools = (0,) * len(env_ids) if self.region.shared else env_ids
            pool_ids = torch.tensor(pools, dtype=torch.int64)
            first = pool_ids * self.capacity
            key_tag = fp_tag = None
            if self._tags is not None:
                envs = torch.tensor(env_ids, dtype=torch.int64).to(self.device)
                key_tag = self._tags[0].index_select(0, envs)
                fp_tag = self._tags[1].index_select(0, envs)
            found = _RowMap(pool_ids.to(self.device), first.to(self.device), key_tag, fp_tag)
            if len(self._map_cache) < 64:
                self._map_cache[env_ids] = found
        return found

    def _pool_rows(self, rows: Rows) -> _PoolRows:
        """Each row's pool (its env id, or 0 in a shared region) and its (bound) key."""
        mapped = self._row_map(rows.env_ids)
        keys, fps, has = bind_rows(
            rows.keys,
            rows.fingerprints,
            rows.has_fingerprint,
            mapped.key_tag,
            mapped.fingerprint_tag,
        )
        return _PoolRows(mapped.pool_ids, mapped.first, keys, fps, has)

    def _pool_key(self, env_id: int, key: int) -> tuple[int, int]:
        """The pool and stored key of one row (host values)."""
        check_key(key)
        if self.region.shared:
            pool_id = 0
            if self.region.bound_envs is not None:
                key = scoped_key(key, env_id)
        else:
            self.check_pool_id(env_id)
            pool_id = env_id
        return pool_id, key

    def check_pool_id(self, pool_id: int) -> None:
        if isinstance(pool_id, bool) or not isinstance(pool_id, int):
            raise InputError(f"pool id must be an int, got {type(pool_id).__name__}")
        if not 0 <= pool_id < self.num_pools:
            raise InputError(f"pool id must lie in [0, {self.num_pools}), got {pool_id}")

    def _match(
        self, pool_ids: torch.Tensor, keys: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row: is the key stored in its pool, and in which slot (``match_keys``)."""
        return match_keys(self._keys_grid, self._occupied_grid, pool_ids, keys)

    _FOLD_AFTER = 32

    def _fold(self) -> None:
        """Add the pending counts to ``stats`` (a few operations for any number pending)."""
        if self._pending_gets:
            pools = torch.cat([g[0] for g in self._pending_gets])
            hit = torch.cat([g[2] for g in self._pending_gets])
            collision = torch.cat([g[3] for g in self._pending_gets])
            queried = torch.cat(
                [torch.ones_like(g[2]) if g[1] is None else ~g[1] for g in self._pending_gets]
            )
            counts = torch.stack([queried, hit, queried & ~hit, collision], dim=1)
            self.stats[:, 0:4].index_add_(0, pools, counts.long())
            self._pending_gets.clear()
        if self._pending_puts:
            pools = torch.cat([p[0] for p in self._pending_puts])
            inserted = torch.cat([p[1] for p in self._pending_puts])
            evicted = torch.cat([p[2] for p in self._pending_puts])
            counts = torch.stack([inserted, ~inserted, evicted], dim=1)
            self.stats[:, 4:7].index_add_(0, pools, counts.long())
            self._pending_puts.clear()

    def _pend(self) -> None:
        if len(self._pending_gets) + len(self._pending_puts) >= self._FOLD_AFTER:
            self._fold()

    def _pools_of(self, rows: Rows) -> tuple[int, ...]:
        """Each row's pool as host ints (env ids are host values)."""
        return (0,) * rows.count if self.region.shared else rows.env_ids

    def _pairs(self, pools: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, B]`` masks of the same pool: ``[i, j]`` true when row ``j`` comes before
        (first mask) / after (second mask) row ``i``.

        Built from the host pool ids and cached per pattern: a batch's pools rarely change.
        """
        pairs = self._pair_cache.get(pools)
        if pairs is None:
            ids = torch.tensor(pools, dtype=torch.int64)
            idx = torch.arange(len(pools))
            same_pool = ids.unsqueeze(1) == ids.unsqueeze(0)
            before = same_pool & (idx.unsqueeze(0) < idx.unsqueeze(1))
            after = same_pool & (idx.unsqueeze(0) > idx.unsqueeze(1))
            pairs = (before.to(self.device), after.to(self.device))
            if len(self._pair_cache) < 64:
                self._pair_cache[pools] = pairs
        return pairs

    # ------------------------------------------------------------------ lookups
    def _get(self, rows: _PoolRows, count: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Hit, collision and slot per row of a batched ``get`` (``count``) or ``peek``."""
        tier_rows = TierRows(
            rows.pool_ids, rows.first, rows.keys, rows.fingerprints, rows.has_fingerprint
        )
        hit, collision, slot, _ = match_rows(self._state, tier_rows, None)
        if count:
            self._counted(rows.pool_ids, None, hit, collision, slot)
        return hit, collision, slot

    def _counted(
        self,
        pool_ids: torch.Tensor,
        skipped: torch.Tensor | None,
        hit: torch.Tensor,
        collision: torch.Tensor,
        slot: torch.Tensor,
    ) -> None:
        """A counted ``get``'s statistics (pending) and the policy's bookkeeping
        (``skipped``: rows not queried, because an earlier tier hit them; None)."""
        self._pending_gets.append((pool_ids, skipped, hit, collision))
        self._pend()
        self.on_hits(pool_ids, slot, hit)

    def get_many(self, rows: Rows, *, count: bool = True) -> Lookup:
        """Batched ``get`` (``count``) or ``peek`` (not ``count``)."""
        hit, collision, slot = self._get(self._pool_rows(rows), count)
        status = hit.long() + 2 * collision.long()
        return Lookup(status, torch.where(hit, slot, _constant(-1, slot)))

    def lookup(self, rows: Rows, found: Found | None) -> DeviceFound:
        """A tier of a manager lookup: counts and fills the rows ``found`` has not hit
        (one ``lookup_tier`` kernel; ``lookup_all`` looks up all tiers in one)."""
        mapped, call = self.tier_call(rows)
        prev = None
        if found is not None:
            assert isinstance(found, DeviceFound)
            prev = (found.tier, found.slot, found.collided, found.global_slot, found.hit)
        result, out = self.kernels(lookup_tier)(call, prev)
        self._counted(mapped.pool_ids, *out)
        return DeviceFound(*result)

    def tier_call(self, rows: Rows) -> tuple[_RowMap, TierCall]:
        """This index's part of a lookup of ``rows``, and the row map it used."""
        mapped = self._row_map(rows.env_ids)
        region = self.region
        call = TierCall(
            self._state,
            _tier_rows(mapped, rows),
            mapped.key_tag,
            mapped.fingerprint_tag,
            region.base,
            int(region.tier),
            region.zero,
        )
        return mapped, call

    def on_hits(self, pool_ids: torch.Tensor, slot: torch.Tensor, hit: torch.Tensor) -> None:
        """Policy bookkeeping for the hits of one batched ``get``."""

    # ------------------------------------------------------------------ puts
    def check_priorities(self, rows: Rows) -> None:
        if rows.priorities is not None:
            raise UnsupportedOperationError(f"{self.policy.value} pools take no priority")

    def put(self, rows: Rows) -> Placement:
        """Batched ``put``: the spec's left-to-right fold (module docstring)."""
        self.check_priorities(rows)
        pool_rows = self._pool_rows(rows)
        pools = self._pools_of(rows)
        before, later = self._pairs(pools)
        slot, evicted, evicted_mask, inserted = self.resolve_put(pool_rows, before, rows)
        flat = pool_rows.first + slot
        targets = write_keys(
            self.keys,
            self.fingerprints,
            self.has_fingerprint,
            self.occupied,
            superseded_rows(later, flat),
            flat,
            pool_rows.keys,
            pool_rows.fingerprints,
            pool_rows.has_fingerprint,
            self._trash,
            self._slab_trash,
            self.region.base,
        )
        return self._placed(
            rows, pools, pool_rows.pool_ids, (slot, evicted, evicted_mask, inserted), targets
        )

    def _placed(
        self,
        rows: Rows,
        pools: tuple[int, ...],
        pool_ids: torch.Tensor,
        resolved: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
        targets: torch.Tensor,
    ) -> Placement:
        """After a put's tensor work: host counts, pending statistics, contracts."""
        slot, evicted, evicted_mask, inserted = resolved
        for p in pools:
            self.stored_since_clear[p] += 1
        if rows.count:
            self._pending_puts.append((pool_ids, inserted, evicted_mask))
            self._pend()
        if checks.ENABLED:
            self.check()
        return Placement(PutResult(slot, evicted, evicted_mask, inserted, targets), None)

    def resolve_put(
        self, pool_rows: _PoolRows, before: torch.Tensor, rows: Rows
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Slots, evicted keys / mask and insert flags of a batch; updates the policy state.

        The sequential fold (LRU and PRIORITY); ``FIFOIndex`` resolves a batch at once.
        """
        pool_ids, keys = pool_rows.pool_ids, pool_rows.keys
        slots, evicted, masks, inserted = [], [], [], []
        for i in range(keys.shape[0]):
            p, k = pool_ids[i : i + 1], keys[i : i + 1]
            found, found_slot = self._match(p, k)
            slot = torch.where(found, found_slot, self.choose_slot(p))
            flat = p * self.capacity + slot
            ev_mask = ~found & self.occupied.index_select(0, flat)
            ev_key = torch.where(ev_mask, self.keys.index_select(0, flat), torch.zeros_like(k))
            # Later rows must see this row's write, so the key goes in now (data comes after).
            self.keys[flat] = k
            self.occupied[flat] = True
            self.on_put(p, flat, ~found, _row_priority(rows, i))
            slots.append(slot)
            evicted.append(ev_key)
            masks.append(ev_mask)
            inserted.append(~found)
        if not slots:
            empty = torch.zeros(0, dtype=torch.int64, device=self.device)
            return empty, empty, empty.bool(), empty.bool()
        return torch.cat(slots), torch.cat(evicted), torch.cat(masks), torch.cat(inserted)

    def choose_slot(self, pool_id: torch.Tensor) -> torch.Tensor:
        """``[1]``: where a new key goes (sequential policies): the lowest empty slot of
        pool ``pool_id``, else the policy's ``victim``."""
        empty = ~self._grid(self.occupied).index_select(0, pool_id)
        lowest_empty = empty.to(torch.int8).argmax(dim=1)
        return torch.where(empty.any(dim=1), lowest_empty, self.victim(pool_id))

    def victim(self, pool_id: torch.Tensor) -> torch.Tensor:
        """``[1]``: the slot whose key the policy evicts from a full pool."""
        raise NotImplementedError

    def on_put(
        self,
        pool_id: torch.Tensor,
        flat: torch.Tensor,
        inserted: torch.Tensor,
        priority: tuple[torch.Tensor, torch.Tensor | None] | None,
    ) -> None:
        """Policy bookkeeping after one row of a put (sequential policies); ``priority``
        is the row's ``(priority, has_priority)`` when priorities were given."""

    # ------------------------------------------------------------------ removal
    def evict(self, env_id: int, key: int) -> int:
        """Remove ``key`` (a row of env ``env_id``); returns its slot (reads the device)."""
        pool_id, stored = self._pool_key(env_id, key)
        slot = self._slot_in(pool_id, stored)
        flat = pool_id * self.capacity + slot
        self.keys[flat] = 0
        self.fingerprints[flat] = 0
        self.has_fingerprint[flat] = False
        self.occupied[flat] = False
        self.on_remove(flat)
        self._fold()
        self.stats[pool_id, _REMOVALS] += 1
        if checks.ENABLED:
            self.check()
        return slot

    def on_remove(self, flat: int) -> None:
        """Policy bookkeeping after an explicit removal."""

    def clear(self, pool_id: int | None = None) -> None:
        """Empty one pool (or all); statistics are kept."""
        rng = self._pool_range(pool_id)
        self.keys[rng] = 0
        self.fingerprints[rng] = 0
        self.has_fingerprint[rng] = False
        self.occupied[rng] = False
        for p in range(self.num_pools) if pool_id is None else (pool_id,):
            self.stored_since_clear[p] = 0
        self.reset_policy(pool_id)

    def init_policy(self) -> None:
        """Allocate the policy's bookkeeping (once: later resets write it in place, so its
        tensors keep their addresses, as CUDA graphs need)."""

    def policy_state(self) -> tuple[torch.Tensor, ...]:
        """The tensors of the policy's bookkeeping (kernels may update them in place)."""
        return ()

    def reset_policy(self, pool_id: int | None) -> None:
        """Reset the policy's bookkeeping of one pool (or all)."""

    def set_priority(self, env_id: int, key: int, priority: float) -> None:
        raise UnsupportedOperationError(f"{self.policy.value} pools have no priorities")

    def reset_stats(self) -> None:
        self._pending_gets.clear()
        self._pending_puts.clear()
        self.stats.zero_()

    # ------------------------------------------------------------------ host queries
    def size(self, pool_id: int) -> int:
        return int(self.occupied[self._pool_range(pool_id)].sum().item())

    def sizes(self) -> list[int]:
        """Entries stored in each pool (one device read)."""
        grid = self._grid(self.occupied).sum(dim=1)
        return [int(n) for n in grid.tolist()]

    def slot_of(self, env_id: int, key: int) -> int:
        """The slot holding ``key`` (a row of env ``env_id``)."""
        return self._slot_in(*self._pool_key(env_id, key))

    def _slot_in(self, pool_id: int, key: int) -> int:
        rng = self._pool_range(pool_id)
        hits = ((self.keys[rng] == key) & self.occupied[rng]).nonzero().flatten().tolist()
        if not hits:
            raise KeyNotFoundError(f"key {key} is not stored in this pool")
        return int(hits[0])

    def check_slot(self, slot: int) -> int:
        if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < self.capacity:
            raise SlotRangeError(f"slot must be an int in [0, {self.capacity}), got {slot!r}")
        return slot

    def key_at(self, pool_id: int, slot: int) -> int | None:
        self.check_pool_id(pool_id)
        self.check_slot(slot)
        flat = pool_id * self.capacity + slot
        return int(self.keys[flat].item()) if bool(self.occupied[flat].item()) else None

    def slot_keys(self, pool_id: int) -> list[int | None]:
        rng = self._pool_range(pool_id)
        keys, live = self.keys[rng].tolist(), self.occupied[rng].tolist()
        return [k if o else None for k, o in zip(keys, live)]

    def eviction_order(self, pool_id: int) -> list[int]:
        raise NotImplementedError

    def stats_of(self, pool_id: int | None = None) -> PoolStats:
        """One pool's statistics (or the sum over pools) as the spec's ``PoolStats``."""
        if pool_id is not None:
            self.check_pool_id(pool_id)
        self._fold()
        row = self.stats.sum(dim=0) if pool_id is None else self.stats[pool_id]
        return PoolStats(**dict(zip(STATS_FIELDS, (int(v) for v in row.tolist()))))

    def view(self, pool_id: int) -> PoolState:
        """Everything observable about pool ``pool_id`` (reads the device)."""
        rng = self._pool_range(pool_id)
        slot_keys = self.slot_keys(pool_id)
        values, given = self.fingerprints[rng].tolist(), self.has_fingerprint[rng].tolist()
        fingerprints = [f if g else None for f, g in zip(values, given)]
        return PoolState(
            slot_keys=tuple(slot_keys),
            fingerprints=tuple(
                f if k is not None else None for f, k in zip(fingerprints, slot_keys)
            ),
            eviction_order=tuple(self.eviction_order(pool_id)),
            size=self.size(pool_id),
            stats=self.stats_of(pool_id),
            priorities=self.slot_priorities(pool_id, slot_keys),
            pointer=self.pointer(pool_id),
        )

    def slot_priorities(
        self, pool_id: int, slot_keys: list[int | None]
    ) -> tuple[float | None, ...]:
        """Per slot priorities (PRIORITY pools; empty for the other policies)."""
        return ()

    def pointer(self, pool_id: int) -> int | None:
        """The FIFO ring pointer (FIFO pools; None for the other policies)."""
        return None

    # ------------------------------------------------------------------ contracts
    def check(self) -> None:
        """Runtime contracts (reads the device): bijection, ranges, statistics, policy."""
        for pool_id in range(self.num_pools):
            keys = [k for k in self.slot_keys(pool_id) if k is not None]
            if len(set(keys)) != len(keys):
                raise ContractViolation(f"pool {pool_id} stores a key twice: {keys}")
            rng = self._pool_range(pool_id)
            empty = ~self.occupied[rng]
            if bool((self.has_fingerprint[rng] & empty).any()) or bool(
                (self.keys[rng][empty] != 0).any()
            ):
                raise ContractViolation(f"pool {pool_id} has an empty slot that is not clean")
            self.stats_of(pool_id).check()
        self.check_policy()

    def check_policy(self) -> None:
        """The policy's own runtime contract."""


def _row_numbers(like: torch.Tensor) -> torch.Tensor:
    """``0 .. B-1`` on ``like``'s device (cached per size and device when eager)."""
    if torch.compiler.is_compiling():
        return torch.arange(int(like.shape[0]), device=like.device)
    return _arange(int(like.shape[0]), like.device)


@lru_cache(maxsize=64)
def _arange(n: int, device: torch.device) -> torch.Tensor:
    return torch.arange(n, device=device)


def _constant(value: int, like: torch.Tensor) -> torch.Tensor | int:
    """``value`` for ``torch.where``'s other branch: a cached 0-d tensor on ``like``'s
    device when eager (a Python number there costs a ``scalar_tensor`` operation per call),
    the number itself when compiling (inductor folds it)."""
    if torch.compiler.is_compiling():
        return value
    return _scalar(value, like.device)


@lru_cache(maxsize=64)
def _scalar(value: int, device: torch.device) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.int64, device=device)


def _earlier_same(pool_ids: torch.Tensor) -> torch.Tensor:
    """``[B, B]``: ``[i, j]`` true when row ``j`` comes before row ``i`` in the same pool."""
    idx = torch.arange(pool_ids.shape[0], device=pool_ids.device)
    same_pool = pool_ids.unsqueeze(1) == pool_ids.unsqueeze(0)
    return same_pool & (idx.unsqueeze(0) < idx.unsqueeze(1))


def _row_priority(rows: Rows, i: int) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """Row ``i``'s ``(priority, has_priority)`` as ``[1]`` tensors, or None."""
    if rows.priorities is None:
        return None
    has = None if rows.has_priority is None else rows.has_priority[i : i + 1]
    return rows.priorities[i : i + 1], has


def lookup_all(indexes: Sequence[SlotIndex], rows: Rows) -> DeviceFound:
    """A manager lookup of ``rows`` in ``indexes`` (its tiers, in order, sharing one
    ``Kernels``): one ``lookup_tiers`` kernel, then each index counts its own part."""
    kernels = indexes[0].kernels
    assert all(index.kernels is kernels for index in indexes), "one executor per manager"
    calls = [index.tier_call(rows) for index in indexes]
    result, outs = kernels(lookup_tiers)(tuple(call for _, call in calls))
    for index, (mapped, _), out in zip(indexes, calls, outs, strict=True):
        index._counted(mapped.pool_ids, *out)
    return DeviceFound(*result)


def _tier_rows(mapped: _RowMap, rows: Rows) -> TierRows:
    """``rows`` in this index (its row map): pools, first slots, keys, fingerprints."""
    return TierRows(
        mapped.pool_ids, mapped.first, rows.keys, rows.fingerprints, rows.has_fingerprint
    )


class FIFOIndex(SlotIndex):
    """LightZero's ring per pool; ``next[p]`` is pool ``p``'s pointer."""

    policy = Policy.FIFO

    def init_policy(self) -> None:
        self.next = torch.zeros(self.num_pools, dtype=torch.int64, device=self.device)

    def policy_state(self) -> tuple[torch.Tensor, ...]:
        return (self.next,)

    def reset_policy(self, pool_id: int | None) -> None:
        if pool_id is None:
            self.next.zero_()
        else:
            self.next[pool_id] = 0

    def put(self, rows: Rows) -> Placement:
        """The whole batch in one ``fifo_put`` kernel (module docstring)."""
        self.check_priorities(rows)
        if rows.count == 0:
            empty = torch.zeros(0, dtype=torch.int64, device=self.device)
            resolved = (empty, empty, empty.bool(), empty.bool())
            return self._placed(rows, (), empty, resolved, empty)
        call = self.put_call(rows)
        return self.put_done(rows, call, self.kernels(fifo_put)(*call))

    def put_call(self, rows: Rows) -> FifoCall:
        """The ``fifo_put`` arguments of a put of (checked, non-empty) ``rows``."""
        mapped = self._row_map(rows.env_ids)
        before, later = self._pairs(self._pools_of(rows))
        return FifoCall(
            self.keys,
            self.fingerprints,
            self.has_fingerprint,
            self.occupied,
            self.next,
            self._keys_grid,
            self._occupied_grid,
            _tier_rows(mapped, rows),
            mapped.key_tag,
            mapped.fingerprint_tag,
            before,
            later,
            self._trash,
            self._slab_trash,
            self.region.base,
            self.capacity,
            not self._cannot_interplay(rows),
            self.kernels.shortcuts(self.device),
        )

    def put_done(self, rows: Rows, call: FifoCall, result: FifoResult) -> Placement:
        """After the ``fifo_put`` kernel of ``call`` (``put_call(rows)``) gave ``result``."""
        slot, evicted, evicted_mask, inserted, targets = result
        resolved = (slot, evicted, evicted_mask, inserted)
        return self._placed(rows, self._pools_of(rows), call.rows.pool_ids, resolved, targets)

    def _cannot_interplay(self, rows: Rows) -> bool:
        """Whether no insertion of this batch can evict a key a later row looks for (host
        values only: the rows per pool and the rows stored since each pool's clear).

        Two cases where none can: a pool that gets at most one row, and a pool whose ring
        cannot wrap during the batch (its rows since the last clear - a bound on its
        insertions - plus this batch fit its capacity: every slot ahead of the pointer is
        empty). Then ``fifo_plain`` is the fold, in a fixed number of operations
        whatever B; otherwise ``fifo_fold`` (B rounds on CUDA)."""
        per_pool: dict[int, int] = {}
        for p in self._pools_of(rows):
            per_pool[p] = per_pool.get(p, 0) + 1
        since = self.stored_since_clear
        return all(r <= 1 or since[p] + r <= self.capacity for p, r in per_pool.items())

    def eviction_order(self, pool_id: int) -> list[int]:
        keys = self.slot_keys(pool_id)
        ptr = int(self.next[pool_id].item())
        ring = (keys[(ptr + i) % self.capacity] for i in range(self.capacity))
        return [k for k in ring if k is not None]

    def pointer(self, pool_id: int) -> int | None:
        return int(self.next[pool_id].item())

    def check_policy(self) -> None:
        if bool(((self.next < 0) | (self.next >= self.capacity)).any()):
            raise ContractViolation(f"ring pointer outside [0, {self.capacity}): {self.next}")


class _ClockedIndex(SlotIndex):
    """A policy that stamps slots with a per-pool clock: ``times`` per slot (-1 empty),
    ``clock`` per pool (the next stamp)."""

    def init_policy(self) -> None:
        self.times = torch.full((self.trash + 1,), -1, dtype=torch.int64, device=self.device)
        self.clock = torch.zeros(self.num_pools, dtype=torch.int64, device=self.device)

    def reset_policy(self, pool_id: int | None) -> None:
        if pool_id is None:
            self.times.fill_(-1)
            self.clock.zero_()
        else:
            self.times[self._pool_range(pool_id)] = -1
            self.clock[pool_id] = 0

    def on_remove(self, flat: int) -> None:
        self.times[flat] = -1

    def check_policy(self) -> None:
        for pool_id in range(self.num_pools):
            rng = self._pool_range(pool_id)
            live = self.occupied[rng]
            times = self.times[rng][live].tolist()
            clock = int(self.clock[pool_id].item())
            if len(set(times)) != len(times) or any(not 0 <= t < clock for t in times):
                raise ContractViolation(f"pool {pool_id}: times {times} vs clock {clock}")
            if bool((self.times[rng][~live] != -1).any()):
                raise ContractViolation(f"pool {pool_id}: an empty slot has a time")


class LRUIndex(_ClockedIndex):
    """Least recently used; ``times`` are the last uses (the spec's ``last_use``)."""

    policy = Policy.LRU

    @property
    def last_use(self) -> torch.Tensor:
        return self.times

    def on_hits(self, pool_ids: torch.Tensor, slot: torch.Tensor, hit: torch.Tensor) -> None:
        before = _earlier_same(pool_ids)
        rank = (before & hit.unsqueeze(0)).sum(dim=1)
        stamp = self.clock.index_select(0, pool_ids) + rank
        flat = torch.where(hit, pool_ids * self.capacity + slot, torch.full_like(slot, self.trash))
        self.times.scatter_reduce_(0, flat, stamp, reduce="amax")
        self.times[self.trash] = -1
        self.clock.index_add_(0, pool_ids, hit.long())

    def victim(self, pool_id: torch.Tensor) -> torch.Tensor:
        return self._grid(self.last_use).index_select(0, pool_id).argmin(dim=1)

    def on_put(
        self,
        pool_id: torch.Tensor,
        flat: torch.Tensor,
        inserted: torch.Tensor,
        priority: tuple[torch.Tensor, torch.Tensor | None] | None,
    ) -> None:
        self.times[flat] = self.clock.index_select(0, pool_id)
        self.clock.index_add_(0, pool_id, torch.ones_like(pool_id))

    def eviction_order(self, pool_id: int) -> list[int]:
        stamps = self.times[self._pool_range(pool_id)].tolist()
        live = [(stamps[s], k) for s, k in enumerate(self.slot_keys(pool_id)) if k is not None]
        return [k for _, k in sorted(live)]


class PriorityIndex(_ClockedIndex):
    """Lowest priority first, ties by earliest insertion (``times`` are the spec's
    ``inserted_at``)."""

    policy = Policy.PRIORITY
    default_priority = 0.0

    @property
    def inserted_at(self) -> torch.Tensor:
        return self.times

    def init_policy(self) -> None:
        super().init_policy()
        self.priority = torch.zeros(self.trash + 1, dtype=torch.float64, device=self.device)

    def reset_policy(self, pool_id: int | None) -> None:
        super().reset_policy(pool_id)
        if pool_id is None:
            self.priority.zero_()
        else:
            self.priority[self._pool_range(pool_id)] = 0.0

    def check_priorities(self, rows: Rows) -> None:
        if rows.priorities is not None and rows.priorities.dtype != torch.float64:
            raise BatchError(f"priorities must be float64, got {rows.priorities.dtype}")

    def victim(self, pool_id: torch.Tensor) -> torch.Tensor:
        prio = self._grid(self.priority).index_select(0, pool_id)
        lowest = prio == prio.amin(dim=1, keepdim=True)
        age = self._grid(self.inserted_at).index_select(0, pool_id)
        big = torch.full_like(age, torch.iinfo(torch.int64).max)
        return torch.where(lowest, age, big).argmin(dim=1)

    def on_put(
        self,
        pool_id: torch.Tensor,
        flat: torch.Tensor,
        inserted: torch.Tensor,
        priority: tuple[torch.Tensor, torch.Tensor | None] | None,
    ) -> None:
        clock = self.clock.index_select(0, pool_id)
        self.times[flat] = torch.where(inserted, clock, self.times.index_select(0, flat))
        self.clock.index_add_(0, pool_id, inserted.long())
        old = self.priority.index_select(0, flat)
        default = torch.full_like(old, self.default_priority)
        if priority is None:
            new = torch.where(inserted, default, old)
        else:
            value, has_priority = priority
            given = torch.ones_like(inserted) if has_priority is None else has_priority
            new = torch.where(given, value, torch.where(inserted, default, old))
        self.priority[flat] = new

    def on_remove(self, flat: int) -> None:
        super().on_remove(flat)
        self.priority[flat] = 0.0

    def set_priority(self, env_id: int, key: int, priority: float) -> None:
        check_priority_value(priority)
        pool_id, stored = self._pool_key(env_id, key)
        slot = self._slot_in(pool_id, stored)
        self.priority[pool_id * self.capacity + slot] = float(priority)

    def slot_priorities(
        self, pool_id: int, slot_keys: list[int | None]
    ) -> tuple[float | None, ...]:
        prios = self.priority[self._pool_range(pool_id)].tolist()
        return tuple(float(p) if k is not None else None for p, k in zip(prios, slot_keys))

    def eviction_order(self, pool_id: int) -> list[int]:
        rng = self._pool_range(pool_id)
        prio, age = self.priority[rng].tolist(), self.inserted_at[rng].tolist()
        live = [
            (prio[s], age[s], k) for s, k in enumerate(self.slot_keys(pool_id)) if k is not None
        ]
        return [k for _, _, k in sorted(live)]

    def check_policy(self) -> None:
        super().check_policy()
        if not bool(torch.isfinite(self.priority[: self.trash]).all()):
            raise ContractViolation("a priority is not finite")


# ---------------------------------------------------------------------- kernels
# The tensor work of the hot path, as pure functions of tensors and static Python values
# (ints, bools, None): they mutate only the state tensors they are handed, in place, and
# never read a device value on the host (except ``fifo_fold`` with ``early_stop``, which
# only the eager CPU path asks for). ``zerokv.kernels`` runs them eagerly or compiles them.


def bind_rows(
    keys: torch.Tensor,
    fingerprints: torch.Tensor | None,
    has_fingerprint: torch.Tensor | None,
    key_tag: torch.Tensor | None,
    fp_tag: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Rows' stored keys, fingerprints and fingerprint flags: unchanged in an unbound
    region; bound to their env (``zerokv.keys.scoped_keys`` / ``scoped_fingerprints``)
    where the tags are given, and then every row carries a fingerprint (a missing one
    counts as 0)."""
    if key_tag is None or fp_tag is None:
        return keys, fingerprints, has_fingerprint
    given = fingerprints
    if given is not None and has_fingerprint is not None:
        given = given * has_fingerprint
    bound = fp_tag if given is None else given ^ fp_tag
    return keys ^ key_tag, bound, None


def first_true(mask: torch.Tensor) -> torch.Tensor:
    """Per row of a ``[B, n]`` mask, the column of its first True (0 when none)."""
    if torch.compiler.is_compiling():
        # Not argmax here: inductor's vectorised CPU argmax over int8 returned an index out
        # of range now and then (torch 2.13, seen in the compiled equality test); a min over
        # column numbers is exact (``n % n`` is 0: a row with no True).
        n = int(mask.shape[1])
        columns = torch.arange(n, device=mask.device)
        return torch.where(mask, columns, n).amin(dim=1) % n
    return mask.to(torch.int8).argmax(dim=1)


def match_keys(
    keys_grid: torch.Tensor, occupied_grid: torch.Tensor, pool_ids: torch.Tensor, keys: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: is the key stored in its pool, and in which slot (when it is not: some
    slot in range, which every caller masks)."""
    stored = keys_grid.index_select(0, pool_ids)
    live = occupied_grid.index_select(0, pool_ids)
    match = (stored == keys.unsqueeze(1)) & live
    if torch.compiler.is_compiling():
        return match.any(dim=1), first_true(match)
    # A pool holds a key in at most one live slot (the bijection ``check`` asserts), so a
    # row has at most one True and the position of any maximum is its slot: one reduction
    # instead of any, a cast and argmax.
    found, slot = match.max(dim=1)
    return found, slot


class TierState(NamedTuple):
    """What a lookup reads of an index: keys and occupancy as ``[P, C]`` grids, and the
    flat per-slot fingerprints and their flags."""

    keys_grid: torch.Tensor
    occupied_grid: torch.Tensor
    fingerprints: torch.Tensor
    has_fingerprint: torch.Tensor


class TierRows(NamedTuple):
    """A batch's rows as one index sees them: each row's pool and its first flat slot,
    and its key, fingerprint and fingerprint flag (bound to the env or not)."""

    pool_ids: torch.Tensor
    first: torch.Tensor
    keys: torch.Tensor
    fingerprints: torch.Tensor | None
    has_fingerprint: torch.Tensor | None


def match_rows(
    state: TierState, rows: TierRows, skip: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hit, collision, slot and flat slot (``first + slot``) per (bound) row; rows in
    ``skip`` neither hit nor collide. A found key hits when its fingerprint verifies (or
    either side has none)."""
    keys_grid, occupied_grid, fingerprints, has_fingerprint = state
    pool_ids, first, keys, row_fps, row_has = rows
    found, slot = match_keys(keys_grid, occupied_grid, pool_ids, keys)
    if skip is not None:
        found = found > skip  # on bools: found and not skip, in one operation
    flat = first + slot
    if row_fps is None:
        return found, torch.zeros_like(found), slot, flat
    stored_fp = fingerprints.index_select(0, flat)
    verified = has_fingerprint.index_select(0, flat) & (stored_fp == row_fps)
    if row_has is not None:
        verified = verified | ~row_has
    hit, collision = found & verified, found > verified
    return hit, collision, slot, flat


class TierCall(NamedTuple):
    """One tier's part of a manager lookup: its index's state, the batch's rows in it,
    their env tags (None in an unbound region), and the static ints: the region's first
    slab slot (``base``), its tier code, and the slab slot a miss reports (``zero``)."""

    state: TierState
    rows: TierRows
    key_tag: torch.Tensor | None
    fp_tag: torch.Tensor | None
    base: int
    code: int
    zero: int


#: A lookup so far: tier, slot, collided, slab slot and hit per row.
FoundSoFar = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
#: One tier's own flags for its statistics and policy: skipped (None: no row), hit,
#: collision and slot per row.
TierOut = tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]


def lookup_tiers(calls: tuple[TierCall, ...]) -> tuple[FoundSoFar, tuple[TierOut, ...]]:
    """The kernel of a manager lookup: ``lookup_tier`` of each tier in turn (one compiled
    graph for all of them). Returns the lookup and each tier's own flags."""
    found: FoundSoFar | None = None
    outs: list[TierOut] = []
    for call in calls:
        found, out = lookup_tier(call, found)
        outs.append(out)
    assert found is not None, "a lookup visits at least one tier"
    return found, tuple(outs)


def lookup_tier(call: TierCall, prev: FoundSoFar | None) -> tuple[FoundSoFar, TierOut]:
    """One tier of a manager lookup: the rows ``prev`` (the lookup of the earlier tiers;
    None before the first) has not hit are looked up here.

    Returns the lookup so far, and this tier's own ``(skipped, hit, collision, slot)``
    for its statistics and policy (``skipped``: the rows an earlier tier hit; None)."""
    state, rows, key_tag, fp_tag, base, code, zero = call
    first = rows.first
    bound = TierRows(rows.pool_ids, first, *bind_rows(*rows[2:], key_tag, fp_tag))
    skip = None if prev is None else prev[4]
    hit, collision, slot, flat = match_rows(state, bound, skip)
    if base:  # static: the region's first slab slot (an add of 0 is still an operation)
        flat = flat + base
    # Comparisons on bools stand for "and not" (a > b is a & ~b): one operation, not two.
    if prev is None:
        found = (
            hit * code,
            torch.where(hit, slot, _constant(-1, slot)),
            collision,
            torch.where(hit, flat, _constant(zero, flat)),
            hit,
        )
    else:
        tier, prev_slot, collided, global_slot, prev_hit = prev
        # A collision counts only for a row that no tier hit: this tier's hits clear the
        # earlier tiers' collisions (an earlier tier's hit never collided; a tier's
        # collisions and hits are disjoint).
        found = (
            torch.add(tier, hit, alpha=code),
            torch.where(hit, slot, prev_slot),
            (collided > hit) | collision,
            torch.where(hit, flat, global_slot),
            prev_hit | hit,
        )
    return found, (skip, hit, collision, slot)


def write_keys(
    keys: torch.Tensor,
    fingerprints: torch.Tensor,
    has_fingerprint: torch.Tensor,
    occupied: torch.Tensor,
    superseded: torch.Tensor,
    flat: torch.Tensor,
    row_keys: torch.Tensor,
    row_fps: torch.Tensor | None,
    row_has: torch.Tensor | None,
    trash: torch.Tensor,
    slab_trash: torch.Tensor,
    base: int,
) -> torch.Tensor:
    """A put's index writes (key, fingerprint, occupied per row's flat slot ``flat``);
    returns each row's slab write target.

    A row that a later row of the batch overwrites (``superseded``, from
    ``superseded_rows``) writes to the trash element instead, so every scatter has
    distinct real targets (deterministic on CUDA). The trash element lies outside every
    pool, never read."""
    write = torch.where(superseded, trash, flat)
    keys.index_copy_(0, write, row_keys)
    if row_fps is None:
        fingerprints.index_fill_(0, write, 0)
        has_fingerprint.index_fill_(0, write, False)
    elif row_has is None:
        fingerprints.index_copy_(0, write, row_fps)
        has_fingerprint.index_fill_(0, write, True)
    else:
        fingerprints.index_copy_(0, write, row_fps * row_has)
        has_fingerprint.index_copy_(0, write, row_has)
    occupied.index_fill_(0, write, True)
    return torch.where(superseded, slab_trash, flat + base if base else flat)


def superseded_rows(later: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """Per row, whether a later row of the batch (``later``: same pool, after) has its
    flat slot."""
    # [i, j]: row j has row i's slot ([B] against [B, 1] broadcasts, no second view).
    return (later & (flat == flat.unsqueeze(1))).any(dim=1)


class FifoCall(NamedTuple):
    """``fifo_put``'s arguments, in its order (``FIFOIndex.put_call``)."""

    keys: torch.Tensor
    fingerprints: torch.Tensor
    has_fingerprint: torch.Tensor
    occupied: torch.Tensor
    next_slot: torch.Tensor
    keys_grid: torch.Tensor
    occupied_grid: torch.Tensor
    rows: TierRows
    key_tag: torch.Tensor | None
    fp_tag: torch.Tensor | None
    before: torch.Tensor
    later: torch.Tensor
    trash: torch.Tensor
    slab_trash: torch.Tensor
    base: int
    capacity: int
    fold: bool
    early_stop: bool


#: What ``fifo_put`` returns: slot, evicted key, evicted mask, insert flag and slab write
#: target per row.
FifoResult = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def fifo_put(
    keys: torch.Tensor,
    fingerprints: torch.Tensor,
    has_fingerprint: torch.Tensor,
    occupied: torch.Tensor,
    next_slot: torch.Tensor,
    keys_grid: torch.Tensor,
    occupied_grid: torch.Tensor,
    rows: TierRows,
    key_tag: torch.Tensor | None,
    fp_tag: torch.Tensor | None,
    before: torch.Tensor,
    later: torch.Tensor,
    trash: torch.Tensor,
    slab_trash: torch.Tensor,
    base: int,
    capacity: int,
    fold: bool,
    early_stop: bool,
) -> FifoResult:
    """A FIFO put of a whole (non-empty) batch: slot, evicted key, evicted mask and
    insert flag per row, and its slab write target; the keys, fingerprints, occupancy
    and ring pointers (``next_slot``) are updated in place.

    ``fold``: resolve with the general fixed point (``fifo_fold``) rather than the closed
    form (``fifo_plain``), which is exact only when no insertion of the batch can evict a
    key a later row looks for (``FIFOIndex._cannot_interplay``)."""
    pool_ids, first = rows.pool_ids, rows.first
    row_keys, row_fps, row_has = bind_rows(*rows[2:], key_tag, fp_tag)
    present, first_slot = match_keys(keys_grid, occupied_grid, pool_ids, row_keys)
    ptr = next_slot.index_select(0, pool_ids)
    same_key_before = before & (row_keys.unsqueeze(1) == row_keys)  # [i, j]: key j is key i
    resolve = fifo_fold if fold else fifo_plain
    batch = FifoBatch(
        keys,
        occupied,
        next_slot,
        pool_ids,
        first,
        row_keys,
        before,
        present,
        first_slot,
        ptr,
        same_key_before,
    )
    slot, evicted, evicted_mask, new, flat = resolve(batch, capacity, early_stop)
    # Without interplay (not ``fold``) two rows share a slot exactly when they share a key
    # (a new row's slot lies ahead of the pointer, unused since the clear): the rows with
    # a same-key row after them, one reduction of the matrix already formed.
    superseded = superseded_rows(later, flat) if fold else same_key_before.any(dim=0)
    targets = write_keys(
        keys,
        fingerprints,
        has_fingerprint,
        occupied,
        superseded,
        flat,
        row_keys,
        row_fps,
        row_has,
        trash,
        slab_trash,
        base,
    )
    return slot, evicted, evicted_mask, new, targets


class FifoBatch(NamedTuple):
    """What both FIFO resolutions (``fifo_plain``, ``fifo_fold``) read: the index's keys
    and occupancy, the ring pointers (``next_slot``, advanced in place), and per row its
    pool, its pool's first flat slot, its bound key, the same-pool rows before it, whether
    its key is stored and in which slot, its pool's pointer, and the same-key rows before
    it."""

    keys: torch.Tensor
    occupied: torch.Tensor
    next_slot: torch.Tensor
    pool_ids: torch.Tensor
    first: torch.Tensor
    row_keys: torch.Tensor
    before: torch.Tensor
    present: torch.Tensor
    first_slot: torch.Tensor
    ptr: torch.Tensor
    same_key_before: torch.Tensor


def fifo_plain(
    batch: FifoBatch, capacity: int, early_stop: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fold when no insertion of the batch can evict a key a later row looks for: a
    row is new iff its key is absent and not repeated earlier in the batch; new rows take
    consecutive slots from the pointer; a repeat takes its first occurrence's slot; a new
    row evicts its slot's occupant. Returns slot, evicted key, evicted mask, insert flag
    and flat slot per row."""
    keys, occupied, next_slot, pool_ids, first, _, before, present, first_slot, ptr, same = batch
    same_key_before = same
    if torch.compiler.is_compiling():
        repeat, earliest = same_key_before.any(dim=1), first_true(same_key_before)
    else:
        # torch.max over a dim returns the first maximal position: for a bool row, its
        # first True (0 when none, masked below), with the any in the same reduction.
        repeat, earliest = same_key_before.max(dim=1)
    new = ~(present | repeat)
    count = (before & new).sum(dim=1)  # new rows before, same pool ([B] acts as [1, B])
    new_slot = (ptr + count) % capacity
    source = torch.where(repeat, earliest, _row_numbers(earliest))
    slot = torch.where(present, first_slot, new_slot.index_select(0, source))
    flat = first + slot
    evicted_mask = new & occupied.index_select(0, flat)
    evicted = torch.where(evicted_mask, keys.index_select(0, flat), _constant(0, flat))
    next_slot.index_add_(0, pool_ids, new.long()).remainder_(capacity)
    return slot, evicted, evicted_mask, new, flat


def fifo_fold(
    batch: FifoBatch, capacity: int, early_stop: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fold in general: the fixed point of the module docstring, ``B`` rounds (or
    fewer with ``early_stop``: a host read that stops at the fixed point, CPU only); returns
    what ``fifo_plain`` returns."""
    keys, occupied, next_slot, pool_ids, first, row_keys, before, present, first_slot, ptr, same = (
        batch
    )
    same_key_before = same
    cap = capacity
    count_rows = row_keys.shape[0]
    # Insertion number of a key stored before the batch: its ring offset - capacity.
    initial = torch.where(present, (first_slot - ptr) % cap - cap, torch.full_like(ptr, _NEG))
    new = ~present & ~same_key_before.any(dim=1)

    def step(
        new: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        count = (before & new.unsqueeze(0)).sum(dim=1)
        prev = same_key_before & new.unsqueeze(0)
        has_prev = prev.any(dim=1)
        latest = torch.where(
            prev, count.unsqueeze(0), torch.full_like(prev, _NEG, dtype=torch.int64)
        )
        latest_n = latest.amax(dim=1)
        insertion = torch.where(has_prev, latest_n, initial)
        return count > insertion + cap, count, has_prev, latest_n

    for _ in range(count_rows):
        following = step(new)[0]
        if early_stop and torch.equal(following, new):
            break
        new = following
    _, count, has_prev, latest_n = step(new)
    slot = torch.where(
        new, (ptr + count) % cap, torch.where(has_prev, (ptr + latest_n) % cap, first_slot)
    )
    flat = first + slot
    # Who is evicted: after a full lap, the batch row inserted one lap earlier;
    # otherwise the slot's occupant from before the batch (no earlier row touched it).
    lapped = count >= cap
    lap_source = before & new.unsqueeze(0) & (count.unsqueeze(0) == (count - cap).unsqueeze(1))
    lap_key = torch.where(
        lap_source, row_keys.unsqueeze(0), torch.zeros_like(lap_source, dtype=torch.int64)
    ).sum(dim=1)
    evicted_mask = new & (lapped | occupied.index_select(0, flat))
    evicted = torch.where(lapped, lap_key, keys.index_select(0, flat))
    evicted = torch.where(evicted_mask, evicted, torch.zeros_like(evicted))
    advance = torch.zeros_like(next_slot).index_add_(0, pool_ids, new.long())
    next_slot.add_(advance).remainder_(cap)
    return slot, evicted, evicted_mask, new, flat
