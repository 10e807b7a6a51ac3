"""``SlotPool``: ``zerokv_spec.pool.SlotPool`` with K/V storage and batched operations.

A pool here is an index (``zerokv.index``: which key each slot holds, the policy's
bookkeeping) plus the slots of a ``Slab`` that hold the K/V (``zerokv.index.Region``
says which). ``num_pools`` independent pools of one shape may share an instance (a row's
env id selects its pool); the default is one pool, which is the spec's ``SlotPool``.

``SlotPool(capacity, ...)`` builds a pool on a slab of its own. A ``CacheManager`` builds
its two tiers with ``SlotPool.within`` on one shared slab, so a lookup that hits either
tier ends in one slab slot per row and a batch is one gather.

Batched operations take ``Rows`` (or, in the public methods, keys and optional
fingerprints) and return tensors, never synchronising: ``get_many`` / ``peek_many``
(``Lookup``: status and slot per row), ``gather`` (the hits as a ``Batch``; misses are
empty rows), ``put_many`` / ``store_many`` / ``store_batch`` (``PutResult`` per row).
Host-level queries (``len``, ``in``, ``slot_of``, ``key_at``, ``eviction_order``,
``stats``, ``evict``) answer with Python values, as the spec does.

A batch store into a FIFO device index runs its put and its slab store as one kernel
(``put_and_store``, owned here because it joins the index's work and the slab's).

**Generations and threads belong to the pool.** Every store of at least one row, every
eviction and every clear starts a new ``generation``; a lookup remembers the pool and the
generation it was made in (``Lookup.stamp``), and ``gather`` / ``read`` refuse an older
one (``StaleLookupError``). Every public method runs under the pool's lock
(``zerokv.guard``): a second thread inside gets ``ConcurrentUseError``. A manager's tiers
share the manager's lock and the manager's generation is theirs, so going through
``manager.root`` / ``manager.recurrent`` cannot get around either rule.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from dataclasses import replace

import torch

from zerokv import checks
from zerokv.entry import Batch, Correction, Entries
from zerokv.errors import ContractViolation, ShapeError, StaleLookupError
from zerokv.guard import exclusive
from zerokv.index import IndexBackend, Lookup, PutResult, Region, make_index
from zerokv.index.device import FifoCall, FIFOIndex, FifoResult, fifo_put
from zerokv.rows import Rows, check_env_range, check_keys, env_id_list, env_tensor
from zerokv.slab import Slab, WindowCall, store_window
from zerokv_spec.pool import Policy
from zerokv_spec.stats import PoolStats

__all__ = ["SlotPool"]

#: A distinct number per pool (``Lookup.stamp``).
_POOL_IDS = itertools.count()


class SlotPool:
    """Pools of one policy and shape over slots of a slab (module docstring)."""

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
        region = Region(num_pools, capacity)
        slab = Slab(region.slots, num_layers, num_heads, head_dim, context_length, device, dtype)
        self._bind(make_index(policy, region, slab.device, index), slab, threading.RLock())

    @classmethod
    def within(
        cls, slab: Slab, region: Region, policy: Policy, backend: str, lock: threading.RLock
    ) -> SlotPool:
        """A pool group over ``region`` of a shared ``slab`` (a manager's tier), under the
        manager's ``lock``."""
        pool = cls.__new__(cls)
        pool._bind(make_index(policy, region, slab.device, backend, slab.kernels), slab, lock)
        return pool

    def _bind(self, index: IndexBackend, slab: Slab, lock: threading.RLock) -> None:
        self._busy = lock
        #: Bumped by every store of a row, eviction and clear (module docstring).
        self.generation = 0
        self._serial = next(_POOL_IDS)
        self.index = index
        self.slab = slab
        self.region = index.region
        self.policy = index.policy
        self.capacity = self.region.capacity
        self.num_pools = self.region.num_pools
        self.context_length = slab.context_length
        self.device = slab.device

    # ------------------------------------------------------------------ copies
    def __getstate__(self) -> dict[str, object]:
        # A lock is not state: a copy (deepcopy, pickle, torch.save) gets its own.
        state = dict(self.__dict__)
        del state["_busy"]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._busy = threading.RLock()
        self._serial = next(_POOL_IDS)  # the original's lookups are not the copy's

    # ------------------------------------------------------------------ rows
    def _pool_ids(
        self, pool_ids: Sequence[int] | torch.Tensor | None, rows: int
    ) -> tuple[int, ...]:
        """Each row's pool as host ints (host values, like a manager's env ids)."""
        if pool_ids is None:
            return (0,) * rows
        ids = env_id_list(pool_ids)
        if len(ids) != rows:
            raise ShapeError(f"pool_ids must have {rows} rows, got {len(ids)}")
        return ids

    def _rows(
        self,
        keys: torch.Tensor,
        fingerprints: torch.Tensor | None,
        has_fingerprint: torch.Tensor | None,
        pool_ids: Sequence[int] | torch.Tensor | None,
    ) -> Rows:
        """Public arguments as ``Rows`` (a pool id plays the part of an env id here)."""
        check_keys(keys, self.device)
        ids = self._pool_ids(pool_ids, keys.shape[0])
        return Rows.checked(
            ids, keys, fingerprints, has_fingerprint, env_num=self.num_pools, device=self.device
        )

    def _slots(
        self, outcome: Lookup, pool_ids: Sequence[int] | torch.Tensor | None
    ) -> torch.Tensor:
        """The slab slots of ``outcome``'s hits (the slab's zero slot for the rest)."""
        ids = self._pool_ids(pool_ids, outcome.slot.shape[0])
        check_env_range(ids, self.num_pools)
        hit = outcome.status == 1
        flat = self.region.base + env_tensor(ids, self.device) * self.capacity + outcome.slot
        return torch.where(hit, flat, torch.full_like(flat, self.region.zero))

    # ------------------------------------------------------------------ batched
    @exclusive
    def get_many(
        self,
        keys: torch.Tensor,
        fingerprints: torch.Tensor | None = None,
        has_fingerprint: torch.Tensor | None = None,
        pool_ids: Sequence[int] | torch.Tensor | None = None,
    ) -> Lookup:
        """The fold of ``get`` (statistics and recency counted)."""
        rows = self._rows(keys, fingerprints, has_fingerprint, pool_ids)
        return self._stamped(self.index.get_many(rows))

    @exclusive
    def peek_many(
        self,
        keys: torch.Tensor,
        fingerprints: torch.Tensor | None = None,
        has_fingerprint: torch.Tensor | None = None,
        pool_ids: Sequence[int] | torch.Tensor | None = None,
    ) -> Lookup:
        """Like ``get_many`` without statistics or recency."""
        rows = self._rows(keys, fingerprints, has_fingerprint, pool_ids)
        return self._stamped(self.index.get_many(rows, count=False))

    def _stamped(self, outcome: Lookup) -> Lookup:
        return replace(outcome, stamp=(self._serial, self.generation))

    def _fresh(self, outcome: Lookup) -> Lookup:
        """``outcome`` if no store, eviction or clear of this pool happened since it."""
        stamp = outcome.stamp
        if stamp is not None and stamp != (self._serial, self.generation):
            raise StaleLookupError(
                "a lookup used after its pool changed (a store, an eviction or a clear)"
                if stamp[0] == self._serial
                else "a lookup made by another pool"
            )
        return outcome

    @exclusive
    def gather(
        self,
        outcome: Lookup,
        width: int | None = None,
        pool_ids: Sequence[int] | torch.Tensor | None = None,
    ) -> Batch:
        """The hits of ``outcome`` as a batch (``width`` default ``cl``); misses are empty."""
        return self.slab.gather(self._slots(self._fresh(outcome), pool_ids), width)

    @exclusive
    def read(
        self, outcome: Lookup, pool_ids: Sequence[int] | torch.Tensor | None = None
    ) -> Entries:
        """Copies of the hit entries in slab layout (misses: empty entries)."""
        return self.slab.read(self._slots(self._fresh(outcome), pool_ids))

    @exclusive
    def put_many(
        self,
        keys: torch.Tensor,
        entries: Entries,
        fingerprints: torch.Tensor | None = None,
        has_fingerprint: torch.Tensor | None = None,
        priorities: torch.Tensor | None = None,
        has_priority: torch.Tensor | None = None,
        pool_ids: Sequence[int] | torch.Tensor | None = None,
    ) -> PutResult:
        """The fold of ``put``: row ``b`` of ``entries`` under ``keys[b]``."""
        rows = self._rows(keys, fingerprints, has_fingerprint, pool_ids)
        entries = self.slab.check_entries(entries, rows.count)
        return self.store_many(self.prioritised(rows, priorities, has_priority), entries)

    def prioritised(
        self, rows: Rows, priorities: torch.Tensor | None, has_priority: torch.Tensor | None
    ) -> Rows:
        """``rows`` with priorities, checked in the spec's order: shapes, then whether this
        policy takes priorities, then finiteness."""
        rows = rows.with_priorities(priorities, has_priority)
        self.index.check_priorities(rows)
        rows.check_finite_priorities()
        return rows

    @exclusive
    def store_many(self, rows: Rows, entries: Entries) -> PutResult:
        """Ready entries (checked) under checked ``rows``: the index decides, the slab writes."""
        placement = self.index.put(rows)
        self.slab.write(placement.result.write, entries)
        self._changed(rows.count)
        if checks.ENABLED:
            self.check()
        return placement.result

    def _changed(self, rows: int = 1) -> None:
        if rows:
            self.generation += 1

    @exclusive
    def store_batch(self, rows: Rows, batch: Batch, correction: Correction) -> PutResult:
        """Row ``b`` of a checked ``batch`` (split, window rule) under checked ``rows``.

        A FIFO device index with a slab store that is one kernel: the put and the store
        in one kernel too (``put_and_store``)."""
        plan = self.slab.plan_store(batch, correction)  # may refuse lengths: before the put
        placement = None
        index = self.index
        if plan is None and isinstance(index, FIFOIndex) and rows.count:
            index.check_priorities(rows)
            window = self.slab.window_call(batch, correction)  # checks: before the put
            if window is not None:
                call = index.put_call(rows)
                result = index.kernels(put_and_store)(call, window)
                placement = index.put_done(rows, call, result)
        if placement is None:
            placement = index.put(rows)
            self.slab.store(placement, batch, correction, plan)
        self._changed(rows.count)
        if checks.ENABLED:
            self.check()
        return placement.result

    # ------------------------------------------------------------------ host level
    @exclusive
    def evict(self, key: int, pool_id: int = 0) -> None:
        """Remove ``key`` (``KeyNotFoundError`` when absent)."""
        self.index.evict(pool_id, key)
        self._changed()

    @exclusive
    def clear(self, pool_id: int | None = None) -> None:
        """Empty one pool or all; statistics and storage are kept."""
        self.index.clear(pool_id)
        self._changed()

    @exclusive
    def set_priority(self, key: int, priority: float, pool_id: int = 0) -> None:
        """Change a stored key's priority (priority pools only)."""
        self.index.set_priority(pool_id, key, priority)

    @exclusive
    def size(self, pool_id: int = 0) -> int:
        return self.index.size(pool_id)

    @exclusive
    def __len__(self) -> int:
        return self.index.size(0)

    @exclusive
    def __contains__(self, key: object) -> bool:
        if isinstance(key, bool) or not isinstance(key, int):
            return False
        try:
            self.index.slot_of(0, key)
        except (KeyError, ValueError):
            return False
        return True

    @exclusive
    def slot_of(self, key: int, pool_id: int = 0) -> int:
        return self.index.slot_of(pool_id, key)

    @exclusive
    def key_at(self, slot: int, pool_id: int = 0) -> int | None:
        return self.index.key_at(pool_id, slot)

    @exclusive
    def slot_keys(self, pool_id: int = 0) -> list[int | None]:
        return self.index.slot_keys(pool_id)

    @exclusive
    def eviction_order(self, pool_id: int = 0) -> list[int]:
        return self.index.eviction_order(pool_id)

    @exclusive
    def stats(self, pool_id: int | None = 0) -> PoolStats:
        return self.index.stats_of(pool_id)

    @exclusive
    def reset_stats(self) -> None:
        self.index.reset_stats()

    @exclusive
    def entry_at(self, slot: int, pool_id: int = 0) -> Entries:
        """A copy of the entry in ``slot`` of pool ``pool_id`` (one row of ``Entries``)."""
        self.index.check_pool_id(pool_id)
        flat = self.region.base + pool_id * self.capacity + self.index.check_slot(slot)
        return self.slab.read(torch.tensor([flat], device=self.device))

    @property
    def storage_bytes(self) -> int:
        return self.slab.storage_bytes

    @exclusive
    def check(self) -> None:
        """Runtime contracts: the index's, plus stored lengths within the context."""
        self.index.check()
        lo, hi = self.region.base, self.region.base + self.region.slots
        lengths = self.slab.lengths[lo:hi]
        if bool(((lengths < 0) | (lengths > self.context_length)).any()):
            raise ContractViolation("a stored length lies outside [0, cl]")


def put_and_store(put: FifoCall, window: WindowCall) -> FifoResult:
    """The kernel of a batch store into a FIFO device index: ``fifo_put`` (the slots and
    the index writes), then ``store_window`` (the window rule and the slab scatter) to the
    slots the put chose. One kernel, so one compiled graph for the whole store."""
    result = fifo_put(*put)
    store_window(window, result[4])
    return result
