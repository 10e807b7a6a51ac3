"""``SearchCache``: ``zerokv_spec.search.SearchCache`` (the node-addressed tier) on one slab.

The spec's module docstring defines the semantics: one root entry per environment (the
newest), one search's node entries at the addresses the search hands out, no keys, no
lookups, no evictions. This module owns how that lies in memory and what a call costs.

**Layout.** One ``Slab`` of ``env_num + num_simulations * max_rows`` slots, allocated once:
slot ``e`` is environment ``e``'s root entry, and node ``(k, r)`` (``k >= 1``) is slot
``env_num + (k - 1) * max_rows + r``, mctx's ``[batch, num_simulations + 1]`` node arrays
flattened with the root column moved to the environments. A search's children of one
simulation are ``max_rows`` consecutive slots, so a store writes them as one slice.

**Lengths on the host.** Every stored length is known on the host without reading the
device: a root step's entry is its parent's length plus its new tokens under the window
rule, and a node's is its parent's plus 2 (``zerokv_spec.search.child_length``). The cache
keeps them in host lists beside the slab's device copy, so neither a gather nor a store
reads anything from the device (CUDA sees no synchronisation), and the lengths a caller
needs for its forward (window width, positions, padding masks) are ``host_lengths``.

**What a call costs.** A gather is one ``index_select`` into the batch plus the zeroed
reserve columns; a store is one masked copy into the simulation's slot slice plus the
window rule's correction on the windowed rows. Index tensors go host -> device (never the
other way).

**Threads.** As ``CacheManager`` (``zerokv.guard``): a second thread inside a call gets
``ConcurrentUseError``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from zerokv.entry import (
    _INT_OF_SIZE,
    Batch,
    Correction,
    Entries,
    RowPlan,
    row_tables,
    store_rows,
    write_rows,
)
from zerokv.errors import (
    BatchError,
    EnvIdError,
    NodeDepthError,
    NodeMissingError,
    NodeOccupiedError,
    NodeRangeError,
)
from zerokv.guard import exclusive
from zerokv.slab import Slab, storage_device, storage_dtype, store_window
from zerokv_spec.entry import overflow_drop
from zerokv_spec.search import (
    NodeAddress,
    check_address,
    check_current,
    check_env_ids,
    check_search_rows,
    child_length,
)
from zerokv_spec.search import SearchConfig as SpecSearchConfig

__all__ = ["NodeAddress", "SearchBatch", "SearchCache", "SearchConfig", "child_length"]


@dataclass(frozen=True)
class SearchConfig:
    """The spec's ``SearchConfig`` plus the tensor shape, device and dtype."""

    env_num: int
    max_rows: int
    num_simulations: int
    num_layers: int
    num_heads: int
    head_dim: int
    context_length: int
    device: torch.device | str = "cpu"
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        self.spec_config()  # validates the shared fields with the spec's errors
        storage_dtype(self.dtype)
        storage_device(self.device)

    def spec_config(self) -> SpecSearchConfig:
        return SpecSearchConfig(
            self.env_num, self.max_rows, self.num_simulations, self.num_layers, self.context_length
        )

    @property
    def node_slots(self) -> int:
        return self.num_simulations * self.max_rows


@dataclass(frozen=True)
class SearchBatch(Batch):
    """A ``Batch`` this cache gathered: ``host_lengths`` are its lengths as host ints (the
    store that takes it back reads nothing)."""

    host_lengths: tuple[int, ...] = field(default=(), compare=False, repr=False)


def _plan(lengths: Sequence[int], cl: int) -> RowPlan:
    windowed = [n >= cl - 1 for n in lengths]
    out = [cl - 3 if w else n for n, w in zip(lengths, windowed)]
    return RowPlan(list(lengths), windowed, out)


class SearchCache:
    """Root entries per environment and one search's node entries (module docstring)."""

    def __init__(self, config: SearchConfig) -> None:
        self.config = config
        spec = config.spec_config()
        self.env_num, self.max_rows = spec.env_num, spec.max_rows
        self.num_simulations = spec.num_simulations
        self.context_length = cl = spec.context_length
        self.slab = Slab(
            spec.env_num + spec.node_slots,
            spec.num_layers,
            config.num_heads,
            config.head_dim,
            cl,
            config.device,
            config.dtype,
        )
        self.device = self.slab.device
        #: Host copies of the stored lengths: roots (0: none) and the current search's nodes
        #: (-1: not written in this search), with each node's depth.
        self.root_lengths = [0] * spec.env_num
        self._has_root = [False] * spec.env_num
        self.node_lengths = [-1] * spec.node_slots
        self.node_depths = [0] * spec.node_slots
        self.env_ids: tuple[int, ...] | None = None
        self.search = 0
        self._busy = threading.RLock()
        #: Views of the slab made once: the gather's source per column offset, and each
        #: simulation's slot slice (values, their bits, lengths).
        self._sources: dict[int, torch.Tensor] = {}
        self._slices: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        for k in range(spec.num_simulations):  # a full search's slices, made now
            self._slice_views(spec.env_num + k * spec.max_rows, spec.max_rows)
        #: Host reads of a store of a batch this cache did not gather (its lengths).
        self.host_reads = 0

    # ------------------------------------------------------------------ copies
    def __getstate__(self) -> dict[str, object]:
        """A copy (``copy.deepcopy``, ``pickle``, ``torch.save``) is an independent cache
        with the same entries and search; its lock and its views of the slab are its own."""
        state = dict(self.__dict__)
        for name in ("_busy", "_sources", "_slices"):
            del state[name]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._busy = threading.RLock()
        self._sources, self._slices = {}, {}

    # ------------------------------------------------------------------ addressing
    def _slot(self, address: NodeAddress, env_ids: tuple[int, ...]) -> int:
        if address.index == 0:
            return env_ids[address.row]
        return self.env_num + (address.index - 1) * self.max_rows + address.row

    def _env_ids(self, env_ids: Sequence[int] | torch.Tensor) -> tuple[int, ...]:
        if isinstance(env_ids, torch.Tensor):
            if env_ids.device.type != "cpu" or env_ids.dim() != 1:
                raise EnvIdError("env ids must be a list of ints or a 1-d CPU tensor")
            env_ids = env_ids.tolist()
        return check_env_ids(env_ids, self.env_num)

    def _current(self, search: object) -> tuple[int, ...]:
        return check_current(search, self.search, self.env_ids)

    def _address(self, address: object, rows: int, child: bool) -> NodeAddress:
        return check_address(address, rows, self.num_simulations, child)

    def _parent_length(self, address: NodeAddress, env_ids: tuple[int, ...]) -> int:
        if address.index == 0:
            return self.root_lengths[env_ids[address.row]]
        n = self.node_lengths[self._slot(address, env_ids) - self.env_num]
        if n < 0:
            raise NodeMissingError(
                f"parent address {(address.index, address.row)} was not written in this search"
            )
        return n

    def _depth(self, address: NodeAddress, env_ids: tuple[int, ...]) -> int:
        if address.index == 0:
            return 0
        return self.node_depths[self._slot(address, env_ids) - self.env_num]

    def _batch_lengths(self, batch: object, rows: int, correction: Correction) -> list[int]:
        """The host lengths of ``batch`` (its own for a ``SearchBatch``; else one read),
        after the checks a slab store makes."""
        checked = self.slab.check_batch(batch, rows)
        correction.check(checked.kv, self.context_length)
        if isinstance(batch, SearchBatch) and len(batch.host_lengths) == rows:
            return list(batch.host_lengths)
        self.host_reads += 1
        lengths: list[int] = checked.lengths.tolist()
        if any(not 0 <= n <= checked.width for n in lengths):
            raise BatchError(f"batch lengths must lie in [0, {checked.width}], got {lengths}")
        return lengths

    # ------------------------------------------------------------------ slab work
    def _gather(self, slots: list[int], lengths: list[int], t: int) -> SearchBatch:
        cl = self.context_length
        if isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= cl:
            raise BatchError(f"the number of new tokens must be an int in [1, cl], got {t!r}")
        drop = overflow_drop(cl, t, cl)
        kept = cl - drop
        host = tuple(min(n, kept) + t for n in lengths)
        store = self.slab.kv
        source = self._sources.get(drop)
        if source is None:  # a view of the slab, made once per column offset
            source = self._sources[drop] = store.narrow(4, drop, kept)
        index = torch.tensor(slots, dtype=torch.int64, device=self.device)
        shape = (store.shape[0], 2, len(slots), store.shape[3])
        out = store.new_empty((*shape, kept + t, store.shape[5]))
        torch.index_select(source, 2, index, out=out.narrow(4, 0, kept))
        out.narrow(4, kept, t).zero_()
        device_lengths = torch.tensor(host, dtype=torch.int64, device=self.device)
        return SearchBatch(out, device_lengths, True, host)

    def _write(
        self, slots: list[int], batch: Batch, lengths: list[int], correction: Correction
    ) -> list[int]:
        """Store row ``b`` of ``batch`` (split, window rule) in slot ``slots[b]``; the
        stored lengths (host)."""
        cl = self.context_length
        slab = self.slab
        plan = _plan(lengths, cl)
        if batch.width != cl or cl in lengths or slab._views_slab(batch.kv):
            # Not the static layout (a narrower batch, or a row of exactly cl tokens, which
            # moves by a column): the general kernel.
            call = slab.window_call(batch, correction)
            index = torch.tensor(slots, dtype=torch.int64, device=self.device)
            if call is None:
                slab.write(index, store_rows(batch, cl, correction))
            else:
                store_window(call, index)
            return plan.out_lengths
        out = torch.tensor(plan.out_lengths, dtype=torch.int64, device=self.device)
        first, rows = slots[0], len(slots)
        if slots == list(range(first, first + rows)):
            self._store_slice(first, rows, batch, plan, correction, out)
        else:
            index = torch.tensor(slots, dtype=torch.int64, device=self.device)
            slab.write(index, Entries(write_rows(batch, plan, correction, None, out), out, True))
        return plan.out_lengths

    def _slice_views(
        self, first: int, rows: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Slab slots ``[first, first + rows)`` as values, as their bits, and their lengths
        (views, made once per slice)."""
        views = self._slices.get((first, rows))
        if views is None:
            slab = self.slab
            ints = _INT_OF_SIZE[slab.kv.element_size()]
            views = self._slices[(first, rows)] = (
                slab.kv.narrow(2, first, rows),
                slab.kv.view(ints).narrow(2, first, rows),
                slab.lengths.narrow(0, first, rows),
            )
        return views

    def _store_slice(
        self,
        first: int,
        rows: int,
        batch: Batch,
        plan: RowPlan,
        correction: Correction,
        out: torch.Tensor,
    ) -> None:
        """``write_rows`` into slab slots ``[first, first + rows)`` (one simulation's
        children), in the fewest ops: the slot slice's views are made once, the kept-columns
        bits and the window weights come from the per-length tables in one lookup each."""
        values, bits_view, lengths = self._slice_views(first, rows)
        table = row_tables(self.context_length, values.dtype, values.device)
        kv = batch.kv
        # The kept columns, +0.0 elsewhere: a bit mask (exact for any value).
        torch.bitwise_and(kv.view(bits_view.dtype), table.bits.index_select(2, out), out=bits_view)
        if all(plan.windowed):
            values.add_(correction.padded)
        elif any(plan.windowed):
            values.addcmul_(correction.padded, table.weight.index_select(2, batch.lengths))
        lengths.copy_(out)

    # ------------------------------------------------------------------ roots
    @exclusive
    def fresh_roots(self, rows: int, t: int) -> SearchBatch:
        """A batch of ``rows`` empty rows with ``t`` zero columns: a first root step's
        (an episode's first observation), which ``store_roots`` then stores."""
        if isinstance(rows, bool) or not isinstance(rows, int) or not 1 <= rows <= self.env_num:
            raise BatchError(f"rows must be an int in [1, {self.env_num}], got {rows!r}")
        return self._gather([self.slab.zero] * rows, [0] * rows, t)

    @exclusive
    def gather_roots(self, env_ids: Sequence[int] | torch.Tensor, t: int) -> SearchBatch:
        """A root step's batch: each environment's root entry (an empty row where it has
        none) followed by ``t`` zero columns the model writes into."""
        ids = self._env_ids(env_ids)
        if not ids:
            raise BatchError("cannot gather an empty batch")
        slots = [e if self._has_root[e] else self.slab.zero for e in ids]
        return self._gather(slots, [self.root_lengths[e] for e in ids], t)

    @exclusive
    def store_roots(
        self, env_ids: Sequence[int] | torch.Tensor, batch: Batch, correction: Correction
    ) -> None:
        """Row ``b`` of ``batch`` becomes ``env_ids[b]``'s root entry. Ends the search."""
        ids = self._env_ids(env_ids)
        if len(set(ids)) != len(ids):
            raise EnvIdError(f"a root store names each environment once, got {list(ids)}")
        if not ids:
            self.slab.check_batch(batch, 0)
            return
        lengths = self._batch_lengths(batch, len(ids), correction)
        stored = self._write(list(ids), batch, lengths, correction)
        for e, n in zip(ids, stored):
            self.root_lengths[e] = n
            self._has_root[e] = True
        self._end()

    @exclusive
    def clear_env(self, env_id: int) -> None:
        """Forget environment ``env_id``'s root entry. Ends the search."""
        (e,) = self._env_ids([env_id])
        self.root_lengths[e] = 0
        self._has_root[e] = False
        self._end()

    @exclusive
    def clear_roots(self) -> None:
        """Forget every root entry. Ends the search."""
        self.root_lengths = [0] * self.env_num
        self._has_root = [False] * self.env_num
        self._end()

    def _end(self) -> None:
        self.search += 1
        self.env_ids = None

    # ------------------------------------------------------------------ searches
    @exclusive
    def begin_search(self, env_ids: Sequence[int] | torch.Tensor) -> int:
        """Start a search whose row ``b`` is rooted at ``env_ids[b]``'s root entry; every
        node address is emptied. Returns the search's number."""
        ids = self._env_ids(env_ids)
        check_search_rows(len(ids), self.max_rows)
        missing = [e for e in ids if not self._has_root[e]]
        if missing:
            raise NodeMissingError(
                f"no root entry for environments {missing}: store their roots first"
            )
        self.search += 1
        self.env_ids = ids
        self.node_lengths = [-1] * len(self.node_lengths)
        return self.search

    @exclusive
    def end_search(self) -> None:
        """End the current search (its number becomes stale); a no-op between searches."""
        if self.env_ids is not None:
            self._end()

    @exclusive
    def gather_reserve(self, search: int, parents: Sequence[NodeAddress], t: int) -> SearchBatch:
        """The batch of one expansion: row ``b`` holds ``parents[b]``'s context, then ``t``
        zero columns the model writes its new tokens into."""
        env_ids = self._current(search)
        rows = len(env_ids)
        addresses = [self._address(p, rows, child=False) for p in parents]
        if not addresses:
            raise BatchError("cannot gather an empty batch")
        lengths = [self._parent_length(a, env_ids) for a in addresses]
        return self._gather([self._slot(a, env_ids) for a in addresses], lengths, t)

    @exclusive
    def store_nodes(
        self,
        search: int,
        parents: Sequence[NodeAddress],
        children: Sequence[NodeAddress],
        depths: Sequence[int],
        batch: Batch,
        correction: Correction,
    ) -> list[int]:
        """Row ``b`` of ``batch`` is ``children[b]``'s context, expanded from ``parents[b]``
        at depth ``depths[b]``; returns the stored lengths (host ints)."""
        env_ids = self._current(search)
        rows = len(env_ids)
        if not len(parents) == len(children) == len(depths):
            raise BatchError(
                f"{len(parents)} parents, {len(children)} children and {len(depths)} depths"
            )
        ups = [self._address(p, rows, child=False) for p in parents]
        downs = [self._address(c, rows, child=True) for c in children]
        for p in ups:
            self._parent_length(p, env_ids)
        if len(set(downs)) != len(downs):
            raise NodeOccupiedError(f"one batch writes a child address twice: {downs}")
        slots = [self._slot(c, env_ids) for c in downs]
        taken = [c for c, s in zip(downs, slots) if self.node_lengths[s - self.env_num] >= 0]
        if taken:
            raise NodeOccupiedError(f"child addresses already written in this search: {taken}")
        for p, depth in zip(ups, depths):
            if isinstance(depth, bool) or not isinstance(depth, int):
                raise NodeRangeError(f"a depth must be an int, got {depth!r}")
            want = self._depth(p, env_ids) + 1
            if depth != want:
                raise NodeDepthError(
                    f"a leaf under {(p.index, p.row)} (depth {want - 1}) reported depth "
                    f"{depth}, expected {want}"
                )
        lengths = self._batch_lengths(batch, len(downs), correction)
        stored = self._write(slots, batch, lengths, correction)
        for s, p, n in zip(slots, ups, stored):
            self.node_lengths[s - self.env_num] = n
            self.node_depths[s - self.env_num] = self._depth(p, env_ids) + 1
        return stored

    # ------------------------------------------------------------------ reads
    @exclusive
    def root_length(self, env_id: int) -> int:
        """Tokens in ``env_id``'s root entry (0 without one)."""
        (e,) = self._env_ids([env_id])
        return self.root_lengths[e]

    @exclusive
    def node_length(self, search: int, address: NodeAddress) -> int:
        """Tokens in the context at ``address`` of the current search."""
        env_ids = self._current(search)
        return self._parent_length(self._address(address, len(env_ids), False), env_ids)

    @exclusive
    def node_entry(self, search: int, address: NodeAddress) -> Entries:
        """A copy of the context at ``address`` of the current search (slab layout)."""
        env_ids = self._current(search)
        a = self._address(address, len(env_ids), False)
        self._parent_length(a, env_ids)
        slot = torch.tensor([self._slot(a, env_ids)], device=self.device)
        return self.slab.read(slot)

    @exclusive
    def root_entry(self, env_id: int) -> Entries:
        """A copy of ``env_id``'s root entry (slab layout; empty without one)."""
        (e,) = self._env_ids([env_id])
        slot = e if self._has_root[e] else self.slab.zero
        return self.slab.read(torch.tensor([slot], device=self.device))

    @property
    def storage_bytes(self) -> int:
        """Bytes of the slab: every root and node slot, preallocated."""
        return self.slab.storage_bytes
