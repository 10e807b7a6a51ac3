"""``zerokv.diagnostics.HitRateMonitor`` and the drop-in's hit-rate warning.

The monitor's contract is written once, as ``check_monitor_contract`` (a function that
raises ``AssertionError`` on a breach); it must pass on the real monitor and fail on each
planted mutant (a monitor with one bug), so the checks are shown to bite.
"""

from __future__ import annotations

import logging
import types

import pytest
import torch

from zerokv.diagnostics import DEFAULT_CAUSES, HitRateMonitor, TierCounts
from zerokv.errors import ConfigError
from zerokv.lightzero import KVCacheManager, LayoutKeysValues

LOGGER = "zerokv.test.diagnostics"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def check_monitor_contract(make: type[HitRateMonitor]) -> None:
    """The rule of ``zerokv.diagnostics``, checked on a monitor class."""
    logger = logging.getLogger(LOGGER)
    records = _Records()
    logger.addHandler(records)
    logger.propagate = False
    try:
        mon = make(10, causes={"root": "int64 buffers"}, logger=logger)
        # A window without hits while stores happen warns once, naming tier and causes.
        assert not mon.update("root", 0, 0, 0)
        assert not mon.update("root", 9, 0, 5)  # 9 lookups: the window is still open
        assert mon.update("root", 10, 0, 5)
        assert len(records.messages) == 1
        assert "root" in records.messages[0] and "int64 buffers" in records.messages[0]
        assert "10 lookups" in records.messages[0] and "5 entries" in records.messages[0]
        # Once per tier: a second bad window says nothing.
        assert not mon.update("root", 25, 0, 9)
        assert len(records.messages) == 1 and mon.warned == {"root"}
        # A window with one hit, or without stores, is fine.
        assert not mon.update("rec", 0, 0, 0)
        assert not mon.update("rec", 10, 1, 7)
        assert not mon.update("rec", 20, 1, 7)  # no hit, but no store either
        assert not mon.update("rec", 30, 2, 9)
        assert len(records.messages) == 1
        # Counters that go backwards (reset) open a new window.
        assert not mon.update("rec", 5, 0, 1)
        assert not mon.update("rec", 14, 0, 2)
        assert mon.update("rec", 15, 0, 2)
        assert "rec" in records.messages[-1] and DEFAULT_CAUSES in records.messages[-1]
        # reset() re-arms the warning.
        mon.reset("root")
        assert "root" not in mon.warned
        assert not mon.update("root", 100, 0, 10)
        assert mon.update("root", 110, 0, 11)
        mon.reset()
        assert mon.warned == set()
        with pytest.raises(ConfigError, match="window"):
            make(0)
    finally:
        logger.removeHandler(records)
        logger.propagate = True


def test_monitor_contract() -> None:
    check_monitor_contract(HitRateMonitor)
    assert TierCounts(1, 2, 3).stores == 3


class _WarnsWithHits(HitRateMonitor):
    """Planted bug: ignores hits (warns whenever stores happened)."""

    def update(self, tier: str, lookups: int, hits: int, stores: int) -> bool:
        return super().update(tier, lookups, 0, stores)


class _WarnsEveryTime(HitRateMonitor):
    """Planted bug: forgets that it warned."""

    def update(self, tier: str, lookups: int, hits: int, stores: int) -> bool:
        self.warned.clear()
        return super().update(tier, lookups, hits, stores)


class _ShortWindow(HitRateMonitor):
    """Planted bug: an off-by-one window."""

    def __init__(self, window: int = 256, **kwargs: object) -> None:
        super().__init__(max(1, window - 1), **kwargs)  # type: ignore[arg-type]


class _NeverWarns(HitRateMonitor):
    def update(self, tier: str, lookups: int, hits: int, stores: int) -> bool:
        super().update(tier, lookups, hits + 1, stores)
        return False


@pytest.mark.parametrize("mutant", [_WarnsWithHits, _WarnsEveryTime, _ShortWindow, _NeverWarns])
def test_monitor_contract_bites(mutant: type[HitRateMonitor]) -> None:
    with pytest.raises(AssertionError):
        check_monitor_contract(mutant)


# --------------------------------------------------------------------------- the drop-in


def _kv(size: int) -> LayoutKeysValues:
    kv = LayoutKeysValues.empty(2, 2, 8, 4)
    for layer in kv._keys_values:
        for side in (layer._k_cache, layer._v_cache):
            side._size = size
    return kv


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "zerokv.lightzero" and r.levelno == logging.WARNING
    ]


def test_drop_in_warns_once_when_root_lookups_never_hit(caplog: pytest.LogCaptureFixture) -> None:
    """LightZero's int64 observation buffer: each step stores a root under the latent of the
    observation and looks it up next step under the latent of the truncated observation."""
    cfg = types.SimpleNamespace(num_simulations=4)
    cache = KVCacheManager(cfg, 2, hit_rate_window=16)
    with caplog.at_level(logging.WARNING, logger="zerokv.lightzero"):
        for step in range(40):
            obs = torch.tensor([0.25 * step + 0.5])  # never an integer
            truncated = obs.long()  # what an int64 buffer keeps of it
            for env in range(2):
                stored_key = hash((env, obs.numpy().tobytes())) % 2**64
                lookup_key = hash((env, truncated.numpy().tobytes())) % 2**64
                assert cache.get_init_cache(env, lookup_key) is None
                cache.set_init_cache(env, stored_key, _kv(1))
                # The search's lookups hit (roots and children): no warning for them.
                assert cache.hierarchical_get(env, stored_key) is not None
                cache.set_recur_cache(stored_key + 1, _kv(3))
                assert cache.hierarchical_get(env, stored_key + 1) is not None
    warnings = _warnings(caplog)
    assert len(warnings) == 1
    assert "root tier had 0 hits" in warnings[0] and "int64" in warnings[0]
    assert cache.hit_rate_monitor.warned == {"root"}


def test_drop_in_is_quiet_when_lookups_hit(caplog: pytest.LogCaptureFixture) -> None:
    cache = KVCacheManager(types.SimpleNamespace(num_simulations=4), 2, hit_rate_window=16)
    with caplog.at_level(logging.WARNING, logger="zerokv.lightzero"):
        for step in range(40):
            for env in range(2):
                assert (cache.get_init_cache(env, step) is None) == (step == 0)
                cache.set_init_cache(env, step + 1, _kv(1))
                cache.get_recur_cache(10_000 + step)  # recurrent misses, but no stores there
    assert _warnings(caplog) == []


def test_drop_in_warns_for_hierarchical_misses(caplog: pytest.LogCaptureFixture) -> None:
    cache = KVCacheManager(types.SimpleNamespace(num_simulations=8), 1, hit_rate_window=8)
    with caplog.at_level(logging.WARNING, logger="zerokv.lightzero"):
        for node in range(64):
            assert cache.hierarchical_get(0, 2 * node) is None  # float64 vs float32 keys
            cache.set_recur_cache(2 * node + 1, _kv(3))
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "hierarchical tier" in warnings[0]
    cache.reset_stats()  # re-arms
    assert cache.hit_rate_monitor.warned == set()


def test_drop_in_warning_can_be_switched_off(caplog: pytest.LogCaptureFixture) -> None:
    cache = KVCacheManager(types.SimpleNamespace(num_simulations=8), 1, hit_rate_window=0)
    with caplog.at_level(logging.WARNING, logger="zerokv.lightzero"):
        for node in range(64):
            cache.hierarchical_get(0, 2 * node)
            cache.set_recur_cache(2 * node + 1, _kv(3))
    assert _warnings(caplog) == []
