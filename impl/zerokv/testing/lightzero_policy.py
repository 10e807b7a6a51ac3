"""LightZero's real UniZero policy, built and searched as a user runs it: twin policies and
their outputs, call by call (needs LightZero with its zoo configs, e.g. lightzero==0.2.0).

* ``build_policy`` - the CartPole zoo config through DI-engine's ``compile_config`` and
  ``create_policy`` (learn, collect and eval modes), absolute positions by default (0.2.0's
  rotary config crashes in ``train_unizero``; the model itself supports both);
* ``twin`` - a second policy with the first's weights;
* ``Tap`` - records every ``initial_inference`` / ``recurrent_inference`` output of a
  policy's world model (latent state, reward, policy logits, value) as host tensors;
* ``Lockstep`` - every inference call of one policy's world model made, with the same
  arguments, on a twin's world model too (LightZero's own caching beside zerokv), and the
  outputs compared bit for bit: independent of the tree's tie-breaking;
* ``drive`` - the same seeded sequence of ``collect_mode.forward`` / ``eval_mode.forward``
  calls on two policies in lockstep, returning their outputs and taps.

LightZero's C++ tree breaks ties with ``rand()`` seeded from the clock in every
``batch_traverse``, so two policies are compared in lockstep, one step after the other in
one process, never across runs.
"""

from __future__ import annotations

import copy
import importlib
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["Lockstep", "Tap", "build_policy", "drive", "stub_tensorboard", "twin"]


def stub_tensorboard() -> None:
    """``lzero.policy`` imports ``torch.utils.tensorboard`` (through ``lzero.entry``) and
    ``wandb`` (used only with ``use_wandb``); where a package is missing, a stand-in: a
    ``SummaryWriter`` that does nothing, an empty ``wandb`` module."""
    try:
        importlib.import_module("wandb")
    except ImportError:
        sys.modules["wandb"] = types.ModuleType("wandb")
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        module = types.ModuleType("torch.utils.tensorboard")

        class SummaryWriter:
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                pass

            def __getattr__(self, name: str) -> Callable[..., None]:
                return lambda *args, **kwargs: None

        module.SummaryWriter = SummaryWriter  # type: ignore[attr-defined]
        sys.modules["torch.utils.tensorboard"] = module


def build_policy(
    rotary: bool = False,
    seed: int = 0,
    num_simulations: int | None = None,
    env_num: int | None = None,
    randomise: bool = True,
    alias: bool = False,
) -> Any:
    """LightZero's UniZero policy on the CartPole zoo config, on the CPU; with
    ``randomise`` its heads' last layers re-randomised (``zerokv.bench.unizero
    .randomise_heads``: LightZero's zero heads tie every action); with ``alias`` the
    observation head's last layer is zero again (LightZero's initialisation), so every child
    of a search has the same latent while rewards, values and policies still depend on the
    context: POMDP aliasing in its purest form."""
    stub_tensorboard()
    compile_config = importlib.import_module("ding.config").compile_config
    create_policy = importlib.import_module("ding.policy").create_policy
    zoo = importlib.import_module("zoo.classic_control.cartpole.config.cartpole_unizero_config")
    create_config, main_config = zoo.create_config, zoo.main_config

    cfg = copy.deepcopy(main_config)
    cfg.policy.model.world_model_cfg.rotary_emb = rotary
    cfg.policy.device = "cpu"
    cfg.policy.cuda = False
    if num_simulations is not None:
        cfg.policy.num_simulations = num_simulations
        cfg.policy.model.world_model_cfg.num_simulations = num_simulations
    if env_num is not None:
        cfg.policy.collector_env_num = cfg.policy.evaluator_env_num = env_num
        cfg.env.collector_env_num = cfg.env.evaluator_env_num = env_num
        cfg.policy.model.world_model_cfg.env_num = env_num
    torch.manual_seed(seed)
    cfg = compile_config(
        cfg, seed=seed, env=None, auto=True, create_cfg=copy.deepcopy(create_config), save_cfg=False
    )
    policy = create_policy(cfg.policy, enable_field=["learn", "collect", "eval"])
    if randomise:
        from zerokv.bench.unizero import randomise_heads

        randomise_heads(_world(policy), seed + 1, rotary)
    if alias:
        head = _world(policy).head_observations.head_module
        last = [m for m in head if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.zero_()
    return policy


def twin(policy: Any, seed: int = 0) -> Any:
    """A second policy of ``policy``'s config with ``policy``'s weights."""
    cfg = policy._cfg
    torch.manual_seed(seed)
    create_policy = importlib.import_module("ding.policy").create_policy
    other = create_policy(copy.deepcopy(cfg), enable_field=["learn", "collect", "eval"])
    other._model.load_state_dict(policy._model.state_dict())
    wm = _world(other)
    if not getattr(wm.config, "rotary_emb", False):
        wm.precompute_pos_emb_diff_kv()
    return other


def _world(policy: Any) -> Any:
    return policy._collect_model.world_model


@dataclass
class Tap:
    """Outputs of a policy's world-model calls: ``(call, tensor name, host tensor)``."""

    records: list[tuple[str, str, torch.Tensor]] = field(default_factory=list)
    _names: list[str] = field(default_factory=list)
    _wm: Any = None

    def install(self, policy: Any) -> Tap:
        """Wrap the world model's two inference methods (what is there now: LightZero's,
        or an attachment's) on the instance."""
        wm = self._wm = _world(policy)
        for name in ("forward_initial_inference", "forward_recurrent_inference"):
            inner = getattr(wm, name)
            self._names.append(name)
            self._saved = getattr(self, "_saved", {})
            self._saved[name] = wm.__dict__.get(name, _ABSENT)
            wm.__dict__[name] = self._wrap(name, inner)
        return self

    def _wrap(self, name: str, inner: Callable[..., Any]) -> Callable[..., Any]:
        def tapped(*args: Any, **kwargs: Any) -> Any:
            out = inner(*args, **kwargs)
            _, latent, reward, policy_logits, value = out
            for label, tensor in (
                ("latent_state", latent),
                ("reward", reward),
                ("policy_logits", policy_logits),
                ("value", value),
            ):
                if isinstance(tensor, torch.Tensor):
                    self.records.append((name, label, tensor.detach().cpu().clone()))
            return out

        return tapped

    def remove(self) -> None:
        """Put back what ``install`` wrapped."""
        for name in self._names:
            saved = self._saved[name]
            if saved is _ABSENT:
                self._wm.__dict__.pop(name, None)
            else:
                self._wm.__dict__[name] = saved
        self._names.clear()


_ABSENT = object()

#: The outputs of an inference call that are compared (the first, output_sequence, is the
#: transformer's raw sequence, which the policy never reads).
OUTPUTS = ("latent_state", "reward", "policy_logits", "value")


@dataclass
class Lockstep:
    """Every ``forward_initial_inference`` / ``forward_recurrent_inference`` of a policy's
    world model also made on a twin's world model, with the same arguments in the same
    order; ``differences`` lists ``(call number, method, output, rows that differ)``."""

    calls: int = 0
    compared: int = 0
    differences: list[tuple[int, str, str, list[int]]] = field(default_factory=list)
    _wm: Any = None
    _saved: dict[str, Any] = field(default_factory=dict)
    _models: tuple[Any, Any] = (None, None)

    def install(self, policy: Any, reference: Any) -> Lockstep:
        ref = _world(reference)
        wm = self._wm = _world(policy)
        self._models = (policy._collect_model, reference._collect_model)
        for name in ("forward_initial_inference", "forward_recurrent_inference"):
            self._saved[name] = wm.__dict__.get(name, _ABSENT)
            wm.__dict__[name] = self._wrap(name, getattr(wm, name), getattr(ref, name))
        for name in ("clear_caches",):
            self._saved[name] = wm.__dict__.get(name, _ABSENT)
            wm.__dict__[name] = self._both(getattr(wm, name), getattr(ref, name))
        return self

    def _both(self, inner: Callable[..., Any], other: Callable[..., Any]) -> Callable[..., Any]:
        def both(*args: Any, **kwargs: Any) -> Any:
            other(*args, **kwargs)
            return inner(*args, **kwargs)

        return both

    def _wrap(
        self, name: str, inner: Callable[..., Any], other: Callable[..., Any]
    ) -> Callable[..., Any]:
        def lockstep(*args: Any, **kwargs: Any) -> Any:
            # The twin in the mode the policy put its model in (eval in a search), and copies
            # of the inputs: LightZero's calls may change them in place.
            mine, twin = self._models
            twin.train(mine.training)
            try:
                want = other(*copy.deepcopy(args), **copy.deepcopy(kwargs))
            except Exception as err:  # LightZero 0.2.0's double miss, for one
                want = None
                failure = f"LightZero raised {type(err).__name__}: {err}"
            out = inner(*args, **kwargs)
            self.calls += 1
            if want is None:
                self.differences.append((self.calls, name, failure, []))
                return out
            for label, x, y in zip(OUTPUTS, out[1:], want[1:]):
                if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
                    continue
                self.compared += 1
                rows = x.shape[0] if x.dim() else 1
                x2, y2 = x.reshape(rows, -1), y.reshape(rows, -1)
                if x2.shape != y2.shape:
                    self.differences.append((self.calls, name, label, list(range(rows))))
                    continue
                same = (x2 == y2) | (torch.isnan(x2) & torch.isnan(y2))
                bad = (~same.all(dim=1)).nonzero().flatten().tolist()
                if bad:
                    self.differences.append((self.calls, name, label, bad))
            return out

        return lockstep

    def remove(self) -> None:
        for name, saved in self._saved.items():
            if saved is _ABSENT:
                self._wm.__dict__.pop(name, None)
            else:
                self._wm.__dict__[name] = saved
        self._saved.clear()


def _step_inputs(
    rng: np.random.Generator, rows: int, obs_dim: int, actions: int
) -> tuple[torch.Tensor, np.ndarray]:
    obs = torch.as_tensor(rng.normal(size=(rows, obs_dim)).astype(np.float32))
    mask = np.ones((rows, actions), dtype=np.float32)
    return obs, mask


def drive(
    policies: tuple[Any, ...],
    steps: int = 4,
    mode: str = "collect",
    seed: int = 0,
    observations: Callable[[int, int], torch.Tensor] | None = None,
) -> tuple[list[dict[int, Any]], ...]:
    """``steps`` calls of ``collect_mode.forward`` (or ``eval_mode.forward``) on each policy
    in turn, with the same observations and the same numpy seed before each
    call (collect draws Dirichlet noise and samples actions from numpy). Returns each
    policy's outputs per step. ``observations(step, rows)`` may supply the observations."""
    first = policies[0]
    cfg = first._cfg
    rows = int(cfg.collector_env_num if mode == "collect" else cfg.evaluator_env_num)
    obs_dim = int(cfg.model.observation_shape)
    actions = int(cfg.model.action_space_size)
    rng = np.random.default_rng(seed)
    outs: tuple[list[dict[int, Any]], ...] = tuple([] for _ in policies)
    for policy in policies:  # as LightZero's collector and evaluator start their episodes
        (policy.collect_mode if mode == "collect" else policy.eval_mode).reset()
    for step in range(steps):
        obs, mask = _step_inputs(rng, rows, obs_dim, actions)
        if observations is not None:
            obs = observations(step, rows)
        timestep = [step] * rows
        noise_seed = int(rng.integers(1 << 31))
        for policy, out in zip(policies, outs):
            np.random.seed(noise_seed)
            if mode == "collect":
                result = policy.collect_mode.forward(
                    obs.clone(), mask, 1.0, [-1] * rows, 0.0, np.arange(rows), timestep
                )
            else:
                result = policy.eval_mode.forward(
                    obs.clone(), mask, [-1] * rows, np.arange(rows), timestep
                )
            out.append(result)
    return outs
