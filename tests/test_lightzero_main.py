"""The drop-in inside LightZero main's real UniZero world model: outputs bit-identical.

Skipped unless LightZero main is importable: either installed, or a checkout named by
``ZEROKV_LIGHTZERO`` (a directory holding ``lzero/``, put first on ``sys.path``), with the
packages its ``lzero.model`` imports. lightzero==0.2.0 (the package index release) has no
cache manager, so it skips there too.

Three copies of one tiny UniZero model (same seed, so the same weights) are driven through
the same seeded call sequence - ``initial_inference`` per environment step, then a search
of ``recurrent_inference`` calls whose parents are picked by a seeded generator among the
nodes of each environment's tree - with their caches managed by

* LightZero's own ``KVCacheManager`` (``use_new_cache_manager=True``),
* zerokv's drop-in, put in place with ``zerokv.lightzero.installed()`` (the same config),
* LightZero's legacy dict caches (``use_new_cache_manager=False``),

and every output (latent state, reward, policy logits, value) must be bit-identical
across the three, and so must the world model's own hit counters. The sequence includes
an episode end (the policy's ``init_pools[e].clear()``, or the legacy dict's clear) with
a restart in a mixed batch (one env's action -1), a step where one environment is not
ready, and ``clear_caches()`` as the policy's interval rule calls it. Configs: learned
absolute positions (the window rule with its correction), rotary positions, and
``rebuild_kv_window_from_tokens`` (which reads ``init_pools[e]._key_to_index`` and
``recur_pool._key_to_index``). The heads are not zero-initialised
(``last_linear_layer_init_zero=False``): a fresh model with zero heads predicts one latent
for every child, so every recurrent store would share a key.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from zerokv.lightzero import LIGHTZERO_MODULE, KVCacheManager, installed

_CHECKOUT = os.environ.get("ZEROKV_LIGHTZERO")
if _CHECKOUT and _CHECKOUT not in sys.path:
    sys.path.insert(0, _CHECKOUT)


def _lightzero() -> tuple[Any, Any, Any] | None:
    try:
        manager_module = importlib.import_module(LIGHTZERO_MODULE)
        model_module = importlib.import_module("lzero.model.unizero_model")
        easydict = importlib.import_module("easydict")
    except Exception:  # not installed, 0.2.0 (no cache manager), or a dependency missing
        return None
    return manager_module, model_module, easydict.EasyDict


LIGHTZERO = _lightzero()
pytestmark = pytest.mark.skipif(
    LIGHTZERO is None,
    reason=(
        "LightZero main is not importable (set ZEROKV_LIGHTZERO to a checkout of "
        "LightZero main, commit 9f717c80 or later, with its model dependencies installed)"
    ),
)

ENVS = 4
ACTIONS = 3
SIMULATIONS = 10
STEPS = 7
EMBED = 64


def world_model_cfg(mode: str, **extra: object) -> Any:
    """LightZero's policy default world_model_cfg keys, shrunk; ``mode`` picks the caches."""
    assert LIGHTZERO is not None
    cfg = LIGHTZERO[2](
        {
            "encoder_type": "resnet",
            "continuous_action_space": False,
            "tokens_per_block": 2,
            "max_blocks": 10,
            "max_tokens": 20,
            "context_length": 8,
            "gru_gating": False,
            "device": "cpu",
            "analysis_sim_norm": False,
            "analysis_dormant_ratio_weight_rank": False,
            "action_space_size": ACTIONS,
            "group_size": 8,
            "attention": "causal",
            "num_layers": 2,
            "num_heads": 2,
            "embed_dim": EMBED,
            "embed_pdrop": 0.0,
            "resid_pdrop": 0.0,
            "attn_pdrop": 0.0,
            "support_size": 101,
            "max_cache_size": 5000,
            "use_new_cache_manager": mode != "legacy",
            "exact_kv_window_reset": False,
            "rebuild_kv_window_from_tokens": False,
            "env_num": ENVS,
            "latent_recon_loss_weight": 0.0,
            "perceptual_loss_weight": 0.0,
            "open_loop_consistency_loss_weight": 0.0,
            "open_loop_recurrent_loss_weight": 0.0,
            "open_loop_prefix_transitions": 0,
            "policy_entropy_weight": 0.0,
            "final_norm_option_in_head": "LayerNorm",
            "final_norm_option_in_encoder": "LayerNorm",
            "predict_latent_loss_type": "mse",
            "obs_type": "image",
            "gamma": 1,
            "dormant_threshold": 0.025,
            "rotary_emb": False,
            "rope_theta": 10000,
            "max_seq_len": 8192,
            "lora_r": 0,
            "lora_alpha": 1,
            "lora_dropout": 0.0,
            "decode_loss_mode": None,
            "task_embed_option": None,
            "use_task_embed": False,
            "use_normal_head": True,
            "use_softmoe_head": False,
            "use_moe_head": False,
            "last_linear_layer_init_zero": False,
            "zero_init_head_names": None,
            "num_experts_in_moe_head": 4,
            "moe_in_transformer": False,
            "multiplication_moe_in_transformer": False,
            "n_shared_experts": 1,
            "num_experts_per_tok": 1,
            "num_experts_of_moe_in_transformer": 8,
            "use_priority": False,
        }
    )
    cfg.update(extra)
    return cfg


def build(mode: str, extra: Mapping[str, object]) -> Any:
    assert LIGHTZERO is not None
    _, model_module, _ = LIGHTZERO
    torch.manual_seed(0)
    model = model_module.UniZeroModel(
        observation_shape=(3, 64, 64),
        action_space_size=ACTIONS,
        num_res_blocks=1,
        num_channels=16,
        norm_type="BN",
        world_model_cfg=world_model_cfg(mode, **extra),
    )
    model.eval()
    return model


@dataclass
class Trace:
    """Every output of a run, in call order, and the world model's counters."""

    outputs: list[tuple[str, torch.Tensor]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)

    def add(self, label: str, out: Any) -> None:
        for name in ("latent_state", "reward", "policy_logits", "value"):
            value = getattr(out, name)
            tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            self.outputs.append((f"{label}.{name}", tensor.detach().clone()))


def end_episode(model: Any, env: int, mode: str) -> None:
    """What UniZeroPolicy._reset_collect does for an env whose episode ended."""
    wm = model.world_model
    if mode == "legacy":
        wm.past_kv_cache_init_infer_envs[env].clear()
    else:
        wm.kv_cache_manager.init_pools[env].clear()
    wm.past_token_context_init_infer_envs[env].clear()


def drive(model: Any, mode: str, seed: int = 1, steps_total: int = STEPS) -> Trace:
    """The seeded call sequence (module docstring)."""
    import numpy as np

    gen = torch.Generator().manual_seed(seed)
    trace = Trace()
    obs_shape = (3, 64, 64)
    last_obs = torch.zeros(ENVS, *obs_shape)
    last_action = [-1] * ENVS
    steps = np.zeros(ENVS, dtype=np.int64)
    with torch.no_grad():
        for step in range(steps_total):
            ready = [0, 2, 3] if step == 4 else list(range(ENVS))  # env 1 not ready once
            obs = torch.randn(len(ready), *obs_shape, generator=gen)
            out = model.initial_inference(
                last_obs[ready],
                [last_action[e] for e in ready],
                obs,
                steps[ready],
                ready_env_id=ready,
            )
            trace.add(f"step{step}.initial", out)
            roots = out.latent_state.detach().cpu().numpy()
            # A search: per env a tree of nodes (latent, depth); parents picked by `gen`.
            nodes: list[list[tuple[Any, int]]] = [[(roots[i], 0)] for i in range(len(ready))]
            history = []
            for sim in range(SIMULATIONS):
                picks = [int(torch.randint(len(tree), (1,), generator=gen)) for tree in nodes]
                parents = np.stack([tree[p][0] for tree, p in zip(nodes, picks)])
                depth = [tree[p][1] + 1 for tree, p in zip(nodes, picks)]
                actions = torch.randint(ACTIONS, (len(ready),), generator=gen)
                history.append((parents, actions))
                rec = model.recurrent_inference(history, sim, depth, steps[ready])
                trace.add(f"step{step}.sim{sim}", rec)
                children = rec.latent_state.detach().cpu().numpy()
                for i, tree in enumerate(nodes):
                    tree.append((children[i], depth[i]))
            chosen = torch.randint(ACTIONS, (len(ready),), generator=gen).tolist()
            for i, env in enumerate(ready):
                last_obs[env] = obs[i]
                last_action[env] = chosen[i]
                steps[env] += 1
            if step == 2:  # env 3's episode ends: its next step is a first step (mixed batch)
                end_episode(model, 3, mode)
                last_obs[3] = 0.0
                last_action[3] = -1
                steps[3] = 0
            if step == 5:
                model.world_model.clear_caches()  # the policy's kv_cache_clear_interval rule
    wm = model.world_model
    trace.counters = {
        "root_hit_cnt": wm.root_hit_cnt,
        "root_total_query_cnt": wm.root_total_query_cnt,
        "hit_count": wm.hit_count,
        "total_query_count": wm.total_query_count,
    }
    return trace


def assert_identical(a: Trace, b: Trace, names: tuple[str, str]) -> None:
    assert len(a.outputs) == len(b.outputs)
    for (label, x), (_, y) in zip(a.outputs, b.outputs):
        assert x.shape == y.shape and x.dtype == y.dtype, label
        assert torch.equal(x, y), f"{label} differs between {names[0]} and {names[1]}"
    assert a.counters == b.counters, (names, a.counters, b.counters)


CONFIGS = {
    "absolute": {},
    "rotary": {"rotary_emb": True},
    "rebuild": {"rebuild_kv_window_from_tokens": True},
}


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    """LightZero's import configures DEBUG logging, and its records per lookup would
    dominate the run; this test compares outputs, not logs."""
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


@pytest.fixture
def lightzero_manager() -> Iterator[type]:
    assert LIGHTZERO is not None
    manager_module, _, _ = LIGHTZERO
    yield manager_module.KVCacheManager


@pytest.mark.parametrize("config", list(CONFIGS))
def test_outputs_identical_to_lightzero_and_legacy(config: str, lightzero_manager: type) -> None:
    assert LIGHTZERO is not None
    manager_module, _, _ = LIGHTZERO
    extra = CONFIGS[config]
    theirs = build("manager", extra)
    assert type(theirs.world_model.kv_cache_manager) is lightzero_manager
    with installed() as original:
        assert original is lightzero_manager
        ours = build("manager", extra)
    assert manager_module.KVCacheManager is lightzero_manager  # uninstalled again
    legacy = build("legacy", extra)
    manager = ours.world_model.kv_cache_manager
    assert isinstance(manager, KVCacheManager)
    for a, b in zip(theirs.state_dict().values(), ours.state_dict().values()):
        assert torch.equal(a, b)  # the same weights: the same seed
    trace_theirs = drive(theirs, "manager")
    trace_ours = drive(ours, "manager")
    trace_legacy = drive(legacy, "legacy")
    assert_identical(trace_theirs, trace_ours, ("LightZero's manager", "zerokv"))
    assert_identical(trace_legacy, trace_ours, ("legacy caches", "zerokv"))
    # The run exercised the caches: root and recurrent lookups hit, the window rule ran.
    counters = trace_ours.counters
    assert counters["root_hit_cnt"] > 0 and counters["hit_count"] > 0
    # Root lookups missed after the episode end and after clear_caches().
    assert counters["root_hit_cnt"] < counters["root_total_query_cnt"]
    summary = manager.get_stats_summary()
    assert summary["root_hits"] > 0 and summary["recurrent_hits"] > 0
    assert set(summary["init_pools"]) == {f"env_{e}" for e in range(ENVS)}
    assert manager.recur_clear_count >= STEPS  # forward_initial_inference clears it


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
    assert LIGHTZERO is not None
    manager_module, _, _ = LIGHTZERO
    theirs = build("manager", {})
    original = manager_module.KVCacheManager
    manager_module.KVCacheManager = _Perturbed
    try:
        broken = build("manager", {})
    finally:
        manager_module.KVCacheManager = original
    assert isinstance(broken.world_model.kv_cache_manager, _Perturbed)
    with pytest.raises(AssertionError, match="differs"):
        assert_identical(
            drive(theirs, "manager", steps_total=2),
            drive(broken, "manager", steps_total=2),
            ("LightZero", "planted bug"),
        )


# --------------------------------------------------------------------------- timing
# Not a test: `ZEROKV_LIGHTZERO=<checkout> python tests/test_lightzero_main.py [RUNS]` prints the
# time of the cache code per recurrent_inference call (retrieve_or_generate_kvcache +
# trim_and_pad_kv_cache + update_cache_context) for each of the three cache systems, at
# UniZero's Atari shape, median of interleaved runs (docs/migration.md, "Speed").

GLUE = ("retrieve_or_generate_kvcache", "trim_and_pad_kv_cache", "update_cache_context")


def glue_ms_per_recurrent_call(mode: str) -> float:
    """One run of ``drive`` at the Atari shape; cache-code ms per recurrent_inference."""
    import time

    extra = {"embed_dim": 768, "num_heads": 8, "env_num": 8}
    if mode == "zerokv":
        with installed():
            model = build("manager", extra)
    else:
        model = build("manager" if mode == "lightzero" else "legacy", extra)
    spent = {"glue": 0.0, "calls": 0}
    wm = model.world_model
    for name in GLUE:
        original = getattr(wm, name)

        def timed(*args: Any, __call: Any = original, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return __call(*args, **kwargs)
            finally:
                spent["glue"] += time.perf_counter() - start

        setattr(wm, name, timed)
    initial, recurrent = model.initial_inference, model.recurrent_inference

    def initial_untimed(*args: Any, **kwargs: Any) -> Any:
        before = spent["glue"]
        try:
            return initial(*args, **kwargs)
        finally:
            spent["glue"] = before  # only the recurrent calls' cache code counts

    def recurrent_counted(*args: Any, **kwargs: Any) -> Any:
        spent["calls"] += 1
        return recurrent(*args, **kwargs)

    model.initial_inference = initial_untimed
    model.recurrent_inference = recurrent_counted
    drive(model, "legacy" if mode == "legacy" else "manager")
    return 1e3 * spent["glue"] / spent["calls"]


if __name__ == "__main__":
    import statistics

    if LIGHTZERO is None:
        raise SystemExit("LightZero main is not importable (set ZEROKV_LIGHTZERO)")
    torch.set_num_threads(1)
    logging.disable(logging.INFO)
    ENVS, SIMULATIONS, STEPS, EMBED = 8, 25, 5, 768
    modes = ["lightzero", "zerokv", "legacy"]
    times: dict[str, list[float]] = {m: [] for m in modes}
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    for run in range(runs):
        for mode in modes if run % 2 == 0 else modes[::-1]:
            times[mode].append(glue_ms_per_recurrent_call(mode))
    for mode in modes:
        print(
            f"{mode:10s} cache code per recurrent_inference: "
            f"{statistics.median(times[mode]):.2f} ms (runs: {times[mode]})"
        )
