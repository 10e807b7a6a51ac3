"""The exception types of zerokv: the reference model's, re-exported unchanged.

The implementation raises exactly the types ``zerokv_spec.errors`` defines, so the
differential tests can require the same type for the same bad input.
"""

from zerokv_spec.errors import (
    BatchError,
    ConcurrentUseError,
    ConfigError,
    ContractViolation,
    DeviceError,
    DTypeError,
    EntryError,
    EnvIdError,
    InputError,
    KeyNotFoundError,
    KeyRangeError,
    NodeDepthError,
    NodeMissingError,
    NodeOccupiedError,
    NodeRangeError,
    SearchCapacityError,
    ShapeError,
    SlotRangeError,
    StaleLookupError,
    StaleSearchError,
    UnsupportedAttributeError,
    UnsupportedOperationError,
    ZeroKVError,
)

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
