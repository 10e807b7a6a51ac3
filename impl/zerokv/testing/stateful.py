"""Hypothesis machinery of the model-vs-implementation tests (needs ``hypothesis``).

``DiffMachine`` is the base of every differential state machine (runtime checks on for its
whole life, the index backend chosen per run); the strategies draw the key, fingerprint
and priority universes, shapes and entry sizes the machines share. The comparisons
themselves live in ``zerokv.testing.views`` and ``zerokv.testing.mirror``, the token
encoding in ``zerokv.testing.encoding``: this module only adds what needs hypothesis.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager

from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine

from zerokv import checks
from zerokv.index import PutResult
from zerokv.manager import CacheConfig, CacheManager
from zerokv.testing.backends import BACKENDS, COMPILED, index_of, shortcuts_of
from zerokv.testing.encoding import Shape, TokenSource
from zerokv_spec.keys import INT64_MAX, INT64_MIN
from zerokv_spec.manager import CacheManager as SpecManager
from zerokv_spec.pool import PutResult as SpecPutResult

__all__ = [
    "BACKENDS",
    "COMPILED",
    "FINGERPRINTS",
    "KEYS",
    "PRIORITIES",
    "DiffMachine",
    "assert_put_results",
    "cache_config",
    "clear_both",
    "entry_sizes",
    "shapes",
]

#: Keys the machines draw from: few enough for hits, duplicates and evictions; 0 (the
#: implementation's empty-slot key) and both int64 extremes included on purpose.
KEYS: tuple[int, ...] = (0, 1, 2, 3, 4, -1, INT64_MIN, INT64_MAX)
#: Fingerprints: a small set, so that a random fingerprint often mismatches (collisions).
FINGERPRINTS: tuple[int, ...] = (0, 1, 2, INT64_MIN)
#: Priorities with ties on purpose.
PRIORITIES: tuple[float, ...] = (-1.0, 0.0, 0.0, 0.5, 1.0, 2.5)


def shapes(context_lengths: Sequence[int] = (4, 5, 6, 7, 8)) -> st.SearchStrategy[Shape]:
    return st.builds(
        Shape,
        num_layers=st.sampled_from([1, 2]),
        num_heads=st.sampled_from([1, 2]),
        head_dim=st.sampled_from([1, 2]),
        context_length=st.sampled_from(list(context_lengths)),
    )


def cache_config(shape: Shape, env_num: int, **options: object) -> CacheConfig:
    """A ``CacheConfig`` of ``shape`` (the pool sizes, policy, scope, index in ``options``)."""
    return CacheConfig(
        env_num=env_num,
        num_layers=shape.num_layers,
        num_heads=shape.num_heads,
        head_dim=shape.head_dim,
        context_length=shape.context_length,
        **options,  # type: ignore[arg-type]
    )


def entry_sizes(cl: int) -> st.SearchStrategy[int]:
    """Entry sizes biased toward the window rule's boundaries (``cl - 3 .. cl``)."""
    return st.one_of(st.sampled_from([cl - 3, cl - 1, cl, cl - 2]), st.integers(0, cl))


def assert_put_results(spec: Sequence[SpecPutResult], out: PutResult) -> None:
    """Slot, evicted key and inserted flag of every row of a put."""
    slots = out.slot.tolist()
    evicted = out.evicted.tolist()
    mask = out.evicted_mask.tolist()
    inserted = out.inserted.tolist()
    assert len(slots) == len(spec), f"{len(slots)} put results for {len(spec)} rows"
    got = [
        SpecPutResult(int(s), int(e) if m else None, bool(n))
        for s, e, m, n in zip(slots, evicted, mask, inserted)
    ]
    assert got == list(spec), f"put results differ:\n spec {list(spec)}\n impl {got}"
    for r in got:
        event(
            "put: "
            + ("evicting insert" if r.evicted is not None else "insert" if r.inserted else "update")
        )


def clear_both(spec: SpecManager, impl: CacheManager, which: str, env: int = 0) -> None:
    """The same clear on both managers: ``"env"`` (environment ``env``'s root pool),
    ``"roots"``, ``"recurrent"`` or ``"all"``."""
    if which == "env":
        spec.clear_env(env)
        impl.clear_env(env)
    elif which == "roots":
        spec.clear_roots()
        impl.clear_roots()
    elif which == "recurrent":
        spec.clear_recurrent()
        impl.clear_recurrent()
    else:
        spec.clear_all()
        impl.clear_all()


class DiffMachine(RuleBasedStateMachine):
    """Base of every differential machine: runtime contracts on for its whole life."""

    def __init__(self) -> None:
        super().__init__()
        self._contracts: AbstractContextManager[None] = checks.enabled()
        self._contracts.__enter__()
        assert checks.ENABLED
        self._shortcuts = checks.CPU_SHORTCUTS
        self.ready = False
        self.source = TokenSource()

    def use_backend(self, backend: str) -> str:
        """The ``index=`` argument for ``backend`` (``BACKENDS`` or ``COMPILED``); sets the
        CPU shortcuts (compiled kernels never take them)."""
        checks.CPU_SHORTCUTS = shortcuts_of(backend)
        return index_of(backend)

    def teardown(self) -> None:
        checks.CPU_SHORTCUTS = self._shortcuts
        self._contracts.__exit__(None, None, None)
