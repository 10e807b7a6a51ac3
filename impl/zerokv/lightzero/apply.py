"""``apply()``: zerokv in a LightZero training run, in one line before ``train_unizero``.

In the style of Liger-Kernel's ``apply_liger_kernel_to_*``: ``zerokv.lightzero.apply()``
patches LightZero's ``UniZeroPolicy`` class so that every policy built afterwards - by
``train_unizero``'s ``create_policy``, by a user's own script, with the user's own
``model=`` - runs its collect and eval searches on zerokv (``attach_policy``, the
node-addressed cache). ``Applied.revert()`` (or ``zerokv.lightzero.revert()``, or leaving a
``with apply():`` block) puts LightZero's class back and detaches every policy it attached.

What a training run does to the attached policy, and why each is safe:

* the target model (``copy.deepcopy`` of the model in ``_init_learn``) is made inside the
  policy's constructor, before the attachment: it is LightZero's own, with LightZero's
  caches (reanalysis runs on it; see below);
* ``state_dict`` save and load (checkpoints) move weights only; the cache holds no weight;
* weight updates then ``recompute_pos_emb_diff_and_clear_cache``: the policy recomputes
  the position table (the attachment rebuilds its window correction from the new table at
  the next store) and clears the caches through the proxies;
* evaluator episodes and ready-environment subsets are the policy's eval / collect calls;
* ``random_collect`` uses LightZero's random policy, another class with its own model.

Reanalysis: 0.2.0's replay buffer reanalyses on the target model through MCTS objects it
makes itself, in ``reanalyze_phase`` (where 0.2.0 recomputes every context from its
latent alone). It stays on LightZero's caches: the target model is not attached.

Refused with ``ConfigError`` at apply time, LightZero left unpatched: LightZero not
importable, a ``UniZeroPolicy`` without the constructor ``apply`` wraps, unknown options,
``apply`` while already applied.
"""

from __future__ import annotations

import functools
import importlib
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from zerokv.errors import ConfigError
from zerokv.lightzero.attach import positive_option
from zerokv.lightzero.policy import MCTS_ATTRIBUTES, PolicyAttachment, attach_policy

__all__ = ["POLICY_MODULE", "Applied", "applied", "apply", "current", "revert"]

#: Where LightZero defines the UniZero policy ``apply`` patches.
POLICY_MODULE = "lzero.policy.unizero"
#: ``apply``'s options (``attach_policy``'s).
APPLY_OPTIONS = frozenset({"device", "num_simulations", "verify"})

_LOCK = threading.Lock()
_ABSENT = object()
_current: Applied | None = None


class Applied:
    """LightZero's ``UniZeroPolicy`` patched by ``apply``; ``revert()`` undoes it."""

    def __init__(self, cls: type, options: dict[str, Any]) -> None:
        self.cls = cls
        self.options = options
        #: The class's own constructor (``_ABSENT``: it inherits DI-engine's).
        self._saved = cls.__dict__.get("__init__", _ABSENT)
        self._original: Callable[..., None] = cls.__init__  # type: ignore[misc]
        #: The attachments of the policies built while applied (weakly: a policy that is
        #: gone takes its attachment with it).
        self._attachments: weakref.WeakSet[PolicyAttachment] = weakref.WeakSet()
        self.active = False

    def _wrap(self) -> Callable[..., None]:
        original = self._original
        applied = self

        @functools.wraps(original)
        def __init__(policy: Any, *args: Any, **kwargs: Any) -> None:
            original(policy, *args, **kwargs)
            if applied.active and any(
                getattr(policy, name, None) is not None for name in MCTS_ATTRIBUTES
            ):
                attachment = attach_policy(policy, **applied.options)
                policy._zerokv_attachment = attachment
                applied._attachments.add(attachment)

        return __init__

    def attachments(self) -> list[PolicyAttachment]:
        """The live attachments of policies built while applied."""
        return [a for a in self._attachments if a.attached]

    def revert(self) -> None:
        """LightZero's class back, every attached policy detached. Idempotent."""
        global _current
        with _LOCK:
            if not self.active:
                return
            if self._saved is _ABSENT:
                del self.cls.__init__  # type: ignore[misc]
            else:
                self.cls.__init__ = self._saved  # type: ignore[misc]
            self.active = False
            if _current is self:
                _current = None
        for attachment in self.attachments():
            attachment.detach()

    def __enter__(self) -> Applied:
        return self

    def __exit__(self, *exc: object) -> None:
        self.revert()

    def __repr__(self) -> str:
        state = "active" if self.active else "reverted"
        return f"Applied({self.cls.__module__}.{self.cls.__qualname__}, {state})"


def _policy_class() -> type:
    try:
        module = importlib.import_module(POLICY_MODULE)
    except ImportError as err:
        raise ConfigError(
            f"zerokv.lightzero.apply() needs LightZero's UniZero policy ({POLICY_MODULE}): "
            f"{type(err).__name__}: {err}"
        ) from None
    cls = getattr(module, "UniZeroPolicy", None)
    if not isinstance(cls, type):
        raise ConfigError(f"{POLICY_MODULE}.UniZeroPolicy is not LightZero's UniZero policy")
    for name in ("_init_collect", "_init_eval", "_forward_collect", "_forward_eval"):
        if not hasattr(cls, name):
            raise ConfigError(
                f"{POLICY_MODULE}.UniZeroPolicy has no {name}: not a LightZero version "
                "zerokv supports (0.2.0, or main 9f717c80 or later)"
            )
    return cls


def apply(**options: Any) -> Applied:
    """Every ``UniZeroPolicy`` built from now on runs its searches on zerokv (module
    docstring). Options as ``attach_policy``'s (``device``, ``num_simulations``,
    ``verify``). Call it before ``train_unizero(...)``."""
    global _current
    unknown = set(options) - APPLY_OPTIONS
    if unknown:
        raise ConfigError(
            f"unknown apply options {sorted(unknown)}; known: {sorted(APPLY_OPTIONS)}"
        )
    positive_option(options, "num_simulations")
    if not isinstance(options.get("verify", False), bool):
        raise ConfigError(f"verify must be a bool, got {options['verify']!r}")
    cls = _policy_class()
    with _LOCK:
        if _current is not None and _current.active:
            raise ConfigError("zerokv.lightzero.apply() is already in effect; revert() it first")
        done = Applied(cls, dict(options))
        cls.__init__ = done._wrap()  # type: ignore[misc]
        done.active = True
        _current = done
    return done


def revert() -> bool:
    """Undo the current ``apply()``; False when none was in effect."""
    done = _current
    if done is None:
        return False
    done.revert()
    return True


def current() -> Applied | None:
    """The ``apply()`` in effect, or None."""
    return _current


@contextmanager
def applied(**options: Any) -> Iterator[Applied]:
    """``apply()`` for the duration of a ``with`` block."""
    done = apply(**options)
    try:
        yield done
    finally:
        done.revert()
