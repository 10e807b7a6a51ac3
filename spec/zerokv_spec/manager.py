"""The cache manager: root pools per environment, one recurrent pool, tiers and searches.

This module owns how UniZero's caches fit together:

* **Root tier** - ``env_num`` pools, one per environment id, holding the entries of the
  roots of each environment's search tree (``store_root``). Environment ``e`` only ever
  reads and writes pool ``e``: ids are explicit arguments, never batch positions.
* **Recurrent tier** - one pool for the search-tree nodes of every environment
  (``store_recurrent``). With ``Scope.ENV`` (the default) its keys and fingerprints are
  bound to the environment id (``keys.scoped_key`` / ``keys.scoped_fingerprint``), so equal
  latents of two environments never share an entry. ``Scope.GLOBAL`` is LightZero's
  behaviour: the key alone, last writer wins.
* **Hierarchical lookup** (``lookup``) - the environment's root pool first, then the
  recurrent pool; the result names the tier that hit (``Tier.MISS`` when neither did).
* **Sizes** - by default LightZero's: root capacity ``min(max_cache_size, max(256, 2N))``
  and recurrent capacity ``N * env_num`` (``ManagerConfig.legacy``); any sizes >= 1 may be
  configured instead.
* **Searches** - ``begin_search(nodes)`` declares how many recurrent stores a search will
  make. A declaration larger than the recurrent capacity is refused with
  ``SearchCapacityError``; so is any recurrent store beyond the declared number (refused
  before it changes anything), instead of silently evicting live nodes. ``end_search``
  ends the declaration; without one, stores are not limited.
* **Clearing** - ``clear_env(e)`` (one environment's roots, e.g. at its episode end),
  ``clear_roots()``, ``clear_recurrent()`` (before each search) and ``clear_all()``.
  Statistics survive every clear; ``reset_stats`` zeroes them.
* **Statistics** - each pool counts its own queries (``PoolStats``); the manager counts
  each lookup once (``ManagerStats``), whatever tiers it visited.
* **Generations** - every stored row and every clear starts a new ``generation`` (a batch
  store of ``n`` rows is ``n`` stores; one of no rows changes nothing); a lookup remembers
  the generation it was made in, and ``gather`` / ``gather_append`` / ``gather_reserve``
  refuse a lookup of an older one (``StaleLookupError``): the store or clear may have
  moved or replaced the entries it names, so it no longer describes the cache. Lookups
  themselves do not change it. (An implementation may number generations differently;
  which lookups are stale is the rule.)

Every ``*_many`` operation is the left-to-right fold of the single operation and checks all
its arguments before changing anything; ``store_*_batch`` and ``gather`` connect the
manager to the batch rules of ``zerokv_spec.entry``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import Enum, IntEnum

from zerokv_spec.entry import (
    Batch,
    Correction,
    Entry,
    Tokens,
    append,
    assemble,
    check_context_length,
    store_rows,
    validate_entry,
)
from zerokv_spec.errors import (
    BatchError,
    ConfigError,
    ContractViolation,
    EnvIdError,
    SearchCapacityError,
    StaleLookupError,
)
from zerokv_spec.keys import check_key, scoped_fingerprint, scoped_key
from zerokv_spec.pool import LookupStatus, Policy, PutResult, SlotPool, make_pool
from zerokv_spec.stats import ManagerStats, PoolStats
from zerokv_spec.validate import positive_int

__all__ = [
    "CacheManager",
    "ManagerConfig",
    "Scope",
    "Tier",
    "TierLookup",
    "legacy_recurrent_capacity",
    "legacy_root_capacity",
]


class Tier(IntEnum):
    """Where a lookup hit. The integer values are the implementation's tier codes."""

    MISS = 0
    ROOT = 1
    RECURRENT = 2


class Scope(str, Enum):
    """Whether recurrent keys are bound to the environment (``ENV``) or not (``GLOBAL``)."""

    ENV = "env"
    GLOBAL = "global"


def legacy_root_capacity(num_simulations: int, max_cache_size: int = 5000) -> int:
    """LightZero's root pool size: ``min(max_cache_size, max(256, 2 * num_simulations))``."""
    return min(max_cache_size, max(256, 2 * num_simulations))


def legacy_recurrent_capacity(num_simulations: int, env_num: int) -> int:
    """LightZero's recurrent pool size: ``num_simulations * env_num``."""
    return num_simulations * env_num


@dataclass(frozen=True)
class ManagerConfig:
    """Shape and sizes of a manager's pools."""

    env_num: int
    num_layers: int
    context_length: int
    root_capacity: int
    recurrent_capacity: int
    policy: Policy = Policy.FIFO
    scope: Scope = Scope.ENV

    def __post_init__(self) -> None:
        positive_int(self.env_num, "env_num")
        positive_int(self.num_layers, "num_layers")
        check_context_length(self.context_length)
        positive_int(self.root_capacity, "root_capacity")
        positive_int(self.recurrent_capacity, "recurrent_capacity")
        if not isinstance(self.policy, Policy):
            raise ConfigError(f"policy must be a Policy, got {self.policy!r}")
        if not isinstance(self.scope, Scope):
            raise ConfigError(f"scope must be a Scope, got {self.scope!r}")

    @staticmethod
    def legacy(
        env_num: int,
        num_layers: int,
        context_length: int,
        num_simulations: int,
        max_cache_size: int = 5000,
        policy: Policy = Policy.FIFO,
        scope: Scope = Scope.ENV,
    ) -> ManagerConfig:
        """The sizes LightZero derives from ``num_simulations`` and ``max_cache_size``."""
        positive_int(num_simulations, "num_simulations")
        positive_int(max_cache_size, "max_cache_size")
        positive_int(env_num, "env_num")
        return ManagerConfig(
            env_num=env_num,
            num_layers=num_layers,
            context_length=context_length,
            root_capacity=legacy_root_capacity(num_simulations, max_cache_size),
            recurrent_capacity=legacy_recurrent_capacity(num_simulations, env_num),
            policy=policy,
            scope=scope,
        )


@dataclass(frozen=True)
class TierLookup:
    """Result of one manager lookup: the tier that hit, its slot and entry, collisions."""

    tier: Tier
    slot: int | None
    entry: Entry | None
    collided: bool = False
    #: The manager's generation when the lookup was made (``CacheManager.generation``).
    generation: int = 0


@dataclass(eq=False)
class CacheManager:
    """Root pools, the recurrent pool, statistics and the search budget (module docstring)."""

    config: ManagerConfig
    roots: list[SlotPool[Entry]] = field(init=False)
    recurrent: SlotPool[Entry] = field(init=False)
    stats: ManagerStats = field(init=False)
    search_budget: int | None = field(init=False, default=None)
    search_used: int = field(init=False, default=0)
    generation: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if not isinstance(self.config, ManagerConfig):
            raise ConfigError(f"expected a ManagerConfig, got {type(self.config).__name__}")
        cfg = self.config
        self.roots = [make_pool(cfg.policy, cfg.root_capacity) for _ in range(cfg.env_num)]
        self.recurrent = make_pool(cfg.policy, cfg.recurrent_capacity)
        self.stats = ManagerStats()

    # ------------------------------------------------------------------ checks
    def check(self) -> None:
        """Raise ``ContractViolation`` unless every pool and the statistics are consistent."""
        for pool in (*self.roots, self.recurrent):
            pool.check()
        self.stats.check()
        tier_hits = sum(p.stats.hits for p in self.roots) + self.recurrent.stats.hits
        if self.stats.hits > tier_hits:
            raise ContractViolation("manager hits exceed the tiers' hits")
        if self.search_budget is not None and not 0 <= self.search_used <= self.search_budget:
            raise ContractViolation(f"search used {self.search_used} of {self.search_budget}")

    def check_env(self, env_id: int) -> None:
        """Raise ``EnvIdError`` unless ``env_id`` is an int in ``[0, env_num)``."""
        if isinstance(env_id, bool) or not isinstance(env_id, int):
            raise EnvIdError(f"env id must be an int, got {type(env_id).__name__}")
        if not 0 <= env_id < self.config.env_num:
            raise EnvIdError(f"env id must lie in [0, {self.config.env_num}), got {env_id}")

    def _check_lookup_args(self, env_id: int, key: int, fingerprint: int | None) -> None:
        self.check_env(env_id)
        check_key(key)
        if fingerprint is not None:
            check_key(fingerprint, "fingerprint")

    def recurrent_key(
        self, env_id: int, key: int, fingerprint: int | None
    ) -> tuple[int, int | None]:
        """The key and fingerprint the recurrent pool uses for ``(env_id, key)``."""
        if self.config.scope is Scope.GLOBAL:
            return key, fingerprint
        return scoped_key(key, env_id), scoped_fingerprint(fingerprint, env_id)

    # ------------------------------------------------------------------ lookups
    def _changed(self) -> None:
        """A store or a clear succeeded: lookups made before it are stale."""
        self.generation += 1

    def _check_lookups(self, lookups: Sequence[TierLookup]) -> None:
        """``lookups`` must be this manager's lookups of the current generation."""
        if not isinstance(lookups, Sequence) or not all(isinstance(r, TierLookup) for r in lookups):
            raise BatchError(f"expected a sequence of TierLookup, got {type(lookups).__name__}")
        for r in lookups:
            if r.generation != self.generation:
                raise StaleLookupError(
                    f"a lookup of generation {r.generation} used in generation "
                    f"{self.generation}: the pools changed since (a store or a clear)"
                )

    def _count(self, result: TierLookup) -> TierLookup:
        result = replace(result, generation=self.generation)
        self.stats.queries += 1
        if result.tier is Tier.ROOT:
            self.stats.hits += 1
            self.stats.root_hits += 1
        elif result.tier is Tier.RECURRENT:
            self.stats.hits += 1
            self.stats.recurrent_hits += 1
        else:
            self.stats.misses += 1
        self.check()
        return result

    def _root_get(self, env_id: int, key: int, fingerprint: int | None) -> TierLookup:
        found = self.roots[env_id].get(key, fingerprint)
        if found.hit:
            return TierLookup(Tier.ROOT, found.slot, found.value)
        return TierLookup(Tier.MISS, None, None, found.status is LookupStatus.COLLISION)

    def _recurrent_get(self, env_id: int, key: int, fingerprint: int | None) -> TierLookup:
        rkey, rfp = self.recurrent_key(env_id, key, fingerprint)
        found = self.recurrent.get(rkey, rfp)
        if found.hit:
            return TierLookup(Tier.RECURRENT, found.slot, found.value)
        return TierLookup(Tier.MISS, None, None, found.status is LookupStatus.COLLISION)

    def lookup_root(self, env_id: int, key: int, fingerprint: int | None = None) -> TierLookup:
        """Look ``key`` up in environment ``env_id``'s root pool only."""
        self._check_lookup_args(env_id, key, fingerprint)
        return self._count(self._root_get(env_id, key, fingerprint))

    def lookup_recurrent(self, env_id: int, key: int, fingerprint: int | None = None) -> TierLookup:
        """Look ``key`` up in the recurrent pool only."""
        self._check_lookup_args(env_id, key, fingerprint)
        return self._count(self._recurrent_get(env_id, key, fingerprint))

    def lookup(self, env_id: int, key: int, fingerprint: int | None = None) -> TierLookup:
        """Hierarchical lookup: ``env_id``'s root pool, then the recurrent pool."""
        self._check_lookup_args(env_id, key, fingerprint)
        root = self._root_get(env_id, key, fingerprint)
        if root.tier is Tier.ROOT:
            return self._count(root)
        rec = self._recurrent_get(env_id, key, fingerprint)
        if rec.tier is Tier.MISS and root.collided:
            rec = TierLookup(Tier.MISS, None, None, True)
        return self._count(rec)

    def lookup_many(
        self,
        env_ids: Sequence[int],
        keys: Sequence[int],
        fingerprints: Sequence[int | None] | None = None,
        tiers: str = "hierarchical",
    ) -> list[TierLookup]:
        """The fold of ``lookup`` (or ``lookup_root`` / ``lookup_recurrent`` by ``tiers``)."""
        fps = self._check_rows(env_ids, keys, fingerprints)
        for e, k, f in zip(env_ids, keys, fps):
            self._check_lookup_args(e, k, f)
        one = {
            "hierarchical": self.lookup,
            "root": self.lookup_root,
            "recurrent": self.lookup_recurrent,
        }.get(tiers)
        if one is None:
            raise BatchError(f"tiers must be 'hierarchical', 'root' or 'recurrent', got {tiers!r}")
        return [one(e, k, f) for e, k, f in zip(env_ids, keys, fps)]

    # ------------------------------------------------------------------ stores
    def _check_store_args(
        self, env_id: int, key: int, entry: Entry, fingerprint: int | None
    ) -> None:
        self._check_lookup_args(env_id, key, fingerprint)
        validate_entry(entry, self.config.num_layers, self.config.context_length)

    def store_root(
        self,
        env_id: int,
        key: int,
        entry: Entry,
        fingerprint: int | None = None,
        priority: float | None = None,
    ) -> PutResult:
        """Store ``entry`` under ``key`` in environment ``env_id``'s root pool."""
        self._check_store_args(env_id, key, entry, fingerprint)
        self.roots[env_id].check_priority_argument(priority)
        result = self.roots[env_id].put(key, entry, fingerprint, priority)
        self._changed()
        self.check()
        return result

    def _check_budget(self, stores: int) -> None:
        if self.search_budget is not None and self.search_used + stores > self.search_budget:
            raise SearchCapacityError(
                f"the search declared {self.search_budget} recurrent stores and has made "
                f"{self.search_used}; {stores} more would exceed it"
            )

    def store_recurrent(
        self,
        env_id: int,
        key: int,
        entry: Entry,
        fingerprint: int | None = None,
        priority: float | None = None,
    ) -> PutResult:
        """Store ``entry`` in the recurrent pool (one node of the declared search, if any)."""
        self._check_store_args(env_id, key, entry, fingerprint)
        self.recurrent.check_priority_argument(priority)
        self._check_budget(1)
        rkey, rfp = self.recurrent_key(env_id, key, fingerprint)
        result = self.recurrent.put(rkey, entry, rfp, priority)
        if self.search_budget is not None:
            self.search_used += 1
        self._changed()
        self.check()
        return result

    def _check_rows(
        self,
        env_ids: Sequence[int],
        keys: Sequence[int],
        fingerprints: Sequence[int | None] | None,
    ) -> Sequence[int | None]:
        if isinstance(env_ids, (str, bytes)) or not isinstance(env_ids, Sequence):
            raise EnvIdError(f"env ids must be a sequence of ints, got {type(env_ids).__name__}")
        if len(env_ids) != len(keys):
            raise BatchError(f"got {len(env_ids)} env ids but {len(keys)} keys")
        if fingerprints is None:
            return [None] * len(keys)
        if len(fingerprints) != len(keys):
            raise BatchError(f"got {len(keys)} keys but {len(fingerprints)} fingerprints")
        return fingerprints

    def _check_store_many(
        self,
        tier: Tier,
        env_ids: Sequence[int],
        keys: Sequence[int],
        entries: Sequence[Entry],
        fingerprints: Sequence[int | None] | None,
        priorities: Sequence[float | None] | None,
    ) -> tuple[Sequence[int | None], Sequence[float | None]]:
        fps = self._check_rows(env_ids, keys, fingerprints)
        if isinstance(entries, (str, bytes)) or not isinstance(entries, Sequence):
            raise BatchError(f"entries must be a sequence of Entry, got {type(entries).__name__}")
        if len(entries) != len(keys):
            raise BatchError(f"got {len(keys)} keys but {len(entries)} entries")
        prios: Sequence[float | None] = [None] * len(keys) if priorities is None else priorities
        if len(prios) != len(keys):
            raise BatchError(f"got {len(keys)} keys but {len(prios)} priorities")
        for e, k, entry, f in zip(env_ids, keys, entries, fps):
            self._check_store_args(e, k, entry, f)
        for e, p in zip(env_ids, prios):  # each row's own pool (its env id is valid by now)
            pool = self.roots[e] if tier is Tier.ROOT else self.recurrent
            pool.check_priority_argument(p)
        return fps, prios

    def store_root_many(
        self,
        env_ids: Sequence[int],
        keys: Sequence[int],
        entries: Sequence[Entry],
        fingerprints: Sequence[int | None] | None = None,
        priorities: Sequence[float | None] | None = None,
    ) -> list[PutResult]:
        """The fold of ``store_root``; all arguments are checked before any change."""
        fps, prios = self._check_store_many(
            Tier.ROOT, env_ids, keys, entries, fingerprints, priorities
        )
        return [
            self.store_root(e, k, entry, f, p)
            for e, k, entry, f, p in zip(env_ids, keys, entries, fps, prios)
        ]

    def store_recurrent_many(
        self,
        env_ids: Sequence[int],
        keys: Sequence[int],
        entries: Sequence[Entry],
        fingerprints: Sequence[int | None] | None = None,
        priorities: Sequence[float | None] | None = None,
    ) -> list[PutResult]:
        """The fold of ``store_recurrent``; a batch over the search budget changes nothing."""
        fps, prios = self._check_store_many(
            Tier.RECURRENT, env_ids, keys, entries, fingerprints, priorities
        )
        self._check_budget(len(keys))
        return [
            self.store_recurrent(e, k, entry, f, p)
            for e, k, entry, f, p in zip(env_ids, keys, entries, fps, prios)
        ]

    # ------------------------------------------------------------------ batches
    def gather(self, lookups: Sequence[TierLookup], width: int | None = None) -> Batch:
        """Assemble the entries of ``lookups`` (a miss contributes an empty row); the
        lookups must be of the current generation (module docstring)."""
        self._check_lookups(lookups)
        empty = Entry.empty(self.config.num_layers)
        return assemble([r.entry if r.entry is not None else empty for r in lookups], width)

    def gather_append(
        self,
        lookups: Sequence[TierLookup],
        new_k: Sequence[Sequence[Tokens]],
        new_v: Sequence[Sequence[Tokens]],
    ) -> Batch:
        """A search step's batch: ``append(gather(lookups, cl), new_k, new_v, cl)``."""
        cl = self.config.context_length
        return append(self.gather(lookups, cl), new_k, new_v, cl)

    def gather_reserve(self, lookups: Sequence[TierLookup], t: int) -> Batch:
        """``gather_append`` with ``t`` zero tokens per row: the batch a model writes its
        new tokens into, in place (it produces them only while attending to the batch)."""
        self._check_lookups(lookups)
        if isinstance(t, bool) or not isinstance(t, int):
            raise BatchError(f"the number of new tokens must be an int, got {t!r}")
        rows = len(lookups)
        layers = self.config.num_layers
        zeros = tuple(
            tuple(tuple(0.0 for _ in range(t)) for _ in range(rows)) for _ in range(layers)
        )
        return self.gather_append(lookups, zeros, zeros)

    def store_root_batch(
        self,
        env_ids: Sequence[int],
        keys: Sequence[int],
        batch: Batch,
        correction: Correction,
        fingerprints: Sequence[int | None] | None = None,
        priorities: Sequence[float | None] | None = None,
    ) -> list[PutResult]:
        """Split ``batch``, apply the window rule, store row ``b`` in ``env_ids[b]``'s pool."""
        rows = self._batch_rows(batch, correction, len(keys))
        return self.store_root_many(env_ids, keys, rows, fingerprints, priorities)

    def store_recurrent_batch(
        self,
        env_ids: Sequence[int],
        keys: Sequence[int],
        batch: Batch,
        correction: Correction,
        fingerprints: Sequence[int | None] | None = None,
        priorities: Sequence[float | None] | None = None,
    ) -> list[PutResult]:
        """Split ``batch``, apply the window rule, store every row in the recurrent pool."""
        rows = self._batch_rows(batch, correction, len(keys))
        return self.store_recurrent_many(env_ids, keys, rows, fingerprints, priorities)

    def _batch_rows(self, batch: Batch, correction: Correction, rows: int) -> tuple[Entry, ...]:
        cfg = self.config
        if not isinstance(batch, Batch):
            raise BatchError(f"expected a Batch, got {type(batch).__name__}")
        if not isinstance(correction, Correction):
            raise BatchError(f"expected a Correction, got {type(correction).__name__}")
        if batch.rows != rows:
            raise BatchError(f"batch has {batch.rows} rows but {rows} keys were given")
        if batch.num_layers != cfg.num_layers:
            raise BatchError(f"batch has {batch.num_layers} layers, the cache {cfg.num_layers}")
        if batch.width > cfg.context_length:
            raise BatchError(
                f"batch width {batch.width} exceeds the context length {cfg.context_length}: "
                "rows could hold more tokens than an entry can"
            )
        if any(n > cfg.context_length for n in batch.lengths):
            raise BatchError(
                f"batch rows hold {max(batch.lengths)} tokens, more than the context "
                f"length {cfg.context_length}"
            )
        correction.check(cfg.num_layers, cfg.context_length)
        return store_rows(batch, cfg.context_length, correction)

    # ------------------------------------------------------------------ priorities
    def set_priority(self, tier: Tier, env_id: int, key: int, priority: float) -> None:
        """Change the priority of a stored key of ``tier`` (priority policy only)."""
        self.check_env(env_id)
        check_key(key)
        if tier is Tier.ROOT:
            self.roots[env_id].set_priority(key, priority)
        elif tier is Tier.RECURRENT:
            self.recurrent.set_priority(self.recurrent_key(env_id, key, None)[0], priority)
        else:
            raise BatchError(f"tier must be ROOT or RECURRENT, got {tier!r}")
        self.check()

    # ------------------------------------------------------------------ searches
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
        self.check()

    def end_search(self) -> None:
        """End the declared search (recurrent stores are unlimited again)."""
        self.search_budget = None
        self.search_used = 0

    # ------------------------------------------------------------------ clearing
    def clear_env(self, env_id: int) -> None:
        """Empty environment ``env_id``'s root pool."""
        self.check_env(env_id)
        self.roots[env_id].clear()
        self._changed()

    def clear_roots(self) -> None:
        """Empty every root pool."""
        for pool in self.roots:
            pool.clear()
        self._changed()

    def clear_recurrent(self) -> None:
        """Empty the recurrent pool."""
        self.recurrent.clear()
        self._changed()

    def clear_all(self) -> None:
        """Empty every pool (e.g. after the weights changed)."""
        self.clear_roots()
        self.clear_recurrent()

    # ------------------------------------------------------------------ statistics
    def root_stats(self) -> PoolStats:
        """The root tier's statistics, summed over environments."""
        total = PoolStats()
        for pool in self.roots:
            total = total + pool.stats
        return total

    def reset_stats(self) -> None:
        """Zero every counter of every pool and of the manager."""
        for pool in (*self.roots, self.recurrent):
            pool.stats.reset()
        self.stats.reset()
