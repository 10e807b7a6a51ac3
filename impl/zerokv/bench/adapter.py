"""Per-call benchmark of the LightZero drop-in: ``python -m zerokv.bench --adapter``.

This module owns the comparison of ``zerokv.lightzero.KVCacheManager`` with LightZero
main's own ``KVCacheManager``, call by call, on the call sequence LightZero's UniZero world
model makes. LightZero is not imported: ``LightZeroManager`` is a re-creation written for
this benchmark from the documented behaviour of LightZero's manager (commit 9f717c80):

* per pool a ``key -> index`` dict, an ``index -> key`` list, a list of stored objects and
  a FIFO pointer; statistics (hits, misses, evictions, total queries) counted per call
  when enabled, the eviction strategy compared on every hit, and a debug record formatted
  per lookup and per store, as LightZero's pools do;
* a store copies the object into its slot: ``clone()`` when the slot is empty (after a
  ``clear``, which drops the stored objects) or holds an incompatible object, else a
  per-layer ``copy_`` of the whole caches and their sizes;
* a lookup returns the stored object itself (LightZero's world model then clones it);
* ``hierarchical_get`` is the root pool's lookup, then the recurrent pool's.

``LightZeroKeysValues`` re-creates LightZero's ``KeysValues`` layout (per layer a K and a V
cache with ``_cache`` ``(1, H, cl, d)`` and ``_size``; ``clone()`` allocates a new object
and copies every cache), so both managers get and return the same kind of object.

The workload (``AdapterWorkload``, default UniZero's Atari shape: L=2, H=8, E=768 so d=96,
cl=8, 8 environments, 25 simulations, LightZero's pool sizes root 256 / recurrent 200)
replays what the world model does per environment step: a root lookup per environment
(``get_init_cache``, a hit after the first step, then the world model's ``clone()``), a root
store per environment (``set_init_cache``), ``clear_recur_cache()``, then per simulation a
``hierarchical_get`` per environment for a parent picked in that environment's tree (a
hit, cloned) and a ``set_recur_cache`` of the child; at the end a ``get_recur_cache`` of
every child of the search, by key alone (as reanalysis looks nodes up). Stored objects are
one reused object whose caches are re-pointed at fresh tensors before each store, as the
world model's ``keys_values_wm_single_env`` is.

Timing: both managers replay the same sequence, ``repeats`` times in alternating order
after an untimed warm-up; lookups are timed in blocks of consecutive calls (one per
environment), stores one by one (re-pointing the object's caches is not timed), and
the table gives per kind the median over repeats of the mean time per call, and the ratio
zerokv / LightZero. A check pass first requires both to return the same hits with the same
tokens.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from zerokv.lightzero import KVCacheManager

__all__ = [
    "KINDS",
    "AdapterMismatch",
    "AdapterWorkload",
    "LightZeroKeysValues",
    "LightZeroManager",
    "check",
    "format_table",
    "main",
    "run",
]

_log = logging.getLogger("zerokv.bench.adapter")

#: The kinds of call timed, in table order.
KINDS = (
    "get_init_cache",
    "get_recur_cache",
    "hierarchical_get",
    "set_init_cache",
    "set_recur_cache",
    "clone of a hit",
)


# --------------------------------------------------------------------------- LightZero


class _Cache:
    """One side of one layer: ``_cache`` ``(n, H, max_tokens, d)``, ``_size`` tokens."""

    def __init__(
        self, num_samples: int, num_heads: int, max_tokens: int, head_dim: int, device: Any
    ) -> None:
        self._num_samples = num_samples
        self._num_heads = num_heads
        self._max_tokens = max_tokens
        self._head_dim = head_dim
        self._device = device
        self._cache = torch.empty(num_samples, num_heads, max_tokens, head_dim, device=device)
        self._size = 0

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self._num_samples, self._num_heads, self._size, self._head_dim)


class _LayerCaches:
    def __init__(self, k_cache: _Cache, v_cache: _Cache) -> None:
        self._k_cache = k_cache
        self._v_cache = v_cache

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self._k_cache.shape


class LightZeroKeysValues:
    """LightZero's ``KeysValues`` layout, re-created (module docstring)."""

    def __init__(
        self,
        num_samples: int,
        num_heads: int,
        max_tokens: int,
        embed_dim: int,
        num_layers: int,
        device: Any,
    ) -> None:
        head_dim = embed_dim // num_heads
        self._keys_values = tuple(
            _LayerCaches(
                _Cache(num_samples, num_heads, max_tokens, head_dim, device),
                _Cache(num_samples, num_heads, max_tokens, head_dim, device),
            )
            for _ in range(num_layers)
        )

    def __len__(self) -> int:
        return len(self._keys_values)

    @property
    def size(self) -> int:
        return self._keys_values[0].shape[2] if self._keys_values else 0

    def clone(self) -> LightZeroKeysValues:
        """A new object of the same shape, every cache and size copied."""
        first = self._keys_values[0]._k_cache
        new = LightZeroKeysValues(
            first._num_samples,
            first._num_heads,
            first._max_tokens,
            first._num_heads * first._head_dim,
            len(self._keys_values),
            first._device,
        )
        for src, dst in zip(self._keys_values, new._keys_values):
            dst._k_cache._cache.copy_(src._k_cache._cache)
            dst._v_cache._cache.copy_(src._v_cache._cache)
            dst._k_cache._size = src._k_cache._size
            dst._v_cache._size = src._v_cache._size
        return new


class _Stats:
    def __init__(self) -> None:
        self.hits = self.misses = self.evictions = self.total_queries = 0


class _Strategy(enum.Enum):
    FIFO = "fifo"
    LRU = "lru"


class _Pool:
    """One of LightZero's FIFO pools, re-created (module docstring)."""

    def __init__(self, pool_size: int, name: str) -> None:
        self.pool_size = pool_size
        self.name = name
        self._pool: list[LightZeroKeysValues | None] = [None] * pool_size
        self._key_to_index: dict[int, int] = {}
        self._index_to_key: list[int | None] = [None] * pool_size
        self._next_index = 0
        self.eviction_strategy = _Strategy.FIFO
        self.enable_stats = True
        self.stats = _Stats()

    def get(self, cache_key: int) -> LightZeroKeysValues | None:
        if self.enable_stats:
            self.stats.total_queries += 1
        index = self._key_to_index.get(cache_key)
        if index is not None:
            if self.enable_stats:
                self.stats.hits += 1
            if self.eviction_strategy == _Strategy.LRU:
                raise NotImplementedError("LightZero's LRU bookkeeping is not re-created")
            _log.debug(f"[{self.name}] hit key={cache_key} index={index}")
            return self._pool[index]
        if self.enable_stats:
            self.stats.misses += 1
        _log.debug(f"[{self.name}] miss key={cache_key}")
        return None

    def set(self, cache_key: int, kv_cache: LightZeroKeysValues) -> int:
        index = self._key_to_index.get(cache_key)
        if index is not None:
            self._pool[index] = self._copy_into_slot(kv_cache, index)
            _log.debug(f"[{self.name}] updated key={cache_key} index={index}")
            return index
        index = self._next_index
        self._next_index = (index + 1) % self.pool_size
        old = self._index_to_key[index]
        if old is not None:
            self.stats.evictions += 1
            del self._key_to_index[old]
            self._index_to_key[index] = None
        self._pool[index] = self._copy_into_slot(kv_cache, index)
        self._key_to_index[cache_key] = index
        self._index_to_key[index] = cache_key
        _log.debug(f"[{self.name}] stored key={cache_key} index={index}")
        return index

    def _copy_into_slot(self, src: LightZeroKeysValues, index: int) -> LightZeroKeysValues:
        dst = self._pool[index]
        if dst is None or not self._compatible(dst, src):
            return src.clone()
        for s, d in zip(src._keys_values, dst._keys_values):
            d._k_cache._cache.copy_(s._k_cache._cache)
            d._v_cache._cache.copy_(s._v_cache._cache)
            d._k_cache._size = s._k_cache._size
            d._v_cache._size = s._v_cache._size
        return dst

    @staticmethod
    def _compatible(dst: LightZeroKeysValues, src: LightZeroKeysValues) -> bool:
        if len(dst) != len(src):
            return False
        for d, s in zip(dst._keys_values, src._keys_values):
            for a, b in (
                (d._k_cache._cache, s._k_cache._cache),
                (d._v_cache._cache, s._v_cache._cache),
            ):
                if a.shape != b.shape or a.device != b.device or a.dtype != b.dtype:
                    return False
        return True

    def clear(self) -> None:
        self._pool = [None] * self.pool_size
        self._key_to_index.clear()
        self._index_to_key = [None] * self.pool_size
        self._next_index = 0


class LightZeroManager:
    """LightZero's ``KVCacheManager``, re-created (module docstring)."""

    def __init__(self, config: Any, env_num: int) -> None:
        simulations = int(getattr(config, "num_simulations", 50))
        root = min(int(getattr(config, "max_cache_size", 5000)), max(256, 2 * simulations))
        self.env_num = env_num
        self.init_pools = [_Pool(root, f"init_env{e}") for e in range(env_num)]
        self.recur_pool = _Pool(simulations * env_num, "recurrent")
        self.wm_pool = _Pool(env_num, "world_model")
        self.clear_recur_log_freq = 1000
        self._clear_recur_counter = 0

    def get_init_cache(self, env_id: int, cache_key: int) -> LightZeroKeysValues | None:
        if env_id < 0 or env_id >= self.env_num:
            raise ValueError(f"invalid env_id {env_id}")
        return self.init_pools[env_id].get(cache_key)

    def set_init_cache(self, env_id: int, cache_key: int, kv_cache: LightZeroKeysValues) -> int:
        if env_id < 0 or env_id >= self.env_num:
            raise ValueError(f"invalid env_id {env_id}")
        return self.init_pools[env_id].set(cache_key, kv_cache)

    def get_recur_cache(self, cache_key: int) -> LightZeroKeysValues | None:
        return self.recur_pool.get(cache_key)

    def set_recur_cache(self, cache_key: int, kv_cache: LightZeroKeysValues) -> int:
        return self.recur_pool.set(cache_key, kv_cache)

    def hierarchical_get(self, env_id: int, cache_key: int) -> LightZeroKeysValues | None:
        found = self.get_init_cache(env_id, cache_key)
        if found is not None:
            return found
        return self.get_recur_cache(cache_key)

    def clear_recur_cache(self) -> None:
        self.recur_pool.clear()
        self._clear_recur_counter += 1
        if self._clear_recur_counter % self.clear_recur_log_freq == 0:
            _log.info("cleared the recurrent cache %d times", self._clear_recur_counter)


# --------------------------------------------------------------------------- workload


@dataclasses.dataclass(frozen=True)
class AdapterWorkload:
    """The shape and the length of the replay (default: UniZero's Atari shape)."""

    env_num: int = 8
    num_layers: int = 2
    num_heads: int = 8
    embed_dim: int = 768
    context_length: int = 8
    num_simulations: int = 25
    steps: int = 10
    seed: int = 0

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def config(self) -> Any:
        """A world-model config as LightZero's (the names both managers read)."""

        @dataclasses.dataclass
        class Config:
            num_simulations: int
            num_layers: int
            num_heads: int
            embed_dim: int
            context_length: int
            max_cache_size: int = 5000

        return Config(
            self.num_simulations,
            self.num_layers,
            self.num_heads,
            self.embed_dim,
            self.context_length,
        )


@dataclasses.dataclass
class _Timer:
    seconds: dict[str, float] = dataclasses.field(default_factory=lambda: dict.fromkeys(KINDS, 0.0))
    calls: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(KINDS, 0))

    def per_call_us(self) -> dict[str, float]:
        return {k: 1e6 * self.seconds[k] / self.calls[k] for k in KINDS if self.calls[k]}


def _window(size: int, cl: int) -> int:
    """UniZero's stored sizes: +2 tokens per step, cut to cl - 3 at cl - 1."""
    return cl - 3 if size >= cl - 1 else size


class _Replay:
    """One manager driven through the workload's call sequence."""

    def __init__(
        self,
        manager: Any,
        work: AdapterWorkload,
        device: torch.device,
        dtype: torch.dtype,
        sync: Callable[[], None],
    ) -> None:
        self.manager = manager
        self.work = work
        self.sync = sync
        gen = torch.Generator().manual_seed(work.seed)
        shape = (1, work.num_heads, work.context_length, work.head_dim)
        self.bank = [
            torch.randn(shape, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
            for _ in range(4 * work.num_layers + 3)
        ]
        # The world model's keys_values_wm_single_env: one object, caches re-pointed per store.
        self.single = LightZeroKeysValues(
            1, work.num_heads, work.context_length, work.embed_dim, work.num_layers, device
        )
        self.turn = 0

    def _object(self, size: int) -> LightZeroKeysValues:
        bank, turn = self.bank, self.turn
        self.turn += 1
        for i, layer in enumerate(self.single._keys_values):
            for j, side in enumerate((layer._k_cache, layer._v_cache)):
                side._cache = bank[(turn + 2 * i + j) % len(bank)]
                side._size = size
        return self.single

    def run(self, timer: _Timer | None, seen: list[Any] | None = None) -> None:
        """The whole call sequence; ``seen`` collects (size, K of layer 0) of every hit."""
        work, m, sync = self.work, self.manager, self.sync
        rng = random.Random(work.seed)
        envs = range(work.env_num)
        cl = work.context_length
        prev_roots: list[int] = []
        root_sizes = [1] * work.env_num
        clock = time.perf_counter

        def record(kind: str, start: float, calls: int) -> None:
            if timer is not None:
                sync()
                timer.seconds[kind] += clock() - start
                timer.calls[kind] += calls

        def note(hits: list[Any]) -> None:
            if seen is not None:
                for h in hits:
                    seen.append(
                        None
                        if h is None
                        else (h.size, h._keys_values[0]._k_cache._cache[:, :, : h.size].clone())
                    )

        for _ in range(work.steps):
            if prev_roots:
                get_init = m.get_init_cache
                start = clock()
                found = [get_init(env_id=e, cache_key=k) for e, k in enumerate(prev_roots)]
                record("get_init_cache", start, work.env_num)
                start = clock()
                copies = [f.clone() for f in found if f is not None]
                record("clone of a hit", start, len(copies))
                note(copies)
                del found, copies
            roots = [rng.getrandbits(64) for _ in envs]
            for e in envs:
                obj = self._object(root_sizes[e])  # the world model's work, not timed
                start = clock()
                m.set_init_cache(env_id=e, cache_key=roots[e], kv_cache=obj)
                record("set_init_cache", start, 1)
            m.clear_recur_cache()
            trees = [[(roots[e], root_sizes[e])] for e in envs]
            for _ in range(work.num_simulations):
                picked = [rng.choice(tree) for tree in trees]
                parents = [key for key, _ in picked]
                sizes = [size for _, size in picked]
                hierarchical_get = m.hierarchical_get
                start = clock()
                found = [hierarchical_get(env_id=e, cache_key=k) for e, k in enumerate(parents)]
                record("hierarchical_get", start, work.env_num)
                start = clock()
                copies = [f.clone() for f in found if f is not None]
                record("clone of a hit", start, len(copies))
                note(copies)
                del found, copies
                children = [(rng.getrandbits(64), _window(size + 2, cl)) for size in sizes]
                for e in envs:
                    key, size = children[e]
                    obj = self._object(size)
                    start = clock()
                    m.set_recur_cache(cache_key=key, kv_cache=obj)
                    record("set_recur_cache", start, 1)
                for e in envs:
                    trees[e].append(children[e])
            # Reanalysis looks nodes up in the recurrent pool by key alone (positionally).
            children_keys = [key for tree in trees for key, _ in tree[1:]]
            get_recur = m.get_recur_cache
            start = clock()
            found = [get_recur(k) for k in children_keys]
            record("get_recur_cache", start, len(children_keys))
            note([f.clone() if f is not None else None for f in found[: work.env_num]])
            del found
            prev_roots = roots
            root_sizes = [_window(s + 2, cl) for s in root_sizes]


# --------------------------------------------------------------------------- runs


def _managers(work: AdapterWorkload, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    cfg = work.config()
    return {
        "LightZero": LightZeroManager(cfg, work.env_num),
        "zerokv": KVCacheManager(cfg, work.env_num, device=device, dtype=dtype),
    }


class AdapterMismatch(AssertionError):
    """The two managers returned different entries for the same call."""


def check(work: AdapterWorkload, device: torch.device, dtype: torch.dtype) -> int:
    """Both managers replay the sequence; every hit must hold the same tokens. Returns hits."""
    sync = _sync(device)
    results: dict[str, list[Any]] = {}
    for name, manager in _managers(work, device, dtype).items():
        seen: list[Any] = []
        _Replay(manager, work, device, dtype, sync).run(None, seen)
        results[name] = seen
    a, b = results["LightZero"], results["zerokv"]
    if len(a) != len(b):
        raise AdapterMismatch(f"{len(a)} lookups returned by LightZero, {len(b)} by zerokv")
    for i, (x, y) in enumerate(zip(a, b)):
        if (x is None) != (y is None) or (
            x is not None and (x[0] != y[0] or not torch.equal(x[1], y[1]))
        ):
            raise AdapterMismatch(f"lookup {i}: LightZero and zerokv returned different entries")
    return sum(x is not None for x in a)


def _sync(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def run(
    work: AdapterWorkload,
    repeats: int,
    device: torch.device,
    dtype: torch.dtype,
) -> dict[str, dict[str, list[float]]]:
    """Per manager and kind of call, the mean time per call (us) of every repeat."""
    sync = _sync(device)
    out: dict[str, dict[str, list[float]]] = {"LightZero": {}, "zerokv": {}}
    names = list(out)
    for manager in _managers(work, device, dtype).values():  # warm-up, untimed
        _Replay(manager, dataclasses.replace(work, steps=2), device, dtype, sync).run(None)
    for r in range(repeats):
        for name in names if r % 2 == 0 else reversed(names):
            manager = _managers(work, device, dtype)[name]
            timer = _Timer()
            _Replay(manager, work, device, dtype, sync).run(timer)
            for kind, us in timer.per_call_us().items():
                out[name].setdefault(kind, []).append(us)
    return out


def format_table(results: dict[str, dict[str, list[float]]]) -> str:
    """Median per call of each kind, and the ratio zerokv / LightZero."""
    lines = [
        "| call | LightZero's manager (us) | zerokv drop-in (us) | zerokv / LightZero |",
        "|---|---:|---:|---:|",
    ]
    for kind in KINDS:
        theirs = results["LightZero"].get(kind)
        ours = results["zerokv"].get(kind)
        if not theirs or not ours:
            continue
        a, b = statistics.median(theirs), statistics.median(ours)
        lines.append(f"| {kind} | {a:.2f} | {b:.2f} | {b / a:.2f} |")
    return "\n".join(lines)


def main(
    *,
    steps: int | None,
    repeats: int | None,
    seed: int,
    device: torch.device,
    dtype: torch.dtype,
    json_path: str | None,
    emit: Callable[[str], None],
) -> int:
    """The ``--adapter`` run of ``python -m zerokv.bench`` (returns the exit status)."""
    work = AdapterWorkload(steps=steps or 10, seed=seed)
    repeats = repeats or 7
    hits = check(work, device, dtype)
    started = time.perf_counter()
    results = run(work, repeats, device, dtype)
    emit(
        f"zerokv.lightzero.KVCacheManager vs LightZero's KVCacheManager (re-created), per call: "
        f"L={work.num_layers} H={work.num_heads} E={work.embed_dim} cl={work.context_length}, "
        f"{work.env_num} envs, {work.num_simulations} simulations, {work.steps} steps, "
        f"{device} {str(dtype).replace('torch.', '')}, {torch.get_num_threads()} thread(s), "
        f"median of {repeats} interleaved repeats ({hits} hits checked equal first)"
    )
    emit(format_table(results))
    emit(f"timed runs: {time.perf_counter() - started:.1f} s")
    if json_path:
        doc = {
            "workload": dataclasses.asdict(work),
            "device": str(device),
            "dtype": str(dtype),
            "threads": torch.get_num_threads(),
            "repeats": repeats,
            "per_call_us": results,
            "median_us": {
                name: {k: statistics.median(v) for k, v in kinds.items()}
                for name, kinds in results.items()
            },
        }
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)
        emit(f"wrote {json_path}")
    return 0
