"""Both index backends against the spec, operation by operation.

``SlotIndex`` (device-resident, the CUDA code path, here run with the CPU shortcuts both
on and off) and ``HostIndex`` (the CPU backend) hold groups of pools; every batched
operation is compared with the fold of the spec's single operations on one spec pool per
group member: statuses, slots, evicted keys, insert flags, write targets, slot contents,
eviction order and statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from zerokv import checks
from zerokv.index import HostIndex, IndexBackend, Region, SlotIndex, make_index
from zerokv.rows import Rows
from zerokv_spec.pool import Policy, SlotPool, make_pool


@dataclass(frozen=True)
class Op:
    kind: str
    pools: tuple[int, ...]
    keys: tuple[int, ...]
    fps: tuple[int | None, ...]
    prios: tuple[float | None, ...]


def ops(num_pools: int) -> st.SearchStrategy[Op]:
    def build(kind: str, rows: list[tuple[int, int, int | None, float | None]]) -> Op:
        return Op(
            kind,
            tuple(r[0] for r in rows),
            tuple(r[1] for r in rows),
            tuple(r[2] for r in rows),
            tuple(r[3] for r in rows),
        )

    row = st.tuples(
        st.integers(0, num_pools - 1),
        st.integers(-2, 6),
        st.none() | st.integers(0, 2),
        st.none() | st.sampled_from([0.0, 1.0, 2.0]),
    )
    kinds = st.sampled_from(["put", "put", "get", "peek", "clear", "evict"])
    return st.builds(build, kinds, st.lists(row, min_size=0, max_size=9))


def _expected_write(
    pools: tuple[int, ...], slots: list[int], capacity: int, trash: int
) -> list[int]:
    last: dict[tuple[int, int], int] = {}
    for b, key in enumerate(zip(pools, slots)):
        last[key] = b
    return [
        p * capacity + s if last[(p, s)] == b else trash
        for b, (p, s) in enumerate(zip(pools, slots))
    ]


def _rows(op: Op, num_pools: int, priorities: bool) -> Rows:
    """The op's rows (pool ids play the part of env ids), with priorities if asked."""
    rows = Rows.checked(
        list(op.pools),
        torch.tensor(op.keys, dtype=torch.int64),
        torch.tensor([f if f is not None else 0 for f in op.fps], dtype=torch.int64),
        torch.tensor([f is not None for f in op.fps], dtype=torch.bool),
        env_num=num_pools,
        device=torch.device("cpu"),
    )
    if not priorities:
        return rows
    return rows.with_priorities(
        torch.tensor([p if p is not None else 0.0 for p in op.prios], dtype=torch.float64),
        torch.tensor([p is not None for p in op.prios], dtype=torch.bool),
    )


def _run(index: IndexBackend, spec: list[SlotPool[str]], op_list: list[Op]) -> None:
    region = index.region
    cap = region.capacity
    for op in op_list:
        rows = _rows(op, region.num_pools, index.policy is Policy.PRIORITY)
        if op.kind == "put":
            out = index.put(rows).result
            want = [
                spec[p].put(k, "v", f, pr if index.policy is Policy.PRIORITY else None)
                for p, k, f, pr in zip(op.pools, op.keys, op.fps, op.prios)
            ]
            assert out.slot.tolist() == [w.slot for w in want]
            assert out.inserted.tolist() == [w.inserted for w in want]
            assert out.evicted_mask.tolist() == [w.evicted is not None for w in want]
            assert [
                e if m else None for e, m in zip(out.evicted.tolist(), out.evicted_mask.tolist())
            ] == [w.evicted for w in want]
            assert out.write.tolist() == _expected_write(
                op.pools, [w.slot for w in want], cap, region.trash
            )
        elif op.kind in ("get", "peek"):
            count = op.kind == "get"
            got = index.get_many(rows, count=count)
            for b, (p, k, f) in enumerate(zip(op.pools, op.keys, op.fps)):
                if count:
                    r = spec[p].get(k, f)
                    assert int(got.status[b]) == int(r.status)
                    assert int(got.slot[b]) == (r.slot if r.slot is not None else -1)
                else:
                    hit = spec[p].peek(k, f) is not None
                    assert (int(got.status[b]) == 1) == hit
        elif op.kind == "clear":
            target = op.pools[0] if op.pools else None
            index.clear(target)
            for p, pool in enumerate(spec):
                if target is None or p == target:
                    pool.clear()
        else:
            for p, k in zip(op.pools, op.keys):
                if k in spec[p]:
                    spec[p].evict(k)
                    index.evict(p, k)
        for p, pool in enumerate(spec):
            assert index.slot_keys(p) == pool.slot_keys
            assert index.eviction_order(p) == pool.eviction_order()
            assert index.stats_of(p) == pool.stats
        index.check()


@pytest.mark.parametrize("backend", ["device", "device-no-shortcuts", "host"])
@pytest.mark.parametrize("policy", list(Policy))
@given(data=st.data(), num_pools=st.integers(1, 3), capacity=st.integers(1, 4))
def test_index_matches_spec(
    backend: str, policy: Policy, data: st.DataObject, num_pools: int, capacity: int
) -> None:
    op_list = data.draw(st.lists(ops(num_pools), max_size=14))
    spec: list[SlotPool[str]] = [make_pool(policy, capacity) for _ in range(num_pools)]
    with checks.shortcuts(backend != "device-no-shortcuts"):
        region = Region(num_pools, capacity)
        index = make_index(policy, region, backend="host" if backend == "host" else "device")
        assert isinstance(index, HostIndex if backend == "host" else SlotIndex)
        with checks.enabled():
            _run(index, spec, op_list)


def test_auto_backend_follows_the_device() -> None:
    assert isinstance(make_index(Policy.FIFO, Region(1, 2), "cpu"), HostIndex)
    with checks.shortcuts(False):
        assert isinstance(make_index(Policy.FIFO, Region(1, 2), "cpu"), SlotIndex)


@pytest.mark.parametrize("shortcuts", [True, False])
@pytest.mark.parametrize(
    "keys", [(5, 5, 5, 7), (5, 7, 5, 5), (7, 5, 5, 5), (5, 5, 7, 7, 5)], ids=str
)
def test_fifo_closed_form_with_a_key_three_times(shortcuts: bool, keys: tuple[int, ...]) -> None:
    """A batch into a fresh FIFO pool takes the closed form (``fifo_plain``: the ring
    cannot wrap); a key repeated three times must take its first row's slot and keep its
    last row's write. Random op lists reach this case only now and then."""
    capacity = len(keys)
    op = Op("put", (0,) * len(keys), keys, (None,) * len(keys), (None,) * len(keys))
    with checks.shortcuts(shortcuts), checks.enabled():
        index = make_index(Policy.FIFO, Region(1, capacity), backend="device")
        assert isinstance(index, SlotIndex)
        _run(index, [make_pool(Policy.FIFO, capacity)], [op, op])
