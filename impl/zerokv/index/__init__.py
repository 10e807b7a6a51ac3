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

import torch

from zerokv import checks
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
from zerokv.index.device import FIFOIndex, LRUIndex, PriorityIndex, SlotIndex
from zerokv.index.host import HostFIFOIndex, HostIndex, HostLRUIndex, HostPriorityIndex
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


def make_index(
    policy: Policy,
    region: Region,
    device: torch.device | str = "cpu",
    backend: str = "auto",
) -> IndexBackend:
    """A new empty index of ``policy`` over ``region``.

    ``backend``: ``"device"`` (state in tensors on ``device``), ``"host"`` (state in host
    memory, CPU caches only) or ``"auto"``: the host index where
    ``checks.host_reads_are_free(device)``, else the device index.
    """
    dev = torch.device(device)
    if backend == "auto":
        backend = "host" if checks.host_reads_are_free(dev) else "device"
    if backend not in BACKENDS:
        raise ConfigError(f"index backend must be 'auto', 'device' or 'host', got {backend!r}")
    if backend == "host" and dev.type != "cpu":
        raise ConfigError(f"the host index serves CPU tensors only, not {dev}")
    if not isinstance(policy, Policy):
        raise ConfigError(f"unknown policy {policy!r}")
    return BACKENDS[backend][policy](region, dev)
