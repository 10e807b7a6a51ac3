"""The node-addressed machine bites: each planted bug in ``zerokv.search`` fails it.

Three bugs a node-addressed cache could plausibly have, planted with ``monkeypatch``:

* two rows of a simulation share one slot (the row dropped from the address);
* a new search keeps the previous search's nodes (they would be served as parents);
* the host lengths forget the window rule (positions and widths would go wrong).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from differential.test_diff_search_cache import SearchCacheMachine
from zerokv import search
from zerokv.guard import exclusive

QUICK = settings(
    max_examples=300,
    stateful_step_count=30,
    phases=[Phase.generate],  # no shrinking: the failure itself is the point
    database=None,
    deadline=None,
    derandomize=True,
    report_multiple_bugs=False,
    suppress_health_check=list(HealthCheck),
)


def _rows_share_a_slot(cache: search.SearchCache, address: Any, env_ids: Any) -> int:
    if address.index == 0:
        return int(env_ids[address.row])
    return int(cache.env_num + (address.index - 1) * cache.max_rows)


def _keeps_old_nodes(original: Callable[..., int]) -> Callable[..., int]:
    def begin(cache: search.SearchCache, env_ids: Any) -> int:
        kept = list(cache.node_lengths)
        number = original(cache, env_ids)
        cache.node_lengths = kept
        return number

    return begin


def _no_window(lengths: Any, cl: int) -> Any:
    plan = _original_plan(lengths, cl)
    return type(plan)(plan.lengths, plan.windowed, list(plan.lengths))


_original_plan = search._plan


@pytest.mark.parametrize("bug", ["rows share a slot", "new search keeps nodes", "no window"])
def test_search_cache_machine_catches_a_planted_bug(
    bug: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if bug == "rows share a slot":
        monkeypatch.setattr(search.SearchCache, "_slot", _rows_share_a_slot)
    elif bug == "new search keeps nodes":
        begin = search.SearchCache.begin_search.__wrapped__  # type: ignore[attr-defined]
        monkeypatch.setattr(search.SearchCache, "begin_search", exclusive(_keeps_old_nodes(begin)))
    else:
        monkeypatch.setattr(search, "_plan", _no_window)
    with pytest.raises(AssertionError):
        run_state_machine_as_test(SearchCacheMachine, settings=QUICK)
