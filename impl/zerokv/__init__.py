"""zerokv: a KV-cache manager for transformer world models searched by MCTS.

The GPU-optimised implementation of the semantics that ``zerokv_spec`` defines, with the
same names for the same concepts:

* ``CacheManager`` / ``CacheConfig`` (``zerokv.manager``) - root pools per environment,
  one recurrent pool, hierarchical lookup, batched stores, searches, statistics;
* ``SlotPool`` (``zerokv.pool``) - a pool (or a group of pools) of one policy: an index
  (``zerokv.index``: the device or the host backend) over slots of a ``Slab``;
* ``SearchCache`` (``zerokv.search``) - the node-addressed tier: roots per environment and
  one search's nodes at the addresses the search hands out;
* ``Rows`` (``zerokv.rows``) - the per-row arguments of a batched call, validated once;
* ``Batch``, ``Entries``, ``Correction`` and ``assemble`` / ``append`` / ``split`` /
  ``window`` / ``remove_registers`` / ``store_rows`` (``zerokv.entry``);
* keys and fingerprints on the device (``zerokv.keys``);
* runtime contracts (``zerokv.checks``), errors (``zerokv.errors``);
* ``zerokv.lightzero`` - a drop-in for LightZero's ``KVCacheManager``;
* ``zerokv.bench`` - the workload replay against the legacy design.

Library code logs through ``logging.getLogger("zerokv")`` and never prints; per-row debug
records need ``zerokv.trace`` switched on (a logging level alone never forms them).
"""

import logging

from zerokv.entry import (
    Batch,
    Correction,
    Entries,
    append,
    assemble,
    remove_registers,
    split,
    store_rows,
    window,
)
from zerokv.errors import *  # noqa: F403 - the error vocabulary is part of the API
from zerokv.errors import __all__ as _errors_all
from zerokv.index import Lookup, PutResult, TierLookup
from zerokv.keys import keys_and_fingerprints, legacy_keys, weak_keys, zkv64_keys
from zerokv.manager import CacheConfig, CacheManager
from zerokv.pool import SlotPool
from zerokv.search import NodeAddress, SearchBatch, SearchCache, SearchConfig
from zerokv.shadow import ShadowDivergence, ShadowManager
from zerokv_spec.manager import Scope, Tier
from zerokv_spec.pool import LookupStatus, Policy
from zerokv_spec.stats import ManagerStats, PoolStats

logging.getLogger("zerokv").addHandler(logging.NullHandler())

__version__ = "0.1.0"

__all__ = [
    "NodeAddress",
    "SearchBatch",
    "SearchCache",
    "SearchConfig",
    "Batch",
    "CacheConfig",
    "CacheManager",
    "Correction",
    "Entries",
    "Lookup",
    "LookupStatus",
    "ManagerStats",
    "Policy",
    "PoolStats",
    "PutResult",
    "Scope",
    "ShadowDivergence",
    "ShadowManager",
    "SlotPool",
    "Tier",
    "TierLookup",
    "append",
    "assemble",
    "keys_and_fingerprints",
    "zkv64_keys",
    "legacy_keys",
    "remove_registers",
    "split",
    "store_rows",
    "weak_keys",
    "window",
    *_errors_all,
]
