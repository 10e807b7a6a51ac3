"""Workload configurations and the seeded, model-free replay of UniZero's collect workload.

This module owns the benchmark's contract and driver:

* `WorkloadConfig` and the presets of UniZero's configurations (docs/background.md), with
  LightZero's pool sizes derived from them;
* the `CacheBackend` protocol that both the legacy re-creation (`zerokv.bench.legacy`) and
  zerokv's benchmark adapter implement, with `StepOutput`, the batch a backend hands to the
  transformer;
* `replay`, which drives a backend through the collect workload (docs/background.md: root steps,
  per-environment search trees, recurrent re-stores, episode ends, periodic full clears) with
  every random input drawn from one seeded generator, optionally checks every output against
  a second backend (`ReplayMismatch`), and measures time, host synchronisations, allocations,
  memory and hit rates into a `ReplayResult`;
* `DispatchCounter`, the dispatch mode that counts allocations and synchronising ops.

It owns no cache logic: everything cache-shaped lives behind the protocol.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

import torch
from torch._ops import OpOverload
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = [
    "HIT_KEYS",
    "PRESETS",
    "CacheBackend",
    "DispatchCounter",
    "HostReadReporter",
    "ReplayMismatch",
    "ReplayResult",
    "SteadyStateReporter",
    "StepOutput",
    "WorkloadConfig",
    "canonical_rows",
    "compare_outputs",
    "merge_results",
    "preset",
    "replay",
]

_log = logging.getLogger("zerokv.bench")

#: The keys of `CacheBackend.hit_counts`.
HIT_KEYS: tuple[str, ...] = ("root_hits", "recurrent_hits", "misses", "lookups")


# --------------------------------------------------------------------------- configuration


@dataclasses.dataclass(frozen=True)
class WorkloadConfig:
    """One benchmark workload: a model shape, a collector shape and the replay's parameters.

    Field names follow UniZero's config; `context_length` is `cl = 2 * infer_context_length`
    (tokens, two per time step) and must be even.
    """

    name: str
    num_layers: int
    num_heads: int
    embed_dim: int
    context_length: int
    env_num: int
    num_simulations: int
    max_cache_size: int = 5000
    steps: int = 200
    episode_length_range: tuple[int, int] = (800, 3000)
    clear_interval: int = 2000
    seed: int = 0
    # Branching factor of the replayed search trees. Small on purpose: a few actions per node
    # make repeated (parent, action) expansions, hence recurrent re-stores, common.
    num_actions: int = 4
    # Start every environment at a seeded random position inside its first episode, as a
    # collector resuming after a train cycle does (its caches were cleared, so the first
    # root lookups miss): environments then end their episodes at different steps, which
    # exercises `clear_env` within a short replay. False starts all at position 0.
    start_mid_episode: bool = True

    def __post_init__(self) -> None:
        positive = {
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "embed_dim": self.embed_dim,
            "env_num": self.env_num,
            "num_simulations": self.num_simulations,
            "max_cache_size": self.max_cache_size,
            "steps": self.steps,
            "clear_interval": self.clear_interval,
            "num_actions": self.num_actions,
        }
        for field, value in positive.items():
            if value <= 0:
                raise ValueError(f"{field} must be positive, got {value}")
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim {self.embed_dim} is not a multiple of num_heads {self.num_heads}"
            )
        # The window rule keeps tokens [2, cl-1): cl-3 >= 1 tokens, and UniZero's cl is even
        # (two tokens per time step), which keeps stored sizes odd after a window.
        if self.context_length < 4 or self.context_length % 2:
            raise ValueError(f"context_length must be even and >= 4, got {self.context_length}")
        low, high = self.episode_length_range
        if not 1 <= low <= high:
            raise ValueError(f"bad episode_length_range {self.episode_length_range}")

    @property
    def head_dim(self) -> int:
        """d = E // H."""
        return self.embed_dim // self.num_heads

    @property
    def root_capacity(self) -> int:
        """Legacy root-pool slots per environment: min(max_cache_size, max(256, 2 * N))."""
        return min(self.max_cache_size, max(256, 2 * self.num_simulations))

    @property
    def recurrent_capacity(self) -> int:
        """Legacy recurrent-pool slots: N * B."""
        return self.num_simulations * self.env_num

    @property
    def total_capacity(self) -> int:
        """All legacy pool slots: B root pools plus the recurrent pool."""
        return self.env_num * self.root_capacity + self.recurrent_capacity

    @property
    def correction_shape(self) -> tuple[int, int, int, int, int]:
        """Shape of the window-rule correction table: [L, 2, H, cl-3, d]."""
        return (
            self.num_layers,
            2,
            self.num_heads,
            self.context_length - 3,
            self.head_dim,
        )

    def entry_payload_bytes(self, dtype: torch.dtype = torch.float32) -> int:
        """K/V payload of one full entry: 2 * L * cl * E * itemsize (8*L*cl*E for float32)."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        return 2 * self.num_layers * self.context_length * self.embed_dim * itemsize


PRESETS: dict[str, WorkloadConfig] = {
    "atari": WorkloadConfig(
        name="atari",
        num_layers=2,
        num_heads=8,
        embed_dim=768,
        context_length=8,
        env_num=8,
        num_simulations=25,
    ),
    "lunarlander": WorkloadConfig(
        name="lunarlander",
        num_layers=4,
        num_heads=4,
        embed_dim=256,
        context_length=8,
        env_num=8,
        num_simulations=50,
    ),
    "cartpole": WorkloadConfig(
        name="cartpole",
        num_layers=2,
        num_heads=2,
        embed_dim=64,
        context_length=8,
        env_num=8,
        num_simulations=25,
    ),
    # UniZero's long-context Memory config has a context of about 102 tokens; 102 is even,
    # as cl must be.
    "memory": WorkloadConfig(
        name="memory",
        num_layers=4,
        num_heads=4,
        embed_dim=256,
        context_length=102,
        env_num=8,
        num_simulations=50,
    ),
}


def preset(name: str) -> WorkloadConfig:
    """The preset called `name` (one of `PRESETS`)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown config {name!r}; choose from {sorted(PRESETS)}") from None


# --------------------------------------------------------------------------- the contract


class StepOutput(NamedTuple):
    """The batch the transformer attends to after a step appended its new tokens.

    `kv` is [L, 2, B, H, W, d]: K is kv[:, 0], V is kv[:, 1]. Row b's valid tokens are
    right-aligned in columns [W - lengths[b], W) (left padding before them). `lengths` is [B]
    int64, on any device. A backend may return views of its own buffers: the output is valid
    until the backend's next call.
    """

    kv: torch.Tensor
    lengths: torch.Tensor


class CacheBackend(Protocol):
    """What the replay driver needs from a cache implementation.

    Latents are [B, E] float32 tensors on the backend's device; `continuing` is a [B] bool
    tensor on the host (it comes from the environment loop, not from the model). `fresh` is
    [L, 2, B, H, 1, d], `new` is [L, 2, B, H, 2, d] and `correction` is [L, 2, H, cl-3, d]
    (correction[l, 0, :, j] is dK_l[j], correction[l, 1, :, j] is dV_l[j]), all on the
    backend's device in the K/V dtype.

    root_step: for each row b, if continuing[b], look up key(prev_latents[b]) in env
    env_ids[b]'s root pool; a hit gives the stored entry, a miss the 1-token entry
    fresh[:, :, b, :, 0:1]; a non-continuing row starts empty. Assemble the rows left-padded,
    append new[:, :, b] to every row (with the append-overflow rule), split each row out,
    apply the window rule with `correction` and store it in env env_ids[b]'s root pool under
    key(cur_latents[b]). Return the assembled-and-appended batch.

    sim_step: the same, except every row continues, the lookup is hierarchical (env
    env_ids[b]'s root pool, then the recurrent pool) and each row is stored in the recurrent
    pool under key(child_latents[b]).

    `hit_counts` returns cumulative counts under the keys of `HIT_KEYS` (a hierarchical hit
    counts once, in the tier that served it; lookups = root_hits + recurrent_hits + misses).
    `storage_bytes` is the K/V storage the backend keeps alive between calls (pool slots,
    staging and batch buffers); `stored_entries` counts the entries of all pools.
    """

    name: str

    def root_step(
        self,
        env_ids: Sequence[int],
        continuing: torch.Tensor,
        prev_latents: torch.Tensor,
        fresh: torch.Tensor,
        new: torch.Tensor,
        cur_latents: torch.Tensor,
        correction: torch.Tensor,
    ) -> StepOutput: ...

    def sim_step(
        self,
        env_ids: Sequence[int],
        parent_latents: torch.Tensor,
        fresh: torch.Tensor,
        new: torch.Tensor,
        child_latents: torch.Tensor,
        correction: torch.Tensor,
    ) -> StepOutput: ...

    def clear_recurrent(self) -> None: ...

    def clear_env(self, env_id: int) -> None: ...

    def clear_all(self) -> None: ...

    def hit_counts(self) -> dict[str, int]: ...

    def storage_bytes(self) -> int: ...

    def stored_entries(self) -> int: ...


@runtime_checkable
class HostReadReporter(Protocol):
    """Optional: a backend that reads device data on the host outside torch ops.

    `host_reads` is the cumulative number of such reads (the legacy backend's per-latent
    `latent.cpu().numpy()` hashing). On a CPU run no torch op reveals them, so the driver adds
    them to the synchronisation count as the device->host copies they would be on CUDA; on a
    CUDA run the dispatch mode sees those copies itself and the report is not added again.
    """

    def host_reads(self) -> int: ...


@runtime_checkable
class SteadyStateReporter(Protocol):
    """Optional: a backend that can say what it holds once every pool slot is in use.

    `steady_state_bytes` is what `storage_bytes` would be after a run long enough to fill
    every slot of every pool (and every other buffer the backend keeps). A backend that
    allocates everything up front returns its `storage_bytes`; one that allocates a slot on
    first use adds the slots not yet allocated. The report shows it beside the short run's
    peak, which for such a backend counts only the slots a short run reached.
    """

    def steady_state_bytes(self) -> int: ...


# --------------------------------------------------------------------------- checking


class ReplayMismatch(AssertionError):
    """Two backends returned different batches for the same replayed call."""

    def __init__(self, step: int, phase: str, row: int, detail: str, sim: int | None = None):
        self.step = step
        self.phase = phase
        self.row = row
        self.sim = sim
        self.detail = detail
        where = f"step {step}, {phase}" + (f" {sim}" if sim is not None else "")
        super().__init__(f"replay mismatch at {where}, row {row}: {detail}")


def canonical_rows(out: StepOutput) -> list[torch.Tensor]:
    """Per row b, its valid tokens: kv[:, :, b, :, W - lengths[b]:, :] ([L, 2, H, len, d])."""
    width = out.kv.shape[4]
    lengths = [int(n) for n in out.lengths.tolist()]
    return [out.kv[:, :, b, :, width - n :, :] for b, n in enumerate(lengths)]


def compare_outputs(
    got: StepOutput,
    want: StepOutput,
    *,
    step: int,
    phase: str,
    sim: int | None = None,
) -> None:
    """Raise `ReplayMismatch` unless `got` and `want` agree on lengths and, bit for bit, on
    every row's valid tokens (padding is ignored)."""
    if got.kv.dim() != 6 or want.kv.dim() != 6:
        raise ReplayMismatch(step, phase, -1, "kv must be [L, 2, B, H, W, d]", sim)
    got_shape = (*got.kv.shape[:4], got.kv.shape[5])
    want_shape = (*want.kv.shape[:4], want.kv.shape[5])
    if got_shape != want_shape:
        raise ReplayMismatch(
            step, phase, -1, f"shape {tuple(got.kv.shape)} vs {tuple(want.kv.shape)}", sim
        )
    if got.kv.dtype != want.kv.dtype:
        raise ReplayMismatch(step, phase, -1, f"dtype {got.kv.dtype} vs {want.kv.dtype}", sim)
    got_len = [int(n) for n in got.lengths.reshape(-1).tolist()]
    want_len = [int(n) for n in want.lengths.reshape(-1).tolist()]
    rows = got.kv.shape[2]
    if len(got_len) != rows or len(want_len) != rows:
        raise ReplayMismatch(
            step, phase, -1, f"{len(got_len)} and {len(want_len)} lengths for {rows} rows", sim
        )
    for row, (a, b) in enumerate(zip(got_len, want_len, strict=True)):
        if a != b:
            raise ReplayMismatch(step, phase, row, f"length {a} vs {b}", sim)
    for name, out in (("got", got), ("want", want)):
        width = out.kv.shape[4]
        for row, n in enumerate(got_len):
            if not 0 <= n <= width:
                raise ReplayMismatch(step, phase, row, f"{name} length {n} outside [0, {width}]")
    for row, (a_row, b_row) in enumerate(
        zip(canonical_rows(got), canonical_rows(want), strict=True)
    ):
        if not torch.equal(a_row, b_row.to(a_row.device)):
            diff = (a_row.float() - b_row.to(a_row.device).float()).abs()
            where = tuple(int(i) for i in torch.nonzero(diff)[0].tolist())
            raise ReplayMismatch(
                step,
                phase,
                row,
                f"valid tokens differ (first at [l, kv, h, tok, d] = {where}, "
                f"max abs diff {float(diff.max()):.6g})",
                sim,
            )


# --------------------------------------------------------------------------- measurement

# Ops that make the host wait for the device on CUDA: they return data-dependent shapes or
# Python scalars.
_SYNC_OPS = frozenset(
    {
        "_local_scalar_dense",
        "is_nonzero",
        "equal",
        "nonzero",
        "masked_select",
        "unique",
        "_unique",
        "_unique2",
        "unique_dim",
        "unique_consecutive",
        "unique_dim_consecutive",
    }
)


def _tensors_in(obj: object) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    stack: list[object] = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            found.append(item)
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, Mapping):
            stack.extend(item.values())
    return found


def _storage_ptr(t: torch.Tensor) -> int:
    try:
        return int(t.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError):
        return 0


# TorchDispatchMode is untyped in torch, hence the ignores on subclassing and super().
class DispatchCounter(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Counts what the torch ops run under it allocate and how often they would sync.

    `alloc_bytes` sums the storage bytes of outputs whose storage did not exist before the op
    (views and in-place results share an input's storage and are skipped). `syncs` counts ops
    that force a device->host synchronisation on CUDA: scalar reads, data-dependent shapes,
    and copies to the CPU from another device. On a CPU run the former are counted as they
    would be on CUDA; copies to the host cannot happen there (see `HostReadReporter`).
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.alloc_bytes = 0
        self.allocations = 0
        self.syncs = 0
        self.ops = 0
        #: Of ``ops``, the views (``func.is_view``: an output aliasing an input, no kernel
        #: launched on a GPU, only Python dispatch).
        self.views = 0
        self.sync_ops: Counter[str] = Counter()

    def __torch_dispatch__(
        self,
        func: OpOverload,
        types: Sequence[type],
        args: Sequence[object] = (),
        kwargs: Mapping[str, object] | None = None,
    ) -> object:
        kw = dict(kwargs or {})
        inputs = _tensors_in(list(args)) + _tensors_in(kw)
        before = {_storage_ptr(t) for t in inputs}
        out = func(*args, **kw)
        self.ops += 1
        self.views += func.is_view
        name = func.overloadpacket.__name__
        if name in _SYNC_OPS or self._device_to_host(name, args, inputs, out):
            self.syncs += 1
            self.sync_ops[name] += 1
        for t in _tensors_in(out):
            ptr = _storage_ptr(t)
            if ptr == 0 or ptr in before:
                continue
            before.add(ptr)
            self.allocations += 1
            self.alloc_bytes += int(t.untyped_storage().nbytes())
        return out

    @staticmethod
    def _device_to_host(
        name: str, args: Sequence[object], inputs: list[torch.Tensor], out: object
    ) -> bool:
        if name == "_to_copy":
            outs = _tensors_in(out)
            return bool(inputs and outs) and (
                inputs[0].device.type != "cpu" and outs[0].device.type == "cpu"
            )
        if name in ("copy_", "copy"):
            tensors = [a for a in args[:2] if isinstance(a, torch.Tensor)]
            return len(tensors) == 2 and (
                tensors[0].device.type == "cpu" and tensors[1].device.type != "cpu"
            )
        return False


@dataclasses.dataclass(frozen=True)
class ReplayResult:
    """What one `replay` measured for one backend.

    Times are milliseconds per call. `sim_step_ms` is the median over repeats of each
    repeat's median sim_step time. Counts per call come from one instrumented collect step
    run after the timed steps of the first repeat (None when `instrument=False`).
    `peak_bytes` is `torch.cuda.max_memory_allocated` above the non-backend baseline on CUDA
    (`peak_source="cuda.max_memory_allocated"`) and the largest `storage_bytes()` sampled
    between steps on CPU (`peak_source="storage_bytes"`); both are the largest over the
    repeats. `steady_state_bytes` is the backend's storage with every pool slot in use
    (None when the backend cannot say, see `SteadyStateReporter`). Hit counts are the first
    repeat's timed steps, split by phase.
    """

    backend: str
    config: str
    device: str
    dtype: str
    steps: int
    repeats: int
    sim_step_ms: float
    sim_step_ms_per_repeat: tuple[float, ...]
    root_step_ms: float
    syncs_per_sim_step: float | None
    syncs_per_root_step: float | None
    alloc_bytes_per_sim_step: float | None
    alloc_bytes_per_root_step: float | None
    allocations_per_sim_step: float | None
    peak_bytes: int
    peak_source: str
    persistent_bytes: int
    stored_entries: int
    entry_payload_bytes: int
    total_capacity: int
    root_phase_hits: dict[str, int]
    sim_phase_hits: dict[str, int]
    checked_steps: int
    steady_state_bytes: int | None = None
    #: torch ops dispatched per step in the instrumented step (each a kernel launch on CUDA).
    ops_per_sim_step: float | None = None
    ops_per_root_step: float | None = None
    #: Of ``ops_per_sim_step``, the views (no kernel launched on CUDA).
    views_per_sim_step: float | None = None

    @property
    def bytes_per_stored_entry(self) -> float | None:
        """storage_bytes / stored_entries at the end of the run."""
        if self.stored_entries == 0:
            return None
        return self.persistent_bytes / self.stored_entries

    @property
    def bytes_per_capacity_slot(self) -> float:
        """storage_bytes / the legacy pools' total slot capacity."""
        return self.persistent_bytes / self.total_capacity

    def hit_rates(self) -> dict[str, float | None]:
        """Per phase and tier: hits / lookups of that phase."""

        def rate(counts: Mapping[str, int], key: str) -> float | None:
            total = counts.get("lookups", 0)
            return counts.get(key, 0) / total if total else None

        return {
            "root_step.root": rate(self.root_phase_hits, "root_hits"),
            "root_step.miss": rate(self.root_phase_hits, "misses"),
            "sim_step.root": rate(self.sim_phase_hits, "root_hits"),
            "sim_step.recurrent": rate(self.sim_phase_hits, "recurrent_hits"),
            "sim_step.miss": rate(self.sim_phase_hits, "misses"),
        }

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict of every field plus the derived values."""
        doc: dict[str, object] = dataclasses.asdict(self)
        doc["sim_step_ms_per_repeat"] = list(self.sim_step_ms_per_repeat)
        doc["bytes_per_stored_entry"] = self.bytes_per_stored_entry
        doc["bytes_per_capacity_slot"] = self.bytes_per_capacity_slot
        doc["hit_rates"] = self.hit_rates()
        return doc


# --------------------------------------------------------------------------- the driver


class _Tree:
    """One environment's search tree for the current step: node latents, visit counts,
    parent links and the (parent, action) -> child map."""

    __slots__ = ("children", "latents", "parents", "visits")

    def __init__(self, root_latent: torch.Tensor) -> None:
        self.latents: list[torch.Tensor] = [root_latent]
        self.visits: list[int] = [0]
        self.parents: list[int] = [-1]
        self.children: dict[tuple[int, int], int] = {}

    def pick(self, u_node: float, u_action: float, num_actions: int) -> tuple[int, int]:
        """A PUCT-like seeded choice: a node drawn with weight visits + 1 (the root and the
        well-visited nodes near it are chosen most, deeper nodes less), then an action."""
        total = sum(self.visits) + len(self.visits)
        target = u_node * total
        acc = 0.0
        node = len(self.visits) - 1
        for i, v in enumerate(self.visits):
            acc += v + 1
            if target < acc:
                node = i
                break
        action = min(int(u_action * num_actions), num_actions - 1)
        return node, action

    def expand(self, parent: int, action: int, candidate: torch.Tensor) -> int:
        """The child of (parent, action): the existing one, or a new node with `candidate`."""
        child = self.children.get((parent, action))
        if child is None:
            child = len(self.latents)
            self.latents.append(candidate)
            self.visits.append(0)
            self.parents.append(parent)
            self.children[(parent, action)] = child
        node = child
        while node >= 0:
            self.visits[node] += 1
            node = self.parents[node]
        return child


class _Driver:
    """Holds the replay's state (generator, episode positions, correction table) and draws
    every input; both backends of a checked run receive the very same tensors."""

    def __init__(self, cfg: WorkloadConfig, device: torch.device, dtype: torch.dtype) -> None:
        self.cfg = cfg
        self.device = device
        self.dtype = dtype
        self.gen = torch.Generator(device="cpu")
        self.gen.manual_seed(cfg.seed)
        self.env_ids = list(range(cfg.env_num))
        self.correction = self.new_correction()
        self.prev_latents = self.latents()
        self.episode_len = [self.episode_length() for _ in range(cfg.env_num)]
        self.position = [
            int(torch.randint(0, n, (1,), generator=self.gen).item())
            if cfg.start_mid_episode
            else 0
            for n in self.episode_len
        ]

    def latents(self) -> torch.Tensor:
        return torch.randn((self.cfg.env_num, self.cfg.embed_dim), generator=self.gen).to(
            self.device
        )

    def kv(self, tokens: int) -> torch.Tensor:
        c = self.cfg
        shape = (c.num_layers, 2, c.env_num, c.num_heads, tokens, c.head_dim)
        return torch.randn(shape, generator=self.gen).to(device=self.device, dtype=self.dtype)

    def new_correction(self) -> torch.Tensor:
        # A position-embedding difference is small next to the K/V themselves.
        table = 0.1 * torch.randn(self.cfg.correction_shape, generator=self.gen)
        return table.to(device=self.device, dtype=self.dtype)

    def episode_length(self) -> int:
        low, high = self.cfg.episode_length_range
        return int(torch.randint(low, high + 1, (1,), generator=self.gen).item())

    def uniforms(self) -> list[list[float]]:
        rows: list[list[float]] = torch.rand((self.cfg.env_num, 2), generator=self.gen).tolist()
        return rows


class _Collector:
    """Accumulates one repeat's measurements."""

    def __init__(self) -> None:
        self.sim_times: list[float] = []
        self.root_times: list[float] = []
        self.root_hits: Counter[str] = Counter()
        self.sim_hits: Counter[str] = Counter()
        self.peak_storage = 0


class _Instrumented:
    """Counts of the instrumented step."""

    def __init__(self) -> None:
        self.root = DispatchCounter()
        self.sims: list[DispatchCounter] = []
        self.root_host_reads = 0
        self.sim_host_reads = 0


def _host_reads(backend: CacheBackend) -> int:
    return backend.host_reads() if isinstance(backend, HostReadReporter) else 0


def _hit_delta(after: Mapping[str, int], before: Mapping[str, int]) -> Counter[str]:
    return Counter({k: after.get(k, 0) - before.get(k, 0) for k in HIT_KEYS})


def replay(
    backend: CacheBackend,
    cfg: WorkloadConfig,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    steps: int | None = None,
    repeats: int = 1,
    check_against: CacheBackend | None = None,
    instrument: bool = True,
    progress: Callable[[int, int], None] | None = None,
    timer: Callable[[], float] = time.perf_counter,
) -> ReplayResult:
    """Replay `steps` collect steps (default `cfg.steps`) of the workload `repeats` times.

    Each repeat starts with `clear_all` and a reseeded generator, so all repeats see identical
    inputs. One collect step: episode bookkeeping, a `root_step` for all B environments
    (continuing unless the environment's episode just started), `clear_recurrent`, then
    `cfg.num_simulations` `sim_step`s, each expanding one (parent, action) pair per
    environment's tree; an environment whose episode ends gets `clear_env`; every
    `cfg.clear_interval` steps everything is cleared and the correction table redrawn (new
    weights). Only `sim_step` and `root_step` calls are timed (CUDA synchronised around them).

    With `check_against`, every call of the first repeat is also made on that backend and
    the outputs compared (`compare_outputs`); a difference raises `ReplayMismatch`. When
    `instrument` is true, the first repeat runs one extra collect step under
    `DispatchCounter` (not timed) for the per-call sync and allocation counts.
    `progress(done, total)` is called after every step.
    """
    dev = torch.device(device)
    n_steps = cfg.steps if steps is None else steps
    if n_steps <= 0 or repeats <= 0:
        raise ValueError(f"steps and repeats must be positive, got {n_steps}, {repeats}")
    is_cuda = dev.type == "cuda"
    total_progress = n_steps * repeats + (1 if instrument else 0)
    done = 0

    repeat_medians: list[float] = []
    root_medians: list[float] = []
    first: _Collector | None = None
    counts: _Instrumented | None = None
    peak = 0
    checked_steps = 0

    for rep in range(repeats):
        checker = check_against if rep == 0 else None
        backend.clear_all()
        if checker is not None:
            checker.clear_all()
        gc.collect()
        driver = _Driver(cfg, dev, dtype)
        col = _Collector()
        col.peak_storage = backend.storage_bytes()
        baseline = 0
        if is_cuda:
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            baseline = torch.cuda.memory_allocated(dev) - backend.storage_bytes()
        extra = 1 if (rep == 0 and instrument) else 0
        for step in range(n_steps + extra):
            probe = _Instrumented() if step == n_steps else None
            _run_step(
                driver,
                step,
                backend,
                checker,
                col if probe is None else None,
                probe,
                is_cuda,
                dev,
                timer,
            )
            if probe is not None:
                counts = probe
            elif checker is not None:
                checked_steps += 1
            col.peak_storage = max(col.peak_storage, backend.storage_bytes())
            done += 1
            if progress is not None:
                progress(done, total_progress)
        if is_cuda:
            torch.cuda.synchronize(dev)
            peak = max(peak, torch.cuda.max_memory_allocated(dev) - baseline)
        else:
            peak = max(peak, col.peak_storage)
        repeat_medians.append(statistics.median(col.sim_times) * 1e3)
        root_medians.append(statistics.median(col.root_times) * 1e3)
        if first is None:
            first = col
    assert first is not None

    def per_call(values: Iterable[int], calls: int) -> float | None:
        return sum(values) / calls if calls else None

    syncs_sim = syncs_root = alloc_sim = alloc_root = allocs_sim = None
    ops_sim = ops_root = views_sim = None
    if counts is not None:
        ops_sim = per_call([c.ops for c in counts.sims], len(counts.sims))
        views_sim = per_call([c.views for c in counts.sims], len(counts.sims))
        ops_root = float(counts.root.ops)
        # On CPU no op can reveal a host read; on CUDA the dispatch mode already saw it.
        add_reads = not is_cuda
        n_sims = len(counts.sims)
        syncs_sim = per_call(
            [c.syncs for c in counts.sims] + [counts.sim_host_reads if add_reads else 0], n_sims
        )
        syncs_root = float(counts.root.syncs + (counts.root_host_reads if add_reads else 0))
        alloc_sim = per_call([c.alloc_bytes for c in counts.sims], n_sims)
        allocs_sim = per_call([c.allocations for c in counts.sims], n_sims)
        alloc_root = float(counts.root.alloc_bytes)

    result = ReplayResult(
        backend=backend.name,
        config=cfg.name,
        device=str(dev),
        dtype=str(dtype).removeprefix("torch."),
        steps=n_steps,
        repeats=repeats,
        sim_step_ms=statistics.median(repeat_medians),
        sim_step_ms_per_repeat=tuple(repeat_medians),
        root_step_ms=statistics.median(root_medians),
        syncs_per_sim_step=syncs_sim,
        syncs_per_root_step=syncs_root,
        alloc_bytes_per_sim_step=alloc_sim,
        alloc_bytes_per_root_step=alloc_root,
        allocations_per_sim_step=allocs_sim,
        peak_bytes=int(peak),
        peak_source="cuda.max_memory_allocated" if is_cuda else "storage_bytes",
        persistent_bytes=backend.storage_bytes(),
        stored_entries=backend.stored_entries(),
        entry_payload_bytes=cfg.entry_payload_bytes(dtype),
        total_capacity=cfg.total_capacity,
        root_phase_hits=dict(first.root_hits),
        sim_phase_hits=dict(first.sim_hits),
        checked_steps=checked_steps,
        steady_state_bytes=(
            backend.steady_state_bytes() if isinstance(backend, SteadyStateReporter) else None
        ),
        ops_per_sim_step=ops_sim,
        ops_per_root_step=ops_root,
        views_per_sim_step=views_sim,
    )
    _log.info(
        "%s/%s: %.4f ms per sim step (repeats %s)",
        result.backend,
        result.config,
        result.sim_step_ms,
        ", ".join(f"{m:.4f}" for m in repeat_medians),
    )
    if not math.isfinite(result.sim_step_ms):
        raise RuntimeError("no simulation step was timed")
    return result


def merge_results(results: Sequence[ReplayResult]) -> ReplayResult:
    """Combine replays of one backend and workload made one after another (for example
    interleaved with another backend's to share the machine's background load) as if they
    were the repeats of one replay. Instrumented counts, hit counts and `checked_steps` come
    from the first result that has them; peak is the largest, storage (and steady state)
    the last."""
    if not results:
        raise ValueError("nothing to merge")
    first, last = results[0], results[-1]
    keys = {(r.backend, r.config, r.device, r.dtype, r.steps) for r in results}
    if len(keys) != 1:
        raise ValueError(f"results of different runs cannot be merged: {sorted(keys)}")
    medians = tuple(m for r in results for m in r.sim_step_ms_per_repeat)
    probed = next((r for r in results if r.syncs_per_sim_step is not None), first)
    return dataclasses.replace(
        probed,
        repeats=sum(r.repeats for r in results),
        sim_step_ms=statistics.median(medians),
        sim_step_ms_per_repeat=medians,
        root_step_ms=statistics.median(r.root_step_ms for r in results),
        peak_bytes=max(r.peak_bytes for r in results),
        persistent_bytes=last.persistent_bytes,
        steady_state_bytes=last.steady_state_bytes,
        stored_entries=last.stored_entries,
        root_phase_hits=first.root_phase_hits,
        sim_phase_hits=first.sim_phase_hits,
        checked_steps=max(r.checked_steps for r in results),
    )


def _timed_call(
    fn: Callable[[], StepOutput], is_cuda: bool, dev: torch.device, timer: Callable[[], float]
) -> tuple[StepOutput, float]:
    if is_cuda:
        torch.cuda.synchronize(dev)
    start = timer()
    out = fn()
    if is_cuda:
        torch.cuda.synchronize(dev)
    return out, timer() - start


def _run_step(
    driver: _Driver,
    step: int,
    backend: CacheBackend,
    checker: CacheBackend | None,
    col: _Collector | None,
    probe: _Instrumented | None,
    is_cuda: bool,
    dev: torch.device,
    timer: Callable[[], float],
) -> None:
    """One collect step. Timed into `col` when given; counted into `probe` when given."""
    cfg = driver.cfg
    backends = [backend] if checker is None else [backend, checker]
    if step > 0 and step % cfg.clear_interval == 0:
        for b in backends:
            b.clear_all()
        driver.correction = driver.new_correction()

    env_ids = driver.env_ids
    continuing = torch.tensor([p > 0 for p in driver.position], dtype=torch.bool)
    cur = driver.latents()
    fresh = driver.kv(1)
    new = driver.kv(2)
    prev = driver.prev_latents
    corr = driver.correction

    def root_call(b: CacheBackend) -> Callable[[], StepOutput]:
        return lambda: b.root_step(env_ids, continuing, prev, fresh, new, cur, corr)

    hits_before = backend.hit_counts()
    if probe is not None:
        reads = _host_reads(backend)
        with probe.root:
            out = root_call(backend)()
        probe.root_host_reads = _host_reads(backend) - reads
    else:
        out, seconds = _timed_call(root_call(backend), is_cuda, dev, timer)
        if col is not None:
            col.root_times.append(seconds)
    if checker is not None:
        compare_outputs(out, root_call(checker)(), step=step, phase="root")
    hits_mid = backend.hit_counts()
    if col is not None:
        col.root_hits.update(_hit_delta(hits_mid, hits_before))

    for b in backends:
        b.clear_recurrent()
    trees = [_Tree(cur[i]) for i in range(cfg.env_num)]
    for sim in range(cfg.num_simulations):
        uniforms = driver.uniforms()
        candidates = driver.latents()
        fresh = driver.kv(1)
        new = driver.kv(2)
        parents: list[torch.Tensor] = []
        children: list[torch.Tensor] = []
        for i, tree in enumerate(trees):
            node, action = tree.pick(uniforms[i][0], uniforms[i][1], cfg.num_actions)
            child = tree.expand(node, action, candidates[i])
            parents.append(tree.latents[node])
            children.append(tree.latents[child])
        parent_latents = torch.stack(parents)
        child_latents = torch.stack(children)

        def sim_call(
            b: CacheBackend,
            p: torch.Tensor = parent_latents,
            f: torch.Tensor = fresh,
            n: torch.Tensor = new,
            c: torch.Tensor = child_latents,
        ) -> Callable[[], StepOutput]:
            return lambda: b.sim_step(env_ids, p, f, n, c, corr)

        if probe is not None:
            counter = DispatchCounter()
            reads = _host_reads(backend)
            with counter:
                out = sim_call(backend)()
            probe.sims.append(counter)
            probe.sim_host_reads += _host_reads(backend) - reads
        else:
            out, seconds = _timed_call(sim_call(backend), is_cuda, dev, timer)
            if col is not None:
                col.sim_times.append(seconds)
        if checker is not None:
            compare_outputs(out, sim_call(checker)(), step=step, phase="sim", sim=sim)
    if col is not None:
        col.sim_hits.update(_hit_delta(backend.hit_counts(), hits_mid))

    driver.prev_latents = cur
    for env in env_ids:
        driver.position[env] += 1
        if driver.position[env] >= driver.episode_len[env]:
            for b in backends:
                b.clear_env(env)
            driver.position[env] = 0
            driver.episode_len[env] = driver.episode_length()
