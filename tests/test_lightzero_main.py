"""The drop-in inside LightZero main's real UniZero world model: outputs bit-identical.

Skipped unless LightZero main is importable: either installed, or a checkout named by
``ZEROKV_LIGHTZERO`` (a directory holding ``lzero/``, put first on ``sys.path``), with the
packages its ``lzero.model`` imports. lightzero==0.2.0 (the package index release) has no
cache manager, so it skips there too.

This module owns the checks; the model, the call sequence and the comparison are
``zerokv.bench.unizero``'s (shared with ``tests/integration/test_attach_real_model.py``).
Three copies of one tiny image UniZero model (the ``tiny-image`` shape, same seed, so the
same weights) are driven through the same seeded call sequence (``drive``) -
``initial_inference`` per environment step, then a search of ``recurrent_inference``
calls whose parents are picked by a seeded generator among the nodes of each
environment's tree - with their caches managed by (``build_model``'s ``cache_mode``)

* LightZero's own ``KVCacheManager`` (``"manager"``: ``use_new_cache_manager=True``),
* zerokv's drop-in, put in place with ``zerokv.lightzero.installed()`` (``"dropin"``, the
  same config),
* LightZero's legacy dict caches (``"legacy"``: ``use_new_cache_manager=False``),

and every output (latent state, reward, policy logits, value) must be bit-identical
across the three, and so must the world model's own hit counters. The sequence includes
an episode end (the policy's ``init_pools[e].clear()``, or the legacy dict's clear) with
a restart in a mixed batch (one env's action -1), a step where one environment is not
ready, and ``clear_caches()`` as the policy's interval rule calls it. Configs: learned
absolute positions (the window rule with its correction), rotary positions, and
``rebuild_kv_window_from_tokens`` (which reads ``init_pools[e]._key_to_index`` and
``recur_pool._key_to_index``). The heads' last layers are re-randomised (``build_model``):
a fresh model with zero heads predicts one latent for every child, so every recurrent
store would share a key.

Run as a script, it times LightZero's cache glue around each of the three (``timing``
below).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from zerokv.bench import unizero
from zerokv.bench.unizero import (
    MAIN_SCHEDULE,
    SHAPES,
    Schedule,
    Trace,
    build_model,
    compare,
    drive,
)
from zerokv.lightzero import LIGHTZERO_MODULE, KVCacheManager, installed

_CHECKOUT = os.environ.get("ZEROKV_LIGHTZERO")
if _CHECKOUT and _CHECKOUT not in sys.path:
    sys.path.insert(0, _CHECKOUT)


def _lightzero_main() -> Any:
    """LightZero main's ``kv_cache_manager`` module (its model importable too), or None."""
    try:
        unizero.import_lightzero()
        return importlib.import_module(LIGHTZERO_MODULE)
    except Exception:  # not installed, 0.2.0 (no cache manager), or a dependency missing
        return None


MANAGER_MODULE = _lightzero_main()
pytestmark = pytest.mark.skipif(
    MANAGER_MODULE is None,
    reason=(
        "LightZero main is not importable (set ZEROKV_LIGHTZERO to a checkout of "
        "LightZero main, commit 9f717c80 or later, with its model dependencies installed)"
    ),
)

SHAPE = SHAPES["tiny-image"]
#: env 3's episode ends after step 2, env 1 is not ready at step 4, clear_caches() after
#: step 5 (the module docstring's sequence).
SCHEDULE = MAIN_SCHEDULE

#: name -> (rotary positions, world-model config overrides)
CONFIGS: dict[str, tuple[bool, dict[str, object]]] = {
    "absolute": (False, {}),
    "rotary": (True, {}),
    "rebuild": (False, {"rebuild_kv_window_from_tokens": True}),
}


def run(model: Any, schedule: Schedule = SCHEDULE) -> Trace:
    return drive(model, SHAPE, schedule, ready_env_ids=True)


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    """LightZero's import configures DEBUG logging, and its records per lookup would
    dominate the run; this test compares outputs, not logs."""
    with unizero.quiet():
        yield


@pytest.mark.parametrize("config", list(CONFIGS))
def test_outputs_identical_to_lightzero_and_legacy(config: str) -> None:
    lightzero_manager = MANAGER_MODULE.KVCacheManager
    rotary, extra = CONFIGS[config]
    theirs = build_model(SHAPE, cache_mode="manager", rotary=rotary, config=extra)
    assert type(theirs.world_model.kv_cache_manager) is lightzero_manager
    ours = build_model(SHAPE, cache_mode="dropin", rotary=rotary, config=extra)
    assert MANAGER_MODULE.KVCacheManager is lightzero_manager  # uninstalled again
    with installed() as original:  # what build_model's "dropin" set aside
        assert original is lightzero_manager
    legacy = build_model(SHAPE, cache_mode="legacy", rotary=rotary, config=extra)
    manager = ours.world_model.kv_cache_manager
    assert isinstance(manager, KVCacheManager)
    for a, b in zip(theirs.state_dict().values(), ours.state_dict().values()):
        assert torch.equal(a, b)  # the same weights: the same seed
    trace_theirs = run(theirs)
    trace_ours = run(ours)
    trace_legacy = run(legacy)
    compare(trace_theirs, trace_ours, ("LightZero's manager", "zerokv"), counters=True)
    compare(trace_legacy, trace_ours, ("legacy caches", "zerokv"), counters=True)
    # The run exercised the caches: root and recurrent lookups hit, the window rule ran.
    counters = trace_ours.counters
    assert counters["root_hit_cnt"] > 0 and counters["hit_count"] > 0
    # Root lookups missed after the episode end and after clear_caches().
    assert counters["root_hit_cnt"] < counters["root_total_query_cnt"]
    summary = manager.get_stats_summary()
    assert summary["root_hits"] > 0 and summary["recurrent_hits"] > 0
    assert set(summary["init_pools"]) == {f"env_{e}" for e in range(SHAPE.env_num)}
    assert manager.recur_clear_count >= SCHEDULE.steps  # forward_initial_inference clears it


class _Perturbed(KVCacheManager):
    """Planted bug: the first key of every hierarchical hit is off by 1e-3."""

    def hierarchical_get(self, env_id: int, cache_key: int) -> Any:
        got = super().hierarchical_get(env_id, cache_key)
        if got is None:
            return None
        wrong = got.clone()
        wrong._keys_values[0]._k_cache._cache[0, 0, 0, 0] += 1e-3
        return wrong


def test_the_comparison_bites() -> None:
    """A drop-in with a planted bug, put in LightZero's place, changes the outputs."""
    theirs = build_model(SHAPE, cache_mode="manager")
    original = MANAGER_MODULE.KVCacheManager
    MANAGER_MODULE.KVCacheManager = _Perturbed
    try:
        broken = build_model(SHAPE, cache_mode="manager")
    finally:
        MANAGER_MODULE.KVCacheManager = original
    assert isinstance(broken.world_model.kv_cache_manager, _Perturbed)
    short = dataclasses.replace(SCHEDULE, steps=2)
    with pytest.raises(AssertionError, match="differs"):
        compare(run(theirs, short), run(broken, short), ("LightZero", "planted bug"), counters=True)


# --------------------------------------------------------------------------- timing
# Not a test: `ZEROKV_LIGHTZERO=<checkout> python tests/test_lightzero_main.py [RUNS]` prints the
# time of the cache code per recurrent_inference call (retrieve_or_generate_kvcache +
# trim_and_pad_kv_cache + update_cache_context: unizero.glue_ms_per_recurrent_call) for each
# of the three cache systems, at UniZero's Atari shape with 25 simulations and the test's
# sequence cut to 5 steps, median of interleaved runs (docs/migration.md, "Speed").

if __name__ == "__main__":
    import statistics

    if MANAGER_MODULE is None:
        raise SystemExit("LightZero main is not importable (set ZEROKV_LIGHTZERO)")
    torch.set_num_threads(1)
    atari = dataclasses.replace(SHAPES["atari"], num_simulations=25)
    schedule = dataclasses.replace(SCHEDULE, steps=5, simulations=atari.num_simulations)
    modes = {"lightzero": "manager", "zerokv": "dropin", "legacy": "legacy"}
    times: dict[str, list[float]] = {name: [] for name in modes}
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    for repeat in range(runs):
        for name in modes if repeat % 2 == 0 else list(modes)[::-1]:
            with unizero.quiet():
                times[name].append(unizero.glue_ms_per_recurrent_call(atari, schedule, modes[name]))
    for name in modes:
        print(
            f"{name:10s} cache code per recurrent_inference: "
            f"{statistics.median(times[name]):.2f} ms (runs: {times[name]})"
        )
