"""Fast tests of the benchmark's legacy re-creation and replay driver (zerokv.bench)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest
import torch

from zerokv.bench.legacy import (
    LegacyBackend,
    LegacyKeysValues,
    LegacyLayerCache,
    LegacyPool,
    legacy_hash,
)
from zerokv.bench.workload import (
    DispatchCounter,
    ReplayMismatch,
    StepOutput,
    WorkloadConfig,
    compare_outputs,
    preset,
    replay,
)

CPU = torch.device("cpu")


# --------------------------------------------------------------------------- helpers


def _entry(values: Sequence[float], capacity: int = 8, num_layers: int = 1) -> LegacyKeysValues:
    """A 1-head, d=1 entry whose K tokens are `values` and V tokens their negatives."""
    kv = LegacyKeysValues.empty(1, 1, capacity, 1, num_layers, CPU, torch.float32)
    if values:
        tokens = torch.tensor(values, dtype=torch.float32).view(1, 1, -1, 1)
        for layer in kv.layers:
            layer.k.update(tokens)
            layer.v.update(-tokens)
    return kv


def _k_tokens(kv: LegacyKeysValues, layer: int = 0) -> list[float]:
    cache = kv.layers[layer].k
    return [float(x) for x in cache.cache[0, 0, : cache.size, 0].tolist()]


def _v_tokens(kv: LegacyKeysValues, layer: int = 0) -> list[float]:
    cache = kv.layers[layer].v
    return [float(x) for x in cache.cache[0, 0, : cache.size, 0].tolist()]


def _tiny_cfg() -> WorkloadConfig:
    return WorkloadConfig(
        name="tiny",
        num_layers=1,
        num_heads=1,
        embed_dim=1,
        context_length=8,
        env_num=2,
        num_simulations=1,
    )


def _pool(capacity: int) -> LegacyPool:
    return LegacyPool(capacity, lambda: _entry([]))


def _kv_tokens(rows: Sequence[Sequence[float]], sign: float = 1.0) -> torch.Tensor:
    """new/fresh-shaped [L=1, 2, B, H=1, t, d=1] with K = rows and V = -rows."""
    k = torch.tensor(rows, dtype=torch.float32).view(len(rows), 1, -1, 1)
    return torch.stack([sign * k, -sign * k]).unsqueeze(0)


# --------------------------------------------------------------------------- FIFO ring


def test_ring_wraparound_evicts_the_pointer_slots_old_key() -> None:
    pool = _pool(3)
    assert [pool.put(k, _entry([k])) for k in (10, 11, 12)] == [0, 1, 2]
    assert pool.next_slot == 0
    assert pool.put(13, _entry([13])) == 0
    assert 10 not in pool and pool.get(10) is None
    assert pool.key_at(0) == 13 and pool.slot_of(13) == 0
    assert pool.next_slot == 1 and len(pool) == 3
    assert pool.put(14, _entry([14])) == 1
    assert 11 not in pool and pool.key_at(1) == 14
    entry = pool.get(13)
    assert entry is not None and _k_tokens(entry) == [13.0]
    for key in (12, 13, 14):
        slot = pool.slot_of(key)
        assert slot is not None and pool.key_at(slot) == key


def test_ring_restore_overwrites_in_place_without_moving_the_pointer() -> None:
    pool = _pool(4)
    pool.put(1, _entry([1.0]))
    pool.put(2, _entry([2.0]))
    before = pool.get(1)
    assert pool.next_slot == 2
    assert pool.put(1, _entry([5.0, 6.0])) == 0
    assert pool.next_slot == 2 and len(pool) == 2
    after = pool.get(1)
    assert after is before and after is not None
    assert _k_tokens(after) == [5.0, 6.0] and _v_tokens(after) == [-5.0, -6.0]


def test_ring_clear_resets_the_pointer_and_keeps_slot_tensors() -> None:
    pool = _pool(3)
    pool.put(1, _entry([1.0]))
    pool.put(2, _entry([2.0]))
    allocated = pool.allocated_bytes()
    pool.clear()
    assert len(pool) == 0 and pool.next_slot == 0
    assert pool.get(1) is None and pool.key_at(0) is None
    assert pool.put(3, _entry([3.0])) == 0
    assert pool.allocated_bytes() == allocated


def test_ring_stores_a_private_copy() -> None:
    pool = _pool(2)
    src = _entry([1.0, 2.0])
    pool.put(7, src)
    src.layers[0].k.cache.fill_(9.0)
    stored = pool.get(7)
    assert stored is not None and stored is not src
    assert _k_tokens(stored) == [1.0, 2.0]


# --------------------------------------------------------------------------- append rule


def test_append_without_overflow_writes_after_size() -> None:
    cache = LegacyLayerCache(torch.zeros(1, 1, 8, 1))
    assert cache.update(torch.tensor([1.0, 2.0]).view(1, 1, 2, 1)) == 0
    assert cache.update(torch.tensor([3.0, 4.0]).view(1, 1, 2, 1)) == 0
    assert cache.size == 4
    assert cache.cache[0, 0, :4, 0].tolist() == [1.0, 2.0, 3.0, 4.0]


def test_append_overflow_shifts_by_an_even_amount() -> None:
    cache = LegacyLayerCache(torch.zeros(1, 1, 8, 1))
    cache.update(torch.arange(1.0, 8.0).view(1, 1, 7, 1))  # size 7 of 8
    # 7 + 2 - 8 = 1 rounds up to 2: tokens 1, 2 go, 3..7 move to the front.
    assert cache.update(torch.tensor([8.0, 9.0]).view(1, 1, 2, 1)) == 2
    assert cache.size == 7
    assert cache.cache[0, 0, :7, 0].tolist() == [3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]


def test_append_overflow_resets_when_the_shift_covers_everything() -> None:
    cache = LegacyLayerCache(torch.zeros(1, 1, 4, 1))
    cache.update(torch.tensor([1.0, 2.0, 3.0]).view(1, 1, 3, 1))
    # 3 + 4 - 4 = 3 rounds up to 4 >= 3: reset, then write.
    assert cache.update(torch.tensor([5.0, 6.0, 7.0, 8.0]).view(1, 1, 4, 1)) == 3
    assert cache.size == 4
    assert cache.cache[0, 0, :, 0].tolist() == [5.0, 6.0, 7.0, 8.0]


# --------------------------------------------------------------------------- steps


def test_root_step_from_empty_rows_returns_and_stores_the_new_tokens() -> None:
    cfg = _tiny_cfg()
    be = LegacyBackend(cfg)
    prev = torch.tensor([[0.5], [1.5]])
    cur = torch.tensor([[2.5], [3.5]])
    fresh = _kv_tokens([[50.0], [60.0]])
    new = _kv_tokens([[1.0, 2.0], [3.0, 4.0]])
    corr = torch.zeros(cfg.correction_shape)
    out = be.root_step([0, 1], torch.tensor([False, False]), prev, fresh, new, cur, corr)
    assert out.lengths.tolist() == [2, 2] and out.kv.shape == (1, 2, 2, 1, 2, 1)
    assert out.kv[0, 0, :, 0, :, 0].tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert out.kv[0, 1, :, 0, :, 0].tolist() == [[-1.0, -2.0], [-3.0, -4.0]]
    assert be.hit_counts() == {"root_hits": 0, "recurrent_hits": 0, "misses": 0, "lookups": 0}
    for env, want in ((0, [1.0, 2.0]), (1, [3.0, 4.0])):
        stored = be.root_pool(env).get(legacy_hash(cur[env]))
        assert stored is not None and _k_tokens(stored) == want
    assert be.stored_entries() == 2
    assert be.host_reads() == 2  # non-continuing rows hash only their current latent


def test_sim_step_pads_left_appends_and_applies_the_window_rule() -> None:
    cfg = _tiny_cfg()
    be = LegacyBackend(cfg)
    p0, p1 = torch.tensor([0.25]), torch.tensor([0.75])
    be.root_pool(0).put(legacy_hash(p0), _entry([1.0, 2.0, 3.0, 4.0, 5.0]))
    be.recurrent_pool.put(legacy_hash(p1), _entry([11.0, 12.0, 13.0]))
    fresh = _kv_tokens([[-1.0], [-1.0]])
    new = _kv_tokens([[100.0, 101.0], [200.0, 201.0]])
    corr = torch.zeros(cfg.correction_shape)
    corr[0, 0, 0, :, 0] = torch.tensor([1000.0, 2000.0, 3000.0, 4000.0, 5000.0])
    corr[0, 1, 0, :, 0] = 0.5
    children = torch.tensor([[0.125], [0.875]])
    out = be.sim_step([0, 1], torch.stack([p0, p1]), fresh, new, children, corr)

    # Assembled left-padded to S = 5, then 2 tokens appended: W = 7.
    assert out.lengths.tolist() == [7, 5] and out.kv.shape[4] == 7
    assert out.kv[0, 0, 0, 0, :, 0].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 100.0, 101.0]
    assert out.kv[0, 0, 1, 0, 2:, 0].tolist() == [11.0, 12.0, 13.0, 200.0, 201.0]
    assert out.kv[0, 1, 1, 0, 2:, 0].tolist() == [-11.0, -12.0, -13.0, -200.0, -201.0]
    assert be.hit_counts() == {"root_hits": 1, "recurrent_hits": 1, "misses": 0, "lookups": 2}

    # Row 0 reached cl - 1 = 7 tokens: keep [2, 7), add the correction, size cl - 3 = 5.
    row0 = be.recurrent_pool.get(legacy_hash(children[0]))
    assert row0 is not None and row0.size == 5
    assert _k_tokens(row0) == [1003.0, 2004.0, 3005.0, 4100.0, 5101.0]
    assert _v_tokens(row0) == [-2.5, -3.5, -4.5, -99.5, -100.5]
    # Nothing beyond the new size survives in the stored slot.
    assert row0.layers[0].k.cache[0, 0, 5:, 0].tolist() == [0.0, 0.0, 0.0]
    # Row 1 (5 tokens) is stored de-padded and unwindowed.
    row1 = be.recurrent_pool.get(legacy_hash(children[1]))
    assert row1 is not None and _k_tokens(row1) == [11.0, 12.0, 13.0, 200.0, 201.0]
    # The pools keep their own entries: the root entry was only read.
    root = be.root_pool(0).get(legacy_hash(p0))
    assert root is not None and _k_tokens(root) == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_window_rule_on_an_even_size_drops_the_newest_token() -> None:
    # Rows that start empty have even sizes: 6 + 2 = 8 = cl >= cl - 1, and the rule keeps
    # tokens [2, cl - 1) = [2, 7), so the last appended token is not stored.
    cfg = _tiny_cfg()
    be = LegacyBackend(cfg)
    prev = torch.tensor([[0.5], [1.5]])
    be.root_pool(0).put(legacy_hash(prev[0]), _entry([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    cur = torch.tensor([[2.5], [3.5]])
    new = _kv_tokens([[7.0, 8.0], [9.0, 10.0]])
    fresh = _kv_tokens([[70.0], [80.0]])
    corr = torch.zeros(cfg.correction_shape)
    out = be.root_step([0, 1], torch.tensor([True, True]), prev, fresh, new, cur, corr)
    # Row 1 missed: its fresh 1-token entry is padded to S = 6.
    assert out.lengths.tolist() == [8, 3]
    assert out.kv[0, 0, 1, 0, :, 0].tolist() == [0.0] * 5 + [80.0, 9.0, 10.0]
    assert be.hit_counts() == {"root_hits": 1, "recurrent_hits": 0, "misses": 1, "lookups": 2}
    stored = be.root_pool(0).get(legacy_hash(cur[0]))
    assert stored is not None and _k_tokens(stored) == [3.0, 4.0, 5.0, 6.0, 7.0]
    missed = be.root_pool(1).get(legacy_hash(cur[1]))
    assert missed is not None and _k_tokens(missed) == [80.0, 9.0, 10.0]


def test_clears_follow_the_pools() -> None:
    cfg = _tiny_cfg()
    be = LegacyBackend(cfg)
    be.root_pool(0).put(1, _entry([1.0]))
    be.root_pool(1).put(2, _entry([2.0]))
    be.recurrent_pool.put(3, _entry([3.0]))
    be.clear_env(0)
    assert be.stored_entries() == 2 and 2 in be.root_pool(1)
    be.clear_recurrent()
    assert be.stored_entries() == 1
    be.clear_all()
    assert be.stored_entries() == 0
    assert be.storage_bytes() > 0  # legacy keeps its slot tensors for reuse


# --------------------------------------------------------------------------- configs


def test_legacy_pool_sizes() -> None:
    atari = preset("atari")
    assert (atari.root_capacity, atari.recurrent_capacity) == (256, 200)
    assert preset("memory").head_dim == 64 and preset("memory").context_length == 102
    assert dataclasses.replace(atari, num_simulations=200).root_capacity == 400
    assert dataclasses.replace(atari, max_cache_size=100).root_capacity == 100
    assert atari.entry_payload_bytes() == 8 * 2 * 8 * 768 == 96 * 1024
    with pytest.raises(ValueError):
        dataclasses.replace(atari, context_length=9)


# --------------------------------------------------------------------------- replay


def _replay_cfg() -> WorkloadConfig:
    # Short episodes and a short clear interval exercise clear_env and clear_all.
    return dataclasses.replace(
        preset("cartpole"),
        env_num=2,
        num_simulations=3,
        episode_length_range=(2, 3),
        clear_interval=2,
    )


def test_tiny_replay_legacy_against_legacy_passes() -> None:
    cfg = _replay_cfg()
    result = replay(
        LegacyBackend(cfg),
        cfg,
        steps=3,
        check_against=LegacyBackend(cfg, name="legacy#2"),
    )
    assert result.checked_steps == 3
    # Host hashing: one read per parent and per child latent on the CPU.
    assert result.syncs_per_sim_step == 2 * cfg.env_num
    assert result.alloc_bytes_per_sim_step is not None and result.alloc_bytes_per_sim_step > 0
    sim = result.sim_phase_hits
    assert sim["lookups"] == 3 * 3 * 2
    assert sim["lookups"] == sim["root_hits"] + sim["recurrent_hits"] + sim["misses"]
    assert sim["recurrent_hits"] > 0
    again = replay(LegacyBackend(cfg), cfg, steps=3, instrument=False)
    assert again.sim_phase_hits == sim and again.root_phase_hits == result.root_phase_hits


class _Perturbed(LegacyBackend):
    """Returns a batch with one valid value changed in its first sim_step."""

    calls = 0

    def sim_step(
        self,
        env_ids: Sequence[int],
        parent_latents: torch.Tensor,
        fresh: torch.Tensor,
        new: torch.Tensor,
        child_latents: torch.Tensor,
        correction: torch.Tensor,
    ) -> StepOutput:
        out = super().sim_step(env_ids, parent_latents, fresh, new, child_latents, correction)
        self.calls += 1
        if self.calls > 1:
            return out
        kv = out.kv.clone()
        kv[1, 1, 0, 0, -1, 3] += 1.0  # the last column always holds a valid token
        return StepOutput(kv, out.lengths)


def test_tiny_replay_detects_a_planted_mismatch() -> None:
    cfg = _replay_cfg()
    with pytest.raises(ReplayMismatch) as info:
        replay(_Perturbed(cfg), cfg, steps=3, check_against=LegacyBackend(cfg))
    assert (info.value.step, info.value.phase, info.value.sim, info.value.row) == (0, "sim", 0, 0)


def test_compare_outputs_ignores_padding_but_not_lengths() -> None:
    kv = torch.arange(2 * 2 * 3 * 1.0).view(1, 2, 2, 1, 3, 1)
    a = StepOutput(kv, torch.tensor([3, 2]))
    padded = kv.clone()
    padded[0, :, 1, 0, 0, 0] = 99.0  # row 1's padding column
    compare_outputs(StepOutput(padded, torch.tensor([3, 2])), a, step=0, phase="root")
    with pytest.raises(ReplayMismatch) as info:
        compare_outputs(StepOutput(kv, torch.tensor([3, 1])), a, step=4, phase="root")
    assert (info.value.step, info.value.row) == (4, 1)


def test_dispatch_counter_counts_new_storage_and_syncs_only() -> None:
    x = torch.zeros(4, 4)
    with DispatchCounter() as counter:
        y = torch.empty(8, 8)
        x.view(16).add_(1.0)
        _ = x[1:3]
        _ = float(y.sum())
    assert counter.alloc_bytes == 8 * 8 * 4 + 4  # y, plus the 0-d sum
    assert counter.syncs == 1 and counter.sync_ops["_local_scalar_dense"] == 1
