"""``KVCacheManager``: the drop-in for LightZero main's ``KVCacheManager``.

This module owns the manager LightZero's world model and policy talk to. Its surface is
LightZero main's (commit 9f717c80: ``lzero/model/unizero_world_models/kv_cache_manager.py``
and its users ``world_model.py`` and ``lzero/policy/unizero.py``), read and written anew:

* the constructor ``KVCacheManager(config, env_num, enable_stats=True,
  clear_recur_log_freq=1000, clear_all_log_freq=100)`` with LightZero's defaults
  (``num_simulations`` 50, ``max_cache_size`` 5000 when the config has none), plus
  zerokv's keyword-only ``device``, ``dtype``, ``shadow``, ``hit_rate_window``;
* LightZero's parameter names (``env_id``, ``cache_key``, ``kv_cache``), so keyword and
  positional calls both work; ``set_*`` return the slot index, as LightZero's do;
* the pools ``init_pools[e]``, ``recur_pool``, ``wm_pool`` (``KVCachePool``: ``clear()``,
  ``len()``, ``get``, ``set``, ``stats``, and a read-only view of the stored keys,
  ``key_to_slot``, also under LightZero's name ``_key_to_index``), the world-model pool's
  ``get_wm_cache`` / ``set_wm_cache``, the staging lists ``keys_values_wm_list`` /
  ``keys_values_wm_size_list`` (emptied by ``clear_all``), the counters
  ``recur_clear_count`` (``_clear_recur_counter``) and ``_clear_all_counter``, and
  ``get_stats_summary()`` with LightZero's keys (``stats_enabled``, ``init_pools``,
  ``recur_pool``, ``wm_pool``) next to zerokv's.

Semantics (LightZero's, with its known faults fixed):

* **Pools** - per environment a root ("init") pool of
  ``min(max_cache_size, max(256, 2 * num_simulations))`` slots, one recurrent pool of
  ``num_simulations * env_num`` slots, one world-model pool of ``env_num`` slots; FIFO
  rings (``zerokv_spec.manager.ManagerConfig.legacy``). Recurrent keys carry no
  environment id (``Scope.GLOBAL``: the last writer wins). Keys are trusted, as LightZero's
  callers pass only the key.
* **Keys** - ints in ``[-2**63, 2**64)``: LightZero's unsigned ``xxh64`` digests or their
  signed twins, which name the same entry; pools show keys in LightZero's unsigned form.
* **Private storage** - ``set_*`` copies the tensors into the manager's own storage
  (``zerokv.lightzero.store``); nothing of the caller's object is kept. A lookup returns a
  ``KVSnapshot``: ``.size`` and ``.clone()`` (LightZero's world model clones every hit)
  give a new object of the caller's class; mutating anything a caller holds never changes
  a pool, and a snapshot keeps showing the entry as it was when looked up (copy-on-write).
* **Statistics** - one ``get_*`` / ``hierarchical_get`` call is one query of the overall
  counters whatever pools it visited; each pool counts the queries that reached it (as
  LightZero's pools do). The world-model pool has its own counters only.
* **Diagnostics** - a ``zerokv.diagnostics.HitRateMonitor`` watches the root
  (``get_init_cache``), hierarchical and recurrent lookups and logs one warning when a
  window of ``hit_rate_window`` lookups had no hit while entries were stored.
* **Errors** - a malformed object raises ``EntryError``, ``ShapeError``, ``DTypeError`` or
  ``DeviceError``; a bad environment id ``EnvIdError`` (a ``ValueError``, as LightZero's);
  a bad key ``KeyRangeError``; a bad config ``ConfigError``. A call that raises changes
  nothing.

Shape ``(L, H, d, cl)`` comes from the config (LightZero's names ``num_layers``,
``num_heads``, ``embed_dim`` with ``d = embed_dim // num_heads``, and ``context_length``
or else ``2 * infer_context_length``); device from the ``device`` argument or
``config.device``; dtype from the ``dtype`` argument. Whatever is not given is taken from
the first stored object, and the storage is allocated then.

``shadow=True`` checks every call against ``zerokv.ShadowManager`` (``zerokv.CacheManager``
with the reference model beside it): the slot and evicted key of every store, the tier,
slot and K/V of every lookup, the counters. A debugging tool: many times slower.

Logging: ``logging.getLogger("zerokv.lightzero")``; with per-row tracing on
(``zerokv.trace``) debug records name the call, the pool, the key and the slot; clears are
logged at INFO every ``clear_*_log_freq`` calls, as
LightZero does.
"""

from __future__ import annotations

import logging
import operator
import types
from collections.abc import Callable, Mapping
from typing import Any

import torch

from zerokv import trace
from zerokv.diagnostics import DEFAULT_CAUSES, DEFAULT_WINDOW, HitRateMonitor
from zerokv.entry import Entries
from zerokv.errors import ConfigError, EnvIdError
from zerokv.lightzero.layout import (
    DEFAULT_MAX_CACHE_SIZE,
    Format,
    KeysValuesLike,
    ObjectPlan,
    check_object,
    unsigned_key,
)
from zerokv.lightzero.store import KVSnapshot, Ring, RowStore, new_snapshot
from zerokv.manager import CacheConfig, TierLookup
from zerokv.shadow import ShadowDivergence, ShadowManager
from zerokv_spec.entry import MIN_CONTEXT_LENGTH
from zerokv_spec.keys import to_signed
from zerokv_spec.manager import Scope, Tier, legacy_recurrent_capacity, legacy_root_capacity
from zerokv_spec.pool import Policy
from zerokv_spec.stats import ManagerStats, PoolStats

__all__ = [
    "DEFAULT_CLEAR_ALL_LOG_FREQ",
    "DEFAULT_CLEAR_RECUR_LOG_FREQ",
    "DEFAULT_NUM_SIMULATIONS",
    "CacheStats",
    "KVCacheManager",
    "KVCachePool",
]

log = logging.getLogger("zerokv.lightzero")

#: LightZero's default ``num_simulations`` when the config has none.
DEFAULT_NUM_SIMULATIONS = 50
#: LightZero's defaults for how often clears are logged.
DEFAULT_CLEAR_RECUR_LOG_FREQ = 1000
DEFAULT_CLEAR_ALL_LOG_FREQ = 100

_TWO64 = 1 << 64

#: Why a tier keeps missing in LightZero (the hit-rate warning's likely causes).
LIGHTZERO_CAUSES = {
    "root": (
        "the root lookup of the next step (get_init_cache) hashes the embedding of the "
        "previous observation as the policy kept it, while the root was stored under the "
        "latent of the observation as it came: LightZero's UniZero policy keeps vector "
        "observations in an int64 buffer (last_batch_obs), so float observations are "
        "truncated and never match; or init_pools[e].clear() / clear_all() run every step; "
        "or " + DEFAULT_CAUSES
    ),
    "hierarchical": (
        "the parents' latents reach recurrent_inference in another dtype or layout than "
        "the one their entries were hashed with at store time; or clear_recur_cache() / "
        "clear_all() runs between the store and the lookup; or the recurrent pool "
        "(num_simulations * env_num) is smaller than a search; or " + DEFAULT_CAUSES
    ),
    "recurrent": DEFAULT_CAUSES,
}


# --------------------------------------------------------------------------- config


def _no_storage(row: int) -> KVSnapshot:
    raise AssertionError("a pool holds a key but the storage does not exist")


def _no_write(row: int, tensors: list[torch.Tensor], size: int) -> None:
    raise AssertionError("a store before the storage exists")


def _config_value(config: object, name: str) -> object:
    if isinstance(config, Mapping):
        return config.get(name)
    return getattr(config, name, None)


def _config_int(config: object, name: str, default: int | None = None) -> int | None:
    value = _config_value(config, name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"config.{name} must be an int >= 1, got {value!r}")
    return value


def _canonical_device(device: object) -> torch.device:
    """``torch.device`` with the index a tensor created there would report ("cuda:0")."""
    try:
        dev: torch.device = torch.device(device)  # type: ignore[call-overload]
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"not a device: {device!r} ({err})") from None
    if dev.type not in ("cpu", "meta") and dev.index is None:
        try:
            dev = torch.device(torch.empty(0, device=dev).device)
        except RuntimeError as err:
            raise ConfigError(f"device {dev} is not usable here ({err})") from None
    return dev


def _count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be an int >= 0, got {value!r}")
    return value


# --------------------------------------------------------------------------- pools


class CacheStats:
    """LightZero's per-pool ``CacheStats`` (hits, misses, evictions, total_queries)."""

    def __init__(self, ring: Ring) -> None:
        self._ring = ring

    @property
    def hits(self) -> int:
        return self._ring.hits

    @property
    def misses(self) -> int:
        return self._ring.queries - self._ring.hits

    @property
    def evictions(self) -> int:
        return self._ring.evictions

    @property
    def total_queries(self) -> int:
        return self._ring.queries

    @property
    def hit_rate(self) -> float:
        queries = self._ring.queries
        return self._ring.hits / queries if queries else 0.0

    @property
    def miss_rate(self) -> float:
        return 1.0 - self.hit_rate

    def reset(self) -> None:
        self._ring.reset_stats()

    def __repr__(self) -> str:
        return (
            f"CacheStats(hits={self.hits}, misses={self.misses}, "
            f"evictions={self.evictions}, hit_rate={self.hit_rate:.2%})"
        )


class KVCachePool:
    """One pool of the drop-in as LightZero's code sees it (``init_pools[e]`` and so on).

    ``clear()`` empties it (statistics are kept); ``len()`` counts its entries;
    ``key_to_slot`` (LightZero's name: ``_key_to_index``) is a read-only live view
    ``{key: slot}`` of the keys it holds, in LightZero's unsigned form, so
    ``contexts.keys() - pool._key_to_index.keys()`` works as in LightZero's world model.
    ``get`` / ``set`` look up / store in this pool only. ``stats`` is LightZero's
    ``CacheStats`` (``None`` with ``enable_stats=False``).
    """

    def __init__(self, owner: KVCacheManager, ring: Ring, kind: str, env_id: int = 0) -> None:
        self._owner = owner
        self._ring = ring
        self._kind = kind
        self._env_id = env_id
        self.name = ring.name
        self.pool_size = ring.capacity
        self.eviction_strategy = Policy.FIFO
        self.enable_stats = owner.enable_stats
        self.stats: CacheStats | None = CacheStats(ring) if owner.enable_stats else None
        self._view = types.MappingProxyType(ring.index)

    @property
    def key_to_slot(self) -> Mapping[int, int]:
        """A read-only live view ``{key: slot}`` of the stored keys."""
        return self._view

    @property
    def _key_to_index(self) -> Mapping[int, int]:
        """LightZero's name for ``key_to_slot``."""
        return self._view

    def slot_keys(self) -> list[int | None]:
        """The key in every slot (``None``: empty), in slot order."""
        return list(self._ring.keys)

    def get(self, cache_key: int) -> KeysValuesLike | None:
        """The entry under ``cache_key`` in this pool, or None."""
        return self._owner._pool_get(self._kind, self._env_id, cache_key)

    def set(self, cache_key: int, kv_cache: KeysValuesLike) -> int:
        """Store a private copy of ``kv_cache`` in this pool; returns its slot."""
        return self._owner._pool_set(self._kind, self._env_id, cache_key, kv_cache)

    def clear(self) -> None:
        """Empty this pool (statistics are kept)."""
        self._owner._clear_pool(self._kind, self._env_id)

    def __len__(self) -> int:
        return len(self._ring.index)

    def __repr__(self) -> str:
        stats = f", {self.stats}" if self.stats is not None else ""
        return (
            f"KVCachePool(name='{self.name}', size={len(self)}/{self.pool_size}, "
            f"strategy=fifo{stats})"
        )


# --------------------------------------------------------------------------- manager


class KVCacheManager:
    """LightZero main's ``KVCacheManager`` surface, zerokv's semantics (module docstring)."""

    def __init__(
        self,
        config: object,
        env_num: int,
        enable_stats: bool = True,
        clear_recur_log_freq: int = DEFAULT_CLEAR_RECUR_LOG_FREQ,
        clear_all_log_freq: int = DEFAULT_CLEAR_ALL_LOG_FREQ,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        shadow: bool = False,
        hit_rate_window: int = DEFAULT_WINDOW,
    ) -> None:
        if isinstance(env_num, bool) or not isinstance(env_num, int) or env_num < 1:
            raise ConfigError(f"env_num must be an int >= 1, got {env_num!r}")
        num_simulations = _config_int(config, "num_simulations", DEFAULT_NUM_SIMULATIONS)
        max_cache_size = _config_int(config, "max_cache_size", DEFAULT_MAX_CACHE_SIZE)
        assert num_simulations is not None and max_cache_size is not None
        self.config = config
        self.env_num = env_num
        self.enable_stats = bool(enable_stats)
        self.clear_recur_log_freq = _count(clear_recur_log_freq, "clear_recur_log_freq")
        self.clear_all_log_freq = _count(clear_all_log_freq, "clear_all_log_freq")
        self._clear_recur_counter = 0
        self._clear_all_counter = 0
        self.shadow = bool(shadow)
        self.num_simulations = num_simulations
        self.max_cache_size = max_cache_size
        self.root_capacity = legacy_root_capacity(num_simulations, max_cache_size)
        self.recurrent_capacity = legacy_recurrent_capacity(num_simulations, env_num)
        self.wm_capacity = env_num

        self._num_layers = _config_int(config, "num_layers")
        self._num_heads = _config_int(config, "num_heads")
        embed_dim = _config_int(config, "embed_dim")
        self._head_dim: int | None = None
        if embed_dim is not None and self._num_heads is not None:
            if embed_dim % self._num_heads:
                raise ConfigError(
                    f"embed_dim {embed_dim} is not a multiple of num_heads {self._num_heads}"
                )
            self._head_dim = embed_dim // self._num_heads
        self._context_length = _config_int(config, "context_length")
        if self._context_length is None:
            infer = _config_int(config, "infer_context_length")
            self._context_length = None if infer is None else 2 * infer
        if self._context_length is not None and self._context_length < MIN_CONTEXT_LENGTH:
            raise ConfigError(
                f"context length must be >= {MIN_CONTEXT_LENGTH}, got {self._context_length}"
            )
        if device is None:
            device = _config_value(config, "device")  # type: ignore[assignment]
        self._device = None if device is None else _canonical_device(device)
        if dtype is not None and (
            not isinstance(dtype, torch.dtype) or not dtype.is_floating_point
        ):
            raise ConfigError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        self._dtype = dtype
        window = _count(hit_rate_window, "hit_rate_window")

        # Rings: the root pools, then the recurrent pool, then the world-model pool.
        cap = self.root_capacity
        self._roots = [
            Ring(f"init_env{e}", cap, e * cap, f"root pool of env {e}") for e in range(env_num)
        ]
        self._recur = Ring("recurrent", self.recurrent_capacity, env_num * cap, "recurrent pool")
        self._wm = Ring(
            "world_model", env_num, env_num * cap + self.recurrent_capacity, "world-model pool"
        )
        self._rows = self._wm.base + env_num
        self.init_pools = [KVCachePool(self, r, "root", e) for e, r in enumerate(self._roots)]
        self.recur_pool = KVCachePool(self, self._recur, "recurrent")
        self.wm_pool = KVCachePool(self, self._wm, "wm")

        #: LightZero's per-call staging lists (the world model's batch assembly uses them).
        self.keys_values_wm_list: list[KeysValuesLike] = []
        self.keys_values_wm_size_list: list[int] = []

        self._format: Format | None = None
        self._plan: ObjectPlan | None = None
        self._store: RowStore | None = None
        #: ``self._store.snapshot`` / ``.write`` once the storage exists.
        self._snapshot: Callable[[int], KVSnapshot] = _no_storage
        self._write: Callable[[int, list[torch.Tensor], int], None] = _no_write
        self._mirror: ShadowManager | None = None
        self._mirror_base = ManagerStats()

        # Hierarchical lookups (the other overall counters are derived from the rings').
        self._hier_calls = self._hier_root_hits = self._hier_recur_hits = 0
        self._checked = False
        self._monitor = HitRateMonitor(max(window, 1), causes=LIGHTZERO_CAUSES, logger=log)
        self._window = window
        self._stores = 0
        self._diagnosis_every = max(1, window // 8)
        self._next_diagnosis = self._diagnosis_every if window else -1
        known = (self._num_layers, self._num_heads, self._head_dim, self._context_length)
        if None not in known and self._device is not None and self._dtype is not None:
            self._allocate_from_config()
        self._refresh_checked()

    # ------------------------------------------------------------------ properties
    @property
    def num_layers(self) -> int | None:
        return self._num_layers

    @property
    def context_length(self) -> int | None:
        return self._context_length

    @property
    def allocated(self) -> bool:
        """Whether the storage exists (the shape is known)."""
        return self._store is not None

    @property
    def storage_bytes(self) -> int:
        """Bytes of the storage (0 before it is allocated)."""
        return 0 if self._store is None else self._store.storage_bytes

    @property
    def shadow_manager(self) -> ShadowManager | None:
        """With ``shadow=True``: the ``ShadowManager`` every call is checked against."""
        return self._mirror

    @property
    def recur_clear_count(self) -> int:
        """Calls of ``clear_recur_cache`` so far (LightZero's ``_clear_recur_counter``)."""
        return self._clear_recur_counter

    @property
    def clear_all_count(self) -> int:
        """Calls of ``clear_all`` so far (LightZero's ``_clear_all_counter``)."""
        return self._clear_all_counter

    @property
    def hit_rate_monitor(self) -> HitRateMonitor:
        return self._monitor

    # ------------------------------------------------------------------ setup
    def _allocate_from_config(self) -> None:
        """Everything is known up front: allocate now; objects must match it."""
        assert self._num_layers is not None and self._num_heads is not None
        assert self._head_dim is not None and self._context_length is not None
        assert self._device is not None and self._dtype is not None
        self._allocate(
            Format(
                self._num_layers,
                self._num_heads,
                self._context_length,
                self._head_dim,
                self._device,
                self._dtype,
            )
        )

    def _allocate(self, fmt: Format) -> None:
        """Fix the format and allocate the storage (and the shadow manager)."""
        self._num_layers, self._num_heads = fmt.num_layers, fmt.num_heads
        self._head_dim, self._context_length = fmt.head_dim, fmt.context_length
        self._device, self._dtype = fmt.device, fmt.dtype
        self._format = fmt
        self._store = RowStore(fmt, self._rows)
        self._snapshot = self._store.snapshot
        self._write = self._store.write
        if self.shadow:
            cfg = CacheConfig(
                env_num=self.env_num,
                num_layers=fmt.num_layers,
                num_heads=fmt.num_heads,
                head_dim=fmt.head_dim,
                context_length=fmt.context_length,
                root_capacity=self.root_capacity,
                recurrent_capacity=self.recurrent_capacity,
                policy=Policy.FIFO,
                scope=Scope.GLOBAL,
                device=str(fmt.device),
                dtype=fmt.dtype,
            )
            self._mirror = ShadowManager(cfg)
            self._mirror_base = self._overall()
        log.debug(
            "zerokv.lightzero: %d root pools x %d slots, recurrent pool %d slots, "
            "world-model pool %d slots, L=%d H=%d d=%d cl=%d on %s (%s)%s",
            self.env_num,
            self.root_capacity,
            self.recurrent_capacity,
            self.wm_capacity,
            fmt.num_layers,
            fmt.num_heads,
            fmt.head_dim,
            fmt.context_length,
            fmt.device,
            fmt.dtype,
            ", shadow mode" if self.shadow else "",
        )

    def _first_plan(self, kv: KeysValuesLike) -> ObjectPlan:
        """Validate the first stored object (against the config); learn its classes."""
        checked = check_object(
            kv,
            self._num_layers,
            self._num_heads,
            self._context_length,
            self._head_dim,
            self._device,
            self._dtype,
        )
        if self._store is None:
            self._allocate(checked.format)
        plan = ObjectPlan(kv, checked)
        assert self._store is not None
        self._plan = self._store.plan = plan
        return plan

    def _tensors(self, kv: KeysValuesLike) -> tuple[list[torch.Tensor], int]:
        """The 2L tensors and size of a valid ``kv`` (typed errors otherwise)."""
        plan = self._plan
        if plan is None:
            plan = self._first_plan(kv)
        fast = plan.tensors(kv)
        if fast is not None:
            return fast
        fmt = plan.format
        checked = check_object(
            kv,
            fmt.num_layers,
            fmt.num_heads,
            fmt.context_length,
            fmt.head_dim,
            fmt.device,
            fmt.dtype,
        )
        return [t.detach() for t in checked.tensors], checked.size

    # ------------------------------------------------------------------ arguments
    def _env(self, env_id: object) -> int:
        """An environment id as an int in ``[0, env_num)`` (``EnvIdError`` otherwise)."""
        if isinstance(env_id, bool):
            raise EnvIdError("env id must be an int, got bool")
        try:
            value = operator.index(env_id)  # type: ignore[arg-type]
        except TypeError:
            raise EnvIdError(f"env id must be an int, got {type(env_id).__name__}") from None
        if not 0 <= value < self.env_num:
            raise EnvIdError(f"env id must lie in [0, {self.env_num}), got {value}")
        return value

    # ------------------------------------------------------------------ lookups
    # The three lookups below are LightZero's hot path (one call per key, about a
    # microsecond each): they repeat a few lines instead of sharing helpers (the snapshot
    # is ``RowStore.snapshot`` inline), count in the pools only (the host index's
    # ``get_one``; the overall counters are derived from them, see ``_overall``) and check
    # one flag for shadow mode and debug logging together.

    def get_init_cache(self, env_id: int, cache_key: int) -> KVSnapshot | None:
        """The entry under ``cache_key`` in env ``env_id``'s root pool, or None."""
        if type(env_id) is not int or not 0 <= env_id < self.env_num:
            env_id = self._env(env_id)
        key = cache_key
        if type(key) is not int or not 0 <= key < _TWO64:
            key = unsigned_key(key)
        ring = self._roots[env_id]
        slot = ring.get(key)
        found = None
        if slot is not None:
            store: RowStore = self._store  # type: ignore[assignment]  # (a hit: it exists)
            row = ring.base + slot
            version = store.versions[row]
            if version is None:
                version = store.versions[row] = [row, store.sizes[row], None]
            found = new_snapshot(KVSnapshot)
            found._store, found._version, found._obj = store, version, None
        if self._checked:
            self._after_get("get_init_cache", "root", env_id, key, Tier.ROOT, slot)
        return found

    def get_recur_cache(self, cache_key: int) -> KVSnapshot | None:
        """The entry under ``cache_key`` in the recurrent pool, or None."""
        key = cache_key
        if type(key) is not int or not 0 <= key < _TWO64:
            key = unsigned_key(key)
        ring = self._recur
        slot = ring.get(key)
        found = None
        if slot is not None:
            store: RowStore = self._store  # type: ignore[assignment]  # (a hit: it exists)
            row = ring.base + slot
            version = store.versions[row]
            if version is None:
                version = store.versions[row] = [row, store.sizes[row], None]
            found = new_snapshot(KVSnapshot)
            found._store, found._version, found._obj = store, version, None
        if self._checked:
            self._after_get("get_recur_cache", "recurrent", 0, key, Tier.RECURRENT, slot)
        return found

    def hierarchical_get(self, env_id: int, cache_key: int) -> KVSnapshot | None:
        """Env ``env_id``'s root pool, then the recurrent pool: the hit, or None."""
        if type(env_id) is not int or not 0 <= env_id < self.env_num:
            env_id = self._env(env_id)
        key = cache_key
        if type(key) is not int or not 0 <= key < _TWO64:
            key = unsigned_key(key)
        self._hier_calls += 1
        ring = self._roots[env_id]
        slot = ring.get(key)
        tier = Tier.ROOT
        if slot is not None:
            self._hier_root_hits += 1
        else:
            ring = self._recur
            slot = ring.get(key)
            tier = Tier.RECURRENT
            if slot is not None:
                self._hier_recur_hits += 1
        found = None
        if slot is not None:
            store: RowStore = self._store  # type: ignore[assignment]  # (a hit: it exists)
            row = ring.base + slot
            version = store.versions[row]
            if version is None:
                version = store.versions[row] = [row, store.sizes[row], None]
            found = new_snapshot(KVSnapshot)
            found._store, found._version, found._obj = store, version, None
        if self._checked:
            self._after_get("hierarchical_get", "hierarchical", env_id, key, tier, slot)
        return found

    def _after_get(
        self, operation: str, tiers: str, env_id: int, key: int, tier: Tier, slot: int | None
    ) -> None:
        """Shadow comparison and debug record of a lookup (only when either is on)."""
        if slot is None:
            tier = Tier.MISS
        if self._mirror is not None:
            self._check_lookup(operation, tiers, env_id, key, tier, slot)
        if trace.per_row(log):
            if tier is Tier.MISS:
                log.debug("%s: env %d key %d: miss", operation, env_id, key)
            else:
                pool = f"root pool of env {env_id}" if tier is Tier.ROOT else "recurrent pool"
                log.debug(
                    "%s: env %d key %d: hit in the %s, slot %d", operation, env_id, key, pool, slot
                )

    def _refresh_checked(self) -> None:
        """Whether lookups must call ``_after_get`` (shadow mode, or debug logging on).

        Refreshed by every store, clear and statistics reset, so a change of the logging
        level takes effect at the next of those calls.
        """
        self._checked = self._mirror is not None or trace.per_row(log)

    def get_wm_cache(self, cache_key: int) -> KVSnapshot | None:
        """The entry under ``cache_key`` in the world-model pool, or None."""
        return self._pool_get("wm", 0, cache_key)

    def _pool_get(self, kind: str, env_id: int, cache_key: object) -> KVSnapshot | None:
        """A lookup in one pool (``KVCachePool.get``; the world-model pool)."""
        if kind == "root":
            return self.get_init_cache(env_id, cache_key)  # type: ignore[arg-type]
        if kind == "recurrent":
            return self.get_recur_cache(cache_key)  # type: ignore[arg-type]
        key = unsigned_key(cache_key)
        ring = self._wm
        slot = ring.get(key)
        if slot is None:
            return None
        return self._snapshot(ring.base + slot)

    # ------------------------------------------------------------------ stores
    def _put(self, operation: str, ring: Ring, key: int, kv: KeysValuesLike) -> int:
        """Validate ``kv``, place ``key`` in ``ring`` (FIFO) and copy ``kv`` into the slot."""
        plan = self._plan
        got = None if plan is None else plan.tensors(kv)
        if got is None:
            got = self._tensors(kv)  # the first object, or an unusual one: full checks
        tensors, size = got  # nothing has changed before this point
        slot, inserted, evicted = ring.place(key)
        self._write(ring.base + slot, tensors, size)
        self._stores += 1
        if self._stores >= self._next_diagnosis >= 0:
            self._diagnose()
            self._next_diagnosis = self._stores + self._diagnosis_every
        debug = trace.per_row(log)
        if debug:
            log.debug(
                "%s: key %d -> %s, slot %d (%s%s, %d tokens)",
                operation,
                key,
                ring.label,
                slot,
                "inserted" if inserted else "overwritten in place",
                f", evicted key {evicted}" if evicted is not None else "",
                size,
            )
        mirror = self._mirror
        if mirror is not None and ring is not self._wm:
            self._check_store(operation, ring, key, slot, evicted)
        self._checked = debug or mirror is not None
        return slot

    def set_init_cache(self, env_id: int, cache_key: int, kv_cache: KeysValuesLike) -> int:
        """Store a private copy of ``kv_cache`` under ``cache_key`` in env ``env_id``'s root
        pool; returns its slot."""
        if type(env_id) is not int or not 0 <= env_id < self.env_num:
            env_id = self._env(env_id)
        key = cache_key
        if type(key) is not int or not 0 <= key < _TWO64:
            key = unsigned_key(key)
        return self._put("set_init_cache", self._roots[env_id], key, kv_cache)

    def set_recur_cache(self, cache_key: int, kv_cache: KeysValuesLike) -> int:
        """Store a private copy of ``kv_cache`` under ``cache_key`` in the recurrent pool;
        returns its slot."""
        key = cache_key
        if type(key) is not int or not 0 <= key < _TWO64:
            key = unsigned_key(key)
        return self._put("set_recur_cache", self._recur, key, kv_cache)

    def set_wm_cache(self, cache_key: int, kv_cache: KeysValuesLike) -> int:
        """Store a private copy of ``kv_cache`` in the world-model pool; returns its slot."""
        return self._put("set_wm_cache", self._wm, unsigned_key(cache_key), kv_cache)

    def _pool_set(self, kind: str, env_id: int, cache_key: object, kv: KeysValuesLike) -> int:
        if kind == "root":
            return self.set_init_cache(env_id, cache_key, kv)  # type: ignore[arg-type]
        if kind == "recurrent":
            return self.set_recur_cache(cache_key, kv)  # type: ignore[arg-type]
        return self.set_wm_cache(cache_key, kv)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ clearing
    def clear_all(self) -> None:
        """Empty every pool and the staging lists (statistics are kept)."""
        self._refresh_checked()
        for ring in (*self._roots, self._recur, self._wm):
            ring.clear()
        self.keys_values_wm_list.clear()
        self.keys_values_wm_size_list.clear()
        if self._mirror is not None:
            self._mirror.clear_all()
        self._clear_all_counter += 1
        freq = self.clear_all_log_freq
        if freq > 0 and self._clear_all_counter % freq == 0:
            log.info(
                "cleared every KV cache pool (logged every %d calls; %d calls so far)",
                freq,
                self._clear_all_counter,
            )
        log.debug("clear_all: every pool emptied")

    def clear_init_caches(self) -> None:
        """Empty every environment's root pool."""
        self._refresh_checked()
        for ring in self._roots:
            ring.clear()
        if self._mirror is not None:
            self._mirror.clear_roots()
        log.debug("clear_init_caches: root pools emptied")

    def clear_init_cache(self, env_id: int) -> None:
        """Empty env ``env_id``'s root pool only (zerokv addition; ``init_pools[e].clear()``)."""
        self._clear_pool("root", self._env(env_id))

    def clear_recur_cache(self) -> None:
        """Empty the recurrent pool."""
        self._clear_pool("recurrent", 0)
        self._clear_recur_counter += 1
        freq = self.clear_recur_log_freq
        if freq > 0 and self._clear_recur_counter % freq == 0:
            log.info(
                "cleared the recurrent KV cache pool (logged every %d calls; %d calls so far)",
                freq,
                self._clear_recur_counter,
            )

    def _clear_pool(self, kind: str, env_id: int) -> None:
        self._refresh_checked()
        if kind == "root":
            self._roots[env_id].clear()
            if self._mirror is not None:
                self._mirror.clear_env(env_id)
            log.debug("cleared the root pool of env %d", env_id)
        elif kind == "recurrent":
            self._recur.clear()
            if self._mirror is not None:
                self._mirror.clear_recurrent()
            log.debug("cleared the recurrent pool")
        else:
            self._wm.clear()
            log.debug("cleared the world-model pool")

    # ------------------------------------------------------------------ statistics
    def _calls(self) -> tuple[int, int, int, int]:
        """``get_init_cache`` calls and hits, ``get_recur_cache`` calls and hits.

        Derived from the rings: a root ring counts its ``get_init_cache`` lookups and the
        hierarchical ones of its environment; the recurrent ring counts its
        ``get_recur_cache`` lookups and the hierarchical ones that missed the root pool.
        """
        root_queries = root_hits = 0
        for ring in self._roots:
            root_queries += ring.queries
            root_hits += ring.hits
        rec = self._recur
        init_calls = root_queries - self._hier_calls
        init_hits = root_hits - self._hier_root_hits
        recur_calls = rec.queries - (self._hier_calls - self._hier_root_hits)
        recur_hits = rec.hits - self._hier_recur_hits
        return init_calls, init_hits, recur_calls, recur_hits

    def _overall(self) -> ManagerStats:
        init_calls, init_hits, recur_calls, recur_hits = self._calls()
        root_hits = init_hits + self._hier_root_hits
        recurrent_hits = recur_hits + self._hier_recur_hits
        queries = init_calls + recur_calls + self._hier_calls
        hits = root_hits + recurrent_hits
        return ManagerStats(queries, hits, queries - hits, root_hits, recurrent_hits)

    def stats(self) -> ManagerStats:
        """The overall counters (one query per ``get_*`` / ``hierarchical_get`` call)."""
        return self._overall()

    @staticmethod
    def _pool_stats(ring: Ring) -> PoolStats:
        return PoolStats(
            queries=ring.queries,
            hits=ring.hits,
            misses=ring.queries - ring.hits,
            inserts=ring.inserts,
            updates=ring.updates,
            evictions=ring.evictions,
        )

    def root_stats(self, env_id: int | None = None) -> PoolStats:
        """One environment's root pool counters, or their sum."""
        if env_id is not None:
            return self._pool_stats(self._roots[self._env(env_id)])
        total = PoolStats()
        for ring in self._roots:
            total = total + self._pool_stats(ring)
        return total

    def recurrent_stats(self) -> PoolStats:
        return self._pool_stats(self._recur)

    def wm_stats(self) -> PoolStats:
        return self._pool_stats(self._wm)

    def reset_stats(self) -> None:
        """Zero every counter (entries are kept)."""
        for ring in (*self._roots, self._recur, self._wm):
            ring.reset_stats()
        self._hier_calls = self._hier_root_hits = self._hier_recur_hits = 0
        self._monitor.reset()
        self._next_diagnosis = self._stores + self._diagnosis_every if self._window else -1
        if self._mirror is not None:
            self._mirror.reset_stats()
            self._mirror_base = ManagerStats()
        self._refresh_checked()

    def _diagnose(self) -> None:
        """Feed the hit-rate monitor the host counters (one warning per failing tier)."""
        root_stores = sum(r.inserts + r.updates for r in self._roots)
        recur_stores = self._recur.inserts + self._recur.updates
        init_calls, init_hits, recur_calls, recur_hits = self._calls()
        monitor = self._monitor
        monitor.update("root", init_calls, init_hits, root_stores)
        monitor.update(
            "hierarchical",
            self._hier_calls,
            self._hier_root_hits + self._hier_recur_hits,
            root_stores + recur_stores,
        )
        monitor.update("recurrent", recur_calls, recur_hits, recur_stores)

    def get_stats_summary(self) -> dict[str, Any]:
        """Counters and occupancy, with LightZero's keys and zerokv's.

        LightZero's keys: ``stats_enabled``; with statistics on, ``init_pools``
        (``{"env_<e>": "CacheStats(hits=.., misses=.., evictions=.., hit_rate=..%)"}``),
        ``recur_pool`` and ``wm_pool`` (the same strings). zerokv's: ``shadow``; overall
        (one per ``get_*`` / ``hierarchical_get`` call) ``queries``, ``hits``, ``misses``,
        ``hit_rate``, ``root_hits``, ``recurrent_hits``; ``init`` (root pools summed, with
        ``per_env``), ``recur`` and ``wm``, each with ``queries``, ``hits``, ``misses``,
        ``hit_rate``, ``inserts``, ``updates``, ``evictions``, ``capacity``, ``size``,
        ``occupancy``. With ``enable_stats=False`` only ``stats_enabled``, ``shadow`` and the
        pools' ``capacity`` / ``size`` / ``occupancy``.
        """

        def pool(stats: PoolStats, size: int, capacity: int) -> dict[str, Any]:
            out: dict[str, Any] = {"capacity": capacity, "size": size, "occupancy": size / capacity}
            if self.enable_stats:
                out.update(
                    queries=stats.queries,
                    hits=stats.hits,
                    misses=stats.misses,
                    hit_rate=stats.hit_rate,
                    inserts=stats.inserts,
                    updates=stats.updates,
                    evictions=stats.evictions,
                )
            return out

        summary: dict[str, Any] = {"stats_enabled": self.enable_stats, "shadow": self.shadow}
        if self.enable_stats:
            summary["init_pools"] = {
                f"env_{e}": repr(p.stats) for e, p in enumerate(self.init_pools)
            }
            summary["recur_pool"] = repr(self.recur_pool.stats)
            summary["wm_pool"] = repr(self.wm_pool.stats)
            overall = self._overall()
            summary.update(
                queries=overall.queries,
                hits=overall.hits,
                misses=overall.misses,
                hit_rate=overall.hit_rate,
                root_hits=overall.root_hits,
                recurrent_hits=overall.recurrent_hits,
            )
        roots = [self._pool_stats(r) for r in self._roots]
        sizes = [len(r) for r in self._roots]
        total = PoolStats()
        for stats in roots:
            total = total + stats
        init = pool(total, sum(sizes), self.root_capacity * self.env_num)
        init["per_env"] = [pool(s, n, self.root_capacity) for s, n in zip(roots, sizes)]
        summary["init"] = init
        summary["recur"] = pool(self.recurrent_stats(), len(self._recur), self.recurrent_capacity)
        summary["wm"] = pool(self.wm_stats(), len(self._wm), self.wm_capacity)
        return summary

    # ------------------------------------------------------------------ shadow checks
    def _check_lookup(
        self, operation: str, tiers: str, env_id: int, key: int, tier: Tier, slot: int | None
    ) -> None:
        """Shadow mode: the same lookup on ``zerokv.CacheManager`` (and the spec)."""
        mirror = self._mirror
        assert mirror is not None
        keys = torch.tensor([to_signed(key)], dtype=torch.int64, device=mirror.device)
        found = mirror.lookup_many([env_id], keys, tiers=tiers)
        their_tier, their_slot = (int(v) for v in torch.cat([found.tier, found.slot]).tolist())
        mine = (int(tier), -1 if slot is None else slot)
        if mine != (their_tier, their_slot):
            raise ShadowDivergence(operation, "(tier, slot)", mine, (their_tier, their_slot))
        if slot is not None:
            self._compare_entry(operation, found, tier, env_id, slot)
        overall = self._overall()
        base = self._mirror_base
        theirs = mirror.stats()
        mine_stats = (
            overall.queries - base.queries,
            overall.root_hits - base.root_hits,
            overall.recurrent_hits - base.recurrent_hits,
        )
        their_stats = (theirs.queries, theirs.root_hits, theirs.recurrent_hits)
        if mine_stats != their_stats:
            raise ShadowDivergence(
                operation, "(queries, root_hits, recurrent_hits)", mine_stats, their_stats
            )

    def _compare_entry(
        self, operation: str, found: TierLookup, tier: Tier, env_id: int, slot: int
    ) -> None:
        mirror, store = self._mirror, self._store
        assert mirror is not None and store is not None
        ring = self._roots[env_id] if tier is Tier.ROOT else self._recur
        row = ring.base + slot
        size = store.sizes[row]
        entries = mirror.read(found)
        their_size = int(entries.lengths[0])
        fmt = store.format
        cl = fmt.context_length
        theirs = entries.kv[:, :, 0, :, cl - their_size :, :]
        mine = store.rows[row].view(fmt.num_layers, 2, fmt.num_heads, cl, fmt.head_dim)
        mine = mine[:, :, :, :size, :]
        if their_size != size or not torch.equal(mine, theirs):
            raise ShadowDivergence(
                operation, "stored K/V", f"{size} tokens", f"{their_size} tokens"
            )

    def _check_store(
        self, operation: str, ring: Ring, key: int, slot: int, evicted: int | None
    ) -> None:
        """Shadow mode: the same store on ``zerokv.CacheManager``; same slot and eviction."""
        mirror, store = self._mirror, self._store
        assert mirror is not None and store is not None
        row = ring.base + slot
        size = store.sizes[row]
        fmt = store.format
        cl = fmt.context_length
        kv = store.rows[row].view(fmt.num_layers, 2, 1, fmt.num_heads, cl, fmt.head_dim)
        right = torch.zeros_like(kv)
        right[:, :, :, :, cl - size :, :] = kv[:, :, :, :, :size, :]
        entries = Entries(right, torch.tensor([size], dtype=torch.int64, device=kv.device))
        keys = torch.tensor([to_signed(key)], dtype=torch.int64, device=mirror.device)
        if ring is self._recur:
            out = mirror.store_recurrent_many([0], keys, entries)
        else:
            out = mirror.store_root_many([self._roots.index(ring)], keys, entries)
        their_slot, their_evicted, their_mask = (
            int(v) for v in torch.cat([out.slot, out.evicted, out.evicted_mask.long()]).tolist()
        )
        mine = (slot, None if evicted is None else to_signed(evicted))
        theirs = (their_slot, their_evicted if their_mask else None)
        if mine != theirs:
            raise ShadowDivergence(operation, "(slot, evicted key)", mine, theirs)

    # ------------------------------------------------------------------ misc
    def __repr__(self) -> str:
        return (
            f"KVCacheManager(env_num={self.env_num}, "
            f"init_caches={[len(r) for r in self._roots]}, "
            f"recur_cache={len(self._recur)}/{self._recur.capacity}, "
            f"wm_cache={len(self._wm)}/{self._wm.capacity}, zerokv)"
        )
