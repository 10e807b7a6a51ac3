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
  every put the ``PoolState`` of every pool (``zerokv.testing.views``: slot keys,
  fingerprints, eviction order, size, statistics, priorities, FIFO pointer);
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
* **errors** - ``zerokv.testing.mirror``'s rule: when the implementation rejects a call,
  the spec must reject it with the same error type (errors about tensors - ``ShapeError``
  / ``DTypeError`` / ``DeviceError`` - and arguments the spec cannot represent are not
  compared), and no pool may have changed.

Two intentional differences are not reported: ``gather`` without a width is compared with
the spec's ``gather(width=cl)`` (the implementation's static width), and ``read`` has no
spec counterpart (it is compared with the side table).

This is a **debugging tool**. Every call reads its results back to the host (on CUDA: a
synchronisation per call), keeps a tensor copy per stored entry, compares every pool's
state after every store, and runs the pure-Python spec, whose pools re-check all their
invariants on every operation: several times slower than the plain manager (3-8x in
CPU measurements of LightZero-shaped workloads). Use it in tests and when hunting a bug,
never in training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import torch

from zerokv.entry import Batch, Correction, Entries, append
from zerokv.errors import BatchError, ConfigError, ContractViolation, ZeroKVError
from zerokv.index import PutResult, TierLookup
from zerokv.keys import KeyFn
from zerokv.manager import CacheConfig, CacheManager
from zerokv.slab import Slab
from zerokv.testing.mirror import TENSOR_ONLY, Outcome, attempt, disagreement
from zerokv.testing.views import spec_pool_state, state_differences
from zerokv_spec.entry import Batch as SpecBatch
from zerokv_spec.entry import Correction as SpecCorrection
from zerokv_spec.entry import Entry
from zerokv_spec.manager import CacheManager as SpecManager
from zerokv_spec.manager import Tier
from zerokv_spec.manager import TierLookup as SpecTierLookup
from zerokv_spec.pool import PutResult as SpecPutResult
from zerokv_spec.pool import SlotPool
from zerokv_spec.stats import ManagerStats, PoolStats

__all__ = ["ShadowDivergence", "ShadowManager", "ShadowTierLookup"]

R = TypeVar("R")
S = TypeVar("S")

EnvIds = Sequence[int] | torch.Tensor
SideKey = tuple[Tier, int, int]  # (tier, pool, key as that pool stores it)


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


class _Unrepresentable(Exception):
    """The arguments have no spec counterpart (the spec's answer is not compared)."""


@dataclass(frozen=True)
class _Stored:
    """A side-table row: the exact K/V ``[L, 2, H, cl, d]`` (slab layout) and its length."""

    version: int
    kv: torch.Tensor
    length: int


@dataclass(frozen=True)
class _SpecRows:
    """The per-row arguments as the spec takes them."""

    envs: list[int]
    keys: list[int]
    fps: list[int | None] | None
    prios: list[float | None] | None

    def fp(self, b: int) -> int | None:
        return None if self.fps is None else self.fps[b]


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
    """Bit-exact equality, except that +0.0 and -0.0 count as equal (NaNs compare equal
    only with the same bits). Stores zero their padding with a bit mask (exactly +0.0), but
    a value the model wrote may legitimately be -0.0 where the reference computes +0.0."""
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


def _host_values(values: torch.Tensor | None, present: torch.Tensor | None) -> list[object] | None:
    """A tensor's values as host values (None where ``present`` is False)."""
    if values is None:
        if present is not None:
            raise _Unrepresentable("a mask without values")
        return None
    if not isinstance(values, torch.Tensor) or values.dim() != 1:
        raise _Unrepresentable("not a [B] tensor")
    try:
        flags = [True] * values.shape[0] if present is None else present.tolist()
        return [v if f else None for v, f in zip(values.tolist(), flags)]
    except (RuntimeError, NotImplementedError, AttributeError):  # no data (meta), not a tensor
        raise _Unrepresentable("values that cannot be read") from None


def _spec_rows(
    env_ids: EnvIds,
    keys: torch.Tensor,
    fingerprints: tuple[torch.Tensor | None, torch.Tensor | None],
    priorities: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None),
) -> _SpecRows:
    """The spec's arguments for the same call, values and their host types kept as given
    (a float env id stays a float, so the spec refuses what the manager refuses)."""
    if isinstance(env_ids, torch.Tensor):
        if env_ids.dim() != 1:
            raise _Unrepresentable("env ids of another rank")
        envs = env_ids.tolist()
    elif isinstance(env_ids, Sequence) and not isinstance(env_ids, (str, bytes)):
        envs = list(env_ids)
    else:
        raise _Unrepresentable(f"env ids of type {type(env_ids).__name__}")
    key_list = _host_values(keys, None)
    if key_list is None:
        raise _Unrepresentable("no keys")
    fps = _host_values(*fingerprints)
    prios = _host_values(*priorities)
    return _SpecRows(envs, key_list, fps, prios)  # type: ignore[arg-type]


def _raising(err: ZeroKVError) -> Callable[[], NoReturn]:
    def call() -> NoReturn:
        raise err

    return call


def _spec_correction(correction: object) -> SpecCorrection:
    """The spec's correction for a store: zeros (token values are versions) with the
    implementation table's layer and position counts, and a NaN where it holds a
    non-finite value, so the spec refuses what the implementation refuses; anything that
    is not a ``Correction`` is passed on as it is."""
    if not isinstance(correction, Correction) or correction.table.dim() != 5:
        return correction  # type: ignore[return-value]  # the spec refuses it, as it should
    layers, positions = int(correction.table.shape[0]), int(correction.table.shape[3])
    finite = bool(torch.isfinite(correction.table).all())
    k = tuple(((0.0 if finite else math.nan),) + (0.0,) * (positions - 1) for _ in range(layers))
    v = tuple((0.0,) * positions for _ in range(layers))
    return SpecCorrection(k, v)


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
        self.side: dict[SideKey, _Stored] = {}
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
        """The implementation's keys (pure functions: compared by the key tests)."""
        return self.impl.keys_of(latents)

    # ------------------------------------------------------------------ machinery
    def _call(
        self,
        operation: str,
        impl_fn: Callable[[], R],
        spec_fn: Callable[[], Callable[[], S]],
    ) -> tuple[R, S]:
        """Run the implementation, then the spec (``spec_fn`` builds the spec's call and
        may find the arguments unrepresentable); mirror errors (module docstring)."""
        self.compared += 1
        impl = attempt(impl_fn)
        spec_call: Callable[[], S] | None
        try:
            spec_call = spec_fn()
        except _Unrepresentable:
            spec_call = None
        except ZeroKVError as err:  # the spec refused the arguments while taking them
            spec_call = _raising(err)
        if impl.error is not None:
            if spec_call is not None and not isinstance(impl.error, TENSOR_ONLY):
                try:
                    spec_outcome: Outcome[S] | None = attempt(spec_call)
                except MemoryError:  # what the implementation could not allocate either
                    spec_outcome = None
                words = None if spec_outcome is None else disagreement(spec_outcome, impl)
                if words is not None:
                    _diverge(operation, "outcome of a refused call", *words)
            self._compare_state(operation, full=True)
            raise impl.error
        if spec_call is None:
            _diverge(operation, "representable arguments", "succeeded", "not representable")
        spec: Outcome[S] = attempt(spec_call)
        if spec.error is not None:
            _diverge(
                operation, "spec refusal", "succeeded", f"{type(spec.error).__name__}: {spec.error}"
            )
        return impl.value, spec.value  # type: ignore[return-value]

    def _pool_of(self, tier: Tier, env: int) -> SlotPool[Entry]:
        return self.spec.roots[env] if tier is Tier.ROOT else self.spec.recurrent

    def _side_key(self, tier: Tier, env: int, key: int, fingerprint: int | None) -> SideKey:
        if tier is Tier.ROOT:
            return (Tier.ROOT, env, key)
        return (Tier.RECURRENT, 0, self.spec.recurrent_key(env, key, fingerprint)[0])

    def _side_row(self, operation: str, side_key: SideKey) -> _Stored:
        stored = self.side.get(side_key)
        if stored is None:
            _diverge(operation, f"side table has no row for {side_key}", None, "a stored entry")
        return stored

    def _check_spec_entry(self, operation: str, side_key: SideKey, entry: Entry | None) -> _Stored:
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
            _same(operation, f"root pool {env} statistics", self.impl.root_stats(env), pool.stats)
        got_rec = self.impl.recurrent_stats()
        _same(operation, "recurrent pool statistics", got_rec, self.spec.recurrent.stats)

    def _compare_state(self, operation: str, *, full: bool = False) -> None:
        """Every pool's ``PoolState`` (``full``: also the statistics and the search budget)."""
        pools = [(f"root pool {e}", self.impl.root, e, p) for e, p in enumerate(self.spec.roots)]
        pools.append(("recurrent pool", self.impl.recurrent, 0, self.spec.recurrent))
        for name, impl_pool, pool_id, spec_pool in pools:
            for field, want, got in state_differences(
                spec_pool_state(spec_pool), impl_pool.index.view(pool_id)
            ):
                _diverge(operation, f"{name} state, field {field}", got, want)
        if not full:
            return
        _same(
            operation,
            "search (budget, used)",
            (self.impl.search_budget, self.impl.search_used),
            (self.spec.search_budget, self.spec.search_used),
        )
        self._compare_stats(operation)

    def _expected_batch(
        self, rows: Sequence[_Stored | None], width: int
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
        env_ids: EnvIds,
        keys: torch.Tensor,
        fingerprints: torch.Tensor | None = None,
        has_fingerprint: torch.Tensor | None = None,
        tiers: str = "hierarchical",
    ) -> ShadowTierLookup:
        """``CacheManager.lookup_many``, compared row by row with the spec's."""
        op = f"lookup_many(tiers={tiers!r})"
        args: list[_SpecRows] = []

        def spec_fn() -> Callable[[], list[SpecTierLookup]]:
            args.append(_spec_rows(env_ids, keys, (fingerprints, has_fingerprint)))
            a = args[0]
            return lambda: self.spec.lookup_many(a.envs, a.keys, a.fps, tiers)

        found, spec_rows = self._call(
            op,
            lambda: self.impl.lookup_many(env_ids, keys, fingerprints, has_fingerprint, tiers),
            spec_fn,
        )
        a = args[0]
        tier_l, slot_l, coll_l, glob_l = (
            t.tolist() for t in (found.tier, found.slot, found.collided, found.global_slot)
        )
        expected: list[_Stored | None] = []
        for b, row in enumerate(spec_rows):
            got = (int(tier_l[b]), None if tier_l[b] == 0 else int(slot_l[b]), bool(coll_l[b]))
            want = (int(row.tier), row.slot, row.collided)
            _same(op, f"row {b} (tier, slot, collided)", got, want)
            _same(op, f"row {b} global slot", int(glob_l[b]), self._global_slot(row, a.envs[b]))
            if row.tier is Tier.MISS:
                expected.append(None)
            else:
                side_key = self._side_key(row.tier, a.envs[b], a.keys[b], a.fp(b))
                expected.append(self._check_spec_entry(op, side_key, row.entry))
        self._compare_stats(op)
        return ShadowTierLookup(
            found.tier,
            found.slot,
            found.collided,
            found.global_slot,
            found.owner,
            found.generation,
            tuple(spec_rows),
            tuple(expected),
        )

    def _global_slot(self, row: SpecTierLookup, env: int) -> int:
        if row.tier is Tier.ROOT and row.slot is not None:
            return env * self.impl.config.root_capacity + row.slot
        if row.tier is Tier.RECURRENT and row.slot is not None:
            return self.impl.recurrent_base + row.slot
        return self.impl.slab.zero

    def _shadow_lookup(self, operation: str, found: object) -> ShadowTierLookup:
        """``found`` if this shadow made it. Anything else is refused as the implementation
        refuses it (not a lookup, stale, another manager's); a lookup made directly on the
        wrapped manager, which the shadow cannot compare, gets ``BatchError``."""
        if isinstance(found, ShadowTierLookup):
            return found
        self.impl.read(found)  # type: ignore[arg-type]  # raises its typed error
        raise BatchError(
            f"{operation} of a ShadowManager needs a lookup made by the same ShadowManager, "
            f"got {type(found).__name__}"
        )

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
        want_kv, want_len = self._expected_batch(shadow.expected, spec_batch.width)
        _same(op, "batch lengths", [int(n) for n in batch.lengths.tolist()], want_len)
        _same(op, "spec batch lengths", want_len, list(spec_batch.lengths))
        _same_tensor(op, "batch K/V", batch.kv, want_kv)
        return batch

    def _fused(self, op: str, fused: Batch, found: TierLookup, new_kv: torch.Tensor) -> Batch:
        """A fused gather compared bit-exactly with ``gather`` (itself checked against the
        spec) followed by ``append`` of ``new_kv``."""
        want = append(self.gather(found), new_kv, self.impl.config.context_length)
        _same(op, "fused batch lengths", fused.lengths.tolist(), want.lengths.tolist())
        _same_tensor(op, "fused batch K/V", fused.kv, want.kv)
        return fused

    def gather_append(self, found: TierLookup, new_kv: torch.Tensor) -> Batch:
        """``CacheManager.gather_append``, compared with ``gather`` then ``append``."""
        return self._fused("gather_append", self.impl.gather_append(found, new_kv), found, new_kv)

    def gather_reserve(self, found: TierLookup, t: int) -> Batch:
        """``CacheManager.gather_reserve``, compared with ``gather`` then ``append`` of
        ``t`` zero tokens."""
        fused = self.impl.gather_reserve(found, t)
        shape = fused.kv.shape
        zeros = fused.kv.new_zeros((shape[0], 2, shape[2], shape[3], t, shape[5]))
        return self._fused("gather_reserve", fused, found, zeros)

    def read(self, found: TierLookup) -> Entries:
        """``CacheManager.read``; compared bit-exactly with the side table."""
        op = "read"
        shadow = self._shadow_lookup(op, found)
        entries = self.impl.read(found)
        want_kv, want_len = self._expected_batch(shadow.expected, self.impl.config.context_length)
        _same(op, "entry lengths", [int(n) for n in entries.lengths.tolist()], want_len)
        _same_tensor(op, "entries K/V", entries.kv, want_kv)
        return entries

    # ------------------------------------------------------------------ stores
    def _store(
        self,
        operation: str,
        impl_fn: Callable[[], PutResult],
        spec_fn: Callable[[_SpecRows, list[int]], Callable[[], list[SpecPutResult]]],
        args: Callable[[], _SpecRows],
        stored_rows: Callable[[], list[tuple[torch.Tensor, int]]],
    ) -> PutResult:
        """One store: the spec's results row by row, then the side table and the slab."""
        tier = Tier.ROOT if "root" in operation else Tier.RECURRENT
        spec_args: list[_SpecRows] = []

        def spec_call() -> Callable[[], list[SpecPutResult]]:
            spec_args.append(args())
            a = spec_args[0]
            versions = list(range(self._next_version, self._next_version + len(a.keys)))
            return spec_fn(a, versions)

        out, results = self._call(operation, impl_fn, spec_call)
        a = spec_args[0]
        versions = list(range(self._next_version, self._next_version + len(results)))
        self._next_version += len(results)
        slot_l, ev_l, evm_l, ins_l = (
            t.tolist() for t in (out.slot, out.evicted, out.evicted_mask, out.inserted)
        )
        data = stored_rows()
        written: dict[SideKey, int] = {}
        for b, res in enumerate(results):
            got = (int(slot_l[b]), int(ev_l[b]) if evm_l[b] else None, bool(ins_l[b]))
            want = (res.slot, res.evicted, res.inserted)
            _same(operation, f"row {b} (slot, evicted, inserted)", got, want)
            side_key = self._side_key(tier, a.envs[b], a.keys[b], a.fp(b))
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

    def _check_written(self, operation: str, written: dict[SideKey, int]) -> None:
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
        impl_fn: Callable[[], PutResult],
        args: Callable[[], _SpecRows],
        entries: Entries,
    ) -> PutResult:
        spec_store = (
            self.spec.store_root_many if "root" in operation else self.spec.store_recurrent_many
        )

        def lengths() -> list[int]:
            if not isinstance(entries, Entries):
                raise _Unrepresentable(f"entries of type {type(entries).__name__}")
            sizes = [int(n) for n in entries.lengths.tolist()]
            if any(n < 0 for n in sizes):
                raise _Unrepresentable("an entry of negative size")
            # Any size past the context is refused alike: no need to build 2**40 tokens.
            return [min(n, self.impl.config.context_length + 1) for n in sizes]

        def spec_fn(a: _SpecRows, versions: list[int]) -> Callable[[], list[SpecPutResult]]:
            rows = self._spec_entries(versions, lengths())
            return lambda: spec_store(a.envs, a.keys, rows, a.fps, a.prios)

        def stored_rows() -> list[tuple[torch.Tensor, int]]:
            return [(entries.kv[:, :, b], n) for b, n in enumerate(lengths())]

        return self._store(operation, impl_fn, spec_fn, args, stored_rows)

    def _store_batch(
        self,
        operation: str,
        impl_fn: Callable[[], PutResult],
        args: Callable[[], _SpecRows],
        batch: Batch,
        correction: Correction,
    ) -> PutResult:
        spec_store = (
            self.spec.store_root_batch if "root" in operation else self.spec.store_recurrent_batch
        )
        cfg = self.impl.config

        def spec_fn(a: _SpecRows, versions: list[int]) -> Callable[[], list[SpecPutResult]]:
            if not isinstance(batch, Batch):
                raise _Unrepresentable(f"a batch of type {type(batch).__name__}")
            lengths = [int(n) for n in batch.lengths.tolist()]
            width, layers = batch.width, batch.num_layers
            # Token values are versions; a length outside [0, W] keeps its value (the spec's
            # Batch refuses it) while the row holds what fits.
            rows = tuple(
                (0.0,) * (width - m) + (float(v),) * m
                for v, m in ((v, min(max(n, 0), width)) for v, n in zip(versions, lengths))
            )
            spec_batch = SpecBatch((rows,) * layers, (rows,) * layers, tuple(lengths), width)
            spec_correction = _spec_correction(correction)
            return lambda: spec_store(a.envs, a.keys, spec_batch, spec_correction, a.fps, a.prios)

        return self._store(
            operation,
            impl_fn,
            spec_fn,
            args,
            lambda: _reference_rows(batch, cfg.context_length, correction),
        )

    def store_root_batch(
        self,
        env_ids: EnvIds,
        keys: torch.Tensor,
        batch: Batch,
        correction: Correction,
        fingerprints: torch.Tensor | None = None,
        has_fingerprint: torch.Tensor | None = None,
        priorities: torch.Tensor | None = None,
        has_priority: torch.Tensor | None = None,
    ) -> PutResult:
        """``CacheManager.store_root_batch``, compared with the spec."""
        fp, prio = (fingerprints, has_fingerprint), (priorities, has_priority)
        return self._store_batch(
            "store_root_batch",
            lambda: self.impl.store_root_batch(env_ids, keys, batch, correction, *fp, *prio),
            lambda: _spec_rows(env_ids, keys, fp, prio),
            batch,
            correction,
        )

    def store_recurrent_batch(
        self,
        env_ids: EnvIds,
        keys: torch.Tensor,
        batch: Batch,
        correction: Correction,
        fingerprints: torch.Tensor | None = None,
        has_fingerprint: torch.Tensor | None = None,
        priorities: torch.Tensor | None = None,
        has_priority: torch.Tensor | None = None,
    ) -> PutResult:
        """``CacheManager.store_recurrent_batch``, compared with the spec."""
        fp, prio = (fingerprints, has_fingerprint), (priorities, has_priority)
        return self._store_batch(
            "store_recurrent_batch",
            lambda: self.impl.store_recurrent_batch(env_ids, keys, batch, correction, *fp, *prio),
            lambda: _spec_rows(env_ids, keys, fp, prio),
            batch,
            correction,
        )

    def store_root_many(
        self,
        env_ids: EnvIds,
        keys: torch.Tensor,
        entries: Entries,
        fingerprints: torch.Tensor | None = None,
        has_fingerprint: torch.Tensor | None = None,
        priorities: torch.Tensor | None = None,
        has_priority: torch.Tensor | None = None,
    ) -> PutResult:
        """``CacheManager.store_root_many``, compared with the spec."""
        fp, prio = (fingerprints, has_fingerprint), (priorities, has_priority)
        return self._store_many(
            "store_root_many",
            lambda: self.impl.store_root_many(env_ids, keys, entries, *fp, *prio),
            lambda: _spec_rows(env_ids, keys, fp, prio),
            entries,
        )

    def store_recurrent_many(
        self,
        env_ids: EnvIds,
        keys: torch.Tensor,
        entries: Entries,
        fingerprints: torch.Tensor | None = None,
        has_fingerprint: torch.Tensor | None = None,
        priorities: torch.Tensor | None = None,
        has_priority: torch.Tensor | None = None,
    ) -> PutResult:
        """``CacheManager.store_recurrent_many``, compared with the spec."""
        fp, prio = (fingerprints, has_fingerprint), (priorities, has_priority)
        return self._store_many(
            "store_recurrent_many",
            lambda: self.impl.store_recurrent_many(env_ids, keys, entries, *fp, *prio),
            lambda: _spec_rows(env_ids, keys, fp, prio),
            entries,
        )

    # ------------------------------------------------------------------ state changes
    def _change(self, op: str, impl_fn: Callable[[], None], spec_fn: Callable[[], None]) -> None:
        """An operation without a result: run both, then compare every pool and counter."""
        self._call(op, impl_fn, lambda: spec_fn)
        self._compare_state(op, full=True)

    def set_priority(self, tier: Tier, env_id: int, key: int, priority: float) -> None:
        self._change(
            "set_priority",
            lambda: self.impl.set_priority(tier, env_id, key, priority),
            lambda: self.spec.set_priority(tier, env_id, key, priority),
        )

    def begin_search(self, nodes: int) -> None:
        self._change(
            "begin_search",
            lambda: self.impl.begin_search(nodes),
            lambda: self.spec.begin_search(nodes),
        )

    def end_search(self) -> None:
        self._change("end_search", self.impl.end_search, self.spec.end_search)

    def _forget(self, keep: Callable[[SideKey], bool]) -> None:
        self.side = {k: v for k, v in self.side.items() if keep(k)}

    def clear_env(self, env_id: int) -> None:
        self._change(
            "clear_env", lambda: self.impl.clear_env(env_id), lambda: self.spec.clear_env(env_id)
        )
        self._forget(lambda k: not (k[0] is Tier.ROOT and k[1] == env_id))

    def clear_roots(self) -> None:
        self._change("clear_roots", self.impl.clear_roots, self.spec.clear_roots)
        self._forget(lambda k: k[0] is not Tier.ROOT)

    def clear_recurrent(self) -> None:
        self._change("clear_recurrent", self.impl.clear_recurrent, self.spec.clear_recurrent)
        self._forget(lambda k: k[0] is not Tier.RECURRENT)

    def clear_all(self) -> None:
        self._change("clear_all", self.impl.clear_all, self.spec.clear_all)
        self.side = {}

    # ------------------------------------------------------------------ statistics
    def stats(self) -> ManagerStats:
        got = self.impl.stats()
        _same("stats", "stats(): manager statistics", got, self.spec.stats)
        return got

    def root_stats(self, env_id: int | None = None) -> PoolStats:
        def spec_stats() -> PoolStats:
            if env_id is None:
                return self.spec.root_stats()
            self.spec.check_env(env_id)
            return self.spec.roots[env_id].stats

        got, want = self._call(
            "root_stats", lambda: self.impl.root_stats(env_id), lambda: spec_stats
        )
        _same("root_stats", f"root_stats(): statistics of env {env_id}", got, want)
        return got

    def recurrent_stats(self) -> PoolStats:
        got = self.impl.recurrent_stats()
        _same("recurrent_stats", "recurrent_stats(): statistics", got, self.spec.recurrent.stats)
        return got

    def reset_stats(self) -> None:
        self._call("reset_stats", self.impl.reset_stats, lambda: self.spec.reset_stats)
        self._compare_stats("reset_stats")

    # ------------------------------------------------------------------ inspection
    def root_slot_keys(self, env_id: int) -> list[int | None]:
        def spec_keys() -> list[int | None]:
            self.spec.check_env(env_id)
            return list(self.spec.roots[env_id].slot_keys)

        got, want = self._call(
            "root_slot_keys", lambda: self.impl.root_slot_keys(env_id), lambda: spec_keys
        )
        _same("root_slot_keys", f"root_slot_keys(): slot keys of env {env_id}", got, want)
        return got

    def recurrent_slot_keys(self) -> list[int | None]:
        got = self.impl.recurrent_slot_keys()
        want = self.spec.recurrent.slot_keys
        _same("recurrent_slot_keys", "recurrent_slot_keys(): slot keys", got, want)
        return got

    def root_sizes(self) -> list[int]:
        got = self.impl.root_sizes()
        _same("root_sizes", "root_sizes(): sizes", got, [len(p) for p in self.spec.roots])
        return got

    def recurrent_size(self) -> int:
        got = self.impl.recurrent_size()
        _same("recurrent_size", "recurrent_size(): size", got, len(self.spec.recurrent))
        return got

    def entry_at(self, tier: Tier, env_id: int, slot: int) -> Entries:
        """``CacheManager.entry_at``; an occupied slot is compared with the side table."""
        op = "entry_at"
        pool_env = env_id if tier is Tier.ROOT else 0

        def spec_fn() -> Callable[[], int | None]:
            if tier not in (Tier.ROOT, Tier.RECURRENT):
                raise _Unrepresentable(f"tier {tier!r}")  # the spec has no entry_at
            if tier is Tier.ROOT:
                self.spec.check_env(env_id)
            pool = self._pool_of(Tier.ROOT if tier is Tier.ROOT else Tier.RECURRENT, pool_env)
            return lambda: pool.key_at(slot)

        entries, key = self._call(op, lambda: self.impl.entry_at(tier, env_id, slot), spec_fn)
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
