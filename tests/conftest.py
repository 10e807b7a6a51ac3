"""Shared pytest configuration: Hypothesis profiles and the ``cuda`` marker.

Hypothesis profile selection: ``$HYPOTHESIS_PROFILE`` if set, else ``ci`` when ``$CI`` is
non-empty, else ``dev``. Profiles: ``ci`` (fast, derandomized), ``dev``, ``long``.

Tests marked ``@pytest.mark.cuda`` are skipped when ``torch.cuda.is_available()`` is false.
"""

from __future__ import annotations

import functools
import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", max_examples=100, stateful_step_count=50, deadline=None)
settings.register_profile("long", max_examples=1000, stateful_step_count=100, deadline=None)


def _selected_profile() -> str:
    explicit = os.environ.get("HYPOTHESIS_PROFILE")
    if explicit:
        return explicit
    return "ci" if os.environ.get("CI") else "dev"


HYPOTHESIS_PROFILE = _selected_profile()
settings.load_profile(HYPOTHESIS_PROFILE)


@functools.cache
def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``cuda``-marked tests when no CUDA device is usable (torch imported lazily)."""
    cuda_items = [item for item in items if item.get_closest_marker("cuda") is not None]
    if not cuda_items or _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is false)")
    for item in cuda_items:
        item.add_marker(skip)


def pytest_report_header(config: pytest.Config) -> str:
    return f"hypothesis profile: {HYPOTHESIS_PROFILE}"
