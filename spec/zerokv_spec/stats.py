"""Statistics: what each pool and the manager count, and the identities that always hold.

Per pool (``PoolStats``): ``queries`` (calls of ``get``), ``hits``, ``misses``,
``collisions`` (misses where the key was stored but the fingerprint did not verify),
``inserts`` (puts of a new key), ``updates`` (puts of a stored key), ``evictions`` (keys
the policy removed to make room) and ``removals`` (explicit ``evict``). ``clear`` keeps the
statistics; ``reset`` zeroes them. ``peek`` counts nothing.

Identities: ``hits + misses == queries`` and ``collisions <= misses``.

Manager (``ManagerStats``): one lookup through the manager is one query whatever tiers it
visits, so ``hits + misses == queries`` and ``hits == root_hits + recurrent_hits``. A tier's
own ``PoolStats`` count only the queries that reached that tier (the recurrent pool sees a
hierarchical lookup only after the root pool missed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from zerokv_spec.errors import ContractViolation

__all__ = ["ManagerStats", "PoolStats"]


def _counters(stats: PoolStats | ManagerStats) -> list[int]:
    """Every counter of ``stats`` (cheaper than ``asdict``, which deep-copies)."""
    return list(vars(stats).values())


@dataclass
class PoolStats:
    """Counters of one pool (see the module docstring)."""

    queries: int = 0
    hits: int = 0
    misses: int = 0
    collisions: int = 0
    inserts: int = 0
    updates: int = 0
    evictions: int = 0
    removals: int = 0

    def check(self) -> None:
        """Raise ``ContractViolation`` unless the identities hold."""
        if min(_counters(self)) < 0:
            raise ContractViolation(f"negative counter in {self}")
        if self.hits + self.misses != self.queries:
            raise ContractViolation(f"hits + misses != queries in {self}")
        if self.collisions > self.misses:
            raise ContractViolation(f"collisions > misses in {self}")

    def reset(self) -> None:
        """Zero every counter."""
        for name in asdict(self):
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def __add__(self, other: PoolStats) -> PoolStats:
        a, b = asdict(self), asdict(other)
        return PoolStats(**{k: a[k] + b[k] for k in a})

    @property
    def hit_rate(self) -> float:
        """``hits / queries`` (0.0 before the first query)."""
        return self.hits / self.queries if self.queries else 0.0


@dataclass
class ManagerStats:
    """Counters of the manager's lookups (one per lookup, whatever tiers it visited)."""

    queries: int = 0
    hits: int = 0
    misses: int = 0
    root_hits: int = 0
    recurrent_hits: int = 0

    def check(self) -> None:
        """Raise ``ContractViolation`` unless the identities hold."""
        if min(_counters(self)) < 0:
            raise ContractViolation(f"negative counter in {self}")
        if self.hits + self.misses != self.queries:
            raise ContractViolation(f"hits + misses != queries in {self}")
        if self.hits != self.root_hits + self.recurrent_hits:
            raise ContractViolation(f"hits != root_hits + recurrent_hits in {self}")

    def reset(self) -> None:
        """Zero every counter."""
        for name in asdict(self):
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @property
    def hit_rate(self) -> float:
        """``hits / queries`` (0.0 before the first query)."""
        return self.hits / self.queries if self.queries else 0.0
