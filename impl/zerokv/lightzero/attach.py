"""``attach(world_model)``: LightZero's UniZero world model on zerokv's batched API.

LightZero's world model keeps its KV caches with per-environment loops: per call and per
row a host hash of the latent (a device->host copy on a GPU), a dict lookup, a copy into a
staging object, then per layer a pad and a stack into the batch the transformer attends to,
and after the forward per row a trim, the window rule and a copy into a ring. ``attach``
replaces that glue, on one world model instance, by batched ``zerokv.CacheManager`` calls:

* keys of all rows at once, on the latents' device (``keys_of``: zkv64 keys with zkv64
  fingerprints; ``key="xxh64"`` keeps LightZero's ``hash_state`` keys);
* one ``lookup_many`` per call for the whole batch (root tier at the root, root then
  recurrent in a search);
* the batch the transformer attends to is one ``gather_reserve``: the entries, right-aligned
  (that *is* LightZero's left-padded batch), with two columns where the transformer writes
  its new tokens in place;
* one ``store_root_batch`` / ``store_recurrent_batch`` per call: split and window rule
  (with LightZero's own position-correction table) fused.

The transformer and everything else in the model stay LightZero's: the replacements call
the model's own ``forward`` with a view of the zerokv batch (``BatchView``) in place of
LightZero's ``KeysValues``, with the same arguments LightZero passes (sizes, start
positions, search depths, masks), so the outputs are LightZero's, bit for bit, wherever
LightZero's caches return what they should (``docs/lightzero.md`` lists where they do not).

**The one host read per call.** LightZero's forward needs the per-row context sizes on the
host: the width of the attended window (``S`` = the longest row; LightZero 0.2.0 does not
mask padding, so the width changes its outputs), the position of each row's next token
(``keys_values_wm_size_list_current``) and, on main, the padding mask's lengths. Attach
reads the gathered batch's lengths once per call (one ``tolist`` of ``B`` ints: one
device->host synchronisation on CUDA), and learns from them which rows missed (a miss
gathers an empty row). LightZero's glue synchronises once per row and call for every key
it hashes from a device tensor.

Supported: LightZero 0.2.0 (the package index release) and LightZero main (9f717c80 or
later) with ``use_new_cache_manager`` true or false; discrete actions; one observation
token per block; learned absolute or rotary positions. Refused at attach time with
``ConfigError``: continuous actions, ``tokens_per_block != 2``, ``context_length < 4``,
main's ``rebuild_kv_window_from_tokens``, ``exact_kv_window_reset`` and register tokens,
a world model in the reanalysis phase, another version of the world model; with
``DeviceError``: parameters on several devices or on another device than ``device``.
Reanalysis (``reanalyze_phase``) is refused per call with ``UnsupportedOperationError``:
attach the collect / eval model, not the reanalysis target model.

``Attachment.detach()`` puts back every method and attribute attach replaced or that the
attached calls wrote, as they were when ``attach`` was called.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar, cast

import torch

from zerokv import checks
from zerokv.entry import Batch, Correction
from zerokv.errors import (
    BatchError,
    ConcurrentUseError,
    ConfigError,
    DeviceError,
    DTypeError,
    ShapeError,
    UnsupportedAttributeError,
    UnsupportedOperationError,
)
from zerokv.keys import legacy_keys, zkv64_keys
from zerokv.manager import CacheConfig, CacheManager
from zerokv_spec.manager import Scope

__all__ = [
    "LIGHTZERO_020",
    "LIGHTZERO_MAIN",
    "Attachment",
    "BatchView",
    "LayerView",
    "attach",
    "attached",
    "attachment_of",
]

log = logging.getLogger("zerokv.lightzero")

#: The world-model versions ``attach`` knows.
LIGHTZERO_020 = "0.2.0"
LIGHTZERO_MAIN = "main"

#: LightZero objects are untyped.
LightZeroObject = Any

#: Methods of the world model that ``attach`` replaces on the instance.
REPLACED_METHODS = (
    "forward_initial_inference",
    "wm_forward_for_initial_infererence",
    "forward_recurrent_inference",
    "retrieve_or_generate_kvcache",
    "trim_and_pad_kv_cache",
    "update_cache_context",
    "clear_caches",
)

#: Cache attributes replaced by proxies whose ``clear()`` reaches zerokv (LightZero's policy
#: clears them directly: one environment's root pool at its episode end, the recurrent pool).
PROXIED_ATTRIBUTES = (
    "past_kv_cache_init_infer_envs",
    "past_kv_cache_recurrent_infer",
    "kv_cache_manager",
)

#: Attributes the attached calls write (as LightZero's own calls do); restored by ``detach``.
WRITTEN_ATTRIBUTES = (
    "latent_state",
    "keys_values_wm_size_list",
    "keys_values_wm_size_list_current",
    "current_infer_env_ids",
    "hit_count",
    "total_query_count",
    "root_hit_cnt",
    "root_total_query_cnt",
)

#: The keyword options of ``attach``.
OPTIONS = frozenset(
    {"key", "verify", "scope", "device", "index", "compile", "num_simulations", "max_cache_size"}
)

#: Attachments by world model (one at a time per model).
_ATTACHED: weakref.WeakKeyDictionary[Any, Attachment] = weakref.WeakKeyDictionary()
_REGISTRY_LOCK = threading.Lock()


# --------------------------------------------------------------------------- views


class LayerView:
    """One layer of a zerokv batch as LightZero's attention uses a ``KVCache``.

    ``k`` / ``v`` are layer views ``[B, H, W, d]`` of a batch; the attended window is
    columns ``[start, end)``. ``update`` writes the new tokens at ``end`` (in place, as
    LightZero's cache does) and widens the window; ``get`` returns the window.
    """

    __slots__ = ("_end", "_k", "_start", "_v")

    def __init__(self, k: torch.Tensor, v: torch.Tensor, start: int, end: int) -> None:
        self._k, self._v, self._start, self._end = k, v, start, end

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(B, H, tokens in the window, d)``, as ``KVCache.shape``."""
        k = self._k
        return (int(k.shape[0]), int(k.shape[1]), self._end - self._start, int(k.shape[3]))

    def update(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Write ``t`` new tokens ``(B, H, t, d)`` after the window and widen it."""
        end = self._end + int(k.shape[2])
        if end > self._k.shape[2]:
            raise UnsupportedOperationError(
                f"the attached batch holds {self._k.shape[2]} columns; writing "
                f"{k.shape[2]} tokens at column {self._end} would overflow it"
            )
        self._k[:, :, self._end : end] = k
        self._v[:, :, self._end : end] = v
        self._end = end

    def get(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The window's keys and values ``(B, H, tokens, d)``."""
        return self._k[:, :, self._start : self._end], self._v[:, :, self._start : self._end]


class BatchView:
    """A zerokv batch ``[L, 2, B, H, W, d]`` as LightZero's ``KeysValues`` (the attended
    window is columns ``[start, end)`` of every layer; ``size`` counts its tokens)."""

    __slots__ = ("_keys_values",)

    def __init__(self, kv: torch.Tensor, start: int, end: int) -> None:
        if not isinstance(kv, torch.Tensor) or kv.dim() != 6 or kv.shape[1] != 2:
            got = tuple(kv.shape) if isinstance(kv, torch.Tensor) else type(kv).__name__
            raise ShapeError(f"BatchView takes a batch [L, 2, B, H, W, d], got {got}")
        width = int(kv.shape[4])
        for name, value in (("start", start), ("end", end)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise BatchError(f"BatchView {name} must be an int, got {value!r}")
        if not 0 <= start <= end <= width:
            raise BatchError(
                f"BatchView window [{start}, {end}) must lie in the batch's {width} columns "
                "with start <= end"
            )
        self._keys_values = tuple(
            LayerView(kv[layer, 0], kv[layer, 1], start, end) for layer in range(kv.shape[0])
        )

    def __len__(self) -> int:
        return len(self._keys_values)

    def __getitem__(self, layer: int) -> LayerView:
        return self._keys_values[layer]

    @property
    def size(self) -> int:
        return self._keys_values[0].shape[2]


# --------------------------------------------------------------------------- proxies


class _Refusing:
    """A stand-in for a LightZero cache object while attached: an attribute it does not
    define is refused with ``UnsupportedOperationError`` naming what reaches zerokv."""

    #: What still reaches zerokv through this stand-in (appended to the refusal).
    _reaches = ""

    def _path(self, name: str) -> str:
        raise NotImplementedError

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise UnsupportedAttributeError(
            f"{self._path(name)}: this world model's caches are managed by zerokv "
            f"(zerokv.lightzero.attach){self._reaches} - detach() first"
        )

    def _refuse(self, what: str) -> UnsupportedOperationError:
        return UnsupportedOperationError(
            f"{self._path(what)}: this world model's caches are managed by zerokv "
            f"(zerokv.lightzero.attach){self._reaches} - detach() first"
        )

    # LightZero's pools are dicts; their protocols are refused with zerokv's error.
    def __getitem__(self, key: object) -> Any:
        raise self._refuse(f"[{key!r}]")

    def __setitem__(self, key: object, value: object) -> None:
        raise self._refuse(f"[{key!r}] = ...")

    def __delitem__(self, key: object) -> None:
        raise self._refuse(f"del [{key!r}]")

    def __contains__(self, key: object) -> bool:
        raise self._refuse(f"{key!r} in")

    def __iter__(self) -> Iterator[Any]:
        raise self._refuse("iteration")


class _PoolProxy(_Refusing):
    """Stands for one of LightZero's cache dicts / pools while attached: ``clear()`` (what
    LightZero's policy calls) clears the zerokv pool; anything else is refused."""

    _reaches = "; only clear() and len() reach them"

    def __init__(self, name: str, clear: Callable[[], None], size: Callable[[], int]) -> None:
        self._name, self._clear, self._size = name, clear, size

    def clear(self) -> None:
        self._clear()

    def __len__(self) -> int:
        return self._size()

    def _path(self, name: str) -> str:
        return f"{self._name}.{name}"


class _ManagerProxy(_Refusing):
    """Stands for LightZero main's ``kv_cache_manager`` while attached: the calls LightZero's
    world model and policy make (pool clears, ``clear_recur_cache``, ``clear_all``,
    ``get_stats_summary``) reach zerokv; anything else is refused."""

    def __init__(self, attachment: Attachment) -> None:
        a = attachment
        self._attachment = a
        self.env_num = a.env_num
        self.init_pools = [
            _PoolProxy(
                f"kv_cache_manager.init_pools[{e}]",
                partial(a.clear_env_cache, e),
                partial(a.root_cache_size, e),
            )
            for e in range(a.env_num)
        ]
        self.recur_pool = _PoolProxy(
            "kv_cache_manager.recur_pool", a.clear_recurrent_cache, a.recurrent_cache_size
        )
        self.keys_values_wm_list: list[Any] = []
        self.keys_values_wm_size_list: list[int] = []

    def clear_recur_cache(self) -> None:
        self._attachment.clear_recurrent_cache()

    def clear_init_caches(self) -> None:
        self._attachment.clear_root_caches()

    def clear_all(self) -> None:
        self._attachment.clear_all_caches()

    def get_stats_summary(self) -> dict[str, Any]:
        return {"stats_enabled": True, "zerokv": self._attachment.stats()}

    def _path(self, name: str) -> str:
        return f"kv_cache_manager.{name}"


# --------------------------------------------------------------------------- inspection


def _world_model(model: LightZeroObject) -> LightZeroObject:
    """The world model of a ``UniZeroModel``, or ``model`` itself."""
    inner = getattr(model, "world_model", None)
    if inner is not None and hasattr(inner, "forward_recurrent_inference"):
        return inner
    return model


def _parameters(method: object) -> list[str]:
    try:
        return list(inspect.signature(method).parameters)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return []


def detect_version(wm: LightZeroObject) -> str:
    """``LIGHTZERO_020`` or ``LIGHTZERO_MAIN`` for a world model of that version; raises
    ``ConfigError`` for anything else."""
    cls = type(wm)
    what = f"{cls.__module__}.{cls.__qualname__}"
    if not isinstance(wm, torch.nn.Module):
        raise ConfigError(
            f"attach needs LightZero's UniZero WorldModel (or UniZeroModel), got {what}"
        )
    missing = [
        name
        for name in (*REPLACED_METHODS, "reset_for_initial_inference", "forward", "transformer")
        if not hasattr(wm, name)
    ]
    if missing:
        raise ConfigError(
            f"{what} is not a LightZero UniZero world model of a supported version "
            f"(0.2.0, or main 9f717c80 or later): it has no {', '.join(missing)}"
        )
    initial = _parameters(cls.wm_forward_for_initial_infererence)
    update = _parameters(cls.update_cache_context)
    if "ready_env_id" in initial and "env_ids" in update:
        return LIGHTZERO_MAIN
    if initial == [
        "self",
        "last_obs_embeddings",
        "batch_action",
        "current_obs_embeddings",
        "start_pos",
    ] and hasattr(wm, "shared_pool_size_init"):
        return LIGHTZERO_020
    raise ConfigError(
        f"{what} is a LightZero world model of an unsupported version: "
        f"wm_forward_for_initial_infererence{tuple(initial[1:])}, "
        f"update_cache_context{tuple(update[1:])} match neither 0.2.0 nor main 9f717c80+"
    )


def positive_option(options: dict[str, Any], name: str) -> int | None:
    """``options[name]`` as an int >= 1, or None when not given (``ConfigError`` for
    anything else: no ``int()`` coercion, no silent default for 0)."""
    value = options.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
    return value


def _config_flag(config: object, name: str) -> bool:
    return bool(getattr(config, name, False))


def _check_supported(wm: LightZeroObject, version: str) -> None:
    """Refuse the modes attach does not implement (``ConfigError``)."""
    config = wm.config
    refused = []
    if _config_flag(config, "continuous_action_space") or getattr(
        wm, "continuous_action_space", False
    ):
        refused.append("continuous_action_space=True (discrete actions only)")
    tokens = getattr(config, "tokens_per_block", 2)
    if tokens != 2:
        refused.append(f"tokens_per_block={tokens} (one observation token per block only)")
    cl = getattr(wm, "context_length", None)
    if not isinstance(cl, int) or cl < 4:
        refused.append(f"context_length={cl!r} (zerokv needs >= 4)")
    for flag in ("rebuild_kv_window_from_tokens", "exact_kv_window_reset"):
        if getattr(wm, flag, False) or _config_flag(config, flag):
            refused.append(f"{flag}=True")
    if getattr(wm.transformer, "use_register_token", False):
        refused.append("register tokens (use_register_token=True)")
    if getattr(wm, "reanalyze_phase", False):
        refused.append("reanalyze_phase=True (attach the collect/eval model, not the target model)")
    if not getattr(config, "rotary_emb", False) and not hasattr(wm, "pos_emb_diff_k"):
        refused.append("absolute positions without pos_emb_diff_k (precompute_pos_emb_diff_kv)")
    if refused:
        raise ConfigError(
            f"zerokv.lightzero.attach does not support this LightZero {version} world model: "
            + "; ".join(refused)
        )


def _model_device(wm: LightZeroObject, device: object) -> tuple[torch.device, torch.dtype]:
    """The one device and dtype of the model's parameters (``DeviceError`` otherwise)."""
    anchor = wm.transformer.ln_f.weight  # where LightZero allocates its caches
    here, dtype = anchor.device, anchor.dtype
    for name, tensor in [*wm.named_parameters(), *wm.named_buffers()]:
        if tensor.device != here:
            raise DeviceError(
                f"the world model's tensors must be on one device: transformer.ln_f.weight is "
                f"on {here}, {name} on {tensor.device}"
            )
    declared = getattr(wm, "device", None)
    if isinstance(declared, (str, torch.device)) and torch.device(declared).type != here.type:
        raise DeviceError(f"world_model.device is {declared} but its parameters are on {here}")
    if device is not None:
        try:
            want = torch.device(device)  # type: ignore[call-overload]
        except (RuntimeError, TypeError) as err:
            raise ConfigError(f"not a device: {device!r} ({err})") from None
        if want.type != here.type or (want.index is not None and want.index != here.index):
            raise DeviceError(f"attach(device={device!r}) but the world model is on {here}")
    return here, dtype


# --------------------------------------------------------------------------- attachment

M = TypeVar("M", bound=Callable[..., Any])


def attached_call(method: M) -> M:
    """An attached call: refused once the attachment is detached (a bound method kept from
    the attached time must not write into the restored model), and one guarded unit - a
    second thread inside the same attachment gets ``ConcurrentUseError`` (the attached
    model's calls change its cache and its own attributes together)."""

    @functools.wraps(method)
    def guarded(self: Attachment, /, *args: Any, **kwargs: Any) -> Any:
        if not self.attached:
            raise UnsupportedOperationError(
                f"{type(self).__name__}.{method.__name__} after detach(): this attachment "
                "is over and the model is LightZero's again (attach it anew)"
            )
        if not self._busy.acquire(blocking=False):
            raise ConcurrentUseError(
                f"{type(self).__name__}.{method.__name__} called while another thread is "
                "inside this attached model; an attached model is not thread-safe (one "
                "model per thread, or serialise the calls)"
            )
        try:
            return method(self, *args, **kwargs)
        finally:
            self._busy.release()

    return cast(M, guarded)


@dataclass
class _Counts:
    """Host counters of the attached calls."""

    initial_calls: int = 0
    recurrent_calls: int = 0
    root_batches: int = 0
    root_lookups: int = 0
    root_hits: int = 0
    recurrent_lookups: int = 0
    recurrent_hits: int = 0
    recomputed_misses: int = 0
    memo_hits: int = 0
    host_reads: int = 0
    clears: int = 0
    #: Seconds spent in the cache code of recurrent calls (keys, lookup, gather, the
    #: host read, recomputed misses, store); on CUDA the time to launch it.
    recurrent_cache_seconds: float = 0.0


def _position(start_pos: object, row: int) -> int:
    """Row ``row``'s start position (a scalar, or a list / array / tensor of them)."""
    if isinstance(start_pos, (int, float)):
        return int(start_pos)
    item = start_pos[row]  # type: ignore[index]
    return int(item.item()) if hasattr(item, "item") else int(item)


def _first_rows(value: Any, rows: int) -> Any:
    if isinstance(value, (int, float)):
        return value
    return value[:rows]


def _select(value: Any, indices: list[int]) -> Any:
    if value is None or isinstance(value, (int, float)):
        return value
    if isinstance(value, torch.Tensor):
        return value[torch.tensor(indices, device=value.device)]
    if hasattr(value, "shape"):  # a numpy array
        return value[indices]
    return [value[i] for i in indices]


class Attachment:
    """A world model whose caches zerokv manages (``attach``); ``detach()`` undoes it."""

    #: The keyword options this kind of attachment takes.
    OPTIONS: frozenset[str] = OPTIONS

    def __init__(self, model: LightZeroObject, **options: Any) -> None:
        unknown = set(options) - self.OPTIONS
        if unknown:
            raise ConfigError(
                f"unknown attach options {sorted(unknown)}; known: {sorted(self.OPTIONS)}"
            )
        wm = _world_model(model)
        self.version = detect_version(wm)
        _check_supported(wm, self.version)
        device, dtype = _model_device(wm, options.get("device"))
        self.world_model = wm
        config = wm.config
        self.context_length: int = int(wm.context_length)
        self.num_layers = int(config.num_layers)
        self.num_heads = int(config.num_heads)
        embed_dim = int(config.embed_dim)
        if embed_dim % self.num_heads:
            raise ConfigError(
                f"embed_dim {embed_dim} is not a multiple of num_heads {self.num_heads}"
            )
        self.head_dim = embed_dim // self.num_heads
        self.rotary = bool(getattr(config, "rotary_emb", False))
        self.device, self.dtype = device, dtype
        self.counts = _Counts()
        self._options = dict(options)
        self._build_cache(options)
        self._zero_correction = Correction.zero(
            self.num_layers, self.num_heads, self.head_dim, self.context_length, device, dtype
        )
        self._correction: Correction | None = None
        self._correction_source: tuple[object, object] | None = None
        if not self.rotary:
            self.correction()  # validates LightZero's table now (ConfigError / DeviceError)
        self._saved: dict[str, Any] = {}
        self._absent: set[str] = set()
        self.attached = False
        self._busy = threading.RLock()

    # ------------------------------------------------------------------ copies
    def __deepcopy__(self, memo: dict[int, Any]) -> Attachment:
        """A deep copy of an attached world model (LightZero's target model is one) is
        attached like the original, with its own fresh, empty cache of the same
        configuration; the LightZero state ``detach`` restores is copied with it."""
        twin = memo.get(id(self.world_model))
        if twin is None:
            raise UnsupportedOperationError(
                "an Attachment is copied with its world model (copy.deepcopy(model): the "
                "copy gets its own cache), not on its own"
            )
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        memo[id(self)] = new
        new.counts = _Counts()
        new._busy = threading.RLock()
        new._build_cache(dict(self._options))  # sized from the original's config
        new.world_model = twin
        new._saved = copy.deepcopy(self._saved, memo)
        new._absent = set(self._absent)
        new._correction, new._correction_source = None, None
        register_attachment(twin, new)
        return new

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise UnsupportedOperationError(
            "an attached world model is not pickled (pickle, torch.save of the model): save "
            "its state_dict() as LightZero's checkpoints do, or detach() first"
        )

    def _build_cache(self, options: dict[str, Any]) -> None:
        """The content-keyed cache of this attachment: a ``CacheManager`` sized as
        LightZero sizes its pools (a subclass builds another cache here)."""
        wm, config, device, dtype = (
            self.world_model,
            self.world_model.config,
            self.device,
            self.dtype,
        )
        key = options.get("key", "zkv64")
        if key not in ("zkv64", "xxh64"):
            raise ConfigError(
                f"key must be 'zkv64' or 'xxh64' (LightZero's hash_state), got {key!r}"
            )
        scope = options.get("scope", Scope.ENV)
        if not isinstance(scope, Scope):
            raise ConfigError(f"scope must be a zerokv.Scope, got {scope!r}")
        sims = positive_option(options, "num_simulations")
        if sims is None:
            sims = int(getattr(config, "num_simulations", 50))
        max_cache = positive_option(options, "max_cache_size")
        if max_cache is None:
            max_cache = int(getattr(config, "max_cache_size", 5000))
        verify = options.get("verify", True)
        if not isinstance(verify, bool):
            raise ConfigError(f"verify must be a bool, got {verify!r}")
        cfg = CacheConfig.legacy(
            int(wm.env_num),
            self.num_layers,
            self.num_heads,
            self.head_dim,
            self.context_length,
            sims,
            max_cache,
            scope=scope,
            device=device,
            dtype=dtype,
            index=options.get("index", "auto"),
            compile=options.get("compile", False),
        )
        self.manager = CacheManager(cfg, key_fn=legacy_keys if key == "xxh64" else None)
        self.key = key
        #: Fingerprints checked on every hit (zkv64; a mismatch is a counted miss).
        self.verify = verify
        self._key_fn = legacy_keys if key == "xxh64" else zkv64_keys
        #: Keys of this search's stored latents by their bytes (CPU caches only; ``_keys``).
        self._memo: dict[bytes, tuple[int, int]] | None = (
            {} if checks.host_reads_are_free(device) else None
        )

    # ------------------------------------------------------------------ install
    def _install(self) -> None:
        wm = self.world_model
        state = wm.__dict__
        names = (*REPLACED_METHODS, *PROXIED_ATTRIBUTES, *WRITTEN_ATTRIBUTES)
        for name in names:
            if name in state:
                self._saved[name] = state[name]
            else:
                self._absent.add(name)
        replacements: dict[str, Callable[..., Any]] = {
            "forward_initial_inference": self.forward_initial_inference,
            "wm_forward_for_initial_infererence": self.wm_forward_for_initial_infererence,
            "forward_recurrent_inference": self.forward_recurrent_inference,
            "retrieve_or_generate_kvcache": self._replaced("retrieve_or_generate_kvcache"),
            "trim_and_pad_kv_cache": self._replaced("trim_and_pad_kv_cache"),
            "update_cache_context": self._replaced("update_cache_context"),
            "clear_caches": self.clear_caches,
        }
        state.update(replacements)
        for name, proxy in self._proxies().items():
            if name in state:
                state[name] = proxy
        self.attached = True

    def _proxies(self) -> dict[str, Any]:
        """The stand-ins for LightZero's cache attributes (installed where the model has
        them): their ``clear()`` reaches this attachment's cache."""
        return {
            "past_kv_cache_init_infer_envs": [
                _PoolProxy(
                    f"past_kv_cache_init_infer_envs[{e}]",
                    partial(self.clear_env_cache, e),
                    partial(self.root_cache_size, e),
                )
                for e in range(self.env_num)
            ],
            "past_kv_cache_recurrent_infer": _PoolProxy(
                "past_kv_cache_recurrent_infer",
                self.clear_recurrent_cache,
                self.recurrent_cache_size,
            ),
            "kv_cache_manager": _ManagerProxy(self),
        }

    # The cache operations LightZero's clears reach (the proxies above call these).
    @property
    def env_num(self) -> int:
        return self.manager.config.env_num

    @attached_call
    def clear_env_cache(self, env: int) -> None:
        self.manager.clear_env(env)

    @attached_call
    def root_cache_size(self, env: int) -> int:
        return self.manager.root_sizes()[env]

    @attached_call
    def clear_recurrent_cache(self) -> None:
        self.manager.clear_recurrent()

    @attached_call
    def recurrent_cache_size(self) -> int:
        return self.manager.recurrent_size()

    @attached_call
    def clear_root_caches(self) -> None:
        self.manager.clear_roots()

    @attached_call
    def clear_all_caches(self) -> None:
        self.manager.clear_all()

    def detach(self) -> None:
        """Put back every method and attribute attach replaced or its calls wrote (as they
        were when ``attach`` was called). Idempotent."""
        if not self.attached:
            return
        state = self.world_model.__dict__
        for name, value in self._saved.items():
            state[name] = value
        for name in self._absent:
            state.pop(name, None)
        self.attached = False
        with _REGISTRY_LOCK:
            if _ATTACHED.get(self.world_model) is self:
                del _ATTACHED[self.world_model]

    def __enter__(self) -> Attachment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def _replaced(self, name: str) -> Callable[..., Any]:
        def refused(*args: Any, **kwargs: Any) -> Any:
            raise UnsupportedOperationError(
                f"world_model.{name} is replaced by zerokv's batched cache path "
                "(zerokv.lightzero.attach); a direct call (reanalysis seeding, ...) is not "
                "supported while attached - detach() first"
            )

        return refused

    def _check_live(self) -> None:
        if getattr(self.world_model, "reanalyze_phase", False):
            raise UnsupportedOperationError(
                "reanalysis (reanalyze_phase=True) is not supported by zerokv.lightzero.attach: "
                "attach the collect/eval model, not the reanalysis target model"
            )

    # ------------------------------------------------------------------ tables
    def correction(self) -> Correction:
        """The window rule's table: LightZero's ``pos_emb_diff_k/v`` (rebuilt whenever
        ``precompute_pos_emb_diff_kv`` made new ones), or zeros for rotary positions."""
        if self.rotary:
            return self._zero_correction
        wm = self.world_model
        source = (wm.pos_emb_diff_k, wm.pos_emb_diff_v)
        cached = self._correction_source
        if cached is not None and cached[0] is source[0] and cached[1] is source[1]:
            assert self._correction is not None
            return self._correction
        window = (2, self.context_length - 1)
        try:
            table = torch.stack(
                [
                    torch.stack((source[0][layer][window][0], source[1][layer][window][0]))
                    for layer in range(self.num_layers)
                ]
            )
        except (KeyError, IndexError, TypeError, RuntimeError) as err:
            raise ConfigError(
                f"pos_emb_diff_k/v do not hold LightZero's window table: {err}"
            ) from None
        if table.device != self.device:
            raise DeviceError(f"pos_emb_diff_k is on {table.device}, the model on {self.device}")
        self._correction = Correction(table.to(self.dtype))
        self._correction_source = source
        return self._correction

    # ------------------------------------------------------------------ helpers
    def _latents(self, latest: Any) -> torch.Tensor:
        """The search's parent latents (numpy rows, or a tensor) on the cache's device, in
        the model's dtype; refused before any counter moves."""
        if isinstance(latest, torch.Tensor) and latest.device.type not in ("cpu", self.device.type):
            raise DeviceError(
                f"latents are on {latest.device}, the attached model on {self.device}"
            )
        try:
            latents = torch.as_tensor(latest)
        except (TypeError, ValueError, RuntimeError) as err:
            raise DTypeError(
                f"latents must be a tensor or an array, got {type(latest).__name__}: {err}"
            ) from None
        if latents.dtype != self.dtype:
            raise DTypeError(
                f"latents must have the model's dtype {self.dtype}, got {latents.dtype}"
            )
        return latents.to(self.device)

    def _sizes(self, batch: Batch, t: int) -> list[int]:
        """The entry size of every row (one host read: the only one of a call)."""
        self.counts.host_reads += 1
        return [int(n) - t for n in batch.lengths.tolist()]

    def _fill_misses(
        self, batch: Batch, sizes: list[int], latents: torch.Tensor, start_pos: Any, t: int
    ) -> tuple[Batch, int]:
        """Rows that missed: LightZero's fresh one-token entry of the row's latent, computed
        by the model's forward straight into the batch (one row at a time, as LightZero);
        the batch with those rows' lengths (``Batch.with_length``: no device read) and the
        number of misses."""
        misses = [row for row, size in enumerate(sizes) if size == 0]
        if not misses:
            return batch, 0
        wm, col = self.world_model, self.context_length - t - 1
        for row in misses:
            view = BatchView(batch.kv[:, :, row : row + 1], col, col)
            wm.forward(
                {"obs_embeddings": latents[row].unsqueeze(0)},
                past_keys_values=view,
                is_init_infer=True,
                start_pos=_position(start_pos, row),
            )
            sizes[row] = 1
        flags = torch.zeros(batch.rows, dtype=torch.bool)
        flags[misses] = True
        batch = batch.with_length(flags.to(batch.kv.device), t + 1)
        self.counts.recomputed_misses += len(misses)
        return batch, len(misses)

    def _keys(
        self, latents: torch.Tensor, host: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Keys and (with ``verify``) fingerprints of the rows of ``latents``.

        On a CPU cache (``zerokv.checks.host_reads_are_free``) the keys of every latent
        stored since the last root step are remembered by the latent's bytes, so a search's
        parents - latents the cache produced, handed back by MCTS as numpy rows (``host``)
        - are not hashed twice. A key is a function of the bytes: the memo only skips
        recomputing it. Never on CUDA (reading a latent's bytes there would synchronise).
        """
        if latents.device != self.device:
            raise DeviceError(
                f"latents are on {latents.device}, the attached cache on {self.device}"
            )
        rows = latents.reshape(latents.shape[0], -1)
        memo = self._memo
        if memo is not None and host is not None:
            found = [memo.get(row.tobytes()) for row in host.reshape(rows.shape[0], -1)]
            if None not in found:
                self.counts.memo_hits += len(found)
                keys = torch.tensor([k for k, _ in found], dtype=torch.int64)  # type: ignore[misc]
                if not self.verify:
                    return keys, None
                return keys, torch.tensor([f for _, f in found], dtype=torch.int64)  # type: ignore[misc]
        fps: torch.Tensor | None
        if self.verify:
            keys, fps = self.manager.keys_of(rows)
        else:
            keys, fps = self._key_fn(rows), None
        if memo is not None:
            data = host.reshape(rows.shape[0], -1) if host is not None else rows.detach().numpy()
            marks = fps.tolist() if fps is not None else [0] * rows.shape[0]
            for row, key, mark in zip(data, keys.tolist(), marks):
                memo[row.tobytes()] = (key, mark)
        return keys, fps

    # ------------------------------------------------------------------ initial inference
    @attached_call
    def forward_initial_inference(self, obs_act_dict: Any, start_pos: Any = 0) -> tuple[Any, ...]:
        """LightZero's ``forward_initial_inference`` (encode, root step, clear the recurrent
        pool) on zerokv."""
        self._check_live()
        wm = self.world_model
        with torch.no_grad():
            outputs, latent = wm.reset_for_initial_inference(obs_act_dict, start_pos)
            self._search_ends()
        self.counts.initial_calls += 1
        return (
            outputs.output_sequence,
            latent,
            outputs.logits_rewards,
            outputs.logits_policy,
            outputs.logits_value,
        )

    def _search_ends(self) -> None:
        """After a root step: the last search's nodes are read no more (LightZero clears its
        recurrent pool here); only this step's latents are parents now."""
        if self._memo is not None:
            self._memo.clear()
        self.manager.clear_recurrent()

    @attached_call
    def wm_forward_for_initial_infererence(
        self,
        last_obs_embeddings: torch.Tensor,
        batch_action: Any = None,
        current_obs_embeddings: torch.Tensor | None = None,
        start_pos: Any = 0,
        ready_env_id: Sequence[int] | None = None,
    ) -> Any:
        """The root step: first step of an episode, or lookup + gather + forward + store."""
        self._check_live()
        wm = self.world_model
        original = type(wm).wm_forward_for_initial_infererence
        n = last_obs_embeddings.shape[0]
        if current_obs_embeddings is None or n > wm.env_num:  # training path: no caches
            if ready_env_id is None:
                return original(
                    wm, last_obs_embeddings, batch_action, current_obs_embeddings, start_pos
                )
            return original(
                wm,
                last_obs_embeddings,
                batch_action,
                current_obs_embeddings,
                start_pos,
                ready_env_id,
            )
        rows = int(current_obs_embeddings.shape[0])
        if ready_env_id is None:
            env_ids = list(range(rows))
        else:
            env_ids = [int(e) for e in ready_env_id]
            if len(env_ids) != rows:
                raise ConfigError(
                    f"ready_env_id has {len(env_ids)} entries for a batch of {rows} rows"
                )
        self.correction()  # a bad table is refused before anything moves
        if self.version == LIGHTZERO_MAIN:
            wm.current_infer_env_ids = env_ids
        with torch.no_grad():
            first = [int(a) == -1 for a in batch_action]
            if any(first) and not all(first):  # split as LightZero main does (0.2.0 raises)
                return self._mixed(
                    last_obs_embeddings,
                    batch_action,
                    current_obs_embeddings,
                    start_pos,
                    env_ids,
                    first,
                )
            if all(first):
                return self._root_first(current_obs_embeddings, start_pos, env_ids)
            return self._root_continue(
                last_obs_embeddings, batch_action, current_obs_embeddings, start_pos, env_ids
            )

    def _mixed(
        self,
        last: torch.Tensor,
        action: Any,
        current: torch.Tensor,
        start_pos: Any,
        env_ids: list[int],
        first: list[bool],
    ) -> Any:
        wm = self.world_model
        chunks = []
        for flag in (True, False):
            idx = [i for i, f in enumerate(first) if f is flag]
            sub_env = [env_ids[i] for i in idx]
            out = (
                self._root_first(_select(current, idx), _select(start_pos, idx), sub_env)
                if flag
                else self._root_continue(
                    _select(last, idx),
                    _select(action, idx),
                    _select(current, idx),
                    _select(start_pos, idx),
                    sub_env,
                )
            )
            chunks.append((idx, out))
        if self.version == LIGHTZERO_MAIN:
            wm.current_infer_env_ids = env_ids
        return _merge(chunks, len(first))

    def _root_first(self, current: torch.Tensor, start_pos: Any, env_ids: list[int]) -> Any:
        """First step of an episode: the current latent alone (one token) per row."""
        wm, cl = self.world_model, self.context_length
        rows = int(current.shape[0])
        kv = torch.zeros(
            (self.num_layers, 2, rows, self.num_heads, cl, self.head_dim),
            device=self.device,
            dtype=self.dtype,
        )
        out = wm.forward(
            {"obs_embeddings": current},
            past_keys_values=BatchView(kv, cl - 1, cl - 1),
            is_init_infer=True,
            start_pos=start_pos,
        )
        # Built here with one token per row: the lengths are known to be in range.
        batch = Batch(kv, torch.ones(rows, dtype=torch.int64, device=self.device), True)
        keys, fps = self._keys(current)
        self.manager.store_root_batch(env_ids, keys, batch, self.correction(), fps)
        return out

    def _root_continue(
        self,
        last: torch.Tensor,
        action: Any,
        current: torch.Tensor,
        start_pos: Any,
        env_ids: list[int],
    ) -> Any:
        """A continuing root step: the previous root entry + the action + the current latent."""
        mgr = self.manager
        rows = int(current.shape[0])
        last = last[:rows]
        keys, fps = self._keys(last)
        found = mgr.lookup_many(env_ids, keys, fps, tiers="root")
        batch = mgr.gather_reserve(found, 2)
        sizes = self._sizes(batch, 2)
        batch, missed = self._fill_misses(batch, sizes, last, start_pos, 2)
        self._count_root(rows, missed)
        out = self._root_forwards(batch.kv, sizes, last, action, current, start_pos)
        child_keys, child_fps = self._keys(current)
        mgr.store_root_batch(env_ids, child_keys, batch, self.correction(), child_fps)
        return out

    def _count_root(self, rows: int, missed: int) -> None:
        """A root batch's lookups in LightZero's counters and the attachment's."""
        wm = self.world_model
        wm.root_total_query_cnt += rows
        wm.root_hit_cnt += rows - missed
        self.counts.root_batches += 1
        self.counts.root_lookups += rows
        self.counts.root_hits += rows - missed

    def _root_forwards(
        self,
        kv: torch.Tensor,
        sizes: list[int],
        last: torch.Tensor,
        action: Any,
        current: torch.Tensor,
        start_pos: Any,
    ) -> Any:
        """A continuing root step's two forwards (the action, then the current latent) over
        the gathered batch ``kv``, whose rows hold ``sizes`` tokens; LightZero's output."""
        wm, cl = self.world_model, self.context_length
        rows = int(current.shape[0])
        longest = max(sizes)
        view = BatchView(kv, cl - 2 - longest, cl - 2)
        wm.keys_values_wm_size_list = sizes
        wm.keys_values_wm_size_list_current = sizes
        start_pos = _first_rows(start_pos, rows)
        act_tokens = torch.as_tensor(_as_array(action[:rows])).to(last.device).unsqueeze(-1)
        if self.version == LIGHTZERO_MAIN:
            variable = type(wm)._variable_context_lengths
            current_sizes = list(sizes)
            wm.forward(
                {"act_tokens": act_tokens},
                past_keys_values=view,
                is_init_infer=True,
                valid_context_lengths=variable(current_sizes),
                start_pos=start_pos,
            )
            current_sizes = [s + 1 for s in current_sizes]
            wm.keys_values_wm_size_list_current = current_sizes
            out = wm.forward(
                {"obs_embeddings": current},
                past_keys_values=view,
                is_init_infer=True,
                valid_context_lengths=variable(current_sizes),
                start_pos=start_pos,
            )
            wm.keys_values_wm_size_list_current = [s + 1 for s in current_sizes]
        else:
            wm.forward(
                {"act_tokens": act_tokens},
                past_keys_values=view,
                is_init_infer=True,
                start_pos=start_pos,
            )
            out = wm.forward(
                {"obs_embeddings": current},
                past_keys_values=view,
                is_init_infer=True,
                start_pos=start_pos,
            )
        return out

    # ------------------------------------------------------------------ recurrent inference
    def _recurrent_env_ids(self, rows: int) -> list[int]:
        ids = getattr(self.world_model, "current_infer_env_ids", None)
        env_num = self.manager.config.env_num
        if self.version == LIGHTZERO_MAIN and ids is not None:
            return [
                int(ids[r]) if r < len(ids) and 0 <= int(ids[r]) < env_num else r
                for r in range(rows)
            ]
        return list(range(rows))

    @attached_call
    def forward_recurrent_inference(
        self,
        state_action_history: Sequence[Any],
        simulation_index: int = 0,
        search_depth: Sequence[int] | None = None,
        start_pos: Any = 0,
    ) -> tuple[Any, ...]:
        """One MCTS expansion for the whole batch: lookup, gather, two forwards, store."""
        self._check_live()
        wm, mgr = self.world_model, self.manager
        depth = [] if search_depth is None else search_depth
        latest, action = state_action_history[-1]
        rows = int(latest.shape[0])
        clock = time.perf_counter
        begin = clock()
        correction = self.correction()  # a bad table is refused before anything moves
        latents = self._latents(latest)
        with torch.no_grad():
            env_ids = self._recurrent_env_ids(rows)
            keys, fps = self._keys(latents, host=latest if not torch.is_tensor(latest) else None)
            found = mgr.lookup_many(env_ids, keys, fps)
            batch = mgr.gather_reserve(found, 2)
            sizes = self._sizes(batch, 2)
            batch, missed = self._fill_misses(batch, sizes, latents, start_pos, 2)
            wm.total_query_count += rows
            wm.hit_count += rows - missed
            self.counts.recurrent_lookups += rows
            self.counts.recurrent_hits += rows - missed
            spent = clock() - begin
            out, reward = self._recurrent_forwards(batch.kv, sizes, action, start_pos, depth)
            begin = clock()
            child_keys, child_fps = self._keys(wm.latent_state)
            mgr.store_recurrent_batch(env_ids, child_keys, batch, correction, child_fps)
            spent += clock() - begin
        self.counts.recurrent_calls += 1
        self.counts.recurrent_cache_seconds += spent
        return (out.output_sequence, wm.latent_state, reward, out.logits_policy, out.logits_value)

    def _recurrent_forwards(
        self, kv: torch.Tensor, sizes: list[int], action: Any, start_pos: Any, depth: Any
    ) -> tuple[Any, Any]:
        """One expansion's two forwards (the action, then the predicted latent) over the
        gathered batch ``kv``, whose rows hold ``sizes`` tokens; sets ``latent_state`` and
        returns LightZero's last output and the reward logits."""
        wm, cl = self.world_model, self.context_length
        longest = max(sizes)
        view = BatchView(kv, cl - 2 - longest, cl - 2)
        wm.keys_values_wm_size_list = sizes
        wm.keys_values_wm_size_list_current = sizes
        token = action.reshape(-1, 1)
        variable = getattr(type(wm), "_variable_context_lengths", None)
        reward = None
        latent_list = []
        out = None
        for k in range(2):
            inputs = {"act_tokens": token} if k == 0 else {"obs_embeddings": token}
            extra = {}
            if self.version == LIGHTZERO_MAIN:
                assert variable is not None
                extra["valid_context_lengths"] = variable(wm.keys_values_wm_size_list_current)
            out = wm.forward(
                inputs,
                past_keys_values=view,
                kvcache_independent=False,
                is_init_infer=False,
                start_pos=start_pos,
                search_depth=depth,
                **extra,
            )
            wm.keys_values_wm_size_list_current = [
                s + 1 for s in wm.keys_values_wm_size_list_current
            ]
            if k == 0:
                reward = out.logits_rewards
            if k < wm.num_observations_tokens:
                token = out.logits_observations
                if len(token.shape) != 3:
                    token = token.unsqueeze(1)
                latent_list.append(token)
        assert out is not None
        wm.latent_state = torch.cat(latent_list, dim=1)
        return out, reward

    # ------------------------------------------------------------------ clearing, stats
    @attached_call
    def clear_caches(self) -> None:
        """LightZero's ``clear_caches``: every pool."""
        self.clear_all_caches()
        wm = self.world_model
        if self.version == LIGHTZERO_MAIN:
            wm.current_infer_env_ids = None
        self.counts.clears += 1
        log.debug("zerokv.lightzero.attach: cleared every pool")

    def stats(self) -> dict[str, Any]:
        """Calls, lookups and hits per tier, recomputed misses, host reads, and the
        manager's statistics (``CacheManager.stats()``)."""
        c = self.counts
        return {
            "version": self.version,
            "key": self.key,
            "initial_calls": c.initial_calls,
            "recurrent_calls": c.recurrent_calls,
            "root_batches": c.root_batches,
            "root_lookups": c.root_lookups,
            "root_hits": c.root_hits,
            "recurrent_lookups": c.recurrent_lookups,
            "recurrent_hits": c.recurrent_hits,
            "recomputed_misses": c.recomputed_misses,
            "memo_hits": c.memo_hits,
            "host_reads": c.host_reads,
            "clears": c.clears,
            "manager": self.manager.stats().as_dict(),
        }

    def __repr__(self) -> str:
        state = "attached" if self.attached else "detached"
        return f"Attachment(LightZero {self.version}, key={self.key}, {state})"


def _as_array(actions: Any) -> Any:
    """Actions as LightZero builds its action tokens (``np.array`` of the list)."""
    import numpy as np

    return np.array(actions)


def _merge(chunks: list[tuple[list[int], Any]], rows: int) -> Any:
    """The outputs of the sub-batches of a mixed root batch, back in batch order."""
    first = chunks[0][1]
    merged: dict[str, Any] = {}
    for name in (
        "output_sequence",
        "logits_observations",
        "logits_rewards",
        "logits_ends",
        "logits_policy",
        "logits_value",
    ):
        parts = [getattr(out, name) for _, out in chunks]
        if any(p is None for p in parts) or any(p.shape[1:] != parts[0].shape[1:] for p in parts):
            merged[name] = None
            continue
        value = parts[0].new_empty((rows, *parts[0].shape[1:]))
        for (idx, _), part in zip(chunks, parts):
            value[torch.tensor(idx, device=value.device)] = part
        merged[name] = value
    return type(first)(**merged)


# --------------------------------------------------------------------------- entry points


def attach(world_model: LightZeroObject, **options: Any) -> Attachment:
    """Put the caches of LightZero's UniZero ``world_model`` (a ``WorldModel`` or a
    ``UniZeroModel``) on a ``zerokv.CacheManager`` (module docstring).

    Options: ``key`` ("zkv64", default, or "xxh64": LightZero's ``hash_state`` keys),
    ``scope`` (``Scope.ENV``, default: each environment's search tree isolated, or
    ``Scope.GLOBAL``: LightZero's shared recurrent keys), ``device`` (checked against the
    model's), ``index`` ("auto", "host", "device"), ``compile`` (compiled kernels:
    ``CacheConfig(compile=True)``, what a CUDA model wants), ``num_simulations`` and
    ``max_cache_size`` (pool sizes; default the config's, as LightZero sizes its pools).
    Raises ``ConfigError`` for an unsupported version or mode, ``DeviceError`` for tensors
    on the wrong device; changes nothing then.
    """
    wm = _world_model(world_model)
    if attachment_of(wm) is not None:  # before allocating a second cache
        raise ConfigError("this world model is already attached; detach() it first")
    attachment = Attachment(world_model, **options)
    register_attachment(wm, attachment)
    attachment._install()
    return attachment


def register_attachment(wm: LightZeroObject, attachment: Attachment) -> None:
    """Record ``attachment`` as ``wm``'s (one at a time per world model)."""
    with _REGISTRY_LOCK:
        if wm in _ATTACHED:
            raise ConfigError("this world model is already attached; detach() it first")
        _ATTACHED[wm] = attachment


def attachment_of(world_model: LightZeroObject) -> Attachment | None:
    """The live attachment of a world model (or of a ``UniZeroModel``'s), or None."""
    try:
        return _ATTACHED.get(_world_model(world_model))
    except TypeError:  # not weak-referenceable: no world model
        return None


@contextmanager
def attached(world_model: LightZeroObject, **options: Any) -> Iterator[Attachment]:
    """``attach`` for the duration of a ``with`` block."""
    attachment = attach(world_model, **options)
    try:
        yield attachment
    finally:
        attachment.detach()
