"""LightZero's ``KeysValues`` layout: the classes, the keys, validation and object building.

This module owns everything that knows what a LightZero cache object looks like (it never
imports LightZero: objects are duck-typed):

* ``len(kv)`` is the number of layers ``L``; ``kv._keys_values[l]`` has ``_k_cache`` and
  ``_v_cache``; each of those has ``_cache``, a tensor ``(1, H, cl, d)`` holding its
  ``_size`` valid tokens *left-aligned* in ``[0, _size)``, and ``_size`` (an int);
  ``kv.size`` (when present) is layer 0's size.
* ``LayoutKeysValues`` / ``LayoutKVCache`` / ``LayoutCache`` - minimal classes with that
  layout (for tests, docs and callers without LightZero).
* ``lightzero_key`` / ``unsigned_key`` - LightZero's keys (unsigned 64-bit ``xxh64``
  digests, or their signed twins) in zerokv's signed and LightZero's unsigned form.
* ``check_object`` - the full validation, with typed errors naming what was expected and
  what came (``EntryError``, ``ShapeError``, ``DTypeError``, ``DeviceError``).
* ``ObjectPlan`` - what is learnt once from the first stored object: its classes and the
  attributes to carry over, so that validating the next objects and building new ones
  (``build``) costs a few attribute reads per cache instead of a deep copy.
"""

from __future__ import annotations

import copy
import operator
import types
from dataclasses import dataclass
from typing import Any

import torch

from zerokv.errors import DeviceError, DTypeError, EntryError, KeyRangeError, ShapeError
from zerokv_spec.entry import MIN_CONTEXT_LENGTH
from zerokv_spec.keys import INT64_MIN, MASK64, to_signed

__all__ = [
    "DEFAULT_MAX_CACHE_SIZE",
    "SIDES",
    "Checked",
    "Format",
    "KeysValuesLike",
    "LayoutCache",
    "LayoutKVCache",
    "LayoutKeysValues",
    "ObjectPlan",
    "check_object",
    "lightzero_key",
    "unsigned_key",
]

#: LightZero's default ``max_cache_size``.
DEFAULT_MAX_CACHE_SIZE = 5000

#: An object with LightZero's ``KeysValues`` layout (duck-typed).
KeysValuesLike = Any

#: The two caches of a layer, K then V.
SIDES = ("_k_cache", "_v_cache")

_TWO64 = 1 << 64


# --------------------------------------------------------------------------- classes


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
    """A minimal object with LightZero's ``KeysValues`` layout."""

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


# --------------------------------------------------------------------------- keys


def unsigned_key(key: object) -> int:
    """A LightZero key (an int in ``[-2**63, 2**64)``) in LightZero's unsigned form.

    LightZero's keys are ``xxh64(...).intdigest()`` values in ``[0, 2**64)``; a signed
    64-bit twin (``-1`` for ``2**64 - 1``) names the same key. Anything else raises
    ``KeyRangeError``. Integer-likes (``numpy.uint64`` ...) are accepted, ``bool`` is not.
    """
    if isinstance(key, bool):
        raise KeyRangeError("a key must be an int in [-2**63, 2**64), got bool")
    try:
        value = operator.index(key)  # type: ignore[arg-type]
    except TypeError:
        raise KeyRangeError(
            f"a key must be an int in [-2**63, 2**64), got {type(key).__name__}"
        ) from None
    if not INT64_MIN <= value <= MASK64:
        raise KeyRangeError(f"a key must lie in [-2**63, 2**64), got {value}")
    return value % _TWO64


def lightzero_key(key: object) -> int:
    """A LightZero key (unsigned or signed 64-bit int) as zerokv's signed 64-bit key."""
    return to_signed(unsigned_key(key))


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class Format:
    """Layers, heads, context length, head size, device and dtype of the stored objects."""

    num_layers: int
    num_heads: int
    context_length: int
    head_dim: int
    device: torch.device
    dtype: torch.dtype


@dataclass(frozen=True)
class Checked:
    """A validated object: its 2L cache tensors (K, V per layer), size and format."""

    tensors: list[torch.Tensor]
    size: int
    format: Format


def check_object(
    kv: object,
    num_layers: int | None = None,
    num_heads: int | None = None,
    context_length: int | None = None,
    head_dim: int | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Checked:
    """Validate the ``KeysValues`` layout against what is known (None: taken from ``kv``).

    Raises ``EntryError`` (layout, layer count, sizes), ``ShapeError``, ``DTypeError`` or
    ``DeviceError``, naming what was expected and what was given; changes nothing.
    """
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
    if num_layers is not None and count != num_layers:
        raise EntryError(f"expected {num_layers} layers, got {count}")
    tensors: list[torch.Tensor] = []
    sizes: list[int] = []
    for index, layer in enumerate(layer_list):
        for side in SIDES:
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
    heads = num_heads if num_heads is not None else int(first.shape[1])
    cl = context_length if context_length is not None else int(first.shape[2])
    dim = head_dim if head_dim is not None else int(first.shape[3])
    dev = device if device is not None else first.device
    typ = dtype if dtype is not None else first.dtype
    if cl < MIN_CONTEXT_LENGTH:
        raise ShapeError(
            f"the cache capacity (context length) must be >= {MIN_CONTEXT_LENGTH}, got {cl}"
        )
    if not typ.is_floating_point:
        raise DTypeError(f"the caches must have a floating dtype, got {typ}")
    want = (1, heads, cl, dim)
    for i, tensor in enumerate(tensors):
        name = f"kv._keys_values[{i // 2}].{SIDES[i % 2]}._cache"
        if tuple(tensor.shape) != want:
            raise ShapeError(f"{name} must have shape {want}, got {tuple(tensor.shape)}")
        if tensor.dtype != typ:
            raise DTypeError(f"{name} must have dtype {typ}, got {tensor.dtype}")
        if tensor.device != dev:
            raise DeviceError(f"{name} must be on {dev}, got {tensor.device}")
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
    return Checked(tensors, size, Format(count, heads, cl, dim, dev, typ))


# --------------------------------------------------------------------------- object plan

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


def _plain(node: object, structural: tuple[str, ...]) -> bool:
    """Whether ``node`` can be rebuilt as ``object.__new__`` + its ``__dict__``."""
    cls = type(node)
    if cls.__new__ is not object.__new__ or not hasattr(node, "__dict__"):
        return False
    if any("__slots__" in vars(k) for k in cls.__mro__[:-1]):
        return False
    instance = vars(node)
    # The structural attributes must live in the instance dict, not behind a descriptor.
    return all(name in instance and not hasattr(cls, name) for name in structural)


@dataclass(frozen=True)
class _Node:
    """How to rebuild one object: its class, shared attributes and ones to deep-copy."""

    cls: type
    shared: dict[str, object]
    mutable: dict[str, object]

    @staticmethod
    def of(node: object, structural: tuple[str, ...]) -> _Node:
        shared: dict[str, object] = {}
        mutable: dict[str, object] = {}
        for name, value in vars(node).items():
            if name in structural:
                continue
            if _atomic(value):
                shared[name] = value
            else:
                mutable[name] = copy.deepcopy(value)  # the caller may change its own later
        return _Node(type(node), shared, mutable)

    def new(self) -> Any:
        obj: Any = object.__new__(self.cls)
        attrs = obj.__dict__
        attrs.update(self.shared)
        for name, value in self.mutable.items():
            attrs[name] = copy.deepcopy(value)
        return obj


class ObjectPlan:
    """What the first stored object teaches: validate like it, build objects like it.

    ``tensors(kv)`` is the per-call check of an object of the same classes: it reads only
    what can change between calls (each cache's tensor and size) and returns the 2L tensors
    and the size, or ``None`` when anything is unusual (then ``check_object`` decides, with
    a precise error). ``build(rows, size)`` makes a new object of the caller's classes
    whose caches are views of ``rows`` ``[2L, H, cl, d]`` (which the caller hands over).
    Objects that cannot be rebuilt attribute by attribute (``__slots__``, a custom
    ``__new__``, attributes behind descriptors) are deep-copied from a template instead.
    """

    def __init__(self, kv: KeysValuesLike, checked: Checked) -> None:
        fmt = checked.format
        self.format = fmt
        self.num_layers = fmt.num_layers
        self.context_length = fmt.context_length
        self.shape = torch.Size((1, fmt.num_heads, fmt.context_length, fmt.head_dim))
        self.device = fmt.device
        self.dtype = fmt.dtype
        layers = kv._keys_values
        self.kv_type = type(kv)
        self.layers_type = type(layers)
        caches = [getattr(layer, side) for layer in layers for side in SIDES]
        self.cache_types = tuple(type(c) for c in caches)
        self.layer_types = tuple(type(layer) for layer in layers)
        plain = (
            self.layers_type in (tuple, list)
            and _plain(kv, ("_keys_values",))
            and all(_plain(layer, SIDES) for layer in layers)
            and all(_plain(c, ("_cache", "_size")) for c in caches)
            and len({id(c) for c in caches}) == len(caches)
        )
        self.plain = plain
        if plain:
            self._kv_node = _Node.of(kv, ("_keys_values",))
            self._layer_nodes = [_Node.of(layer, SIDES) for layer in layers]
            self._cache_nodes = [_Node.of(c, ("_cache", "_size")) for c in caches]
            self._template: KeysValuesLike | None = None
        else:
            self._template = self._deep_template(kv, checked)

    @staticmethod
    def _deep_template(kv: KeysValuesLike, checked: Checked) -> KeysValuesLike:
        """A deep copy of ``kv`` without its tensors (or a ``LayoutKeysValues``)."""
        placeholder = torch.empty(0)
        memo: dict[int, Any] = {id(t): placeholder for t in checked.tensors}
        try:
            template = copy.deepcopy(kv, memo)
            sides = [getattr(layer, side) for layer in template._keys_values for side in SIDES]
            if len({id(s) for s in sides}) != len(sides):
                template = None
        except Exception:  # an object deepcopy cannot handle: use the plain layout
            template = None
        if template is None:
            fmt = checked.format
            return LayoutKeysValues.empty(fmt.num_layers, fmt.num_heads, 0, fmt.head_dim)
        return template

    def tensors(self, kv: KeysValuesLike) -> tuple[list[torch.Tensor], int] | None:
        """The 2L tensors and the size of a well-formed ``kv`` like the first one, or None."""
        if type(kv) is not self.kv_type:
            return None
        try:
            layers = kv._keys_values
            if type(layers) is not self.layers_type or len(layers) != self.num_layers:
                return None
            shape, dtype, device = self.shape, self.dtype, self.device
            size = layers[0]._k_cache._size
            if type(size) is not int or not 0 <= size <= self.context_length:
                return None
            out = []
            tensor = torch.Tensor
            for layer in layers:
                for cache in (layer._k_cache, layer._v_cache):
                    t = cache._cache
                    if (
                        type(t) is not tensor
                        or cache._size != size  # (an equal float passes: same count)
                        or t.shape != shape
                        or t.dtype != dtype
                        or t.device != device
                        or t.requires_grad
                    ):
                        return None
                    out.append(t)
        except AttributeError:
            return None
        return out, size

    def build(self, rows: torch.Tensor, size: int) -> KeysValuesLike:
        """A new object of the first object's classes over ``rows`` ``[2L, H, cl, d]``."""
        views = rows.unsqueeze(1).unbind(0)  # 2L views (1, H, cl, d)
        if not self.plain:
            assert self._template is not None
            obj: Any = copy.deepcopy(self._template)
            for i, layer in enumerate(obj._keys_values):
                for j, side in enumerate(SIDES):
                    cache = getattr(layer, side)
                    cache._cache = views[2 * i + j]
                    cache._size = size
            return obj
        cache_nodes = self._cache_nodes
        layers = []
        for i, layer_node in enumerate(self._layer_nodes):
            layer = layer_node.new()
            k = cache_nodes[2 * i].new()
            v = cache_nodes[2 * i + 1].new()
            k_attrs, v_attrs = k.__dict__, v.__dict__
            k_attrs["_cache"], k_attrs["_size"] = views[2 * i], size
            v_attrs["_cache"], v_attrs["_size"] = views[2 * i + 1], size
            attrs = layer.__dict__
            attrs["_k_cache"], attrs["_v_cache"] = k, v
            layers.append(layer)
        obj = self._kv_node.new()
        obj.__dict__["_keys_values"] = self.layers_type(layers)
        return obj
