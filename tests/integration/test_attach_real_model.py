"""``zerokv.lightzero.attach`` on LightZero's real UniZero model: the same outputs as
LightZero's own caching, bit for bit; the comparison bites; ``detach`` restores the model;
where LightZero 0.2.0's caches are wrong, attach does what they should; bad input is refused.

Runs against whatever LightZero is importable: lightzero==0.2.0 (the package index release;
``nox -s integration`` installs it) or LightZero main (a checkout first on ``PYTHONPATH``;
main cannot build vector-observation models, so its configs are image ones). Skipped
without LightZero, unless ``ZEROKV_REQUIRE_LIGHTZERO`` is set (the integration session
sets it): then a missing LightZero fails the run.

Two copies of one model (same weights) run the same seeded MCTS-shaped call sequence
(``zerokv.bench.unizero.drive``): one with LightZero's caches, one attached. Every output
of ``initial_inference`` and ``recurrent_inference`` (latent state, reward, policy
logits, value) must have the same bits. On 0.2.0 the sequence keeps to what 0.2.0's caches
get right (full batches: a ready subset changes the encoder's batch and so the keys, and
0.2.0 then stores padded root entries); on main it adds ready subsets, an episode end of
one environment (a mixed root batch) and compares with both the legacy dicts and main's
``KVCacheManager``.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import pytest
import torch

from zerokv import Correction, Scope
from zerokv.bench import unizero
from zerokv.bench.unizero import SHAPES, Schedule, Shape, Trace, build_model, compare, drive
from zerokv.errors import (
    BatchError,
    ConfigError,
    DeviceError,
    DTypeError,
    UnsupportedAttributeError,
    UnsupportedOperationError,
)
from zerokv.lightzero.attach import (
    LIGHTZERO_020,
    LIGHTZERO_MAIN,
    REPLACED_METHODS,
    Attachment,
    attach,
    attachment_of,
)

try:
    unizero.import_lightzero()
    VERSION: str | None = unizero.lightzero_version()
    MISSING = ""
except unizero.LightZeroMissing as err:
    VERSION, MISSING = None, str(err)

if VERSION is None and os.environ.get("ZEROKV_REQUIRE_LIGHTZERO"):
    raise RuntimeError(f"ZEROKV_REQUIRE_LIGHTZERO is set but {MISSING}")

pytestmark = pytest.mark.skipif(
    VERSION is None, reason=f"LightZero is not installed (nox -s integration): {MISSING}"
)

TINY_VECTOR, TINY_IMAGE = SHAPES["tiny-vector"], SHAPES["tiny-image"]

#: 0.2.0: full batches; an episode end of every environment; clear_caches() (after which
#: every root lookup misses and is recomputed).
SCHEDULE_020 = Schedule(steps=7, simulations=10, restart_all=frozenset({3}), clear=frozenset({5}))
#: main: also a step with env 1 not ready, env 3's episode end (a mixed root batch next).
SCHEDULE_MAIN = unizero.MAIN_SCHEDULE
COUNTERS = ("root_hit_cnt", "root_total_query_cnt", "hit_count", "total_query_count")


def configs() -> list[tuple[Shape, bool, str]]:
    """(shape, rotary, cache mode) per supported version."""
    if VERSION == LIGHTZERO_MAIN:
        return [(TINY_IMAGE, r, mode) for r in (False, True) for mode in ("legacy", "manager")]
    return [(shape, r, "legacy") for shape in (TINY_VECTOR, TINY_IMAGE) for r in (False, True)]


def schedule() -> Schedule:
    return SCHEDULE_MAIN if VERSION == LIGHTZERO_MAIN else SCHEDULE_020


def counters(model: Any) -> dict[str, int]:
    wm = model.world_model
    return {name: int(getattr(wm, name)) for name in COUNTERS}


def run_pair(
    shape: Shape, rotary: bool, mode: str, sched: Schedule, **options: Any
) -> tuple[Trace, Trace, Any, Any, Attachment, list[int]]:
    """LightZero's run and the attached run of one model; the attachment stays attached."""
    base = build_model(shape, cache_mode=mode, rotary=rotary)
    theirs, ours = copy.deepcopy(base), copy.deepcopy(base)
    trace_theirs = drive(theirs, shape, sched)
    attachment = attach(ours, **options)
    widths: list[int] = []

    def window_seen(seconds: float) -> None:
        widths.append(max(ours.world_model.keys_values_wm_size_list_current))

    trace_ours = drive(ours, shape, sched, on_recurrent=window_seen)
    return trace_theirs, trace_ours, theirs, ours, attachment, widths


@pytest.mark.parametrize(
    ("shape", "rotary", "mode"),
    configs(),
    ids=lambda v: v.name if isinstance(v, Shape) else ("rotary" if v is True else str(v)),
)
def test_outputs_equal_lightzero_bit_for_bit(shape: Shape, rotary: bool, mode: str) -> None:
    sched = schedule()
    theirs, ours, their_model, our_model, attachment, widths = run_pair(shape, rotary, mode, sched)
    try:
        compare(theirs, ours, ("LightZero", "attach"))
        assert counters(their_model) == counters(our_model)
        stats = attachment.stats()
        assert stats["version"] == VERSION
        # The run exercised every path: root hits, recurrent hits, recomputed misses (after
        # clear_caches), and the window rule (a row reached cl - 1 tokens before its store).
        assert stats["root_hits"] > 0 and stats["recurrent_hits"] > 0
        assert stats["recomputed_misses"] >= shape.env_num
        assert max(widths) >= shape.context_length - 1
        # One host read per root lookup batch and per recurrent call, none per row.
        assert stats["host_reads"] == stats["recurrent_calls"] + stats["root_batches"]
    finally:
        attachment.detach()


#: The node cache's sequence: the version's, less main's ready subset (a re-encoded root:
#: LightZero's lookup misses there on purpose, ``test_reencoded_root_keeps_its_history``).
SCHEDULE_NODES_MAIN = Schedule(steps=7, simulations=10, restart_env={2: 3}, clear=frozenset({5}))


@pytest.mark.parametrize(
    ("shape", "rotary", "mode"),
    configs(),
    ids=lambda v: v.name if isinstance(v, Shape) else ("rotary" if v is True else str(v)),
)
def test_node_cache_outputs_equal_lightzero_bit_for_bit(
    shape: Shape, rotary: bool, mode: str
) -> None:
    """The node-addressed cache (``attach_nodes``: ``attach_policy``'s), driven by the same
    sequence with the addresses its trees give, against LightZero's own caching."""
    from zerokv.lightzero import attach_nodes

    sched = SCHEDULE_NODES_MAIN if VERSION == LIGHTZERO_MAIN else SCHEDULE_020
    base = build_model(shape, cache_mode=mode, rotary=rotary)
    theirs, ours = copy.deepcopy(base), copy.deepcopy(base)
    trace_theirs = drive(theirs, shape, sched)
    nodes = attach_nodes(ours)
    try:
        trace_ours = drive(ours, shape, sched, search=nodes)
        compare(trace_theirs, trace_ours, ("LightZero", "node cache"))
        stats = nodes.stats()
        assert stats["recurrent_calls"] == sched.steps * sched.simulations
        assert stats["host_reads"] == 0
        assert stats["recomputed_misses"] >= shape.env_num  # after clear_caches()
    finally:
        nodes.detach()


@pytest.mark.compiled
def test_compiled_kernels_give_the_same_outputs() -> None:
    """``attach(compile=True)``: the cache's kernels compiled (``CacheConfig(compile=True)``),
    outputs still LightZero's bit for bit."""
    shape = TINY_IMAGE if VERSION == LIGHTZERO_MAIN else TINY_VECTOR
    mode = "manager" if VERSION == LIGHTZERO_MAIN else "legacy"
    theirs, ours, _, _, attachment, _ = run_pair(shape, False, mode, schedule(), compile=True)
    try:
        compare(theirs, ours, ("LightZero", "attach(compile=True)"))
        assert attachment.manager.kernels.compiled
    finally:
        attachment.detach()


def test_lightzero_keys_option() -> None:
    """``key="xxh64"`` (LightZero's hash_state) and ``Scope.GLOBAL`` give the same outputs."""
    shape = TINY_IMAGE if VERSION == LIGHTZERO_MAIN else TINY_VECTOR
    mode = "manager" if VERSION == LIGHTZERO_MAIN else "legacy"
    theirs, ours, _, _, attachment, _ = run_pair(
        shape, False, mode, schedule(), key="xxh64", scope=Scope.GLOBAL
    )
    try:
        compare(theirs, ours, ("LightZero", "attach(key='xxh64')"))
        assert attachment.key == "xxh64"
    finally:
        attachment.detach()


# --------------------------------------------------------------------------- it bites


def _plant_wrong_kv(attachment: Attachment) -> None:
    """A cache bug: every gathered batch's newest cached token of row 0 is off by 1e-3."""
    mgr = attachment.manager
    gather = mgr.gather_reserve

    def wrong(found: Any, t: int) -> Any:
        batch = gather(found, t)
        batch.kv[0, 0, 0, 0, -t - 1, 0] += 1e-3
        return batch

    mgr.gather_reserve = wrong  # type: ignore[method-assign]


def _plant_no_correction(attachment: Attachment) -> None:
    """A cache bug: the window rule without LightZero's position correction."""
    zero = Correction.zero(
        attachment.num_layers, attachment.num_heads, attachment.head_dim, attachment.context_length
    )
    attachment.correction = lambda: zero  # type: ignore[method-assign]


@pytest.mark.parametrize(
    "plant", [_plant_wrong_kv, _plant_no_correction], ids=["wrong-kv", "no-correction"]
)
def test_a_planted_cache_bug_fails_the_comparison(plant: Any) -> None:
    shape = TINY_IMAGE if VERSION == LIGHTZERO_MAIN else TINY_VECTOR
    mode = "manager" if VERSION == LIGHTZERO_MAIN else "legacy"
    base = build_model(shape, cache_mode=mode)
    theirs, ours = copy.deepcopy(base), copy.deepcopy(base)
    sched = schedule()
    want = drive(theirs, shape, sched)
    attachment = attach(ours)
    plant(attachment)
    try:
        got = drive(ours, shape, sched)
        with pytest.raises(AssertionError, match="differs"):
            compare(want, got, ("LightZero", "planted bug"))
    finally:
        attachment.detach()


# --------------------------------------------------------------------------- detach


def test_detach_restores_the_world_model_exactly() -> None:
    shape = TINY_IMAGE if VERSION == LIGHTZERO_MAIN else TINY_VECTOR
    mode = "manager" if VERSION == LIGHTZERO_MAIN else "legacy"
    base = build_model(shape, cache_mode=mode)
    model, reference = copy.deepcopy(base), copy.deepcopy(base)
    wm = model.world_model
    before = dict(wm.__dict__)
    modules = dict(wm._modules)
    attachment = attach(model)
    assert attachment_of(model) is attachment
    assert wm.forward_recurrent_inference == attachment.forward_recurrent_inference
    drive(model, shape, Schedule(steps=3, simulations=4, clear=frozenset({1})))
    attachment.detach()
    attachment.detach()  # idempotent
    assert attachment_of(model) is None
    assert wm.__dict__.keys() == before.keys()
    changed = [name for name, value in before.items() if wm.__dict__[name] is not value]
    assert changed == []
    assert dict(wm._modules) == modules
    for name in REPLACED_METHODS:
        assert getattr(wm, name).__func__ is getattr(type(wm), name)
    # LightZero's own caching is back, untouched: the detached model runs as a copy that
    # was never attached.
    sched = schedule()
    compare(drive(reference, shape, sched), drive(model, shape, sched), ("never", "detached"))
    # A second attachment is allowed once the first is gone.
    with unizero_attached(model):
        pass


def test_a_detached_attachment_refuses_every_later_call() -> None:
    """A bound method kept from the attached time must not run zerokv's path on the
    restored model (it used to: ``hit_count`` 0 -> 4, ``latent_state`` replaced)."""
    shape = TINY_IMAGE if VERSION == LIGHTZERO_MAIN else TINY_VECTOR
    model = build_model(shape)
    attachment = attach(model)
    kept = model.world_model.forward_recurrent_inference
    kept_clear = model.world_model.past_kv_cache_recurrent_infer
    drive(model, shape, Schedule(steps=1, simulations=2))
    attachment.detach()
    wm = model.world_model
    before = dict(wm.__dict__)
    envs = shape.env_num
    latent = torch.zeros(envs, 1, shape.embed_dim)
    history = [(latent.numpy(), torch.zeros(envs, dtype=torch.long))]
    for call in (
        lambda: kept(history, 0, [1] * envs, 0),
        attachment.clear_caches,
        lambda: attachment.forward_initial_inference({}),
        kept_clear.clear,
    ):
        with pytest.raises(UnsupportedOperationError, match="after detach"):
            call()
    _unchanged(model, before)


def test_one_attached_call_is_one_guarded_unit() -> None:
    """Thread A paused between the two forwards of a ``recurrent_inference``; thread B's
    calls are refused (``ConcurrentUseError``) and change nothing; A's outputs then equal a
    serial run's."""
    import threading

    from zerokv.errors import ConcurrentUseError

    shape = TINY_VECTOR if VERSION != LIGHTZERO_MAIN else TINY_IMAGE
    base = build_model(shape)
    model, serial = copy.deepcopy(base), copy.deepcopy(base)
    attachment, serial_attachment = attach(model), attach(serial)
    sched = Schedule(steps=1, simulations=2)
    drive(model, shape, sched)
    drive(serial, shape, sched)
    envs = shape.env_num
    wm = model.world_model
    roots = wm.latent_state.detach().numpy()
    history = [(roots, torch.ones(envs, dtype=torch.long))]
    inside, release = threading.Event(), threading.Event()
    forward = wm.forward
    seen = [0]

    def paused(*args: Any, **kwargs: Any) -> Any:
        seen[0] += 1
        if seen[0] == 2:  # between the action's forward and the latent's
            inside.set()
            assert release.wait(10)
        return forward(*args, **kwargs)

    wm.__dict__["forward"] = paused
    out: list[Any] = []
    worker = threading.Thread(
        target=lambda: out.append(model.recurrent_inference(history, 0, [1] * envs, 0))
    )
    worker.start()
    try:
        assert inside.wait(10)
        hits = wm.hit_count
        for call in (
            lambda: model.recurrent_inference(history, 0, [1] * envs, 0),
            wm.clear_caches,
            lambda: wm.past_kv_cache_recurrent_infer.clear(),
        ):
            with pytest.raises(ConcurrentUseError, match="another thread"):
                call()
        assert wm.hit_count == hits
    finally:
        release.set()
        worker.join(10)
        del wm.__dict__["forward"]
    want = serial.recurrent_inference(history, 0, [1] * envs, 0)
    for name in ("latent_state", "reward", "policy_logits", "value"):
        assert torch.equal(getattr(out[0], name), getattr(want, name)), name
    attachment.detach()
    serial_attachment.detach()


def test_a_deep_copy_is_attached_with_its_own_cache() -> None:
    """``copy.deepcopy`` of an attached model (how LightZero makes its target model): the
    copy is attached like the original, to a fresh, empty cache of its own, and gives
    LightZero's outputs; the original's cache is untouched. ``pickle`` / ``torch.save`` of
    the model is a typed refusal (checkpoints save ``state_dict()``, which works)."""
    import io
    import pickle

    shape = TINY_VECTOR if VERSION != LIGHTZERO_MAIN else TINY_IMAGE
    base = build_model(shape)
    model, reference = copy.deepcopy(base), copy.deepcopy(base)
    attachment = attach(model)
    sched = Schedule(steps=2, simulations=3)
    drive(model, shape, sched)
    stored = attachment.manager.stored_entries()
    twin = copy.deepcopy(model)
    copied = attachment_of(twin)
    assert copied is not None and copied is not attachment
    assert copied.manager is not attachment.manager and copied.manager.stored_entries() == 0
    assert attachment.manager.stored_entries() == stored
    compare(drive(reference, shape, sched), drive(twin, shape, sched), ("LightZero", "copy"))
    for save in (pickle.dumps, lambda m: torch.save(m, io.BytesIO())):
        with pytest.raises(UnsupportedOperationError, match="state_dict"):
            save(model)
    torch.save(model.state_dict(), io.BytesIO())
    copied.detach()
    attachment.detach()
    assert attachment_of(twin) is None


def unizero_attached(model: Any) -> Any:
    from zerokv.lightzero.attach import attached

    return attached(model)


# --------------------------------------------------------------------------- bad input


def _model() -> Any:
    shape = TINY_IMAGE if VERSION == LIGHTZERO_MAIN else TINY_VECTOR
    return build_model(shape, cache_mode="manager" if VERSION == LIGHTZERO_MAIN else "legacy")


def _unchanged(model: Any, before: dict[str, Any]) -> None:
    state = model.world_model.__dict__
    assert state.keys() == before.keys()
    assert all(state[k] is v for k, v in before.items())


def test_bad_input_is_refused_at_attach_time_and_changes_nothing() -> None:
    model = _model()
    wm = model.world_model
    before = dict(wm.__dict__)
    with pytest.raises(DeviceError, match="world model is on cpu"):
        attach(model, device="meta")
    with pytest.raises(ConfigError, match="unknown attach options"):
        attach(model, keys="zkv64")
    with pytest.raises(ConfigError, match="key must be"):
        attach(model, key="md5")
    with pytest.raises(ConfigError, match="compile must be a bool"):
        attach(model, compile="yes")
    # Options are refused, never coerced.
    for option, value in (
        ("verify", "False"),
        ("num_simulations", 0),
        ("max_cache_size", 0),
        ("num_simulations", "7"),
        ("num_simulations", 2.9),
        ("num_simulations", True),
    ):
        with pytest.raises(ConfigError, match=option):
            attach(model, **{option: value})
    # A tensor of the model on another device.
    wm.pos_emb_moved = torch.nn.Parameter(torch.zeros(1, device="meta"))
    try:
        with pytest.raises(DeviceError, match="pos_emb_moved on meta"):
            attach(model)
    finally:
        del wm.pos_emb_moved
    # Unsupported modes.
    for name, value, match in (
        ("continuous_action_space", True, "continuous_action_space"),
        ("tokens_per_block", 3, "tokens_per_block"),
    ):
        old = wm.config[name]
        wm.config[name] = value
        try:
            with pytest.raises(ConfigError, match=match):
                attach(model)
        finally:
            wm.config[name] = old
    wm.reanalyze_phase = True
    try:
        with pytest.raises(ConfigError, match="reanalyze_phase"):
            attach(model)
    finally:
        wm.reanalyze_phase = False
    if VERSION == LIGHTZERO_MAIN:
        wm.rebuild_kv_window_from_tokens = True
        try:
            with pytest.raises(ConfigError, match="rebuild_kv_window_from_tokens"):
                attach(model)
        finally:
            wm.rebuild_kv_window_from_tokens = False
    with pytest.raises(ConfigError, match="LightZero UniZero world model"):
        attach(torch.nn.Linear(2, 2))
    _unchanged(model, before)
    # Once attached: a second attach, reanalysis at call time, direct calls of the glue.
    attachment = attach(model)
    try:
        with pytest.raises(ConfigError, match="already attached"):
            attach(model)
        with pytest.raises(UnsupportedOperationError, match="replaced"):
            wm.update_cache_context(torch.zeros(1, 1, 64))
        wm.reanalyze_phase = True
        with pytest.raises(UnsupportedOperationError, match="reanalysis"):
            wm.forward_recurrent_inference([(torch.zeros(1, 1, 64).numpy(), torch.zeros(1))])
        wm.reanalyze_phase = False
        # Latents on another device than the cache.
        with pytest.raises(DeviceError, match="latents are on meta"):
            attachment._keys(torch.zeros(2, 64, device="meta"))
        # Per call, every check before any counter moves.
        envs = model.world_model.env_num
        shape = TINY_IMAGE if VERSION == LIGHTZERO_MAIN else TINY_VECTOR
        drive(model, shape, Schedule(steps=1, simulations=1))
        counted = (wm.hit_count, wm.total_query_count, attachment.manager.stats())
        action = torch.zeros(envs, dtype=torch.long)
        for latents, error, match in (
            (torch.zeros(envs, 1, 64, dtype=torch.float64).numpy(), DTypeError, "float64"),
            (torch.zeros(envs, 1, 64, device="meta"), DeviceError, "meta"),
        ):
            with pytest.raises(error, match=match):
                wm.forward_recurrent_inference([(latents, action)], 0, [1] * envs, 0)
            assert (wm.hit_count, wm.total_query_count, attachment.manager.stats()) == counted
        if not getattr(wm.config, "rotary_emb", False):
            table = wm.pos_emb_diff_k
            wm.pos_emb_diff_k = [{k: v.clone() for k, v in layer.items()} for layer in table]
            key = next(iter(wm.pos_emb_diff_k[0]))
            wm.pos_emb_diff_k[0][key].fill_(float("inf"))  # a weight update gone wrong
            latents = torch.zeros(envs, 1, 64).numpy()
            with pytest.raises(BatchError, match="finite"):
                wm.forward_recurrent_inference([(latents, action)], 0, [1] * envs, 0)
            assert (wm.hit_count, wm.total_query_count, attachment.manager.stats()) == counted
            wm.pos_emb_diff_k = table
        # The proxies follow Python's protocols: typed refusals, AttributeError for hasattr.
        legacy = "past_kv_cache_init_infer_envs" in wm.__dict__
        proxy = wm.past_kv_cache_init_infer_envs[0] if legacy else wm.kv_cache_manager.init_pools[0]
        for probe in (
            lambda: proxy[1],
            lambda: 1 in proxy,
            lambda: proxy.__setitem__(1, 2),
            lambda: list(proxy),
        ):
            with pytest.raises(UnsupportedOperationError, match="managed by zerokv"):
                probe()
        with pytest.raises(UnsupportedAttributeError):
            proxy.get  # noqa: B018
        assert not hasattr(proxy, "_key_to_index")
        assert getattr(proxy, "get", "default") == "default"
        assert isinstance(UnsupportedAttributeError("x"), AttributeError)
    finally:
        wm.reanalyze_phase = False
        attachment.detach()
    _unchanged(model, before)


def test_lightzero_clears_reach_zerokv_while_attached() -> None:
    """The policy clears LightZero's cache objects directly; while attached those are
    proxies that clear zerokv's pools (and refuse anything else)."""
    model = _model()
    shape = TINY_IMAGE if VERSION == LIGHTZERO_MAIN else TINY_VECTOR
    attachment = attach(model)
    try:
        drive(model, shape, Schedule(steps=2, simulations=3))
        mgr = attachment.manager
        assert all(size > 0 for size in mgr.root_sizes())
        assert mgr.recurrent_size() > 0
        unizero.end_episode(model, 1)  # init_pools[1].clear() or the legacy dict's clear
        assert mgr.root_sizes()[1] == 0 and mgr.root_sizes()[0] > 0
        wm = model.world_model
        if VERSION == LIGHTZERO_MAIN and wm.use_new_cache_manager:
            wm.kv_cache_manager.clear_recur_cache()
            with pytest.raises(UnsupportedOperationError, match=r"manager\.get_init_cache"):
                wm.kv_cache_manager.get_init_cache(0, 1)
        else:
            wm.past_kv_cache_recurrent_infer.clear()
            with pytest.raises(UnsupportedOperationError, match="only clear"):
                wm.past_kv_cache_recurrent_infer.get(1)
        assert mgr.recurrent_size() == 0
        wm.clear_caches()
        assert sum(mgr.root_sizes()) == 0
    finally:
        attachment.detach()


# --------------------------------------------------------------------------- syncs


def test_one_host_read_per_call_in_cache_code() -> None:
    """As CUDA runs it (device index, no CPU shortcuts): the only device->host read of
    attach's cache code is the batch's lengths, once per call; LightZero's glue hashes
    every child latent from a device tensor (one read per row)."""
    shape = TINY_IMAGE if VERSION == LIGHTZERO_MAIN else TINY_VECTOR
    base = build_model(shape, cache_mode="manager" if VERSION == LIGHTZERO_MAIN else "legacy")
    lightzero, zerokv, ops = unizero.count_syncs(base, shape)
    assert zerokv == 1.0, ops
    assert lightzero == shape.env_num


# --------------------------------------------------------------------------- 0.2.0's faults


needs_020 = pytest.mark.skipif(VERSION != LIGHTZERO_020, reason="LightZero 0.2.0's caches")


def _root_size(attachment: Attachment, env: int, latent: torch.Tensor) -> int:
    """The size of the root entry zerokv holds for ``latent`` in ``env``'s pool (0: none)."""
    mgr = attachment.manager
    keys, fps = mgr.keys_of(latent.reshape(1, -1))
    found = mgr.lookup_many([env], keys, fps, tiers="root")
    return int(mgr.read(found).lengths[0])


def _steps(model: Any, shape: Shape, count: int) -> list[torch.Tensor]:
    """``count`` full-batch steps without search; the root latents of each."""
    gen = torch.Generator().manual_seed(3)
    envs = shape.env_num
    dims = (
        (shape.observation_shape,)
        if isinstance(shape.observation_shape, int)
        else shape.observation_shape
    )
    last, action, roots = torch.zeros(envs, *dims), [-1] * envs, []
    import numpy as np

    for step in range(count):
        obs = torch.randn(envs, *dims, generator=gen)
        out = model.initial_inference(last, action, obs, np.full(envs, step, dtype=np.int64))
        roots.append(out.latent_state.detach().clone())
        last, action = obs, [1] * envs
    return roots


@needs_020
def test_020_stale_root_ring_is_not_reproduced() -> None:
    """0.2.0's root rings have two slots and never forget a key: after three steps the key
    of step 0's root points at a slot that holds step 2's entry. zerokv's pools evict."""
    base = build_model(TINY_VECTOR)
    theirs, ours = copy.deepcopy(base), copy.deepcopy(base)
    hash_state = __import__(
        "lzero.model.unizero_world_models.utils", fromlist=["hash_state"]
    ).hash_state
    roots = _steps(theirs, TINY_VECTOR, 3)
    wm = theirs.world_model
    key0 = hash_state(roots[0][0].view(-1).cpu().numpy())
    stale = wm.shared_pool_init_infer[0][wm.past_kv_cache_init_infer_envs[0][key0]]
    assert stale.size != 1  # LightZero returns step 2's entry for step 0's key
    attachment = attach(ours)
    try:
        roots = _steps(ours, TINY_VECTOR, 3)
        assert _root_size(attachment, 0, roots[0][0]) == 1  # step 0's own entry
    finally:
        attachment.detach()


@needs_020
def test_020_padded_root_store_is_not_reproduced() -> None:
    """One environment's root lookup misses in a continuing batch: 0.2.0 stores every row
    with the batch's size (the padding included); attach stores each row's own tokens. The
    outputs of that call are the same (same batch, same forward)."""
    base = build_model(TINY_VECTOR)
    theirs, ours = copy.deepcopy(base), copy.deepcopy(base)
    attachment = attach(ours)
    try:
        outs = []
        for model in (theirs, ours):
            _steps(model, TINY_VECTOR, 3)  # root entries of 5 tokens
            model.world_model.past_kv_cache_init_infer_envs[0].clear()  # env 0 will miss
            roots = _steps_from(model, TINY_VECTOR)
            outs.append(roots)
        assert torch.equal(outs[0], outs[1])
        wm = theirs.world_model
        hash_state = __import__(
            "lzero.model.unizero_world_models.utils", fromlist=["hash_state"]
        ).hash_state
        key = hash_state(outs[0][0].view(-1).cpu().numpy())
        assert wm.shared_pool_init_infer[0][wm.past_kv_cache_init_infer_envs[0][key]].size == 5
        assert _root_size(attachment, 0, outs[1][0]) == 3  # 1 recomputed token + 2 new
        assert _root_size(attachment, 1, outs[1][1]) == 5  # 5 + 2 = 7: window rule
    finally:
        attachment.detach()


def _steps_from(model: Any, shape: Shape) -> torch.Tensor:
    """One more step continuing ``_steps(model, shape, 3)``: its root latents."""
    import numpy as np

    gen = torch.Generator().manual_seed(3)
    envs = shape.env_num
    dims = (
        (shape.observation_shape,)
        if isinstance(shape.observation_shape, int)
        else shape.observation_shape
    )
    obs = [torch.randn(envs, *dims, generator=gen) for _ in range(4)]
    out = model.initial_inference(obs[2], [1] * envs, obs[3], np.full(envs, 3, dtype=np.int64))
    latent: torch.Tensor = out.latent_state.detach().clone()
    return latent


@needs_020
def test_020_double_miss_and_mixed_batch_do_not_raise() -> None:
    """0.2.0 raises TypeError when a search's parent is in no pool and IndexError for a
    root batch where some environments restart; attach recomputes the parent's one-token
    entry (LightZero main's rule) and splits the batch (main's rule)."""
    import numpy as np

    base = build_model(TINY_VECTOR)
    theirs, ours = copy.deepcopy(base), copy.deepcopy(base)
    envs = TINY_VECTOR.env_num
    unknown = np.random.default_rng(1).standard_normal((envs, 1, 64)).astype(np.float32)
    history = [(unknown, torch.zeros(envs, dtype=torch.long))]
    start = np.zeros(envs, dtype=np.int64)
    _steps(theirs, TINY_VECTOR, 2)
    with pytest.raises(TypeError):
        theirs.recurrent_inference(history, 0, [1] * envs, start)
    obs = torch.randn(envs, 4)
    with pytest.raises(IndexError):
        theirs.initial_inference(obs, [-1, 1, 1, 1], obs, start)
    attachment = attach(ours)
    try:
        _steps(ours, TINY_VECTOR, 2)
        out = ours.recurrent_inference(history, 0, [1] * envs, start)
        assert out.latent_state.shape == (envs, 1, 64)
        assert attachment.counts.recomputed_misses == envs
        mixed = ours.initial_inference(obs, [-1, 1, 1, 1], obs, start)
        assert mixed.latent_state.shape == (envs, 1, 64)
        assert _root_size(attachment, 0, mixed.latent_state[0]) == 1  # a first step
        assert _root_size(attachment, 1, mixed.latent_state[1]) == 3  # 1 + 2 tokens
    finally:
        attachment.detach()


# --------------------------------------------------------------------------- full shapes


ATARI_SCHEDULE = Schedule(steps=5, simulations=6, restart_all=frozenset({2}), clear=frozenset({3}))


@pytest.mark.parametrize("rotary", [False, True], ids=["absolute", "rotary"])
def test_outputs_equal_lightzero_at_the_atari_shape(rotary: bool) -> None:
    """UniZero's Atari config itself: 64x64 images, E = 768, 8 heads, 8 environments."""
    shape = SHAPES["atari"]
    mode = "manager" if VERSION == LIGHTZERO_MAIN else "legacy"
    theirs, ours, their_model, our_model, attachment, widths = run_pair(
        shape, rotary, mode, ATARI_SCHEDULE
    )
    try:
        compare(theirs, ours, ("LightZero", "attach"))
        assert counters(their_model) == counters(our_model)
        assert max(widths) >= shape.context_length - 1  # the window rule ran
    finally:
        attachment.detach()


# --------------------------------------------------------------------------- the docs


def test_quickstart_attach_block_runs_with_lightzero() -> None:
    """docs/quickstart.md's attach block, with LightZero installed: its real-model branch."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "quickstart.md").read_text("utf-8")
    blocks = [b for b in text.split("```python\n")[1:] if "attachment = attach(model)" in b]
    assert len(blocks) == 1
    namespace: dict[str, object] = {"__name__": "docs.quickstart"}
    exec(compile(blocks[0].split("```")[0], "quickstart.md", "exec"), namespace)
    attachment = namespace["attachment"]
    assert isinstance(attachment, Attachment) and not attachment.attached
