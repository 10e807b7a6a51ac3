"""zerokv's benchmark: a model-free replay of UniZero's KV-cache workload.

The package owns the benchmark only: `workload` (configs, the `CacheBackend` contract, the
seeded replay driver and its measurements), `legacy` (a re-creation of the legacy cache
design, the baseline and the replay oracle), `report` (tables, JSON, plots) and the CLI
(`python -m zerokv.bench`). zerokv's own backend adapter lives in `zerokv_backend`.
"""

from zerokv.bench.legacy import LegacyBackend, legacy_hash
from zerokv.bench.workload import (
    PRESETS,
    CacheBackend,
    ReplayMismatch,
    ReplayResult,
    StepOutput,
    WorkloadConfig,
    preset,
    replay,
)

__all__ = [
    "PRESETS",
    "CacheBackend",
    "LegacyBackend",
    "ReplayMismatch",
    "ReplayResult",
    "StepOutput",
    "WorkloadConfig",
    "legacy_hash",
    "preset",
    "replay",
]
