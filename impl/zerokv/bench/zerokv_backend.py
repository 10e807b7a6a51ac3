"""zerokv's side of the replay: the ``CacheBackend`` protocol on ``zerokv.CacheManager``.

This is how UniZero's inference would call zerokv, one batched call per phase:
``keys_of`` (device hashing) -> ``lookup`` -> ``gather_reserve`` (static width ``cl``,
room for the new tokens) -> the model's tokens written in place (a miss's fresh token,
then the 2 new tokens) -> ``store_*_batch`` (split, window rule, batched write). Sizes are
LightZero's (``CacheConfig.legacy``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from zerokv.bench.legacy import LegacyBackend
from zerokv.bench.workload import StepOutput, WorkloadConfig, replay
from zerokv.entry import Batch, Correction
from zerokv.manager import CacheConfig, CacheManager, TierLookup
from zerokv.slab import Slab

__all__ = ["STAGES", "StageBreakdown", "StagedZeroKVBackend", "ZeroKVBackend", "stage_breakdown"]


class ZeroKVBackend:
    """``CacheBackend`` over one ``zerokv.CacheManager``."""

    name = "zerokv"

    def __init__(
        self,
        cfg: WorkloadConfig,
        device: torch.device,
        dtype: torch.dtype,
        *,
        compile: bool = False,
        index: str = "auto",
    ) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        if compile:
            self.name = "zerokv compiled"
        self.manager = CacheManager(
            CacheConfig.legacy(
                env_num=cfg.env_num,
                num_layers=cfg.num_layers,
                num_heads=cfg.num_heads,
                head_dim=cfg.head_dim,
                context_length=cfg.context_length,
                num_simulations=cfg.num_simulations,
                max_cache_size=cfg.max_cache_size,
                device=str(self.device),
                dtype=dtype,
                compile=compile,
                index=index,
            )
        )
        self._correction: tuple[torch.Tensor, Correction] | None = None

    def _prepared(self, table: torch.Tensor) -> Correction:
        # The table changes only when the weights do: pad it once, reuse it per store.
        if self._correction is None or self._correction[0] is not table:
            self._correction = (table, Correction(table))
        return self._correction[1]

    def _with_tokens(
        self, found: TierLookup, fresh: torch.Tensor, new: torch.Tensor, miss: torch.Tensor
    ) -> Batch:
        """The gathered batch with a fresh token for each miss and the new tokens.

        ``gather_reserve`` gathers the entries with room for the ``t`` new tokens, which
        the "model" then writes in place, as a transformer writes each layer's new K/V into
        its cache. The batch is ``cl`` wide and stored entries hold at most ``cl - 2``
        tokens, so the overflow rule drops 2 columns of padding and no real token; a miss
        gathers an empty row, whose last kept column then takes the miss's fresh 1-token
        entry.
        """
        t = new.shape[4]
        batch = self.manager.gather_reserve(found, t)
        batch.kv[:, :, :, :, -t:, :] = new
        column = batch.kv[:, :, :, :, -t - 1 : -t, :]
        column.copy_(torch.where(miss.view(1, 1, -1, 1, 1, 1), fresh, column))
        return batch.with_length(miss, t + 1)

    def root_step(
        self,
        env_ids: Sequence[int],
        continuing: torch.Tensor,
        prev_latents: torch.Tensor,
        fresh: torch.Tensor,
        new: torch.Tensor,
        cur_latents: torch.Tensor,
        correction: torch.Tensor,
    ) -> StepOutput:
        mgr = self.manager
        rows = len(env_ids)
        cont = [bool(c) for c in continuing.tolist()]  # a host tensor: no device read
        keys, fps = mgr.keys_of(prev_latents)
        if all(cont):
            found = mgr.lookup_many(env_ids, keys, fps, tiers="root")
        else:
            # Only continuing environments look their previous root up (as LightZero); the
            # others get empty rows. The lookup of the subset is spread over all rows (it
            # keeps its manager and generation, so the gather accepts it).
            picked = [b for b in range(rows) if cont[b]]
            zero = torch.full((rows,), mgr.slab.zero, dtype=torch.int64, device=self.device)
            none = torch.zeros(rows, dtype=torch.int64, device=self.device)
            rows_t = torch.tensor(picked, dtype=torch.int64).to(self.device)
            sub = mgr.lookup_many(
                [env_ids[b] for b in picked],
                keys.index_select(0, rows_t),
                fps.index_select(0, rows_t),
                tiers="root",
            )
            found = replace(
                sub,
                tier=none.index_copy(0, rows_t, sub.tier),
                slot=(none - 1).index_copy(0, rows_t, sub.slot),
                collided=none.bool(),
                global_slot=zero.index_copy(0, rows_t, sub.global_slot),
            )
        cont_t = torch.tensor(cont, dtype=torch.bool).to(self.device)
        batch = self._with_tokens(found, fresh, new, cont_t & (found.tier == 0))
        cur_keys, cur_fps = mgr.keys_of(cur_latents)
        mgr.store_root_batch(env_ids, cur_keys, batch, self._prepared(correction), cur_fps)
        return StepOutput(batch.kv, batch.lengths)

    def sim_step(
        self,
        env_ids: Sequence[int],
        parent_latents: torch.Tensor,
        fresh: torch.Tensor,
        new: torch.Tensor,
        child_latents: torch.Tensor,
        correction: torch.Tensor,
    ) -> StepOutput:
        mgr = self.manager
        self._tick(None)
        keys, fps = mgr.keys_of(parent_latents)
        self._tick("hash parents")
        found = mgr.lookup_many(env_ids, keys, fps)
        self._tick("lookup")
        batch = self._with_tokens(found, fresh, new, found.tier == 0)
        self._tick("gather_reserve")
        child_keys, child_fps = mgr.keys_of(child_latents)
        self._tick("hash children")
        mgr.store_recurrent_batch(env_ids, child_keys, batch, self._prepared(correction), child_fps)
        self._tick("store")
        return StepOutput(batch.kv, batch.lengths)

    def _tick(self, stage: str | None) -> None:
        """End of ``stage`` of ``sim_step`` (None: its start); `StagedZeroKVBackend` times it."""

    def clear_recurrent(self) -> None:
        self.manager.clear_recurrent()

    def clear_env(self, env_id: int) -> None:
        self.manager.clear_env(env_id)

    def clear_all(self) -> None:
        self.manager.clear_all()

    def hit_counts(self) -> dict[str, int]:
        s = self.manager.stats()
        return {
            "root_hits": s.root_hits,
            "recurrent_hits": s.recurrent_hits,
            "misses": s.misses,
            "lookups": s.queries,
        }

    def storage_bytes(self) -> int:
        return self.manager.storage_bytes

    def stored_entries(self) -> int:
        return self.manager.stored_entries()

    def steady_state_bytes(self) -> int:
        """The slab is allocated whole when the manager is built: no later growth."""
        return self.manager.storage_bytes


# --------------------------------------------------------------------------- stages

#: The stages of one simulation step, in order, as `StagedZeroKVBackend` times them.
STAGES: tuple[str, ...] = ("hash parents", "lookup", "gather_reserve", "hash children", "store")


class StagedZeroKVBackend(ZeroKVBackend):
    """`ZeroKVBackend` whose `sim_step` records the wall time of each stage (`STAGES`).

    On CUDA the device is synchronised at every stage boundary, so the stages add up to
    more than an untimed step; on the CPU the timers cost a few hundred nanoseconds.
    """

    name = "zerokv (staged)"

    def __init__(self, cfg: WorkloadConfig, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(cfg, device, dtype)
        self.stages: dict[str, list[float]] = {s: [] for s in STAGES}
        self._last = 0.0

    def _tick(self, stage: str | None) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        if stage is not None:
            self.stages[stage].append(now - self._last)
        self._last = now


@dataclass(frozen=True)
class StageBreakdown:
    """Median microseconds per stage of zerokv's simulation step, the copy floor, legacy.

    ``floor_us`` is the median time of the least data movement any gather-and-store cache
    does per simulation step with torch's primitives on this device: ``index_select`` of
    the ``B`` entries a step reads out of the slab plus ``index_copy_`` of ``B`` entries
    back into it (no hashing, no bookkeeping, no window rule). ``legacy_us`` is legacy's
    median simulation step measured in the same rounds, so that ``legacy_us / floor_us``
    compares numbers taken under the same machine load.
    """

    config: str
    stages_us: dict[str, float]
    total_us: float
    floor_us: float
    legacy_us: float
    batch_bytes: int
    steps: int = 0
    rounds: int = 0


def _floor_seconds(slab: Slab, rows: int, seed: int, reps: int) -> tuple[list[float], int]:
    """``reps`` timings of gathering ``rows`` slab entries and scattering them back."""
    device = slab.device
    gen = torch.Generator().manual_seed(seed)
    # Distinct slots, so index_copy_ is deterministic; the slab is discarded afterwards.
    picks = torch.randperm(slab.num_slots, generator=gen)[: 2 * rows].to(device)
    src, dst = picks[:rows], picks[rows:]
    times = []
    nbytes = 0
    for i in range(reps + 3):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        batch = slab.kv.index_select(2, src)
        slab.kv.index_copy_(2, dst, batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= 3:
            times.append(time.perf_counter() - start)
        nbytes = batch.numel() * batch.element_size()
    return times, nbytes


def stage_breakdown(
    cfg: WorkloadConfig,
    device: torch.device,
    dtype: torch.dtype,
    steps: int,
    rounds: int = 3,
    floor_reps: int = 20,
    progress: Callable[[int, int], None] | None = None,
) -> StageBreakdown:
    """`rounds` rounds of: a `steps`-step replay through `StagedZeroKVBackend`, the same
    replay through `LegacyBackend`, and `floor_reps` timings of the copy floor. Medians
    over every round. `progress(done, total)` counts the replayed collect steps
    (`2 * rounds * steps` in all)."""
    samples: dict[str, list[float]] = {s: [] for s in STAGES}
    floor: list[float] = []
    legacy: list[float] = []
    nbytes = 0
    total = 2 * rounds * steps
    done = 0

    def tick(step_done: int, _step_total: int) -> None:
        if progress is not None:
            progress(done + step_done, total)

    for r in range(rounds):
        staged = StagedZeroKVBackend(cfg, device, dtype)
        replay(
            staged, cfg, device=device, dtype=dtype, steps=steps, instrument=False, progress=tick
        )
        done += steps
        for stage, values in staged.stages.items():
            samples[stage] += values
        times, nbytes = _floor_seconds(staged.manager.slab, cfg.env_num, cfg.seed + r, floor_reps)
        floor += times
        del staged
        base = LegacyBackend(cfg, device, dtype)
        result = replay(
            base, cfg, device=device, dtype=dtype, steps=steps, instrument=False, progress=tick
        )
        done += steps
        legacy.append(result.sim_step_ms * 1e3)
        del base
    stages = {s: statistics.median(v) * 1e6 for s, v in samples.items() if v}
    return StageBreakdown(
        config=cfg.name,
        stages_us=stages,
        total_us=sum(stages.values()),
        floor_us=statistics.median(floor) * 1e6,
        legacy_us=statistics.median(legacy),
        batch_bytes=nbytes,
        steps=steps,
        rounds=rounds,
    )
