"""The drop-in's storage: FIFO rings over one preallocated tensor, one entry per call.

This module owns the single-entry fast path of ``zerokv.lightzero.KVCacheManager``:

* ``Ring`` - one pool of the drop-in: a FIFO pool of the core's host index
  (``zerokv.index.host.HostFIFOIndex``: the spec's ring, dict, slot keys and counters, on
  the host) placed at rows ``base ..`` of the storage, with LightZero's names.
* ``RowStore`` - every slot of every ring as one row of one tensor
  ``[rows, 2L, H, cl, d]`` (K and V of each layer as LightZero keeps them: tokens
  left-aligned, whole caches), allocated and zeroed once, with each row's size on the
  host.
* ``KVSnapshot`` - what a lookup returns: a handle on a row, copy-on-write.

Why not ``zerokv.CacheManager``'s batched calls: LightZero calls its manager one key at a
time, and a one-row ``lookup_many`` / ``store_*_many`` pays the batch machinery (argument
tensors, outcome tensors) each time - 40 to 170 microseconds per call on a CPU, where
LightZero's dict costs one. Here a lookup is the host index's single-row ``get_one`` (one
dict probe) and a store its ``put_one`` plus one tensor copy (``cat`` into the row). The
pools are the core's (the same host index a CPU ``CacheManager`` runs); only the storage
is LightZero's layout. The semantics are checked against ``zerokv.CacheManager`` and the
spec (``shadow=True`` of the manager; the differential tests).

Isolation without a copy per lookup: a ``KVSnapshot`` holds no tensor of the store, only
the version of a row it shows. ``clone()`` - what LightZero's world model does with every
hit - copies the row into a new object; any other attribute access first gives the handle
its own private copy (``materialize``). All snapshots of one version of a row share one
small version record; before the row is overwritten, a version that snapshots still
hold gets a private copy of the row (copy-on-write; "still hold" is its reference count,
so a store costs nothing extra when, as in LightZero, every hit was cloned and dropped).
A snapshot therefore always shows the entry as it was when it was looked up, and nothing
a caller holds aliases the store.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import torch

from zerokv.index import STATS_FIELDS, Region
from zerokv.index.host import HostFIFOIndex
from zerokv.lightzero.layout import Format, KeysValuesLike, ObjectPlan

__all__ = ["KVSnapshot", "Ring", "RowStore", "new_snapshot"]


class Ring:
    """One pool of the drop-in: a pool of a core host index (``zerokv.index.host``) and the
    rows ``base .. base + capacity - 1`` that hold its entries.

    The FIFO rule, the ``key -> slot`` dict, the slot keys and the counters are the host
    index's (one implementation of a pool, checked against the spec by the differential
    tests); this class only names the pool for LightZero (``name``, ``label``) and places
    its slots among the rows. Keys are LightZero's unsigned 64-bit ints: the index keeps
    them as given (its dict does not interpret them).
    """

    __slots__ = (
        "_stats",
        "base",
        "capacity",
        "get",
        "index",
        "keys",
        "label",
        "name",
        "pools",
    )

    def __init__(self, name: str, capacity: int, base: int, label: str = "") -> None:
        self.name = name
        #: How log records name the pool ("root pool of env 3").
        self.label = label or name
        self.capacity = capacity
        self.base = base
        self.pools = HostFIFOIndex(Region(1, capacity))
        #: ``get(key) -> slot or None``: the host index's counted single-key lookup of this
        #: pool (built once: the drop-in's lookups call it directly).
        self.get = self.pools.counted_get(0)
        #: key -> slot (the index keeps this dict's identity across clears: callers may
        #: hold it or its ``get``).
        self.index: dict[int, int] = self.pools.index[0]
        #: The key in every slot (None: empty); also kept in place.
        self.keys: list[int | None] = self.pools.slot_keys_[0]
        self._stats = self.pools.stats[0]

    def place(self, key: int) -> tuple[int, bool, int | None]:
        """The slot for storing ``key``, whether it is new, the key it evicts (FIFO rule)."""
        return self.pools.put_one(0, key)

    @property
    def next(self) -> int:
        """The FIFO ring pointer (the host index's ``next`` of this pool)."""
        return self.pools.next[0]

    @next.setter
    def next(self, slot: int) -> None:
        self.pools.next[0] = slot

    @property
    def queries(self) -> int:
        return self._stats[_QUERIES]

    @property
    def hits(self) -> int:
        return self._stats[_HITS]

    @property
    def inserts(self) -> int:
        return self._stats[_INSERTS]

    @property
    def updates(self) -> int:
        return self._stats[_UPDATES]

    @property
    def evictions(self) -> int:
        return self._stats[_EVICTIONS]

    def clear(self) -> None:
        """Forget every key and reset the pointer (counters are kept)."""
        self.pools.clear(0)

    def reset_stats(self) -> None:
        self.pools.reset_stats(0)

    def __len__(self) -> int:
        return len(self.index)


_QUERIES, _HITS, _INSERTS, _UPDATES, _EVICTIONS = (
    STATS_FIELDS.index(name) for name in ("queries", "hits", "inserts", "updates", "evictions")
)


#: A version of a row's content, shared by the snapshots taken of it: a list
#: ``[row, size, frozen]`` (a list costs a fraction of an object with ``__init__``).
#: ``frozen`` is ``None`` while the row still holds this version; before the row is
#: overwritten, a version that snapshots still hold gets a private copy of the row there.
_ROW, _SIZE, _FROZEN = 0, 1, 2


#: How many references a version has when nothing but the store's write path holds it
#: (its local variable and ``getrefcount``'s argument). Without ``sys.getrefcount``
#: (not CPython) every read version is copied before its row is overwritten.
_UNHELD = 2
_getrefcount = getattr(sys, "getrefcount", None)


class RowStore:
    """``rows`` entries ``[2L, H, cl, d]`` in one tensor, sizes on the host, snapshots.

    ``plan`` (how to build the caller's objects) is set by the first store.
    """

    def __init__(self, fmt: Format, rows: int) -> None:
        self.format = fmt
        self.plan: ObjectPlan | None = None
        self.num_layers = fmt.num_layers
        shape = (rows, 2 * fmt.num_layers, fmt.num_heads, fmt.context_length, fmt.head_dim)
        # Normal tensors even when the first store runs under torch.inference_mode(). Zeros,
        # not empty: the memory is touched once here, not page by page in the hot path.
        with torch.inference_mode(False):
            self.data = torch.zeros(shape, device=fmt.device, dtype=fmt.dtype)
            #: One view per row (indexing the tensor costs as much as a small copy).
            self.rows = list(self.data.unbind(0))
        self.sizes = [0] * rows
        #: The version of each row that snapshots share (None: not read since written).
        self.versions: list[list[Any] | None] = [None] * rows

    @property
    def storage_bytes(self) -> int:
        return self.data.numel() * self.data.element_size()

    def write(self, row: int, tensors: list[torch.Tensor], size: int) -> None:
        """Store the 2L caches ``(1, H, cl, d)`` (``size`` valid tokens) in ``row``.

        The whole caches are copied, as LightZero's manager copies them: the columns after
        ``size`` hold what the given object held there (never another entry's data).
        """
        version = self.versions[row]
        if version is not None:
            self.versions[row] = None
            if _getrefcount is None or _getrefcount(version) > _UNHELD:
                version[_FROZEN] = self.rows[row].clone()  # snapshots keep the old entry
        torch.cat(tensors, 0, out=self.rows[row])
        self.sizes[row] = size

    def build(self, data: torch.Tensor, size: int) -> KeysValuesLike:
        """A new object (the caller's classes) holding a copy of ``data`` ``[2L, H, cl, d]``."""
        plan = self.plan
        assert plan is not None  # rows are only read after a store
        return plan.build(data.clone(), size)

    def snapshot(self, row: int) -> KVSnapshot:
        """A copy-on-write handle on ``row`` (module docstring).

        ``KVCacheManager``'s lookups repeat these lines inline (their hot path).
        """
        version = self.versions[row]
        if version is None:
            version = self.versions[row] = [row, self.sizes[row], None]
        snap = new_snapshot(KVSnapshot)  # cheaper than a call of __init__
        snap._store = self
        snap._version = version
        snap._obj = None
        return snap


class KVSnapshot:
    """A stored entry as LightZero's code uses it: ``size``, ``clone()``, ``len``, ``[l]``.

    ``clone()`` returns a new object of the caller's own ``KeysValues`` class with private
    tensors. Any other attribute (``_keys_values``, ``get``, ...) is read from the handle's
    own private object, made on first use (``materialize()``); mutating it never changes
    the cache or another handle. The handle keeps showing the entry as it was when it was
    looked up (see ``zerokv.lightzero.store``).
    """

    __slots__ = ("_obj", "_store", "_version")

    _store: RowStore
    _version: list[Any]
    _obj: KeysValuesLike | None

    def __init__(self, store: RowStore, row: int) -> None:
        other = store.snapshot(row)
        self._store, self._version, self._obj = store, other._version, None

    def _data(self) -> torch.Tensor:
        version = self._version
        frozen: torch.Tensor | None = version[_FROZEN]
        return self._store.rows[version[_ROW]] if frozen is None else frozen

    @property
    def size(self) -> int:
        """Tokens held (LightZero's ``KeysValues.size``)."""
        obj = self._obj
        return int(self._version[_SIZE]) if obj is None else int(obj.size)

    def clone(self) -> KeysValuesLike:
        """A new object with private tensors (what LightZero's ``KeysValues.clone`` gives)."""
        obj = self._obj
        if obj is None:
            return self._store.build(self._data(), self._version[_SIZE])
        clone = getattr(obj, "clone", None)
        return clone() if callable(clone) else copy.deepcopy(obj)

    def materialize(self) -> KeysValuesLike:
        """The handle's own private object (made on first use, then always the same)."""
        obj = self._obj
        if obj is None:
            obj = self._obj = self._store.build(self._data(), self._version[_SIZE])
        return obj

    def __len__(self) -> int:
        obj = self._obj
        return self._store.num_layers if obj is None else len(obj)

    def __getitem__(self, index: int) -> Any:
        return self.materialize()[index]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return getattr(self.materialize(), name)

    def __copy__(self) -> KeysValuesLike:
        return self.clone()

    def __deepcopy__(self, memo: dict[int, Any]) -> KeysValuesLike:
        return self.clone()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_identity, (self.clone(),))

    def __repr__(self) -> str:
        state = "materialized" if self._obj is not None else "copy-on-write"
        return f"KVSnapshot(size={self.size}, layers={len(self)}, {state})"


#: ``new_snapshot(KVSnapshot)``: a snapshot whose slots the caller fills (the hot path).
new_snapshot = object.__new__


def _identity(obj: object) -> object:
    return obj
