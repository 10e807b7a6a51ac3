"""``zerokv.lightzero.attach_policy`` on LightZero's real UniZero policy (the CartPole zoo
config through ``create_policy``), searched by LightZero's own C++ tree.

* Every inference call of ``collect_mode.forward`` and ``eval_mode.forward`` is made, with
  the same arguments, on a twin policy with LightZero's own caching (``Lockstep``); every
  latent state, reward, policy logit and value must have the same bits, with 0 host reads
  in cache code. A planted addressing bug makes the comparison fail.
* Importing LightZero's world model puts the root logger at DEBUG: no zerokv record is
  formed on the hot path.
* ``detach`` restores the policy's MCTS objects and world model exactly.
* Bad input is refused with a typed error, changing nothing.
* POMDP aliasing: LightZero's freshly initialised observation head predicts one latent for
  every child, so bitwise-equal latents with different paths fill a search; LightZero's
  caching then serves nodes another node's context (the lockstep sees it), the node cache
  serves each its own (its lengths follow each node's depth).
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any

import pytest
import torch

from zerokv.bench import unizero
from zerokv.errors import (
    ConfigError,
    NodeDepthError,
    NodeRangeError,
    StaleSearchError,
    UnsupportedOperationError,
)
from zerokv.lightzero import attach, attach_policy
from zerokv.search import NodeAddress

try:
    unizero.import_lightzero()
    from zerokv.testing import lightzero_policy as lp

    lp.stub_tensorboard()
    importlib.import_module("zoo.classic_control.cartpole.config.cartpole_unizero_config")

    MISSING = ""
except Exception as err:  # LightZero, its zoo or DI-engine's policy stack missing
    MISSING = f"{type(err).__name__}: {err}"

if not MISSING and importlib.import_module("zerokv.bench.unizero").lightzero_version() == "main":
    # main's UniZero cannot build vector-observation models as shipped (its MLP encoder
    # takes no layer_num): the CartPole policy is 0.2.0's. Main's searches are covered at
    # the model level (test_attach_real_model.py, the node cache).
    MISSING = "LightZero main: the CartPole zoo policy does not build (0.2.0 only)"
elif MISSING and os.environ.get("ZEROKV_REQUIRE_LIGHTZERO"):
    raise RuntimeError(f"ZEROKV_REQUIRE_LIGHTZERO is set but {MISSING}")

pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"LightZero's policy stack: {MISSING}")


def _lockstep(rotary: bool, steps: int = 3, **build: Any) -> tuple[Any, Any, Any]:
    policy, reference = (
        lp.build_policy(rotary=rotary, **build),
        lp.build_policy(rotary=rotary, **build),
    )
    attachment = attach_policy(policy)
    step = lp.Lockstep().install(policy, reference)
    try:
        for mode in ("collect", "eval", "collect"):
            lp.drive((policy,), steps=steps, mode=mode)
    finally:
        step.remove()
    return attachment, step, policy


@pytest.mark.parametrize("rotary", [False, True], ids=["absolute", "rotary"])
def test_policy_searches_equal_lightzero_bit_for_bit(rotary: bool) -> None:
    attachment, step, _ = _lockstep(rotary)
    try:
        stats = attachment.stats()
        assert step.calls > 50 and step.compared == 4 * step.calls
        assert step.differences == []
        assert stats["recurrent_calls"] > 0 and stats["host_reads"] == 0
        assert stats["recomputed_misses"] == 0
    finally:
        attachment.detach()


def test_a_planted_addressing_bug_fails_the_lockstep(monkeypatch: pytest.MonkeyPatch) -> None:
    from zerokv import search

    def every_parent_is_row_zero(cache: Any, address: NodeAddress, env_ids: Any) -> int:
        if address.index == 0:
            return int(env_ids[0])
        return int(cache.env_num + (address.index - 1) * cache.max_rows)

    monkeypatch.setattr(search.SearchCache, "_slot", every_parent_is_row_zero)
    policy, reference = lp.build_policy(), lp.build_policy()
    attachment = attach_policy(policy)
    step = lp.Lockstep().install(policy, reference)
    try:
        lp.drive((policy,), steps=2)
    except NodeDepthError:  # the depth check saw the wrong parents first
        return
    finally:
        step.remove()
        attachment.detach()
    assert step.differences, "the lockstep did not see rows served another row's context"


def test_root_logger_at_debug_forms_no_zerokv_record() -> None:
    assert logging.getLogger().level == logging.DEBUG  # what LightZero's import did
    policy = lp.build_policy()
    attachment = attach_policy(policy)
    formed: list[str] = []
    factory = logging.getLogRecordFactory()

    def counting(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        if record.name.startswith("zerokv"):
            formed.append(record.getMessage())
        return record

    logging.setLogRecordFactory(counting)
    try:
        lp.drive((policy,), steps=3)
    finally:
        logging.setLogRecordFactory(factory)
        attachment.detach()
    assert formed == []


def _snapshot(policy: Any) -> dict[str, Any]:
    wm = policy._collect_model.world_model
    return {
        "wm": dict(wm.__dict__),
        "collect": dict(policy._mcts_collect.__dict__),
        "eval": dict(policy._mcts_eval.__dict__),
    }


def _same(before: dict[str, Any], after: dict[str, Any]) -> None:
    for part in before:
        assert before[part].keys() == after[part].keys(), part
        # ``training``: LightZero's search puts the model in eval mode itself.
        changed = [
            k for k in before[part] if k != "training" and before[part][k] is not after[part][k]
        ]
        assert changed == [], f"{part}: {changed}"


def test_detach_restores_the_policy_exactly() -> None:
    policy = lp.build_policy()
    lp.drive((policy,), steps=1)
    before = _snapshot(policy)
    attachment = attach_policy(policy)
    assert "search" in policy._mcts_collect.__dict__
    lp.drive((policy,), steps=2)
    attachment.detach()
    _same(before, _snapshot(policy))
    lp.drive((policy,), steps=1)  # LightZero's own path works again
    attachment.detach()  # idempotent


def test_bad_input_is_refused_and_changes_nothing() -> None:
    policy = lp.build_policy()
    before = _snapshot(policy)
    with pytest.raises(ConfigError, match="UniZero policy"):
        attach_policy(object())
    with pytest.raises(ConfigError, match="num_simulations"):
        attach_policy(policy, num_simulations=0)
    with pytest.raises(ConfigError, match="unknown attach options"):
        attach_policy(policy, key="xxh64")
    real = policy._mcts_eval
    policy._mcts_eval = object()  # a Python tree or another MCTS
    try:
        with pytest.raises(ConfigError, match="C\\+\\+ tree search"):
            attach_policy(policy)
    finally:
        policy._mcts_eval = real
    other = attach(policy._collect_model.world_model)
    with pytest.raises(ConfigError, match="already attached"):
        attach_policy(policy)
    other.detach()
    _same(before, _snapshot(policy))

    with pytest.raises(ConfigError, match="below the 25 simulations"):
        attach_policy(policy, num_simulations=3)  # a search larger than the pool
    _same(before, _snapshot(policy))
    small = attach_policy(policy)
    try:
        policy._mcts_collect._cfg.num_simulations = 40  # the config changed after attach
        with pytest.raises(NodeRangeError, match="40 simulations"):
            lp.drive((policy,), steps=1)
        policy._mcts_collect._cfg.num_simulations = 25
        wm = policy._collect_model.world_model
        with pytest.raises(UnsupportedOperationError, match="outside a search"):
            wm.forward_recurrent_inference([(None, torch.zeros(1))], 0, [1], 0)
        cache = small.world.cache
        search = cache.begin_search([0])
        cache.end_search()
        with pytest.raises(StaleSearchError):
            cache.gather_reserve(search, [NodeAddress(0, 0)], 2)
    finally:
        small.detach()
    _same(before, _snapshot(policy))


def test_pomdp_aliasing_each_node_keeps_its_own_context() -> None:
    """LightZero's zero-initialised observation head: every child of a search has the same
    latent. LightZero's cache serves all of them one entry; the node cache one per path."""
    attachment, step, policy = _lockstep(False, steps=2, alias=True)
    try:
        assert step.differences, "LightZero's aliasing went unseen"
        assert all(name == "forward_recurrent_inference" for _, name, _, _ in step.differences)
        # The node cache's contexts follow each node's path: a search's nodes (all with
        # one latent) hold the root's tokens plus 2 per level.
        cache = attachment.world.cache
        seen: dict[int, int] = {}
        original = cache.store_nodes

        def record(search: int, parents: Any, children: Any, depths: Any, *rest: Any) -> Any:
            stored = original(search, parents, children, depths, *rest)
            for depth, n in zip(depths, stored):
                seen.setdefault(depth, n)
            return stored

        cache.store_nodes = record
        lp.drive((policy,), steps=1)
        # Depth 1 and depth 2 share a latent but not a context (the window caps deeper
        # ones at cl - 3 tokens); LightZero's latent key gives them one entry.
        assert {1, 2} <= seen.keys() and seen[2] == seen[1] + 2, seen
    finally:
        attachment.detach()


def test_reencoded_root_keeps_its_history() -> None:
    """An environment's last observation re-encoded with other low bits (as a ready subset
    changes the encoder's batch): LightZero's root lookup misses and the step restarts from
    the last latent alone; the node cache's root entry is the environment's own, so the
    history stays (its length grows by 2 per step, as a context should)."""
    import numpy as np

    from zerokv.bench.unizero import SHAPES, build_model
    from zerokv.lightzero import attach_nodes

    shape = SHAPES["tiny-vector"]
    lightzero, zerokv = build_model(shape), build_model(shape)  # one seed: same weights
    nodes = attach_nodes(zerokv)
    envs, dim = shape.env_num, shape.observation_shape
    assert isinstance(dim, int)
    gen = torch.Generator().manual_seed(0)
    obs = [torch.randn(envs, dim, generator=gen) for _ in range(3)]
    steps = np.zeros(envs, dtype=np.int64)
    action = [1] * envs
    # Re-encoding noise of a few ulps: the same observation as far as the task goes.
    reencoded = obs[1] * (1 + 2**-18)
    calls = [
        (torch.zeros(envs, dim), [-1] * envs, obs[0]),
        (obs[0], action, obs[1]),
        (reencoded, action, obs[2]),  # the same observation, other low bits
    ]
    hits, lengths = [], []
    try:
        for last, act, current in calls:
            lightzero.initial_inference(last, act, current, steps)
            zerokv.initial_inference(last, act, current, steps)
            hits.append(lightzero.world_model.root_hit_cnt)
            lengths.append(list(nodes.cache.root_lengths))
    finally:
        nodes.detach()
    assert hits[1] - hits[0] == envs  # step 1: every root found by its key
    assert hits[2] - hits[1] == 0  # step 2: the re-encoded key finds nothing: history lost
    cl = shape.context_length
    assert lengths[0] == [1] * envs and lengths[1] == [3] * envs
    assert lengths[2] == [min(5, cl - 3)] * envs  # the node cache kept each history
