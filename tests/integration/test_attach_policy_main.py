"""``attach_policy`` on LightZero **main**'s real UniZero policy (runs only with LightZero
main importable: ``PYTHONPATH=<checkout built with its ctree> pytest tests/integration``).

main's CartPole model does not build as shipped (its MLP encoder takes no ``layer_num``),
so the policy comes from main's Atari UniZero config (image observations, main's C++
tree with its ``deterministic`` flag, separate collect / eval simulation counts), made
small for the CPU (E = 64, 2 environments, 4 simulations) and compiled against the
CartPole env's defaults (compile_config needs a registered env; no Atari env is built).
Every inference call of ``collect_mode.forward`` / ``eval_mode.forward`` is made on a
twin with LightZero main's own caching too (``Lockstep``), and every output must have the
same bits. With LightZero's recurrent pool sized at exactly ``num_simulations x env_num``
its own lookups miss search parents, which ``verify=True`` classifies as
``recurrent-miss``; the equality run sizes LightZero's pool as its default does.
"""

from __future__ import annotations

import copy
import importlib
import sys
import types
from typing import Any

import numpy as np
import pytest
import torch

from zerokv.bench import unizero

try:
    unizero.import_lightzero()
    IS_MAIN = unizero.lightzero_version() == "main"
except unizero.LightZeroMissing:
    IS_MAIN = False

pytestmark = pytest.mark.skipif(not IS_MAIN, reason="needs LightZero main (PYTHONPATH checkout)")


def _main_policy_config(pool_simulations: int) -> tuple[Any, Any]:
    from zerokv.testing import lightzero_policy as lp

    lp.stub_tensorboard()
    for name in ("ale_py", "cv2"):  # imported by main's Atari env module, never used here
        sys.modules.setdefault(name, types.ModuleType(name))
    entry: Any = importlib.import_module("lzero.entry")
    captured: list[Any] = []
    real = entry.train_unizero
    entry.train_unizero = lambda cfgs, **kw: captured.append(cfgs)
    try:
        importlib.import_module("zoo.atari.config.atari_unizero_config").main(
            "PongNoFrameskip-v4", 0
        )
    finally:
        entry.train_unizero = real
    cfg, create = (copy.deepcopy(c) for c in captured[0])
    cart = importlib.import_module("zoo.classic_control.cartpole.config.cartpole_unizero_config")
    create.env, cfg.env = copy.deepcopy(cart.create_config.env), copy.deepcopy(cart.main_config.env)
    p, wm = cfg.policy, cfg.policy.model.world_model_cfg
    wm.update(embed_dim=64, num_heads=2, num_layers=2, device="cpu", env_num=2)
    wm.collector_env_num = wm.evaluator_env_num = 2
    p.device, p.cuda = "cpu", False
    for holder in (p, cfg.env):
        holder.collector_env_num = holder.evaluator_env_num = 2
    for name in ("num_simulations", "collect_num_simulations", "eval_num_simulations"):
        if name in p:
            p[name] = 4
    wm.num_simulations = pool_simulations  # what LightZero sizes its recurrent pool by
    return cfg, create


def _build(cfg: Any, create: Any) -> Any:
    from zerokv.bench.unizero import randomise_heads

    compile_config = importlib.import_module("ding.config").compile_config
    create_policy = importlib.import_module("ding.policy").create_policy
    torch.manual_seed(0)
    compiled = compile_config(
        copy.deepcopy(cfg), seed=0, env=None, auto=True, create_cfg=copy.deepcopy(create),
        save_cfg=False,
    )  # fmt: skip
    policy = create_policy(compiled.policy, enable_field=["learn", "collect", "eval"])
    wm = policy._collect_model.world_model
    randomise_heads(wm, 1, bool(getattr(wm.config, "rotary_emb", False)))
    return policy


def _run(policy: Any, steps: int = 3) -> None:
    rows, actions = 2, int(policy._cfg.model.action_space_size)
    rng = np.random.default_rng(0)
    for mode in ("collect", "eval", "collect"):
        (policy.collect_mode if mode == "collect" else policy.eval_mode).reset()
        for step in range(steps):
            obs = torch.as_tensor(rng.normal(size=(rows, 3, 64, 64)).astype(np.float32))
            mask = np.ones((rows, actions), dtype=np.float32)
            stamp = np.array([step] * rows)
            ready = np.arange(rows)
            np.random.seed(step)
            if mode == "collect":
                policy.collect_mode.forward(obs, mask, 1.0, [-1] * rows, 0.0, ready, stamp)
            else:
                policy.eval_mode.forward(obs, mask, [-1] * rows, ready, stamp)


def test_main_policy_searches_equal_lightzero_bit_for_bit() -> None:
    from zerokv.lightzero import attach_policy
    from zerokv.testing.lightzero_policy import Lockstep

    cfg, create = _main_policy_config(pool_simulations=50)
    policy, reference = _build(cfg, create), _build(cfg, create)
    attachment = attach_policy(policy)
    step = Lockstep().install(policy, reference)
    try:
        _run(policy)
    finally:
        step.remove()
        attachment.detach()
    assert step.calls > 100 and step.compared == 4 * step.calls
    assert step.differences == []
    assert attachment.stats()["host_reads"] == 0


def test_main_pool_at_the_search_size_misses_and_verify_classifies_it() -> None:
    from zerokv.lightzero import attach_policy

    cfg, create = _main_policy_config(pool_simulations=4)
    policy = _build(cfg, create)
    attachment = attach_policy(policy, verify=True)
    try:
        _run(policy)
        verified = attachment.stats()["verified"]
    finally:
        attachment.detach()
    assert verified["calls"] > 100 and verified.get("recurrent-miss", 0) > 0
    assert set(verified) <= {"calls", "compared", "recurrent-miss", "latent-alias", "root-miss"}
