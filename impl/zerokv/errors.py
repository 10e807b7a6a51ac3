"""The exception types of zerokv: the reference model's, re-exported unchanged.

The implementation raises exactly the types ``zerokv_spec.errors`` defines, so the
differential tests can require the same type for the same bad input.
"""

from zerokv_spec.errors import (
    BatchError,
    ConfigError,
    ContractViolation,
    DeviceError,
    DTypeError,
    EntryError,
    EnvIdError,
    InputError,
    KeyNotFoundError,
    KeyRangeError,
    SearchCapacityError,
    ShapeError,
    SlotRangeError,
    UnsupportedOperationError,
    ZeroKVError,
)

__all__ = [
    "BatchError",
    "ConfigError",
    "ContractViolation",
    "DTypeError",
    "DeviceError",
    "EntryError",
    "EnvIdError",
    "InputError",
    "KeyNotFoundError",
    "KeyRangeError",
    "SearchCapacityError",
    "ShapeError",
    "SlotRangeError",
    "UnsupportedOperationError",
    "ZeroKVError",
]
