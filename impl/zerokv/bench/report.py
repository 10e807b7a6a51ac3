"""Presentation of benchmark results: the results table, the JSON document and the plot.

This module owns formatting only. It runs nothing and prints nothing: it turns
`ReplayResult`s into text, a JSON-ready document and a PNG, and the CLI (`__main__`) decides
where they go. matplotlib is imported lazily, only by `write_plot`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from zerokv.bench.workload import ReplayResult, WorkloadConfig
from zerokv.bench.zerokv_backend import STAGES, StageBreakdown

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "MEMORY_NOTE",
    "SYNC_NOTE",
    "Comparison",
    "PlotUnavailable",
    "SweepPoint",
    "build_document",
    "comparison_notes",
    "format_bytes",
    "format_comparison",
    "format_stages",
    "format_summary",
    "format_sweep",
    "legend",
    "machine_info",
    "plot_figure",
    "versus",
    "write_json",
    "write_markdown",
    "write_plot",
]


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed, so no plot can be written."""


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One config measured on the legacy baseline and on the candidate backend.

    `checked_steps` is how many collect steps the candidate's outputs were compared
    bit-exactly against the legacy backend's (0: not checked). `device_path`: the
    candidate's op counts on its device index with the CPU shortcuts off (the ops CUDA
    launches), from a short untimed replay; None when not measured.
    """

    config: WorkloadConfig
    legacy: ReplayResult
    candidate: ReplayResult
    checked_steps: int
    device_path: ReplayResult | None = None

    @property
    def speedup(self) -> float:
        """Legacy median time per sim step over the candidate's."""
        if self.candidate.sim_step_ms <= 0:
            return float("inf")
        return self.legacy.sim_step_ms / self.candidate.sim_step_ms

    def to_json(self) -> dict[str, object]:
        c, dp = self.config, self.device_path
        return {
            "speedup_vs_legacy": self.speedup,
            "legacy_median_ms": self.legacy.sim_step_ms,
            "zerokv_median_ms": self.candidate.sim_step_ms,
            "legacy_root_step_ms": self.legacy.root_step_ms,
            "zerokv_root_step_ms": self.candidate.root_step_ms,
            "legacy_peak_bytes": self.legacy.peak_bytes,
            "zerokv_peak_bytes": self.candidate.peak_bytes,
            "peak_source": self.candidate.peak_source,
            "legacy_persistent_bytes": self.legacy.persistent_bytes,
            "zerokv_persistent_bytes": self.candidate.persistent_bytes,
            "legacy_steady_state_bytes": self.legacy.steady_state_bytes,
            "zerokv_steady_state_bytes": self.candidate.steady_state_bytes,
            "ops_per_sim_step": {
                "legacy": self.legacy.ops_per_sim_step,
                "zerokv": self.candidate.ops_per_sim_step,
                "zerokv_device_path": dp.ops_per_sim_step if dp is not None else None,
            },
            "ops_per_root_step": {
                "legacy": self.legacy.ops_per_root_step,
                "zerokv": self.candidate.ops_per_root_step,
                "zerokv_device_path": dp.ops_per_root_step if dp is not None else None,
            },
            "views_per_sim_step": {
                "legacy": self.legacy.views_per_sim_step,
                "zerokv": self.candidate.views_per_sim_step,
                "zerokv_device_path": dp.views_per_sim_step if dp is not None else None,
            },
            "legacy_syncs_per_sim_step": self.legacy.syncs_per_sim_step,
            "zerokv_syncs_per_sim_step": self.candidate.syncs_per_sim_step,
            "legacy_alloc_bytes_per_sim_step": self.legacy.alloc_bytes_per_sim_step,
            "zerokv_alloc_bytes_per_sim_step": self.candidate.alloc_bytes_per_sim_step,
            "legacy_bytes_per_stored_entry": self.legacy.bytes_per_stored_entry,
            "zerokv_bytes_per_stored_entry": self.candidate.bytes_per_stored_entry,
            "entry_payload_bytes": self.legacy.entry_payload_bytes,
            "legacy_hit_rates": self.legacy.hit_rates(),
            "zerokv_hit_rates": self.candidate.hit_rates(),
            "checked_steps": self.checked_steps,
            "workload": {
                "num_layers": c.num_layers,
                "num_heads": c.num_heads,
                "embed_dim": c.embed_dim,
                "context_length": c.context_length,
                "env_num": c.env_num,
                "num_simulations": c.num_simulations,
                "root_capacity": c.root_capacity,
                "recurrent_capacity": c.recurrent_capacity,
                "seed": c.seed,
            },
            "legacy": self.legacy.to_dict(),
            "zerokv": self.candidate.to_dict(),
        }


@dataclasses.dataclass(frozen=True)
class SweepPoint:
    """Median time per sim step of both backends at one value of a swept parameter."""

    config: str
    axis: str  # "env_num" or "context_length"
    value: int
    legacy_ms: float
    candidate_ms: float


def format_bytes(n: float | None) -> str:
    """Human-readable bytes (binary units); "-" for None."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _num(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def versus(
    legacy: float | None,
    candidate: float | None,
    better: str = "less",
    worse: str = "more",
) -> str:
    """How the candidate compares with legacy on a lower-is-better metric, in words.

    ``legacy / candidate`` when that is >= 1 (``"1.65x faster"``: the candidate is better),
    else ``candidate / legacy`` with `worse` (``"7.06x more"``). ``"same"`` for equal
    values, ``"-"`` when either is unknown; a zero on one side is named (``"none vs 16"``:
    the candidate has none, legacy 16).
    """
    if legacy is None or candidate is None:
        return "-"
    if legacy == candidate:
        return "same"
    if candidate == 0:
        return f"none vs {legacy:g}"
    if legacy == 0:
        return f"{candidate:g} vs none"
    ratio = legacy / candidate
    if ratio >= 1:
        return f"{ratio:.2f}x {better}"
    return f"{1 / ratio:.2f}x {worse}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _rates(r: ReplayResult, keys: Sequence[str]) -> str:
    rates = r.hit_rates()
    return "/".join(_pct(rates[k]) for k in keys)


def _grid(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


#: Note marks of the comparison table; each note is printed under the table it belongs to.
SYNC_NOTE = "[a]"
MEMORY_NOTE = "[b]"
OPS_NOTE = "[c]"


#: Width of the notes and the legend (the tables are as wide as their columns).
TEXT_WIDTH = 92


def _note(mark: str, text: str, indent: int | None = None) -> str:
    """`mark` then `text`, wrapped; continuation lines indented under the text (or by
    `indent` spaces)."""
    pad = len(mark) + 1 if indent is None else indent
    return textwrap.fill(f"{mark} {text}", width=TEXT_WIDTH, subsequent_indent=" " * pad)


def legend(legacy_name: str, candidate_name: str, candidate_description: str) -> str:
    """What the columns of every table mean; printed once, before the first table."""
    return "\n".join(
        [
            _note(
                f"{legacy_name}:",
                "a re-creation of LightZero's original KV-cache design "
                "(zerokv/bench/legacy.py), the baseline.",
                indent=2,
            ),
            _note(f"{candidate_name}:", candidate_description + ".", indent=2),
            _note(
                f'"{candidate_name} vs {legacy_name}":',
                f'how {candidate_name} compares, in words. "1.65x faster": legacy takes 1.65 '
                f'times {candidate_name}\'s time; "7.06x more": {candidate_name} needs 7.06 '
                "times legacy's bytes. Lower is better for every metric.",
                indent=2,
            ),
        ]
    )


def comparison_notes(cmp: Comparison) -> list[str]:
    """The notes under `cmp`'s table: the CPU caveat of the synchronisation count, and
    what preallocation does to the memory figures (each only where it applies)."""
    c, lg, cd = cmp.config, cmp.legacy, cmp.candidate
    notes: list[str] = []
    if lg.device.startswith("cpu") and lg.syncs_per_sim_step is not None:
        notes.append(
            _note(
                SYNC_NOTE,
                "host syncs on the CPU: counted are the operations that make the host wait "
                f"for a GPU on CUDA ({lg.backend} hashes every latent on the host: one "
                f"device->host read each). {cd.backend}'s CPU index reads its keys with "
                "tolist(), which is free on the CPU and not counted: this figure says "
                "nothing about CUDA, where zerokv's device index reads nothing back "
                "(tests/test_sync_free.py).",
            )
        )
    lg_full, cd_full = lg.steady_state_bytes, cd.steady_state_bytes
    if (
        lg_full is not None
        and cd_full is not None
        and cd.peak_bytes >= cd_full
        and lg_full > lg.peak_bytes
    ):
        notes.append(
            _note(
                MEMORY_NOTE,
                f"{cd.backend} allocates all {c.total_capacity:,} pool slots up front "
                f"({format_bytes(cd_full)}); {lg.backend} allocates a slot on its first use "
                f"and held {format_bytes(lg.peak_bytes)} at the peak of this "
                f"{lg.steps}-step run. Its root pools fill after about {c.root_capacity} "
                "collect steps (one root store per environment per step); from then on it "
                f"holds {format_bytes(lg_full)} and {cd.backend} uses "
                f'{versus(lg_full, cd_full)} (row "memory, all pools full").',
            )
        )
    if lg.ops_per_sim_step is not None and cd.ops_per_sim_step is not None:
        cpu = lg.device.startswith("cpu")
        notes.append(
            _note(
                OPS_NOTE,
                "torch ops dispatched in one instrumented step (each is a kernel launch on "
                "CUDA, where at these sizes the step time follows the op count)"
                + (
                    f". On the CPU {cd.backend} uses its host index, which reads keys with "
                    "tolist() instead of launching ops; its device index, the path CUDA "
                    'takes ("device path" rows: a short untimed replay with the CPU '
                    "shortcuts off), dispatches a fixed count per simulation step whatever B "
                    "and the pool sizes (tests/test_op_budget.py); in brackets, how many of "
                    "the ops are views, which launch no kernel."
                    if cpu
                    else "."
                ),
            )
        )
    return notes


def _device_path_rows(lg: ReplayResult, dp: ReplayResult | None) -> list[list[str]]:
    """The op rows of the candidate's device path (``Comparison.device_path``)."""
    if dp is None or dp.ops_per_sim_step is None:
        return []

    def with_views(ops: float | None, views: float | None) -> str:
        return _num(ops, 1) + ("" if views is None else f" ({_num(views, 1)})")

    return [
        [
            "torch ops / sim step, device path [c]",
            with_views(lg.ops_per_sim_step, lg.views_per_sim_step),
            with_views(dp.ops_per_sim_step, dp.views_per_sim_step),
            versus(lg.ops_per_sim_step, dp.ops_per_sim_step, "fewer", "more"),
        ],
        [
            "torch ops / root step, device path [c]",
            _num(lg.ops_per_root_step, 1),
            _num(dp.ops_per_root_step, 1),
            versus(lg.ops_per_root_step, dp.ops_per_root_step, "fewer", "more"),
        ],
    ]


def format_comparison(cmp: Comparison) -> str:
    """A per-metric table of one config: legacy, candidate, and the candidate against
    legacy in words (`versus`), with its notes underneath (`comparison_notes`)."""
    c, lg, cd = cmp.config, cmp.legacy, cmp.candidate
    title = (
        f"{c.name}: L{c.num_layers} H{c.num_heads} E{c.embed_dim} cl{c.context_length}, "
        f"B={c.env_num} environments, N={c.num_simulations} simulations, "
        f"{c.total_capacity:,} pool slots\n"
        f"  {lg.steps} collect steps x {lg.repeats} repeat{'' if lg.repeats == 1 else 's'} "
        "per backend, "
        f"{lg.device} {lg.dtype}\n  check: "
        + (
            f"outputs equal bit for bit on all {cmp.checked_steps} checked steps"
            if cmp.checked_steps
            else "outputs not checked (--no-check)"
        )
    )
    cpu = lg.device.startswith("cpu")
    sync_mark = f" {SYNC_NOTE}" if cpu else ""
    notes = comparison_notes(cmp)
    memory_mark = f" {MEMORY_NOTE}" if any(n.startswith(MEMORY_NOTE) for n in notes) else ""

    def syncs(a: float | None, b: float | None) -> str:
        return f"CPU: see {SYNC_NOTE}" if cpu else versus(a, b, "fewer", "more")

    rows: list[list[str]] = [
        ["metric", lg.backend, cd.backend, f"{cd.backend} vs {lg.backend}"],
        [
            "time / sim step (median ms)",
            _num(lg.sim_step_ms),
            _num(cd.sim_step_ms),
            versus(lg.sim_step_ms, cd.sim_step_ms, "faster", "slower"),
        ],
        [
            "time / root step (median ms)",
            _num(lg.root_step_ms),
            _num(cd.root_step_ms),
            versus(lg.root_step_ms, cd.root_step_ms, "faster", "slower"),
        ],
        [
            f"host syncs / sim step{sync_mark}",
            _num(lg.syncs_per_sim_step, 1),
            _num(cd.syncs_per_sim_step, 1),
            syncs(lg.syncs_per_sim_step, cd.syncs_per_sim_step),
        ],
        [
            f"host syncs / root step{sync_mark}",
            _num(lg.syncs_per_root_step, 1),
            _num(cd.syncs_per_root_step, 1),
            syncs(lg.syncs_per_root_step, cd.syncs_per_root_step),
        ],
        [
            "torch ops / sim step [c]",
            _num(lg.ops_per_sim_step, 1),
            _num(cd.ops_per_sim_step, 1),
            versus(lg.ops_per_sim_step, cd.ops_per_sim_step, "fewer", "more"),
        ],
        [
            "torch ops / root step [c]",
            _num(lg.ops_per_root_step, 1),
            _num(cd.ops_per_root_step, 1),
            versus(lg.ops_per_root_step, cd.ops_per_root_step, "fewer", "more"),
        ],
        *_device_path_rows(lg, cmp.device_path),
        [
            "bytes allocated / sim step",
            format_bytes(lg.alloc_bytes_per_sim_step),
            format_bytes(cd.alloc_bytes_per_sim_step),
            versus(lg.alloc_bytes_per_sim_step, cd.alloc_bytes_per_sim_step),
        ],
        [
            "allocations / sim step",
            _num(lg.allocations_per_sim_step, 1),
            _num(cd.allocations_per_sim_step, 1),
            versus(lg.allocations_per_sim_step, cd.allocations_per_sim_step, "fewer", "more"),
        ],
        [
            f"memory, peak of this run{memory_mark}",
            format_bytes(lg.peak_bytes),
            format_bytes(cd.peak_bytes),
            versus(lg.peak_bytes, cd.peak_bytes),
        ],
        [
            f"memory, all pools full{memory_mark}",
            format_bytes(lg.steady_state_bytes),
            format_bytes(cd.steady_state_bytes),
            versus(lg.steady_state_bytes, cd.steady_state_bytes),
        ],
        ["entries stored at the end", str(lg.stored_entries), str(cd.stored_entries), ""],
        [
            "storage / pool slot",
            format_bytes(lg.bytes_per_capacity_slot),
            format_bytes(cd.bytes_per_capacity_slot),
            "",
        ],
        [
            "payload / entry (2*L*cl*E*itemsize)",
            format_bytes(lg.entry_payload_bytes),
            format_bytes(cd.entry_payload_bytes),
            "",
        ],
        [
            "root step: hits root/miss",
            _rates(lg, ("root_step.root", "root_step.miss")),
            _rates(cd, ("root_step.root", "root_step.miss")),
            "",
        ],
        [
            "sim step: hits root/recurrent/miss",
            _rates(lg, ("sim_step.root", "sim_step.recurrent", "sim_step.miss")),
            _rates(cd, ("sim_step.root", "sim_step.recurrent", "sim_step.miss")),
            "",
        ],
    ]
    return "\n".join([title, _grid(rows), *notes])


def format_summary(comparisons: Sequence[Comparison]) -> str:
    """One line per config: time per simulation step and memory with all pools full."""
    first = comparisons[0]
    lg_name, cd_name = first.legacy.backend, first.candidate.backend
    rows: list[list[str]] = [
        [
            "config",
            f"{lg_name} ms/sim step",
            f"{cd_name} ms/sim step",
            f"time: {cd_name} vs {lg_name}",
            f"{lg_name}, pools full",
            f"{cd_name}, pools full",
            f"memory: {cd_name} vs {lg_name}",
        ],
    ]
    for cmp in comparisons:
        lg, cd = cmp.legacy, cmp.candidate
        rows.append(
            [
                cmp.config.name,
                _num(lg.sim_step_ms),
                _num(cd.sim_step_ms),
                versus(lg.sim_step_ms, cd.sim_step_ms, "faster", "slower"),
                format_bytes(lg.steady_state_bytes),
                format_bytes(cd.steady_state_bytes),
                versus(lg.steady_state_bytes, cd.steady_state_bytes),
            ]
        )
    return "summary (medians; memory with every pool slot in use)\n" + _grid(rows)


def format_sweep(points: Sequence[SweepPoint]) -> str:
    """The sweep measurements as a table."""
    rows: list[list[str]] = [
        ["config", "axis", "value", "legacy ms/sim step", "zerokv ms/sim step", "zerokv vs legacy"]
    ]
    for p in points:
        rows.append(
            [
                p.config,
                p.axis,
                str(p.value),
                _num(p.legacy_ms),
                _num(p.candidate_ms),
                versus(p.legacy_ms, p.candidate_ms, "faster", "slower"),
            ]
        )
    return "sweeps (median time per simulation step)\n" + _grid(rows)


def _floors(x: float | None, floor: float | None) -> str:
    if x is None or floor is None or floor <= 0:
        return "-"
    return f"{x / floor:.2f} floors"


def format_stages(breakdowns: Sequence[StageBreakdown]) -> str:
    """zerokv's simulation step by stage (median us), the copy floor, and both steps
    measured in copy floors."""
    head = [
        "config",
        *STAGES,
        "zerokv sum",
        "copy floor",
        "legacy",
        "zerokv step",
        "legacy step",
    ]
    rows: list[list[str]] = [head]
    for b in breakdowns:
        rows.append(
            [
                b.config,
                *(_num(b.stages_us.get(s), 0) for s in STAGES),
                _num(b.total_us, 0),
                _num(b.floor_us, 0),
                _num(b.legacy_us, 0),
                _floors(b.total_us, b.floor_us),
                _floors(b.legacy_us, b.floor_us),
            ]
        )
    shape = ""
    if breakdowns and breakdowns[0].rounds:
        shape = f"{breakdowns[0].rounds} rounds of a {breakdowns[0].steps}-step replay of each"
    else:
        shape = "a short replay of each"
    return "\n".join(
        [
            f"zerokv's simulation step stage by stage (median us; {shape}, measured together)",
            _grid(rows),
            _note(
                "  ",
                "copy floor: one index_select of the B entries a step reads plus one "
                "index_copy_ of B entries, the least data movement of any design that "
                'gathers a batch and stores it back. "legacy step" in floors is the most '
                "any such design could gain over legacy on this machine; it is not zerokv's "
                'speedup ("time / sim step" is).',
            ),
        ]
    )


def machine_info(device: torch.device, dtype: torch.dtype) -> dict[str, object]:
    """Where the numbers were measured."""
    info: dict[str, object] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }
    if hasattr(os, "sched_getaffinity"):
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def build_document(
    machine: dict[str, object],
    comparisons: Sequence[Comparison],
    sweeps: Sequence[SweepPoint],
    backends: dict[str, str],
    stages: Sequence[StageBreakdown] = (),
) -> dict[str, object]:
    """The JSON document: {"machine", "backends", "configs": {name: {...}}, "sweeps",
    "stages": {name: {"stages_us", "total_us", "floor_us", "batch_bytes"}}}."""
    return {
        "machine": machine,
        "backends": backends,
        "configs": {cmp.config.name: cmp.to_json() for cmp in comparisons},
        "sweeps": [dataclasses.asdict(p) for p in sweeps],
        "stages": {
            b.config: {k: v for k, v in dataclasses.asdict(b).items() if k != "config"}
            for b in stages
        },
    }


def write_json(path: str | os.PathLike[str], doc: dict[str, object]) -> None:
    """Write `doc` as indented JSON (NaN/inf become null)."""

    def clean(x: object) -> object:
        if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
            return None
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(clean(doc), indent=2) + "\n", encoding="utf-8")


def plot_figure(
    points: Sequence[SweepPoint],
    *,
    legacy_name: str = "legacy",
    candidate_name: str = "zerokv",
    device: str = "cpu",
    dtype: str = "float32",
    steps: int | None = None,
    repeats: int | None = None,
) -> Figure:
    """The sweeps' figure: time per sim step vs number of environments and vs context
    length, one line per backend, y axes from 0, a red cross on every point where the
    candidate is slower than legacy; the title names the preset, device and dtype. Raises
    `PlotUnavailable` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotUnavailable(
            "--plot needs matplotlib (pip install matplotlib, or the 'bench' extra)"
        ) from exc

    panels = (("env_num", "number of environments B"), ("context_length", "context length cl"))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    presets = sorted({p.config for p in points}) or ["no sweep"]
    run = f"; {steps} steps x {repeats} repeats" if steps and repeats else ""
    fig.suptitle(
        f"{', '.join(presets)}: median time per simulation step, {device} {dtype}{run}"
        f" (lower is better)"
    )
    for ax, (axis, label) in zip(axes, panels, strict=True):
        mine = sorted((p for p in points if p.axis == axis), key=lambda p: p.value)
        if mine:
            xs = [p.value for p in mine]
            ax.plot(xs, [p.legacy_ms for p in mine], "o-", label=legacy_name)
            ax.plot(xs, [p.candidate_ms for p in mine], "s-", label=candidate_name)
            slower = [p for p in mine if p.candidate_ms > p.legacy_ms]
            if slower:
                ax.plot(
                    [p.value for p in slower],
                    [p.candidate_ms for p in slower],
                    "x",
                    color="red",
                    markersize=12,
                    markeredgewidth=2.5,
                    linestyle="none",
                    label=f"{candidate_name} slower",
                )
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [str(x) for x in xs])
            ax.set_title(f"vs {label} ({mine[0].config})")
            ax.legend()
        else:
            ax.set_title(f"no {axis} sweep")
        ax.set_ylim(bottom=0)
        ax.set_xlabel(label)
        ax.set_ylabel("median ms per sim step")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def write_plot(
    path: str | os.PathLike[str],
    points: Sequence[SweepPoint],
    *,
    legacy_name: str = "legacy",
    candidate_name: str = "zerokv",
    device: str = "cpu",
    dtype: str = "float32",
    steps: int | None = None,
    repeats: int | None = None,
) -> None:
    """Write `plot_figure` as a PNG (its folder is created)."""
    fig = plot_figure(
        points,
        legacy_name=legacy_name,
        candidate_name=candidate_name,
        device=device,
        dtype=dtype,
        steps=steps,
        repeats=repeats,
    )
    import matplotlib.pyplot as plt

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=120)
    plt.close(fig)


_METHOD = """\
## Method

`python -m zerokv.bench` replays UniZero's KV-cache workload
([background](background.md#the-replay): root lookups and stores for B environments, then
N simulations per step whose parents a seeded PUCT-like policy picks, batch assembly with
unequal sizes, the window rule with a correction table, the clearing schedule) through two
backends fed identical, seeded inputs:

* **legacy** - a re-creation of the cache design of LightZero's UniZero world model before
  its cache manager ([background](background.md#the-legacy-design)): per-slot cache
  objects with per-layer K/V tensors, dicts key -> slot plus reverse lists, per-layer copy
  loops, per-environment host hashing (xxh64), a clone of every hit, per-layer pad + stack
  assembly and per-layer slicing on split (`zerokv/bench/legacy.py`);
* **zerokv** - `zerokv.CacheManager` through its batched API (`zerokv/bench/zerokv_backend.py`).

Before timing, every output of zerokv is compared bit-exactly with legacy's for the whole
replay (valid tokens and lengths of every assembled batch); a mismatch aborts the run.
Times are medians over repeats of the wall time of each simulation step's cache work
(hierarchical lookup, assembly, append, split/window, store; hashing included), measured in
the same process with the two backends interleaved. Synchronisations and allocations come
from one extra, untimed, instrumented step (a `TorchDispatchMode` that counts device->host
reads and newly allocated bytes; legacy's host hashing is counted as one read per latent).

### Reading the numbers

* **Where the time goes.** On the CPU zerokv keeps its index in host memory (a dict per
  pool) and does each row's bookkeeping on Python lists, so the tensor work of a
  simulation step is: hashing the parent and the child latents (a few passes over their
  32-bit words), one `index_select` of the looked-up entries straight into a batch with
  room for the new tokens (`gather_reserve`; the stage includes the replay's model
  writing its tokens into it), a finiteness check of the batch, and one masked multiply plus
  the window correction written straight into the slab (or, when the slots are not
  consecutive, into a new tensor that an `index_copy_` scatters). The stage table
  measures each of these inside the replay, where caches are as cold as in a real search.
* **The copy floor, and the 10x CPU target.** The copy floor is the least data movement
  of any design that gathers a step's entries into a batch and stores the batch back:
  one `index_select` of the `B` entries plus one `index_copy_` of `B` entries, with no
  hashing, bookkeeping, window rule or padding. The stage table gives both steps in copy
  floors: "legacy step" in floors is therefore the most any such design could gain over
  legacy on the machine measured (it is not zerokv's speedup; "time / sim step" is).
  Where it is near 10 (the Atari config on a CPU), a 10x speedup would need the whole
  step, hashing and lookup included, to cost no more than that copy; zerokv's step costs
  several floors
  (its two hashes alone cost about one), so it does not reach 10x there. Where entries
  are small (CartPole) the floor is far below legacy's time and zerokv's per-call
  overhead decides the ratio. The design targets GPUs, where legacy pays a device-to-host
  synchronisation per hashed latent and a kernel launch per small operation, while
  zerokv's CUDA path has no synchronisation and only static shapes.
* **Static width.** zerokv's batches are always `cl` columns wide (static shapes for the
  GPU); legacy's are as wide as the longest entry plus the new tokens. In a short replay
  entries are still short, so at the long-context Memory config legacy moves much less
  data than it would in a long run; the ratio there grows with the run's length.
* **Synchronisations on the CPU.** The counter counts the tensor operations that copy a
  device value to the host (`item`, `nonzero`, a copy to the CPU, ...), plus legacy's own
  count of hashed latents. zerokv's CPU path reads keys and lengths with `tolist()`,
  which is free on the CPU (the values already are in host memory) and is not such an
  operation, so zerokv shows 0 here; that number says nothing about CUDA. On CUDA zerokv
  uses the device index, whose code path reads nothing on the host:
  `tests/test_sync_free.py` runs it on the CPU with every synchronising method
  instrumented, and under `torch.cuda.set_sync_debug_mode("error")` where a GPU exists.
* **Memory.** zerokv allocates its slab once, for every slot of LightZero's pool sizes
  (root pools of `min(max_cache_size, max(256, 2N))` slots per environment), so its storage
  is flat from the first step and its storage per pool slot equals the payload
  `2 * L * cl * E * itemsize` (plus two spare slots per slab and an 8-byte length per
  slot): no per-entry object, no per-layer tensor, no slack. Legacy allocates a slot on
  its first use, so in a short run it holds only the slots the run reached: "memory, peak
  of this run" then shows zerokv needing several times legacy's memory. That is not the
  steady state: legacy's root pools fill after about `root_capacity` collect steps (one
  root store per environment per step; 256 for every preset) and its recurrent pool within
  the first step, and "memory, all pools full" shows both backends then, where zerokv
  needs slightly less than legacy (no staging copies). A user who does not need 256 root
  slots per environment sets `root_capacity` lower.
* **Compiled kernels (`--compiled`).** `CacheConfig(compile=True)` runs each public call
  of the hot path as one compiled graph on the device index: 5 graphs and 12 kernel
  launches per simulation step (the keys twice, the lookup of both tiers, the gather, the
  store), where the eager device path dispatches 118 ops. On a CPU that is not the fast
  path. At the Atari shape (1 thread) a compiled step took 0.65-0.75 ms, against 1.4-1.5 ms
  for the eager device path (what CUDA runs eagerly) and about 0.7 ms for the eager host
  index (the CPU default). Timed call by call in the Atari replay (medians per call): 69 us
  per hash, 81 us for the lookup, 166 us for the gather and 217 us for the store (put,
  window rule and scatter in one graph); the model's writes, `with_length` and the
  manager's Python take the rest. Every compiled call carries 20-25 us of dynamo and AOT
  wrapper code whatever its size (a hash call alone takes 28 us, its generated kernel
  about 6 us), and the gather and the store each move a 786 KB batch at about a quarter
  of a plain copy's speed (a fresh batch per call, indexed loads). Fusing 7 graphs into 5
  saved little here (0.765 to 0.720 ms per step). So 5x legacy per simulation step (about
  0.25 ms at Atari here) is out of reach on a CPU: the calls' fixed cost is about 0.12 ms
  and the gather and the store another 0.38 ms. On CUDA the same calls replay captured CUDA
  graphs (`mode="reduce-overhead"`); that is what the compiled path is for, and what the
  CUDA block below is for.
"""


#: Where the page's generated blocks start and end: one block per device type, so that a
#: run on one device replaces its own results and keeps the others'. What follows
#: ``_KEPT`` is written by hand and kept as it is by every run.
_BLOCK = "<!-- zerokv.bench --markdown: {device} results {edge} -->"
_KEPT = "<!-- zerokv.bench --markdown: the sections below are kept as they are -->"
_DEVICES = ("cpu", "cuda")


def write_markdown(
    path: str | os.PathLike[str],
    *,
    command: str,
    machine: dict[str, object],
    sections: Sequence[str],
    plot: str | None,
) -> None:
    """Write the performance page: method, then per device type the command, machine,
    result tables and plot. An existing page keeps its other devices' blocks and the
    hand-written sections after ``_KEPT``; only this device's block is replaced."""
    device = str(machine.get("device", "cpu")).split(":")[0]
    block = [
        f"## Results: {device}",
        "",
        "Command:",
        "",
        "```",
        command,
        "```",
        "",
        "Machine:",
        "",
        *[f"- {key}: {value}" for key, value in machine.items()],
        "",
    ]
    for text in sections:
        block += ["```", text, "```", ""]
    if plot:
        block += [f"![time per simulation step]({plot})", ""]
    target = Path(path)
    old = target.read_text(encoding="utf-8") if target.exists() else ""
    blocks = {d: _block_of(old, d) for d in _DEVICES}
    blocks[device] = "\n".join(block)
    kept = old.split(_KEPT, 1)[1].lstrip("\n") if _KEPT in old else ""
    lines = [
        "# Performance",
        "",
        "The result blocks of this page are written by the benchmark itself, one per device "
        "type; a run replaces its device's block and keeps the rest:",
        "",
        "```",
        "python -m zerokv.bench --config all --repeats 5 --compiled --json docs/performance.json "
        "--plot docs/performance.png --markdown docs/performance.md",
        "python -m zerokv.bench --config all --repeats 5 --device cuda "
        "--json docs/performance-cuda.json --markdown docs/performance.md",
        "```",
        "",
        _METHOD,
    ]
    for d in _DEVICES:
        lines += [
            _BLOCK.format(device=d, edge="begin"),
            blocks[d],
            _BLOCK.format(device=d, edge="end"),
            "",
        ]
    lines += [_KEPT, "", kept] if kept else [_KEPT, ""]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines), encoding="utf-8")


def _block_of(page: str, device: str) -> str:
    """``device``'s block of a page written by ``write_markdown`` (a placeholder if none)."""
    begin, end = (
        _BLOCK.format(device=device, edge="begin"),
        _BLOCK.format(device=device, edge="end"),
    )
    if begin in page and end in page:
        return page.split(begin, 1)[1].split(end, 1)[0].strip("\n")
    how = "--device cuda" if device == "cuda" else ""
    return (
        f"## Results: {device}\n\nNot measured yet. On a machine with "
        f"{'a GPU' if device == 'cuda' else 'a CPU'}: `python -m zerokv.bench --config all "
        f"--repeats 5 {how} --markdown docs/performance.md`.".replace("  ", " ")
    )
