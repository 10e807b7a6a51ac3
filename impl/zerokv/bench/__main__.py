"""The benchmark's command line: `python -m zerokv.bench [options]`.

This module owns the CLI: argument parsing, the modes (which backend is measured against
the legacy baseline), the order of the runs (an optional bit-exact check pass, then the
timed legacy and candidate runs, then optional sweeps and the stage breakdown), the
progress bars, and the output functions, the only place the benchmark prints. With no
arguments it runs a small Atari-shaped replay that finishes in well under a minute on two
CPU cores.

Adding a mode (another candidate backend): add a `Mode` to `MODES`, and an option that
selects it in `_mode_name`. Adding a metric: a row in `report.format_comparison`.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO

import torch

from zerokv import checks
from zerokv.bench.compiled import (
    CompiledComparison,
    compare_compiled,
    compiled_json,
    format_compiled,
)
from zerokv.bench.legacy import LegacyBackend
from zerokv.bench.report import (
    Comparison,
    PlotUnavailable,
    SweepPoint,
    build_document,
    format_comparison,
    format_stages,
    format_summary,
    format_sweep,
    legend,
    machine_info,
    write_json,
    write_markdown,
    write_plot,
)
from zerokv.bench.workload import (
    PRESETS,
    CacheBackend,
    ReplayMismatch,
    ReplayResult,
    WorkloadConfig,
    merge_results,
    preset,
    replay,
)
from zerokv.bench.zerokv_backend import StageBreakdown, ZeroKVBackend, stage_breakdown

_log = logging.getLogger("zerokv.bench")

BackendFactory = Callable[[WorkloadConfig, torch.device, torch.dtype], CacheBackend]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_DEFAULT_STEPS = 20
_DEFAULT_REPEATS = 3
_QUICK_STEPS = 3
#: Steps of the stage breakdown's own replay (at most; fewer when the run is shorter).
_STAGE_STEPS = 5
#: Rounds of the stage breakdown (`stage_breakdown`'s default).
_STAGE_ROUNDS = 3
_CANDIDATE_MODULE = "zerokv.bench.zerokv_backend"
#: Where output files go when an output option is given without a path (git-ignored).
OUTPUT_DIR = "bench-out"
DEFAULT_JSON = f"{OUTPUT_DIR}/results.json"
DEFAULT_MARKDOWN = f"{OUTPUT_DIR}/performance.md"
DEFAULT_PLOT = f"{OUTPUT_DIR}/sweeps.png"
CUDA_INDEX = "https://download.pytorch.org/whl/cu128"


# --------------------------------------------------------------------------- output


def _emit(text: str = "") -> None:
    print(text, flush=True)


def _error(text: str) -> None:
    print(f"zerokv.bench: error: {text}", file=sys.stderr, flush=True)


class _Progress:
    """Progress bars on stderr: a phase's name on one line, then a bar redrawn at most ten
    times a second with the count, its unit and the seconds spent."""

    def __init__(self, enabled: bool, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = sys.stderr if stream is None else stream
        self.unit = ""
        self._last = 0.0
        self._started = 0.0

    def start(self, label: str, unit: str = "collect steps") -> Callable[[int, int], None] | None:
        """Announce phase `label`; returns the bar's `update(done, total)` (None when off)."""
        if not self.enabled:
            return None
        self.unit = unit
        self._last = 0.0
        self._started = time.monotonic()
        self.stream.write(f"{label}\n")
        self.stream.flush()
        return self.update

    def update(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < 0.1:
            return
        self._last = now
        width = 30
        filled = width * done // max(total, 1)
        bar = "#" * filled + "." * (width - filled)
        self.stream.write(f"\r  [{bar}] {done}/{total} {self.unit}, {now - self._started:.0f} s")
        self.stream.flush()
        if done >= total:
            self.stream.write("\n")
            self.stream.flush()


# --------------------------------------------------------------------------- modes


@dataclasses.dataclass(frozen=True)
class Mode:
    """What is measured against the legacy baseline.

    `backend` is the candidate backend's name (its column in the tables), `describe` the
    legend's line for it; `candidate()` returns its backend factory, or None when it cannot
    be loaded; `stages` says whether zerokv's stage breakdown applies; `device_path()`, if
    given, returns a factory of the candidate on its device index, whose ops are counted
    with the CPU shortcuts off (`Comparison.device_path`).
    """

    name: str
    backend: str
    describe: str
    candidate: Callable[[], BackendFactory | None]
    stages: bool = True
    device_path: Callable[[], BackendFactory | None] | None = None


def _legacy(name: str) -> BackendFactory:
    def make(cfg: WorkloadConfig, device: torch.device, dtype: torch.dtype) -> CacheBackend:
        return LegacyBackend(cfg, device, dtype, name=name)

    return make


def _zerokv() -> BackendFactory | None:
    try:
        module = importlib.import_module(_CANDIDATE_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != _CANDIDATE_MODULE:
            raise
        return None
    factory: BackendFactory = module.ZeroKVBackend
    return factory


def _zerokv_device_path() -> BackendFactory | None:
    def make(cfg: WorkloadConfig, device: torch.device, dtype: torch.dtype) -> CacheBackend:
        return ZeroKVBackend(cfg, device, dtype, index="device")

    return make


MODES: dict[str, Mode] = {
    "zerokv": Mode(
        "zerokv",
        "zerokv",
        "zerokv.CacheManager through its batched API (zerokv/bench/zerokv_backend.py)",
        _zerokv,
        device_path=_zerokv_device_path,
    ),
    "baseline-only": Mode(
        "baseline-only",
        "legacy#2",
        "a second legacy instance (--baseline-only: checks the harness, not zerokv)",
        lambda: _legacy("legacy#2"),
        stages=False,
    ),
}


def _mode_name(args: argparse.Namespace) -> str:
    return "baseline-only" if args.baseline_only else "zerokv"


# --------------------------------------------------------------------------- arguments


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers: {text!r}") from exc
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers: {text!r}")
    return values


_DESCRIPTION = """\
Replay UniZero's KV-cache workload (model-free: random K/V, seeded search trees) through
two backends and compare them: "legacy", a re-creation of LightZero's original cache
design (per-slot objects, per-layer copies, host hashing; zerokv/bench/legacy.py), the
baseline; and "zerokv", zerokv.CacheManager. Every output of zerokv is first checked bit
for bit against legacy's; then both are timed, interleaved."""

_EPILOG = f"""\
output: a legend, then one table per preset (printed as soon as it is measured), a
summary when several presets ran, the sweeps, and the stage breakdown. The column
"zerokv vs legacy" says which way each figure goes: "1.65x faster", "7.06x more".
Notes under a table explain figures that need it (the CPU's sync count, preallocated
memory). A progress bar runs on stderr when it is a terminal.

output files: --json, --markdown and --plot without a path write under {OUTPUT_DIR}/
(git-ignored).

exit status: 0 success; 1 zerokv's outputs differ from legacy's; 2 usage errors
(bad values, --device cuda without CUDA, matplotlib missing for --plot).
See docs/performance.md for how to read the numbers."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m zerokv.bench",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        choices=[*PRESETS, "all"],
        default="atari",
        help="workload preset, or all of them (default: atari: L2 H8 E768 cl8, "
        "8 environments, 25 simulations)",
    )
    p.add_argument(
        "--quick", action="store_true", help=f"smoke run: {_QUICK_STEPS} steps, 1 repeat"
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="replay each preset's full collect phase (its `steps`, 200), 1 repeat",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"collect steps per repeat (default {_DEFAULT_STEPS}); each step is one root "
        "step and N simulation steps",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help=f"timed repeats per backend, interleaved (default {_DEFAULT_REPEATS})",
    )
    p.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="where the caches live (default cpu); cuda needs a CUDA build of torch "
        "(docs/quickstart.md)",
    )
    p.add_argument(
        "--dtype",
        choices=list(_DTYPES),
        default="float32",
        help="dtype of the cached keys and values (default float32, UniZero's)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the replay's random inputs (latents, K/V, search trees, episode "
        "lengths; default 0); both backends get the same inputs",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: the cache's tensor ops are small, and "
        "threads contending for a shared machine's cores make timings erratic; 0 keeps "
        "torch's default)",
    )
    p.add_argument(
        "--json",
        metavar="PATH",
        nargs="?",
        const=DEFAULT_JSON,
        help=f"write the results as JSON (default path {DEFAULT_JSON})",
    )
    p.add_argument(
        "--markdown",
        metavar="PATH",
        nargs="?",
        const=DEFAULT_MARKDOWN,
        help="write the performance page (method, machine, command, tables, plot link; "
        f"default path {DEFAULT_MARKDOWN})",
    )
    p.add_argument(
        "--plot",
        metavar="PATH",
        nargs="?",
        const=DEFAULT_PLOT,
        help="write a PNG of time per sim step vs B and vs cl; runs the sweeps, needs "
        f"matplotlib (default path {DEFAULT_PLOT})",
    )
    p.add_argument(
        "--envs-sweep",
        type=_int_list,
        metavar="B,B,...",
        help="sweep the number of environments (with --plot: 2,4,8,16)",
    )
    p.add_argument(
        "--cl-sweep",
        type=_int_list,
        metavar="CL,CL,...",
        help="sweep the (even) context length (with --plot: 8,16,32,64)",
    )
    p.add_argument(
        "--check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="first compare every output bit-exactly against legacy (default on)",
    )
    p.add_argument(
        "--stages",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time zerokv's simulation step stage by stage, and the copy floor (default on)",
    )
    p.add_argument(
        "--baseline-only",
        action="store_true",
        help="development: compare legacy against a second legacy instance",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars on stderr (default: when stderr is a terminal)",
    )
    p.add_argument(
        "--adapter",
        action="store_true",
        help="instead: time zerokv.lightzero.KVCacheManager per call against a re-creation "
        "of LightZero's KVCacheManager (zerokv.bench.adapter; --steps, --repeats, --json)",
    )
    p.add_argument(
        "--model",
        choices=["unizero"],
        default=None,
        help="instead: time LightZero's real UniZero model with LightZero's caching and with "
        "zerokv.lightzero.attach, interleaved (zerokv.bench.unizero; --shape, --steps, "
        "--repeats, --json; needs lightzero installed)",
    )
    p.add_argument(
        "--shape",
        default="cartpole,atari",
        help="with --model: comma-separated model shapes, cartpole and/or atari (default both)",
    )
    p.add_argument(
        "--compiled",
        action="store_true",
        help="also time zerokv with compiled kernels (CacheConfig(compile=True)) beside the "
        "eager ones, with kernel launches per simulation step and the compile time "
        "(zerokv.bench.compiled; always on with --device cuda)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    return p


def _cuda_problem() -> str | None:
    """Why `--device cuda` cannot run here, with what to do about it (None: it can)."""
    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return (
            f"--device cuda, but this torch ({torch.__version__}) is a CPU-only build. "
            "Install a CUDA build of torch, for example with the nox sessions:\n"
            f'  ZEROKV_TORCH="torch=={torch.__version__.split("+")[0]}+cu128" '
            f'PIP_EXTRA_INDEX_URL="{CUDA_INDEX}" nox -s bench -- --device cuda\n'
            "(pick the index of your CUDA version: docs/quickstart.md, "
            "'Installing with a CUDA torch')"
        )
    return (
        f"--device cuda, but torch {torch.__version__} (built for CUDA {torch.version.cuda}) "
        "sees no GPU: check the driver (nvidia-smi) and CUDA_VISIBLE_DEVICES"
    )


# --------------------------------------------------------------------------- runs


def _release(device: torch.device) -> None:
    # Backends of a finished run must not inflate the next run's memory baseline.
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@dataclasses.dataclass(frozen=True)
class _Plan:
    steps: int | None
    repeats: int
    device: torch.device
    dtype: torch.dtype
    check: bool


def interleaved_total(repeats: int, steps: int, instrument: bool) -> int:
    """Collect steps `_interleaved` replays: both backends, every repeat, plus one
    instrumented (untimed) step per backend in the first round."""
    return 2 * repeats * steps + (2 if instrument else 0)


def _interleaved(
    cfg: WorkloadConfig,
    steps: int,
    plan: _Plan,
    legacy: BackendFactory,
    candidate: BackendFactory,
    progress: _Progress,
    *,
    label: str,
    instrument: bool = True,
) -> tuple[list[ReplayResult], list[ReplayResult]]:
    """`plan.repeats` rounds, each replaying both backends once, in alternating order: on a
    shared machine, background load then hits both backends alike."""
    backends = (legacy(cfg, plan.device, plan.dtype), candidate(cfg, plan.device, plan.dtype))
    runs: tuple[list[ReplayResult], list[ReplayResult]] = ([], [])
    extra = " (+1 counted step each)" if instrument else ""
    bar = progress.start(
        f"{label}: timing {backends[0].name} and {backends[1].name}, "
        f"{plan.repeats} repeats x {steps} steps each{extra}"
    )
    total = interleaved_total(plan.repeats, steps, instrument)
    done = 0

    def tick(step_done: int, step_total: int) -> None:
        if bar is not None:
            bar(min(done + step_done, total), total)

    for rnd in range(plan.repeats):
        for which in (0, 1) if rnd % 2 == 0 else (1, 0):
            result = replay(
                backends[which],
                cfg,
                device=plan.device,
                dtype=plan.dtype,
                steps=steps,
                instrument=instrument and rnd == 0,
                progress=tick,
            )
            runs[which].append(result)
            done += steps + (1 if instrument and rnd == 0 else 0)
    del backends
    _release(plan.device)
    return runs


#: Collect steps of the untimed replay that counts the device path's ops.
_DEVICE_PATH_STEPS = 2


def _device_path_counts(
    cfg: WorkloadConfig, plan: _Plan, factory: BackendFactory, progress: _Progress, label: str
) -> ReplayResult:
    """The device path's op counts: a short replay, instrumented, CPU shortcuts off."""
    with checks.shortcuts(False):
        result = replay(
            factory(cfg, plan.device, plan.dtype),
            cfg,
            device=plan.device,
            dtype=plan.dtype,
            steps=_DEVICE_PATH_STEPS,
            instrument=True,
            progress=progress.start(f"{label}: counting the device path's ops"),
        )
    _release(plan.device)
    return result


def _compare(
    cfg: WorkloadConfig,
    plan: _Plan,
    candidate: BackendFactory,
    progress: _Progress,
    label: str,
    device_path: BackendFactory | None = None,
) -> Comparison:
    legacy = _legacy("legacy")
    steps = cfg.steps if plan.steps is None else plan.steps
    checked = 0
    if plan.check:
        res = replay(
            candidate(cfg, plan.device, plan.dtype),
            cfg,
            device=plan.device,
            dtype=plan.dtype,
            steps=steps,
            check_against=legacy(cfg, plan.device, plan.dtype),
            instrument=False,
            progress=progress.start(f"{label}: checking every output bit for bit, {steps} steps"),
        )
        checked = res.checked_steps
        _release(plan.device)
    legacy_runs, candidate_runs = _interleaved(
        cfg, steps, plan, legacy, candidate, progress, label=label
    )
    counted = None
    if device_path is not None:
        counted = _device_path_counts(cfg, plan, device_path, progress, label)
    return Comparison(
        cfg, merge_results(legacy_runs), merge_results(candidate_runs), checked, counted
    )


def _sweep(
    base: WorkloadConfig,
    axis: str,
    values: Sequence[int],
    plan: _Plan,
    candidate: BackendFactory,
    progress: _Progress,
) -> list[SweepPoint]:
    points = []
    steps = base.steps if plan.steps is None else plan.steps
    symbol = "B" if axis == "env_num" else "cl"
    for i, value in enumerate(values, 1):
        if axis == "env_num":
            cfg = dataclasses.replace(base, env_num=value)
        else:
            cfg = dataclasses.replace(base, context_length=value)
        legacy_runs, candidate_runs = _interleaved(
            cfg,
            steps,
            plan,
            _legacy("legacy"),
            candidate,
            progress,
            label=f"{base.name} sweep {symbol}={value} (point {i} of {len(values)})",
            instrument=False,
        )
        times = [merge_results(legacy_runs).sim_step_ms, merge_results(candidate_runs).sim_step_ms]
        points.append(SweepPoint(base.name, axis, value, times[0], times[1]))
    return points


def _steps_and_repeats(args: argparse.Namespace) -> tuple[int | None, int]:
    if args.full:
        return args.steps, args.repeats or 1
    if args.quick:
        return args.steps or _QUICK_STEPS, args.repeats or 1
    return args.steps or _DEFAULT_STEPS, args.repeats or _DEFAULT_REPEATS


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(name)s: %(levelname)s: %(message)s",
    )
    device = torch.device(args.device)
    if device.type == "cuda":
        problem = _cuda_problem()
        if problem is not None:
            _error(problem)
            return 2
    dtype = _DTYPES[args.dtype]
    if args.threads < 0:
        _error("--threads must be >= 0")
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model:
        from zerokv.bench.unizero import main as model_main

        return model_main(
            shapes=[s for s in args.shape.split(",") if s],
            steps=args.steps,
            repeats=args.repeats,
            threads=args.threads,
            json_path=args.json,
            emit=_emit,
            error=_error,
        )
    if args.adapter:
        from zerokv.bench.adapter import main as adapter_main

        return adapter_main(
            steps=args.steps,
            repeats=args.repeats,
            seed=args.seed,
            device=device,
            dtype=dtype,
            json_path=args.json,
            emit=_emit,
        )
    steps, repeats = _steps_and_repeats(args)
    if (steps is not None and steps <= 0) or repeats <= 0:
        _error("--steps and --repeats must be positive")
        return 2
    plan = _Plan(steps, repeats, device, dtype, args.check)

    mode = MODES[_mode_name(args)]
    candidate = mode.candidate()
    device_path = None if mode.device_path is None else mode.device_path()
    if candidate is None:
        _error(
            f"{_CANDIDATE_MODULE} is not available yet; "
            "pass --baseline-only to compare legacy against a second legacy instance"
        )
        return 2
    names = list(PRESETS) if args.config == "all" else [args.config]
    configs = [dataclasses.replace(preset(n), seed=args.seed) for n in names]
    show = sys.stderr.isatty() if args.progress is None else bool(args.progress)
    progress = _Progress(show)

    started = time.perf_counter()
    comparisons: list[Comparison] = []
    sweeps: list[SweepPoint] = []
    stages: list[StageBreakdown] = []
    compiled: list[CompiledComparison] = []
    sections: list[str] = []

    def section(text: str) -> None:
        sections.append(text)
        _emit(text)
        _emit()

    _emit(legend("legacy", mode.backend, mode.describe))
    _emit()
    try:
        for n, cfg in enumerate(configs, 1):
            label = cfg.name if len(configs) == 1 else f"{cfg.name} (preset {n} of {len(configs)})"
            comparisons.append(_compare(cfg, plan, candidate, progress, label, device_path))
            section(format_comparison(comparisons[-1]))
        if len(comparisons) > 1:
            section(format_summary(comparisons))
        envs = args.envs_sweep or ([2, 4, 8, 16] if args.plot else None)
        cls = args.cl_sweep or ([8, 16, 32, 64] if args.plot else None)
        if envs:
            sweeps += _sweep(configs[0], "env_num", envs, plan, candidate, progress)
        if cls:
            sweeps += _sweep(configs[0], "context_length", cls, plan, candidate, progress)
        if sweeps:
            section(format_sweep(sweeps))
        if mode.stages and args.stages:
            for cfg in configs:
                stage_steps = min(cfg.steps if steps is None else steps, _STAGE_STEPS)
                bar = progress.start(
                    f"{cfg.name}: zerokv stage by stage and the copy floor, "
                    f"{_STAGE_ROUNDS} rounds x 2 backends x {stage_steps} steps"
                )
                stages.append(
                    stage_breakdown(
                        cfg, device, dtype, stage_steps, rounds=_STAGE_ROUNDS, progress=bar
                    )
                )
                _release(device)
            section(format_stages(stages))
        if mode.stages and (args.compiled or device.type == "cuda"):
            for cfg in configs:
                bar = progress.start(
                    f"{cfg.name}: legacy, zerokv eager and zerokv compiled "
                    "(compiling first: tens of seconds)"
                )
                if bar is not None:
                    bar(0, 1)
                compiled.append(
                    compare_compiled(
                        cfg,
                        device=device,
                        dtype=dtype,
                        steps=cfg.steps if steps is None else steps,
                        repeats=repeats,
                    )
                )
                if bar is not None:
                    bar(1, 1)
                _release(device)
            legacy_ops = {
                c.config.name: c.legacy.ops_per_sim_step
                for c in comparisons
                if c.legacy.ops_per_sim_step is not None
            }
            section(format_compiled(compiled, legacy_ops))
    except ReplayMismatch as exc:
        _error(f"outputs differ from the legacy backend: {exc}")
        return 1
    except ValueError as exc:
        _error(str(exc))
        return 2
    _emit(f"total wall time {time.perf_counter() - started:.1f} s")

    legacy_name = comparisons[0].legacy.backend
    candidate_name = comparisons[0].candidate.backend
    if args.json:
        doc = build_document(
            machine_info(device, dtype),
            comparisons,
            sweeps,
            {"legacy": legacy_name, "zerokv": candidate_name},
            stages,
        )
        doc["compiled"] = {c.config: compiled_json(c) for c in compiled}
        write_json(args.json, doc)
        _emit(f"wrote {args.json}")
    if args.markdown:
        plot_ref = None
        if args.plot:
            plot_ref = os.path.relpath(args.plot, os.path.dirname(os.path.abspath(args.markdown)))
        write_markdown(
            args.markdown,
            command="python -m zerokv.bench "
            + " ".join(argv if argv is not None else sys.argv[1:]),
            machine=machine_info(device, dtype),
            sections=sections,
            plot=plot_ref,
        )
        _emit(f"wrote {args.markdown}")
    if args.plot:
        bar = progress.start(f"writing the plot {args.plot}", unit="plot")
        if bar is not None:
            bar(0, 1)
        try:
            write_plot(
                args.plot,
                sweeps,
                legacy_name=legacy_name,
                candidate_name=candidate_name,
                device=str(device),
                dtype=args.dtype,
                steps=comparisons[0].legacy.steps,
                repeats=comparisons[0].legacy.repeats,
            )
        except PlotUnavailable as exc:
            _error(str(exc))
            return 2
        if bar is not None:
            bar(1, 1)
        _emit(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
