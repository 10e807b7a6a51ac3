"""``python -m zerokv.bench.train``'s own arithmetic and report (the runs themselves need
LightZero's training stack and minutes; docs/performance.md has a measured table)."""

from __future__ import annotations

import math
from typing import Any

from zerokv.bench import train


class _Owner:
    def work(self, rows: list[int]) -> int:
        return len(rows)


def test_the_clock_times_and_counts_what_it_wraps(monkeypatch: Any) -> None:
    ticks = iter([0.0, 0.5, 1.0, 2.0])
    monkeypatch.setattr("zerokv.bench.train.time.perf_counter", lambda: next(ticks))
    clock = train._Clock()
    owner = _Owner()
    clock.wrap(owner, "work", "work", lambda rows: len(rows))
    assert owner.work([1, 2, 3]) == 3  # the wrapped method still answers
    assert owner.work([4]) == 1
    assert clock.seconds["work"] == 1.5 and clock.counts["work"] == 4
    assert clock.rate("work", "work") == 1.5 / 4
    assert math.isnan(clock.rate("work", "nothing counted"))


def test_the_report_gives_medians_ranges_and_the_ratio() -> None:
    def run(scale: float) -> dict[str, float]:
        return {key: scale for key, _ in train.FIGURES}

    table = train._table({"lightzero": [run(2.0), run(4.0), run(3.0)], "zerokv": [run(1.0)] * 3})
    rows = table.splitlines()
    assert rows[0].startswith("| figure |") and len(rows) == 2 + len(train.FIGURES)
    assert "| s per collected env step | 3 (2 - 4) | 1 (1 - 1) | 3.00x |" in rows


def test_the_command_line_parses() -> None:
    args = train._parser().parse_args(["--runs", "2", "--cycles", "1", "--reanalyze-ratio", "0"])
    assert (args.runs, args.cycles, args.reanalyze_ratio, args.one) == (2, 1, 0.0, False)
