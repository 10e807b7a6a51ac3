"""The benchmark's command line explains itself: help for every option, a progress bar with
units for every phase (naming the sweep point it is on), a plot whose title and axes say
what they show, default output paths under the ignored ``bench-out/``, and a ``--device
cuda`` error that says how to get a CUDA torch."""

from __future__ import annotations

import argparse
import json
import re
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from test_bench_arithmetic import Planted, planted_copy

import zerokv.bench.report as bench_report
from zerokv.bench.__main__ import DEFAULT_JSON, DEFAULT_PLOT, OUTPUT_DIR, _parser, main
from zerokv.bench.report import SweepPoint

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--config", "cartpole", "--steps", "1", "--repeats", "1"]


def options_without_help(parser: argparse.ArgumentParser) -> list[str]:
    """The options of `parser` whose help text is missing or empty."""
    return [
        "/".join(a.option_strings)
        for a in parser._actions
        if a.option_strings and not isinstance(a, argparse._HelpAction) and not a.help
    ]


def test_every_option_has_help() -> None:
    assert options_without_help(_parser()) == []
    text = _parser().format_help()
    for needle in ("legacy", "re-creation of LightZero", "--device", "--dtype", "--seed"):
        assert needle in text
    # The check bites: an option without help is reported.
    bare = argparse.ArgumentParser()
    bare.add_argument("--seed", type=int)
    assert options_without_help(bare) == ["--seed"]


def phases(stderr: str) -> list[tuple[str, str]]:
    """(label, last bar drawn) of every phase in a progress stream (bars are redrawn after
    a carriage return; a label is any other line)."""
    found: list[tuple[str, str]] = []
    label = None
    bar = None
    for line in stderr.replace("\r", "\n").split("\n"):
        if not line.strip():
            continue
        if line.startswith("  ["):
            assert label is not None, f"a bar without a phase: {line!r}"
            bar = line
            continue
        if label is not None:
            assert bar is not None, f"a phase without a bar: {label!r}"
            found.append((label, bar))
        label, bar = line, None
    if label is not None:
        assert bar is not None, f"a phase without a bar: {label!r}"
        found.append((label, bar))
    return found


def test_every_phase_has_a_bar_with_units(capsys: pytest.CaptureFixture[str]) -> None:
    args = [*TINY, "--progress", "--envs-sweep", "2,4", "--cl-sweep", "8"]
    assert main(args) == 0
    seen = phases(capsys.readouterr().err)
    labels = [label for label, _ in seen]
    expected = [
        "cartpole: checking every output bit for bit, 1 steps",
        "cartpole: timing legacy and zerokv, 1 repeats x 1 steps each (+1 counted step each)",
        "cartpole: counting the device path's ops",
        "cartpole sweep B=2 (point 1 of 2): timing legacy and zerokv, 1 repeats x 1 steps each",
        "cartpole sweep B=4 (point 2 of 2): timing legacy and zerokv, 1 repeats x 1 steps each",
        "cartpole sweep cl=8 (point 1 of 1): timing legacy and zerokv, 1 repeats x 1 steps each",
        "cartpole: zerokv stage by stage and the copy floor, 3 rounds x 2 backends x 1 steps",
    ]
    assert labels == expected
    totals = [re.search(r"\] (\d+)/(\d+) (collect steps), \d+ s$", bar) for _, bar in seen]
    assert all(t is not None for t in totals), [bar for _, bar in seen]
    done_total = [(int(t.group(1)), int(t.group(2))) for t in totals if t is not None]
    assert done_total == [(1, 1), (4, 4), (3, 3), (2, 2), (2, 2), (2, 2), (6, 6)]


def test_no_progress_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*TINY, "--no-progress", "--no-stages"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.index("legacy: a re-creation") < out.index("cartpole: L2")


def check_plot(report: types.ModuleType) -> None:
    """The title names preset, device, dtype and run; y axes start at 0; a red cross
    marks exactly the points where zerokv is slower."""
    import matplotlib.pyplot as plt

    points = [
        SweepPoint("atari", "env_num", 2, 1.0, 1.5),  # zerokv slower here
        SweepPoint("atari", "env_num", 4, 2.0, 1.0),
        SweepPoint("atari", "context_length", 8, 3.0, 2.0),
        SweepPoint("atari", "context_length", 16, 4.0, 2.5),
    ]
    fig = report.plot_figure(points, device="cuda:0", dtype="bfloat16", steps=20, repeats=3)
    try:
        title = fig.get_suptitle()
        for needle in ("atari", "cuda:0", "bfloat16", "20 steps x 3 repeats"):
            assert needle in title
        env_ax, cl_ax = fig.axes
        for ax in (env_ax, cl_ax):
            assert ax.get_ylim()[0] == 0
        marks = {
            ax: [ln for ln in ax.get_lines() if ln.get_label() == "zerokv slower"]
            for ax in fig.axes
        }
        assert len(marks[env_ax]) == 1 and marks[cl_ax] == []
        line = marks[env_ax][0]
        xs, ys = (np.asarray(d, dtype=float).tolist() for d in (line.get_xdata(), line.get_ydata()))
        assert xs == [2.0] and ys == [1.5]
    finally:
        plt.close(fig)


def test_plot_title_axes_and_slower_marker() -> None:
    pytest.importorskip("matplotlib")
    check_plot(bench_report)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("ax.set_ylim(bottom=0)", "ax.set_ylim(auto=True)"),
        ("if p.candidate_ms > p.legacy_ms]", "if p.candidate_ms < p.legacy_ms]"),
        ('f"{\', \'.join(presets)}: median time per simulation step, {device} {dtype}{run}"',
         'f"{\', \'.join(presets)}: median time per simulation step{run}"'),
    ],
)  # fmt: skip
def test_plot_check_bites(old: str, new: str) -> None:
    pytest.importorskip("matplotlib")
    with pytest.raises(AssertionError):
        check_plot(planted_copy(Planted("plot", bench_report, old, new, check_plot)))


def test_output_options_default_under_the_ignored_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = _parser().parse_args(["--json", "--plot", "--markdown"])
    assert args.json == DEFAULT_JSON and args.plot == DEFAULT_PLOT
    assert all(p.startswith(f"{OUTPUT_DIR}/") for p in (args.json, args.plot, args.markdown))
    assert f"{OUTPUT_DIR}/" in (ROOT / ".gitignore").read_text().splitlines()
    monkeypatch.chdir(tmp_path)
    assert main([*TINY, "--no-progress", "--no-stages", "--json"]) == 0
    assert (tmp_path / DEFAULT_JSON).is_file()


def test_json_reports_the_device_path_ops(tmp_path: Path) -> None:
    """Ops per step for legacy, zerokv as run and zerokv's device path (the ops CUDA
    launches), and how many of them are views."""
    out = tmp_path / "bench.json"
    assert main([*TINY, "--no-progress", "--no-stages", "--json", str(out)]) == 0
    config = json.loads(out.read_text())["configs"]["cartpole"]
    ops, views = config["ops_per_sim_step"], config["views_per_sim_step"]
    assert set(ops) == set(views) == {"legacy", "zerokv", "zerokv_device_path"}
    assert set(config["ops_per_root_step"]) == set(ops)
    device = ops["zerokv_device_path"]
    # The CPU's host index reads keys on the host; the device path launches ops instead.
    assert ops["zerokv"] < device < ops["legacy"]
    assert 0 < views["zerokv_device_path"] < device


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_says_how_to_get_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "https://download.pytorch.org/whl/cu128" in err and "ZEROKV_TORCH=" in err
    if torch.version.cuda is None:
        assert "CPU-only build" in err
