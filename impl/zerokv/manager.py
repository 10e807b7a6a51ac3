"""``CacheManager``: ``zerokv_spec.manager.CacheManager`` on one slab, batched.

Layout: one ``Slab`` holds every entry: the ``env_num`` root pools (slots
``[e * root_capacity, (e + 1) * root_capacity)``) followed by the recurrent pool (slots
from ``recurrent_base``). The root tier is one ``SlotIndex`` with ``env_num`` pools; the
recurrent tier one with a single pool. A hierarchical lookup therefore ends in one global
slot per row, and the batch for the transformer is one ``index_select`` whatever tiers
the rows hit (a miss gathers the slab's all-zero ``ZERO`` slot: an empty row).

One MCTS step with the batched API (no host synchronisation anywhere on CUDA)::

    keys, fps = manager.keys_of(parent_latents)            # [B] int64 each
    found = manager.lookup_many(env_ids, keys, fps)             # tier / slot per row
    batch = manager.gather_reserve(found, 2)               # [L, 2, B, H, cl, d] + lengths
    batch.kv[:, :, :, :, -2:, :] = new_kv                  # the model writes its 2 tokens
    child_keys, child_fps = manager.keys_of(child_latents)
    manager.store_recurrent_batch(env_ids, child_keys, batch, correction, child_fps)

Env ids are host values (a list of ints or a CPU tensor): they come from the environment
manager on the host, and checking them is then free. Statistics live on the device and
are read only when asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from zerokv import checks
from zerokv.entry import (
    Batch,
    Correction,
    Entries,
    RowPlan,
    gather_append,
    gather_reserve,
    plan_rows,
    store_rows,
    write_rows,
)
from zerokv.errors import BatchError, ConfigError, ContractViolation, SearchCapacityError
from zerokv.host_index import HostIndex, host_priorities, host_rows
from zerokv.index import PutOutcome, make_index
from zerokv.keys import (
    KeyFn,
    env_tags,
    keys_and_fingerprints,
    scoped_fingerprints,
    scoped_keys,
    zkv64_fingerprints,
)
from zerokv.slab import Slab
from zerokv.validate import (
    check_batch,
    check_entries,
    check_env_range,
    check_fingerprints,
    check_finite_priorities,
    check_keys,
    check_priorities,
    env_id_list,
)
from zerokv_spec.manager import (
    ManagerConfig,
    Scope,
    Tier,
    legacy_recurrent_capacity,
    legacy_root_capacity,
)
from zerokv_spec.pool import Policy
from zerokv_spec.stats import ManagerStats, PoolStats

__all__ = ["CacheConfig", "CacheManager", "TierLookup"]

log = logging.getLogger("zerokv")


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
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    #: Index backend: "auto" (host index on the CPU, device index on CUDA), "device", "host".
    index: str = "auto"

    def __post_init__(self) -> None:
        self.spec_config()  # validates the shared fields with the spec's own rules
        for name in ("num_heads", "head_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
        if not isinstance(self.dtype, torch.dtype) or not self.dtype.is_floating_point:
            raise ConfigError(f"dtype must be a floating torch.dtype, got {self.dtype!r}")

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
        """LightZero's sizes from ``num_simulations`` and ``max_cache_size`` (spec §3)."""
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


@dataclass(frozen=True)
class TierLookup:
    """``[B]`` tensors: tier (``Tier`` codes), slot in that tier's pool (-1 on a miss),
    whether a collision was seen (misses only), and the global slab slot to gather."""

    tier: torch.Tensor
    slot: torch.Tensor
    collided: torch.Tensor
    global_slot: torch.Tensor


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
        )
        # The slab's own device ("cuda" becomes "cuda:0"): inputs are compared with it.
        self.device = self.slab.device
        self.root = make_index(cfg.policy, cfg.env_num, cfg.root_capacity, self.device, cfg.index)
        self.recurrent = make_index(cfg.policy, 1, cfg.recurrent_capacity, self.device, cfg.index)
        self.shape = (cfg.num_layers, cfg.num_heads, cfg.head_dim)
        #: Lookups so far (host) and, on the device, ``[root_hits, recurrent_hits]``.
        self.queries = 0
        self.counters = torch.zeros(2, dtype=torch.int64, device=self.device)
        self.key_tags, self.fp_tags = env_tags(cfg.env_num, self.device)
        # With both tiers indexed on the host (a CPU cache), lookups and stores do their
        # bookkeeping on host lists: each of the ~30 small tensor operations of the
        # device path costs more on a CPU than the whole batch's dict work. The hit
        # counters then live on the host as well.
        self.host_path = isinstance(self.root, HostIndex) and isinstance(self.recurrent, HostIndex)
        self.host_hits = [0, 0]
        self._key_tag_list: list[int] = self.key_tags.tolist()
        self._fp_tag_list: list[int] = self.fp_tags.tolist()
        self.search_budget: int | None = None
        self.search_used = 0
        self._env_cache: dict[tuple[int, ...], torch.Tensor] = {}
        log.debug(
            "zerokv manager: %d root pools x %d slots, recurrent %d slots, %d bytes per entry",
            cfg.env_num,
            cfg.root_capacity,
            cfg.recurrent_capacity,
            self.slab.entry_bytes,
        )

    # ------------------------------------------------------------------ helpers
    def _envs(self, ids: tuple[int, ...]) -> torch.Tensor:
        cached = self._env_cache.get(ids)
        if cached is None:
            cached = torch.tensor(ids, dtype=torch.int64).to(self.device)
            if len(self._env_cache) < 64:
                self._env_cache[ids] = cached
        return cached

    def _rows(
        self,
        env_ids: Sequence[int] | torch.Tensor,
        keys: torch.Tensor,
        fingerprints: torch.Tensor | None,
        has_fingerprint: torch.Tensor | None,
    ) -> tuple[tuple[int, ...], torch.Tensor]:
        """The env ids as host ints and as a device tensor, after checking every argument."""
        # The spec's order: row counts first, then each row's values.
        ids = env_id_list(env_ids, None)
        check_keys(keys, self.device)
        if keys.shape[0] != len(ids):
            raise BatchError(f"got {len(ids)} env ids but {keys.shape[0]} keys")
        check_fingerprints(fingerprints, has_fingerprint, keys.shape[0], self.device)
        check_env_range(ids, self.config.env_num)
        return ids, self._envs(ids)

    def _host_recurrent_rows(
        self, ids: Sequence[int], keys: list[int], fps: list[int | None], has: list[bool]
    ) -> tuple[list[int], list[int | None], list[bool]]:
        """``recurrent_keys`` on host lists (Python's xor of two int64 values is an int64)."""
        if self.config.scope is Scope.GLOBAL:
            return keys, fps, has
        kt, ft = self._key_tag_list, self._fp_tag_list
        scoped = [k ^ kt[e] for k, e in zip(keys, ids)]
        scoped_fps: list[int | None] = [
            (f if h and f is not None else 0) ^ ft[e] for f, h, e in zip(fps, has, ids)
        ]
        return scoped, scoped_fps, [True] * len(keys)

    def recurrent_keys(
        self,
        envs: torch.Tensor,
        keys: torch.Tensor,
        fingerprints: torch.Tensor | None,
        has_fingerprint: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The recurrent pool's keys / fingerprints / mask (``Scope.ENV`` binds the env)."""
        if self.config.scope is Scope.GLOBAL:
            return keys, fingerprints, has_fingerprint
        fp = torch.zeros_like(keys) if fingerprints is None else fingerprints
        if fingerprints is None:
            has = torch.zeros_like(keys, dtype=torch.bool)
        elif has_fingerprint is None:
            has = torch.ones_like(keys, dtype=torch.bool)
        else:
            has = has_fingerprint
        scoped_fp = scoped_fingerprints(fp, has, self.fp_tags.index_select(0, envs))
        scoped = scoped_keys(keys, self.key_tags.index_select(0, envs))
        return scoped, scoped_fp, None

    # ------------------------------------------------------------------ keys
    def keys_of(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and fingerprints ``[B]`` of latents ``[B, ...]`` (on their device)."""
        if self.key_fn is None:
            return keys_and_fingerprints(latents)
        return self.key_fn(latents), zkv64_fingerprints(latents)

    # ------------------------------------------------------------------ lookups
    def lookup_many(
        self,
        env_ids: Sequence[int] | torch.Tensor,
        keys: torch.Tensor,
        fingerprints: torch.Tensor | None = None,
        has_fingerprint: torch.Tensor | None = None,
        tiers: str = "hierarchical",
    ) -> TierLookup:
        """The fold of the spec's ``lookup`` (or ``lookup_root`` / ``lookup_recurrent``)."""
        ids, envs = self._rows(env_ids, keys, fingerprints, has_fingerprint)
        if tiers not in ("hierarchical", "root", "recurrent"):
            raise BatchError(f"tiers must be 'hierarchical', 'root' or 'recurrent', got {tiers!r}")
        if self.host_path:
            return self._lookup_host(ids, keys, fingerprints, has_fingerprint, tiers)
        rows = keys.shape[0]
        miss = torch.full_like(keys, -1)
        if tiers == "recurrent":
            root_hit = torch.zeros(rows, dtype=torch.bool, device=self.device)
            root_slot, root_coll = miss, root_hit
        else:
            r = self.root.lookup(envs, keys, fingerprints, has_fingerprint)
            root_hit, root_slot, root_coll = r.status == 1, r.slot, r.status == 2
        if tiers == "root":
            rec_hit, rec_slot, rec_coll = (
                torch.zeros_like(root_hit),
                miss,
                torch.zeros_like(root_hit),
            )
        else:
            rk, rf, rh = self.recurrent_keys(envs, keys, fingerprints, has_fingerprint)
            q = self.recurrent.lookup(torch.zeros_like(envs), rk, rf, rh, active=~root_hit)
            rec_hit, rec_slot, rec_coll = q.status == 1, q.slot, q.status == 2
        # A row hits at most one tier (the recurrent lookup is inactive where the root hit).
        tier = root_hit.long() * int(Tier.ROOT) + rec_hit.long() * int(Tier.RECURRENT)
        hit = root_hit | rec_hit
        slot = torch.where(root_hit, root_slot, rec_slot)
        global_slot = torch.where(
            root_hit,
            envs * self.config.root_capacity + root_slot,
            torch.where(
                rec_hit, self.recurrent_base + rec_slot, torch.full_like(keys, self.slab.zero)
            ),
        )
        # Queries are a host count (the batch size); only the tier hits live on the device.
        self.queries += rows
        self.counters += torch.stack([root_hit.sum(), rec_hit.sum()])
        if log.isEnabledFor(logging.DEBUG):  # reads the device: only when debugging
            for env, key, t, s_ in zip(envs.tolist(), keys.tolist(), tier.tolist(), slot.tolist()):
                log.debug("lookup env=%d key=%d tier=%s slot=%d", env, key, Tier(t).name, s_)
        return TierLookup(tier, slot, ~hit & (root_coll | rec_coll), global_slot)

    def _lookup_host(
        self,
        ids: tuple[int, ...],
        keys: torch.Tensor,
        fingerprints: torch.Tensor | None,
        has_fingerprint: torch.Tensor | None,
        tiers: str,
    ) -> TierLookup:
        """``lookup`` with both tiers on the host: the same fold on Python lists."""
        assert isinstance(self.root, HostIndex) and isinstance(self.recurrent, HostIndex)
        key_list, fps, has = host_rows(keys, fingerprints, has_fingerprint)
        rows = len(key_list)
        if tiers == "recurrent":
            r_status, r_slot = [0] * rows, [-1] * rows
        else:
            r_status, r_slot = self.root.lookup_rows(list(ids), key_list, fps, has, None)
        if tiers == "root":
            c_status, c_slot = [0] * rows, [-1] * rows
        else:
            rk, rf, rh = self._host_recurrent_rows(ids, key_list, fps, has)
            c_status, c_slot = self.recurrent.lookup_rows(
                [0] * rows, rk, rf, rh, [s != 1 for s in r_status]
            )
        cap, base, zero = self.config.root_capacity, self.recurrent_base, self.slab.zero
        tier, slot, collided, flat = [0] * rows, [-1] * rows, [False] * rows, [zero] * rows
        root_hits = rec_hits = 0
        for b in range(rows):
            if r_status[b] == 1:
                tier[b], slot[b], flat[b] = int(Tier.ROOT), r_slot[b], ids[b] * cap + r_slot[b]
                root_hits += 1
            elif c_status[b] == 1:
                tier[b], slot[b], flat[b] = int(Tier.RECURRENT), c_slot[b], base + c_slot[b]
                rec_hits += 1
            else:
                collided[b] = r_status[b] == 2 or c_status[b] == 2
        self.queries += rows
        self.host_hits[0] += root_hits
        self.host_hits[1] += rec_hits
        if log.isEnabledFor(logging.DEBUG):
            for env, key, t, s_ in zip(ids, key_list, tier, slot):
                log.debug("lookup env=%d key=%d tier=%s slot=%d", env, key, Tier(t).name, s_)
        # One host-to-tensor conversion for all four fields (each costs microseconds).
        both = torch.tensor([tier, slot, flat, collided], dtype=torch.int64, device=self.device)
        return TierLookup(both[0], both[1], both[3].bool(), both[2])

    def gather(self, found: TierLookup, width: int | None = None) -> Batch:
        """The entries ``found`` hit, as a batch (``width`` default ``cl``: static shape)."""
        if found.global_slot.shape[0] == 0:
            raise BatchError("cannot assemble an empty batch")  # the spec's gather refuses it
        return self.slab.gather(found.global_slot, width)

    def gather_append(self, found: TierLookup, new_kv: torch.Tensor) -> Batch:
        """``append(gather(found), new_kv, cl)`` in one pass: the MCTS step's batch.

        ``new_kv`` is ``[L, 2, B, H, t, d]`` (the model's ``t`` new tokens). The entries are
        gathered straight into the columns the append keeps, so the batch is written once
        (``gather`` then ``append`` would copy it twice). The spec's name for the same
        composition is ``CacheManager.gather_append``.
        """
        if found.global_slot.shape[0] == 0:
            raise BatchError("cannot assemble an empty batch")
        return gather_append(self.slab.kv, self.slab.lengths, found.global_slot, new_kv)

    def gather_reserve(self, found: TierLookup, t: int) -> Batch:
        """``gather_append(found, zeros)`` with ``t`` zero tokens: room for a model's new
        tokens, which it writes in place into ``batch.kv[:, :, :, :, -t:, :]`` (layer by
        layer, as its attention produces them). The spec's ``gather_reserve``.
        """
        if found.global_slot.shape[0] == 0:
            raise BatchError("cannot assemble an empty batch")
        return gather_reserve(self.slab.kv, self.slab.lengths, found.global_slot, t)

    def read(self, found: TierLookup) -> Entries:
        """Copies of the entries ``found`` hit, in slab layout (misses: empty entries)."""
        return self.slab.read(found.global_slot)

    # ------------------------------------------------------------------ stores
    def _put(
        self,
        tier: Tier,
        envs: torch.Tensor,
        keys: torch.Tensor,
        entries: Entries,
        fingerprints: torch.Tensor | None,
        has_fingerprint: torch.Tensor | None,
        priorities: torch.Tensor | None,
        has_priority: torch.Tensor | None,
    ) -> PutOutcome:
        if tier is Tier.ROOT:
            index, base = self.root, 0
            out = index.put(envs, keys, fingerprints, has_fingerprint, priorities, has_priority)
        else:
            index, base = self.recurrent, self.recurrent_base
            rk, rf, rh = self.recurrent_keys(envs, keys, fingerprints, has_fingerprint)
            out = index.put(torch.zeros_like(envs), rk, rf, rh, priorities, has_priority)
        target = torch.where(
            out.write == index.trash, torch.full_like(out.write, self.slab.trash), out.write + base
        )
        self.slab.write(target, entries)
        return self._stored(tier, envs, keys, out)

    def _stored(
        self, tier: Tier, envs: torch.Tensor, keys: torch.Tensor, out: PutOutcome
    ) -> PutOutcome:
        """After a put and its write (either path): the search count, debug log, contracts."""
        if tier is Tier.RECURRENT and self.search_budget is not None:
            self.search_used += keys.shape[0]
        if log.isEnabledFor(logging.DEBUG):  # reads the device: only when debugging
            self._log_put(tier, envs, keys, out)
        if checks.ENABLED:
            self.check()
        return out

    def _store_planned(
        self,
        tier: Tier,
        ids: tuple[int, ...],
        envs: torch.Tensor,
        keys: torch.Tensor,
        batch: Batch,
        correction: Correction,
        plan: RowPlan,
        fingerprints: torch.Tensor | None,
        has_fingerprint: torch.Tensor | None,
        priorities: torch.Tensor | None,
        has_priority: torch.Tensor | None,
    ) -> PutOutcome:
        """A batch store with host bookkeeping (the CPU path; every argument is checked).

        The index decides the slots first; when they are consecutive (a FIFO pool taking
        a batch of new keys: the common case), the rows are computed straight into that
        slice of the slab, so the stored K/V are written once and never staged.
        """
        assert isinstance(self.root, HostIndex) and isinstance(self.recurrent, HostIndex)
        key_list, fps, has = host_rows(keys, fingerprints, has_fingerprint)
        rows = len(key_list)
        prios = host_priorities(priorities, has_priority)
        if tier is Tier.ROOT:
            index, base = self.root, 0
            put = index.put_rows(list(ids), key_list, fps, has, prios)
        else:
            index, base = self.recurrent, self.recurrent_base
            rk, rf, rh = self._host_recurrent_rows(ids, key_list, fps, has)
            put = index.put_rows([0] * rows, rk, rf, rh, prios)
        trash = self.slab.trash
        targets = [trash if w == index.trash else w + base for w in put.write]
        lengths = torch.tensor(plan.out_lengths, dtype=torch.int64, device=self.device)
        first = targets[0]
        # A batch that is itself a view of the slab is computed out of place (an in-place
        # write could read rows it has already overwritten).
        aliased = batch.kv.untyped_storage().data_ptr() == self.slab.kv.untyped_storage().data_ptr()
        if not aliased and targets == list(range(first, first + rows)):
            dest = self.slab.kv[:, :, first : first + rows]
            write_rows(batch, plan, correction, dest, lengths)
            self.slab.lengths[first : first + rows] = lengths
        else:
            kv = write_rows(batch, plan, correction, None, lengths)
            self.slab.write(
                torch.tensor(targets, dtype=torch.int64, device=self.device), Entries(kv, lengths)
            )
        return self._stored(tier, envs, keys, put.outcome(self.device))

    def _log_put(self, tier: Tier, envs: torch.Tensor, keys: torch.Tensor, out: PutOutcome) -> None:
        rows = zip(
            envs.tolist(),
            keys.tolist(),
            out.slot.tolist(),
            out.inserted.tolist(),
            [e if m else None for e, m in zip(out.evicted.tolist(), out.evicted_mask.tolist())],
        )
        for env, key, slot, inserted, evicted in rows:
            pool = f"root[{env}]" if tier is Tier.ROOT else f"recurrent (env {env})"
            log.debug(
                "store %s key=%d slot=%d %s evicted=%s",
                pool,
                key,
                slot,
                "insert" if inserted else "update",
                evicted,
            )

    def _check_store(
        self,
        env_ids: Sequence[int] | torch.Tensor,
        keys: torch.Tensor,
        fingerprints: torch.Tensor | None,
        has_fingerprint: torch.Tensor | None,
        priorities: torch.Tensor | None,
        has_priority: torch.Tensor | None,
    ) -> tuple[tuple[int, ...], torch.Tensor]:
        ids, envs = self._rows(env_ids, keys, fingerprints, has_fingerprint)
        check_priorities(priorities, has_priority, keys.shape[0], self.device)
        self.root.check_priorities(priorities)
        check_finite_priorities(priorities, has_priority)
        return ids, envs

    def _check_budget(self, tier: Tier, stores: int) -> None:
        budget = self.search_budget
        if tier is Tier.RECURRENT and budget is not None and self.search_used + stores > budget:
            raise SearchCapacityError(
                f"the search declared {budget} recurrent stores and has made "
                f"{self.search_used}; {stores} more would exceed it"
            )

    def _store_batch(
        self,
        tier: Tier,
        env_ids: Sequence[int] | torch.Tensor,
        keys: torch.Tensor,
        batch: Batch,
        correction: Correction,
        fingerprints: torch.Tensor | None,
        has_fingerprint: torch.Tensor | None,
        priorities: torch.Tensor | None,
        has_priority: torch.Tensor | None,
    ) -> PutOutcome:
        # The spec's order: the batch and the table, then the rows, then the search budget.
        cfg = self.config
        check_keys(keys, self.device)
        check_batch(batch, keys.shape[0], self.shape, cfg.context_length, self.device, cfg.dtype)
        if not isinstance(correction, Correction):
            raise BatchError(f"expected a zerokv Correction, got {type(correction).__name__}")
        correction.check(batch.kv, cfg.context_length)
        ids, envs = self._check_store(
            env_ids, keys, fingerprints, has_fingerprint, priorities, has_priority
        )
        self._check_budget(tier, keys.shape[0])
        if self.host_path:
            plan = plan_rows(batch, cfg.context_length, correction)
            if plan is not None:
                return self._store_planned(
                    tier,
                    ids,
                    envs,
                    keys,
                    batch,
                    correction,
                    plan,
                    fingerprints,
                    has_fingerprint,
                    priorities,
                    has_priority,
                )
        entries = store_rows(batch, cfg.context_length, correction)
        return self._put(
            tier, envs, keys, entries, fingerprints, has_fingerprint, priorities, has_priority
        )

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
    ) -> PutOutcome:
        """Split ``batch``, window rule, store row ``b`` in ``env_ids[b]``'s root pool."""
        return self._store_batch(
            Tier.ROOT,
            env_ids,
            keys,
            batch,
            correction,
            fingerprints,
            has_fingerprint,
            priorities,
            has_priority,
        )

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
    ) -> PutOutcome:
        """Split ``batch``, window rule, store every row in the recurrent pool."""
        return self._store_batch(
            Tier.RECURRENT,
            env_ids,
            keys,
            batch,
            correction,
            fingerprints,
            has_fingerprint,
            priorities,
            has_priority,
        )

    def _store_many(
        self,
        tier: Tier,
        env_ids: Sequence[int] | torch.Tensor,
        keys: torch.Tensor,
        entries: Entries,
        fingerprints: torch.Tensor | None,
        has_fingerprint: torch.Tensor | None,
        priorities: torch.Tensor | None,
        has_priority: torch.Tensor | None,
    ) -> PutOutcome:
        _, envs = self._check_store(
            env_ids, keys, fingerprints, has_fingerprint, priorities, has_priority
        )
        cfg = self.config
        check_entries(
            entries, keys.shape[0], self.shape, cfg.context_length, self.device, cfg.dtype
        )
        self._check_budget(tier, keys.shape[0])
        return self._put(
            tier, envs, keys, entries, fingerprints, has_fingerprint, priorities, has_priority
        )

    def store_root_many(
        self,
        env_ids: Sequence[int] | torch.Tensor,
        keys: torch.Tensor,
        entries: Entries,
        fingerprints: torch.Tensor | None = None,
        has_fingerprint: torch.Tensor | None = None,
        priorities: torch.Tensor | None = None,
        has_priority: torch.Tensor | None = None,
    ) -> PutOutcome:
        """Store ready entries (slab layout) in the root pools; the fold of ``store_root``."""
        return self._store_many(
            Tier.ROOT,
            env_ids,
            keys,
            entries,
            fingerprints,
            has_fingerprint,
            priorities,
            has_priority,
        )

    def store_recurrent_many(
        self,
        env_ids: Sequence[int] | torch.Tensor,
        keys: torch.Tensor,
        entries: Entries,
        fingerprints: torch.Tensor | None = None,
        has_fingerprint: torch.Tensor | None = None,
        priorities: torch.Tensor | None = None,
        has_priority: torch.Tensor | None = None,
    ) -> PutOutcome:
        """Store ready entries in the recurrent pool; the fold of ``store_recurrent``."""
        return self._store_many(
            Tier.RECURRENT,
            env_ids,
            keys,
            entries,
            fingerprints,
            has_fingerprint,
            priorities,
            has_priority,
        )

    # ------------------------------------------------------------------ priorities
    def set_priority(self, tier: Tier, env_id: int, key: int, priority: float) -> None:
        """Change the priority of a stored key of ``tier`` (priority policy only)."""
        (env,) = env_id_list([env_id], self.config.env_num)
        from zerokv_spec.keys import check_key

        check_key(key)
        if tier is Tier.ROOT:
            self.root.set_priority(env, key, priority)
        elif tier is Tier.RECURRENT:
            envs = torch.tensor([env], device=self.device)
            rk, _, _ = self.recurrent_keys(
                envs, torch.tensor([key], device=self.device), None, None
            )
            self.recurrent.set_priority(0, int(rk.item()), priority)
        else:
            raise BatchError(f"tier must be ROOT or RECURRENT, got {tier!r}")

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

    def end_search(self) -> None:
        """End the declared search."""
        self.search_budget = None
        self.search_used = 0

    # ------------------------------------------------------------------ clearing
    def clear_env(self, env_id: int) -> None:
        """Empty environment ``env_id``'s root pool."""
        (env,) = env_id_list([env_id], self.config.env_num)
        self.root.clear(env)
        log.debug("zerokv: cleared root pool of env %d", env)

    def clear_roots(self) -> None:
        """Empty every root pool."""
        self.root.clear(None)

    def clear_recurrent(self) -> None:
        """Empty the recurrent pool."""
        self.recurrent.clear(None)

    def clear_all(self) -> None:
        """Empty every pool (statistics and storage are kept)."""
        self.clear_roots()
        self.clear_recurrent()
        log.debug("zerokv: cleared every pool")

    # ------------------------------------------------------------------ statistics
    def stats(self) -> ManagerStats:
        """The manager's lookup counters (reads the device)."""
        device_root, device_recurrent = (int(v) for v in self.counters.tolist())
        root_hits = device_root + self.host_hits[0]
        recurrent_hits = device_recurrent + self.host_hits[1]
        hits = root_hits + recurrent_hits
        return ManagerStats(self.queries, hits, self.queries - hits, root_hits, recurrent_hits)

    def root_stats(self, env_id: int | None = None) -> PoolStats:
        """One environment's root pool statistics, or the tier's sum."""
        if env_id is not None:
            (env_id,) = env_id_list([env_id], self.config.env_num)
        return self.root.stats_of(env_id)

    def recurrent_stats(self) -> PoolStats:
        return self.recurrent.stats_of(0)

    def reset_stats(self) -> None:
        self.queries = 0
        self.counters.zero_()
        self.host_hits = [0, 0]
        self.root.reset_stats()
        self.recurrent.reset_stats()

    # ------------------------------------------------------------------ inspection
    def root_slot_keys(self, env_id: int) -> list[int | None]:
        (env,) = env_id_list([env_id], self.config.env_num)
        return self.root.slot_keys(env)

    def recurrent_slot_keys(self) -> list[int | None]:
        return self.recurrent.slot_keys(0)

    def root_sizes(self) -> list[int]:
        """Stored entries of every environment's root pool (one device read)."""
        return self.root.sizes()

    def recurrent_size(self) -> int:
        """Stored entries of the recurrent pool (one device read)."""
        return self.recurrent.size(0)

    def entry_at(self, tier: Tier, env_id: int, slot: int) -> Entries:
        """A copy of the entry in ``slot`` of a tier's pool (one row of ``Entries``)."""
        if tier is Tier.ROOT:
            (env,) = env_id_list([env_id], self.config.env_num)
            flat = env * self.config.root_capacity + self.root.check_slot(slot)
        else:
            flat = self.recurrent_base + self.recurrent.check_slot(slot)
        return self.slab.read(torch.tensor([flat], device=self.device))

    @property
    def storage_bytes(self) -> int:
        return self.slab.storage_bytes

    def stored_entries(self) -> int:
        """Entries stored in every pool (reads the device)."""
        return self.root.stored() + self.recurrent.stored()

    def check(self) -> None:
        """Runtime contracts: both indexes, stored lengths, statistics identities."""
        self.root.check()
        self.recurrent.check()
        lengths = self.slab.lengths[: self.slab.num_slots]
        if bool(((lengths < 0) | (lengths > self.config.context_length)).any()):
            raise ContractViolation("a stored length lies outside [0, cl]")
        self.stats().check()
