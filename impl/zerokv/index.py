"""Device-resident slot indexes: ``zerokv_spec.pool`` semantics for a group of pools.

A ``SlotIndex`` holds ``num_pools`` independent pools of ``capacity`` slots each (the
manager's root tier is one index with ``env_num`` pools; its recurrent tier one with a
single pool). All state lives in flat tensors on the device, one element per slot plus one
**trash** element at the end:

* ``keys``, ``occupied``, ``fps``, ``has_fp`` - the spec's ``slot_keys`` /
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

Batched operations take ``pool_ids``, ``keys`` (and optional fingerprints) as ``[B]``
tensors and return ``[B]`` tensors; they never read a device value on the host. Writes
that a later row of the same batch supersedes are routed to the trash element, so every
scatter has distinct targets and the result is deterministic on every device.

``put`` must equal the spec's left-to-right fold even when rows of one batch interact
(duplicate keys, a stored key that an earlier row evicts, more new keys than slots):

* ``FIFOIndex.put`` resolves the whole batch at once. With ``n_i`` the number of new keys
  before row ``i`` (same pool), a key is present at row ``i`` iff ``n_i <= I + capacity``,
  where ``I`` is the insertion number of its latest insertion (``offset - capacity`` for a
  key stored before the batch, ``n_j`` for a new row ``j < i``). Row ``i`` is new iff its
  key is not present; this is a fixed point over the batch that is exact after ``B``
  rounds (row ``i`` depends only on rows before it). On CUDA exactly ``B`` rounds run
  (no synchronisation); on the CPU the loop stops as soon as a round changes nothing.
* ``LRUIndex`` and ``PriorityIndex`` fold the rows one at a time, each row a handful of
  vectorised operations over the pool (no host synchronisation either). These policies
  are not on UniZero's hot path (LightZero uses FIFO).

Host-level queries (``size``, ``slot_of``, ``key_at``, ``eviction_order``, ``stats_of``,
``evict``) read device values: the spec's answer (or its exception) depends on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from zerokv import checks
from zerokv.errors import (
    BatchError,
    ConfigError,
    ContractViolation,
    InputError,
    KeyNotFoundError,
    SlotRangeError,
    UnsupportedOperationError,
)
from zerokv_spec.pool import Policy
from zerokv_spec.stats import PoolStats

if TYPE_CHECKING:
    from zerokv.host_index import HostIndex

__all__ = [
    "STATS_FIELDS",
    "FIFOIndex",
    "LRUIndex",
    "LookupOutcome",
    "PriorityIndex",
    "PutOutcome",
    "SlotIndex",
    "make_index",
]

STATS_FIELDS = (
    "queries",
    "hits",
    "misses",
    "collisions",
    "inserts",
    "updates",
    "evictions",
    "removals",
)
_QUERIES, _HITS, _MISSES, _COLLISIONS, _INSERTS, _UPDATES, _EVICTIONS, _REMOVALS = range(8)
_NEG = -(1 << 62)  # "never inserted": below any insertion number, no overflow when shifted


@dataclass(frozen=True)
class LookupOutcome:
    """``[B]`` tensors: status (``LookupStatus`` codes) and slot (-1 unless a hit)."""

    status: torch.Tensor
    slot: torch.Tensor


@dataclass(frozen=True)
class PutOutcome:
    """``[B]`` tensors of a batched put (the spec's ``PutResult`` per row).

    ``write`` is the flat element each row's data goes to: its slot, or the trash element
    when a later row of the batch writes the same slot.
    """

    slot: torch.Tensor
    evicted: torch.Tensor
    evicted_mask: torch.Tensor
    inserted: torch.Tensor
    write: torch.Tensor


class SlotIndex:
    """Policy-independent state and operations (see the module docstring)."""

    policy = Policy.FIFO

    def __init__(self, num_pools: int, capacity: int, device: torch.device | str = "cpu") -> None:
        for name, value in (("num_pools", num_pools), ("capacity", capacity)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
        self.num_pools = num_pools
        self.capacity = capacity
        self.device = torch.device(device)
        n = num_pools * capacity + 1
        self.trash = n - 1
        self.keys = torch.zeros(n, dtype=torch.int64, device=self.device)
        self.fps = torch.zeros(n, dtype=torch.int64, device=self.device)
        self.occupied = torch.zeros(n, dtype=torch.bool, device=self.device)
        self.has_fp = torch.zeros(n, dtype=torch.bool, device=self.device)
        self.stats = torch.zeros(
            num_pools, len(STATS_FIELDS), dtype=torch.int64, device=self.device
        )
        self._arange_cache: dict[int, torch.Tensor] = {}
        self.reset_policy(None)

    # ------------------------------------------------------------------ helpers
    def _grid(self, flat: torch.Tensor) -> torch.Tensor:
        """The ``[num_pools, capacity]`` view of a flat per-slot tensor (no trash)."""
        return flat[: self.trash].view(self.num_pools, self.capacity)

    def _arange(self, n: int) -> torch.Tensor:
        t = self._arange_cache.get(n)
        if t is None:
            t = torch.arange(n, device=self.device)
            self._arange_cache[n] = t
        return t

    def _pool_range(self, pool_id: int | None) -> slice:
        if pool_id is None:
            return slice(0, self.trash)
        self.check_pool_id(pool_id)
        return slice(pool_id * self.capacity, (pool_id + 1) * self.capacity)

    def check_pool_id(self, pool_id: int) -> None:
        if isinstance(pool_id, bool) or not isinstance(pool_id, int):
            raise InputError(f"pool id must be an int, got {type(pool_id).__name__}")
        if not 0 <= pool_id < self.num_pools:
            raise InputError(f"pool id must lie in [0, {self.num_pools}), got {pool_id}")

    def _match(
        self, pool_ids: torch.Tensor, keys: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row: is the key stored in its pool, and in which slot (0 when not)."""
        stored = self._grid(self.keys).index_select(0, pool_ids)
        live = self._grid(self.occupied).index_select(0, pool_ids)
        match = (stored == keys.unsqueeze(1)) & live
        return match.any(dim=1), match.to(torch.int8).argmax(dim=1)

    def _count(self, pool_ids: torch.Tensor, columns: slice, counts: list[torch.Tensor]) -> None:
        self.stats[:, columns].index_add_(0, pool_ids, torch.stack(counts, dim=1).long())

    def _pairs(self, pool_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, B]``: same pool and earlier row (``[i, j]``: row j before row i), same pool."""
        idx = self._arange(pool_ids.shape[0])
        same_pool = pool_ids.unsqueeze(1) == pool_ids.unsqueeze(0)
        return same_pool & (idx.unsqueeze(0) < idx.unsqueeze(1)), same_pool

    def _last_writers(
        self, pool_ids: torch.Tensor, slot: torch.Tensor, same_pool: torch.Tensor
    ) -> torch.Tensor:
        """Flat write targets: a row's slot, or trash when a later row writes that slot."""
        idx = self._arange(pool_ids.shape[0])
        later = same_pool & (idx.unsqueeze(0) > idx.unsqueeze(1))
        superseded = (later & (slot.unsqueeze(0) == slot.unsqueeze(1))).any(dim=1)
        flat = pool_ids * self.capacity + slot
        return torch.where(superseded, torch.full_like(flat, self.trash), flat)

    # ------------------------------------------------------------------ lookups
    def lookup(
        self,
        pool_ids: torch.Tensor,
        keys: torch.Tensor,
        fps: torch.Tensor | None = None,
        has_fp: torch.Tensor | None = None,
        active: torch.Tensor | None = None,
        *,
        count: bool = True,
    ) -> LookupOutcome:
        """Batched ``get`` (``count``) or ``peek`` (not ``count``); inactive rows do nothing."""
        found, slot = self._match(pool_ids, keys)
        if fps is None:
            hit, collision = found, torch.zeros_like(found)
        else:
            flat = pool_ids * self.capacity + slot
            verified = self.has_fp.index_select(0, flat) & (self.fps.index_select(0, flat) == fps)
            if has_fp is not None:
                verified = verified | ~has_fp
            hit, collision = found & verified, found & ~verified
        queried = torch.ones_like(found) if active is None else active
        if active is not None:
            hit, collision = hit & active, collision & active
        if count:
            self._count(pool_ids, slice(0, 4), [queried, hit, queried & ~hit, collision])
            self.on_hits(pool_ids, slot, hit)
        status = hit.long() + 2 * collision.long()
        return LookupOutcome(status, torch.where(hit, slot, torch.full_like(slot, -1)))

    def on_hits(self, pool_ids: torch.Tensor, slot: torch.Tensor, hit: torch.Tensor) -> None:
        """Policy bookkeeping for the hits of one batched ``get``."""

    # ------------------------------------------------------------------ puts
    def check_priorities(self, priorities: torch.Tensor | None) -> None:
        if priorities is not None:
            raise UnsupportedOperationError(f"{self.policy.value} pools take no priority")

    def put(
        self,
        pool_ids: torch.Tensor,
        keys: torch.Tensor,
        fps: torch.Tensor | None = None,
        has_fp: torch.Tensor | None = None,
        priorities: torch.Tensor | None = None,
        has_priority: torch.Tensor | None = None,
    ) -> PutOutcome:
        """Batched ``put``: the spec's left-to-right fold (module docstring)."""
        self.check_priorities(priorities)
        rows = keys.shape[0]
        fps_t = torch.zeros_like(keys) if fps is None else fps
        has_t = torch.zeros_like(keys, dtype=torch.bool) if fps is None else has_fp
        if has_t is None:
            has_t = torch.ones_like(keys, dtype=torch.bool)
        before, same_pool = self._pairs(pool_ids)
        slot, evicted, evicted_mask, inserted = self.resolve_put(
            pool_ids, keys, before, priorities, has_priority
        )
        write = self._last_writers(pool_ids, slot, same_pool)
        self.keys[write] = keys
        self.fps[write] = torch.where(has_t, fps_t, torch.zeros_like(fps_t))
        self.has_fp[write] = has_t
        self.occupied[write] = True
        self._clean_trash()
        if rows:
            self._count(pool_ids, slice(4, 7), [inserted, ~inserted, evicted_mask])
        if checks.ENABLED:
            self.check()
        return PutOutcome(slot, evicted, evicted_mask, inserted, write)

    def resolve_put(
        self,
        pool_ids: torch.Tensor,
        keys: torch.Tensor,
        before: torch.Tensor,
        priorities: torch.Tensor | None,
        has_priority: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Slots, evicted keys / mask and insert flags of a batch; updates the policy state."""
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
            prio = None if priorities is None else priorities[i : i + 1]
            has_prio = None if has_priority is None else has_priority[i : i + 1]
            self.on_put(p, flat, ~found, prio, has_prio)
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
        priority: torch.Tensor | None,
        has_priority: torch.Tensor | None,
    ) -> None:
        """Policy bookkeeping after one row of a put (sequential policies)."""

    def _clean_trash(self) -> None:
        # The trash element absorbs superseded writes; keep it empty so that the
        # occupied/keys views never see it (it lies outside every pool's range anyway).
        self.occupied[self.trash] = False

    # ------------------------------------------------------------------ removal
    def evict(self, pool_id: int, key: int) -> int:
        """Remove ``key`` from pool ``pool_id``; returns its slot (reads the device)."""
        slot = self.slot_of(pool_id, key)
        flat = pool_id * self.capacity + slot
        self.keys[flat] = 0
        self.fps[flat] = 0
        self.has_fp[flat] = False
        self.occupied[flat] = False
        self.on_remove(flat)
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
        self.fps[rng] = 0
        self.has_fp[rng] = False
        self.occupied[rng] = False
        self.reset_policy(pool_id)

    def reset_policy(self, pool_id: int | None) -> None:
        """Reset the policy's bookkeeping of one pool (or all)."""

    def set_priority(self, pool_id: int, key: int, priority: float) -> None:
        raise UnsupportedOperationError(f"{self.policy.value} pools have no priorities")

    def reset_stats(self) -> None:
        self.stats.zero_()

    # ------------------------------------------------------------------ host queries
    def check_key(self, key: int) -> None:
        from zerokv_spec.keys import check_key

        check_key(key)

    def size(self, pool_id: int) -> int:
        return int(self.occupied[self._pool_range(pool_id)].sum().item())

    def sizes(self) -> list[int]:
        """Entries stored in each pool (one device read)."""
        grid = self._grid(self.occupied).sum(dim=1)
        return [int(n) for n in grid.tolist()]

    def pool_stats(self) -> list[PoolStats]:
        """Every pool's statistics (one device read)."""
        return [PoolStats(**dict(zip(STATS_FIELDS, row))) for row in self.stats.tolist()]

    def stored(self) -> int:
        """Entries stored in all pools (reads the device)."""
        return int(self.occupied[: self.trash].sum().item())

    def slot_of(self, pool_id: int, key: int) -> int:
        self.check_pool_id(pool_id)
        self.check_key(key)
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
        row = self.stats.sum(dim=0) if pool_id is None else self.stats[pool_id]
        return PoolStats(**dict(zip(STATS_FIELDS, (int(v) for v in row.tolist()))))

    # ------------------------------------------------------------------ contracts
    def check(self) -> None:
        """Runtime contracts (reads the device): bijection, ranges, statistics, policy."""
        for pool_id in range(self.num_pools):
            keys = [k for k in self.slot_keys(pool_id) if k is not None]
            if len(set(keys)) != len(keys):
                raise ContractViolation(f"pool {pool_id} stores a key twice: {keys}")
            rng = self._pool_range(pool_id)
            empty = ~self.occupied[rng]
            if bool((self.has_fp[rng] & empty).any()) or bool((self.keys[rng][empty] != 0).any()):
                raise ContractViolation(f"pool {pool_id} has an empty slot that is not clean")
            self.stats_of(pool_id).check()
        if bool(self.occupied[self.trash].item()):
            raise ContractViolation("the trash element is marked occupied")
        self.check_policy()

    def check_policy(self) -> None:
        """The policy's own runtime contract."""


class FIFOIndex(SlotIndex):
    """LightZero's ring per pool; ``next[p]`` is pool ``p``'s pointer."""

    policy = Policy.FIFO

    def reset_policy(self, pool_id: int | None) -> None:
        if pool_id is None:
            self.next = torch.zeros(self.num_pools, dtype=torch.int64, device=self.device)
        else:
            self.next[pool_id] = 0

    def resolve_put(
        self,
        pool_ids: torch.Tensor,
        keys: torch.Tensor,
        before: torch.Tensor,
        priorities: torch.Tensor | None,
        has_priority: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        cap = self.capacity
        rows = keys.shape[0]
        present, first_slot = self._match(pool_ids, keys)
        ptr = self.next.index_select(0, pool_ids)
        # Insertion number of a key stored before the batch: its ring offset - capacity.
        initial = torch.where(present, (first_slot - ptr) % cap - cap, torch.full_like(ptr, _NEG))
        same_key_before = before & (keys.unsqueeze(1) == keys.unsqueeze(0))
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
            latest_n = latest.amax(dim=1) if rows else count
            insertion = torch.where(has_prev, latest_n, initial)
            return count > insertion + cap, count, has_prev, latest_n

        on_cpu = checks.host_reads_are_free(self.device)
        for _ in range(rows):
            following = step(new)[0]
            # CPU: stop at the fixed point (a host read is free there); CUDA: B rounds.
            if on_cpu and torch.equal(following, new):
                break
            new = following
        _, count, has_prev, latest_n = step(new)
        slot = torch.where(
            new, (ptr + count) % cap, torch.where(has_prev, (ptr + latest_n) % cap, first_slot)
        )
        flat = pool_ids * cap + slot
        # Who is evicted: after a full lap, the batch row inserted one lap earlier;
        # otherwise the slot's occupant from before the batch (no earlier row touched it).
        lapped = count >= cap
        lap_source = before & new.unsqueeze(0) & (count.unsqueeze(0) == (count - cap).unsqueeze(1))
        lap_key = torch.where(
            lap_source, keys.unsqueeze(0), torch.zeros_like(lap_source, dtype=torch.int64)
        ).sum(dim=1)
        evicted_mask = new & (lapped | self.occupied.index_select(0, flat))
        evicted = torch.where(lapped, lap_key, self.keys.index_select(0, flat))
        evicted = torch.where(evicted_mask, evicted, torch.zeros_like(evicted))
        advance = torch.zeros_like(self.next).index_add_(0, pool_ids, new.long())
        self.next = (self.next + advance) % cap
        return slot, evicted, evicted_mask, new

    def eviction_order(self, pool_id: int) -> list[int]:
        keys = self.slot_keys(pool_id)
        ptr = int(self.next[pool_id].item())
        ring = (keys[(ptr + i) % self.capacity] for i in range(self.capacity))
        return [k for k in ring if k is not None]

    def check_policy(self) -> None:
        if bool(((self.next < 0) | (self.next >= self.capacity)).any()):
            raise ContractViolation(f"ring pointer outside [0, {self.capacity}): {self.next}")


class LRUIndex(SlotIndex):
    """Least recently used; ``last_use`` per slot (-1 empty), ``clock`` per pool."""

    policy = Policy.LRU

    def reset_policy(self, pool_id: int | None) -> None:
        if pool_id is None:
            self.last_use = torch.full((self.trash + 1,), -1, dtype=torch.int64, device=self.device)
            self.clock = torch.zeros(self.num_pools, dtype=torch.int64, device=self.device)
        else:
            self.last_use[self._pool_range(pool_id)] = -1
            self.clock[pool_id] = 0

    def on_hits(self, pool_ids: torch.Tensor, slot: torch.Tensor, hit: torch.Tensor) -> None:
        before, _ = self._pairs(pool_ids)
        rank = (before & hit.unsqueeze(0)).sum(dim=1)
        stamp = self.clock.index_select(0, pool_ids) + rank
        flat = torch.where(hit, pool_ids * self.capacity + slot, torch.full_like(slot, self.trash))
        self.last_use.scatter_reduce_(0, flat, stamp, reduce="amax")
        self.last_use[self.trash] = -1
        self.clock.index_add_(0, pool_ids, hit.long())

    def victim(self, pool_id: torch.Tensor) -> torch.Tensor:
        return self._grid(self.last_use).index_select(0, pool_id).argmin(dim=1)

    def on_put(
        self,
        pool_id: torch.Tensor,
        flat: torch.Tensor,
        inserted: torch.Tensor,
        priority: torch.Tensor | None,
        has_priority: torch.Tensor | None,
    ) -> None:
        self.last_use[flat] = self.clock.index_select(0, pool_id)
        self.clock.index_add_(0, pool_id, torch.ones_like(pool_id))

    def on_remove(self, flat: int) -> None:
        self.last_use[flat] = -1

    def eviction_order(self, pool_id: int) -> list[int]:
        rng = self._pool_range(pool_id)
        stamps = self.last_use[rng].tolist()
        live = [(stamps[s], k) for s, k in enumerate(self.slot_keys(pool_id)) if k is not None]
        return [k for _, k in sorted(live)]

    def check_policy(self) -> None:
        for pool_id in range(self.num_pools):
            rng = self._pool_range(pool_id)
            live = self.occupied[rng]
            stamps = self.last_use[rng][live].tolist()
            clock = int(self.clock[pool_id].item())
            if len(set(stamps)) != len(stamps) or any(not 0 <= t < clock for t in stamps):
                raise ContractViolation(f"pool {pool_id}: recency {stamps} vs clock {clock}")
            if bool((self.last_use[rng][~live] != -1).any()):
                raise ContractViolation(f"pool {pool_id}: an empty slot has a recency time")


class PriorityIndex(SlotIndex):
    """Lowest priority first, ties by earliest insertion (``inserted_at``, -1 empty)."""

    policy = Policy.PRIORITY
    default_priority = 0.0

    def reset_policy(self, pool_id: int | None) -> None:
        if pool_id is None:
            n = self.trash + 1
            self.priority = torch.zeros(n, dtype=torch.float64, device=self.device)
            self.inserted_at = torch.full((n,), -1, dtype=torch.int64, device=self.device)
            self.clock = torch.zeros(self.num_pools, dtype=torch.int64, device=self.device)
        else:
            rng = self._pool_range(pool_id)
            self.priority[rng] = 0.0
            self.inserted_at[rng] = -1
            self.clock[pool_id] = 0

    def check_priorities(self, priorities: torch.Tensor | None) -> None:
        if priorities is not None and priorities.dtype != torch.float64:
            raise BatchError(f"priorities must be float64, got {priorities.dtype}")

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
        priority: torch.Tensor | None,
        has_priority: torch.Tensor | None,
    ) -> None:
        clock = self.clock.index_select(0, pool_id)
        self.inserted_at[flat] = torch.where(
            inserted, clock, self.inserted_at.index_select(0, flat)
        )
        self.clock.index_add_(0, pool_id, inserted.long())
        old = self.priority.index_select(0, flat)
        default = torch.full_like(old, self.default_priority)
        if priority is None:
            new = torch.where(inserted, default, old)
        else:
            given = torch.ones_like(inserted) if has_priority is None else has_priority
            new = torch.where(given, priority, torch.where(inserted, default, old))
        self.priority[flat] = new

    def on_remove(self, flat: int) -> None:
        self.priority[flat] = 0.0
        self.inserted_at[flat] = -1

    def set_priority(self, pool_id: int, key: int, priority: float) -> None:
        if isinstance(priority, bool) or not isinstance(priority, (int, float)):
            raise InputError(f"priority must be a float, got {type(priority).__name__}")
        if priority != priority or priority in (float("inf"), float("-inf")):
            raise InputError(f"priority must be finite, got {priority}")
        slot = self.slot_of(pool_id, key)
        self.priority[pool_id * self.capacity + slot] = float(priority)

    def eviction_order(self, pool_id: int) -> list[int]:
        rng = self._pool_range(pool_id)
        prio, age = self.priority[rng].tolist(), self.inserted_at[rng].tolist()
        live = [
            (prio[s], age[s], k) for s, k in enumerate(self.slot_keys(pool_id)) if k is not None
        ]
        return [k for _, _, k in sorted(live)]

    def check_policy(self) -> None:
        for pool_id in range(self.num_pools):
            rng = self._pool_range(pool_id)
            live = self.occupied[rng]
            ages = self.inserted_at[rng][live].tolist()
            clock = int(self.clock[pool_id].item())
            if len(set(ages)) != len(ages) or any(not 0 <= t < clock for t in ages):
                raise ContractViolation(f"pool {pool_id}: insertion times {ages} vs {clock}")
            if not bool(torch.isfinite(self.priority[rng]).all()):
                raise ContractViolation(f"pool {pool_id}: a priority is not finite")


def make_index(
    policy: Policy,
    num_pools: int,
    capacity: int,
    device: torch.device | str = "cpu",
    backend: str = "auto",
) -> SlotIndex | HostIndex:
    """A new empty index of ``policy``.

    ``backend``: ``"device"`` (``SlotIndex``, tensors on ``device``), ``"host"``
    (``zerokv.host_index.HostIndex``, CPU tensors only) or ``"auto"``: the host index where
    ``checks.host_reads_are_free(device)``, else the device index.
    """
    from zerokv.host_index import HostIndex

    dev = torch.device(device)
    if backend == "auto":
        backend = "host" if checks.host_reads_are_free(dev) else "device"
    if backend == "host":
        if dev.type != "cpu":
            raise ConfigError(f"the host index serves CPU tensors only, not {dev}")
        return HostIndex(policy, num_pools, capacity, dev)
    if backend != "device":
        raise ConfigError(f"index backend must be 'auto', 'device' or 'host', got {backend!r}")
    if policy is Policy.FIFO:
        return FIFOIndex(num_pools, capacity, dev)
    if policy is Policy.LRU:
        return LRUIndex(num_pools, capacity, dev)
    if policy is Policy.PRIORITY:
        return PriorityIndex(num_pools, capacity, dev)
    raise ConfigError(f"unknown policy {policy!r}")
