"""The exception types of zerokv, shared by the reference model and the implementation.

This module owns the error vocabulary. Every public operation of ``zerokv_spec`` and of
``zerokv`` raises one of these types for bad input, and both packages raise the *same* type
for the same bad input (the differential tests compare the types). An operation that raises
one of them leaves every pool exactly as it was.

``ContractViolation`` is different: it signals a broken internal invariant, i.e. a bug in
zerokv itself, never a user error.
"""

from __future__ import annotations

__all__ = [
    "BatchError",
    "ConcurrentUseError",
    "ConfigError",
    "ContractViolation",
    "DTypeError",
    "DeviceError",
    "EntryError",
    "EnvIdError",
    "InputError",
    "KeyNotFoundError",
    "KeyRangeError",
    "NodeDepthError",
    "NodeMissingError",
    "NodeOccupiedError",
    "NodeRangeError",
    "SearchCapacityError",
    "ShapeError",
    "SlotRangeError",
    "StaleLookupError",
    "StaleSearchError",
    "UnsupportedAttributeError",
    "UnsupportedOperationError",
    "ZeroKVError",
]


class ZeroKVError(Exception):
    """Base class of every error zerokv raises on purpose."""


class InputError(ZeroKVError, ValueError):
    """A public operation received an argument it cannot accept."""


class ConfigError(InputError):
    """A pool or manager configuration is impossible (capacity < 1, context length < 4...)."""


class EnvIdError(InputError):
    """An environment id outside ``[0, env_num)``."""


class KeyRangeError(InputError):
    """A key or fingerprint that is not a signed 64-bit integer."""


class EntryError(InputError):
    """A malformed cache entry: wrong layer count, ragged layers, longer than the context."""


class BatchError(InputError):
    """Mismatched batch arguments: lengths differ, widths too small, token counts wrong."""


class ShapeError(BatchError):
    """A tensor of the wrong shape (implementations that take tensors only)."""


class DTypeError(BatchError, TypeError):
    """A tensor of the wrong dtype (implementations that take tensors only)."""


class DeviceError(BatchError):
    """A tensor on the wrong device (implementations that take tensors only)."""


class StaleLookupError(InputError):
    """A lookup used after the pools changed: a store or a clear since the lookup may have
    moved or replaced the entries it names, so it no longer describes the cache."""


class KeyNotFoundError(ZeroKVError, KeyError):
    """An operation that needs a stored key (evict, slot_of, set_priority) did not find it."""

    def __str__(self) -> str:
        # KeyError's str() wraps the message in quotes; keep the message readable.
        return str(self.args[0]) if self.args else "key not found"


class SlotRangeError(InputError, IndexError):
    """A slot number outside ``[0, capacity)``."""


class UnsupportedOperationError(ZeroKVError, TypeError):
    """The operation does not exist for this policy (a priority on a FIFO pool, say)."""


class UnsupportedAttributeError(UnsupportedOperationError, AttributeError):
    """An attribute a zerokv stand-in does not offer (a LightZero cache proxy while
    attached): also an ``AttributeError``, so ``hasattr`` and ``getattr(x, name, default)``
    answer instead of raising."""


class SearchCapacityError(ZeroKVError, RuntimeError):
    """A declared search needs more recurrent slots than the pool has, or exceeds its budget."""


class ConcurrentUseError(ZeroKVError, RuntimeError):
    """Two threads used one manager at the same time; a manager is not thread-safe (give
    each thread its own, or serialise the calls)."""


class NodeRangeError(SlotRangeError):
    """A node address outside the search's ``[0, num_simulations] x [0, rows)`` (a child at
    index 0, the root's), or a search of more rows than were preallocated."""


class NodeMissingError(InputError, KeyError):
    """A parent address not written in the current search, or a search row whose
    environment has no root entry."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "node not written"


class NodeOccupiedError(InputError):
    """A child address already written in the current search (or twice by one batch)."""


class NodeDepthError(InputError):
    """A search reported a leaf depth that is not its parent's depth plus one."""


class StaleSearchError(StaleLookupError):
    """A search number used after its search ended (a new search, ``end_search``, or a
    change of the root entries it was started on)."""


class ContractViolation(AssertionError):
    """An internal invariant or postcondition failed: a bug in zerokv, not in the caller."""
