"""``attach_policy(policy)``: LightZero's UniZero policy, its searches on node-addressed caches.

``attach(world_model)`` sits below LightZero's search and has to rediscover, from each
leaf's latent, which node it expands: it hashes the latents, looks them up and verifies
fingerprints. The search above it already knows: LightZero's C++ tree
(``tree_muzero.batch_traverse``) returns, for every leaf, its parent's search-path index
and batch row, and ``results.get_search_len()`` its depth. ``attach_policy`` hands those to
the cache:

* **The search.** Each of the policy's MCTS objects (``_mcts_collect``, ``_mcts_eval``, both
  LightZero's ``UniZeroMCTSCtree``) gets, on the instance, a ``search`` that runs LightZero's
  own ``search`` code object unchanged - selection, expansion order, backup and the C++
  tree are LightZero's - with one difference: the name ``tree_muzero`` in its globals is a
  recorder that passes every call through to LightZero's module and notes what
  ``batch_traverse`` returned. The search starts a ``zerokv.search.SearchCache`` search on
  the rows of the root step before it and ends it after.
* **The world model** is attached as ``attach`` does (same replaced methods and proxies,
  same forwards, so the outputs are LightZero's), but its cache is a ``SearchCache``:
  each environment's newest root entry, and one search's nodes at
  ``(simulation index + 1, row)``. A recurrent call gathers its parents by address, the
  forwards write the two new tokens in place, and the children are stored at their
  addresses. No key is computed, nothing is looked up or compared, nothing is evicted, and
  every length is a host integer (``SearchCache.host_lengths``): no device read in cache
  code.

Supported: LightZero 0.2.0 and main (9f717c80 or later), the C++ tree (``mcts_ctree=True``),
the world-model modes ``attach`` supports. Refused with ``ConfigError`` at attach time,
with nothing changed: a policy without UniZero's collect / eval MCTS objects, a Python tree
(``mcts_ctree=False``) or another MCTS class, collect and eval models with different world
models, a world model already attached, bad options. A recurrent call outside an attached
search (a model driven without LightZero's MCTS) is refused with
``UnsupportedOperationError``: use ``attach(world_model)`` for that. Reanalysis runs on the
target model through MCTS objects the replay buffer makes itself, so it keeps LightZero's
caches (the target model is not attached).

Where the two differ on purpose (``docs/lightzero.md``): two nodes of one search with
bitwise-equal latents and different paths each get their own context (LightZero serves one
the other's), and an environment's root context is its own even when a re-encoded latent's
bits change (LightZero's root lookup then misses and drops the history).
"""

from __future__ import annotations

import threading
import time
import types
from collections.abc import Callable, Sequence
from typing import Any

import torch

from zerokv.entry import Batch
from zerokv.errors import (
    ConcurrentUseError,
    ConfigError,
    NodeRangeError,
    UnsupportedOperationError,
)
from zerokv.lightzero.attach import (
    Attachment,
    BatchView,
    LightZeroObject,
    _world_model,
    attached_call,
    attachment_of,
    positive_option,
    register_attachment,
)
from zerokv.lightzero.verify import Verifier
from zerokv.search import NodeAddress, SearchBatch, SearchCache, SearchConfig

__all__ = ["NodeAttachment", "PolicyAttachment", "attach_nodes", "attach_policy"]

#: The MCTS class whose search ``attach_policy`` wraps (LightZero's C++ tree search).
MCTS_CLASS = ("lzero.mcts.tree_search.mcts_ctree", "UniZeroMCTSCtree")
#: The policy attributes holding its MCTS objects, by mode.
MCTS_ATTRIBUTES = ("_mcts_collect", "_mcts_eval")
#: The policy attributes holding the model each mode uses.
MODEL_ATTRIBUTES = ("_collect_model", "_eval_model")


class NodeAttachment(Attachment):
    """A world model whose caches are a node-addressed ``SearchCache`` (module docstring)."""

    OPTIONS = frozenset({"device", "num_simulations"})

    def _build_cache(self, options: dict[str, Any]) -> None:
        wm, config = self.world_model, self.world_model.config
        sims = positive_option(options, "num_simulations")
        if sims is None:
            sims = int(getattr(config, "num_simulations", 50))
        env_num = int(wm.env_num)
        self.cache = SearchCache(
            SearchConfig(
                env_num,
                env_num,
                sims,
                self.num_layers,
                self.num_heads,
                self.head_dim,
                self.context_length,
                self.device,
                self.dtype,
            )
        )
        self.key = "node"
        self.verify = False
        self._memo = None
        #: The current search's number (None between searches), the leaves
        #: ``batch_traverse`` handed out for the next recurrent call, and the environments
        #: of the last root step's rows.
        self._search: int | None = None
        self._pending: tuple[list[int], list[int]] | None = None
        self._root_env_ids: list[int] = []

    # The operations LightZero's clears reach.
    @property
    def env_num(self) -> int:
        return self.cache.env_num

    @attached_call
    def clear_env_cache(self, env: int) -> None:
        self.cache.clear_env(env)
        self._search = None

    @attached_call
    def root_cache_size(self, env: int) -> int:
        return int(self.cache._has_root[env])

    @attached_call
    def clear_recurrent_cache(self) -> None:
        self.cache.end_search()
        self._search = None

    @attached_call
    def recurrent_cache_size(self) -> int:
        return 0 if self._search is None else sum(n >= 0 for n in self.cache.node_lengths)

    @attached_call
    def clear_root_caches(self) -> None:
        self.cache.clear_roots()
        self._search = None

    @attached_call
    def clear_all_caches(self) -> None:
        self.clear_root_caches()

    # ------------------------------------------------------------------ searches
    @attached_call
    def begin_search(self, rows: int) -> None:
        """A search of ``rows`` rows starts (the rows of the last root step)."""
        env_ids = self._root_env_ids
        if rows != len(env_ids):
            raise ConfigError(
                f"a search of {rows} rows after a root step of {len(env_ids)} rows: "
                "zerokv roots each search row at the environment of its root step"
            )
        self._search = self.cache.begin_search(env_ids)
        self._pending = None

    @attached_call
    def end_search(self) -> None:
        self.cache.end_search()
        self._search = None
        self._pending = None

    @attached_call
    def note_leaves(self, index_in_path: Sequence[int], index_in_batch: Sequence[int]) -> None:
        """The leaves ``batch_traverse`` chose: their parents' addresses."""
        self._pending = (list(index_in_path), list(index_in_batch))

    # ------------------------------------------------------------------ root steps
    def _root_first(self, current: torch.Tensor, start_pos: Any, env_ids: list[int]) -> Any:
        wm = self.world_model
        rows = int(current.shape[0])
        batch = self.cache.fresh_roots(rows, 1)
        width = batch.width
        out = wm.forward(
            {"obs_embeddings": current},
            past_keys_values=BatchView(batch.kv, width - 1, width - 1),
            is_init_infer=True,
            start_pos=start_pos,
        )
        self._store_roots(env_ids, batch)
        return out

    def _root_continue(
        self,
        last: torch.Tensor,
        action: Any,
        current: torch.Tensor,
        start_pos: Any,
        env_ids: list[int],
    ) -> Any:
        rows = int(current.shape[0])
        last = last[:rows]
        gathered = self.cache.gather_roots(env_ids, 2)
        sizes = [n - 2 for n in gathered.host_lengths]
        filled, missed = self._fill_misses(gathered, sizes, last, start_pos, 2)
        batch = _with_host(filled, [s + 2 for s in sizes])
        self._count_root(rows, missed)
        out = self._root_forwards(batch.kv, sizes, last, action, current, start_pos)
        self._store_roots(env_ids, batch)
        return out

    def _store_roots(self, env_ids: list[int], batch: Batch) -> None:
        """A root step's store; its rows are the next search's."""
        self.cache.store_roots(env_ids, batch, self.correction())
        self._root_env_ids = list(env_ids)

    def _mixed(
        self,
        last: torch.Tensor,
        action: Any,
        current: torch.Tensor,
        start_pos: Any,
        env_ids: list[int],
        first: list[bool],
    ) -> Any:
        out = super()._mixed(last, action, current, start_pos, env_ids, first)
        self._root_env_ids = list(env_ids)  # the search's rows: the whole batch, in order
        return out

    def _search_ends(self) -> None:
        pass  # a search ends with its MCTS call (end_search); a root step changes nothing

    # ------------------------------------------------------------------ expansions
    @attached_call
    def forward_recurrent_inference(
        self,
        state_action_history: Sequence[Any],
        simulation_index: int = 0,
        search_depth: Sequence[int] | None = None,
        start_pos: Any = 0,
    ) -> tuple[Any, ...]:
        """One expansion of every row, addressed by the search: gather the parents, two
        forwards, store the children at ``(simulation_index + 1, row)``."""
        self._check_live()
        pending, search = self._pending, self._search
        if pending is None or search is None:
            raise UnsupportedOperationError(
                "recurrent_inference outside a search of an attached policy: the node cache "
                "needs the search's node addresses (zerokv.lightzero.attach_policy); for a "
                "model driven without LightZero's MCTS use zerokv.lightzero.attach"
            )
        wm = self.world_model
        correction = self.correction()  # a bad table is refused before anything moves
        index_in_path, index_in_batch = pending
        rows = len(index_in_path)
        if isinstance(simulation_index, bool) or not isinstance(simulation_index, int):
            raise NodeRangeError(f"simulation_index must be an int, got {simulation_index!r}")
        if search_depth is None or len(search_depth) != rows:
            raise NodeRangeError(f"search_depth must give the depth of each of the {rows} leaves")
        parents = [NodeAddress(int(i), int(b)) for i, b in zip(index_in_path, index_in_batch)]
        children = [NodeAddress(simulation_index + 1, b) for b in range(rows)]
        depths = [int(d) for d in search_depth]
        _, action = state_action_history[-1]
        clock = time.perf_counter
        with torch.no_grad():
            begin = clock()
            batch = self.cache.gather_reserve(search, parents, 2)
            sizes = [n - 2 for n in batch.host_lengths]
            spent = clock() - begin
            out, reward = self._recurrent_forwards(batch.kv, sizes, action, start_pos, search_depth)
            begin = clock()
            self.cache.store_nodes(search, parents, children, depths, batch, correction)
            spent += clock() - begin
        self.counts.recurrent_cache_seconds += spent
        self._pending = None
        wm.total_query_count += rows
        wm.hit_count += rows
        self.counts.recurrent_lookups += rows
        self.counts.recurrent_hits += rows
        self.counts.recurrent_calls += 1
        return (out.output_sequence, wm.latent_state, reward, out.logits_policy, out.logits_value)

    def stats(self) -> dict[str, Any]:
        c = self.counts
        return {
            "version": self.version,
            "key": self.key,
            "initial_calls": c.initial_calls,
            "recurrent_calls": c.recurrent_calls,
            "root_batches": c.root_batches,
            "root_hits": c.root_hits,
            "recurrent_lookups": c.recurrent_lookups,
            "recomputed_misses": c.recomputed_misses,
            "host_reads": c.host_reads + self.cache.host_reads,
            "storage_bytes": self.cache.storage_bytes,
        }

    def __repr__(self) -> str:
        state = "attached" if self.attached else "detached"
        return f"NodeAttachment(LightZero {self.version}, {state})"


def _with_host(batch: Batch, host: list[int]) -> SearchBatch:
    return SearchBatch(batch.kv, batch.lengths, True, tuple(host))


# --------------------------------------------------------------------------- the search


class _TreeRecorder:
    """Stands for LightZero's ``tree_muzero`` module inside one wrapped ``search``: every
    name is LightZero's; ``batch_traverse`` also tells the attachment its leaves."""

    def __init__(self, real: Any, attachment: NodeAttachment) -> None:
        self._real = real
        self._attachment = attachment

    def batch_traverse(self, *args: Any, **kwargs: Any) -> Any:
        out = self._real.batch_traverse(*args, **kwargs)
        self._attachment.note_leaves(out[0], out[1])
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _search_simulations(mcts: object) -> int:
    """How many simulations ``mcts``'s searches make (its config's ``num_simulations``)."""
    return int(getattr(getattr(mcts, "_cfg", None), "num_simulations", 0) or 0)


def _mcts_search(mcts: object) -> Callable[..., Any]:
    """LightZero's ``search`` function of ``mcts`` (``ConfigError`` for another MCTS)."""
    cls = type(mcts)
    if (cls.__module__, cls.__qualname__) != MCTS_CLASS:
        raise ConfigError(
            f"attach_policy wraps LightZero's C++ tree search ({'.'.join(MCTS_CLASS)}); "
            f"this policy's MCTS is {cls.__module__}.{cls.__qualname__} "
            "(set mcts_ctree=True, or use zerokv.lightzero.attach(world_model))"
        )
    search = getattr(cls, "search", None)
    if not isinstance(search, types.FunctionType) or "tree_muzero" not in search.__globals__:
        raise ConfigError(f"{cls.__qualname__}.search is not LightZero's tree search")
    if not hasattr(search.__globals__["tree_muzero"], "batch_traverse"):
        raise ConfigError("LightZero's tree_muzero has no batch_traverse")
    return search


def _wrapped_search(
    search: types.FunctionType, mcts: object, attachment: NodeAttachment
) -> Callable[..., Any]:
    """LightZero's ``search`` code, bound to ``mcts``, with the recorder for ``tree_muzero``
    and a node-cache search around it."""
    scope = dict(search.__globals__)
    scope["tree_muzero"] = _TreeRecorder(search.__globals__["tree_muzero"], attachment)
    code = types.FunctionType(
        search.__code__, scope, search.__name__, search.__defaults__, search.__closure__
    )
    code.__kwdefaults__ = search.__kwdefaults__

    def run(roots: Any, *args: Any, **kwargs: Any) -> Any:
        sims = _search_simulations(mcts)
        if sims > attachment.cache.num_simulations:
            raise NodeRangeError(
                f"a search of {sims} simulations; the node cache holds "
                f"{attachment.cache.num_simulations} per row (attach_policy(num_simulations=))"
            )
        # One search is one guarded unit: another thread's call meanwhile is refused.
        if not attachment._busy.acquire(blocking=False):
            raise ConcurrentUseError(
                "a search of an attached policy started while another thread is inside its "
                "world model; an attached policy is not thread-safe (one per thread)"
            )
        try:
            attachment.begin_search(int(roots.num))
            try:
                return code(mcts, roots, *args, **kwargs)
            finally:
                attachment.end_search()
        finally:
            attachment._busy.release()

    return run


# --------------------------------------------------------------------------- the policy


class PolicyAttachment:
    """A UniZero policy whose searches run on a node-addressed cache; ``detach()`` undoes it."""

    def __init__(self, policy: LightZeroObject, **options: Any) -> None:
        models = [getattr(policy, name, None) for name in MODEL_ATTRIBUTES]
        mcts = {name: getattr(policy, name, None) for name in MCTS_ATTRIBUTES}
        present = {name: m for name, m in mcts.items() if m is not None}
        if not present or all(m is None for m in models):
            raise ConfigError(
                f"attach_policy needs a LightZero UniZero policy (with {MCTS_ATTRIBUTES} "
                f"and {MODEL_ATTRIBUTES}), got {type(policy).__module__}."
                f"{type(policy).__qualname__}"
            )
        worlds = {id(_world_model(m)): _world_model(m) for m in models if m is not None}
        if len(worlds) != 1:
            raise ConfigError("the policy's collect and eval modes use different world models")
        (wm,) = worlds.values()
        if attachment_of(wm) is not None:
            raise ConfigError("this policy's world model is already attached; detach() it first")
        verify = options.pop("verify", False)
        if not isinstance(verify, bool):
            raise ConfigError(f"verify must be a bool, got {verify!r}")
        searches = {name: _mcts_search(m) for name, m in present.items()}
        needed = max([_policy_simulations(policy), *map(_search_simulations, present.values())])
        if "num_simulations" not in options:
            options["num_simulations"] = needed
        sims = options["num_simulations"]
        if isinstance(sims, int) and not isinstance(sims, bool) and 1 <= sims < needed:
            raise ConfigError(
                f"num_simulations={sims} is below the {needed} simulations of the policy's "
                "searches: a search would run out of node addresses"
            )
        self.policy = policy
        self.world = NodeAttachment(wm, **options)
        self.mcts = present
        self._saved_search: dict[str, Any] = {}
        #: ``verify=True``: LightZero's own caching on a weight-sharing twin, every call
        #: compared (``zerokv.lightzero.verify``); made before the world model is attached.
        self.verifier = Verifier(wm, self.world.env_num) if verify else None
        register_attachment(wm, self.world)
        self.world._install()
        if self.verifier is not None:
            self.verifier.install()
        for name, m in present.items():
            state = m.__dict__
            self._saved_search[name] = state.get("search", _ABSENT)
            state["search"] = _wrapped_search(searches[name], m, self.world)  # type: ignore[arg-type]
        self.attached = True
        self._lock = threading.Lock()

    def detach(self) -> None:
        """Put back the MCTS objects' ``search`` and the world model exactly. Idempotent."""
        if not self.attached:
            return
        for name, m in self.mcts.items():
            saved = self._saved_search[name]
            if saved is _ABSENT:
                m.__dict__.pop("search", None)
            else:
                m.__dict__["search"] = saved
        if self.verifier is not None:
            self.verifier.remove()
        self.world.detach()
        self.attached = False

    def stats(self) -> dict[str, Any]:
        """The world model's statistics, and with ``verify`` the lockstep's counts
        (``verified``: calls, compared outputs, divergences by kind)."""
        out = self.world.stats()
        if self.verifier is not None:
            out["verified"] = self.verifier.summary()
        return out

    def __enter__(self) -> PolicyAttachment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def __repr__(self) -> str:
        state = "attached" if self.attached else "detached"
        return f"PolicyAttachment(LightZero {self.world.version}, {state})"


_ABSENT = object()


def _policy_simulations(policy: LightZeroObject) -> int:
    """The most simulations any of the policy's searches makes (main has a collect and an
    eval count; 0.2.0 one)."""
    cfg = getattr(policy, "_cfg", None)
    counts = [
        getattr(cfg, name, None)
        for name in ("num_simulations", "collect_num_simulations", "eval_num_simulations")
    ]
    found = [int(c) for c in counts if isinstance(c, int) and not isinstance(c, bool) and c > 0]
    if not found:
        raise ConfigError("the policy's config names no num_simulations")
    return max(found)


def attach_policy(policy: LightZeroObject, **options: Any) -> PolicyAttachment:
    """Run ``policy``'s collect and eval searches (LightZero's UniZero policy, 0.2.0 or
    main, C++ tree) on a node-addressed cache (module docstring). Options: ``device``
    (checked against the model's), ``num_simulations`` (the nodes per row preallocated;
    default the most any of the policy's searches makes). Raises ``ConfigError`` for an
    unsupported policy, MCTS or option, changing nothing then. ``verify=True`` runs
    LightZero's own caching beside zerokv on a weight-sharing twin and compares every
    output (``zerokv.lightzero.verify``: classified LightZero defects are counted, anything
    else raises ``LockstepDivergence``)."""
    return PolicyAttachment(policy, **options)


def attach_nodes(world_model: LightZeroObject, **options: Any) -> NodeAttachment:
    """A world model on the node-addressed cache for a caller that drives the search itself
    and says, before each ``recurrent_inference``, what LightZero's tree would say:
    ``begin_search(rows)``, ``note_leaves(index_in_path, index_in_batch)``, ``end_search()``
    (``attach_policy`` does it for LightZero's MCTS). Options as ``NodeAttachment``'s."""
    wm = _world_model(world_model)
    if attachment_of(wm) is not None:
        raise ConfigError("this world model is already attached; detach() it first")
    attachment = NodeAttachment(world_model, **options)
    register_attachment(wm, attachment)
    attachment._install()
    return attachment
