"""LightZero's real UniZero model, driven MCTS-style: builders, the seeded call sequence,
the comparison of outputs, and the benchmark of ``python -m zerokv.bench --model unizero``.

Everything LightZero is imported lazily (``import_lightzero``); without it this module
imports, and its entry points raise ``LightZeroMissing`` with the install command.

* ``Shape`` / ``SHAPES`` - model shapes: ``cartpole`` (vector observations, E = 64, 2 heads,
  8 environments, 25 simulations) and ``atari`` (64x64 images, E = 768, 8 heads, 8
  environments, 50 simulations), UniZero's zoo configs; ``tiny-vector`` / ``tiny-image``
  for the tests.
* ``build_model(shape, version, cache_mode, rotary, seed, *, config)`` - a ``UniZeroModel``
  in eval mode, its prediction heads' last layers re-randomised (seeded): LightZero
  zero-initialises them, and an untrained model with zero heads predicts one latent for
  every child, so every recurrent store of a search would share one key. ``cache_mode``
  (``CACHE_MODES``) picks the caches: LightZero's legacy dicts, LightZero main's
  ``KVCacheManager``, or zerokv's drop-in built in its place (``"dropin"``, through
  ``zerokv.lightzero.installed()``); ``config`` overrides keys of the world-model config.
* ``Schedule`` and ``drive(model, ...)`` - the seeded call sequence: per environment step an
  ``initial_inference`` on the ready environments (subsets included), then a search of
  ``recurrent_inference`` calls whose parents a seeded generator picks among each tree's
  nodes (roots and earlier children), episode ends (all environments, or one on main),
  ``clear_caches()`` as the policy's interval rule calls it. The picks do not depend on
  the outputs, so two runs make the same calls (LightZero's C++ tree breaks ties with a
  time-seeded ``rand``). Returns a ``Trace`` of every output and of the world model's hit
  counters after the run. ``MAIN_SCHEDULE``: the tests' sequence on LightZero main.
* ``compare(a, b)`` - bitwise (or within ``atol``) equality of two traces (and of their hit
  counters with ``counters=True``).
* ``run_benchmark`` - LightZero's caching and ``attach`` interleaved in one run;
  ``glue_ms_per_recurrent_call`` - LightZero's cache glue alone, for one cache mode.
* ``quiet()`` - silences LightZero's prints and INFO/DEBUG logs.
"""

from __future__ import annotations

import copy
import importlib
import logging
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "CACHE_MODES",
    "COUNTERS",
    "MAIN_SCHEDULE",
    "SHAPES",
    "BenchResult",
    "LightZeroMissing",
    "Schedule",
    "Shape",
    "Trace",
    "build_model",
    "compare",
    "drive",
    "glue_ms_per_recurrent_call",
    "import_lightzero",
    "lightzero_version",
    "quiet",
    "run_benchmark",
]

log = logging.getLogger("zerokv.bench")

#: What to install for the real model (docs/quickstart.md, noxfile.py's integration session).
INSTALL_HINT = (
    "pip install --no-deps lightzero==0.2.0 einops easydict DI-engine==0.5.3 "
    "(and the packages listed in noxfile.py's LIGHTZERO_PACKAGES)"
)

LightZeroObject = Any


class LightZeroMissing(ImportError):
    """LightZero (``lzero``) or a package its model code imports is not installed."""


def import_lightzero() -> tuple[Any, Any]:
    """``(lzero.model.unizero_model, easydict.EasyDict)``; ``LightZeroMissing`` otherwise."""
    try:
        model_module = importlib.import_module("lzero.model.unizero_model")
        easydict = importlib.import_module("easydict")
    except ImportError as err:
        raise LightZeroMissing(
            f"LightZero's UniZero model cannot be imported ({err}); install it with: "
            + INSTALL_HINT
        ) from err
    return model_module, easydict.EasyDict


def lightzero_version() -> str:
    """``"main"`` when LightZero has its ``KVCacheManager`` module, else ``"0.2.0"``."""
    import_lightzero()
    try:
        importlib.import_module("lzero.model.unizero_world_models.kv_cache_manager")
    except ImportError:
        return "0.2.0"
    return "main"


# --------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class Shape:
    """A UniZero model shape and its search size."""

    name: str
    obs: str  # "vector" or "image"
    embed_dim: int
    num_heads: int
    num_layers: int
    env_num: int
    num_simulations: int
    actions: int
    context_length: int = 8

    @property
    def observation_shape(self) -> tuple[int, ...] | int:
        return 4 if self.obs == "vector" else (3, 64, 64)


SHAPES = {
    "cartpole": Shape("cartpole", "vector", 64, 2, 2, 8, 25, 2),
    "atari": Shape("atari", "image", 768, 8, 2, 8, 50, 6),
    "tiny-vector": Shape("tiny-vector", "vector", 64, 2, 2, 4, 10, 3),
    "tiny-image": Shape("tiny-image", "image", 64, 2, 2, 4, 10, 3),
}


#: ``build_model``'s caches: LightZero's legacy dicts (``use_new_cache_manager=False``),
#: LightZero main's ``KVCacheManager``, or zerokv's drop-in ``KVCacheManager`` built by
#: LightZero in its place (both ``use_new_cache_manager=True``).
CACHE_MODES = ("legacy", "manager", "dropin")


def world_model_config(
    shape: Shape,
    version: str,
    cache_mode: str,
    rotary: bool,
    config: Mapping[str, object] | None = None,
) -> Any:
    """The world-model config: LightZero's keys for ``version``, at ``shape``; ``config``
    replaces values (``ValueError`` for a key the version's config lacks: LightZero would
    ignore a misspelt one silently)."""
    _, easydict = import_lightzero()
    cfg: dict[str, object] = {
        "continuous_action_space": False,
        "tokens_per_block": 2,
        "max_blocks": 10,
        "max_tokens": 20,
        "context_length": shape.context_length,
        "gru_gating": False,
        "device": "cpu",
        "analysis_sim_norm": False,
        "analysis_dormant_ratio": False,
        "action_space_size": shape.actions,
        "group_size": 8,
        "attention": "causal",
        "num_layers": shape.num_layers,
        "num_heads": shape.num_heads,
        "embed_dim": shape.embed_dim,
        "embed_pdrop": 0.1,
        "resid_pdrop": 0.1,
        "attn_pdrop": 0.1,
        "support_size": 101,
        "max_cache_size": 5000,
        "env_num": shape.env_num,
        "num_simulations": shape.num_simulations,
        "latent_recon_loss_weight": 0.0,
        "perceptual_loss_weight": 0.0,
        "policy_entropy_weight": 0,
        "predict_latent_loss_type": "group_kl",
        "obs_type": shape.obs,
        "gamma": 1,
        "dormant_threshold": 0.025,
        "rotary_emb": rotary,
        "rope_theta": 10000,
        "max_seq_len": 8192,
    }
    if version == "main":
        cfg.update(
            {
                "encoder_type": "resnet",
                "analysis_dormant_ratio_weight_rank": False,
                "use_new_cache_manager": cache_mode != "legacy",
                "exact_kv_window_reset": False,
                "rebuild_kv_window_from_tokens": False,
                "open_loop_consistency_loss_weight": 0.0,
                "open_loop_recurrent_loss_weight": 0.0,
                "open_loop_prefix_transitions": 0,
                "final_norm_option_in_head": "LayerNorm",
                "final_norm_option_in_encoder": "LayerNorm",
                "predict_latent_loss_type": "mse",
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
    unknown = sorted(set(config or {}) - set(cfg))
    if unknown:
        raise ValueError(f"not keys of LightZero {version}'s world-model config: {unknown}")
    cfg.update(config or {})
    return easydict(cfg)


def build_model(
    shape: Shape,
    version: str | None = None,
    cache_mode: str = "legacy",
    rotary: bool = False,
    seed: int = 0,
    *,
    config: Mapping[str, object] | None = None,
) -> LightZeroObject:
    """A ``UniZeroModel`` at ``shape`` in eval mode (module docstring)."""
    if cache_mode not in CACHE_MODES:
        raise ValueError(f"cache_mode must be one of {CACHE_MODES}, got {cache_mode!r}")
    model_module, _ = import_lightzero()
    version = version or lightzero_version()
    if cache_mode == "dropin" and version != "main":
        raise ValueError("cache_mode='dropin' needs LightZero main (0.2.0 has no cache manager)")
    cfg = world_model_config(shape, version, cache_mode, rotary, config)
    torch.manual_seed(seed)
    with quiet(), _manager_built(cache_mode):
        model = model_module.UniZeroModel(
            observation_shape=shape.observation_shape,
            action_space_size=shape.actions,
            num_res_blocks=1,
            num_channels=64 if shape.obs == "image" else 16,
            norm_type="BN",
            world_model_cfg=cfg,
        )
    model.eval()
    randomise_heads(model.world_model, seed + 1, rotary)
    return model


def randomise_heads(wm: LightZeroObject, seed: int, rotary: bool) -> None:
    """Re-randomise (seeded) the last layer of each prediction head of a world model, and
    rebuild its position table as the policy's ``recompute_pos_emb_diff_and_clear_cache``
    does: LightZero zero-initialises the heads, and a model with zero heads predicts one
    latent for every child and equal priors for every action (ties everywhere)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for head in (wm.head_observations, wm.head_rewards, wm.head_value, wm.head_policy):
            for layer in reversed(list(head.head_module)):
                if isinstance(layer, torch.nn.Linear):
                    layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * 0.1)
                    layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen) * 0.1)
                    break
    if not rotary:
        with quiet():
            wm.precompute_pos_emb_diff_kv()


def _manager_built(cache_mode: str) -> AbstractContextManager[object]:
    """Where LightZero looks its ``KVCacheManager`` up while the model is built: zerokv's
    drop-in for ``"dropin"`` (put back afterwards), whatever is there otherwise."""
    if cache_mode != "dropin":
        return nullcontext()
    from zerokv.lightzero.install import installed

    return installed()


@contextmanager
def quiet() -> Iterator[None]:
    """LightZero prints and logs at INFO/DEBUG while building and clearing (and its
    manager per lookup). Nests: the level it found is put back, so a ``quiet()`` inside
    another (``build_model``'s inside a caller's) leaves the outer one in force."""
    import contextlib
    import io

    before = logging.root.manager.disable
    logging.disable(max(before, logging.INFO))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(before)


# --------------------------------------------------------------------------- driving


@dataclass(frozen=True)
class Schedule:
    """Which environments are ready, which episodes end and when caches are cleared.

    ``ready[step]`` - the ready environments of a step (default all); ``restart_all`` -
    steps after which every episode ends (the next step is a first step for all);
    ``restart_env`` - step -> environment whose episode ends after it (LightZero main's
    per-environment root clear and a mixed root batch); ``clear`` - steps after which
    ``clear_caches()`` runs (the policy's interval rule).
    """

    steps: int
    simulations: int
    ready: dict[int, tuple[int, ...]] = field(default_factory=dict)
    restart_all: frozenset[int] = frozenset()
    restart_env: dict[int, int] = field(default_factory=dict)
    clear: frozenset[int] = frozenset()


#: The tests' sequence on LightZero main, for the ``tiny-*`` shapes (4 environments): 7
#: steps of 10 simulations; env 3's episode ends after step 2 (its next step is a first
#: step: a mixed root batch), env 1 is not ready at step 4, ``clear_caches()`` after step 5.
MAIN_SCHEDULE = Schedule(
    steps=7,
    simulations=10,
    ready={4: (0, 2, 3)},
    restart_env={2: 3},
    clear=frozenset({5}),
)


#: The world model's own hit counters (``Trace.counters``).
COUNTERS = ("root_hit_cnt", "root_total_query_cnt", "hit_count", "total_query_count")


@dataclass
class Trace:
    """Every output of a run, in call order, and the world model's ``COUNTERS`` after it."""

    outputs: list[tuple[str, torch.Tensor]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)

    def add(self, label: str, out: Any) -> None:
        for name in ("latent_state", "reward", "policy_logits", "value"):
            value = getattr(out, name)
            tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            self.outputs.append((f"{label}.{name}", tensor.detach().clone()))


def end_episode(model: LightZeroObject, env: int) -> None:
    """What LightZero main's policy does for an environment whose episode ended: clear its
    root pool (the manager's ``init_pools[e]`` or the legacy dict)."""
    wm = model.world_model
    manager = getattr(wm, "kv_cache_manager", None)
    if getattr(wm, "use_new_cache_manager", False) and manager is not None:
        manager.init_pools[env].clear()
    else:
        wm.past_kv_cache_init_infer_envs[env].clear()
    contexts = getattr(wm, "past_token_context_init_infer_envs", None)
    if contexts is not None:
        contexts[env].clear()


def drive(
    model: LightZeroObject,
    shape: Shape,
    schedule: Schedule,
    seed: int = 1,
    *,
    ready_env_ids: bool | None = None,
    on_initial: Callable[[float], None] | None = None,
    on_recurrent: Callable[[float], None] | None = None,
    search: Any = None,
) -> Trace:
    """The seeded call sequence (module docstring); ``on_*`` receive each call's seconds.

    ``ready_env_ids`` passes ``ready_env_id=`` to ``initial_inference`` (LightZero main);
    default: when the model's ``initial_inference`` takes it. ``search`` (a
    ``zerokv.lightzero.NodeAttachment``) is told what LightZero's tree would tell it: a
    search starts on the ready rows, and before each recurrent call every leaf's parent
    address (the picked node's index in its tree, its row).
    """
    import inspect

    import numpy as np

    if ready_env_ids is None:
        ready_env_ids = "ready_env_id" in inspect.signature(model.initial_inference).parameters
    gen = torch.Generator().manual_seed(seed)
    trace = Trace()
    envs = shape.env_num
    obs_shape = shape.observation_shape
    dims = (obs_shape,) if isinstance(obs_shape, int) else obs_shape
    last_obs = torch.zeros(envs, *dims)
    last_action = [-1] * envs
    steps = np.zeros(envs, dtype=np.int64)
    clock = time.perf_counter
    with torch.no_grad():
        for step in range(schedule.steps):
            ready = list(schedule.ready.get(step, range(envs)))
            obs = torch.randn(len(ready), *dims, generator=gen)
            kwargs = {"ready_env_id": ready} if ready_env_ids else {}
            start = clock()
            out = model.initial_inference(
                last_obs[ready], [last_action[e] for e in ready], obs, steps[ready], **kwargs
            )
            if on_initial is not None:
                on_initial(clock() - start)
            trace.add(f"step{step}.initial", out)
            roots = out.latent_state.detach().cpu().numpy()
            nodes: list[list[tuple[Any, int]]] = [[(roots[i], 0)] for i in range(len(ready))]
            history = []
            if search is not None:
                search.begin_search(len(ready))
            for sim in range(schedule.simulations):
                picks = [int(torch.randint(len(tree), (1,), generator=gen)) for tree in nodes]
                if search is not None:
                    search.note_leaves(picks, list(range(len(ready))))
                parents = np.stack([tree[p][0] for tree, p in zip(nodes, picks)])
                depth = [tree[p][1] + 1 for tree, p in zip(nodes, picks)]
                actions = torch.randint(shape.actions, (len(ready),), generator=gen)
                history.append((parents, actions))
                start = clock()
                rec = model.recurrent_inference(history, sim, depth, steps[ready])
                if on_recurrent is not None:
                    on_recurrent(clock() - start)
                trace.add(f"step{step}.sim{sim}", rec)
                children = rec.latent_state.detach().cpu().numpy()
                for i, tree in enumerate(nodes):
                    tree.append((children[i], depth[i]))
            if search is not None:
                search.end_search()
            chosen = torch.randint(shape.actions, (len(ready),), generator=gen).tolist()
            for i, env in enumerate(ready):
                last_obs[env] = obs[i]
                last_action[env] = chosen[i]
                steps[env] += 1
            if step in schedule.restart_all:
                last_obs.zero_()
                last_action = [-1] * envs
                steps[:] = 0
            if step in schedule.restart_env:
                env = schedule.restart_env[step]
                end_episode(model, env)
                last_obs[env] = 0.0
                last_action[env] = -1
                steps[env] = 0
            if step in schedule.clear:
                with quiet():
                    model.world_model.clear_caches()
    wm = model.world_model
    trace.counters = {name: int(getattr(wm, name)) for name in COUNTERS if hasattr(wm, name)}
    return trace


def compare(
    a: Trace,
    b: Trace,
    names: tuple[str, str] = ("a", "b"),
    atol: float = 0.0,
    *,
    counters: bool = False,
) -> None:
    """Raise ``AssertionError`` naming the first output that differs (bit for bit when
    ``atol`` is 0: same dtype, shape and bits), then, with ``counters``, when the hit
    counters differ. The counters are the world model's totals, so they compare runs of
    models that were fresh before them."""
    assert len(a.outputs) == len(b.outputs), (len(a.outputs), len(b.outputs))
    for (label, x), (other, y) in zip(a.outputs, b.outputs):
        assert label == other, (label, other)
        assert x.shape == y.shape and x.dtype == y.dtype, f"{label}: {x.shape} vs {y.shape}"
        if atol == 0.0:
            same = torch.equal(x, y) and (
                not x.is_floating_point() or torch.equal(_bits(x), _bits(y))
            )
        else:
            same = torch.allclose(x, y, rtol=0.0, atol=atol)
        if not same:
            diff = (x.double() - y.double()).abs().max().item()
            raise AssertionError(
                f"{label} differs between {names[0]} and {names[1]} (max abs diff {diff:.3g})"
            )
    if counters and a.counters != b.counters:
        raise AssertionError(
            f"hit counters differ between {names[0]} and {names[1]}: {a.counters} vs {b.counters}"
        )


def _bits(x: torch.Tensor) -> torch.Tensor:
    ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}[x.element_size()]
    return x.contiguous().view(ints)


# --------------------------------------------------------------------------- benchmark

#: LightZero's cache glue in recurrent inference.
GLUE = ("retrieve_or_generate_kvcache", "trim_and_pad_kv_cache", "update_cache_context")


@dataclass
class BenchResult:
    """Medians of one shape (milliseconds per call) and sync counts per call."""

    shape: str
    runs: int
    lightzero: dict[str, float]
    zerokv: dict[str, float]
    lightzero_syncs: float
    zerokv_syncs: float
    zerokv_sync_ops: dict[str, int]
    #: ``breakdown``: microseconds per recurrent call in each of attach's calls.
    stages: dict[str, float] = field(default_factory=dict)
    #: The node-addressed cache (``attach_nodes``): medians as ``zerokv``'s, and
    #: ``node_counts``.
    node: dict[str, float] = field(default_factory=dict)
    node_counts: dict[str, float] = field(default_factory=dict)

    def ratios(self, of: str = "zerokv") -> dict[str, float]:
        """LightZero's medians over ``of``'s (``"zerokv"``: attach; ``"node"``)."""
        mine = self.zerokv if of == "zerokv" else self.node
        return {k: self.lightzero[k] / mine[k] for k in self.lightzero if mine.get(k, 0.0) > 0.0}

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": self.shape,
            "runs": self.runs,
            "lightzero_ms": self.lightzero,
            "zerokv_ms": self.zerokv,
            "ratios": self.ratios(),
            "lightzero_syncs_per_recurrent_call": self.lightzero_syncs,
            "zerokv_syncs_per_recurrent_call": self.zerokv_syncs,
            "zerokv_sync_ops": self.zerokv_sync_ops,
            "zerokv_stages_us": self.stages,
            "node_ms": self.node,
            "node_ratios": self.ratios("node"),
            "node_counts_per_recurrent_call": self.node_counts,
        }


def bench_schedule(shape: Shape, steps: int) -> Schedule:
    return Schedule(steps=steps, simulations=shape.num_simulations)


def _timed_run(
    model: LightZeroObject,
    shape: Shape,
    schedule: Schedule,
    attached: bool | str,
    options: dict[str, Any] | None = None,
) -> dict[str, float]:
    """One run; per call medians: initial, recurrent, cache code per recurrent call.
    ``attached``: False (LightZero's caching), True (``attach``) or ``"node"`` (the
    node-addressed cache, addresses from the schedule as LightZero's tree gives them)."""
    from zerokv.lightzero.attach import attach

    initial: list[float] = []
    recurrent: list[float] = []
    wm = model.world_model
    if attached == "node":
        from zerokv.lightzero.policy import attach_nodes

        nodes = attach_nodes(model, **(options or {}))
        try:
            drive(
                model,
                shape,
                schedule,
                on_initial=initial.append,
                on_recurrent=recurrent.append,
                search=nodes,
            )
            cache = nodes.counts.recurrent_cache_seconds
            calls = nodes.counts.recurrent_calls
        finally:
            nodes.detach()
    elif attached:
        attachment = attach(model, **(options or {}))
        try:
            drive(model, shape, schedule, on_initial=initial.append, on_recurrent=recurrent.append)
            cache = attachment.counts.recurrent_cache_seconds
            calls = attachment.counts.recurrent_calls
        finally:
            attachment.detach()
    else:
        spent = [0.0]
        inside = [False]
        originals = {name: getattr(type(wm), name) for name in GLUE}

        def timed(name: str) -> Callable[..., Any]:
            fn = originals[name]

            def run(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return fn(wm, *args, **kwargs)
                finally:
                    if inside[0]:  # only the recurrent calls' cache code counts
                        spent[0] += time.perf_counter() - start

            return run

        recurrent_call = type(wm).forward_recurrent_inference

        def flagged(*args: Any, **kwargs: Any) -> Any:
            inside[0] = True
            try:
                return recurrent_call(wm, *args, **kwargs)
            finally:
                inside[0] = False

        for name in GLUE:
            wm.__dict__[name] = timed(name)
        wm.__dict__["forward_recurrent_inference"] = flagged
        try:
            drive(model, shape, schedule, on_initial=initial.append, on_recurrent=recurrent.append)
        finally:
            for name in (*GLUE, "forward_recurrent_inference"):
                del wm.__dict__[name]
        cache = spent[0]
        calls = len(recurrent)
    return {
        "initial_inference": 1e3 * statistics.median(initial),
        "recurrent_inference": 1e3 * statistics.median(recurrent),
        "cache_code_per_recurrent": 1e3 * cache / max(calls, 1),
    }


def glue_ms_per_recurrent_call(
    shape: Shape,
    schedule: Schedule,
    cache_mode: str = "legacy",
    *,
    rotary: bool = False,
    config: Mapping[str, object] | None = None,
) -> float:
    """Milliseconds of LightZero's cache glue (``GLUE``) per ``recurrent_inference`` call,
    in one run of ``drive`` on a model built fresh with ``cache_mode``: the same glue
    around LightZero's manager, zerokv's drop-in or the legacy dicts."""
    model = build_model(shape, cache_mode=cache_mode, rotary=rotary, config=config)
    return _timed_run(model, shape, schedule, attached=False)["cache_code_per_recurrent"]


def run_benchmark(
    shape_name: str,
    *,
    runs: int = 5,
    steps: int = 4,
    threads: int = 1,
    progress: Callable[[str], None] | None = None,
) -> BenchResult:
    """LightZero's caching and ``attach`` on the same model, interleaved (module docstring)."""
    shape = SHAPES[shape_name]
    if threads:
        torch.set_num_threads(threads)
    base = build_model(shape, cache_mode="legacy")
    schedule = bench_schedule(shape, steps)
    results: dict[str, list[dict[str, float]]] = {"lightzero": [], "zerokv": [], "node": []}
    modes: dict[str, bool | str] = {"lightzero": False, "zerokv": True, "node": "node"}
    for run in range(runs):
        order = list(modes) if run % 2 == 0 else list(reversed(modes))
        for which in order:
            model = copy.deepcopy(base)
            with quiet():
                model.world_model.clear_caches()
            results[which].append(_timed_run(model, shape, schedule, modes[which]))
            if progress is not None:
                progress(f"{shape_name} run {run + 1}/{runs} {which} done")
    medians = {
        which: {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        for which, rows in results.items()
    }
    lz_syncs, zk_syncs, ops = count_syncs(base, shape)
    stages = breakdown(base, shape)
    return BenchResult(
        shape_name,
        runs,
        medians["lightzero"],
        medians["zerokv"],
        lz_syncs,
        zk_syncs,
        ops,
        stages,
        medians["node"],
        node_counts(base, shape),
    )


def _timed_call(fn: Callable[..., Any], spent: dict[str, float], name: str) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[name] += time.perf_counter() - start

    return run


@dataclass
class SearchResult:
    """One whole search as a user runs it: LightZero's UniZero policy (CartPole zoo config)
    and a twin with ``attach_policy``, ``collect_mode.forward`` timed interleaved."""

    rows: int
    simulations: int
    steps: int
    root_level: str
    lightzero_ms: list[float]
    zerokv_ms: list[float]
    host_reads: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "simulations": self.simulations,
            "steps": self.steps,
            "root_logger": self.root_level,
            "lightzero_ms_median": statistics.median(self.lightzero_ms),
            "zerokv_ms_median": statistics.median(self.zerokv_ms),
            "lightzero_ms_range": [min(self.lightzero_ms), max(self.lightzero_ms)],
            "zerokv_ms_range": [min(self.zerokv_ms), max(self.zerokv_ms)],
            "ratio": statistics.median(self.lightzero_ms) / statistics.median(self.zerokv_ms),
            "zerokv_host_reads_in_cache_code": self.host_reads,
        }


def run_search_benchmark(steps: int = 20, warmup: int = 2, seed: int = 0) -> SearchResult:
    """``collect_mode.forward`` of two policies with one config and the same weights (one
    on LightZero's caches, one on ``attach_policy``'s), the same observations and numpy
    seed, alternating which goes first; the root logger as LightZero's import left it."""
    import numpy as np

    from zerokv.lightzero import attach_policy
    from zerokv.testing import lightzero_policy as lp

    plain, node = lp.build_policy(seed=seed), lp.build_policy(seed=seed)
    attachment = attach_policy(node)
    cfg = plain._cfg
    rows, actions = int(cfg.collector_env_num), int(cfg.model.action_space_size)
    obs_dim = int(cfg.model.observation_shape)
    rng = np.random.default_rng(seed)
    times: dict[str, list[float]] = {"lightzero": [], "zerokv": []}
    policies = {"lightzero": plain, "zerokv": node}
    try:
        for policy in policies.values():
            policy.collect_mode.reset()
        for step in range(warmup + steps):
            obs = torch.as_tensor(rng.normal(size=(rows, obs_dim)).astype(np.float32))
            mask = np.ones((rows, actions), dtype=np.float32)
            noise = int(rng.integers(1 << 31))
            order = ("lightzero", "zerokv") if step % 2 == 0 else ("zerokv", "lightzero")
            for which in order:
                np.random.seed(noise)
                start = time.perf_counter()
                policies[which].collect_mode.forward(
                    obs.clone(), mask, 1.0, [-1] * rows, 0.0, np.arange(rows), [step] * rows
                )
                if step >= warmup:
                    times[which].append(1e3 * (time.perf_counter() - start))
        reads = attachment.stats()["host_reads"]
    finally:
        attachment.detach()
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    return SearchResult(
        rows, int(cfg.num_simulations), steps, level, times["lightzero"], times["zerokv"], reads
    )


def format_search(result: SearchResult) -> str:
    d = result.to_dict()
    return "\n".join(
        [
            f"One whole search: `collect_mode.forward`, LightZero's UniZero policy (CartPole "
            f"zoo config), {result.rows} environments x {result.simulations} simulations, "
            f"{result.steps} steps interleaved, root logger at {result.root_level}:",
            "",
            "| | LightZero | attach_policy | LightZero / attach_policy |",
            "|---|---:|---:|---:|",
            f"| ms per collect step (median) | {d['lightzero_ms_median']:.1f} | "
            f"{d['zerokv_ms_median']:.1f} | {d['ratio']:.2f}x |",
            f"| range (min - max) | {d['lightzero_ms_range'][0]:.1f} - "
            f"{d['lightzero_ms_range'][1]:.1f} | {d['zerokv_ms_range'][0]:.1f} - "
            f"{d['zerokv_ms_range'][1]:.1f} | |",
            f"| host reads in cache code | | {result.host_reads} | |",
        ]
    )


def node_counts(base: LightZeroObject, shape: Shape) -> dict[str, float]:
    """Per ``recurrent_inference`` (one simulation step of every row), the node cache's
    work as CUDA would see it: torch ops (and the views among them) and device-to-host
    syncs in its two calls (``gather_reserve``, ``store_nodes``) under the dispatch counter,
    plus the attachment's own host reads; and the microseconds of each call."""
    from zerokv import checks
    from zerokv.bench.workload import DispatchCounter
    from zerokv.lightzero.policy import attach_nodes

    model = copy.deepcopy(base)
    schedule = Schedule(steps=2, simulations=shape.num_simulations)
    with checks.shortcuts(False):
        nodes = attach_nodes(model)
        cache = nodes.cache
        counter = DispatchCounter()
        spent = {"gather_reserve": 0.0, "store_nodes": 0.0}
        saved = {name: getattr(cache, name) for name in spent}

        def counted(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
            def run(*args: Any, **kwargs: Any) -> Any:
                with counter:
                    return fn(*args, **kwargs)

            return run

        try:
            drive(model, shape, Schedule(steps=1, simulations=2), search=nodes)  # warm-up
            timed = {name: _timed_call(fn, spent, name) for name, fn in saved.items()}
            for name, fn in timed.items():
                setattr(cache, name, fn)
            before = nodes.counts.recurrent_calls
            drive(model, shape, schedule, search=nodes)  # the times, without the counter
            calls = max(nodes.counts.recurrent_calls - before, 1)
            for name, fn in saved.items():
                setattr(cache, name, counted(name, fn))
            before = nodes.counts.recurrent_calls
            drive(model, shape, schedule, search=nodes)  # the op counts
            counted_calls = max(nodes.counts.recurrent_calls - before, 1)
        finally:
            nodes.detach()
    return {
        "ops": counter.ops / counted_calls,
        "views": counter.views / counted_calls,
        "syncs": (counter.syncs + nodes.stats()["host_reads"]) / counted_calls,
        "gather_us": 1e6 * spent["gather_reserve"] / calls,
        "store_us": 1e6 * spent["store_nodes"] / calls,
        "copy_floor_us": copy_floor_us(shape),
    }


def count_syncs(base: LightZeroObject, shape: Shape) -> tuple[float, float, dict[str, int]]:
    """Host synchronisations per ``recurrent_inference`` call in cache code, as on CUDA.

    LightZero: every ``hash_state`` of a device tensor (``latent.cpu().numpy()``) in its
    cache glue. zerokv (device index, as CUDA runs it): the torch ops that read the device
    (``DispatchCounter``) in zerokv's calls, plus attach's own host reads.
    """
    from zerokv.bench.workload import DispatchCounter
    from zerokv.lightzero.attach import attach

    schedule = Schedule(steps=2, simulations=min(shape.num_simulations, 5))
    # LightZero: count hash_state calls on tensors inside update_cache_context.
    model = copy.deepcopy(base)
    wm = model.world_model
    module: Any = importlib.import_module(type(wm).__module__)
    original_hash = module.hash_state
    hashed = [0]
    inside = [False]

    def counting_hash(x: Any) -> Any:
        if inside[0]:
            hashed[0] += 1
        return original_hash(x)

    update = type(wm).update_cache_context

    def update_counted(*args: Any, **kwargs: Any) -> Any:
        inside[0] = not kwargs.get("is_init_infer", args[1] if len(args) > 1 else True)
        try:
            return update(wm, *args, **kwargs)
        finally:
            inside[0] = False

    module.hash_state = counting_hash
    wm.__dict__["update_cache_context"] = update_counted
    calls = [0]
    try:
        drive(model, shape, schedule, on_recurrent=lambda s: calls.__setitem__(0, calls[0] + 1))
    finally:
        module.hash_state = original_hash
        del wm.__dict__["update_cache_context"]
    lightzero = hashed[0] / max(calls[0], 1)
    # zerokv, device index and no CPU shortcuts (the code CUDA runs): the cache calls under
    # the dispatch counter.
    from zerokv import checks

    model = copy.deepcopy(base)
    with checks.shortcuts(False):
        attachment = attach(model, index="device")
        counter = DispatchCounter()
        mgr = attachment.manager
        wrapped = (
            "keys_of",
            "lookup_many",
            "gather_reserve",
            "store_recurrent_batch",
            "store_root_batch",
        )
        saved = {name: getattr(mgr, name) for name in wrapped}
        recurrent_syncs = [0]

        def counted(fn: Callable[..., Any]) -> Callable[..., Any]:
            def run(*args: Any, **kwargs: Any) -> Any:
                with counter:
                    return fn(*args, **kwargs)

            return run

        for name, fn in saved.items():
            setattr(mgr, name, counted(fn))
        try:
            before = [0, 0]

            def on_initial(seconds: float) -> None:
                before[0] = counter.syncs
                before[1] = attachment.counts.host_reads

            def on_recurrent(seconds: float) -> None:
                recurrent_syncs[0] += (
                    counter.syncs - before[0] + attachment.counts.host_reads - before[1]
                )
                before[0] = counter.syncs
                before[1] = attachment.counts.host_reads

            drive(model, shape, schedule, on_initial=on_initial, on_recurrent=on_recurrent)
        finally:
            attachment.detach()
    zerokv = recurrent_syncs[0] / max(attachment.counts.recurrent_calls, 1)
    return lightzero, zerokv, dict(counter.sync_ops)


#: The public calls attach makes per ``recurrent_inference`` (``breakdown``).
STAGES = ("keys_of", "lookup_many", "gather_reserve", "store_recurrent_batch")


def breakdown(base: LightZeroObject, shape: Shape, steps: int = 2) -> dict[str, float]:
    """Microseconds per ``recurrent_inference`` in each of attach's ``CacheManager`` calls,
    measured inside a real run (after the model's forward, as attach runs them), the rest
    of attach's cache code (``other``: the host read, the views, the key memo), and the copy
    floor: one ``index_select`` of the batch's ``B`` entries out of a slab and one
    ``index_copy_`` back, with the caches evicted first as the model's forward evicts them
    (``copy_floor``)."""
    from zerokv.lightzero.attach import attach

    model = copy.deepcopy(base)
    attachment = attach(model)
    mgr = attachment.manager
    wm = model.world_model
    spent = dict.fromkeys(STAGES, 0.0)
    inside = [False]

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if inside[0]:
                    spent[name] += time.perf_counter() - start

        return run

    recurrent = wm.forward_recurrent_inference

    def flagged(*args: Any, **kwargs: Any) -> Any:
        inside[0] = True
        try:
            return recurrent(*args, **kwargs)
        finally:
            inside[0] = False

    for name in STAGES:
        setattr(mgr, name, timed(name, getattr(mgr, name)))
    wm.__dict__["forward_recurrent_inference"] = flagged
    schedule = Schedule(steps=steps, simulations=shape.num_simulations)
    try:
        drive(model, shape, schedule)  # warm-up
        spent.update(dict.fromkeys(STAGES, 0.0))
        attachment.counts.recurrent_cache_seconds = 0.0
        before = attachment.counts.recurrent_calls
        drive(model, shape, schedule)
        calls = attachment.counts.recurrent_calls - before
    finally:
        attachment.detach()
    out = {name: 1e6 * seconds / calls for name, seconds in spent.items()}
    total = 1e6 * attachment.counts.recurrent_cache_seconds / calls
    out["other"] = max(total - sum(out.values()), 0.0)
    out["total"] = total
    out["copy_floor"] = copy_floor_us(shape)
    return out


def copy_floor_us(shape: Shape, reps: int = 20) -> float:
    """One gather and one store of ``B`` whole entries, the caches evicted before each."""
    head_dim = shape.embed_dim // shape.num_heads
    slots = shape.env_num * (shape.num_simulations + 2)
    slab = torch.zeros(shape.num_layers, 2, slots, shape.num_heads, shape.context_length, head_dim)
    rows = torch.arange(shape.env_num) * 3
    evict = torch.zeros(8 * 1024 * 1024)  # 32 MB
    times = []
    for _ in range(reps):
        evict.add_(1.0)
        start = time.perf_counter()
        batch = slab.index_select(2, rows)
        slab.index_copy_(2, rows, batch)
        times.append(time.perf_counter() - start)
    return 1e6 * statistics.median(times)


def format_results(results: Sequence[BenchResult]) -> str:
    """A markdown table of the medians and ratios."""
    lines = [
        "| shape | call | LightZero (ms) | attach (ms) | LightZero / attach |",
        "|---|---|---:|---:|---:|",
    ]
    names = {
        "initial_inference": "`initial_inference`",
        "recurrent_inference": "`recurrent_inference`",
        "cache_code_per_recurrent": "cache code per `recurrent_inference`",
    }
    for r in results:
        ratios = r.ratios()
        for key, label in names.items():
            lines.append(
                f"| {r.shape} | {label} | {r.lightzero[key]:.3f} | {r.zerokv[key]:.3f} | "
                f"{ratios.get(key, float('nan')):.2f}x |"
            )
        lines.append(
            f"| {r.shape} | host syncs per `recurrent_inference` in cache code (as on CUDA) | "
            f"{r.lightzero_syncs:.1f} | {r.zerokv_syncs:.1f} | |"
        )
    lines += [
        "",
        "attach's cache code per `recurrent_inference`, call by call (us, inside a run):",
        "",
        "| shape | " + " | ".join(f"`{s}`" for s in STAGES) + " | other | total | copy floor |",
        "|---|" + "---:|" * (len(STAGES) + 3),
    ]
    for r in results:
        if r.stages:
            cells = [f"{r.stages[s]:.0f}" for s in (*STAGES, "other", "total", "copy_floor")]
            lines.append(f"| {r.shape} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "The node-addressed cache (`attach_policy`'s: addresses from the search, no hashing):",
        "",
        "| shape | call | LightZero (ms) | node cache (ms) | LightZero / node cache |",
        "|---|---|---:|---:|---:|",
    ]
    for r in results:
        if not r.node:
            continue
        ratios = r.ratios("node")
        for key, label in names.items():
            lines.append(
                f"| {r.shape} | {label} | {r.lightzero[key]:.3f} | {r.node[key]:.3f} | "
                f"{ratios.get(key, float('nan')):.2f}x |"
            )
    lines += [
        "",
        "Node cache per `recurrent_inference` (CUDA's code path; us inside a run):",
        "",
        "| shape | torch ops (views) | host syncs | `gather_reserve` us | `store_nodes` us "
        "| copy floor us | cache code / copy floor |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        c = r.node_counts
        if not c:
            continue
        floor = c["copy_floor_us"]
        code = 1e3 * r.node.get("cache_code_per_recurrent", float("nan"))
        lines.append(
            f"| {r.shape} | {c['ops']:.1f} ({c['views']:.1f}) | {c['syncs']:.1f} | "
            f"{c['gather_us']:.0f} | {c['store_us']:.0f} | {floor:.0f} | {code / floor:.2f}x |"
        )
    return "\n".join(lines)


def main(
    *,
    shapes: Sequence[str],
    steps: int | None,
    repeats: int | None,
    threads: int,
    json_path: str | None,
    emit: Callable[[str], None],
    error: Callable[[str], None],
) -> int:
    """``python -m zerokv.bench --model unizero``: returns the exit status."""
    unknown = [s for s in shapes if s not in ("cartpole", "atari")]
    if unknown:
        error(f"--shape must be cartpole and/or atari, got {', '.join(unknown)}")
        return 2
    try:
        version = lightzero_version()
    except LightZeroMissing as err:
        error(str(err))
        return 2
    steps = steps or 4
    runs = repeats or 5
    emit(
        f"UniZero (LightZero {version}) on {torch.get_num_threads()} thread(s): LightZero's "
        f"caching vs zerokv.lightzero.attach, {runs} interleaved runs of {steps} steps"
    )
    results = []
    for name in shapes:
        shape = SHAPES[name]
        emit(
            f"  {name}: {shape.obs} obs, E={shape.embed_dim}, {shape.num_heads} heads, "
            f"{shape.num_layers} layers, {shape.env_num} envs, {shape.num_simulations} sims"
        )
        results.append(run_benchmark(name, runs=runs, steps=steps, threads=threads, progress=None))
    emit("")
    emit(format_results(results))
    search: SearchResult | None = None
    if "cartpole" in shapes:
        try:
            search = run_search_benchmark(steps=max(steps * 10, 40))
        except ImportError as err:  # DI-engine's policy stack or LightZero's zoo missing
            emit(f"\n(no whole-search benchmark: {err})")
        else:
            emit("")
            emit(format_search(search))
    if json_path:
        import json

        with open(json_path, "w", encoding="utf-8") as fh:
            json.dump(
                {
                    "lightzero": version,
                    "results": [r.to_dict() for r in results],
                    "search": None if search is None else search.to_dict(),
                },
                fh,
                indent=2,
            )
    return 0
