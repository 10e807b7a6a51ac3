"""``HostIndex``: the slot index kept in host memory, for caches whose tensors are on the CPU.

On the CPU a tensor's values already live in host memory, so reading keys costs one
``tolist`` and a Python dict answers a lookup in O(1). Each batched operation of
``SlotIndex`` (``zerokv.index``) costs a fixed ~100 small tensor operations, which on a
CPU take longer than the whole batch of dict operations. ``HostIndex`` has exactly the
interface and the observable behaviour of ``SlotIndex`` (tensors in, tensors out, the
spec's fold semantics, the same ``write`` targets with the trash element); the
differential tests run both against the spec. ``make_index(..., backend="auto")``
picks it whenever ``checks.host_reads_are_free(device)``; CUDA always gets the
device-resident ``SlotIndex``.

Per pool it keeps ``slot_keys`` / ``slot_fps`` lists, an ``index`` dict (key -> slot)
and the policy's bookkeeping with the spec's names (``next``; ``last_use`` and ``clock``;
``priority``, ``inserted_at`` and ``clock``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
from zerokv.index import STATS_FIELDS, LookupOutcome, PutOutcome
from zerokv_spec.pool import Policy
from zerokv_spec.stats import PoolStats

__all__ = ["HostIndex", "HostPut", "host_priorities", "host_rows"]

_Q, _H, _M, _C, _I, _U, _E, _R = range(8)


def host_rows(
    keys: torch.Tensor, fps: torch.Tensor | None, has_fp: torch.Tensor | None
) -> tuple[list[int], list[int | None], list[bool]]:
    """Keys, fingerprints and which fingerprints count, as host lists (no fingerprints:
    none counts; fingerprints without a mask: all count)."""
    key_list: list[int] = keys.tolist()
    rows = len(key_list)
    if fps is None:
        return key_list, [None] * rows, [False] * rows
    fp_list: list[int | None] = fps.tolist()
    return key_list, fp_list, [True] * rows if has_fp is None else has_fp.tolist()


def host_priorities(
    priorities: torch.Tensor | None, has_priority: torch.Tensor | None
) -> list[float | None] | None:
    """Priorities as a host list, None where ``has_priority`` says a row gives none."""
    if priorities is None:
        return None
    values: list[float] = priorities.tolist()
    flags = [True] * len(values) if has_priority is None else has_priority.tolist()
    return [p if f else None for p, f in zip(values, flags)]


@dataclass(frozen=True)
class HostPut:
    """A put's per-row results as host lists (``PutOutcome``'s fields, same meaning)."""

    slot: list[int]
    evicted: list[int]
    evicted_mask: list[bool]
    inserted: list[bool]
    write: list[int]

    def outcome(self, device: torch.device) -> PutOutcome:
        """The same results as ``PutOutcome`` tensors on ``device``."""
        # One host-to-tensor conversion for all five fields (each costs microseconds).
        both = torch.tensor(
            [self.slot, self.evicted, self.write, self.evicted_mask, self.inserted],
            dtype=torch.int64,
            device=device,
        )
        flags = both[3:].bool()
        return PutOutcome(both[0], both[1], flags[0], flags[1], both[2])


class HostIndex:
    """A group of pools indexed in host memory (module docstring)."""

    def __init__(
        self,
        policy: Policy,
        num_pools: int,
        capacity: int,
        device: torch.device | str = "cpu",
    ) -> None:
        for name, value in (("num_pools", num_pools), ("capacity", capacity)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
        if not isinstance(policy, Policy):
            raise ConfigError(f"unknown policy {policy!r}")
        self.policy = policy
        self.num_pools = num_pools
        self.capacity = capacity
        self.device = torch.device(device)
        self.trash = num_pools * capacity
        self.stats = [[0] * len(STATS_FIELDS) for _ in range(num_pools)]
        self.slot_keys_: list[list[int | None]] = []
        self.slot_fps: list[list[int | None]] = []
        self.index: list[dict[int, int]] = []
        self.next: list[int] = []
        self.last_use: list[list[int]] = []
        self.priority: list[list[float]] = []
        self.inserted_at: list[list[int]] = []
        self.clock: list[int] = []
        for _ in range(num_pools):
            self.slot_keys_.append([])
            self.slot_fps.append([])
            self.index.append({})
            self.next.append(0)
            self.last_use.append([])
            self.priority.append([])
            self.inserted_at.append([])
            self.clock.append(0)
        for p in range(num_pools):
            self._reset(p)

    def _reset(self, p: int) -> None:
        cap = self.capacity
        self.slot_keys_[p] = [None] * cap
        self.slot_fps[p] = [None] * cap
        self.index[p] = {}
        self.next[p] = 0
        self.last_use[p] = [-1] * cap
        self.priority[p] = [0.0] * cap
        self.inserted_at[p] = [-1] * cap
        self.clock[p] = 0

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
        """Batched ``get`` (``count``) or ``peek``; inactive rows do nothing."""
        key_list, fp_list, has_list = host_rows(keys, fps, has_fp)
        act = active.tolist() if active is not None else None
        status, slots = self.lookup_rows(pool_ids.tolist(), key_list, fp_list, has_list, act, count)
        dev = self.device
        return LookupOutcome(
            torch.tensor(status, dtype=torch.int64, device=dev),
            torch.tensor(slots, dtype=torch.int64, device=dev),
        )

    def lookup_rows(
        self,
        pools: list[int],
        keys: list[int],
        fps: list[int | None] | None,
        has_fp: list[bool],
        active: list[bool] | None,
        count: bool = True,
    ) -> tuple[list[int], list[int]]:
        """``lookup`` on host lists: the status codes and slots per row.

        The manager's CPU path calls this directly, so a lookup costs no tensor operation
        beyond reading the keys.
        """
        rows = len(keys)
        status, slots = [0] * rows, [-1] * rows
        lru = self.policy is Policy.LRU
        for b in range(rows):
            if active is not None and not active[b]:
                continue
            p, k = pools[b], keys[b]
            slot = self.index[p].get(k)
            stats = self.stats[p]
            if count:
                stats[_Q] += 1
            if slot is not None and (
                not has_fp[b] or (fps is not None and self.slot_fps[p][slot] == fps[b])
            ):
                status[b], slots[b] = 1, slot
                if count:
                    stats[_H] += 1
                    if lru:
                        self.last_use[p][slot] = self.clock[p]
                        self.clock[p] += 1
            else:
                if slot is not None:
                    status[b] = 2
                if count:
                    stats[_M] += 1
                    stats[_C] += slot is not None
        return status, slots

    # ------------------------------------------------------------------ puts
    def check_priorities(self, priorities: torch.Tensor | None) -> None:
        if priorities is None:
            return
        if self.policy is not Policy.PRIORITY:
            raise UnsupportedOperationError(f"{self.policy.value} pools take no priority")
        if priorities.dtype != torch.float64:
            raise BatchError(f"priorities must be float64, got {priorities.dtype}")

    def _choose(self, p: int) -> int:
        if self.policy is Policy.FIFO:
            return self.next[p]
        keys = self.slot_keys_[p]
        if len(self.index[p]) < self.capacity:
            return keys.index(None)
        if self.policy is Policy.LRU:
            stamps = self.last_use[p]
            return min(range(self.capacity), key=stamps.__getitem__)
        prio, age = self.priority[p], self.inserted_at[p]
        return min(range(self.capacity), key=lambda s: (prio[s], age[s]))

    def put(
        self,
        pool_ids: torch.Tensor,
        keys: torch.Tensor,
        fps: torch.Tensor | None = None,
        has_fp: torch.Tensor | None = None,
        priorities: torch.Tensor | None = None,
        has_priority: torch.Tensor | None = None,
    ) -> PutOutcome:
        """Batched ``put``: the spec's left-to-right fold."""
        self.check_priorities(priorities)
        key_list, fp_list, has_list = host_rows(keys, fps, has_fp)
        prios = host_priorities(priorities, has_priority)
        return self.put_rows(pool_ids.tolist(), key_list, fp_list, has_list, prios).outcome(
            self.device
        )

    def put_rows(
        self,
        pools: list[int],
        keys: list[int],
        fps: list[int | None],
        has_fp: list[bool],
        priorities: list[float | None] | None,
    ) -> HostPut:
        """``put`` on host lists (a priority of None keeps the default / current one)."""
        rows = len(keys)
        slots, evicted, ev_mask, inserted = [0] * rows, [0] * rows, [False] * rows, [False] * rows
        writer: dict[tuple[int, int], int] = {}
        for b in range(rows):
            p, k = pools[b], keys[b]
            index, stats = self.index[p], self.stats[p]
            slot = index.get(k)
            prio = priorities[b] if priorities is not None else None
            if slot is None:
                slot = self._choose(p)
                old = self.slot_keys_[p][slot]
                if old is not None:
                    del index[old]
                    evicted[b], ev_mask[b] = old, True
                    stats[_E] += 1
                self.slot_keys_[p][slot] = k
                index[k] = slot
                inserted[b] = True
                stats[_I] += 1
                self._on_insert(p, slot, prio)
            else:
                stats[_U] += 1
                self._on_update(p, slot, prio)
            self.slot_fps[p][slot] = fps[b] if has_fp[b] else None
            slots[b] = slot
            writer[(p, slot)] = b
        write = [
            p * self.capacity + s if writer[(p, s)] == b else self.trash
            for b, (p, s) in enumerate(zip(pools, slots))
        ]
        if checks.ENABLED:
            self.check()
        return HostPut(slots, evicted, ev_mask, inserted, write)

    def _on_insert(self, p: int, slot: int, priority: float | None) -> None:
        if self.policy is Policy.FIFO:
            self.next[p] = (self.next[p] + 1) % self.capacity
        elif self.policy is Policy.LRU:
            self.last_use[p][slot] = self.clock[p]
            self.clock[p] += 1
        else:
            self.inserted_at[p][slot] = self.clock[p]
            self.clock[p] += 1
            self.priority[p][slot] = 0.0 if priority is None else float(priority)

    def _on_update(self, p: int, slot: int, priority: float | None) -> None:
        if self.policy is Policy.LRU:
            self.last_use[p][slot] = self.clock[p]
            self.clock[p] += 1
        elif self.policy is Policy.PRIORITY and priority is not None:
            self.priority[p][slot] = float(priority)

    # ------------------------------------------------------------------ removal
    def check_pool_id(self, pool_id: int) -> None:
        if isinstance(pool_id, bool) or not isinstance(pool_id, int):
            raise InputError(f"pool id must be an int, got {type(pool_id).__name__}")
        if not 0 <= pool_id < self.num_pools:
            raise InputError(f"pool id must lie in [0, {self.num_pools}), got {pool_id}")

    def check_slot(self, slot: int) -> int:
        if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < self.capacity:
            raise SlotRangeError(f"slot must be an int in [0, {self.capacity}), got {slot!r}")
        return slot

    def evict(self, pool_id: int, key: int) -> int:
        """Remove ``key`` from pool ``pool_id``; returns its slot."""
        slot = self.slot_of(pool_id, key)
        del self.index[pool_id][key]
        self.slot_keys_[pool_id][slot] = None
        self.slot_fps[pool_id][slot] = None
        self.last_use[pool_id][slot] = -1
        self.priority[pool_id][slot] = 0.0
        self.inserted_at[pool_id][slot] = -1
        self.stats[pool_id][_R] += 1
        return slot

    def clear(self, pool_id: int | None = None) -> None:
        """Empty one pool (or all); statistics are kept."""
        if pool_id is None:
            for p in range(self.num_pools):
                self._reset(p)
        else:
            self.check_pool_id(pool_id)
            self._reset(pool_id)

    def set_priority(self, pool_id: int, key: int, priority: float) -> None:
        if self.policy is not Policy.PRIORITY:
            raise UnsupportedOperationError(f"{self.policy.value} pools have no priorities")
        if isinstance(priority, bool) or not isinstance(priority, (int, float)):
            raise InputError(f"priority must be a float, got {type(priority).__name__}")
        if not math.isfinite(priority):
            raise InputError(f"priority must be finite, got {priority}")
        slot = self.slot_of(pool_id, key)
        self.priority[pool_id][slot] = float(priority)

    def reset_stats(self) -> None:
        for row in self.stats:
            row[:] = [0] * len(STATS_FIELDS)

    # ------------------------------------------------------------------ queries
    def size(self, pool_id: int) -> int:
        self.check_pool_id(pool_id)
        return len(self.index[pool_id])

    def sizes(self) -> list[int]:
        """Entries stored in each pool."""
        return [len(i) for i in self.index]

    def pool_stats(self) -> list[PoolStats]:
        """Every pool's statistics."""
        return [PoolStats(**dict(zip(STATS_FIELDS, row))) for row in self.stats]

    def stored(self) -> int:
        """Entries stored in all pools."""
        return sum(len(i) for i in self.index)

    def slot_of(self, pool_id: int, key: int) -> int:
        from zerokv_spec.keys import check_key

        self.check_pool_id(pool_id)
        check_key(key)
        slot = self.index[pool_id].get(key)
        if slot is None:
            raise KeyNotFoundError(f"key {key} is not stored in this pool")
        return slot

    def key_at(self, pool_id: int, slot: int) -> int | None:
        self.check_pool_id(pool_id)
        return self.slot_keys_[pool_id][self.check_slot(slot)]

    def slot_keys(self, pool_id: int) -> list[int | None]:
        self.check_pool_id(pool_id)
        return list(self.slot_keys_[pool_id])

    def eviction_order(self, pool_id: int) -> list[int]:
        self.check_pool_id(pool_id)
        keys = self.slot_keys_[pool_id]
        live = [(s, k) for s, k in enumerate(keys) if k is not None]
        if self.policy is Policy.FIFO:
            start = self.next[pool_id]
            ring = (keys[(start + i) % self.capacity] for i in range(self.capacity))
            return [k for k in ring if k is not None]
        if self.policy is Policy.LRU:
            stamps = self.last_use[pool_id]
            return [k for s, k in sorted(live, key=lambda sk: stamps[sk[0]])]
        prio, age = self.priority[pool_id], self.inserted_at[pool_id]
        return [k for s, k in sorted(live, key=lambda sk: (prio[sk[0]], age[sk[0]]))]

    def stats_of(self, pool_id: int | None = None) -> PoolStats:
        if pool_id is None:
            row = [sum(col) for col in zip(*self.stats)]
        else:
            self.check_pool_id(pool_id)
            row = self.stats[pool_id]
        return PoolStats(**dict(zip(STATS_FIELDS, row)))

    def check(self) -> None:
        """Runtime contracts: bijection, clean empty slots, policy ranges, statistics."""
        for p in range(self.num_pools):
            keys = self.slot_keys_[p]
            for k, s in self.index[p].items():
                if keys[s] != k:
                    raise ContractViolation(f"pool {p}: index maps {k} to slot {s}")
            live = [s for s, k in enumerate(keys) if k is not None]
            if len(live) != len(self.index[p]):
                raise ContractViolation(f"pool {p}: {len(live)} slots, {len(self.index[p])} keys")
            if any(self.slot_fps[p][s] is not None for s, k in enumerate(keys) if k is None):
                raise ContractViolation(f"pool {p}: an empty slot keeps a fingerprint")
            if not 0 <= self.next[p] < self.capacity:
                raise ContractViolation(f"pool {p}: ring pointer {self.next[p]}")
            stamps = self.last_use[p] if self.policy is Policy.LRU else self.inserted_at[p]
            if self.policy is not Policy.FIFO:
                times = [stamps[s] for s in live]
                if len(set(times)) != len(times) or any(not 0 <= t < self.clock[p] for t in times):
                    raise ContractViolation(f"pool {p}: times {times} vs clock {self.clock[p]}")
            self.stats_of(p).check()
