"""``CacheManager``: ``zerokv_spec.manager.CacheManager`` on one slab, batched.

The manager owns what the spec's manager owns: validation of every argument (in the
spec's order, before anything changes), the search budget, statistics and logging. What
it delegates, it delegates once:

* the **root tier** is one ``SlotPool`` of ``env_num`` pools (pool ``e`` is environment
  ``e``'s), the **recurrent tier** one ``SlotPool`` with a single pool shared by every
  environment (its keys bound to the env id under ``Scope.ENV``);
* both tiers lie in one ``Slab`` (root slots ``[e * root_capacity, (e + 1) * root_capacity)``,
  then the recurrent slots from ``recurrent_base``), so a hierarchical lookup ends in one
  slab slot per row and the batch for the transformer is one gather whatever tiers the
  rows hit (a miss gathers the slab's all-zero slot: an empty row);
* which index backend the tiers use (host lists on the CPU, device tensors on CUDA) is
  chosen once, by ``zerokv.index.make_index``; the manager has one code path for both.

One MCTS step with the batched API (no host synchronisation anywhere on CUDA)::

    keys, fps = manager.keys_of(parent_latents)            # [B] int64 each
    found = manager.lookup_many(env_ids, keys, fps)        # tier / slot per row
    batch = manager.gather_reserve(found, 2)               # [L, 2, B, H, cl, d] + lengths
    batch.kv[:, :, :, :, -2:, :] = new_kv                  # the model writes its 2 tokens
    child_keys, child_fps = manager.keys_of(child_latents)
    manager.store_recurrent_batch(env_ids, child_keys, batch, correction, child_fps)

Env ids are host values (a list of ints or a CPU tensor): they come from the environment
manager on the host, and checking them is then free. Statistics live with the indexes
(on the device for the device index) and are read only when asked for.

**Threads.** A manager is not thread-safe: its indexes, slab and counters change together
in one call, and nothing serialises two calls. It refuses concurrent use instead of
corrupting itself: every public method takes a per-manager re-entrant lock *without
waiting*, and a second thread that finds it held gets ``ConcurrentUseError`` (nothing
changed). One manager per thread, or a lock around the calls, is the way to share one.
The guard costs one uncontended lock acquire and release per call.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from zerokv import checks, trace
from zerokv.entry import Batch, Correction, Entries
from zerokv.errors import (
    BatchError,
    ConfigError,
    ContractViolation,
    SearchCapacityError,
    StaleLookupError,
)
from zerokv.guard import exclusive as _exclusive
from zerokv.index import PutResult, Region, TierLookup, fold_lookup
from zerokv.kernels import COMPILE_MODES, EAGER, Kernels, compiled_kernels
from zerokv.keys import KeyFn, keys_and_fingerprints, zkv64
from zerokv.pool import SlotPool
from zerokv.rows import Rows, check_keys, env_id_list
from zerokv.slab import Slab, storage_device, storage_dtype
from zerokv_spec.keys import FINGERPRINT_SEED, check_key
from zerokv_spec.manager import (
    ManagerConfig,
    Scope,
    Tier,
    legacy_recurrent_capacity,
    legacy_root_capacity,
)
from zerokv_spec.pool import Policy
from zerokv_spec.stats import ManagerStats, PoolStats
from zerokv_spec.validate import positive_int

__all__ = ["CacheConfig", "CacheManager", "TierLookup"]

log = logging.getLogger("zerokv")

#: A distinct number per manager (``TierLookup.owner``).
_MANAGER_IDS = itertools.count()

#: ``lookup_many``'s ``tiers``: which tiers a lookup visits, in order.
_TIERS = {
    "hierarchical": (Tier.ROOT, Tier.RECURRENT),
    "root": (Tier.ROOT,),
    "recurrent": (Tier.RECURRENT,),
}


@dataclass(frozen=True)
class CacheConfig:
    """The spec's ``ManagerConfig`` plus the tensor shape, device and dtype."""

    env_num: int
    num_layers: int
    num_heads: int
    head_dim: int
    context_length: int
    root_capacity: int
    recurrent_capacity: int
    policy: Policy = Policy.FIFO
    scope: Scope = Scope.ENV
    device: str | torch.device = "cpu"
    dtype: torch.dtype = torch.float32
    #: Index backend: "auto" (host index on the CPU, device index on CUDA), "device", "host".
    index: str = "auto"
    #: Run the hot path's kernels compiled (``zerokv.kernels``: ``torch.compile`` with
    #: ``fullgraph=True``, static shapes; CUDA graphs on CUDA). Needs the device index.
    compile: bool = False
    #: ``torch.compile``'s mode for the compiled kernels: None picks ``"reduce-overhead"``
    #: (CUDA graphs) on CUDA and inductor's default elsewhere (``zerokv.kernels``).
    compile_mode: str | None = None

    def __post_init__(self) -> None:
        self.spec_config()  # validates the shared fields with the spec's own rules
        positive_int(self.num_heads, "num_heads")
        positive_int(self.head_dim, "head_dim")
        storage_dtype(self.dtype)
        storage_device(self.device)
        if self.index not in ("auto", "device", "host"):
            raise ConfigError(f"index must be 'auto', 'device' or 'host', got {self.index!r}")
        if not isinstance(self.compile, bool):
            raise ConfigError(f"compile must be a bool, got {self.compile!r}")
        if self.compile_mode is not None:
            if self.compile_mode not in COMPILE_MODES:
                raise ConfigError(
                    f"compile_mode must be None or one of {', '.join(COMPILE_MODES)}, "
                    f"got {self.compile_mode!r}"
                )
            if not self.compile:
                raise ConfigError("compile_mode is given but compile is False")
        if self.compile and self.index == "host":
            raise ConfigError(
                "compile=True runs the device index's kernels compiled: the host index has "
                "none (use index='auto' or 'device')"
            )

    def kernels(self) -> Kernels:
        """What runs this configuration's kernels (``zerokv.kernels``)."""
        if not self.compile:
            return EAGER
        return compiled_kernels(storage_device(self.device), self.compile_mode)

    def spec_config(self) -> ManagerConfig:
        """The spec's view of this configuration."""
        return ManagerConfig(
            env_num=self.env_num,
            num_layers=self.num_layers,
            context_length=self.context_length,
            root_capacity=self.root_capacity,
            recurrent_capacity=self.recurrent_capacity,
            policy=self.policy,
            scope=self.scope,
        )

    @staticmethod
    def legacy(
        env_num: int,
        num_layers: int,
        num_heads: int,
        head_dim: int,
        context_length: int,
        num_simulations: int,
        max_cache_size: int = 5000,
        **options: object,
    ) -> CacheConfig:
        """LightZero's sizes from ``num_simulations`` and ``max_cache_size`` (spec §3);
        ``options`` are ``CacheConfig``'s other fields (``ConfigError`` for any other name,
        and for the sizes this computes)."""
        fields = set(CacheConfig.__dataclass_fields__)
        sized = {"env_num", "num_layers", "num_heads", "head_dim", "context_length"}
        unknown = sorted(set(options) - (fields - sized - {"root_capacity", "recurrent_capacity"}))
        if unknown:
            raise ConfigError(
                f"CacheConfig.legacy: unknown or computed options {unknown}; it takes "
                f"{sorted(fields - sized - {'root_capacity', 'recurrent_capacity'})}"
            )
        ManagerConfig.legacy(env_num, num_layers, context_length, num_simulations, max_cache_size)
        return CacheConfig(
            env_num=env_num,
            num_layers=num_layers,
            num_heads=num_heads,
            head_dim=head_dim,
            context_length=context_length,
            root_capacity=legacy_root_capacity(num_simulations, max_cache_size),
            recurrent_capacity=legacy_recurrent_capacity(num_simulations, env_num),
            **options,  # type: ignore[arg-type]
        )


class CacheManager:
    """Root pools per environment and one recurrent pool over one slab (module docstring)."""

    def __init__(self, config: CacheConfig, key_fn: KeyFn | None = None) -> None:
        if not isinstance(config, CacheConfig):
            raise ConfigError(f"expected a CacheConfig, got {type(config).__name__}")
        self.config = config
        self.key_fn = key_fn
        cfg = config
        self.recurrent_base = cfg.env_num * cfg.root_capacity
        self.slab = Slab(
            self.recurrent_base + cfg.recurrent_capacity,
            cfg.num_layers,
            cfg.num_heads,
            cfg.head_dim,
            cfg.context_length,
            torch.device(cfg.device),
            cfg.dtype,
            cfg.kernels(),
        )
        self.kernels = self.slab.kernels
        # The slab's own device ("cuda" becomes "cuda:0"): inputs are compared with it.
        self.device = self.slab.device
        zero, trash = self.slab.zero, self.slab.trash
        root = Region(cfg.env_num, cfg.root_capacity, 0, zero, trash, Tier.ROOT)
        recurrent = Region(
            1,
            cfg.recurrent_capacity,
            self.recurrent_base,
            zero,
            trash,
            Tier.RECURRENT,
            shared=True,
            bound_envs=cfg.env_num if cfg.scope is Scope.ENV else None,
        )
        self._busy = threading.RLock()  # the manager's and its tiers' (zerokv.guard)
        self.root = SlotPool.within(self.slab, root, cfg.policy, cfg.index, self._busy)
        self.recurrent = SlotPool.within(self.slab, recurrent, cfg.policy, cfg.index, self._busy)
        self.tiers = {Tier.ROOT: self.root, Tier.RECURRENT: self.recurrent}
        self.shape = self.slab.shape
        #: Lookups so far (a host count); the tiers' hits are their pools' statistics.
        self.queries = 0
        self._owner = next(_MANAGER_IDS)
        self.search_budget: int | None = None
        self.search_used = 0
        log.debug(
            "zerokv manager: %d root pools x %d slots, recurrent %d slots, %d bytes per entry",
            cfg.env_num,
            cfg.root_capacity,
            cfg.recurrent_capacity,
            self.slab.entry_bytes,
        )

    # ------------------------------------------------------------------ copies
    def __getstate__(self) -> dict[str, object]:
        """A copy (``copy.deepcopy``, ``pickle``, ``torch.save``) is an independent manager
        with the same entries, statistics and generation: its own lock (shared by its
        tiers) and its own owner number, so a lookup of the original is not the copy's."""
        state = dict(self.__dict__)
        del state["_busy"]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._busy = threading.RLock()
        self.root._busy = self.recurrent._busy = self._busy
        self._owner = next(_MANAGER_IDS)

    @property
    def generation(self) -> int:
        """Stores of a row and clears so far, in either tier: a lookup of an older
        generation is stale (``StaleLookupError``). The tiers own the counts
        (``SlotPool.generation``), so a store or clear through ``root`` / ``recurrent``
        counts too. Host ints: no device read."""
        return self.root.generation + self.recurrent.generation

    # ------------------------------------------------------------------ rows
    def _rows(
        self,
        env_ids: Sequence[int] | torch.Tensor,
        keys: torch.Tensor,
        fingerprints: torch.Tensor | None,
        has_fingerprint: torch.Tensor | None,
    ) -> Rows:
        return Rows.checked(
            env_ids,
            keys,
            fingerprints,
            has_fingerprint,
            env_num=self.config.env_num,
            device=self.device,
        )

    # ------------------------------------------------------------------ keys
    def keys_of(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and fingerprints ``[B]`` of latents ``[B, ...]`` (on their device)."""
        if self.key_fn is None:
            return keys_and_fingerprints(latents, self.kernels)
        return self.key_fn(latents), zkv64(latents, (FINGERPRINT_SEED,), self.kernels)[0]

    # ------------------------------------------------------------------ lookups
    @_exclusive
    def lookup_many(
        self,
        env_ids: Sequence[int] | torch.Tensor,
        keys: torch.Tensor,
        fingerprints: torch.Tensor | None = None,
        has_fingerprint: torch.Tensor | None = None,
        tiers: str = "hierarchical",
    ) -> TierLookup:
        """The fold of the spec's ``lookup`` (or ``lookup_root`` / ``lookup_recurrent``)."""
        rows = self._rows(env_ids, keys, fingerprints, has_fingerprint)
        visit = _TIERS.get(tiers)
        if visit is None:
            raise BatchError(f"tiers must be 'hierarchical', 'root' or 'recurrent', got {tiers!r}")
        found = fold_lookup([self.tiers[tier].index for tier in visit], rows)
        result = found.result(self._owner, self.generation)
        self.queries += rows.count
        if trace.per_row(log):  # reads the device: only when tracing (zerokv.trace)
            for env, key, t, s_ in zip(
                rows.env_ids, keys.tolist(), result.tier.tolist(), result.slot.tolist()
            ):
                log.debug("lookup env=%d key=%d tier=%s slot=%d", env, key, Tier(t).name, s_)
        return result

    def _fresh(self, found: object) -> TierLookup:
        """``found`` if it is a lookup of this manager's current generation."""
        if not isinstance(found, TierLookup):
            raise BatchError(f"expected a TierLookup, got {type(found).__name__}")
        if found.owner != self._owner or found.generation != self.generation:
            raise StaleLookupError(
                f"a lookup of generation {found.generation} used in generation "
                f"{self.generation}: the pools changed since (a store or a clear)"
                if found.owner == self._owner
                else "a lookup made by another manager"
            )
        return found

    def _slots(self, found: object) -> torch.Tensor:
        slots = self._fresh(found).global_slot
        if slots.shape[0] == 0:
            raise BatchError("cannot assemble an empty batch")  # the spec's gather refuses it
        return slots

    @_exclusive
    def gather(self, found: TierLookup, width: int | None = None) -> Batch:
        """The entries ``found`` hit, as a batch (``width`` default ``cl``: static shape)."""
        return self.slab.gather(self._slots(found), width)

    @_exclusive
    def gather_append(self, found: TierLookup, new_kv: torch.Tensor) -> Batch:
        """``append(gather(found), new_kv, cl)`` in one pass: the MCTS step's batch
        (``new_kv`` is the model's ``t`` new tokens ``[L, 2, B, H, t, d]``)."""
        return self.slab.gather_append(self._slots(found), new_kv)

    @_exclusive
    def gather_reserve(self, found: TierLookup, t: int) -> Batch:
        """``gather_append(found, zeros)`` with ``t`` zero tokens: room for a model's new
        tokens, which it writes in place into ``batch.kv[:, :, :, :, -t:, :]`` (layer by
        layer, as its attention produces them)."""
        return self.slab.gather_reserve(self._slots(found), t)

    @_exclusive
    def read(self, found: TierLookup) -> Entries:
        """Copies of the entries ``found`` hit, in slab layout (misses: empty entries)."""
        return self.slab.read(self._fresh(found).global_slot)

    # ------------------------------------------------------------------ stores
    def _check_budget(self, tier: Tier, stores: int) -> None:
        budget = self.search_budget
        if tier is Tier.RECURRENT and budget is not None and self.search_used + stores > budget:
            raise SearchCapacityError(
                f"the search declared {budget} recurrent stores and has made "
                f"{self.search_used}; {stores} more would exceed it"
            )

    def _stored(self, tier: Tier, rows: Rows, out: PutResult) -> PutResult:
        """After a store: the generation, the search count, the debug log, the checks."""
        if tier is Tier.RECURRENT and self.search_budget is not None:
            self.search_used += rows.count
        if trace.per_row(log):  # reads the device: only when tracing (zerokv.trace)
            self._log_put(tier, rows, out)
        if checks.ENABLED:
            self.check()
        return out

    def _log_put(self, tier: Tier, rows: Rows, out: PutResult) -> None:
        evicted = [
            e if m else None for e, m in zip(out.evicted.tolist(), out.evicted_mask.tolist())
        ]
        for env, key, slot, inserted, gone in zip(
            rows.env_ids, rows.keys.tolist(), out.slot.tolist(), out.inserted.tolist(), evicted
        ):
            pool = f"root[{env}]" if tier is Tier.ROOT else f"recurrent (env {env})"
            verb = "insert" if inserted else "update"
            log.debug("store %s key=%d slot=%d %s evicted=%s", pool, key, slot, verb, gone)

    def _store_batch(
        self,
        tier: Tier,
        rows: Rows,
        batch: Batch,
        correction: Correction,
        priorities: tuple[torch.Tensor | None, torch.Tensor | None],
    ) -> PutResult:
        # The spec's order: the batch and the table, the rows, their priorities, the budget.
        # Every pool of a manager shares one policy: the root tier answers for both.
        rows = self.root.prioritised(rows, *priorities)
        self._check_budget(tier, rows.count)
        return self._stored(tier, rows, self.tiers[tier].store_batch(rows, batch, correction))

    def _checked_batch(
        self,
        env_ids: Sequence[int] | torch.Tensor,
        keys: torch.Tensor,
        batch: Batch,
        correction: Correction,
        fingerprints: tuple[torch.Tensor | None, torch.Tensor | None],
    ) -> tuple[Rows, Batch]:
        """The rows and the (verified) batch of a batch store (the spec's order: the batch
        and the table, then the rows)."""
        cfg = self.config
        batch = self.slab.check_batch(batch, _row_count(keys, self.device))
        if not isinstance(correction, Correction):
            raise BatchError(f"expected a zerokv Correction, got {type(correction).__name__}")
        correction.check(batch.kv, cfg.context_length)
        return self._rows(env_ids, keys, *fingerprints), batch

    @_exclusive
    def store_root_batch(
        self,
        env_ids: Sequence[int] | torch.Tensor,
        keys: torch.Tensor,
        batch: Batch,
        correction: Correction,
        fingerprints: torch.Tensor | None = None,
        has_fingerprint: torch.Tensor | None = None,
        priorities: torch.Tensor | None = None,
        has_priority: torch.Tensor | None = None,
    ) -> PutResult:
        """Split ``batch``, window rule, store row ``b`` in ``env_ids[b]``'s root pool."""
        rows, batch = self._checked_batch(
            env_ids, keys, batch, correction, (fingerprints, has_fingerprint)
        )
        return self._store_batch(Tier.ROOT, rows, batch, correction, (priorities, has_priority))

    @_exclusive
    def store_recurrent_batch(
        self,
        env_ids: Sequence[int] | torch.Tensor,
        keys: torch.Tensor,
        batch: Batch,
        correction: Correction,
        fingerprints: torch.Tensor | None = None,
        has_fingerprint: torch.Tensor | None = None,
        priorities: torch.Tensor | None = None,
        has_priority: torch.Tensor | None = None,
    ) -> PutResult:
        """Split ``batch``, window rule, store every row in the recurrent pool."""
        rows, batch = self._checked_batch(
            env_ids, keys, batch, correction, (fingerprints, has_fingerprint)
        )
        return self._store_batch(
            Tier.RECURRENT, rows, batch, correction, (priorities, has_priority)
        )

    def _store_many(
        self,
        tier: Tier,
        rows: Rows,
        entries: Entries,
        priorities: tuple[torch.Tensor | None, torch.Tensor | None],
    ) -> PutResult:
        # The spec's order: the rows, their priorities, the entries, the budget.
        rows = self.root.prioritised(rows, *priorities)
        entries = self.slab.check_entries(entries, rows.count)
        self._check_budget(tier, rows.count)
        return self._stored(tier, rows, self.tiers[tier].store_many(rows, entries))

    @_exclusive
    def store_root_many(
        self,
        env_ids: Sequence[int] | torch.Tensor,
        keys: torch.Tensor,
        entries: Entries,
        fingerprints: torch.Tensor | None = None,
        has_fingerprint: torch.Tensor | None = None,
        priorities: torch.Tensor | None = None,
        has_priority: torch.Tensor | None = None,
    ) -> PutResult:
        """Store ready entries (slab layout) in the root pools; the fold of ``store_root``."""
        rows = self._rows(env_ids, keys, fingerprints, has_fingerprint)
        return self._store_many(Tier.ROOT, rows, entries, (priorities, has_priority))

    @_exclusive
    def store_recurrent_many(
        self,
        env_ids: Sequence[int] | torch.Tensor,
        keys: torch.Tensor,
        entries: Entries,
        fingerprints: torch.Tensor | None = None,
        has_fingerprint: torch.Tensor | None = None,
        priorities: torch.Tensor | None = None,
        has_priority: torch.Tensor | None = None,
    ) -> PutResult:
        """Store ready entries in the recurrent pool; the fold of ``store_recurrent``."""
        rows = self._rows(env_ids, keys, fingerprints, has_fingerprint)
        return self._store_many(Tier.RECURRENT, rows, entries, (priorities, has_priority))

    # ------------------------------------------------------------------ priorities
    @_exclusive
    def set_priority(self, tier: Tier, env_id: int, key: int, priority: float) -> None:
        """Change the priority of a stored key of ``tier`` (priority policy only)."""
        (env,) = env_id_list([env_id], self.config.env_num)
        check_key(key)  # the spec's order: env id, key, then the tier
        pool = self.tiers.get(tier) if isinstance(tier, Tier) else None
        if pool is None:
            raise BatchError(f"tier must be ROOT or RECURRENT, got {tier!r}")
        pool.index.set_priority(env, key, priority)

    # ------------------------------------------------------------------ searches
    @_exclusive
    def begin_search(self, nodes: int) -> None:
        """Declare a search of ``nodes`` recurrent stores; refused if the pool is smaller."""
        if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 0:
            raise SearchCapacityError(f"a search declares an int >= 0 of nodes, got {nodes!r}")
        if nodes > self.config.recurrent_capacity:
            raise SearchCapacityError(
                f"a search of {nodes} nodes needs more than the recurrent pool's "
                f"{self.config.recurrent_capacity} slots; live nodes would be evicted"
            )
        self.search_budget = nodes
        self.search_used = 0

    @_exclusive
    def end_search(self) -> None:
        """End the declared search."""
        self.search_budget = None
        self.search_used = 0

    # ------------------------------------------------------------------ clearing
    @_exclusive
    def clear_env(self, env_id: int) -> None:
        """Empty environment ``env_id``'s root pool."""
        (env,) = env_id_list([env_id], self.config.env_num)
        self.root.clear(env)
        log.debug("zerokv: cleared root pool of env %d", env)

    @_exclusive
    def clear_roots(self) -> None:
        """Empty every root pool."""
        self.root.clear(None)

    @_exclusive
    def clear_recurrent(self) -> None:
        """Empty the recurrent pool."""
        self.recurrent.clear(None)

    @_exclusive
    def clear_all(self) -> None:
        """Empty every pool (statistics and storage are kept)."""
        self.clear_roots()
        self.clear_recurrent()
        log.debug("zerokv: cleared every pool")

    # ------------------------------------------------------------------ statistics
    @_exclusive
    def stats(self) -> ManagerStats:
        """The manager's lookup counters: a lookup counts once, in the tier that hit
        (reads the device for the device index)."""
        root_hits = self.root.stats(None).hits
        recurrent_hits = self.recurrent.stats(None).hits
        hits = root_hits + recurrent_hits
        return ManagerStats(self.queries, hits, self.queries - hits, root_hits, recurrent_hits)

    @_exclusive
    def root_stats(self, env_id: int | None = None) -> PoolStats:
        """One environment's root pool statistics, or the tier's sum."""
        if env_id is not None:
            (env_id,) = env_id_list([env_id], self.config.env_num)
        return self.root.stats(env_id)

    @_exclusive
    def recurrent_stats(self) -> PoolStats:
        return self.recurrent.stats(0)

    @_exclusive
    def reset_stats(self) -> None:
        self.queries = 0
        self.root.reset_stats()
        self.recurrent.reset_stats()

    # ------------------------------------------------------------------ inspection
    @_exclusive
    def root_slot_keys(self, env_id: int) -> list[int | None]:
        (env,) = env_id_list([env_id], self.config.env_num)
        return self.root.slot_keys(env)

    @_exclusive
    def recurrent_slot_keys(self) -> list[int | None]:
        return self.recurrent.slot_keys(0)

    @_exclusive
    def root_sizes(self) -> list[int]:
        """Stored entries of every environment's root pool (one device read)."""
        return self.root.index.sizes()

    @_exclusive
    def recurrent_size(self) -> int:
        """Stored entries of the recurrent pool (one device read)."""
        return self.recurrent.size(0)

    @_exclusive
    def entry_at(self, tier: Tier, env_id: int, slot: int) -> Entries:
        """A copy of the entry in ``slot`` of a tier's pool (one row of ``Entries``)."""
        if tier is Tier.ROOT:
            (env,) = env_id_list([env_id], self.config.env_num)
            return self.root.entry_at(slot, env)
        if tier is not Tier.RECURRENT:
            raise BatchError(f"tier must be Tier.ROOT or Tier.RECURRENT, got {tier!r}")
        return self.recurrent.entry_at(slot, 0)

    @property
    def storage_bytes(self) -> int:
        return self.slab.storage_bytes

    @_exclusive
    def stored_entries(self) -> int:
        """Entries stored in every pool (reads the device)."""
        return sum(self.root.index.sizes()) + self.recurrent.size(0)

    @_exclusive
    def check(self) -> None:
        """Runtime contracts: both tiers, stored lengths, statistics identities."""
        self.root.check()
        self.recurrent.check()
        stats = self.stats()
        stats.check()
        if stats.queries < stats.hits:
            raise ContractViolation(f"{stats.hits} hits from {stats.queries} lookups")


def _row_count(keys: object, device: torch.device) -> int:
    """The number of rows ``keys`` names (checked to be keys first)."""
    return int(check_keys(keys, device).shape[0])
