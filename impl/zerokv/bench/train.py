"""``python -m zerokv.bench.train``: what a LightZero user feels in training.

LightZero 0.2.0's own ``train_unizero`` on the CartPole zoo config (CPU, absolute
positions), once with LightZero's caches and once under ``zerokv.lightzero.apply()``,
the two alternating over ``--runs`` pairs of runs of ``--cycles`` collect/train cycles each
(an evaluation before each cycle). Each run is a fresh subprocess (``--one``), so its peak
memory is its own and no state carries over. Per run it measures, from hooks around
LightZero's own calls:

* seconds per collected environment step (``_forward_collect`` rows over the collector's
  ``collect`` time);
* seconds per evaluation step (``_forward_eval`` rows over the evaluator's ``eval`` time);
* seconds per reanalysed sample (the replay buffer's ``_compute_target_policy_reanalyzed``
  time over its samples; reanalysis runs on LightZero's target model in both runs);
* seconds per learner iteration (``BaseLearner.train``, sampling excluded);
* peak resident memory of the process.

The report gives medians and ranges over the runs. LightZero's C++ tree breaks ties with a
clock-seeded ``rand()``, so the two runs take different episodes: compare the per-step
figures, not totals.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["main", "one_run"]

#: The per-run figures, in report order.
FIGURES = (
    ("collect_s_per_env_step", "s per collected env step"),
    ("eval_s_per_env_step", "s per evaluation step"),
    ("reanalysis_s_per_sample", "s per reanalysed sample"),
    ("learner_s_per_iteration", "s per learner iteration"),
    ("peak_rss_mib", "peak memory (MiB)"),
)


def _config(args: argparse.Namespace) -> tuple[Any, Any]:
    zoo = importlib.import_module("zoo.classic_control.cartpole.config.cartpole_unizero_config")
    cfg, create = copy.deepcopy(zoo.main_config), copy.deepcopy(zoo.create_config)
    p, wm = cfg.policy, cfg.policy.model.world_model_cfg
    wm.rotary_emb = False  # 0.2.0's rotary config crashes in train_unizero (np.float32)
    wm.device, p.device, p.cuda = "cpu", "cpu", False
    p.batch_size = args.batch_size
    p.update_per_collect = args.updates
    p.reanalyze_ratio = args.reanalyze_ratio
    p.eval_freq = 1
    p.train_start_after_envsteps = 0
    cfg.env.manager.type = create.env_manager.type = "base"
    cfg.exp_name = "exp"
    return cfg, create


class _Clock:
    """Seconds and counts accumulated by hooks around LightZero's methods."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def wrap(
        self, owner: Any, name: str, label: str, count: Callable[..., int] | None = None
    ) -> None:
        real = getattr(owner, name)
        clock = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            out = real(*args, **kwargs)
            clock.seconds[label] = clock.seconds.get(label, 0.0) + time.perf_counter() - start
            if count is not None:
                clock.counts[label] = clock.counts.get(label, 0) + count(*args, **kwargs)
            return out

        setattr(owner, name, timed)

    def rate(self, seconds: str, count: str) -> float:
        n = self.counts.get(count, 0)
        return self.seconds.get(seconds, 0.0) / n if n else float("nan")


def one_run(args: argparse.Namespace) -> dict[str, float]:
    """One ``train_unizero`` run in this process (``--one``); its figures."""
    from zerokv.testing import lightzero_policy as lp

    lp.stub_tensorboard()
    import numpy as np

    if not hasattr(np, "bool8"):  # gym 0.25 on numpy 2
        np.bool8 = np.bool_  # type: ignore[attr-defined]
    unizero = importlib.import_module("lzero.policy.unizero").UniZeroPolicy
    collector = importlib.import_module("lzero.worker").MuZeroCollector
    evaluator = importlib.import_module("lzero.worker").MuZeroEvaluator
    buffer = importlib.import_module("lzero.mcts").UniZeroGameBuffer
    learner = importlib.import_module("ding.worker").BaseLearner
    clock = _Clock()
    clock.wrap(unizero, "_forward_collect", "collect rows", lambda self, data, *a, **k: len(data))
    clock.wrap(unizero, "_forward_eval", "eval rows", lambda self, data, *a, **k: len(data))
    clock.wrap(collector, "collect", "collect")
    clock.wrap(evaluator, "eval", "eval")
    clock.wrap(learner, "train", "train", lambda *a, **k: 1)
    clock.wrap(
        buffer,
        "_compute_target_policy_reanalyzed",
        "reanalysis",
        lambda self, context, *a, **k: len(context[0]) if context else 0,
    )
    train = importlib.import_module("lzero.entry").train_unizero
    cfg, create = _config(args)
    applied = None
    if args.zerokv:
        from zerokv.lightzero import apply

        applied = apply()
    start = time.perf_counter()
    try:
        train([cfg, create], seed=args.seed, max_train_iter=args.cycles * args.updates)
    finally:
        if applied is not None:
            applied.revert()
    return {
        "wall_s": time.perf_counter() - start,
        "collect_s_per_env_step": clock.rate("collect", "collect rows"),
        "eval_s_per_env_step": clock.rate("eval", "eval rows"),
        "reanalysis_s_per_sample": clock.rate("reanalysis", "reanalysis"),
        "learner_s_per_iteration": clock.rate("train", "train"),
        "collected_env_steps": clock.counts.get("collect rows", 0),
        "reanalysed_samples": clock.counts.get("reanalysis", 0),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m zerokv.bench.train",
        description="LightZero's train_unizero with and without zerokv, interleaved runs",
    )
    parser.add_argument("--runs", type=int, default=3, help="pairs of runs (default 3)")
    parser.add_argument("--cycles", type=int, default=3, help="collect/train cycles per run")
    parser.add_argument("--updates", type=int, default=4, help="learner iterations per cycle")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--reanalyze-ratio", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the runs and medians here")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--zerokv", action="store_true", help=argparse.SUPPRESS)
    return parser


def _child(args: argparse.Namespace, zerokv: bool) -> dict[str, float]:
    command = [
        sys.executable, "-m", "zerokv.bench.train", "--one",
        "--cycles", str(args.cycles), "--updates", str(args.updates),
        "--batch-size", str(args.batch_size), "--reanalyze-ratio", str(args.reanalyze_ratio),
        "--seed", str(args.seed),
    ]  # fmt: skip
    if zerokv:
        command.append("--zerokv")
    with tempfile.TemporaryDirectory(prefix="zerokv-train-") as here:
        done = subprocess.run(command, cwd=here, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"a training run failed:\n{done.stderr[-3000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _table(runs: dict[str, list[dict[str, float]]]) -> str:
    lines = [
        "| figure | LightZero (median, range) | zerokv (median, range) | LightZero / zerokv |",
        "|---|---:|---:|---:|",
    ]
    for key, label in FIGURES:
        cells = []
        medians = []
        for which in ("lightzero", "zerokv"):
            values = [r[key] for r in runs[which]]
            m = statistics.median(values)
            medians.append(m)
            cells.append(f"{m:.4g} ({min(values):.4g} - {max(values):.4g})")
        ratio = medians[0] / medians[1] if medians[1] else float("nan")
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {ratio:.2f}x |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.one:
        os.environ.setdefault("PYTHONWARNINGS", "ignore")
        out = one_run(args)
        sys.stdout.write("\n" + json.dumps(out) + "\n")
        return 0
    runs: dict[str, list[dict[str, float]]] = {"lightzero": [], "zerokv": []}
    for run in range(args.runs):
        order = (False, True) if run % 2 == 0 else (True, False)
        for zerokv in order:
            runs["zerokv" if zerokv else "lightzero"].append(_child(args, zerokv))
            print(
                f"run {run + 1}/{args.runs} {'zerokv' if zerokv else 'LightZero'} done", flush=True
            )
    print(
        f"train_unizero (LightZero 0.2.0, CartPole, CPU), {args.runs} interleaved pairs of "
        f"runs, {args.cycles} cycles x {args.updates} learner iterations, batch "
        f"{args.batch_size}, reanalyze_ratio {args.reanalyze_ratio}; the two take different "
        "episodes (the C++ tree breaks ties from the clock): per-step figures compare"
    )
    print(_table(runs))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"args": vars(args), "runs": runs}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
