"""Shared machinery of the differential tests (spec vs implementation).

Token encoding
--------------
A spec token is one integer-valued float ``t``. The implementation stores ``[H, d]`` per
token and position, so the tests write ``t + offset(l, kv, h, e)`` into channel
``(h, e)`` of layer ``l``'s key (``kv = 0``) or value (``kv = 1``) block, where every
channel has its own offset (a multiple of ``OFFSET_STEP``). Everything stays an integer
below ``2**24``, so float32 holds it exactly. Decoding subtracts the offsets and requires

* every channel of a real token to decode to the *same* spec token (a swapped layer, head,
  K/V block or row shows up as a channel disagreement or a wrong token),
* every padding column to be exactly ``0`` in every channel (the spec pads with ``0.0``).

Views
-----
``PoolView`` is everything observable about one pool: slot keys, fingerprints, eviction
order, size, statistics, stored values (decoded), priorities and the FIFO pointer. The
spec and the implementation each produce one (``spec_pool_view`` / ``impl_pool_view``)
and the machines require them to be equal after every step.

Errors
------
``run_both`` calls the spec and the implementation; if either raises a ``ZeroKVError`` the
other must raise exactly the same type (``ContractViolation`` is not a ``ZeroKVError``: it
always propagates and fails the test).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TypeVar

import torch
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine

import zerokv
from zerokv import checks
from zerokv.host_index import HostIndex
from zerokv.index import FIFOIndex, PriorityIndex, SlotIndex
from zerokv.slab import Slab
from zerokv_spec.entry import Batch, Correction, Entry
from zerokv_spec.errors import ZeroKVError
from zerokv_spec.keys import INT64_MAX, INT64_MIN
from zerokv_spec.manager import CacheManager as SpecManager
from zerokv_spec.pool import FIFOPool, Policy, PriorityPool, PutResult, SlotPool
from zerokv_spec.stats import PoolStats

__all__ = [
    "BACKENDS",
    "FINGERPRINTS",
    "KEYS",
    "OFFSET_STEP",
    "PRIORITIES",
    "DiffMachine",
    "PoolView",
    "Row",
    "Shape",
    "TokenSource",
    "assert_put_results",
    "assert_same_manager",
    "cache_config",
    "clear_both",
    "decode_batch",
    "decode_entries",
    "encode_batch",
    "encode_correction",
    "encode_entries",
    "encode_new_tokens",
    "entry_sizes",
    "fingerprint_tensors",
    "impl_pool_view",
    "priority_tensors",
    "run_both",
    "same_error",
    "shapes",
    "spec_pool_view",
]

S = TypeVar("S")
I = TypeVar("I")  # noqa: E741 - "I" for implementation, next to "S" for spec

Tokens = tuple[float, ...]
#: One entry or batch row as real tokens only: ``(k per layer, v per layer)``.
Row = tuple[tuple[Tokens, ...], tuple[Tokens, ...]]

OFFSET_STEP = 4096.0

#: Keys the machines draw from: few enough for hits, duplicates and evictions; 0 (the
#: implementation's empty-slot key) and both int64 extremes included on purpose.
KEYS: tuple[int, ...] = (0, 1, 2, 3, 4, -1, INT64_MIN, INT64_MAX)
#: Fingerprints: a small set, so that a random fingerprint often mismatches (collisions).
FINGERPRINTS: tuple[int, ...] = (0, 1, 2, INT64_MIN)
#: Priorities with ties on purpose.
PRIORITIES: tuple[float, ...] = (-1.0, 0.0, 0.0, 0.5, 1.0, 2.5)


# --------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class Shape:
    """The tensor shape of one cache: layers, heads, head size, context length."""

    num_layers: int
    num_heads: int
    head_dim: int
    context_length: int


def shapes(context_lengths: Sequence[int] = (4, 5, 6, 7, 8)) -> st.SearchStrategy[Shape]:
    return st.builds(
        Shape,
        num_layers=st.sampled_from([1, 2]),
        num_heads=st.sampled_from([1, 2]),
        head_dim=st.sampled_from([1, 2]),
        context_length=st.sampled_from(list(context_lengths)),
    )


def cache_config(shape: Shape, env_num: int, **options: object) -> zerokv.CacheConfig:
    """A ``CacheConfig`` of ``shape`` (the pool sizes, policy, scope, index in ``options``)."""
    return zerokv.CacheConfig(
        env_num=env_num,
        num_layers=shape.num_layers,
        num_heads=shape.num_heads,
        head_dim=shape.head_dim,
        context_length=shape.context_length,
        **options,  # type: ignore[arg-type]
    )


def entry_sizes(cl: int) -> st.SearchStrategy[int]:
    """Entry sizes biased toward the window rule's boundaries (``cl - 3 .. cl``)."""
    return st.one_of(st.sampled_from([cl - 3, cl - 1, cl, cl - 2]), st.integers(0, cl))


class TokenSource:
    """Fresh token identities: every token a machine creates is a new integer."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def tokens(self, n: int) -> Tokens:
        return tuple(float(next(self._counter)) for _ in range(n))

    def entry(self, num_layers: int, size: int) -> Entry:
        k = tuple(self.tokens(size) for _ in range(num_layers))
        v = tuple(self.tokens(size) for _ in range(num_layers))
        return Entry(k, v)

    def new_tokens(
        self, num_layers: int, rows: int, t: int
    ) -> tuple[tuple[tuple[Tokens, ...], ...], tuple[tuple[Tokens, ...], ...]]:
        """``append``'s new tokens: ``[layer][row]`` tuples of ``t`` tokens, K and V."""
        k = tuple(tuple(self.tokens(t) for _ in range(rows)) for _ in range(num_layers))
        v = tuple(tuple(self.tokens(t) for _ in range(rows)) for _ in range(num_layers))
        return k, v


# --------------------------------------------------------------------------- encoding


def offsets(shape: Shape) -> torch.Tensor:
    """``[L, 2, 1, H, 1, d]`` float64: the distinct offset of every channel."""
    layers, heads, dim = shape.num_layers, shape.num_heads, shape.head_dim
    channel = torch.arange(layers * 2 * heads * dim, dtype=torch.float64)
    return (OFFSET_STEP * (channel + 1)).view(layers, 2, 1, heads, 1, dim)


def _mask(lengths: Sequence[int], width: int) -> torch.Tensor:
    cols = torch.arange(width, dtype=torch.int64)
    starts = width - torch.tensor(list(lengths), dtype=torch.int64)
    return cols.unsqueeze(0) >= starts.unsqueeze(1)


def _encode_rows(rows: Sequence[Row], width: int, shape: Shape) -> torch.Tensor:
    """``[L, 2, B, H, width, d]`` float32: rows right-aligned, zero padding."""
    layers = shape.num_layers
    base = torch.zeros(layers, 2, len(rows), width, dtype=torch.float64)
    lengths = []
    for b, (k, v) in enumerate(rows):
        n = len(k[0])
        if n > width:
            raise AssertionError(f"test bug: a row of {n} tokens does not fit width {width}")
        lengths.append(n)
        for layer in range(layers):
            if n:
                base[layer, 0, b, width - n :] = torch.tensor(k[layer], dtype=torch.float64)
                base[layer, 1, b, width - n :] = torch.tensor(v[layer], dtype=torch.float64)
    mask = _mask(lengths, width).view(1, 1, len(rows), 1, width, 1)
    values = base.view(layers, 2, len(rows), 1, width, 1) + offsets(shape)
    encoded = torch.where(mask, values, torch.zeros((), dtype=torch.float64))
    single = encoded.to(torch.float32)
    if not torch.equal(single.to(torch.float64), encoded):
        raise AssertionError("test bug: token values are not exact in float32")
    return single


def _entry_row(entry: Entry) -> Row:
    return entry.k, entry.v


def encode_entries(entries: Sequence[Entry], shape: Shape) -> zerokv.Entries:
    """Spec entries as implementation ``Entries`` (slab layout, ``cl`` columns)."""
    rows = [_entry_row(e) for e in entries]
    kv = _encode_rows(rows, shape.context_length, shape)
    lengths = torch.tensor([e.size for e in entries], dtype=torch.int64)
    return zerokv.Entries.checked(kv, lengths)


def encode_batch(batch: Batch, shape: Shape) -> zerokv.Batch:
    """A spec batch as an implementation ``Batch`` of the same width."""
    rows: list[Row] = []
    for b, n in enumerate(batch.lengths):
        start = batch.width - n
        for layer in range(batch.num_layers):
            for kv in (batch.k, batch.v):
                if any(x != 0.0 for x in kv[layer][b][:start]):
                    raise AssertionError("test bug: a spec batch with non-zero padding")
        k = tuple(batch.k[layer][b][start:] for layer in range(batch.num_layers))
        v = tuple(batch.v[layer][b][start:] for layer in range(batch.num_layers))
        rows.append((k, v))
    kv_t = _encode_rows(rows, batch.width, shape)
    return zerokv.Batch.checked(kv_t, torch.tensor(list(batch.lengths), dtype=torch.int64))


def encode_new_tokens(
    new_k: Sequence[Sequence[Tokens]], new_v: Sequence[Sequence[Tokens]], shape: Shape
) -> torch.Tensor:
    """``append``'s new tokens as ``[L, 2, B, H, t, d]``."""
    rows_n = len(new_k[0]) if new_k else 0
    t = len(new_k[0][0]) if rows_n else 0
    rows: list[Row] = [
        (
            tuple(tuple(new_k[layer][b]) for layer in range(len(new_k))),
            tuple(tuple(new_v[layer][b]) for layer in range(len(new_v))),
        )
        for b in range(rows_n)
    ]
    return _encode_rows(rows, t, shape)


def encode_correction(correction: Correction, shape: Shape) -> zerokv.Correction:
    """A spec correction as the implementation's ``[L, 2, H, cl - 3, d]`` table."""
    table = torch.tensor(
        [
            [list(correction.k[layer]), list(correction.v[layer])]
            for layer in range(shape.num_layers)
        ],
        dtype=torch.float32,
    )
    cl3 = shape.context_length - 3
    table = table.view(shape.num_layers, 2, 1, cl3, 1).expand(
        shape.num_layers, 2, shape.num_heads, cl3, shape.head_dim
    )
    return zerokv.Correction(table.contiguous())


def _decode(kv: torch.Tensor, lengths: Sequence[int], shape: Shape) -> list[Row]:
    """The real tokens of every row; asserts channel agreement and zero padding."""
    want = (shape.num_layers, 2, len(lengths), shape.num_heads, shape.head_dim)
    got = (kv.shape[0], kv.shape[1], kv.shape[2], kv.shape[3], kv.shape[5])
    assert kv.dim() == 6 and got == want, f"tensor of shape {tuple(kv.shape)}, wanted {want}"
    width = int(kv.shape[4])
    rows = len(lengths)
    assert all(0 <= n <= width for n in lengths), f"lengths {list(lengths)} vs width {width}"
    real = _mask(lengths, width).view(1, 1, rows, 1, width, 1).expand(kv.shape)
    raw = kv.to(torch.float64)
    values = raw - offsets(shape)
    first = values[:, :, :, :1, :, :1]
    disagree = (values != first) & real
    assert not bool(disagree.any()), (
        f"channels of a real token disagree (wrong head/layer/K-V/row routing): "
        f"{values[disagree][:8].tolist()}"
    )
    bad_padding = (raw != 0) & ~real
    assert not bool(bad_padding.any()), f"padding is not zero: {raw[bad_padding][:8].tolist()}"
    tokens = first[:, :, :, 0, :, 0].tolist()  # [L][2][B][W]
    out: list[Row] = []
    for b, n in enumerate(lengths):
        k = tuple(tuple(tokens[layer][0][b][width - n :]) for layer in range(shape.num_layers))
        v = tuple(tuple(tokens[layer][1][b][width - n :]) for layer in range(shape.num_layers))
        out.append((k, v))
    return out


def decode_entries(entries: zerokv.Entries, shape: Shape) -> tuple[Entry, ...]:
    """Implementation ``Entries`` as spec entries (checks the slab layout)."""
    assert entries.kv.shape[4] == shape.context_length, "entries are not cl columns wide"
    assert entries.lengths.dtype == torch.int64
    rows = _decode(entries.kv, entries.lengths.tolist(), shape)
    return tuple(Entry(k, v) for k, v in rows)


def decode_batch(batch: zerokv.Batch, shape: Shape) -> Batch:
    """An implementation ``Batch`` as a spec batch (and its mask checked against it)."""
    lengths = [int(n) for n in batch.lengths.tolist()]
    width = batch.width
    rows = _decode(batch.kv, lengths, shape)

    def padded(tokens: Tokens) -> Tokens:
        return (0.0,) * (width - len(tokens)) + tokens

    k = tuple(tuple(padded(r[0][layer]) for r in rows) for layer in range(shape.num_layers))
    v = tuple(tuple(padded(r[1][layer]) for r in rows) for layer in range(shape.num_layers))
    decoded = Batch(k, v, tuple(lengths), width)
    mask = tuple(tuple(bool(x) for x in row) for row in batch.mask().tolist())
    assert mask == decoded.mask(), f"mask {mask} does not match lengths {lengths}"
    return decoded


# --------------------------------------------------------------------------- arguments


def fingerprint_tensors(
    fps: Sequence[int | None], garbage: Sequence[int], implicit: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The implementation's ``(fingerprints, has_fingerprint)`` for spec fingerprints.

    Absent rows get ``garbage`` values (drawn from the fingerprint set, so an
    implementation that ignored the mask would verify against them). With ``implicit``
    and every row present, ``has_fingerprint`` is left out (``None``: all present).
    """
    if all(f is None for f in fps) and implicit:
        return None, None
    values = [g if f is None else f for f, g in zip(fps, garbage)]
    fp_t = torch.tensor(values, dtype=torch.int64).view(len(fps))
    if implicit and all(f is not None for f in fps):
        return fp_t, None
    return fp_t, torch.tensor([f is not None for f in fps], dtype=torch.bool).view(len(fps))


def priority_tensors(
    prios: Sequence[float | None], garbage: float, implicit: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The implementation's ``(priorities, has_priority)`` for spec priorities."""
    if all(p is None for p in prios) and implicit:
        return None, None
    values = [garbage if p is None else p for p in prios]
    p_t = torch.tensor(values, dtype=torch.float64).view(len(prios))
    if implicit and all(p is not None for p in prios):
        return p_t, None
    return p_t, torch.tensor([p is not None for p in prios], dtype=torch.bool).view(len(prios))


def keys_tensor(keys: Sequence[int]) -> torch.Tensor:
    return torch.tensor(list(keys), dtype=torch.int64).view(len(keys))


# --------------------------------------------------------------------------- results


def same_error(spec_exc: BaseException | None, impl_exc: BaseException | None) -> None:
    """Both raised exactly the same ``zerokv_spec.errors`` type, or neither raised."""
    assert type(spec_exc) is type(impl_exc), (
        f"spec raised {spec_exc!r} but the implementation raised {impl_exc!r}"
    )


def run_both(spec_fn: Callable[[], S], impl_fn: Callable[[], I]) -> tuple[S, I] | None:
    """Call both sides; ``None`` when both raised the same ``ZeroKVError`` type."""
    spec_exc: ZeroKVError | None = None
    impl_exc: ZeroKVError | None = None
    spec_out: S | None = None
    impl_out: I | None = None
    try:
        spec_out = spec_fn()
    except ZeroKVError as e:
        spec_exc = e
    try:
        impl_out = impl_fn()
    except ZeroKVError as e:
        impl_exc = e
    same_error(spec_exc, impl_exc)
    if spec_exc is not None:
        return None
    return spec_out, impl_out  # type: ignore[return-value]


def assert_put_results(spec: Sequence[PutResult], out: zerokv.PutOutcome) -> None:
    """Slot, evicted key and inserted flag of every row of a put."""
    slots = out.slot.tolist()
    evicted = out.evicted.tolist()
    mask = out.evicted_mask.tolist()
    inserted = out.inserted.tolist()
    assert len(slots) == len(spec), f"{len(slots)} put results for {len(spec)} rows"
    got = [
        PutResult(int(s), int(e) if m else None, bool(n))
        for s, e, m, n in zip(slots, evicted, mask, inserted)
    ]
    assert got == list(spec), f"put results differ:\n spec {list(spec)}\n impl {got}"
    for r in got:
        event(
            "put: "
            + ("evicting insert" if r.evicted is not None else "insert" if r.inserted else "update")
        )


# --------------------------------------------------------------------------- views


@dataclass(frozen=True)
class PoolView:
    """Everything observable about one pool (see the module docstring)."""

    slot_keys: tuple[int | None, ...]
    fingerprints: tuple[int | None, ...]
    eviction_order: tuple[int, ...]
    size: int
    stats: PoolStats
    values: tuple[Entry | None, ...]
    priorities: tuple[float | None, ...]
    pointer: int | None


def spec_pool_view(pool: SlotPool[Entry]) -> PoolView:
    priorities: tuple[float | None, ...] = ()
    if isinstance(pool, PriorityPool):
        priorities = tuple(
            p if k is not None else None for p, k in zip(pool.priority, pool.slot_keys)
        )
    return PoolView(
        slot_keys=tuple(pool.slot_keys),
        fingerprints=tuple(pool.slot_fingerprints),
        eviction_order=tuple(pool.eviction_order()),
        size=len(pool),
        stats=PoolStats(**pool.stats.as_dict()),
        values=tuple(pool.slot_values),
        priorities=priorities,
        pointer=pool.next if isinstance(pool, FIFOPool) else None,
    )


def _index_internals(
    index: SlotIndex | HostIndex, pool_id: int, slot_keys: tuple[int | None, ...]
) -> tuple[tuple[int | None, ...], tuple[float | None, ...], int | None]:
    """Fingerprints, priorities (PRIORITY only) and FIFO pointer of one pool of an index."""
    cap = index.capacity
    prios: list[float] | None = None
    pointer: int | None = None
    if isinstance(index, HostIndex):
        fps: list[int | None] = list(index.slot_fps[pool_id])
        if index.policy is Policy.PRIORITY:
            prios = list(index.priority[pool_id])
        if index.policy is Policy.FIFO:
            pointer = index.next[pool_id]
    else:
        rng = slice(pool_id * cap, (pool_id + 1) * cap)
        has = index.has_fp[rng].tolist()
        fps = [int(f) if h else None for f, h in zip(index.fps[rng].tolist(), has)]
        if isinstance(index, PriorityIndex):
            prios = [float(p) for p in index.priority[rng].tolist()]
        if isinstance(index, FIFOIndex):
            pointer = int(index.next[pool_id].item())
    fingerprints = tuple(f if k is not None else None for f, k in zip(fps, slot_keys))
    priorities: tuple[float | None, ...] = ()
    if prios is not None:
        priorities = tuple(p if k is not None else None for p, k in zip(prios, slot_keys))
    return fingerprints, priorities, pointer


def impl_pool_view(
    index: SlotIndex | HostIndex, pool_id: int, slab: Slab, base: int, shape: Shape
) -> PoolView:
    """The view of pool ``pool_id`` of ``index`` whose slot 0 is slab slot ``base``."""
    cap = index.capacity
    slot_keys = tuple(index.slot_keys(pool_id))
    fingerprints, priorities, pointer = _index_internals(index, pool_id, slot_keys)
    first = base + pool_id * cap
    slots = torch.arange(first, first + cap, dtype=torch.int64)
    stored = decode_entries(slab.read(slots), shape)
    values = tuple(e if k is not None else None for e, k in zip(stored, slot_keys))
    return PoolView(
        slot_keys=slot_keys,
        fingerprints=fingerprints,
        eviction_order=tuple(index.eviction_order(pool_id)),
        size=index.size(pool_id),
        stats=index.stats_of(pool_id),
        values=values,
        priorities=priorities,
        pointer=pointer,
    )


def assert_views(spec: PoolView, impl: PoolView, what: str) -> None:
    if spec == impl:
        return
    lines = [f"{what}: spec and implementation differ"]
    for name in PoolView.__dataclass_fields__:
        a, b = getattr(spec, name), getattr(impl, name)
        if a != b:
            lines.append(f"  {name}:\n    spec {a}\n    impl {b}")
    raise AssertionError("\n".join(lines))


# --------------------------------------------------------------------------- machines


def clear_both(spec: SpecManager, impl: zerokv.CacheManager, which: str, env: int = 0) -> None:
    """The same clear on both managers: ``"env"`` (environment ``env``'s root pool),
    ``"roots"``, ``"recurrent"`` or ``"all"``."""
    if which == "env":
        spec.clear_env(env)
        impl.clear_env(env)
    elif which == "roots":
        spec.clear_roots()
        impl.clear_roots()
    elif which == "recurrent":
        spec.clear_recurrent()
        impl.clear_recurrent()
    else:
        spec.clear_all()
        impl.clear_all()


def assert_same_manager(spec: SpecManager, impl: zerokv.CacheManager, shape: Shape) -> None:
    """Statistics, every pool's complete view and the search budget of two managers."""
    assert impl.stats() == spec.stats, f"manager stats: spec {spec.stats} impl {impl.stats()}"
    assert impl.root_stats() == spec.root_stats()
    assert impl.recurrent_stats() == spec.recurrent.stats
    for env, pool in enumerate(spec.roots):
        assert impl.root_stats(env) == pool.stats
        assert impl.root_slot_keys(env) == pool.slot_keys
        view = impl_pool_view(impl.root, env, impl.slab, 0, shape)
        assert_views(spec_pool_view(pool), view, f"root pool of env {env}")
    assert impl.recurrent_slot_keys() == spec.recurrent.slot_keys
    view = impl_pool_view(impl.recurrent, 0, impl.slab, impl.recurrent_base, shape)
    assert_views(spec_pool_view(spec.recurrent), view, "recurrent pool")
    assert (impl.search_budget, impl.search_used) == (spec.search_budget, spec.search_used)
    impl.check()


#: Index backends every machine runs: the device-resident ``SlotIndex`` with the CPU
#: shortcuts on, the same with them off (exactly the CUDA code path), and ``HostIndex``.
BACKENDS: tuple[str, ...] = ("device", "device-exact", "host")


class DiffMachine(RuleBasedStateMachine):
    """Base of every differential machine: runtime contracts on for its whole life."""

    def __init__(self) -> None:
        super().__init__()
        self._contracts: AbstractContextManager[None] = checks.enabled()
        self._contracts.__enter__()
        assert checks.ENABLED
        self._shortcuts = checks.CPU_SHORTCUTS
        self.ready = False
        self.source = TokenSource()

    def use_backend(self, backend: str) -> str:
        """The ``index=`` argument for ``backend`` (``BACKENDS``); sets the CPU shortcuts."""
        checks.CPU_SHORTCUTS = backend != "device-exact"
        return "host" if backend == "host" else "device"

    def teardown(self) -> None:
        checks.CPU_SHORTCUTS = self._shortcuts
        self._contracts.__exit__(None, None, None)
