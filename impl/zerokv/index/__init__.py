"""Slot indexes: the key -> slot directories of pools, with one backend chosen per cache.

* ``zerokv.index.base`` - the ``IndexBackend`` protocol, its result types (``Lookup``,
  ``PutResult``, ``TierLookup``), ``Region`` (where an index's pools lie in a slab);
* ``zerokv.index.device`` - the device-resident backend (``SlotIndex`` and one subclass
  per policy), what CUDA runs;
* ``zerokv.index.host`` - the host backend (``HostIndex`` and one subclass per policy),
  what a CPU cache runs.

``make_index`` is the one place where the backend is chosen.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from zerokv.errors import ConfigError
from zerokv.index.base import (
    STATS_FIELDS,
    Found,
    IndexBackend,
    Lookup,
    Placement,
    PoolState,
    PutResult,
    Region,
    TierLookup,
)
from zerokv.index.device import FIFOIndex, LRUIndex, PriorityIndex, SlotIndex, lookup_all
from zerokv.index.host import HostFIFOIndex, HostIndex, HostLRUIndex, HostPriorityIndex
from zerokv.kernels import EAGER, Kernels
from zerokv.rows import Rows
from zerokv_spec.pool import Policy

__all__ = [
    "BACKENDS",
    "STATS_FIELDS",
    "Found",
    "HostIndex",
    "IndexBackend",
    "Lookup",
    "Placement",
    "PoolState",
    "PutResult",
    "Region",
    "SlotIndex",
    "TierLookup",
    "fold_lookup",
    "make_index",
]

#: The index classes of each backend, per policy.
BACKENDS: dict[str, dict[Policy, type[SlotIndex] | type[HostIndex]]] = {
    "device": {Policy.FIFO: FIFOIndex, Policy.LRU: LRUIndex, Policy.PRIORITY: PriorityIndex},
    "host": {
        Policy.FIFO: HostFIFOIndex,
        Policy.LRU: HostLRUIndex,
        Policy.PRIORITY: HostPriorityIndex,
    },
}


#: The device index per policy (they take the kernels that run their tensor work).
DEVICE_INDEXES: dict[Policy, type[SlotIndex]] = {
    Policy.FIFO: FIFOIndex,
    Policy.LRU: LRUIndex,
    Policy.PRIORITY: PriorityIndex,
}


def make_index(
    policy: Policy,
    region: Region,
    device: torch.device | str = "cpu",
    backend: str = "auto",
    kernels: Kernels | None = None,
) -> IndexBackend:
    """A new empty index of ``policy`` over ``region``.

    ``backend``: ``"device"`` (state in tensors on ``device``), ``"host"`` (state in host
    memory, CPU caches only) or ``"auto"``: the host index where
    ``checks.host_reads_are_free(device)`` and the kernels are eager, else the device
    index. ``kernels`` run the device index's tensor work (``zerokv.kernels``; compiled
    kernels need the device index: the host index has no tensor work to compile).
    """
    dev = torch.device(device)
    kernels = EAGER if kernels is None else kernels
    if backend == "auto":
        backend = "host" if kernels.shortcuts(dev) else "device"
    if backend == "host" and kernels.compiled:
        raise ConfigError(
            "compiled kernels run on the device index: use index='device' or 'auto' "
            "with compile=True"
        )
    if backend not in BACKENDS:
        raise ConfigError(f"index backend must be 'auto', 'device' or 'host', got {backend!r}")
    if backend == "host" and dev.type != "cpu":
        raise ConfigError(f"the host index serves CPU tensors only, not {dev}")
    if not isinstance(policy, Policy):
        raise ConfigError(f"unknown policy {policy!r}")
    if backend == "host":
        return BACKENDS[backend][policy](region, dev)
    return DEVICE_INDEXES[policy](region, dev, kernels)


def fold_lookup(indexes: Sequence[IndexBackend], rows: Rows) -> Found:
    """A manager lookup of ``rows`` (the fold of the spec's ``lookup`` over its tiers):
    each tier's index in turn, the rows an earlier tier hit skipped. Device indexes run
    all tiers in one kernel (``zerokv.index.device.lookup_all``: one compiled graph, not
    one per tier)."""
    device = [index for index in indexes if isinstance(index, SlotIndex)]
    if len(device) == len(indexes):
        return lookup_all(device, rows)
    found: Found | None = None
    for index in indexes:
        found = index.lookup(rows, found)
    assert found is not None, "a lookup visits at least one tier"
    return found
