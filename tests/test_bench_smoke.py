"""A tiny replay of the UniZero workload through zerokv and the legacy design: both paths
must return the same K/V on every step (no timing assertions; speed lives in the bench)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from zerokv.bench.legacy import LegacyBackend
from zerokv.bench.workload import ReplayMismatch, StepOutput, WorkloadConfig, preset, replay
from zerokv.bench.zerokv_backend import ZeroKVBackend
from zerokv.entry import Batch
from zerokv.manager import TierLookup

CPU = torch.device("cpu")


@pytest.mark.parametrize("name", ["cartpole", "memory"])
def test_zerokv_and_legacy_agree(name: str) -> None:
    base = preset(name)
    cfg = dataclasses.replace(
        base,
        env_num=3,
        num_simulations=4,
        embed_dim=base.num_heads * 4,
        context_length=min(base.context_length, 12),
        steps=6,
        episode_length_range=(2, 5),
        clear_interval=4,
    )
    zerokv = ZeroKVBackend(cfg, CPU, torch.float32)
    legacy = LegacyBackend(cfg, CPU, torch.float32)
    result = replay(zerokv, cfg, steps=6, check_against=legacy, instrument=False)
    # Episodes end and restart, the clear interval passes, roots and nodes get re-used.
    counts = zerokv.hit_counts()
    assert counts == legacy.hit_counts()
    assert counts["root_hits"] > 0 and counts["recurrent_hits"] > 0 and counts["misses"] > 0
    assert result.config == cfg.name


class _Corrupting(ZeroKVBackend):
    """zerokv with one stored value flipped: the replay's check must notice."""

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
        if int(out.lengths[0]) > 0:
            out.kv[0, 0, 0, 0, -1, 0] += 1.0
        return out


def test_replay_check_bites() -> None:
    cfg = dataclasses.replace(
        preset("cartpole"), env_num=2, num_simulations=3, embed_dim=8, steps=3
    )
    with pytest.raises(ReplayMismatch):
        replay(
            _Corrupting(cfg, CPU, torch.float32),
            cfg,
            steps=3,
            check_against=LegacyBackend(cfg, CPU, torch.float32),
            instrument=False,
        )


def test_cli_writes_comparison_and_stage_breakdown(tmp_path: Path) -> None:
    """The CLI end to end on a tiny run: the JSON holds the comparison and the stage
    breakdown (its keys and the batch size, not its times), and the markdown page names
    the command that made it."""
    from zerokv.bench.__main__ import main
    from zerokv.bench.zerokv_backend import STAGES

    out = tmp_path
    args = ["--config", "cartpole", "--steps", "2", "--repeats", "1", "--no-progress"]
    args += ["--json", str(out / "p.json"), "--markdown", str(out / "p.md")]
    assert main(args) == 0
    doc = json.loads((out / "p.json").read_text())
    cfg = preset("cartpole")
    assert doc["configs"]["cartpole"]["speedup_vs_legacy"] > 0
    stages = doc["stages"]["cartpole"]
    assert set(stages["stages_us"]) == set(STAGES)
    assert all(v > 0 for v in stages["stages_us"].values()) and stages["floor_us"] > 0
    assert stages["legacy_us"] > 0
    entry = 2 * cfg.num_layers * cfg.context_length * cfg.embed_dim * 4
    assert stages["batch_bytes"] == cfg.env_num * entry
    page = (out / "p.md").read_text()
    assert "python -m zerokv.bench --config cartpole" in page and "copy floor" in page


class _Unverified(ZeroKVBackend):
    """zerokv fed a batch whose lengths it has not verified (``Batch(kv, lengths)``)."""

    def _with_tokens(
        self, found: TierLookup, fresh: torch.Tensor, new: torch.Tensor, miss: torch.Tensor
    ) -> Batch:
        batch = super()._with_tokens(found, fresh, new, miss)
        return Batch(batch.kv, batch.lengths.clone())


def _tiny() -> WorkloadConfig:
    return dataclasses.replace(
        preset("cartpole"), env_num=2, num_simulations=3, embed_dim=8, steps=3
    )


def test_zerokv_steps_count_no_host_sync() -> None:
    """The replay's instrumented step sees no synchronising op in zerokv's steps (on CUDA
    each would stall the stream); a batch of unverified lengths costs one per store, and
    the count shows it."""
    cfg = _tiny()
    clean = replay(ZeroKVBackend(cfg, CPU, torch.float32), cfg, steps=3)
    assert clean.syncs_per_sim_step == 0 and clean.syncs_per_root_step == 0
    unverified = replay(_Unverified(cfg, CPU, torch.float32), cfg, steps=3)
    assert unverified.syncs_per_sim_step == 1 and unverified.syncs_per_root_step == 1
