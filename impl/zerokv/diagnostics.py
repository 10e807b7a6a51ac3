"""Hit-rate diagnostics: notice a cache tier that keeps missing while it is being filled.

A cache whose lookups never hit while entries keep being stored is almost always a bug in
the caller, not in the cache: the key computed at lookup time never equals the key an
entry was stored under. It stays silent - every lookup just recomputes what the cache
should have supplied - so it is worth one loud warning.

``HitRateMonitor`` takes *host-side counts* only: for each tier, cumulative numbers of
lookups, hits and stores, as plain ints. It never touches a tensor, so a manager can feed
it the counters it already keeps on the host (no device read, no synchronisation), as
often as it likes: each call is a few integer comparisons.

Rule: the counts are cut into windows of at least ``window`` lookups (a window closes at
the first ``update`` that sees ``window`` lookups since it opened). A window that closes
with **zero hits** while **at least one store** happened in it logs **one warning** for that
tier, naming the tier, the numbers and the likely causes; a tier warns at most once until
``reset``. Counters that go backwards (statistics were reset) open a new window.

Seen for real: LightZero's UniZero policy keeps vector observations in an ``int64`` buffer,
so a float observation is truncated before its embedding is recomputed for the root lookup
of the next step, and every root lookup misses although a root is stored every step.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from zerokv.errors import ConfigError

__all__ = ["DEFAULT_CAUSES", "DEFAULT_WINDOW", "HitRateMonitor", "TierCounts"]

#: Lookups per window by default.
DEFAULT_WINDOW = 256

#: What usually makes a tier miss while it is being filled (any tier).
DEFAULT_CAUSES = (
    "the key used for lookups is computed from other bytes than the key used for stores "
    "(a different tensor, dtype, layout or device; an input buffer of another dtype that "
    "truncates values); the tier is cleared between the stores and the lookups that "
    "should find them; the tier is too small, so entries are evicted before they are "
    "looked up"
)

_log = logging.getLogger("zerokv.diagnostics")


@dataclass(frozen=True)
class TierCounts:
    """Cumulative host counts of one tier."""

    lookups: int
    hits: int
    stores: int


class HitRateMonitor:
    """Warn once per tier when a window of lookups has no hit while stores happened."""

    def __init__(
        self,
        window: int = DEFAULT_WINDOW,
        *,
        causes: Mapping[str, str] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ConfigError(f"window must be an int >= 1, got {window!r}")
        self.window = window
        self.causes = dict(causes or {})
        self.logger = logger if logger is not None else _log
        self._opened: dict[str, TierCounts] = {}
        #: Tiers that have warned (until ``reset``).
        self.warned: set[str] = set()

    def update(self, tier: str, lookups: int, hits: int, stores: int) -> bool:
        """Feed ``tier``'s cumulative counts; True when this call logged the warning.
        ``ConfigError`` for a tier that is not a str or a count that is not an int >= 0
        (nothing changes then)."""
        if not isinstance(tier, str):
            raise ConfigError(f"tier must be a str, got {tier!r}")
        for name, value in (("lookups", lookups), ("hits", hits), ("stores", stores)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an int >= 0, got {value!r}")
        now = TierCounts(lookups, hits, stores)
        opened = self._opened.get(tier)
        went_back = opened is not None and (
            lookups < opened.lookups or hits < opened.hits or stores < opened.stores
        )
        if opened is None or went_back:
            self._opened[tier] = now  # first sight, or the counters were reset
            return False
        looked = lookups - opened.lookups
        if looked < self.window:
            return False
        self._opened[tier] = now
        hit = hits - opened.hits
        stored = stores - opened.stores
        if hit > 0 or stored <= 0 or tier in self.warned:
            return False
        self.warned.add(tier)
        self.logger.warning(
            "zerokv: the %s tier had 0 hits in its last %d lookups while %d entries were "
            "stored in it: every lookup misses. Likely causes: %s.",
            tier,
            looked,
            stored,
            self.causes.get(tier, DEFAULT_CAUSES),
        )
        return True

    def reset(self, tier: str | None = None) -> None:
        """Forget the open windows and the warnings (of one tier, or of all)."""
        if tier is None:
            self._opened.clear()
            self.warned.clear()
        else:
            self._opened.pop(tier, None)
            self.warned.discard(tier)
