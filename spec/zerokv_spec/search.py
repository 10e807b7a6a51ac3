"""The node-addressed tier: a search's contexts stored at the addresses the search hands out.

A content-keyed cache (``zerokv_spec.manager``) finds a node's context by hashing its
latent. An MCTS already knows which node it expands: LightZero's tree returns, for every
leaf, its parent's address, and mctx keeps per-node state in ``[batch, num_simulations +
1]`` arrays indexed by node id. This module owns that second design, ``SearchCache``:

* **Addresses.** ``NodeAddress(index, row)``: ``index`` 0 is row ``row``'s root;
  ``index`` ``k >= 1`` is the node the search expanded in simulation ``k - 1`` under row
  ``row`` (LightZero's ``latent_state_index_in_search_path``, ``latent_state_index_in_batch``;
  a child of simulation ``s`` is written at ``(s + 1, row)``).
* **Roots.** Each environment has at most one root entry: the newest stored for it
  (``store_roots``; a root step reads its environment's entry with ``gather_roots`` and
  stores the next one). Nothing older is ever read again, so nothing older is kept. An
  environment's root entry is its own, whatever its latent's bits: no key is involved.
* **A node's context** is its parent's context, then the two tokens of its own expansion
  (the action, then the latent), under the window rule (``entry.store_rows``). So a context
  is a function of the node's path from its root, never of its latent: two nodes with
  bitwise-equal latents and different paths have their own contexts. Its length is the
  root's length plus 2 per level, until the window rule caps it.
* **A search** (``begin_search(env_ids)``) covers ``len(env_ids)`` rows, row ``b`` rooted
  at environment ``env_ids[b]``'s root entry, which must exist. It empties every node
  address and returns the search's number. Up to ``num_simulations`` expansions of every
  row fit: the node addresses are preallocated, so nothing is ever evicted during a search
  (LightZero's "evicted mid-search" failure cannot happen). Each node's depth (its root is
  depth 0) is kept, so a search that reports another depth for a leaf than its path gives
  is refused.
* **Staleness.** A search ends at ``end_search``, at the next ``begin_search``, and at any
  change of the root tier (``store_roots``, ``clear_env``, ``clear_roots``): its roots are
  no longer what it was started on. Any later use of its number is ``StaleSearchError``.

Bad input gets a typed error and changes nothing:

* an address outside ``[0, num_simulations] x [0, rows)``, a child at index 0, a row count
  above ``max_rows`` or an unknown environment: ``NodeRangeError`` / ``EnvIdError``;
* a parent address not written in this search (or a row without a root entry when the
  search starts): ``NodeMissingError``;
* a child address already written in this search, or written twice by one batch:
  ``NodeOccupiedError``;
* a leaf depth that is not its parent's depth plus one: ``NodeDepthError``;
* a search number that is not the current search: ``StaleSearchError``;
* a batch whose rows do not match the addresses, or is not the cache's shape: ``BatchError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from zerokv_spec.entry import (
    Batch,
    Correction,
    Entry,
    append,
    assemble,
    check_context_length,
    store_rows,
)
from zerokv_spec.errors import (
    BatchError,
    EnvIdError,
    NodeDepthError,
    NodeMissingError,
    NodeOccupiedError,
    NodeRangeError,
    StaleSearchError,
)
from zerokv_spec.validate import positive_int

__all__ = [
    "NodeAddress",
    "SearchCache",
    "SearchConfig",
    "check_address",
    "check_current",
    "check_env_ids",
    "check_search_rows",
    "child_length",
]


@dataclass(frozen=True)
class NodeAddress:
    """``(index, row)``: index 0 is the row's root, ``k >= 1`` the node of simulation ``k-1``."""

    index: int
    row: int


def child_length(parent_length: int, context_length: int) -> int:
    """The stored length of a node whose parent's context holds ``parent_length`` tokens:
    two tokens more, under the window rule (``entry.window``: ``cl - 1`` or more become
    ``cl - 3``). A host integer: a search knows every context's length without reading it."""
    n = parent_length + 2
    return context_length - 3 if n >= context_length - 1 else n


@dataclass(frozen=True)
class SearchConfig:
    """``env_num`` root entries; searches of up to ``max_rows`` rows and ``num_simulations``
    expansions per row; entries of ``num_layers`` layers and ``context_length`` columns."""

    env_num: int
    max_rows: int
    num_simulations: int
    num_layers: int
    context_length: int

    def __post_init__(self) -> None:
        for name in ("env_num", "max_rows", "num_simulations", "num_layers"):
            positive_int(getattr(self, name), name)
        check_context_length(self.context_length)

    @property
    def node_slots(self) -> int:
        """Preallocated node addresses: ``num_simulations * max_rows``."""
        return self.num_simulations * self.max_rows


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise NodeRangeError(f"{what} must be an int, got {value!r}")
    return value


# The argument checks, shared with the implementation (``zerokv.search``): one rule each.


def check_env_ids(env_ids: Sequence[int], env_num: int) -> tuple[int, ...]:
    """``env_ids`` as a tuple of ints in ``[0, env_num)`` (``EnvIdError`` otherwise)."""
    ids = tuple(env_ids)
    for e in ids:
        if isinstance(e, bool) or not isinstance(e, int) or not 0 <= e < env_num:
            raise EnvIdError(f"env ids must be ints in [0, {env_num}), got {e!r}")
    return ids


def check_current(search: object, current: int, env_ids: tuple[int, ...] | None) -> tuple[int, ...]:
    """The rows of the running search numbered ``current`` if ``search`` names it
    (``StaleSearchError`` otherwise)."""
    if env_ids is None or isinstance(search, bool) or search != current:
        raise StaleSearchError(
            f"search {search!r} is not the current search "
            f"({current if env_ids is not None else 'none is running'})"
        )
    return env_ids


def check_address(address: object, rows: int, num_simulations: int, child: bool) -> NodeAddress:
    """``address`` if it lies in ``[0 or 1, num_simulations] x [0, rows)`` (children start
    at index 1; ``NodeRangeError`` otherwise)."""
    if not isinstance(address, NodeAddress):
        raise NodeRangeError(f"expected a NodeAddress, got {type(address).__name__}")
    index = _int(address.index, "a node index")
    row = _int(address.row, "a node row")
    low = 1 if child else 0
    if not low <= index <= num_simulations or not 0 <= row < rows:
        raise NodeRangeError(
            f"{'child' if child else 'parent'} address {(index, row)} outside "
            f"[{low}, {num_simulations}] x [0, {rows})"
        )
    return address


def check_search_rows(rows: int, max_rows: int) -> None:
    if not 1 <= rows <= max_rows:
        raise NodeRangeError(
            f"a search has 1 to {max_rows} rows (the preallocated num_simulations x rows), "
            f"got {rows}"
        )


class SearchCache:
    """Root entries per environment and one search's node entries (module docstring)."""

    def __init__(self, config: SearchConfig) -> None:
        self.config = config
        self.roots: list[Entry | None] = [None] * config.env_num
        #: The current search's rows (their environments), or None between searches.
        self.env_ids: tuple[int, ...] | None = None
        self.nodes: dict[NodeAddress, Entry] = {}
        self.depths: dict[NodeAddress, int] = {}
        #: The number of the current (or last) search; bumped by every search start and
        #: every change of the root tier, so an older number is stale.
        self.search = 0

    # ------------------------------------------------------------------ checks
    def _env_ids(self, env_ids: Sequence[int]) -> tuple[int, ...]:
        return check_env_ids(env_ids, self.config.env_num)

    def _current(self, search: object) -> tuple[int, ...]:
        return check_current(search, self.search, self.env_ids)

    def _address(self, address: object, rows: int, child: bool) -> NodeAddress:
        return check_address(address, rows, self.config.num_simulations, child)

    def _parent(self, address: NodeAddress, env_ids: tuple[int, ...]) -> Entry:
        if address.index == 0:
            root = self.roots[env_ids[address.row]]
            assert root is not None  # begin_search checked every row's root
            return root
        entry = self.nodes.get(address)
        if entry is None:
            raise NodeMissingError(
                f"parent address {(address.index, address.row)} was not written in this search"
            )
        return entry

    def _depth(self, address: NodeAddress) -> int:
        return 0 if address.index == 0 else self.depths[address]

    def _check_batch(self, batch: Batch, correction: Correction, rows: int) -> tuple[Entry, ...]:
        if not isinstance(batch, Batch):
            raise BatchError(f"expected a Batch, got {type(batch).__name__}")
        if batch.rows != rows:
            raise BatchError(f"the batch has {batch.rows} rows for {rows} addresses")
        if batch.num_layers != self.config.num_layers:
            raise BatchError(
                f"the batch has {batch.num_layers} layers, the cache {self.config.num_layers}"
            )
        if batch.width > self.config.context_length:
            raise BatchError(f"a batch of width {batch.width} exceeds the context length")
        return store_rows(batch, self.config.context_length, correction)

    # ------------------------------------------------------------------ roots
    def _reserve(self, entries: list[Entry], t: int) -> Batch:
        if (
            isinstance(t, bool)
            or not isinstance(t, int)
            or not 1 <= t <= self.config.context_length
        ):
            raise BatchError(f"the number of new tokens must be an int in [1, cl], got {t!r}")
        cl, layers = self.config.context_length, self.config.num_layers
        zeros = tuple(tuple((0.0,) * t for _ in entries) for _ in range(layers))
        return append(assemble(entries, cl), zeros, zeros, cl)

    def fresh_roots(self, rows: int, t: int) -> Batch:
        """A batch of ``rows`` empty rows with ``t`` zero columns: a first root step's (an
        episode's first observation), which ``store_roots`` then stores."""
        if (
            isinstance(rows, bool)
            or not isinstance(rows, int)
            or not 1 <= rows <= self.config.env_num
        ):
            raise BatchError(f"rows must be an int in [1, {self.config.env_num}], got {rows!r}")
        return self._reserve([Entry.empty(self.config.num_layers)] * rows, t)

    def gather_roots(self, env_ids: Sequence[int], t: int) -> Batch:
        """A root step's batch: each environment's root entry (an empty row where it has
        none) followed by ``t`` zero columns the model writes into."""
        ids = self._env_ids(env_ids)
        if not ids:
            raise BatchError("cannot gather an empty batch")
        empty = Entry.empty(self.config.num_layers)
        entries = [self.roots[e] or empty for e in ids]
        return self._reserve(entries, t)

    def store_roots(self, env_ids: Sequence[int], batch: Batch, correction: Correction) -> None:
        """Row ``b`` of ``batch`` (split, window rule) becomes environment ``env_ids[b]``'s
        root entry, replacing the one it had. Ends the current search."""
        ids = self._env_ids(env_ids)
        if len(set(ids)) != len(ids):
            raise EnvIdError(f"a root store names each environment once, got {list(ids)}")
        entries = self._check_batch(batch, correction, len(ids))
        for e, entry in zip(ids, entries):
            self.roots[e] = entry
        if ids:
            self._root_tier_changed()

    def clear_env(self, env_id: int) -> None:
        """Forget environment ``env_id``'s root entry (its episode ended). Ends the search."""
        (e,) = self._env_ids([env_id])
        self.roots[e] = None
        self._root_tier_changed()

    def clear_roots(self) -> None:
        """Forget every root entry. Ends the search."""
        self.roots = [None] * self.config.env_num
        self._root_tier_changed()

    def _root_tier_changed(self) -> None:
        self.search += 1
        self.env_ids = None
        self.nodes.clear()
        self.depths.clear()

    # ------------------------------------------------------------------ searches
    def begin_search(self, env_ids: Sequence[int]) -> int:
        """Start a search whose row ``b`` is rooted at ``env_ids[b]``'s root entry: every
        node address is emptied; returns the search's number."""
        ids = self._env_ids(env_ids)
        check_search_rows(len(ids), self.config.max_rows)
        missing = [e for e in ids if self.roots[e] is None]
        if missing:
            raise NodeMissingError(
                f"no root entry for environments {missing}: store their roots first"
            )
        self.search += 1
        self.env_ids = ids
        self.nodes.clear()
        self.depths.clear()
        return self.search

    def end_search(self) -> None:
        """End the current search (its number becomes stale); a no-op between searches."""
        if self.env_ids is not None:
            self.search += 1
            self.env_ids = None
            self.nodes.clear()
            self.depths.clear()

    def gather_reserve(self, search: int, parents: Sequence[NodeAddress], t: int) -> Batch:
        """The batch of one expansion: row ``b`` holds the context of ``parents[b]``,
        followed by ``t`` zero columns the model writes its new tokens into."""
        env_ids = self._current(search)
        rows = len(env_ids)
        addresses = [self._address(p, rows, child=False) for p in parents]
        if not addresses:
            raise BatchError("cannot gather an empty batch")
        entries = [self._parent(a, env_ids) for a in addresses]
        return self._reserve(entries, t)

    def store_nodes(
        self,
        search: int,
        parents: Sequence[NodeAddress],
        children: Sequence[NodeAddress],
        depths: Sequence[int],
        batch: Batch,
        correction: Correction,
    ) -> None:
        """Row ``b`` of ``batch`` (split, window rule) is the context of ``children[b]``,
        expanded from ``parents[b]`` at depth ``depths[b]`` (its parent's depth plus one)."""
        env_ids = self._current(search)
        rows = len(env_ids)
        if not len(parents) == len(children) == len(depths):
            raise BatchError(
                f"{len(parents)} parents, {len(children)} children and {len(depths)} depths"
            )
        ups = [self._address(p, rows, child=False) for p in parents]
        downs = [self._address(c, rows, child=True) for c in children]
        for p in ups:
            self._parent(p, env_ids)
        if len(set(downs)) != len(downs):
            raise NodeOccupiedError(f"one batch writes a child address twice: {downs}")
        taken = [c for c in downs if c in self.nodes]
        if taken:
            raise NodeOccupiedError(f"child addresses already written in this search: {taken}")
        for p, depth in zip(ups, depths):
            d = _int(depth, "a depth")
            if d != self._depth(p) + 1:
                raise NodeDepthError(
                    f"a leaf under {(p.index, p.row)} (depth {self._depth(p)}) reported "
                    f"depth {d}, expected {self._depth(p) + 1}"
                )
        entries = self._check_batch(batch, correction, len(downs))
        for child, parent, entry in zip(downs, ups, entries):
            self.nodes[child] = entry
            self.depths[child] = self._depth(parent) + 1

    # ------------------------------------------------------------------ reads
    def root_length(self, env_id: int) -> int:
        """Tokens in ``env_id``'s root entry (0 without one)."""
        (e,) = self._env_ids([env_id])
        root = self.roots[e]
        return 0 if root is None else root.size

    def root_entry(self, env_id: int) -> Entry:
        """``env_id``'s root entry (an empty one without one)."""
        (e,) = self._env_ids([env_id])
        root = self.roots[e]
        return Entry.empty(self.config.num_layers) if root is None else root

    def node_length(self, search: int, address: NodeAddress) -> int:
        """Tokens in the context at ``address`` of the current search."""
        env_ids = self._current(search)
        return self._parent(self._address(address, len(env_ids), child=False), env_ids).size

    def node_entry(self, search: int, address: NodeAddress) -> Entry:
        """The context at ``address`` of the current search (index 0: the row's root)."""
        env_ids = self._current(search)
        return self._parent(self._address(address, len(env_ids), child=False), env_ids)
