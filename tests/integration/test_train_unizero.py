"""zerokv in LightZero 0.2.0's own training loop: ``zerokv.lightzero.apply()`` before
``train_unizero``, on the CartPole zoo config (CPU, absolute positions: 0.2.0's rotary
config crashes in ``train_unizero`` on its own, ``np.float32`` start positions), under
lockstep verification (``verify=True``: LightZero's own caching on a weight-sharing twin,
every inference call compared bit for bit).

* 3 collect/train cycles with evaluation before each and reanalysis switched on
  (``reanalyze_ratio > 0``; reanalysis runs on LightZero's target model, which is not
  attached): every call compared, 0 unclassified divergences (one would raise), the counts
  by kind printed;
* a planted cache bug makes the same run fail with ``LockstepDivergence``;
* ``apply`` attaches every UniZero policy built afterwards, the user's own ``model=``
  included (its target model stays LightZero's), survives a checkpoint round trip and
  ``recompute_pos_emb_diff_and_clear_cache``, and ``revert`` restores LightZero's class;
  bad options and a second ``apply`` are refused, LightZero left unpatched.
"""

from __future__ import annotations

import copy
import importlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

try:
    from zerokv.testing import lightzero_policy as lp

    lp.stub_tensorboard()
    if not hasattr(np, "bool8"):  # gym 0.25 on numpy 2
        np.bool8 = np.bool_  # type: ignore[attr-defined]
    ZOO = importlib.import_module("zoo.classic_control.cartpole.config.cartpole_unizero_config")
    TRAIN = importlib.import_module("lzero.entry").train_unizero
    MISSING = ""
except Exception as err:  # LightZero, its zoo or DI-engine's training stack missing
    MISSING = f"{type(err).__name__}: {err}"

if not MISSING and importlib.import_module("zerokv.bench.unizero").lightzero_version() == "main":
    # main's UniZero cannot build vector-observation models as shipped (its MLP encoder
    # takes no layer_num): the CartPole policy is 0.2.0's. Main's searches are covered at
    # the model level (test_attach_real_model.py, the node cache).
    MISSING = "LightZero main: the CartPole zoo policy does not build (0.2.0 only)"
elif MISSING and os.environ.get("ZEROKV_REQUIRE_LIGHTZERO"):
    raise RuntimeError(f"ZEROKV_REQUIRE_LIGHTZERO is set but {MISSING}")

pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"LightZero's training stack: {MISSING}")

from zerokv.errors import ConfigError  # noqa: E402
from zerokv.lightzero import (  # noqa: E402
    LockstepDivergence,
    apply,
    attachment_of,
    revert,
)


def small_config(tmp: Path) -> tuple[Any, Any]:
    """The CartPole zoo config, small enough for CI: 4 collect environments, 8 simulations,
    2 learner iterations of 16 samples per cycle, a quarter of them reanalysed."""
    cfg, create = copy.deepcopy(ZOO.main_config), copy.deepcopy(ZOO.create_config)
    p = cfg.policy
    wm = p.model.world_model_cfg
    wm.rotary_emb = False
    wm.device = "cpu"
    p.device, p.cuda = "cpu", False
    p.num_simulations = 8
    p.collector_env_num = cfg.env.collector_env_num = wm.collector_env_num = 4
    p.evaluator_env_num = cfg.env.evaluator_env_num = wm.evaluator_env_num = 2
    wm.env_num = 4
    p.n_episode = 4
    cfg.env.n_evaluator_episode = 2
    p.batch_size = 16
    p.update_per_collect = 2
    p.reanalyze_ratio = 0.25
    p.eval_freq = 1
    p.train_start_after_envsteps = 0
    cfg.env.manager.type = "base"
    create.env_manager.type = "base"
    # train_unizero writes its logs under './{exp_name}': a relative name, run in ``tmp``.
    os.chdir(tmp)
    cfg.exp_name = "exp"
    return cfg, create


@pytest.fixture(autouse=True)
def _back_home() -> Any:
    home = os.getcwd()
    yield
    os.chdir(home)


def test_train_unizero_under_lockstep_verification(tmp_path: Path) -> None:
    done = apply(verify=True)
    try:
        TRAIN(list(small_config(tmp_path)), seed=0, max_train_iter=6, max_env_step=int(1e5))
        (attachment,) = done.attachments()
        verified = attachment.stats()["verified"]
    finally:
        done.revert()
    print(f"\nlockstep over train_unizero (3 cycles, eval, reanalysis on): {verified}")
    assert verified["calls"] > 500 and verified["compared"] == 4 * verified["calls"]
    assert attachment.stats()["host_reads"] == 0


def test_a_planted_cache_bug_fails_the_training_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zerokv import search

    real = search.SearchCache._write

    def wrong_window(self: Any, slots: Any, batch: Any, lengths: Any, correction: Any) -> Any:
        out = real(self, slots, batch, lengths, correction)
        self.slab.kv[0, 0, slots[0], :, -1, :] += 1e-3  # the newest token of one row off
        return out

    monkeypatch.setattr(search.SearchCache, "_write", wrong_window)
    done = apply(verify=True)
    try:
        # LightZero's fresh heads are zero (outputs ignore the context): the bug shows once
        # the first learner iterations have trained them, in the second cycle.
        with pytest.raises(LockstepDivergence, match="environment row"):
            TRAIN(list(small_config(tmp_path)), seed=0, max_train_iter=4, max_env_step=int(1e5))
    finally:
        done.revert()


def test_apply_the_users_model_checkpoints_and_revert(tmp_path: Path) -> None:
    compile_config = importlib.import_module("ding.config").compile_config
    create_policy = importlib.import_module("ding.policy").create_policy

    cls = importlib.import_module("lzero.policy.unizero").UniZeroPolicy
    before = dict(cls.__dict__)
    for bad, match in ((dict(speed=2), "unknown apply options"), (dict(verify="yes"), "bool")):
        with pytest.raises(ConfigError, match=match):
            apply(**bad)
        assert dict(cls.__dict__) == before
    cfg, create = small_config(tmp_path)
    cfg = compile_config(cfg, seed=0, env=None, auto=True, create_cfg=create, save_cfg=False)
    mine = create_policy(copy.deepcopy(cfg.policy), enable_field=["collect"])._model
    done = apply()
    try:
        with pytest.raises(ConfigError, match="already in effect"):
            apply()
        policy = create_policy(cfg.policy, model=mine, enable_field=["learn", "collect", "eval"])
        # 0.2.0 wraps the model in torch.compile; the world model is the user's.
        assert policy._collect_model.world_model is mine.world_model
        assert attachment_of(mine.world_model) is not None
        assert attachment_of(policy._target_model.world_model) is None  # LightZero's own
        lp.drive((policy,), steps=2)
        # A checkpoint round trip, then what the training loop does after weight updates.
        buffer = io.BytesIO()
        torch.save(policy.learn_mode.state_dict(), buffer)
        buffer.seek(0)
        policy.learn_mode.load_state_dict(torch.load(buffer, weights_only=False))
        policy.recompute_pos_emb_diff_and_clear_cache()
        lp.drive((policy,), steps=2, mode="eval")
        assert done.attachments() and policy._zerokv_attachment.stats()["recurrent_calls"] > 0
    finally:
        assert revert() is True
    assert revert() is False
    assert dict(cls.__dict__) == before
    assert attachment_of(mine.world_model) is None


def test_two_policies_in_one_process_each_have_their_own_cache(tmp_path: Path) -> None:
    """zerokv holds no state two policies could share by accident: two policies built
    under one ``apply(verify=True)``, searched in turn, each attached to its own cache and
    each in lockstep with its own LightZero twin."""
    done = apply(verify=True)
    try:
        first, second = lp.build_policy(seed=0), lp.build_policy(seed=1)
        a, b = first._zerokv_attachment, second._zerokv_attachment
        assert a is not b and a.world.cache is not b.world.cache
        assert a.world.cache.slab.kv.data_ptr() != b.world.cache.slab.kv.data_ptr()
        for step in range(3):
            lp.drive((first, second), steps=1, seed=step)
        for attachment in (a, b):
            verified = attachment.stats()["verified"]
            assert verified["calls"] > 0 and set(verified) == {"calls", "compared"}
    finally:
        done.revert()
