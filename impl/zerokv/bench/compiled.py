"""The compiled hot path, measured: eager and compiled side by side, kernels per simulation
step, compile time (``python -m zerokv.bench --compiled``; on by default with ``--device
cuda``).

* ``SimStep`` drives one manager through the simulation step the op budget is defined on
  (keys of the parents, ``lookup_many``, ``gather_reserve``, the model's write of its new
  tokens, ``with_length``, keys of the children, ``store_recurrent_batch``), at a workload
  config's shape, on the device path (the index every compiled cache uses).
* ``count_launches`` runs a callable under ``torch.profiler`` and counts what it launches
  (on CUDA the CUDA runtime's launch calls are the count: kernels, graph replays, copies):
  the kernels inductor generated (CPU: ``cpp_fused_*``, recorded because
  ``torch._inductor.config.cpp.enable_kernel_profile`` is on while they compile; CUDA:
  ``triton_*``), the aten ops compiled code calls (inductor's extern kernels, such as
  ``index_put_``), and the aten ops that compute outside any compiled region (the code
  around the kernels). View and metadata ops launch nothing and are not counted.
* ``compare_compiled`` times the legacy re-creation, zerokv with eager kernels and zerokv
  with compiled kernels on the same replay, interleaved, after checking the compiled
  backend's outputs bit for bit against the legacy backend (the check's replay also
  compiles every kernel signature the replay needs: its wall time is reported as the
  compile time).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.autograd.profiler_util import FunctionEvent

from zerokv import checks
from zerokv.bench.legacy import LegacyBackend
from zerokv.bench.workload import ReplayResult, WorkloadConfig, merge_results, replay
from zerokv.bench.zerokv_backend import ZeroKVBackend
from zerokv.entry import Correction
from zerokv.manager import CacheConfig, CacheManager

__all__ = [
    "CompiledComparison",
    "Launches",
    "SimStep",
    "compare_compiled",
    "compiled_json",
    "count_launches",
    "format_compiled",
    "sim_step_launches",
]

#: Aten ops that only make views or change metadata: no kernel runs for them.
_NO_KERNEL = frozenset(
    {
        "alias",
        "as_strided",
        "detach",
        "empty",
        "empty_strided",
        "expand",
        "lift_fresh",
        "permute",
        "reshape",
        "_reshape_alias",
        "resolve_conj",
        "resolve_neg",
        "select",
        "slice",
        "squeeze",
        "t",
        "transpose",
        "unbind",
        "unsqueeze",
        "_unsafe_view",
        "view",
    }
)


@dataclass(frozen=True)
class Launches:
    """What one call launched (``count_launches``)."""

    #: Kernels inductor generated, run by compiled code.
    generated: int
    #: Aten ops compiled code called (inductor's extern kernels).
    extern: int
    #: Aten ops that computed outside compiled regions (the code around the kernels).
    eager: int
    #: Compiled graphs called.
    graphs: int
    #: On CUDA: the launches the CUDA runtime saw (kernels, CUDA graphs, copies and fills;
    #: a replayed CUDA graph is one launch). None on the CPU.
    runtime: int | None = None

    @property
    def total(self) -> int:
        """Every launch: the CUDA runtime's count on CUDA, else generated + extern + eager."""
        if self.runtime is not None:
            return self.runtime
        return self.generated + self.extern + self.eager


def _is_generated(name: str) -> bool:
    return "cpp_fused_" in name or name.startswith("triton_")


#: CUDA runtime calls that start work on the GPU.
_CUDA_LAUNCHES = frozenset(
    {
        "cudaLaunchKernel",
        "cudaLaunchKernelExC",
        "cuLaunchKernel",
        "cuLaunchKernelEx",
        "cudaGraphLaunch",
        "cudaMemcpyAsync",
        "cudaMemsetAsync",
    }
)


def count_launches(fn: Callable[[], object], cuda: bool = False) -> Launches:
    """Run ``fn`` once under the profiler and count its launches (module docstring);
    ``cuda``: also count what the CUDA runtime launched (``Launches.runtime``)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        fn()
        if cuda:
            torch.cuda.synchronize()
    generated = extern = eager = graphs = 0
    for event in prof.events():
        name = event.name
        if name.startswith("Torch-Compiled Region"):
            graphs += 1
        elif _is_generated(name):
            generated += 1
        elif name.startswith("aten::") and not _under_aten(event):
            if name.removeprefix("aten::") in _NO_KERNEL:
                continue
            if _in_compiled_region(event):
                extern += 1
            else:
                eager += 1
    runtime = None
    if cuda:
        runtime = sum(1 for event in prof.events() if event.name in _CUDA_LAUNCHES)
    return Launches(generated, extern, eager, graphs, runtime)


def _under_aten(event: FunctionEvent) -> bool:
    """Whether an aten op is called by another aten op (it is then part of that one)."""
    return _has_ancestor(event, "aten::")


def _in_compiled_region(event: FunctionEvent) -> bool:
    return _has_ancestor(event, "Torch-Compiled Region")


def _has_ancestor(event: FunctionEvent, prefix: str) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith(prefix):
            return True
        parent = parent.cpu_parent
    return False


class SimStep:
    """One manager at ``cfg``'s shape, with root entries stored and one simulation step
    run, ready to run more (module docstring). ``compile``: compiled kernels."""

    def __init__(
        self,
        cfg: WorkloadConfig,
        *,
        compile: bool,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        envs: int | None = None,
        num_simulations: int | None = None,
    ) -> None:
        env_num = cfg.env_num if envs is None else envs
        self.manager = CacheManager(
            CacheConfig.legacy(
                env_num=env_num,
                num_layers=cfg.num_layers,
                num_heads=cfg.num_heads,
                head_dim=cfg.head_dim,
                context_length=cfg.context_length,
                num_simulations=cfg.num_simulations if num_simulations is None else num_simulations,
                device=str(device),
                dtype=dtype,
                index="device",
                compile=compile,
            )
        )
        dev = self.manager.device
        gen = torch.Generator().manual_seed(0)
        self.env_ids = list(range(env_num))
        table = torch.randn(*cfg.correction_shape, generator=gen, dtype=dtype)
        self.correction = Correction(table.to(dev))
        self.latents = [
            torch.randn(env_num, cfg.embed_dim, generator=gen, dtype=dtype).to(dev)
            for _ in range(3)
        ]
        shape = (cfg.num_layers, 2, env_num, cfg.num_heads, 1, cfg.head_dim)
        self.tokens = torch.randn(*shape, generator=gen, dtype=dtype).to(dev)
        mgr = self.manager
        keys, fps = mgr.keys_of(self.latents[0])
        found = mgr.lookup_many(self.env_ids, keys, fps, tiers="root")
        mgr.store_root_batch(self.env_ids, keys, mgr.gather_reserve(found, 1), self.correction, fps)
        self.run(self.latents[0], self.latents[1])

    def run(self, parents: torch.Tensor, children: torch.Tensor) -> None:
        """One simulation step: parents looked up, the batch built and stored as children."""
        mgr = self.manager
        keys, fps = mgr.keys_of(parents)
        found = mgr.lookup_many(self.env_ids, keys, fps)
        batch = mgr.gather_reserve(found, 1)
        batch.kv[:, :, :, :, -1:, :] = self.tokens  # the model writes its new token
        batch = batch.with_length(found.tier == 0, 1)
        child_keys, child_fps = mgr.keys_of(children)
        mgr.store_recurrent_batch(self.env_ids, child_keys, batch, self.correction, child_fps)

    def step(self) -> None:
        """The measured step (the same parents and children every time)."""
        self.run(self.latents[1], self.latents[2])


def sim_step_launches(
    cfg: WorkloadConfig, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> Launches:
    """Launches of one compiled simulation step at ``cfg``'s shape.

    Compiled code made before is dropped (``torch._dynamo.reset``) so that the kernels
    compile with the profiler's marks, and dropped again afterwards (the marks cost time).
    """
    torch._dynamo.reset()
    try:
        # The CPU shortcuts off: the code path CUDA runs (the compiled kernels take it anyway).
        profiled = torch._inductor.config.patch({"cpp.enable_kernel_profile": True})
        with profiled, checks.shortcuts(False):
            driver = SimStep(cfg, compile=True, device=device, dtype=dtype)
            for _ in range(3):  # compiled; on CUDA, the CUDA graphs recorded as well
                driver.step()
            return count_launches(driver.step, cuda=torch.device(device).type == "cuda")
    finally:
        torch._dynamo.reset()


@dataclass(frozen=True)
class CompiledComparison:
    """Legacy, zerokv eager and zerokv compiled on one replay (``compare_compiled``)."""

    config: str
    legacy: ReplayResult
    eager: ReplayResult
    compiled: ReplayResult
    #: Wall time of the compiled backend's first (checking) replay: mostly compilation.
    compile_s: float
    #: Steps whose every output the compiled backend matched bit for bit.
    checked_steps: int
    launches: Launches


def compare_compiled(
    cfg: WorkloadConfig,
    *,
    device: torch.device,
    dtype: torch.dtype,
    steps: int,
    repeats: int,
) -> CompiledComparison:
    """The three backends on ``steps`` collect steps, ``repeats`` interleaved rounds."""
    launches = sim_step_launches(cfg, device, dtype)
    backends = (
        LegacyBackend(cfg, device, dtype),
        ZeroKVBackend(cfg, device, dtype),
        ZeroKVBackend(cfg, device, dtype, compile=True),
    )
    started = time.perf_counter()
    check = replay(
        backends[2],
        cfg,
        device=device,
        dtype=dtype,
        steps=steps,
        check_against=LegacyBackend(cfg, device, dtype),
        instrument=False,
    )
    compile_s = time.perf_counter() - started
    runs: tuple[list[ReplayResult], ...] = ([], [], [])
    for rnd in range(repeats):
        order = (0, 1, 2) if rnd % 2 == 0 else (2, 1, 0)
        for which in order:
            runs[which].append(
                replay(
                    backends[which],
                    cfg,
                    device=device,
                    dtype=dtype,
                    steps=steps,
                    instrument=False,
                )
            )
    legacy, eager, compiled = (merge_results(r) for r in runs)
    return CompiledComparison(
        cfg.name, legacy, eager, compiled, compile_s, check.checked_steps, launches
    )


def format_compiled(results: list[CompiledComparison], legacy_ops: dict[str, float]) -> str:
    """The side-by-side table (``legacy_ops``: the legacy ops per simulation step, per
    config, from the main comparison, when it ran)."""
    lines = [
        "Eager vs compiled kernels (median ms per call; ratio = legacy / zerokv)",
        "",
        "| config | legacy sim | eager sim | compiled sim | eager x | compiled x "
        "| legacy root | compiled root | kernels / sim step [k] | compile s [t] |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lo, ea, co = r.legacy, r.eager, r.compiled
        k = r.launches
        ops = legacy_ops.get(r.config)
        kernels = f"{k.total} ({k.generated}+{k.extern}+{k.eager})"
        if k.runtime is not None:
            kernels = f"{k.total} CUDA launches ({k.graphs} graphs)"
        if ops is not None:
            kernels += f" vs {ops:.0f}"
        lines.append(
            f"| {r.config} | {lo.sim_step_ms:.3f} | {ea.sim_step_ms:.3f} | {co.sim_step_ms:.3f} "
            f"| {lo.sim_step_ms / ea.sim_step_ms:.2f} | {lo.sim_step_ms / co.sim_step_ms:.2f} "
            f"| {lo.root_step_ms:.3f} | {co.root_step_ms:.3f} | {kernels} | {r.compile_s:.1f} |"
        )
    lines += [
        "",
        "[k] kernel launches of one compiled simulation step (device path, profiler): "
        "generated + extern (aten ops compiled code calls) + eager (aten ops around the "
        "kernels: the model's write, with_length); 'vs': legacy's torch ops per step.",
        "[t] wall time of the compiled backend's first replay, outputs checked bit for bit "
        f"against legacy ({', '.join(str(r.checked_steps) for r in results)} steps): "
        "mostly compilation (less when inductor's on-disk cache holds kernels of earlier "
        "runs).",
    ]
    return "\n".join(lines)


def compiled_json(r: CompiledComparison) -> dict[str, object]:
    """``r`` for the benchmark's JSON (``compiled.<config>``)."""
    return {
        "sim_step_ms": {
            "legacy": r.legacy.sim_step_ms,
            "eager": r.eager.sim_step_ms,
            "compiled": r.compiled.sim_step_ms,
        },
        "root_step_ms": {
            "legacy": r.legacy.root_step_ms,
            "eager": r.eager.root_step_ms,
            "compiled": r.compiled.root_step_ms,
        },
        "speedup_vs_legacy": {
            "eager": r.legacy.sim_step_ms / r.eager.sim_step_ms,
            "compiled": r.legacy.sim_step_ms / r.compiled.sim_step_ms,
        },
        "launches_per_sim_step": {
            "total": r.launches.total,
            "generated": r.launches.generated,
            "extern": r.launches.extern,
            "eager": r.launches.eager,
            "graphs": r.launches.graphs,
            "cuda_runtime": r.launches.runtime,
        },
        "compile_s": r.compile_s,
        "checked_steps": r.checked_steps,
    }
