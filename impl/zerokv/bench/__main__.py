"""The benchmark's command line: `python -m zerokv.bench [options]`.

This module owns the CLI: argument parsing, choosing and building the backends, the order of
the runs (an optional bit-exact check pass, then the timed legacy and candidate runs, then
optional sweeps), the progress bar, and the output functions, the only place the benchmark
prints. With no arguments it runs a small Atari-shaped replay that finishes in well under a
minute on two CPU cores.
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
from zerokv.bench.zerokv_backend import StageBreakdown, stage_breakdown

_log = logging.getLogger("zerokv.bench")

BackendFactory = Callable[[WorkloadConfig, torch.device, torch.dtype], CacheBackend]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_DEFAULT_STEPS = 20
_DEFAULT_REPEATS = 3
_QUICK_STEPS = 3
#: Steps of the stage breakdown's own replay (at most; fewer when the run is shorter).
_STAGE_STEPS = 5
_CANDIDATE_MODULE = "zerokv.bench.zerokv_backend"


# --------------------------------------------------------------------------- output


def _emit(text: str = "") -> None:
    print(text, flush=True)


def _error(text: str) -> None:
    print(f"zerokv.bench: error: {text}", file=sys.stderr, flush=True)


class _Progress:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, enabled: bool, stream: TextIO = sys.stderr) -> None:
        self.enabled = enabled
        self.stream = stream
        self.label = ""
        self._last = 0.0
        self._drawn = False

    def start(self, label: str) -> Callable[[int, int], None] | None:
        if not self.enabled:
            return None
        self.label = label
        self._last = 0.0
        return self.update

    def update(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < 0.1:
            return
        self._last = now
        width = 30
        filled = width * done // max(total, 1)
        bar = "#" * filled + "." * (width - filled)
        self.stream.write(f"\r{self.label:<32} [{bar}] {done}/{total}")
        self.stream.flush()
        self._drawn = True
        if done >= total:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


# --------------------------------------------------------------------------- arguments


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers: {text!r}") from exc
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers: {text!r}")
    return values


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m zerokv.bench",
        description="Replay UniZero's KV-cache workload on the legacy design and on zerokv.",
    )
    p.add_argument(
        "--config",
        choices=[*PRESETS, "all"],
        default="atari",
        help="workload preset (default: atari)",
    )
    p.add_argument(
        "--quick", action="store_true", help=f"smoke run: {_QUICK_STEPS} steps, 1 repeat"
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="replay each preset's full collect phase (its `steps`, 200)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"collect steps per repeat (default {_DEFAULT_STEPS})",
    )
    p.add_argument(
        "--repeats", type=int, default=None, help=f"timed repeats (default {_DEFAULT_REPEATS})"
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=list(_DTYPES), default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: the cache's tensor ops are small, and "
        "threads contending for a shared machine's cores make timings erratic; 0 keeps "
        "torch's default)",
    )
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument(
        "--markdown",
        metavar="PATH",
        help="write the performance page (method, machine, command, tables, plot link)",
    )
    p.add_argument(
        "--plot",
        metavar="PATH",
        help="write a PNG: time per sim step vs B and vs cl (runs the sweeps)",
    )
    p.add_argument(
        "--envs-sweep",
        type=_int_list,
        metavar="B,B,...",
        help="sweep the number of environments (plot default 2,4,8,16)",
    )
    p.add_argument(
        "--cl-sweep",
        type=_int_list,
        metavar="CL,CL,...",
        help="sweep the (even) context length (plot default 8,16,32,64)",
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
        help="progress bar on stderr (default: when stderr is a terminal)",
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
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    return p


# --------------------------------------------------------------------------- backends


def _legacy(name: str) -> BackendFactory:
    def make(cfg: WorkloadConfig, device: torch.device, dtype: torch.dtype) -> CacheBackend:
        return LegacyBackend(cfg, device, dtype, name=name)

    return make


def _candidate(baseline_only: bool) -> BackendFactory | None:
    """zerokv's backend adapter, or a second legacy backend with --baseline-only."""
    if baseline_only:
        return _legacy("legacy#2")
    try:
        module = importlib.import_module(_CANDIDATE_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != _CANDIDATE_MODULE:
            raise
        return None
    factory: BackendFactory = module.ZeroKVBackend
    return factory


def _release(device: torch.device) -> None:
    # Backends of a finished run must not inflate the next run's memory baseline.
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- runs


@dataclasses.dataclass(frozen=True)
class _Plan:
    steps: int | None
    repeats: int
    device: torch.device
    dtype: torch.dtype
    check: bool


def _interleaved(
    cfg: WorkloadConfig,
    steps: int,
    plan: _Plan,
    legacy: BackendFactory,
    candidate: BackendFactory,
    progress: _Progress,
    *,
    instrument: bool = True,
) -> tuple[list[ReplayResult], list[ReplayResult]]:
    """`plan.repeats` rounds, each replaying both backends once, in alternating order: on a
    shared machine, background load then hits both backends alike."""
    backends = (legacy(cfg, plan.device, plan.dtype), candidate(cfg, plan.device, plan.dtype))
    runs: tuple[list[ReplayResult], list[ReplayResult]] = ([], [])
    bar = progress.start(f"{cfg.name}: {backends[0].name} vs {backends[1].name}")
    total = 2 * plan.repeats * steps + (2 if instrument else 0)
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


def _compare(
    cfg: WorkloadConfig,
    plan: _Plan,
    candidate: BackendFactory,
    progress: _Progress,
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
            progress=progress.start(f"{cfg.name}: check"),
        )
        checked = res.checked_steps
        _release(plan.device)
    legacy_runs, candidate_runs = _interleaved(cfg, steps, plan, legacy, candidate, progress)
    return Comparison(cfg, merge_results(legacy_runs), merge_results(candidate_runs), checked)


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
    for value in values:
        if axis == "env_num":
            cfg = dataclasses.replace(base, env_num=value)
        else:
            cfg = dataclasses.replace(base, context_length=value)
        legacy_runs, candidate_runs = _interleaved(
            cfg, steps, plan, _legacy("legacy"), candidate, progress, instrument=False
        )
        times = [merge_results(legacy_runs).sim_step_ms, merge_results(candidate_runs).sim_step_ms]
        points.append(SweepPoint(base.name, axis, value, times[0], times[1]))
    return points


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(name)s: %(levelname)s: %(message)s",
    )
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        _error("--device cuda but torch.cuda.is_available() is false")
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
    if args.full:
        steps, repeats = args.steps, args.repeats or 1
    elif args.quick:
        steps, repeats = args.steps or _QUICK_STEPS, args.repeats or 1
    else:
        steps, repeats = args.steps or _DEFAULT_STEPS, args.repeats or _DEFAULT_REPEATS
    if (steps is not None and steps <= 0) or repeats <= 0:
        _error("--steps and --repeats must be positive")
        return 2
    plan = _Plan(steps, repeats, device, dtype, args.check)

    candidate = _candidate(args.baseline_only)
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
    try:
        for cfg in configs:
            comparisons.append(_compare(cfg, plan, candidate, progress))
        sweeps: list[SweepPoint] = []
        envs = args.envs_sweep or ([2, 4, 8, 16] if args.plot else None)
        cls = args.cl_sweep or ([8, 16, 32, 64] if args.plot else None)
        if envs:
            sweeps += _sweep(configs[0], "env_num", envs, plan, candidate, progress)
        if cls:
            sweeps += _sweep(configs[0], "context_length", cls, plan, candidate, progress)
        stages: list[StageBreakdown] = []
        if not args.baseline_only and args.stages:
            for cfg in configs:
                progress.start(f"{cfg.name}: stages")
                stage_steps = min(cfg.steps if steps is None else steps, _STAGE_STEPS)
                stages.append(stage_breakdown(cfg, device, dtype, stage_steps))
                _release(device)
    except ReplayMismatch as exc:
        _error(f"outputs differ from the legacy backend: {exc}")
        return 1
    except ValueError as exc:
        _error(str(exc))
        return 2

    for cmp in comparisons:
        _emit(format_comparison(cmp))
        _emit()
    if len(comparisons) > 1:
        _emit(format_summary(comparisons))
        _emit()
    if sweeps:
        _emit(format_sweep(sweeps))
        _emit()
    if stages:
        _emit(format_stages(stages))
        _emit()
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
        write_json(args.json, doc)
        _emit(f"wrote {args.json}")
    if args.markdown:
        sections = [format_comparison(cmp) for cmp in comparisons]
        if len(comparisons) > 1:
            sections.append(format_summary(comparisons))
        if sweeps:
            sections.append(format_sweep(sweeps))
        if stages:
            sections.append(format_stages(stages))
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
        try:
            write_plot(args.plot, sweeps, legacy_name=legacy_name, candidate_name=candidate_name)
        except PlotUnavailable as exc:
            _error(str(exc))
            return 2
        _emit(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
