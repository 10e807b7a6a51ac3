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
from collections.abc import Sequence
from pathlib import Path

import torch

from zerokv.bench.workload import ReplayResult, WorkloadConfig
from zerokv.bench.zerokv_backend import STAGES, StageBreakdown

__all__ = [
    "Comparison",
    "PlotUnavailable",
    "SweepPoint",
    "build_document",
    "format_bytes",
    "format_comparison",
    "format_summary",
    "format_sweep",
    "machine_info",
    "write_json",
    "write_plot",
]


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed, so no plot can be written."""


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One config measured on the legacy baseline and on the candidate backend.

    `checked_steps` is how many collect steps the candidate's outputs were compared
    bit-exactly against the legacy backend's (0: not checked).
    """

    config: WorkloadConfig
    legacy: ReplayResult
    candidate: ReplayResult
    checked_steps: int

    @property
    def speedup(self) -> float:
        """Legacy median time per sim step over the candidate's."""
        if self.candidate.sim_step_ms <= 0:
            return float("inf")
        return self.legacy.sim_step_ms / self.candidate.sim_step_ms

    def to_json(self) -> dict[str, object]:
        c = self.config
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


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x"


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


def format_comparison(cmp: Comparison) -> str:
    """A per-metric table of one config: legacy, candidate, legacy/candidate."""
    c, lg, cd = cmp.config, cmp.legacy, cmp.candidate
    checked = f"checked {cmp.checked_steps} steps" if cmp.checked_steps else "not checked"
    title = (
        f"{c.name}: L{c.num_layers} H{c.num_heads} E{c.embed_dim} cl{c.context_length} "
        f"B{c.env_num} N{c.num_simulations}; {lg.steps} steps x {lg.repeats} repeats; "
        f"{lg.device} {lg.dtype}; {checked}"
    )
    rows: list[list[str]] = [
        ["metric", lg.backend, cd.backend, "legacy/new"],
        [
            "median ms / sim step",
            _num(lg.sim_step_ms),
            _num(cd.sim_step_ms),
            _ratio(lg.sim_step_ms, cd.sim_step_ms),
        ],
        [
            "median ms / root step",
            _num(lg.root_step_ms),
            _num(cd.root_step_ms),
            _ratio(lg.root_step_ms, cd.root_step_ms),
        ],
        [
            "host syncs / sim step",
            _num(lg.syncs_per_sim_step, 1),
            _num(cd.syncs_per_sim_step, 1),
            "",
        ],
        [
            "host syncs / root step",
            _num(lg.syncs_per_root_step, 1),
            _num(cd.syncs_per_root_step, 1),
            "",
        ],
        [
            "bytes allocated / sim step",
            format_bytes(lg.alloc_bytes_per_sim_step),
            format_bytes(cd.alloc_bytes_per_sim_step),
            _ratio(lg.alloc_bytes_per_sim_step, cd.alloc_bytes_per_sim_step),
        ],
        [
            "allocations / sim step",
            _num(lg.allocations_per_sim_step, 1),
            _num(cd.allocations_per_sim_step, 1),
            "",
        ],
        [
            f"peak memory ({lg.peak_source})",
            format_bytes(lg.peak_bytes),
            format_bytes(cd.peak_bytes),
            _ratio(lg.peak_bytes, cd.peak_bytes),
        ],
        [
            "persistent storage",
            format_bytes(lg.persistent_bytes),
            format_bytes(cd.persistent_bytes),
            _ratio(lg.persistent_bytes, cd.persistent_bytes),
        ],
        ["stored entries", str(lg.stored_entries), str(cd.stored_entries), ""],
        [
            "storage / stored entry",
            format_bytes(lg.bytes_per_stored_entry),
            format_bytes(cd.bytes_per_stored_entry),
            "",
        ],
        [
            "storage / capacity slot",
            format_bytes(lg.bytes_per_capacity_slot),
            format_bytes(cd.bytes_per_capacity_slot),
            "",
        ],
        [
            "payload / entry (2*L*cl*E*size)",
            format_bytes(lg.entry_payload_bytes),
            format_bytes(cd.entry_payload_bytes),
            "",
        ],
        [
            "root step hits root/miss",
            _rates(lg, ("root_step.root", "root_step.miss")),
            _rates(cd, ("root_step.root", "root_step.miss")),
            "",
        ],
        [
            "sim step hits root/recur/miss",
            _rates(lg, ("sim_step.root", "sim_step.recurrent", "sim_step.miss")),
            _rates(cd, ("sim_step.root", "sim_step.recurrent", "sim_step.miss")),
            "",
        ],
    ]
    return title + "\n" + _grid(rows)


def format_summary(comparisons: Sequence[Comparison]) -> str:
    """One line per config: times, speedup, syncs, allocations, peak memory."""
    rows: list[list[str]] = [
        ["config", "legacy ms", "new ms", "speedup", "syncs L/N", "alloc/step L/N", "peak L/N"],
    ]
    for cmp in comparisons:
        lg, cd = cmp.legacy, cmp.candidate
        rows.append(
            [
                cmp.config.name,
                _num(lg.sim_step_ms),
                _num(cd.sim_step_ms),
                f"{cmp.speedup:.2f}x",
                f"{_num(lg.syncs_per_sim_step, 1)}/{_num(cd.syncs_per_sim_step, 1)}",
                f"{format_bytes(lg.alloc_bytes_per_sim_step)}/"
                f"{format_bytes(cd.alloc_bytes_per_sim_step)}",
                f"{format_bytes(lg.peak_bytes)}/{format_bytes(cd.peak_bytes)}",
            ]
        )
    return _grid(rows)


def format_sweep(points: Sequence[SweepPoint]) -> str:
    """The sweep measurements as a table."""
    rows: list[list[str]] = [["config", "axis", "value", "legacy ms", "new ms", "speedup"]]
    for p in points:
        rows.append(
            [
                p.config,
                p.axis,
                str(p.value),
                _num(p.legacy_ms),
                _num(p.candidate_ms),
                _ratio(p.legacy_ms, p.candidate_ms),
            ]
        )
    return _grid(rows)


def format_stages(breakdowns: Sequence[StageBreakdown]) -> str:
    """zerokv's simulation step by stage (median us), the copy floor and legacy / floor."""
    head = ["config", *STAGES, "sum", "copy floor", "legacy", "legacy/floor"]
    rows: list[list[str]] = [head]
    for b in breakdowns:
        rows.append(
            [
                b.config,
                *(_num(b.stages_us.get(s), 0) for s in STAGES),
                _num(b.total_us, 0),
                _num(b.floor_us, 0),
                _num(b.legacy_us, 0),
                _ratio(b.legacy_us, b.floor_us),
            ]
        )
    return (
        "zerokv sim step by stage, copy floor (index_select of the B entries a step reads +\n"
        "index_copy_ of B entries) and legacy's sim step: median us over 3 rounds of a short\n"
        "replay of each, measured together\n" + _grid(rows)
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


def write_plot(
    path: str | os.PathLike[str],
    points: Sequence[SweepPoint],
    *,
    legacy_name: str = "legacy",
    candidate_name: str = "zerokv",
) -> None:
    """A PNG with two panels: time per sim step vs number of environments and vs context
    length, one line per backend. Raises `PlotUnavailable` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotUnavailable(
            "--plot needs matplotlib (pip install matplotlib, or the 'bench' extra)"
        ) from exc

    panels = (("env_num", "number of environments B"), ("context_length", "context length cl"))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (axis, label) in zip(axes, panels, strict=True):
        mine = sorted((p for p in points if p.axis == axis), key=lambda p: p.value)
        if mine:
            xs = [p.value for p in mine]
            ax.plot(xs, [p.legacy_ms for p in mine], "o-", label=legacy_name)
            ax.plot(xs, [p.candidate_ms for p in mine], "s-", label=candidate_name)
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [str(x) for x in xs])
            ax.set_title(f"{mine[0].config}: time per sim step vs {axis}")
            ax.legend()
        else:
            ax.set_title(f"no {axis} sweep")
        ax.set_xlabel(label)
        ax.set_ylabel("median ms per sim step")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=120)
    plt.close(fig)


_METHOD = """\
## Method

`python -m zerokv.bench` replays UniZero's KV-cache workload (section 9 of the domain notes:
root lookups and stores for B environments, then N simulations per step whose parents a
seeded PUCT-like policy picks, batch assembly with unequal sizes, the window rule with a
correction table, the clearing schedule) through two backends fed identical, seeded inputs:

* **legacy** - a re-creation of LightZero's design from the seed document: per-slot cache
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
  hashing, bookkeeping, window rule or padding. `legacy/floor` is therefore the most any
  such design could gain over legacy on the machine measured. Where it is near 10x (the
  Atari config on a CPU), a 10x speedup would need the whole step, hashing and lookup
  included, to cost no more than that copy; zerokv's step costs several copies' worth
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
  is flat from the first step and its storage per capacity slot equals the payload
  `2 * L * cl * E * itemsize` (plus two spare slots per slab and an 8-byte length per
  slot): no per-entry object, no per-layer tensor, no slack. "storage / stored entry"
  divides the storage by the entries held at the end of the run, so for zerokv it is the
  payload times capacity / entries, the payload once the pools are full. Legacy allocates
  slots lazily and so holds less while its rings are not yet full. A user who does not
  need 256 root slots per environment sets `root_capacity` lower.
"""


def write_markdown(
    path: str | os.PathLike[str],
    *,
    command: str,
    machine: dict[str, object],
    sections: Sequence[str],
    plot: str | None,
) -> None:
    """Write the performance page: method, machine, command, result tables, plot."""
    lines = [
        "# Performance",
        "",
        "This page is generated by the benchmark itself; regenerate it with:",
        "",
        "```",
        command,
        "```",
        "",
        _METHOD,
        *(
            [
                "* **CUDA.** This page was generated on the CPU; run",
                "  `python -m zerokv.bench --device cuda` on a GPU to measure one.",
                "",
            ]
            if str(machine.get("device", "cpu")).startswith("cpu")
            else []
        ),
        "## Machine",
        "",
        *[f"- {key}: {value}" for key, value in machine.items()],
        "",
        "## Results",
        "",
    ]
    for text in sections:
        lines += ["```", text, "```", ""]
    if plot:
        lines += [f"![time per simulation step]({plot})", ""]
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines), encoding="utf-8")
