"""zerokv_spec: the executable reference model of zerokv's cache semantics.

Pure Python (standard library only). Each module owns one concept:

* ``errors``  - the exception types shared with the implementation;
* ``validate`` - the shared argument check ``positive_int`` (an int >= 1);
* ``keys``    - keys, fingerprints and the exact hash functions (``zkv64``);
* ``stats``   - per-pool and manager statistics and their identities;
* ``pool``    - slot pools and the FIFO / LRU / PRIORITY eviction policies;
* ``entry``   - entries and batches: assemble, append, split, window, registers;
* ``manager`` - root and recurrent tiers, hierarchical lookup, searches, clearing;
* ``search``  - the node-addressed tier: roots per environment, a search's nodes by address;
* ``drivers`` - bounded CrossHair drivers over all of the above (a package, not imported
  here).

The implementation (``zerokv``) uses the same names for the same concepts.
"""

from zerokv_spec.entry import (
    Batch,
    Correction,
    Entry,
    append,
    assemble,
    remove_registers,
    split,
    store_rows,
    window,
)
from zerokv_spec.errors import *  # noqa: F403 - the error vocabulary is part of the API
from zerokv_spec.errors import __all__ as _errors_all
from zerokv_spec.keys import Latent, zkv64_fingerprint, zkv64_key
from zerokv_spec.manager import (
    CacheManager,
    ManagerConfig,
    Scope,
    Tier,
    TierLookup,
    legacy_recurrent_capacity,
    legacy_root_capacity,
)
from zerokv_spec.pool import (
    FIFOPool,
    Lookup,
    LookupStatus,
    LRUPool,
    Policy,
    PriorityPool,
    PutResult,
    SlotPool,
    make_pool,
)
from zerokv_spec.search import NodeAddress, SearchCache, SearchConfig, child_length
from zerokv_spec.stats import ManagerStats, PoolStats

__all__ = [
    "NodeAddress",
    "SearchCache",
    "SearchConfig",
    "child_length",
    "Batch",
    "CacheManager",
    "Correction",
    "Entry",
    "FIFOPool",
    "LRUPool",
    "Latent",
    "Lookup",
    "LookupStatus",
    "ManagerConfig",
    "ManagerStats",
    "Policy",
    "PoolStats",
    "PriorityPool",
    "PutResult",
    "Scope",
    "SlotPool",
    "Tier",
    "TierLookup",
    "append",
    "assemble",
    "legacy_recurrent_capacity",
    "legacy_root_capacity",
    "make_pool",
    "remove_registers",
    "split",
    "store_rows",
    "window",
    "zkv64_fingerprint",
    "zkv64_key",
    *_errors_all,
]
