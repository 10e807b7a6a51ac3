"""``KVCacheManager``: LightZero's cache-manager API on top of ``zerokv.CacheManager``.

A drop-in for the ``KVCacheManager`` of LightZero's UniZero world model. It takes and
returns objects with LightZero's ``KeysValues`` layout (duck-typed; LightZero is not
imported):

* ``len(kv)`` is the number of layers ``L``; ``kv._keys_values[l]`` has ``_k_cache`` and
  ``_v_cache``; each of those has ``_cache``, a tensor ``(1, H, cl, d)`` holding its
  ``_size`` valid tokens *left-aligned* in ``[0, _size)``, and ``_size`` (an int);
  ``kv.size`` (when present) is layer 0's size.

Semantics (LightZero's, with its known faults fixed):

* **Pools** - per environment a root ("init") pool of
  ``min(max_cache_size, max(256, 2 * num_simulations))`` slots (``max_cache_size``
  defaults to 5000) and one recurrent pool of ``num_simulations * env_num`` slots, all FIFO
  rings (``zerokv_spec.manager.ManagerConfig.legacy``). Recurrent keys carry no
  environment id (``Scope.GLOBAL``: equal keys from two environments share an entry, the
  last writer wins). Keys are trusted (no fingerprints): LightZero's callers pass only the
  key.
* **Keys** - Python ints: LightZero's unsigned 64-bit ``xxh64(...).intdigest()`` or a
  signed 64-bit int; both are reduced to zerokv's signed 64-bit key
  (``zerokv_spec.keys.to_signed``), so ``2**64 - 1`` and ``-1`` name the same entry.
* **Private storage** - ``set_*`` copies the tensors into zerokv's slab (one ``stack`` of
  the layers, then one pad into the slab's right-aligned layout); nothing of the caller's
  object is kept. ``get_*`` / ``hierarchical_get`` return a NEW object every time (the
  structure deep-copied from a template taken at the first ``set_*``; fresh tensors, valid
  tokens left-aligned, zeros after them): mutating it, or the object given to ``set_*``,
  never changes a pool. (LightZero returns the stored object itself.)
* **Statistics** - one ``get_*`` or ``hierarchical_get`` call is one query of the overall
  counters, whatever pools it visited; each pool's own counters count the queries that
  reached it (a hierarchical lookup reaches the recurrent pool only after its root pool
  missed). ``get_stats_summary`` reports both (see its docstring).
* **Errors** - a malformed object raises ``EntryError`` (layout, layer count, sizes),
  ``ShapeError``, ``DTypeError`` or ``DeviceError`` naming what was expected and what was
  given; a bad environment id ``EnvIdError``; a key that is not a 64-bit int
  ``KeyRangeError``. A call that raises changes nothing.

Shape ``(L, H, d, cl)`` comes from the config (LightZero's names ``num_layers``,
``num_heads``, ``embed_dim`` with ``d = embed_dim // num_heads``, and ``context_length``
or else ``2 * infer_context_length``); device from the ``device`` argument or
``config.device``; dtype from the ``dtype`` argument. Whatever is not given is taken from
the first stored object, and the storage is allocated then. ``shadow=True`` runs
``zerokv.shadow.ShadowManager`` (the reference model beside the implementation, compared on
every call): a debugging tool, 3-8x slower in the measurements ``zerokv.shadow`` reports.

Logging: ``logging.getLogger("zerokv.lightzero")``; debug records name the call, the pool,
the key and the slot.
"""

from __future__ import annotations

import copy
import logging
import operator
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from zerokv.entry import Entries
from zerokv.errors import (
    ConfigError,
    DeviceError,
    DTypeError,
    EntryError,
    EnvIdError,
    KeyRangeError,
    ShapeError,
)
from zerokv.manager import CacheConfig, CacheManager
from zerokv.shadow import ShadowManager
from zerokv_spec.entry import MIN_CONTEXT_LENGTH
from zerokv_spec.keys import INT64_MIN, MASK64, to_signed
from zerokv_spec.manager import Scope, Tier, legacy_recurrent_capacity, legacy_root_capacity
from zerokv_spec.pool import Policy
from zerokv_spec.stats import ManagerStats, PoolStats

__all__ = [
    "DEFAULT_MAX_CACHE_SIZE",
    "KVCacheManager",
    "LayoutCache",
    "LayoutKVCache",
    "LayoutKeysValues",
    "lightzero_key",
]

log = logging.getLogger("zerokv.lightzero")

#: LightZero's default ``max_cache_size``.
DEFAULT_MAX_CACHE_SIZE = 5000

#: An object with LightZero's ``KeysValues`` layout (duck-typed).
KeysValuesLike = Any

_SIDES = ("_k_cache", "_v_cache")
_POOL_NAMES = {Tier.ROOT: "root", Tier.RECURRENT: "recurrent"}


# --------------------------------------------------------------------------- layout


class LayoutCache:
    """One side (K or V) of one layer: ``_cache`` ``(1, H, cap, d)``, ``_size`` valid tokens."""

    def __init__(self, cache: torch.Tensor, size: int = 0) -> None:
        self._cache = cache
        self._size = size

    @property
    def shape(self) -> tuple[int, int, int, int]:
        n, heads, _, head_dim = self._cache.shape
        return (int(n), int(heads), self._size, int(head_dim))

    def get(self) -> torch.Tensor:
        """The valid tokens ``(1, H, _size, d)``."""
        return self._cache[:, :, : self._size, :]


class LayoutKVCache:
    """The K and V caches of one layer."""

    def __init__(self, k_cache: LayoutCache, v_cache: LayoutCache) -> None:
        self._k_cache = k_cache
        self._v_cache = v_cache

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self._k_cache.shape


class LayoutKeysValues:
    """A minimal object with LightZero's ``KeysValues`` layout (used when no template exists)."""

    def __init__(self, layers: tuple[LayoutKVCache, ...]) -> None:
        self._keys_values = layers

    @staticmethod
    def empty(
        num_layers: int,
        num_heads: int,
        context_length: int,
        head_dim: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> LayoutKeysValues:
        """``num_layers`` layers of zero caches ``(1, H, cl, d)`` holding no tokens."""
        shape = (1, num_heads, context_length, head_dim)

        def side() -> LayoutCache:
            return LayoutCache(torch.zeros(shape, device=device, dtype=dtype))

        return LayoutKeysValues(tuple(LayoutKVCache(side(), side()) for _ in range(num_layers)))

    def __len__(self) -> int:
        return len(self._keys_values)

    def __getitem__(self, index: int) -> LayoutKVCache:
        return self._keys_values[index]

    @property
    def size(self) -> int:
        return self._keys_values[0]._k_cache._size

    def clone(self) -> LayoutKeysValues:
        return copy.deepcopy(self)


# --------------------------------------------------------------------------- helpers


def lightzero_key(key: object) -> int:
    """A LightZero key (unsigned or signed 64-bit int) as zerokv's signed 64-bit key."""
    if isinstance(key, bool):
        raise KeyRangeError("a key must be an int, got bool")
    try:
        value = operator.index(key)  # type: ignore[arg-type]
    except TypeError:
        raise KeyRangeError(f"a key must be an int, got {type(key).__name__}") from None
    if not INT64_MIN <= value <= MASK64:
        raise KeyRangeError(f"a key must lie in [-2**63, 2**64), got {value}")
    return to_signed(value)


def _config_value(config: object, name: str) -> object:
    if isinstance(config, Mapping) and name in config:
        return config[name]
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


@dataclass
class _EarlyCounts:
    """Lookups made before the storage exists (all misses), added to the summary."""

    env_num: int
    manager: ManagerStats = field(default_factory=ManagerStats)
    roots: list[PoolStats] = field(init=False)
    recurrent: PoolStats = field(default_factory=PoolStats)

    def __post_init__(self) -> None:
        self.roots = [PoolStats() for _ in range(self.env_num)]

    def miss(self, tiers: str, env_id: int) -> None:
        self.manager.queries += 1
        self.manager.misses += 1
        pools = []
        if tiers != "recurrent":
            pools.append(self.roots[env_id])
        if tiers != "root":
            pools.append(self.recurrent)
        for pool in pools:
            pool.queries += 1
            pool.misses += 1

    def reset(self) -> None:
        self.manager.reset()
        for pool in (*self.roots, self.recurrent):
            pool.reset()


@dataclass(frozen=True)
class _Checked:
    """A validated ``KeysValues``-like object: its 2L cache tensors, size and format."""

    tensors: list[torch.Tensor]
    size: int
    num_layers: int
    num_heads: int
    context_length: int
    head_dim: int
    device: torch.device
    dtype: torch.dtype


def _rate(hits: int, queries: int) -> float:
    return hits / queries if queries else 0.0


_ATOMIC = (
    type(None),
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    type,
    torch.dtype,
    torch.device,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
)


def _atomic(value: object) -> bool:
    """Values a deep copy may share: immutable ones (and functions, as ``deepcopy`` does)."""
    if isinstance(value, tuple):
        return all(_atomic(v) for v in value)
    return isinstance(value, _ATOMIC)


def _copy_node(node: object, structural: tuple[str, ...]) -> Any:
    """``node`` copied, its mutable attributes deep-copied, ``structural`` ones left for later."""
    cls = type(node)
    if hasattr(cls, "__copy__") or hasattr(cls, "__slots__"):
        new = copy.copy(node)
    else:  # what copy.copy does for a plain class, without the __reduce_ex__ detour
        new = object.__new__(cls)
        new.__dict__.update(node.__dict__)
    for name, value in vars(node).items():
        if name not in structural and not _atomic(value):
            setattr(new, name, copy.deepcopy(value))
    return new


def _structural_copy(template: Any) -> Any:
    """A deep copy of a ``KeysValues``-like template, node by node along the known layout.

    Much cheaper than ``copy.deepcopy`` (no memo walk over every attribute): each object on
    the path kv -> ``_keys_values`` -> layer -> ``_k_cache`` / ``_v_cache`` is copied, its
    immutable attributes shared, anything mutable deep-copied. The caches' ``_cache`` is
    replaced by the caller.
    """
    layers = template._keys_values
    if type(layers) not in (tuple, list):
        raise TypeError(f"_keys_values is a {type(layers).__name__}, not a tuple or list")
    new = _copy_node(template, ("_keys_values",))
    copied = []
    for layer in layers:
        new_layer = _copy_node(layer, _SIDES)
        for side in _SIDES:
            setattr(new_layer, side, _copy_node(getattr(layer, side), ("_cache",)))
        copied.append(new_layer)
    new._keys_values = type(layers)(copied)
    return new


# --------------------------------------------------------------------------- manager


class KVCacheManager:
    """LightZero's manager API backed by zerokv (module docstring)."""

    def __init__(
        self,
        config: object,
        env_num: int,
        enable_stats: bool = True,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        shadow: bool = False,
    ) -> None:
        if isinstance(env_num, bool) or not isinstance(env_num, int) or env_num < 1:
            raise ConfigError(f"env_num must be an int >= 1, got {env_num!r}")
        num_simulations = _config_int(config, "num_simulations")
        if num_simulations is None:
            raise ConfigError("config.num_simulations is required (it sizes the pools)")
        max_cache_size = _config_int(config, "max_cache_size", DEFAULT_MAX_CACHE_SIZE)
        assert max_cache_size is not None
        self.env_num = env_num
        self.enable_stats = bool(enable_stats)
        self.shadow = bool(shadow)
        self.root_capacity = legacy_root_capacity(num_simulations, max_cache_size)
        self.recurrent_capacity = legacy_recurrent_capacity(num_simulations, env_num)

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

        self._manager: CacheManager | ShadowManager | None = None
        self._template: KeysValuesLike | None = None
        self._structural = True  # copy the template node by node (else copy.deepcopy)
        self._placeholder = torch.empty(0)
        self._early = _EarlyCounts(env_num)
        self._length_tensors: dict[int, torch.Tensor] = {}
        known = (self._num_layers, self._num_heads, self._head_dim, self._context_length)
        if None not in known and self._device is not None and self._dtype is not None:
            self._create()

    # ------------------------------------------------------------------ properties
    @property
    def manager(self) -> CacheManager | ShadowManager | None:
        """The zerokv manager (``None`` until the shape is known)."""
        return self._manager

    @property
    def num_layers(self) -> int | None:
        return self._num_layers

    @property
    def context_length(self) -> int | None:
        return self._context_length

    # ------------------------------------------------------------------ setup
    def _create(self) -> None:
        assert self._num_layers is not None and self._num_heads is not None
        assert self._head_dim is not None and self._context_length is not None
        assert self._device is not None and self._dtype is not None
        cfg = CacheConfig(
            env_num=self.env_num,
            num_layers=self._num_layers,
            num_heads=self._num_heads,
            head_dim=self._head_dim,
            context_length=self._context_length,
            root_capacity=self.root_capacity,
            recurrent_capacity=self.recurrent_capacity,
            policy=Policy.FIFO,
            scope=Scope.GLOBAL,
            device=str(self._device),
            dtype=self._dtype,
        )
        self._manager = ShadowManager(cfg) if self.shadow else CacheManager(cfg)
        log.debug(
            "zerokv.lightzero: %d root pools x %d slots, recurrent pool %d slots, "
            "L=%d H=%d d=%d cl=%d on %s (%s)%s",
            self.env_num,
            self.root_capacity,
            self.recurrent_capacity,
            self._num_layers,
            self._num_heads,
            self._head_dim,
            self._context_length,
            self._device,
            self._dtype,
            ", shadow mode" if self.shadow else "",
        )

    def _adopt(self, checked: _Checked, kv: KeysValuesLike) -> None:
        """Fix whatever the config left open from the first valid object; make the template."""
        if self._manager is None:
            self._num_layers = checked.num_layers
            self._num_heads = checked.num_heads
            self._head_dim = checked.head_dim
            self._context_length = checked.context_length
            self._device = checked.device
            self._dtype = checked.dtype
            self._create()
        if self._template is None:
            self._template = self._make_template(kv, checked)

    def _make_template(self, kv: KeysValuesLike, checked: _Checked) -> KeysValuesLike:
        """The caller's object's structure without its cache tensors (or a ``Layout`` one)."""
        memo: dict[int, Any] = {id(t): self._placeholder for t in checked.tensors}
        try:
            template = copy.deepcopy(kv, memo)
            sides = [getattr(layer, side) for layer in template._keys_values for side in _SIDES]
            distinct = len({id(s) for s in sides}) == len(sides)
        except Exception as err:  # an object deepcopy cannot handle: use the plain layout
            log.debug("zerokv.lightzero: cannot deep-copy %s (%s)", type(kv).__name__, err)
            template, distinct = None, False
        if template is None or not distinct:
            return LayoutKeysValues.empty(
                checked.num_layers,
                checked.num_heads,
                0,
                checked.head_dim,
                checked.device,
                checked.dtype,
            )
        for layer in template._keys_values:
            for side in _SIDES:
                cache = getattr(layer, side)
                cache._cache = self._placeholder
                cache._size = 0
        return template

    # ------------------------------------------------------------------ validation
    def _check_env(self, env_id: object) -> int:
        if isinstance(env_id, bool) or not isinstance(env_id, int):
            raise EnvIdError(f"env id must be an int, got {type(env_id).__name__}")
        if not 0 <= env_id < self.env_num:
            raise EnvIdError(f"env id must lie in [0, {self.env_num}), got {env_id}")
        return env_id

    def _check(self, kv: object) -> _Checked:
        """Validate the ``KeysValues`` layout (module docstring); changes nothing."""
        what = type(kv).__name__
        try:
            count = len(kv)  # type: ignore[arg-type]
        except TypeError:
            raise EntryError(
                f"expected a KeysValues-like object (len(kv) = layers), got {what}"
            ) from None
        layers = getattr(kv, "_keys_values", None)
        try:
            layer_list = list(layers)  # type: ignore[arg-type]
        except TypeError:
            raise EntryError(f"{what} has no sequence _keys_values (LightZero layout)") from None
        if len(layer_list) != count or count < 1:
            raise EntryError(f"len(kv) is {count} but kv._keys_values has {len(layer_list)} layers")
        if self._num_layers is not None and count != self._num_layers:
            raise EntryError(f"expected {self._num_layers} layers, got {count}")
        tensors: list[torch.Tensor] = []
        sizes: list[int] = []
        for index, layer in enumerate(layer_list):
            for side in _SIDES:
                name = f"kv._keys_values[{index}].{side}"
                cache = getattr(layer, side, None)
                if cache is None:
                    raise EntryError(f"{name} is missing")
                tensor = getattr(cache, "_cache", None)
                size = getattr(cache, "_size", None)
                if not isinstance(tensor, torch.Tensor):
                    raise DTypeError(
                        f"{name}._cache must be a torch.Tensor, got {type(tensor).__name__}"
                    )
                if isinstance(size, bool) or not isinstance(size, int):
                    raise EntryError(f"{name}._size must be an int, got {type(size).__name__}")
                tensors.append(tensor)
                sizes.append(size)
        first = tensors[0]
        if first.dim() != 4 or first.shape[0] != 1:
            raise ShapeError(
                f"kv._keys_values[0]._k_cache._cache must have shape (1, H, cl, d), "
                f"got {tuple(first.shape)}"
            )
        heads = self._num_heads if self._num_heads is not None else int(first.shape[1])
        cl = self._context_length if self._context_length is not None else int(first.shape[2])
        head_dim = self._head_dim if self._head_dim is not None else int(first.shape[3])
        device = self._device if self._device is not None else first.device
        dtype = self._dtype if self._dtype is not None else first.dtype
        if cl < MIN_CONTEXT_LENGTH:
            raise ShapeError(f"the cache capacity (context length) must be >= 4, got {cl}")
        if not dtype.is_floating_point:
            raise DTypeError(f"the caches must have a floating dtype, got {dtype}")
        want = (1, heads, cl, head_dim)
        for i, tensor in enumerate(tensors):
            name = f"kv._keys_values[{i // 2}].{_SIDES[i % 2]}._cache"
            if tuple(tensor.shape) != want:
                raise ShapeError(f"{name} must have shape {want}, got {tuple(tensor.shape)}")
            if tensor.dtype != dtype:
                raise DTypeError(f"{name} must have dtype {dtype}, got {tensor.dtype}")
            if tensor.device != device:
                raise DeviceError(f"{name} must be on {device}, got {tensor.device}")
        size = sizes[0]
        if any(s != size for s in sizes):
            raise EntryError(f"every layer's K and V must hold the same size, got sizes {sizes}")
        if not 0 <= size <= cl:
            raise EntryError(f"size must lie in [0, {cl}] (the context length), got {size}")
        try:
            reported = getattr(kv, "size", size)
        except Exception:  # a size property that fails: the layers' sizes decide
            reported = size
        if isinstance(reported, int) and reported != size:
            raise EntryError(f"kv.size is {reported} but its layers hold {size} tokens")
        return _Checked(tensors, size, count, heads, cl, head_dim, device, dtype)

    # ------------------------------------------------------------------ conversion
    def _to_entries(self, checked: _Checked) -> Entries:
        """Left-aligned caches -> one ``Entries`` row in the slab's right-aligned layout."""
        size, cl = checked.size, checked.context_length
        layers, heads, head_dim = checked.num_layers, checked.num_heads, checked.head_dim
        stacked = torch.stack([t[:, :, :size, :] for t in checked.tensors])  # [2L, 1, H, s, d]
        kv = torch.nn.functional.pad(
            stacked.view(layers, 2, 1, heads, size, head_dim), (0, 0, cl - size, 0)
        )
        lengths = self._length_tensors.get(size)
        if lengths is None:
            lengths = torch.tensor([size], dtype=torch.int64, device=checked.device)
            self._length_tensors[size] = lengths
        return Entries(kv, lengths)

    def _fresh(self) -> KeysValuesLike:
        """A new object with the template's structure (its caches still hold nothing)."""
        template = self._template
        if template is None:  # unreachable after a store; kept for safety
            assert self._num_layers is not None and self._num_heads is not None
            assert self._head_dim is not None
            return LayoutKeysValues.empty(self._num_layers, self._num_heads, 0, self._head_dim)
        if self._structural:
            try:
                return _structural_copy(template)
            except Exception as err:  # an unusual object: deepcopy from now on
                log.debug("zerokv.lightzero: structural copy failed (%s); using deepcopy", err)
                self._structural = False
        return copy.deepcopy(template, {id(self._placeholder): self._placeholder})

    def _to_object(self, kv: torch.Tensor, size: int) -> KeysValuesLike:
        """A slab row ``[L, 2, 1, H, cl, d]`` -> a new ``KeysValues``-like object."""
        cl = int(kv.shape[4])
        left = torch.nn.functional.pad(kv[:, :, :, :, cl - size :, :], (0, 0, 0, cl - size))
        obj = self._fresh()
        for index, layer in enumerate(obj._keys_values):
            for side_index, side in enumerate(_SIDES):
                cache = getattr(layer, side)
                cache._cache = left[index, side_index]
                cache._size = size
        return obj

    # ------------------------------------------------------------------ lookups
    def _get(self, operation: str, tiers: str, env_id: int, key: object) -> KeysValuesLike | None:
        signed = lightzero_key(key)
        manager = self._manager
        if manager is None:
            self._early.miss(tiers, env_id)
            log.debug("%s: env %d key %d: miss (nothing stored yet)", operation, env_id, signed)
            return None
        keys = torch.tensor([signed], dtype=torch.int64, device=manager.device)
        found = manager.lookup_many([env_id], keys, tiers=tiers)
        entries = manager.read(found)
        tier, slot, size = (
            int(v) for v in torch.cat([found.tier, found.slot, entries.lengths]).tolist()
        )
        if tier == Tier.MISS:
            log.debug("%s: env %d key %d: miss", operation, env_id, signed)
            return None
        log.debug(
            "%s: env %d key %d: hit in the %s pool%s, slot %d (%d tokens)",
            operation,
            env_id,
            signed,
            _POOL_NAMES[Tier(tier)],
            f" of env {env_id}" if tier == Tier.ROOT else "",
            slot,
            size,
        )
        return self._to_object(entries.kv, size)

    def get_init_cache(self, env_id: int, key: int) -> KeysValuesLike | None:
        """A copy of the entry under ``key`` in env ``env_id``'s root pool, or None."""
        return self._get("get_init_cache", "root", self._check_env(env_id), key)

    def get_recur_cache(self, key: int) -> KeysValuesLike | None:
        """A copy of the entry under ``key`` in the recurrent pool, or None."""
        return self._get("get_recur_cache", "recurrent", 0, key)

    def hierarchical_get(self, env_id: int, key: int) -> KeysValuesLike | None:
        """Env ``env_id``'s root pool, then the recurrent pool: a copy of the hit, or None."""
        return self._get("hierarchical_get", "hierarchical", self._check_env(env_id), key)

    # ------------------------------------------------------------------ stores
    def _set(self, operation: str, tier: Tier, env_id: int, key: object, kv: object) -> None:
        signed = lightzero_key(key)
        checked = self._check(kv)
        self._adopt(checked, kv)
        manager = self._manager
        assert manager is not None
        entries = self._to_entries(checked)
        keys = torch.tensor([signed], dtype=torch.int64, device=manager.device)
        if tier is Tier.ROOT:
            out = manager.store_root_many([env_id], keys, entries)
        else:
            out = manager.store_recurrent_many([env_id], keys, entries)
        if log.isEnabledFor(logging.DEBUG):
            slot, evicted, was_evicted, inserted = (
                int(v)
                for v in torch.cat(
                    [out.slot, out.evicted, out.evicted_mask.long(), out.inserted.long()]
                ).tolist()
            )
            log.debug(
                "%s: key %d -> %s pool%s, slot %d (%s%s, %d tokens)",
                operation,
                signed,
                _POOL_NAMES[tier],
                f" of env {env_id}" if tier is Tier.ROOT else "",
                slot,
                "inserted" if inserted else "overwritten in place",
                f", evicted key {evicted}" if was_evicted else "",
                checked.size,
            )

    def set_init_cache(self, env_id: int, key: int, kv: KeysValuesLike) -> None:
        """Store a private copy of ``kv`` under ``key`` in env ``env_id``'s root pool."""
        self._set("set_init_cache", Tier.ROOT, self._check_env(env_id), key, kv)

    def set_recur_cache(self, key: int, kv: KeysValuesLike) -> None:
        """Store a private copy of ``kv`` under ``key`` in the recurrent pool."""
        self._set("set_recur_cache", Tier.RECURRENT, 0, key, kv)

    # ------------------------------------------------------------------ clearing
    def clear_all(self) -> None:
        """Empty every pool (statistics are kept)."""
        if self._manager is not None:
            self._manager.clear_all()
        log.debug("clear_all: every pool emptied")

    def clear_init_caches(self) -> None:
        """Empty every environment's root pool."""
        if self._manager is not None:
            self._manager.clear_roots()
        log.debug("clear_init_caches: root pools emptied")

    def clear_init_cache(self, env_id: int) -> None:
        """Empty env ``env_id``'s root pool only (e.g. at its episode end; zerokv addition)."""
        self._check_env(env_id)
        if self._manager is not None:
            self._manager.clear_env(env_id)
        log.debug("clear_init_cache: root pool of env %d emptied", env_id)

    def clear_recur_cache(self) -> None:
        """Empty the recurrent pool."""
        if self._manager is not None:
            self._manager.clear_recurrent()
        log.debug("clear_recur_cache: recurrent pool emptied")

    # ------------------------------------------------------------------ statistics
    def reset_stats(self) -> None:
        """Zero every counter."""
        if self._manager is not None:
            self._manager.reset_stats()
        self._early.reset()

    def get_stats_summary(self) -> dict[str, Any]:
        """Counters and occupancy.

        Keys: ``stats_enabled``; overall (one per ``get_*`` / ``hierarchical_get`` call)
        ``queries``, ``hits``, ``misses``, ``hit_rate``, ``root_hits``, ``recurrent_hits``;
        ``init`` (root pools, summed) and ``recur`` (recurrent pool), each with the pool
        counters ``queries`` (lookups that reached that tier), ``hits``, ``misses``,
        ``hit_rate``, ``inserts``, ``updates``, ``evictions`` and ``capacity``, ``size``
        (stored entries), ``occupancy`` (``size / capacity``); ``init["per_env"]`` has the
        same per environment. With ``enable_stats=False`` only the sizes are reported.
        """
        manager = self._manager
        early = self._early
        if manager is None:
            overall = ManagerStats()
            roots = [PoolStats() for _ in range(self.env_num)]
            recurrent = PoolStats()
            sizes, recurrent_size = [0] * self.env_num, 0
        else:
            overall = manager.stats()
            roots = [manager.root_stats(e) for e in range(self.env_num)]
            recurrent = manager.recurrent_stats()
            sizes, recurrent_size = manager.root_sizes(), manager.recurrent_size()
        for name in ("queries", "hits", "misses", "root_hits", "recurrent_hits"):
            setattr(overall, name, getattr(overall, name) + getattr(early.manager, name))
        roots = [r + e for r, e in zip(roots, early.roots)]
        recurrent = recurrent + early.recurrent

        def pool(stats: PoolStats, size: int, capacity: int) -> dict[str, Any]:
            out: dict[str, Any] = {
                "capacity": capacity,
                "size": size,
                "occupancy": size / capacity,
            }
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

        total_roots = PoolStats()
        for r in roots:
            total_roots = total_roots + r
        init = pool(total_roots, sum(sizes), self.root_capacity * self.env_num)
        init["per_env"] = [pool(r, n, self.root_capacity) for r, n in zip(roots, sizes)]
        summary: dict[str, Any] = {"stats_enabled": self.enable_stats, "shadow": self.shadow}
        if self.enable_stats:
            summary.update(
                queries=overall.queries,
                hits=overall.hits,
                misses=overall.misses,
                hit_rate=_rate(overall.hits, overall.queries),
                root_hits=overall.root_hits,
                recurrent_hits=overall.recurrent_hits,
            )
        summary["init"] = init
        summary["recur"] = pool(recurrent, recurrent_size, self.recurrent_capacity)
        return summary
