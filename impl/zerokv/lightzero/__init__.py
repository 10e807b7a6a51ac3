"""``zerokv.lightzero``: zerokv inside LightZero's UniZero.

The package's modules, each owning one thing:

* ``manager`` - ``KVCacheManager``, the drop-in for LightZero main's ``KVCacheManager``
  (its whole surface: constructor, keywords, pools, staging lists, counters, summary),
  and ``KVCachePool`` / ``CacheStats``, its pools as LightZero's code sees them;
* ``store`` - the single-entry storage behind it: FIFO ``Ring`` s over one preallocated
  ``RowStore``, and ``KVSnapshot``, the copy-on-write handle a lookup returns;
* ``layout`` - LightZero's ``KeysValues`` layout: ``LayoutKeysValues`` and friends, keys
  (``lightzero_key``, ``unsigned_key``), validation and object building;
* ``install`` - ``install()`` / ``uninstall()`` / ``installed()``: make LightZero's world
  model build zerokv's manager (``use_new_cache_manager=True``), reversibly.

* ``policy`` - ``attach_policy(policy)``: the way in for a LightZero user; the policy's
  collect and eval searches tell a node-addressed cache (``zerokv.search``) which node
  each leaf expands, so nothing is hashed or looked up;
* ``apply`` - ``apply()`` / ``revert()``: every UniZero policy built afterwards (a
  ``train_unizero`` run) on ``attach_policy``;
* ``verify`` - ``attach_policy(policy, verify=True)``: LightZero's own caching on a
  weight-sharing twin, every output compared in lockstep;
* ``attach`` - ``attach(world_model)`` / ``Attachment.detach()`` / ``attached()``: the
  batched integration; LightZero's world model (0.2.0 or main) with its cache glue replaced
  by ``zerokv.CacheManager``'s batched calls, one instance at a time, reversibly.

The hit-rate warning the manager logs comes from ``zerokv.diagnostics``.
"""

from zerokv.lightzero.apply import Applied, applied, apply, revert
from zerokv.lightzero.attach import (
    LIGHTZERO_020,
    LIGHTZERO_MAIN,
    Attachment,
    BatchView,
    LayerView,
    attach,
    attached,
    attachment_of,
)
from zerokv.lightzero.install import (
    LIGHTZERO_MODULE,
    install,
    installed,
    is_installed,
    uninstall,
)
from zerokv.lightzero.layout import (
    DEFAULT_MAX_CACHE_SIZE,
    LayoutCache,
    LayoutKeysValues,
    LayoutKVCache,
    check_object,
    lightzero_key,
    unsigned_key,
)
from zerokv.lightzero.manager import (
    DEFAULT_CLEAR_ALL_LOG_FREQ,
    DEFAULT_CLEAR_RECUR_LOG_FREQ,
    DEFAULT_NUM_SIMULATIONS,
    CacheStats,
    KVCacheManager,
    KVCachePool,
)
from zerokv.lightzero.policy import NodeAttachment, PolicyAttachment, attach_nodes, attach_policy
from zerokv.lightzero.store import KVSnapshot
from zerokv.lightzero.verify import LockstepDivergence, Verifier

__all__ = [
    "DEFAULT_CLEAR_ALL_LOG_FREQ",
    "DEFAULT_CLEAR_RECUR_LOG_FREQ",
    "DEFAULT_MAX_CACHE_SIZE",
    "DEFAULT_NUM_SIMULATIONS",
    "LIGHTZERO_020",
    "LIGHTZERO_MAIN",
    "LIGHTZERO_MODULE",
    "Applied",
    "Attachment",
    "BatchView",
    "CacheStats",
    "KVCacheManager",
    "KVCachePool",
    "KVSnapshot",
    "LayerView",
    "LayoutCache",
    "LayoutKVCache",
    "LayoutKeysValues",
    "LockstepDivergence",
    "NodeAttachment",
    "PolicyAttachment",
    "Verifier",
    "applied",
    "apply",
    "attach",
    "attach_nodes",
    "attach_policy",
    "attached",
    "attachment_of",
    "check_object",
    "install",
    "installed",
    "is_installed",
    "lightzero_key",
    "revert",
    "uninstall",
    "unsigned_key",
]
