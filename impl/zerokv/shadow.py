"""Shadow mode: the reference model run beside the implementation, compared on every call.

``ShadowManager(manager_or_config)`` wraps a ``zerokv.CacheManager`` (a fresh one, or one
built from a ``CacheConfig``) and exposes the same methods. Every call runs on the
implementation *and* on ``zerokv_spec.manager.CacheManager`` (the executable reference
model), and the results are compared; the first difference raises ``ShadowDivergence``
(a ``ContractViolation``: a bug in zerokv, or a use outside the spec) naming the
operation and both results.

What is compared:

* **lookups** - per row the tier that hit, the slot in that tier's pool and the collision
  flag (and that the global slab slot is the one that tier and slot imply);
* **puts** - per row the slot written, the key evicted and whether it was an insert; after
  every put the stored keys of every slot of every pool;
* **statistics** - the manager's counters and every pool's ``PoolStats``, after every
  operation that can change them;
* **K/V data, bit-exactly** (up to the sign of zero) - the spec models a token as one
  float, so real ``[H, d]`` tokens cannot live in it. The shadow keeps a *side table*:
  for every stored ``(tier, pool, key)`` the exact tensor copy the implementation was
  asked to store (for ``store_*_batch`` computed by an independent per-row reference of
  split + window rule), plus a version number that the spec entry carries as its token
  values. A lookup remembers the side-table rows of its hits (the spec's answer, not the
  implementation's); ``gather`` / ``read`` / ``entry_at`` must return exactly those
  tensors, and after every put the written slab slots must hold exactly them.
* **errors** - when the implementation rejects a call, the spec must reject it with the
  same error type (tensor-only errors - ``ShapeError`` / ``DTypeError`` / ``DeviceError`` -
  have no spec counterpart), and no pool may have changed.

Two intentional differences are not reported: ``gather`` without a width is compared with
the spec's ``gather(width=cl)`` (the implementation's static width), and ``read`` has no
spec counterpart (it is compared with the side table). Everything else the implementation
does differently is reported, including uses that the spec defines differently, e.g. a
``gather`` narrower than its longest entry, or a ``gather`` of a lookup whose slot was
overwritten after the lookup.

This is a **debugging tool**. Every call reads its results back to the host (on CUDA:
a synchronisation per call), keeps a tensor copy per stored entry, compares every pool's
slot keys after every store, and runs the pure-Python spec, whose pools re-check all their
invariants on every operation. Measured cost (CPU, torch 2.13, 1 thread, minimum of 5
interleaved runs; ``python`` timings of whole workloads, shadow vs plain):

* ``zerokv.lightzero.KVCacheManager`` replaying LightZero's call pattern (per step and
  environment a root lookup and store, then N simulations of ``hierarchical_get`` +
  ``set_recur_cache``): small config (L=2, H=2, d=8, cl=8, 4 envs, N=16, pools 32/64)
  0.14 -> 0.40 ms per call, **2.8x**; Atari legacy sizes (L=2, H=8, d=96, cl=8, 8 envs,
  N=25, pools 256/200) 0.17 -> 0.75 ms per call, **4.4x**;
* ``CacheManager`` batched (B=8 rows per lookup / gather / store_*_batch, Atari legacy
  sizes): 0.33 -> 2.7 ms per operation, **8x** (the spec folds row by row).

(With the device-resident index forced on the CPU, ``checks.CPU_SHORTCUTS = False``,
the plain runs are slower and the factors 2.0x / 2.9x / 4.5x.) The factor grows with
the pools' capacities and the batch size, and will be larger against a GPU run, where
the plain path never synchronises. Use it in tests and when hunting a bug, never in
training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import torch

from zerokv.entry import Batch, Correction, Entries, append
from zerokv.errors import (
    BatchError,
    ConfigError,
    ContractViolation,
    DeviceError,
    DTypeError,
    ShapeError,
    ZeroKVError,
)
from zerokv.index import PutOutcome
from zerokv.keys import KeyFn
from zerokv.manager import CacheConfig, CacheManager, TierLookup
from zerokv.slab import Slab
from zerokv_spec.entry import Batch as SpecBatch
from zerokv_spec.entry import Correction as SpecCorrection
from zerokv_spec.entry import Entry
from zerokv_spec.manager import CacheManager as SpecManager
from zerokv_spec.manager import Tier
from zerokv_spec.manager import TierLookup as SpecTierLookup
from zerokv_spec.pool import PutResult, SlotPool
from zerokv_spec.stats import ManagerStats, PoolStats

__all__ = ["ShadowDivergence", "ShadowManager", "ShadowTierLookup"]

R = TypeVar("R")
S = TypeVar("S")

#: Errors about tensors the spec cannot see (it has no tensors).
_TENSOR_ONLY = (ShapeError, DTypeError, DeviceError)


class ShadowDivergence(ContractViolation):
    """The implementation and the spec disagreed (see the module docstring)."""

    def __init__(self, operation: str, what: str, implementation: object, spec: object) -> None:
        self.operation = operation
        self.what = what
        self.implementation = implementation
        self.spec = spec
        super().__init__(
            f"shadow divergence in {operation}: {what}: "
            f"implementation {implementation!r}, spec {spec!r}"
        )


@dataclass(frozen=True)
class _Stored:
    """A side-table row: the exact K/V ``[L, 2, H, cl, d]`` (slab layout) and its length."""

    version: int
    kv: torch.Tensor
    length: int


@dataclass(frozen=True)
class ShadowTierLookup(TierLookup):
    """A ``TierLookup`` that also remembers the spec's answer and the expected K/V rows."""

    spec_rows: tuple[SpecTierLookup, ...] = ()
    expected: tuple[_Stored | None, ...] = ()


def _diverge(operation: str, what: str, implementation: object, spec: object) -> NoReturn:
    raise ShadowDivergence(operation, what, implementation, spec)


def _same(operation: str, what: str, implementation: object, spec: object) -> None:
    if implementation != spec:
        _diverge(operation, what, implementation, spec)


def _same_tensor(operation: str, what: str, got: torch.Tensor, want: torch.Tensor) -> None:
    """Bit-exact equality, except that +0.0 and -0.0 count as equal.

    (The implementation zeroes padding by multiplying with a 0/1 mask, which turns a
    negative token into -0.0; NaNs compare equal only with the same bits.)
    """
    if got.shape != want.shape or got.dtype != want.dtype:
        _diverge(operation, f"{what} (shape, dtype)", (tuple(got.shape), got.dtype), want.dtype)
    a, b = got.detach().cpu(), want.detach().cpu()
    if a.dtype.is_floating_point:
        width = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        same = a.contiguous().view(width) == b.contiguous().view(width)
        same |= (a == 0) & (b == 0)
    else:
        same = a == b
    if not bool(same.all()):
        bad = (~same).nonzero()
        _diverge(
            operation,
            f"{what}: {bad.shape[0]} elements differ, first at {tuple(bad[0].tolist())}",
            "implementation data",
            "side-table data",
        )


def _env_list(env_ids: Sequence[int] | torch.Tensor) -> list[int]:
    if isinstance(env_ids, torch.Tensor):
        return [int(e) for e in env_ids.tolist()]
    return list(env_ids)


def _optional_list(
    values: torch.Tensor | None, present: torch.Tensor | None
) -> list[int | None] | None:
    if values is None:
        return None
    flags = [True] * values.shape[0] if present is None else present.tolist()
    return [v if f else None for v, f in zip(values.tolist(), flags)]


def _optional_floats(
    values: torch.Tensor | None, present: torch.Tensor | None
) -> list[float | None] | None:
    if values is None:
        return None
    flags = [True] * values.shape[0] if present is None else present.tolist()
    return [float(v) if f else None for v, f in zip(values.tolist(), flags)]


def _rows_of(keys: object) -> int:
    if isinstance(keys, torch.Tensor) and keys.dim() == 1:
        return int(keys.shape[0])
    return 0


def _tokens(value: float, count: int, num_layers: int) -> tuple[tuple[float, ...], ...]:
    return tuple((value,) * count for _ in range(num_layers))


def _reference_rows(
    batch: Batch, context_length: int, correction: Correction
) -> list[tuple[torch.Tensor, int]]:
    """What a store writes per row, computed row by row (split, then the window rule)."""
    cl, width = context_length, batch.width
    kv = batch.kv
    layers, _, _, heads, _, head_dim = kv.shape
    rows: list[tuple[torch.Tensor, int]] = []
    for b, n in enumerate(int(x) for x in batch.lengths.tolist()):
        tokens = kv[:, :, b, :, width - n : width, :]
        if n >= cl - 1:
            tokens = tokens[:, :, :, 2 : cl - 1, :] + correction.table
            n = cl - 3
        out = torch.zeros((layers, 2, heads, cl, head_dim), dtype=kv.dtype, device=kv.device)
        out[:, :, :, cl - n :, :] = tokens
        rows.append((out, n))
    return rows


class ShadowManager:
    """``zerokv.CacheManager`` with the spec run beside it (module docstring)."""

    def __init__(
        self, manager_or_config: CacheManager | CacheConfig, key_fn: KeyFn | None = None
    ) -> None:
        if isinstance(manager_or_config, CacheConfig):
            impl = CacheManager(manager_or_config, key_fn)
        elif isinstance(manager_or_config, CacheManager):
            impl = manager_or_config
            if any(impl.root_sizes()) or impl.recurrent_size() or impl.search_budget is not None:
                raise ConfigError(
                    "ShadowManager needs a manager with empty pools and no declared search "
                    "(the spec starts empty)"
                )
        else:
            raise ConfigError(
                f"expected a CacheManager or a CacheConfig, got {type(manager_or_config).__name__}"
            )
        self.impl = impl
        self.spec = SpecManager(impl.config.spec_config())
        # Statistics survive clears, so a cleared manager may arrive with counts: adopt them.
        self.spec.stats = impl.stats()
        for env, pool in enumerate(self.spec.roots):
            pool.stats = impl.root_stats(env)
        self.spec.recurrent.stats = impl.recurrent_stats()
        self.side: dict[tuple[Tier, int, int], _Stored] = {}
        self._next_version = 0
        self.compared = 0  # operations compared so far

    # ------------------------------------------------------------------ passthrough
    @property
    def config(self) -> CacheConfig:
        return self.impl.config

    @property
    def device(self) -> torch.device:
        return self.impl.device

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.impl.shape

    @property
    def storage_bytes(self) -> int:
        return self.impl.storage_bytes

    @property
    def slab(self) -> Slab:
        """The implementation's slab (for inspection; writing to it is a divergence)."""
        return self.impl.slab

    def keys_of(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The implementation's keys (pure functions: compared by the hashing tests)."""
        return self.impl.keys_of(latents)

    def recurrent_keys(
        self,
        envs: torch.Tensor,
        keys: torch.Tensor,
        fingerprints: torch.Tensor | None,
        has_fingerprint: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        return self.impl.recurrent_keys(envs, keys, fingerprints, has_fingerprint)

    # ------------------------------------------------------------------ machinery
    def _call(
        self,
        operation: str,
        impl_fn: Callable[[], R],
        spec_builder: Callable[[], Callable[[], S]],
    ) -> tuple[R, S]:
        """Run the implementation, then the spec; mirror errors (module docstring)."""
        self.compared += 1
        try:
            result = impl_fn()
        except ZeroKVError as err:
            self._mirror_error(operation, err, spec_builder)
            raise
        spec_fn = spec_builder()
        try:
            spec_result = spec_fn()
        except ZeroKVError as spec_err:
            _diverge(operation, "outcome", "succeeded", f"{type(spec_err).__name__}: {spec_err}")
        return result, spec_result

    def _mirror_error(
        self,
        operation: str,
        err: ZeroKVError,
        spec_builder: Callable[[], Callable[[], object]],
    ) -> None:
        if not isinstance(err, _TENSOR_ONLY):
            try:
                spec_fn = spec_builder()
            except Exception:  # the spec cannot even represent the arguments
                spec_fn = None
            if spec_fn is not None:
                try:
                    spec_fn()
                except ZeroKVError as spec_err:
                    if type(spec_err) is not type(err):
                        _diverge(
                            operation,
                            "error type",
                            f"{type(err).__name__}: {err}",
                            f"{type(spec_err).__name__}: {spec_err}",
                        )
                else:
                    _diverge(operation, "outcome", f"{type(err).__name__}: {err}", "succeeded")
        self._compare_state(operation, full=True)

    def _pool_of(self, tier: Tier, env: int) -> SlotPool[Entry]:
        return self.spec.roots[env] if tier is Tier.ROOT else self.spec.recurrent

    def _side_key(
        self, tier: Tier, env: int, key: int, fingerprint: int | None
    ) -> tuple[Tier, int, int]:
        if tier is Tier.ROOT:
            return (Tier.ROOT, env, key)
        return (Tier.RECURRENT, 0, self.spec.recurrent_key(env, key, fingerprint)[0])

    def _side_row(self, operation: str, side_key: tuple[Tier, int, int]) -> _Stored:
        stored = self.side.get(side_key)
        if stored is None:
            _diverge(operation, f"side table has no row for {side_key}", None, "a stored entry")
        return stored

    def _check_spec_entry(
        self, operation: str, side_key: tuple[Tier, int, int], entry: Entry | None
    ) -> _Stored:
        """The side-table row of ``side_key``, checked against the spec's entry."""
        stored = self._side_row(operation, side_key)
        if entry is None:
            _diverge(operation, f"spec entry of {side_key}", stored.length, None)
        _same(operation, f"length of the entry of {side_key}", stored.length, entry.size)
        if entry.size and entry.k[0][0] != float(stored.version):
            _diverge(operation, f"version of {side_key}", stored.version, entry.k[0][0])
        return stored

    # ------------------------------------------------------------------ comparisons
    def _compare_stats(self, operation: str) -> None:
        _same(operation, "manager statistics", self.impl.stats(), self.spec.stats)
        for env, pool in enumerate(self.spec.roots):
            got = self.impl.root_stats(env)
            _same(operation, f"root pool {env} statistics", got, pool.stats)
        got_rec = self.impl.recurrent_stats()
        _same(operation, "recurrent pool statistics", got_rec, self.spec.recurrent.stats)

    def _compare_state(self, operation: str, *, full: bool = False) -> None:
        """Stored keys of every slot (and, ``full``, eviction orders, statistics, budget)."""
        for env, pool in enumerate(self.spec.roots):
            _same(
                operation,
                f"root pool {env} slot keys",
                self.impl.root_slot_keys(env),
                pool.slot_keys,
            )
        _same(
            operation,
            "recurrent pool slot keys",
            self.impl.recurrent_slot_keys(),
            self.spec.recurrent.slot_keys,
        )
        if not full:
            return
        for env, pool in enumerate(self.spec.roots):
            _same(
                operation,
                f"root pool {env} eviction order",
                self.impl.root.eviction_order(env),
                pool.eviction_order(),
            )
        _same(
            operation,
            "recurrent eviction order",
            self.impl.recurrent.eviction_order(0),
            self.spec.recurrent.eviction_order(),
        )
        _same(
            operation,
            "search (budget, used)",
            (self.impl.search_budget, self.impl.search_used),
            (self.spec.search_budget, self.spec.search_used),
        )
        self._compare_stats(operation)

    def _expected_batch(
        self, operation: str, rows: Sequence[_Stored | None], width: int
    ) -> tuple[torch.Tensor, list[int]]:
        cfg = self.impl.config
        shape = (cfg.num_layers, 2, cfg.num_heads, cfg.context_length, cfg.head_dim)
        zero = torch.zeros(shape, dtype=cfg.dtype, device=self.impl.device)
        kv = torch.stack([zero if r is None else r.kv for r in rows], dim=2)
        cl = cfg.context_length
        if width <= cl:
            kv = kv[:, :, :, :, cl - width :, :]
        else:
            kv = torch.nn.functional.pad(kv, (0, 0, width - cl, 0))
        return kv, [0 if r is None else r.length for r in rows]

    # ------------------------------------------------------------------ lookups
    def lookup_many(
        self,
        env_ids: Sequence[int] | torch.Tensor,
        keys: torch.Tensor,
        fingerprints: torch.Tensor | None = None,
        has_fingerprint: torch.Tensor | None = None,
        tiers: str = "hierarchical",
    ) -> ShadowTierLookup:
        """``CacheManager.lookup``, compared row by row with the spec's ``lookup_many``."""
        op = f"lookup(tiers={tiers!r})"
        envs: list[int] = []
        key_list: list[int] = []
        fps: list[int | None] = []

        def spec_builder() -> Callable[[], list[SpecTierLookup]]:
            envs[:] = _env_list(env_ids)
            key_list[:] = [int(k) for k in keys.tolist()]
            given = _optional_list(fingerprints, has_fingerprint)
            fps[:] = [None] * len(key_list) if given is None else given
            return lambda: self.spec.lookup_many(envs, key_list, given, tiers)

        found, spec_rows = self._call(
            op,
            lambda: self.impl.lookup_many(env_ids, keys, fingerprints, has_fingerprint, tiers),
            spec_builder,
        )
        cfg = self.impl.config
        tier_l, slot_l, coll_l, glob_l = (
            t.tolist() for t in (found.tier, found.slot, found.collided, found.global_slot)
        )
        expected: list[_Stored | None] = []
        for b, row in enumerate(spec_rows):
            got = (int(tier_l[b]), None if tier_l[b] == 0 else int(slot_l[b]), bool(coll_l[b]))
            _same(
                op, f"row {b} (tier, slot, collided)", got, (int(row.tier), row.slot, row.collided)
            )
            if row.tier is Tier.ROOT and row.slot is not None:
                want_global = envs[b] * cfg.root_capacity + row.slot
            elif row.tier is Tier.RECURRENT and row.slot is not None:
                want_global = self.impl.recurrent_base + row.slot
            else:
                want_global = self.impl.slab.zero
            _same(op, f"row {b} global slot", int(glob_l[b]), want_global)
            if row.tier is Tier.MISS:
                expected.append(None)
            else:
                side_key = self._side_key(row.tier, envs[b], key_list[b], fps[b])
                expected.append(self._check_spec_entry(op, side_key, row.entry))
        self._compare_stats(op)
        return ShadowTierLookup(
            found.tier,
            found.slot,
            found.collided,
            found.global_slot,
            tuple(spec_rows),
            tuple(expected),
        )

    def _shadow_lookup(self, operation: str, found: TierLookup) -> ShadowTierLookup:
        if not isinstance(found, ShadowTierLookup):
            raise BatchError(
                f"{operation} of a ShadowManager needs a lookup made by the same ShadowManager, "
                f"got {type(found).__name__}"
            )
        return found

    def gather(self, found: TierLookup, width: int | None = None) -> Batch:
        """``CacheManager.gather``; K/V compared bit-exactly with the side table."""
        op = "gather"
        shadow = self._shadow_lookup(op, found)
        cl = self.impl.config.context_length
        batch, spec_batch = self._call(
            op,
            lambda: self.impl.gather(found, width),
            lambda: (
                lambda: self.spec.gather(list(shadow.spec_rows), cl if width is None else width)
            ),
        )
        want_kv, want_len = self._expected_batch(op, shadow.expected, spec_batch.width)
        _same(op, "batch lengths", [int(n) for n in batch.lengths.tolist()], want_len)
        _same(op, "spec batch lengths", want_len, list(spec_batch.lengths))
        _same_tensor(op, "batch K/V", batch.kv, want_kv)
        return batch

    def gather_append(self, found: TierLookup, new_kv: torch.Tensor) -> Batch:
        """``CacheManager.gather_append``; compared bit-exactly with ``gather`` (itself
        checked against the spec) followed by ``append``."""
        op = "gather_append"
        fused = self.impl.gather_append(found, new_kv)
        want = append(self.gather(found), new_kv, self.impl.config.context_length)
        _same(op, "batch lengths", fused.lengths.tolist(), want.lengths.tolist())
        _same_tensor(op, "batch K/V", fused.kv, want.kv)
        return fused

    def gather_reserve(self, found: TierLookup, t: int) -> Batch:
        """``CacheManager.gather_reserve``; compared bit-exactly with ``gather`` (itself
        checked against the spec) followed by ``append`` of ``t`` zero tokens."""
        op = "gather_reserve"
        fused = self.impl.gather_reserve(found, t)
        base = self.gather(found)
        shape = base.kv.shape
        zeros = base.kv.new_zeros((shape[0], 2, shape[2], shape[3], t, shape[5]))
        want = append(base, zeros, self.impl.config.context_length)
        _same(op, "batch lengths", fused.lengths.tolist(), want.lengths.tolist())
        _same_tensor(op, "batch K/V", fused.kv, want.kv)
        return fused

    def read(self, found: TierLookup) -> Entries:
        """``CacheManager.read``; compared bit-exactly with the side table."""
        op = "read"
        shadow = self._shadow_lookup(op, found)
        entries = self.impl.read(found)
        want_kv, want_len = self._expected_batch(
            op, shadow.expected, self.impl.config.context_length
        )
        _same(op, "entry lengths", [int(n) for n in entries.lengths.tolist()], want_len)
        _same_tensor(op, "entries K/V", entries.kv, want_kv)
        return entries

    # ------------------------------------------------------------------ stores
    def _store(
        self,
        operation: str,
        tier: Tier,
        impl_fn: Callable[[], PutOutcome],
        spec_op: Callable[
            [list[int], list[int], list[int | None] | None, list[float | None] | None, list[int]],
            list[PutResult],
        ],
        stored_rows: Callable[[], list[tuple[torch.Tensor, int]]],
        env_ids: Sequence[int] | torch.Tensor,
        keys: torch.Tensor,
        fingerprints: torch.Tensor | None,
        has_fingerprint: torch.Tensor | None,
        priorities: torch.Tensor | None,
        has_priority: torch.Tensor | None,
    ) -> PutOutcome:
        rows = _rows_of(keys)
        versions = list(range(self._next_version, self._next_version + rows))
        self._next_version += rows
        envs: list[int] = []
        key_list: list[int] = []
        fps: list[int | None] = []

        def spec_builder() -> Callable[[], list[PutResult]]:
            envs[:] = _env_list(env_ids)
            key_list[:] = [int(k) for k in keys.tolist()]
            given = _optional_list(fingerprints, has_fingerprint)
            fps[:] = [None] * len(key_list) if given is None else given
            prios = _optional_floats(priorities, has_priority)
            return lambda: spec_op(envs, key_list, given, prios, versions)

        out, results = self._call(operation, impl_fn, spec_builder)
        slot_l, ev_l, evm_l, ins_l = (
            t.tolist() for t in (out.slot, out.evicted, out.evicted_mask, out.inserted)
        )
        for b, res in enumerate(results):
            got = (int(slot_l[b]), int(ev_l[b]) if evm_l[b] else None, bool(ins_l[b]))
            want = (res.slot, res.evicted, res.inserted)
            _same(operation, f"row {b} (slot, evicted, inserted)", got, want)
        data = stored_rows()
        written: dict[tuple[Tier, int, int], int] = {}
        for b, res in enumerate(results):
            side_key = self._side_key(tier, envs[b], key_list[b], fps[b])
            if res.evicted is not None:
                self.side.pop((tier, side_key[1], res.evicted), None)
                written.pop((tier, side_key[1], res.evicted), None)
            kv, length = data[b]
            self.side[side_key] = _Stored(versions[b], kv.clone(), length)
            written[side_key] = res.slot
        self._check_written(operation, written)
        self._compare_state(operation)
        self._compare_stats(operation)
        return out

    def _check_written(self, operation: str, written: dict[tuple[Tier, int, int], int]) -> None:
        """Each key a put wrote: spec entry, side table and slab slot agree bit-exactly."""
        cfg = self.impl.config
        for side_key, slot in written.items():
            tier, pool_id, key = side_key
            entry = self._pool_of(tier, pool_id).peek(key)
            stored = self._check_spec_entry(operation, side_key, entry)
            if tier is Tier.ROOT:
                flat = pool_id * cfg.root_capacity + slot
            else:
                flat = self.impl.recurrent_base + slot
            slab = self.impl.slab
            _same(operation, f"stored length of {side_key}", int(slab.lengths[flat]), stored.length)
            _same_tensor(operation, f"stored K/V of {side_key}", slab.kv[:, :, flat], stored.kv)

    def _spec_entries(self, versions: list[int], lengths: list[int]) -> list[Entry]:
        layers = self.impl.config.num_layers
        return [
            Entry(_tokens(float(v), n, layers), _tokens(float(v), n, layers))
            for v, n in zip(versions, lengths)
        ]

    def _store_many(
        self,
        operation: str,
        tier: Tier,
        impl_fn: Callable[[], PutOutcome],
        env_ids: Sequence[int] | torch.Tensor,
        keys: torch.Tensor,
        entries: Entries,
        fingerprints: torch.Tensor | None,
        has_fingerprint: torch.Tensor | None,
        priorities: torch.Tensor | None,
        has_priority: torch.Tensor | None,
    ) -> PutOutcome:
        spec_store = (
            self.spec.store_root_many if tier is Tier.ROOT else self.spec.store_recurrent_many
        )

        def spec_op(
            envs: list[int],
            key_list: list[int],
            fps: list[int | None] | None,
            prios: list[float | None] | None,
            versions: list[int],
        ) -> list[PutResult]:
            lengths = [int(n) for n in entries.lengths.tolist()]
            return spec_store(envs, key_list, self._spec_entries(versions, lengths), fps, prios)

        def stored_rows() -> list[tuple[torch.Tensor, int]]:
            lengths = [int(n) for n in entries.lengths.tolist()]
            return [(entries.kv[:, :, b], n) for b, n in enumerate(lengths)]

        return self._store(
            operation,
            tier,
            impl_fn,
            spec_op,
            stored_rows,
            env_ids,
            keys,
            fingerprints,
            has_fingerprint,
            priorities,
            has_priority,
        )

    def _store_batch(
        self,
        operation: str,
        tier: Tier,
        impl_fn: Callable[[], PutOutcome],
        env_ids: Sequence[int] | torch.Tensor,
        keys: torch.Tensor,
        batch: Batch,
        correction: Correction,
        fingerprints: torch.Tensor | None,
        has_fingerprint: torch.Tensor | None,
        priorities: torch.Tensor | None,
        has_priority: torch.Tensor | None,
    ) -> PutOutcome:
        spec_store = (
            self.spec.store_root_batch if tier is Tier.ROOT else self.spec.store_recurrent_batch
        )
        cfg = self.impl.config

        def spec_op(
            envs: list[int],
            key_list: list[int],
            fps: list[int | None] | None,
            prios: list[float | None] | None,
            versions: list[int],
        ) -> list[PutResult]:
            lengths = [int(n) for n in batch.lengths.tolist()]
            width, layers = batch.width, batch.num_layers
            rows = tuple((0.0,) * (width - n) + (float(v),) * n for v, n in zip(versions, lengths))
            spec_batch = SpecBatch((rows,) * layers, (rows,) * layers, tuple(lengths), width)
            zero = SpecCorrection.zero(layers, cfg.context_length)
            return spec_store(envs, key_list, spec_batch, zero, fps, prios)

        return self._store(
            operation,
            tier,
            impl_fn,
            spec_op,
            lambda: _reference_rows(batch, cfg.context_length, correction),
            env_ids,
            keys,
            fingerprints,
            has_fingerprint,
            priorities,
            has_priority,
        )

    def store_root_batch(
        self,
        env_ids: Sequence[int] | torch.Tensor,
        keys: torch.Tensor,
        batch: Batch,
        correction: Correction,
        fingerprints: torch.Tensor | None = None,
        has_fingerprint: torch.Tensor | None = None,
        priorities: torch.Tensor | None = None,
        has_priority: torch.Tensor | None = None,
    ) -> PutOutcome:
        """``CacheManager.store_root_batch``, compared with the spec."""
        return self._store_batch(
            "store_root_batch",
            Tier.ROOT,
            lambda: self.impl.store_root_batch(
                env_ids,
                keys,
                batch,
                correction,
                fingerprints,
                has_fingerprint,
                priorities,
                has_priority,
            ),
            env_ids,
            keys,
            batch,
            correction,
            fingerprints,
            has_fingerprint,
            priorities,
            has_priority,
        )

    def store_recurrent_batch(
        self,
        env_ids: Sequence[int] | torch.Tensor,
        keys: torch.Tensor,
        batch: Batch,
        correction: Correction,
        fingerprints: torch.Tensor | None = None,
        has_fingerprint: torch.Tensor | None = None,
        priorities: torch.Tensor | None = None,
        has_priority: torch.Tensor | None = None,
    ) -> PutOutcome:
        """``CacheManager.store_recurrent_batch``, compared with the spec."""
        return self._store_batch(
            "store_recurrent_batch",
            Tier.RECURRENT,
            lambda: self.impl.store_recurrent_batch(
                env_ids,
                keys,
                batch,
                correction,
                fingerprints,
                has_fingerprint,
                priorities,
                has_priority,
            ),
            env_ids,
            keys,
            batch,
            correction,
            fingerprints,
            has_fingerprint,
            priorities,
            has_priority,
        )

    def store_root_many(
        self,
        env_ids: Sequence[int] | torch.Tensor,
        keys: torch.Tensor,
        entries: Entries,
        fingerprints: torch.Tensor | None = None,
        has_fingerprint: torch.Tensor | None = None,
        priorities: torch.Tensor | None = None,
        has_priority: torch.Tensor | None = None,
    ) -> PutOutcome:
        """``CacheManager.store_root_many``, compared with the spec."""
        return self._store_many(
            "store_root_many",
            Tier.ROOT,
            lambda: self.impl.store_root_many(
                env_ids, keys, entries, fingerprints, has_fingerprint, priorities, has_priority
            ),
            env_ids,
            keys,
            entries,
            fingerprints,
            has_fingerprint,
            priorities,
            has_priority,
        )

    def store_recurrent_many(
        self,
        env_ids: Sequence[int] | torch.Tensor,
        keys: torch.Tensor,
        entries: Entries,
        fingerprints: torch.Tensor | None = None,
        has_fingerprint: torch.Tensor | None = None,
        priorities: torch.Tensor | None = None,
        has_priority: torch.Tensor | None = None,
    ) -> PutOutcome:
        """``CacheManager.store_recurrent_many``, compared with the spec."""
        return self._store_many(
            "store_recurrent_many",
            Tier.RECURRENT,
            lambda: self.impl.store_recurrent_many(
                env_ids, keys, entries, fingerprints, has_fingerprint, priorities, has_priority
            ),
            env_ids,
            keys,
            entries,
            fingerprints,
            has_fingerprint,
            priorities,
            has_priority,
        )

    # ------------------------------------------------------------------ priorities, searches
    def set_priority(self, tier: Tier, env_id: int, key: int, priority: float) -> None:
        op = "set_priority"
        self._call(
            op,
            lambda: self.impl.set_priority(tier, env_id, key, priority),
            lambda: lambda: self.spec.set_priority(tier, env_id, key, priority),
        )
        self._compare_state(op, full=True)

    def begin_search(self, nodes: int) -> None:
        op = "begin_search"
        self._call(
            op,
            lambda: self.impl.begin_search(nodes),
            lambda: lambda: self.spec.begin_search(nodes),
        )
        self._compare_state(op, full=True)

    def end_search(self) -> None:
        op = "end_search"
        self._call(op, self.impl.end_search, lambda: self.spec.end_search)
        self._compare_state(op, full=True)

    # ------------------------------------------------------------------ clearing
    def _forget(self, keep: Callable[[tuple[Tier, int, int]], bool]) -> None:
        self.side = {k: v for k, v in self.side.items() if keep(k)}

    def clear_env(self, env_id: int) -> None:
        op = "clear_env"
        self._call(
            op, lambda: self.impl.clear_env(env_id), lambda: lambda: self.spec.clear_env(env_id)
        )
        self._forget(lambda k: not (k[0] is Tier.ROOT and k[1] == env_id))
        self._compare_state(op, full=True)

    def clear_roots(self) -> None:
        op = "clear_roots"
        self._call(op, self.impl.clear_roots, lambda: self.spec.clear_roots)
        self._forget(lambda k: k[0] is not Tier.ROOT)
        self._compare_state(op, full=True)

    def clear_recurrent(self) -> None:
        op = "clear_recurrent"
        self._call(op, self.impl.clear_recurrent, lambda: self.spec.clear_recurrent)
        self._forget(lambda k: k[0] is not Tier.RECURRENT)
        self._compare_state(op, full=True)

    def clear_all(self) -> None:
        op = "clear_all"
        self._call(op, self.impl.clear_all, lambda: self.spec.clear_all)
        self.side = {}
        self._compare_state(op, full=True)

    # ------------------------------------------------------------------ statistics
    def stats(self) -> ManagerStats:
        got = self.impl.stats()
        _same("stats", "manager statistics", got, self.spec.stats)
        return got

    def root_stats(self, env_id: int | None = None) -> PoolStats:
        got, want = self._call(
            "root_stats",
            lambda: self.impl.root_stats(env_id),
            lambda: lambda: self._spec_root_stats(env_id),
        )
        _same("root_stats", f"root statistics of env {env_id}", got, want)
        return got

    def _spec_root_stats(self, env_id: int | None) -> PoolStats:
        if env_id is None:
            return self.spec.root_stats()
        self.spec.check_env(env_id)
        return self.spec.roots[env_id].stats

    def recurrent_stats(self) -> PoolStats:
        got = self.impl.recurrent_stats()
        _same("recurrent_stats", "recurrent statistics", got, self.spec.recurrent.stats)
        return got

    def reset_stats(self) -> None:
        op = "reset_stats"
        self._call(op, self.impl.reset_stats, lambda: self.spec.reset_stats)
        self._compare_stats(op)

    # ------------------------------------------------------------------ inspection
    def root_slot_keys(self, env_id: int) -> list[int | None]:
        got, want = self._call(
            "root_slot_keys",
            lambda: self.impl.root_slot_keys(env_id),
            lambda: lambda: self._spec_root_slot_keys(env_id),
        )
        _same("root_slot_keys", f"root pool {env_id} slot keys", got, want)
        return got

    def _spec_root_slot_keys(self, env_id: int) -> list[int | None]:
        self.spec.check_env(env_id)
        return list(self.spec.roots[env_id].slot_keys)

    def recurrent_slot_keys(self) -> list[int | None]:
        got = self.impl.recurrent_slot_keys()
        _same("recurrent_slot_keys", "recurrent slot keys", got, self.spec.recurrent.slot_keys)
        return got

    def root_sizes(self) -> list[int]:
        got = self.impl.root_sizes()
        _same("root_sizes", "root pool sizes", got, [len(p) for p in self.spec.roots])
        return got

    def recurrent_size(self) -> int:
        got = self.impl.recurrent_size()
        _same("recurrent_size", "recurrent pool size", got, len(self.spec.recurrent))
        return got

    def entry_at(self, tier: Tier, env_id: int, slot: int) -> Entries:
        """``CacheManager.entry_at``; an occupied slot is compared with the side table."""
        op = "entry_at"
        pool_env = env_id if tier is Tier.ROOT else 0

        def spec_builder() -> Callable[[], int | None]:
            if tier is Tier.ROOT:
                self.spec.check_env(env_id)
            pool = self._pool_of(Tier.ROOT if tier is Tier.ROOT else Tier.RECURRENT, pool_env)
            return lambda: pool.key_at(slot)

        entries, key = self._call(op, lambda: self.impl.entry_at(tier, env_id, slot), spec_builder)
        if key is not None:
            side_tier = Tier.ROOT if tier is Tier.ROOT else Tier.RECURRENT
            stored = self._side_row(op, (side_tier, pool_env, key))
            _same(op, f"length in slot {slot}", int(entries.lengths[0]), stored.length)
            _same_tensor(op, f"K/V in slot {slot}", entries.kv[:, :, 0], stored.kv)
        return entries

    def check(self) -> None:
        """Both sides' own contracts, then a full comparison of their states."""
        self.impl.check()
        self.spec.check()
        self._compare_state("check", full=True)
