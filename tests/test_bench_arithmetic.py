"""The benchmark's own arithmetic: what it measures and what it prints from it.

The replay is driven through a scripted backend on a fake clock, so every figure has a
value known in advance: medians over repeats, peaks over repeats, per-call counts of the
instrumented step, the bookkeeping of steps and progress, the ratios and their direction,
the notes the report prints, and legacy's steady-state memory against pools really filled.

Each check is a function of the modules it exercises. The tests at the end load copies of
those modules with one planted bug each (a wrong ``max``, a wrong constant, a flipped flag,
...) and show that the check fails on the copy: a check that passes everything would be
caught there.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import sys
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

import zerokv.bench.__main__ as bench_main
import zerokv.bench.legacy as bench_legacy
import zerokv.bench.report as bench_report
import zerokv.bench.workload as bench_workload
import zerokv.bench.zerokv_backend as bench_zerokv
from zerokv.bench.workload import StepOutput, WorkloadConfig

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- the fakes

#: Per repeat, the duration (ms) of each timed sim_step call in order; 4 steps x 3 sims.
#: Repeat medians: 1, 2 and 6 ms (median 2, mean 3).
SIM_MS = (
    [1, 1, 1, 1, 1, 1, 9, 9, 9, 1, 1, 1],
    [2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2],
    [6, 6, 6, 6, 6, 6, 6, 6, 6, 1, 1, 9],
)
#: Per repeat, the duration (ms) of each timed root_step call (repeat medians 5, 3, 4).
ROOT_MS = ([5, 5, 1, 9], [3, 3, 3, 3], [4, 4, 4, 4])
#: Per repeat, storage_bytes grows by this much per call: the middle repeat peaks highest.
GROWTH = (10, 50, 1)
STEPS = 4


def small_cfg() -> WorkloadConfig:
    return WorkloadConfig(
        name="tiny",
        num_layers=1,
        num_heads=1,
        embed_dim=2,
        context_length=4,
        env_num=2,
        num_simulations=3,
        steps=STEPS,
        episode_length_range=(1000, 1000),
        start_mid_episode=False,
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Scripted:
    """A `CacheBackend` whose calls take scripted time on `clock`, allocate and sync a
    known amount, and report host reads and storage that change per repeat."""

    name = "scripted"

    def __init__(self, cfg: WorkloadConfig, clock: Clock) -> None:
        self.cfg = cfg
        self.clock = clock
        self.repeat = -1  # clear_all starts every repeat
        self.sim_calls = 0
        self.root_calls = 0
        self.timed_sim = 0
        self.timed_root = 0
        self._reads = 0
        self._storage = 0
        self._peak_seen = 0
        c = cfg
        self._out = StepOutput(
            torch.zeros(c.num_layers, 2, c.env_num, c.num_heads, c.context_length, c.head_dim),
            torch.zeros(c.env_num, dtype=torch.int64),
        )

    def _spend(self, table: Sequence[Sequence[float]], index: int) -> None:
        row = table[self.repeat] if 0 <= self.repeat < len(table) else []
        self.clock.now += (row[index] if index < len(row) else 0.0) / 1e3

    def root_step(self, *args: Any) -> StepOutput:
        x = torch.zeros(50)  # 200 bytes, one allocation
        x[0].item()  # one sync
        self._reads += 1  # one host read
        self._spend(ROOT_MS, self.timed_root)
        self.timed_root += 1
        self.root_calls += 1
        self._storage += GROWTH[self.repeat % len(GROWTH)]
        return self._out

    def sim_step(self, *args: Any) -> StepOutput:
        x = torch.zeros(100)  # 400 bytes, one allocation
        x[0].item()  # one sync
        self._reads += 2  # two host reads
        self._spend(SIM_MS, self.timed_sim)
        self.timed_sim += 1
        self.sim_calls += 1
        self._storage += GROWTH[self.repeat % len(GROWTH)]
        return self._out

    def clear_recurrent(self) -> None:
        pass

    def clear_env(self, env_id: int) -> None:
        pass

    def clear_all(self) -> None:
        self.repeat += 1
        self.timed_sim = self.timed_root = 0
        self._storage = 0

    def hit_counts(self) -> dict[str, int]:
        return {"root_hits": 0, "recurrent_hits": 0, "misses": 0, "lookups": 0}

    def storage_bytes(self) -> int:
        return self._storage

    def stored_entries(self) -> int:
        return 7

    def host_reads(self) -> int:
        return self._reads

    def steady_state_bytes(self) -> int:
        return 1234


# --------------------------------------------------------------------------- checks


def check_replay_arithmetic(workload: types.ModuleType) -> None:
    """Medians over repeats, peak over repeats, per-call counts, call and step counts."""
    cfg = small_cfg()
    clock = Clock()
    backend = Scripted(cfg, clock)
    ticks: list[tuple[int, int]] = []
    result = workload.replay(
        backend,
        cfg,
        steps=STEPS,
        repeats=3,
        timer=clock,
        progress=lambda done, total: ticks.append((done, total)),
    )
    # Medians: of each repeat's median (1, 2, 6 ms for sim; 5, 3, 4 for root).
    assert result.sim_step_ms_per_repeat == pytest.approx((1.0, 2.0, 6.0))
    assert result.sim_step_ms == pytest.approx(2.0)
    assert result.root_step_ms == pytest.approx(4.0)
    # Peak: the largest storage sampled over all repeats (the middle one grows fastest).
    per_repeat = [g * STEPS * (1 + cfg.num_simulations) for g in GROWTH]
    per_repeat[0] += GROWTH[0] * (1 + cfg.num_simulations)  # its extra instrumented step
    assert result.peak_bytes == max(per_repeat) == per_repeat[1]
    assert result.peak_source == "storage_bytes"
    assert result.steady_state_bytes == 1234
    # Per call, from the one instrumented step: 1 sync op + the host reads (CPU).
    assert result.syncs_per_sim_step == pytest.approx(1 + 2)
    assert result.syncs_per_root_step == pytest.approx(1 + 1)
    assert result.alloc_bytes_per_sim_step == pytest.approx(400)
    assert result.allocations_per_sim_step == pytest.approx(1)
    assert result.alloc_bytes_per_root_step == pytest.approx(200)
    # Calls: every repeat's steps, plus one instrumented step in the first repeat.
    assert backend.root_calls == 3 * STEPS + 1
    assert backend.sim_calls == (3 * STEPS + 1) * cfg.num_simulations
    # Progress counts collect steps, ending exactly at the total.
    total = 3 * STEPS + 1
    assert ticks[-1] == (total, total) and len(ticks) == total
    assert [d for d, _ in ticks] == list(range(1, total + 1))
    quiet: list[tuple[int, int]] = []
    workload.replay(
        Scripted(cfg, clock),
        cfg,
        steps=STEPS,
        repeats=2,
        instrument=False,
        timer=clock,
        progress=lambda d, t: quiet.append((d, t)),
    )
    assert quiet[-1] == (2 * STEPS, 2 * STEPS)


def _result(workload: types.ModuleType, **changes: Any) -> Any:
    base = dict(
        backend="b",
        config="c",
        device="cpu",
        dtype="float32",
        steps=5,
        repeats=1,
        sim_step_ms=1.0,
        sim_step_ms_per_repeat=(1.0,),
        root_step_ms=1.0,
        syncs_per_sim_step=None,
        syncs_per_root_step=None,
        alloc_bytes_per_sim_step=None,
        alloc_bytes_per_root_step=None,
        allocations_per_sim_step=None,
        peak_bytes=0,
        peak_source="storage_bytes",
        persistent_bytes=0,
        stored_entries=0,
        entry_payload_bytes=8,
        total_capacity=10,
        root_phase_hits={},
        sim_phase_hits={},
        checked_steps=0,
        steady_state_bytes=None,
    )
    base.update(changes)
    return workload.ReplayResult(**base)


def check_merge_arithmetic(workload: types.ModuleType) -> None:
    """merge_results: pooled repeat medians, largest peak, last storage, first probe."""
    runs = [
        _result(
            workload,
            sim_step_ms_per_repeat=(1.0,),
            root_step_ms=7.0,
            peak_bytes=30,
            persistent_bytes=1,
            syncs_per_sim_step=4.0,
            checked_steps=5,
            steady_state_bytes=100,
        ),
        _result(
            workload,
            sim_step_ms_per_repeat=(2.0, 9.0),
            repeats=2,
            root_step_ms=2.0,
            peak_bytes=90,
            persistent_bytes=2,
            steady_state_bytes=200,
        ),
        _result(
            workload,
            sim_step_ms_per_repeat=(3.0,),
            root_step_ms=3.0,
            peak_bytes=50,
            persistent_bytes=3,
            steady_state_bytes=300,
        ),
    ]
    merged = workload.merge_results(runs)
    assert merged.repeats == 4
    assert merged.sim_step_ms_per_repeat == (1.0, 2.0, 9.0, 3.0)
    assert merged.sim_step_ms == pytest.approx(2.5)
    assert merged.root_step_ms == pytest.approx(3.0)
    assert merged.peak_bytes == 90
    assert merged.persistent_bytes == 3 and merged.steady_state_bytes == 300
    assert merged.syncs_per_sim_step == 4.0 and merged.checked_steps == 5


def check_interleaved_bookkeeping(main: types.ModuleType) -> None:
    """The timed phase's progress total is the number of collect steps it replays."""
    cfg = small_cfg()
    clock = Clock()
    made: list[Scripted] = []

    def factory(c: WorkloadConfig, device: torch.device, dtype: torch.dtype) -> Scripted:
        made.append(Scripted(c, clock))
        return made[-1]

    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple[int, int]] = []
            self.labels: list[str] = []

        def start(self, label: str, unit: str = "") -> Callable[[int, int], None]:
            self.labels.append(label)
            return lambda done, total: self.calls.append((done, total))

    plan = main._Plan(STEPS, 3, CPU, torch.float32, False)
    recorder = Recorder()
    main._interleaved(cfg, STEPS, plan, factory, factory, recorder, label="tiny")
    replayed = sum(b.root_calls for b in made)
    assert replayed == 2 * 3 * STEPS + 2
    assert main.interleaved_total(3, STEPS, True) == replayed
    assert main.interleaved_total(3, STEPS, False) == 2 * 3 * STEPS
    assert recorder.calls[-1] == (replayed, replayed)
    dones = [d for d, _ in recorder.calls]
    assert dones == sorted(dones) and all(t == replayed for _, t in recorder.calls)
    assert "3 repeats x 4 steps" in recorder.labels[0]


def check_stage_bookkeeping(zerokv_backend: types.ModuleType) -> None:
    """The stage breakdown's progress counts its replayed steps; its arithmetic holds."""
    cfg = dataclasses.replace(small_cfg(), embed_dim=4)
    ticks: list[tuple[int, int]] = []
    b = zerokv_backend.stage_breakdown(
        cfg,
        CPU,
        torch.float32,
        2,
        rounds=2,
        floor_reps=2,
        progress=lambda d, t: ticks.append((d, t)),
    )
    assert ticks[-1] == (2 * 2 * 2, 2 * 2 * 2)
    assert [d for d, _ in ticks] == list(range(1, 9))
    assert b.total_us == pytest.approx(sum(b.stages_us.values()))
    assert (b.steps, b.rounds) == (2, 2)
    assert b.batch_bytes == cfg.env_num * cfg.entry_payload_bytes()


def _cells(text: str, label: str) -> list[str]:
    """The cells of the table row that starts with `label` (columns are 2+ spaces apart)."""
    for line in text.splitlines():
        if line.startswith(label):
            return re.split(r"\s{2,}", line.strip())
    raise AssertionError(f"no row {label!r} in:\n{text}")


def check_report(report: types.ModuleType, workload: types.ModuleType) -> None:
    """Ratios, their direction and the notes, from results with known numbers."""
    assert report.versus(3.3, 2.0, "faster", "slower") == "1.65x faster"
    assert report.versus(2.0, 3.3, "faster", "slower") == "1.65x slower"
    assert report.versus(10.0, 70.6) == "7.06x more"
    assert report.versus(4.0, 4.0) == "same"
    assert report.versus(None, 4.0) == "-"
    assert report.versus(16.0, 0.0, "fewer", "more") == "none vs 16"

    cfg = small_cfg()
    lg = _result(
        workload,
        backend="legacy",
        sim_step_ms=3.3,
        root_step_ms=2.0,
        syncs_per_sim_step=16.0,
        syncs_per_root_step=8.0,
        alloc_bytes_per_sim_step=3 * 2**20,
        allocations_per_sim_step=132.0,
        peak_bytes=30 * 2**20,
        steady_state_bytes=212 * 2**20,
        steps=20,
    )
    cd = _result(
        workload,
        backend="zerokv",
        sim_step_ms=2.0,
        root_step_ms=4.0,
        syncs_per_sim_step=0.0,
        syncs_per_root_step=0.0,
        alloc_bytes_per_sim_step=2**20,
        allocations_per_sim_step=16.5,
        peak_bytes=211 * 2**20,
        steady_state_bytes=211 * 2**20,
        steps=20,
    )
    cmp = report.Comparison(cfg, lg, cd, 20)
    assert cmp.speedup == pytest.approx(3.3 / 2.0)
    text = report.format_comparison(cmp)
    assert _cells(text, "time / sim step") == [
        "time / sim step (median ms)",
        "3.300",
        "2.000",
        "1.65x faster",
    ]
    assert _cells(text, "time / root step")[-1] == "2.00x slower"
    assert _cells(text, "bytes allocated / sim step")[1:] == ["3.0 MiB", "1.0 MiB", "3.00x less"]
    assert _cells(text, "allocations / sim step")[-1] == "8.00x fewer"
    assert _cells(text, "memory, peak of this run")[1:] == [
        "30.0 MiB",
        "211.0 MiB",
        "7.03x more",
    ]
    assert _cells(text, "memory, all pools full")[-1] == "1.00x less"
    assert "check: outputs equal bit for bit on all 20 checked steps" in text
    assert _cells(text, "host syncs / sim step")[-1] == f"CPU: see {report.SYNC_NOTE}"
    notes = report.comparison_notes(cmp)
    assert [n[:3] for n in notes] == [report.SYNC_NOTE, report.MEMORY_NOTE]
    flat = [" ".join(n.split()) for n in notes]
    assert "held 30.0 MiB" in flat[1] and "holds 212.0 MiB" in flat[1]
    assert "all 518 pool slots up front (211.0 MiB)" in flat[1]
    assert "says nothing about CUDA" in flat[0]

    unchecked = report.format_comparison(report.Comparison(cfg, lg, cd, 0))
    assert "outputs not checked" in unchecked and "bit for bit" not in unchecked
    # On CUDA there is no CPU caveat, and syncs get a ratio like any other metric.
    on_cuda = report.Comparison(
        cfg, dataclasses.replace(lg, device="cuda:0"), dataclasses.replace(cd, device="cuda:0"), 3
    )
    assert [n[:3] for n in report.comparison_notes(on_cuda)] == [report.MEMORY_NOTE]
    assert _cells(report.format_comparison(on_cuda), "host syncs / sim step")[-1] == ("none vs 16")
    # When legacy's pools are already full there is nothing to explain.
    full = report.Comparison(cfg, dataclasses.replace(lg, peak_bytes=212 * 2**20), cd, 3)
    assert [n[:3] for n in report.comparison_notes(full)] == [report.SYNC_NOTE]

    summary = report.format_summary([cmp, cmp])
    assert _cells(summary, "tiny")[1:] == [
        "3.300",
        "2.000",
        "1.65x faster",
        "212.0 MiB",
        "211.0 MiB",
        "1.00x less",
    ]
    stages = bench_zerokv.StageBreakdown(
        "tiny", {s: 10.0 for s in bench_zerokv.STAGES}, 50.0, 20.0, 440.0, 64, 5, 3
    )
    table = report.format_stages([stages])
    assert _cells(table, "tiny")[-2:] == ["2.50 floors", "22.00 floors"]
    assert "3 rounds of a 5-step replay" in table


def check_steady_state(legacy: types.ModuleType) -> None:
    """legacy's steady_state_bytes equals its storage once every slot is really in use."""
    cfg = dataclasses.replace(small_cfg(), max_cache_size=3)
    backend = legacy.LegacyBackend(cfg, CPU, torch.float32)
    gen = torch.Generator().manual_seed(0)
    c = cfg
    predicted = backend.steady_state_bytes()
    zkv = bench_zerokv.ZeroKVBackend(cfg, CPU, torch.float32)
    zkv_predicted = zkv.steady_state_bytes()

    def kv(t: int) -> torch.Tensor:
        return torch.randn(c.num_layers, 2, c.env_num, c.num_heads, t, c.head_dim, generator=gen)

    corr = torch.zeros(c.correction_shape)
    env_ids = list(range(c.env_num))
    prev = torch.randn(c.env_num, c.embed_dim, generator=gen)
    for b in (backend, zkv):
        b.root_step(
            env_ids, torch.zeros(c.env_num, dtype=torch.bool), prev, kv(1), kv(2), prev, corr
        )
    for _ in range(cfg.root_capacity):  # a new key per environment each time
        cur = torch.randn(c.env_num, c.embed_dim, generator=gen)
        cont = torch.ones(c.env_num, dtype=torch.bool)
        for b in (backend, zkv):
            b.root_step(env_ids, cont, prev, kv(1), kv(2), cur, corr)
        prev = cur
    for _ in range(cfg.num_simulations):  # N * B distinct recurrent keys
        child = torch.randn(c.env_num, c.embed_dim, generator=gen)
        for b in (backend, zkv):
            b.sim_step(env_ids, prev, kv(1), kv(2), child, corr)
    assert backend.stored_entries() == cfg.total_capacity
    assert backend.storage_bytes() == predicted == backend.steady_state_bytes()
    assert zkv.storage_bytes() == zkv_predicted
    assert predicted > zkv_predicted  # legacy also keeps staging copies


# --------------------------------------------------------------------------- the tests


def test_replay_arithmetic() -> None:
    check_replay_arithmetic(bench_workload)


def test_merge_arithmetic() -> None:
    check_merge_arithmetic(bench_workload)


def test_interleaved_bookkeeping() -> None:
    check_interleaved_bookkeeping(bench_main)


def test_stage_bookkeeping() -> None:
    check_stage_bookkeeping(bench_zerokv)


def test_report() -> None:
    check_report(bench_report, bench_workload)


def test_steady_state() -> None:
    check_steady_state(bench_legacy)


# --------------------------------------------------------------------------- the checks bite


@dataclasses.dataclass(frozen=True)
class Planted:
    name: str
    module: types.ModuleType
    old: str
    new: str
    check: Callable[[types.ModuleType], None]


def _report_check(report: types.ModuleType) -> None:
    check_report(report, bench_workload)


PLANTED = [
    Planted(
        "peak-is-the-last-repeat-not-the-largest",
        bench_workload,
        "peak = max(peak, col.peak_storage)",
        "peak = col.peak_storage",
        check_replay_arithmetic,
    ),
    Planted(
        "merged-peak-is-the-smallest",
        bench_workload,
        "peak_bytes=max(r.peak_bytes for r in results)",
        "peak_bytes=min(r.peak_bytes for r in results)",
        check_merge_arithmetic,
    ),
    Planted(
        "mean-of-repeats-instead-of-median",
        bench_workload,
        "sim_step_ms=statistics.median(repeat_medians)",
        "sim_step_ms=statistics.mean(repeat_medians)",
        check_replay_arithmetic,
    ),
    Planted(
        "repeat-time-is-its-slowest-call",
        bench_workload,
        "repeat_medians.append(statistics.median(col.sim_times) * 1e3)",
        "repeat_medians.append(max(col.sim_times) * 1e3)",
        check_replay_arithmetic,
    ),
    Planted(
        "progress-total-forgets-the-instrumented-step",
        bench_workload,
        "total_progress = n_steps * repeats + (1 if instrument else 0)",
        "total_progress = n_steps * repeats + (0 if instrument else 0)",
        check_replay_arithmetic,
    ),
    Planted(
        "per-call-divides-by-one-call-too-many",
        bench_workload,
        "return sum(values) / calls if calls else None",
        "return sum(values) / (calls + 1) if calls else None",
        check_replay_arithmetic,
    ),
    Planted(
        "host-reads-added-on-cuda-instead-of-cpu",
        bench_workload,
        "add_reads = not is_cuda",
        "add_reads = is_cuda",
        check_replay_arithmetic,
    ),
    Planted(
        "interleaved-total-counts-one-instrumented-step",
        bench_main,
        "return 2 * repeats * steps + (2 if instrument else 0)",
        "return 2 * repeats * steps + (1 if instrument else 0)",
        check_interleaved_bookkeeping,
    ),
    Planted(
        "interleaved-skips-the-instrumented-step-in-its-count",
        bench_main,
        "done += steps + (1 if instrument and rnd == 0 else 0)",
        "done += steps",
        check_interleaved_bookkeeping,
    ),
    Planted(
        "stage-progress-counts-one-backend",
        bench_zerokv,
        "total = 2 * rounds * steps",
        "total = rounds * steps",
        check_stage_bookkeeping,
    ),
    Planted(
        "ratio-direction-flipped",
        bench_report,
        "if ratio >= 1:",
        "if ratio < 1:",
        _report_check,
    ),
    Planted(
        "checked-flag-flipped",
        bench_report,
        "if cmp.checked_steps",
        "if not cmp.checked_steps",
        _report_check,
    ),
    Planted(
        "cpu-flag-flipped",
        bench_report,
        'cpu = lg.device.startswith("cpu")',
        'cpu = not lg.device.startswith("cpu")',
        _report_check,
    ),
    Planted(
        "memory-note-condition-flipped",
        bench_report,
        "and lg_full > lg.peak_bytes",
        "and lg_full < lg.peak_bytes",
        _report_check,
    ),
    Planted(
        "floors-of-the-floor",
        bench_report,
        "_floors(b.legacy_us, b.floor_us)",
        "_floors(b.floor_us, b.legacy_us)",
        _report_check,
    ),
    Planted(
        "steady-state-forgets-the-batch-buffer",
        bench_legacy,
        "missing += self.cfg.env_num",
        "missing += 0",
        check_steady_state,
    ),
    Planted(
        "steady-state-forgets-staging",
        bench_legacy,
        "missing += sum(1 for s in self._staging if s is None)",
        "missing += 0",
        check_steady_state,
    ),
]


def planted_copy(planted: Planted) -> types.ModuleType:
    """A fresh copy of `planted.module` with the planted bug (the string must occur once)."""
    path = Path(planted.module.__file__ or "")
    source = path.read_text(encoding="utf-8")
    assert source.count(planted.old) == 1, f"{planted.name}: {planted.old!r} is stale"
    name = f"{planted.module.__name__}__planted"
    copy = types.ModuleType(name)
    copy.__file__ = str(path)
    sys.modules[name] = copy
    try:
        exec(compile(source.replace(planted.old, planted.new), str(path), "exec"), copy.__dict__)
    finally:
        del sys.modules[name]
    return copy


@pytest.mark.parametrize("planted", PLANTED, ids=[p.name for p in PLANTED])
def test_planted_bug_is_caught(planted: Planted) -> None:
    with pytest.raises(AssertionError):
        planted.check(planted_copy(planted))


def test_an_unplanted_copy_passes() -> None:
    """The copying itself changes nothing: the same check passes on a faithful copy."""
    for module, check in (
        (bench_workload, check_replay_arithmetic),
        (bench_report, _report_check),
        (bench_main, check_interleaved_bookkeeping),
    ):
        check(planted_copy(Planted("none", module, "from __future__", "from __future__", check)))


def test_modules_are_the_real_ones() -> None:
    assert importlib.import_module("zerokv.bench.workload") is bench_workload
    assert str(ROOT / "impl") in str(Path(bench_workload.__file__ or ""))


def test_markdown_replaces_only_its_devices_block(tmp_path: Path) -> None:
    page = tmp_path / "performance.md"

    def write(device: str, text: str) -> None:
        bench_report.write_markdown(
            page, command=f"run on {device}", machine={"device": device}, sections=[text], plot=None
        )

    write("cpu", "cpu table one")
    first = page.read_text()
    assert "cpu table one" in first and "Not measured yet" in first  # the cuda placeholder
    page.write_text(first + "\nA hand-written section.\n")
    write("cuda:0", "cuda table")
    write("cpu", "cpu table two")
    text = page.read_text()
    assert "cpu table two" in text and "cpu table one" not in text
    assert "cuda table" in text and "Not measured yet" not in text
    assert text.count("A hand-written section.") == 1
    assert text.index("cpu table two") < text.index("cuda table") < text.index("A hand-written")
