"""Clauses: the machinery every ``*_failures`` helper shares.

A contract is a list of named clauses (``Clauses``); ``failed`` lists the names of those
that do not hold. Also here: the bad-input record ``ErrorCase`` and its clauses (pool and
manager drivers), and ``padding_is_zero`` (entry and manager drivers).
"""

from __future__ import annotations

from dataclasses import dataclass

from zerokv_spec.entry import Batch

Clauses = list[tuple[str, bool]]


def failed(clauses: Clauses) -> list[str]:
    """The names of the clauses that do not hold."""
    return [name for name, ok in clauses if not ok]


@dataclass(frozen=True)
class ErrorCase:
    """A call with a bad argument: the error it raised, the one documented, the states."""

    raised: str | None
    expected: str
    before: object
    after: object


def error_failures(c: ErrorCase) -> list[str]:
    return failed(
        [
            (f"bad input: raises the documented {c.expected}", c.raised == c.expected),
            ("bad input: a raising op leaves the state unchanged", c.before == c.after),
        ]
    )


def padding_is_zero(batch: Batch) -> bool:
    """Every column left of a row's real tokens is a zero token, in every layer."""
    return all(
        all(x == 0.0 for x in layer[b][: batch.width - n])
        for layers in (batch.k, batch.v)
        for layer in layers
        for b, n in enumerate(batch.lengths)
    )
