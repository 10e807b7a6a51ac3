"""The compiled hot path (``CacheConfig(compile=True)``, ``zerokv.kernels``).

* Every kernel compiles whole (``fullgraph=True``: a graph break raises) and the compiled
  manager equals the eager one bit for bit over a replay with episode ends (root lookups
  of env subsets), clears and window-rule stores, in every output and in the final state.
* One compiled simulation step at the Atari shape launches at most 15 kernels (measured
  with the profiler), in one compiled graph per phase call.
* The checks bite: a bug planted only in the compiled branch of a kernel fails the replay
  comparison, and the launch counter sees an added op.
* Bad configurations are refused.

Marked ``compiled``: the default ``tests`` session leaves them to the ``compiled`` session
(compilation takes tens of seconds on a CPU).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
import torch

from zerokv import CacheConfig, CacheManager, ConfigError, checks
from zerokv.bench.compiled import SimStep, count_launches, sim_step_launches
from zerokv.bench.workload import ReplayMismatch, WorkloadConfig, preset, replay
from zerokv.bench.zerokv_backend import ZeroKVBackend
from zerokv.index import Region, make_index
from zerokv.index import device as device_index
from zerokv.index.device import lookup_tiers
from zerokv.kernels import compiled_kernels
from zerokv.keys import zkv64_mix
from zerokv.pool import put_and_store
from zerokv.slab import gather_rows
from zerokv_spec.pool import Policy

pytestmark = pytest.mark.compiled

CPU = torch.device("cpu")

#: A short replay that still ends episodes (root lookups of env subsets: other batch
#: sizes), clears everything once, and stores under the window rule.
REPLAY = dataclasses.replace(
    preset("cartpole"),
    env_num=4,
    num_simulations=6,
    steps=8,
    episode_length_range=(3, 6),
    clear_interval=5,
)


@pytest.fixture(autouse=True)
def _strict_dynamo() -> Iterator[None]:
    # Past the recompile limit dynamo would run a kernel eagerly without a word: here that
    # is an error, so every call below really ran compiled code.
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        yield


def _replay_compiled_against_eager(
    cfg: WorkloadConfig, device: torch.device = CPU
) -> tuple[ZeroKVBackend, ZeroKVBackend]:
    compiled = ZeroKVBackend(cfg, device, torch.float32, compile=True)
    eager = ZeroKVBackend(cfg, device, torch.float32)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(checks, "CPU_SHORTCUTS", False)  # eager takes the path compiled code takes
        result = replay(
            compiled, cfg, device=device, steps=cfg.steps, check_against=eager, instrument=False
        )
    assert result.checked_steps == cfg.steps
    return compiled, eager


def _assert_same_state(a: CacheManager, b: CacheManager) -> None:
    assert a.stats() == b.stats()
    for env in range(a.config.env_num):
        assert a.root_slot_keys(env) == b.root_slot_keys(env)
        assert a.root_stats(env) == b.root_stats(env)
    assert a.recurrent_slot_keys() == b.recurrent_slot_keys()
    assert a.recurrent_stats() == b.recurrent_stats()
    assert torch.equal(a.slab.lengths, b.slab.lengths)
    assert torch.equal(a.slab.kv.view(torch.int32), b.slab.kv.view(torch.int32))


def test_compiled_manager_equals_eager_over_a_replay() -> None:
    compiled, eager = _replay_compiled_against_eager(REPLAY)
    _assert_same_state(compiled.manager, eager.manager)
    # Every kernel of the hot path ran compiled (fullgraph: a graph break would have raised).
    kernels = compiled.manager.kernels
    assert kernels is compiled_kernels(CPU) and kernels.compiled
    assert {zkv64_mix, lookup_tiers, gather_rows, put_and_store} <= set(kernels._done)
    assert eager.manager.kernels.compiled is False


@pytest.mark.cuda
def test_compiled_manager_equals_eager_on_cuda() -> None:
    """The same on CUDA, where the compiled kernels replay CUDA graphs
    (``mode="reduce-overhead"``; every output is compared as soon as it is made)."""
    cuda = torch.device("cuda")
    compiled, eager = _replay_compiled_against_eager(REPLAY, cuda)
    assert compiled.manager.kernels.mode == "reduce-overhead"
    _assert_same_state(compiled.manager, eager.manager)


@pytest.mark.cuda
def test_compiled_cuda_hot_path_is_sync_free() -> None:
    driver = SimStep(preset("atari"), compile=True, device="cuda")
    for _ in range(3):  # compiled, then CUDA graphs warmed up and recorded
        driver.step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        driver.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


@pytest.mark.cuda
def test_a_cuda_sim_step_makes_at_most_15_launches() -> None:
    launches = sim_step_launches(preset("atari"), "cuda")
    assert launches.runtime is not None and 0 < launches.total <= 15, launches


def test_a_sim_step_launches_at_most_12_kernels_at_the_atari_shape() -> None:
    launches = sim_step_launches(preset("atari"))
    # One compiled graph per public call: keys twice, the lookup (both tiers), the gather,
    # the store (the put, the window rule and the scatter).
    assert launches.graphs == 5
    assert launches.generated >= launches.graphs
    # Measured: 12 (6 generated + 1 extern + 5 eager); the target is 15.
    assert launches.total <= 12, launches


def test_the_launch_counter_sees_every_op() -> None:
    x = torch.ones(8)
    assert count_launches(lambda: x + 1).eager == 1
    assert count_launches(lambda: (x + 1) * 2).eager == 2  # a planted op is counted
    assert count_launches(lambda: x.view(2, 4)).total == 0  # a view launches nothing
    fused = torch.compile(lambda t: (t + 1) * 2, fullgraph=True, dynamic=False)
    fused(x)
    with torch._inductor.config.patch({"cpp.enable_kernel_profile": True}):
        torch._dynamo.reset()
        fused(x)  # compiled again, with the profiler's marks
        counted = count_launches(lambda: fused(x))
    torch._dynamo.reset()
    assert (counted.graphs, counted.generated, counted.eager) == (1, 1, 0)


def test_a_bug_only_in_compiled_code_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """``first_true`` has its own branch in compiled code; plant an off-by-one there."""
    original = device_index.first_true

    def shifted(mask: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return (original(mask) + 1) % int(mask.shape[1])
        return original(mask)

    monkeypatch.setattr(device_index, "first_true", shifted)
    torch._dynamo.reset()  # compile the planted version
    try:
        with pytest.raises(ReplayMismatch):
            _replay_compiled_against_eager(REPLAY)
    finally:
        monkeypatch.undo()
        torch._dynamo.reset()  # and drop it


def test_bad_compile_configurations_are_refused() -> None:
    def config(**options: object) -> CacheConfig:
        return CacheConfig(
            env_num=2,
            num_layers=1,
            num_heads=1,
            head_dim=2,
            context_length=4,
            root_capacity=2,
            recurrent_capacity=2,
            **options,  # type: ignore[arg-type]
        )

    with pytest.raises(ConfigError, match="compile must be a bool"):
        config(compile="yes")
    with pytest.raises(ConfigError, match="compile_mode must be None or one of"):
        config(compile=True, compile_mode="fast")
    with pytest.raises(ConfigError, match="compile is False"):
        config(compile_mode="default")
    with pytest.raises(ConfigError, match="host index"):
        config(compile=True, index="host")
    with pytest.raises(ConfigError, match="compiled kernels run on the device index"):
        make_index(Policy.FIFO, Region(1, 2), CPU, "host", compiled_kernels(CPU))
    # compile=True with index="auto" takes the device index on the CPU too.
    manager = CacheManager(config(compile=True))
    assert type(manager.root.index).__name__ == "FIFOIndex"
