"""Run one operation on the spec and on the implementation, and mirror their errors.

The rule both the differential tests and ``ShadowManager`` enforce: for the same call,
either both sides succeed, or both raise a ``ZeroKVError`` of exactly the same type. The
one exception are errors about tensors (``ShapeError``, ``DTypeError``, ``DeviceError``):
the spec has no tensors, so when the implementation raises one, the spec's answer is not
compared. ``ContractViolation`` is no ``ZeroKVError``: it always propagates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from zerokv.errors import DeviceError, DTypeError, ShapeError, ZeroKVError

__all__ = ["TENSOR_ONLY", "Outcome", "attempt", "disagreement", "run_both", "same_error"]

T = TypeVar("T")
S = TypeVar("S")
I = TypeVar("I")  # noqa: E741 - "I" for implementation, next to "S" for spec

#: Errors about tensors the spec cannot see (it has no tensors).
TENSOR_ONLY: tuple[type[ZeroKVError], ...] = (ShapeError, DTypeError, DeviceError)


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What one side did: its result, or the ``ZeroKVError`` it raised."""

    value: T | None
    error: ZeroKVError | None

    @property
    def failed(self) -> bool:
        return self.error is not None


def attempt(fn: Callable[[], T]) -> Outcome[T]:
    """Call ``fn``; a ``ZeroKVError`` becomes the outcome, anything else propagates."""
    try:
        return Outcome(fn(), None)
    except ZeroKVError as err:
        return Outcome(None, err)


def _name(outcome: Outcome[Any]) -> str:
    if outcome.error is None:
        return "succeeded"
    return f"{type(outcome.error).__name__}: {outcome.error}"


def disagreement(spec: Outcome[Any], impl: Outcome[Any]) -> tuple[str, str] | None:
    """None when the two outcomes agree (module docstring), else ``(impl, spec)`` in words."""
    if isinstance(impl.error, TENSOR_ONLY):
        return None
    if type(spec.error) is type(impl.error):
        return None
    return _name(impl), _name(spec)


def same_error(spec_exc: BaseException | None, impl_exc: BaseException | None) -> None:
    """Both raised exactly the same ``zerokv_spec.errors`` type, or neither raised."""
    assert type(spec_exc) is type(impl_exc), (
        f"spec raised {spec_exc!r} but the implementation raised {impl_exc!r}"
    )


def run_both(spec_fn: Callable[[], S], impl_fn: Callable[[], I]) -> tuple[S, I] | None:
    """Call both sides; ``None`` when both raised the same ``ZeroKVError`` type, the two
    results when both succeeded; ``AssertionError`` otherwise (strict: tensor errors too)."""
    spec = attempt(spec_fn)
    impl = attempt(impl_fn)
    same_error(spec.error, impl.error)
    if spec.failed:
        return None
    return spec.value, impl.value  # type: ignore[return-value]
