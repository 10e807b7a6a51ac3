"""The differential suite bites: one planted bug, in-process, must fail the FIFO machine.

The full mutation run (``tests/mutants/run_mutants.py``, ``nox -s mutants``) copies the
repository per mutant and is too slow for the default session; this test plants one bug
with ``monkeypatch`` - the FIFO ring pointer of the device index advances one slot too
far after every batch that inserted a key - and requires the FIFO pool machine to fail.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from differential.test_diff_pool import FIFOPoolMachine
from zerokv.index import Placement
from zerokv.index.device import FIFOIndex
from zerokv.rows import Rows


def test_fifo_machine_catches_an_off_by_one_ring_pointer(monkeypatch: pytest.MonkeyPatch) -> None:
    original = FIFOIndex.put

    def off_by_one(self: FIFOIndex, rows: Rows) -> Placement:
        out = original(self, rows)
        pool_ids = self._row_map(rows.env_ids).pool_ids
        inserted = torch.zeros_like(self.next).index_add_(0, pool_ids, out.result.inserted.long())
        self.next.add_((inserted > 0).long()).remainder_(self.capacity)
        return out

    monkeypatch.setattr(FIFOIndex, "put", off_by_one)
    quick = settings(
        max_examples=200,
        stateful_step_count=30,
        phases=[Phase.generate],  # no shrinking: the failure itself is the point
        database=None,
        deadline=None,
        derandomize=True,
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
    )
    with pytest.raises(AssertionError) as caught:
        run_state_machine_as_test(FIFOPoolMachine, settings=quick)
    assert "differ" in str(caught.value) or "ring pointer" in str(caught.value)


def test_every_planted_bug_still_matches_the_code() -> None:
    """The full mutation run needs each mutant's text to occur exactly once in the code; a
    refactor that moves the text would make the mutant fail to apply, so the default
    session checks the strings (cheap) and ``nox -s mutants`` stays runnable."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "mutants" / "run_mutants.py"
    spec = importlib.util.spec_from_file_location("run_mutants", path)
    assert spec is not None and spec.loader is not None
    runner = importlib.util.module_from_spec(spec)
    import sys

    sys.modules["run_mutants"] = runner  # dataclasses resolve their module while loading
    try:
        spec.loader.exec_module(runner)
        assert len(runner.MUTANTS) >= 25
        assert runner.check_strings(runner.MUTANTS) == []
    finally:
        del sys.modules["run_mutants"]
