"""``SlotPool``: ``zerokv_spec.pool.SlotPool`` with tensor storage and batched operations.

A pool here is an index (``zerokv.index``: keys, fingerprints, policy state on the device)
plus a slab (``zerokv.slab``: the K/V of every slot). ``num_pools`` independent pools of
one shape may share an instance (``pool_ids`` selects the pool of each row); the default
is one pool, which is the spec's ``SlotPool``.

Batched operations take and return tensors and never synchronise: ``get_many`` /
``peek_many`` (``LookupOutcome``: status and slot per row), ``gather`` (the hits as a
``Batch``; misses are empty rows), ``put_many`` (``PutOutcome`` per row: slot, evicted key,
inserted). Host-level queries (``len``, ``in``, ``slot_of``, ``key_at``,
``eviction_order``, ``stats``, ``evict``) answer with Python values, as the spec does.
"""

from __future__ import annotations

import torch

from zerokv import checks
from zerokv.entry import Batch, Entries
from zerokv.errors import ContractViolation, ShapeError
from zerokv.host_index import HostIndex
from zerokv.index import LookupOutcome, PutOutcome, SlotIndex, make_index
from zerokv.slab import Slab
from zerokv.validate import (
    check_entries,
    check_fingerprints,
    check_finite_priorities,
    check_keys,
    check_priorities,
)
from zerokv_spec.pool import Policy
from zerokv_spec.stats import PoolStats

__all__ = ["SlotPool"]


class SlotPool:
    """Pools of one policy and shape over one slab (module docstring)."""

    def __init__(
        self,
        capacity: int,
        *,
        policy: Policy = Policy.FIFO,
        num_layers: int,
        num_heads: int,
        head_dim: int,
        context_length: int,
        num_pools: int = 1,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        index: str = "auto",
    ) -> None:
        self.index: SlotIndex | HostIndex = make_index(policy, num_pools, capacity, device, index)
        self.slab = Slab(
            num_pools * capacity, num_layers, num_heads, head_dim, context_length, device, dtype
        )
        self.policy = policy
        self.capacity = capacity
        self.num_pools = num_pools
        self.shape = (num_layers, num_heads, head_dim)
        self.context_length = context_length
        self.device = self.slab.device

    # ------------------------------------------------------------------ helpers
    def _pool_ids(self, pool_ids: torch.Tensor | None, rows: int) -> torch.Tensor:
        if pool_ids is None:
            return torch.zeros(rows, dtype=torch.int64, device=self.device)
        check_keys(pool_ids, self.device, "pool_ids")
        if pool_ids.shape[0] != rows:
            raise ShapeError(f"pool_ids must have {rows} rows, got {pool_ids.shape[0]}")
        return pool_ids

    def _global(self, pool_ids: torch.Tensor, outcome: LookupOutcome) -> torch.Tensor:
        hit = outcome.status == 1
        flat = pool_ids * self.capacity + outcome.slot
        return torch.where(hit, flat, torch.full_like(flat, self.slab.zero))

    # ------------------------------------------------------------------ batched
    def get_many(
        self,
        keys: torch.Tensor,
        fingerprints: torch.Tensor | None = None,
        has_fingerprint: torch.Tensor | None = None,
        pool_ids: torch.Tensor | None = None,
    ) -> LookupOutcome:
        """The fold of ``get`` (statistics and recency counted)."""
        check_keys(keys, self.device)
        check_fingerprints(fingerprints, has_fingerprint, keys.shape[0], self.device)
        pids = self._pool_ids(pool_ids, keys.shape[0])
        return self.index.lookup(pids, keys, fingerprints, has_fingerprint)

    def peek_many(
        self,
        keys: torch.Tensor,
        fingerprints: torch.Tensor | None = None,
        has_fingerprint: torch.Tensor | None = None,
        pool_ids: torch.Tensor | None = None,
    ) -> LookupOutcome:
        """Like ``get_many`` without statistics or recency."""
        check_keys(keys, self.device)
        check_fingerprints(fingerprints, has_fingerprint, keys.shape[0], self.device)
        pids = self._pool_ids(pool_ids, keys.shape[0])
        return self.index.lookup(pids, keys, fingerprints, has_fingerprint, count=False)

    def gather(
        self,
        outcome: LookupOutcome,
        width: int | None = None,
        pool_ids: torch.Tensor | None = None,
    ) -> Batch:
        """The hits of ``outcome`` as a batch (``width`` default ``cl``); misses are empty."""
        pids = self._pool_ids(pool_ids, outcome.slot.shape[0])
        return self.slab.gather(self._global(pids, outcome), width)

    def read(self, outcome: LookupOutcome, pool_ids: torch.Tensor | None = None) -> Entries:
        """Copies of the hit entries in slab layout (misses: empty entries)."""
        pids = self._pool_ids(pool_ids, outcome.slot.shape[0])
        return self.slab.read(self._global(pids, outcome))

    def put_many(
        self,
        keys: torch.Tensor,
        entries: Entries,
        fingerprints: torch.Tensor | None = None,
        has_fingerprint: torch.Tensor | None = None,
        priorities: torch.Tensor | None = None,
        has_priority: torch.Tensor | None = None,
        pool_ids: torch.Tensor | None = None,
    ) -> PutOutcome:
        """The fold of ``put``: row ``b`` of ``entries`` under ``keys[b]``."""
        check_keys(keys, self.device)
        rows = keys.shape[0]
        check_entries(entries, rows, self.shape, self.context_length, self.device, self.slab.dtype)
        check_fingerprints(fingerprints, has_fingerprint, rows, self.device)
        check_priorities(priorities, has_priority, rows, self.device)
        self.index.check_priorities(priorities)
        check_finite_priorities(priorities, has_priority)
        pids = self._pool_ids(pool_ids, rows)
        out = self.index.put(pids, keys, fingerprints, has_fingerprint, priorities, has_priority)
        # The index's trash element and the slab's TRASH slot play the same role.
        target = torch.where(
            out.write == self.index.trash, torch.full_like(out.write, self.slab.trash), out.write
        )
        self.slab.write(target, entries)
        if checks.ENABLED:
            self.check()
        return out

    # ------------------------------------------------------------------ host level
    def evict(self, key: int, pool_id: int = 0) -> None:
        """Remove ``key`` (``KeyNotFoundError`` when absent)."""
        self.index.evict(pool_id, key)

    def clear(self, pool_id: int | None = None) -> None:
        """Empty one pool or all; statistics and storage are kept."""
        self.index.clear(pool_id)

    def set_priority(self, key: int, priority: float, pool_id: int = 0) -> None:
        """Change a stored key's priority (priority pools only)."""
        self.index.set_priority(pool_id, key, priority)

    def size(self, pool_id: int = 0) -> int:
        return self.index.size(pool_id)

    def __len__(self) -> int:
        return self.index.size(0)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, bool) or not isinstance(key, int):
            return False
        try:
            self.index.slot_of(0, key)
        except KeyError:
            return False
        except ValueError:
            return False
        return True

    def slot_of(self, key: int, pool_id: int = 0) -> int:
        return self.index.slot_of(pool_id, key)

    def key_at(self, slot: int, pool_id: int = 0) -> int | None:
        return self.index.key_at(pool_id, slot)

    def slot_keys(self, pool_id: int = 0) -> list[int | None]:
        return self.index.slot_keys(pool_id)

    def eviction_order(self, pool_id: int = 0) -> list[int]:
        return self.index.eviction_order(pool_id)

    def stats(self, pool_id: int | None = 0) -> PoolStats:
        return self.index.stats_of(pool_id)

    def reset_stats(self) -> None:
        self.index.reset_stats()

    @property
    def storage_bytes(self) -> int:
        return self.slab.storage_bytes

    def check(self) -> None:
        """Runtime contracts: the index's, plus stored lengths within the context."""
        self.index.check()
        lengths = self.slab.lengths[: self.slab.num_slots]
        if bool(((lengths < 0) | (lengths > self.context_length)).any()):
            raise ContractViolation("a stored length lies outside [0, cl]")
