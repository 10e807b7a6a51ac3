"""Library code logs through ``logging`` under ``zerokv`` (never prints); with per-row tracing
on (``zerokv.trace``) debug records name the pool, the key and the slot, and without it no
logging level forms a per-row record."""

from __future__ import annotations

import logging

import pytest
import torch

from zerokv import CacheConfig, CacheManager, Correction, append, trace
from zerokv.errors import ConfigError


def test_debug_logs_name_pool_key_and_slot(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = CacheConfig(
        env_num=2,
        num_layers=1,
        num_heads=1,
        head_dim=2,
        context_length=6,
        root_capacity=2,
        recurrent_capacity=2,
    )
    mgr = CacheManager(cfg)
    keys = torch.tensor([11, 12])
    with caplog.at_level(logging.DEBUG, logger="zerokv"), trace.tracing():
        batch = append(mgr.gather(mgr.lookup_many([0, 1], keys)), torch.ones(1, 2, 2, 1, 2, 2), 6)
        mgr.store_root_batch([0, 1], keys, batch, Correction.zero(1, 1, 2, 6))
        mgr.clear_env(1)
    messages = [r.getMessage() for r in caplog.records if r.name == "zerokv"]
    assert "lookup env=0 key=11 tier=MISS slot=-1" in messages
    assert "store root[1] key=12 slot=0 insert evicted=None" in messages
    assert "zerokv: cleared root pool of env 1" in messages
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_no_records_above_debug_by_default(caplog: pytest.LogCaptureFixture) -> None:
    cfg = CacheConfig(
        env_num=1,
        num_layers=1,
        num_heads=1,
        head_dim=2,
        context_length=6,
        root_capacity=2,
        recurrent_capacity=2,
    )
    with caplog.at_level(logging.INFO, logger="zerokv"):
        mgr = CacheManager(cfg)
        mgr.lookup_many([0], torch.tensor([1]))
    assert [r for r in caplog.records if r.name.startswith("zerokv")] == []


def _small_manager() -> CacheManager:
    cfg = CacheConfig(
        env_num=2,
        num_layers=1,
        num_heads=1,
        head_dim=2,
        context_length=6,
        root_capacity=2,
        recurrent_capacity=2,
    )
    return CacheManager(cfg)


def _one_step(mgr: CacheManager) -> None:
    keys = torch.tensor([11, 12])
    batch = append(mgr.gather(mgr.lookup_many([0, 1], keys)), torch.ones(1, 2, 2, 1, 2, 2), 6)
    mgr.store_root_batch([0, 1], keys, batch, Correction.zero(1, 1, 2, 6))


def test_root_logger_at_debug_forms_no_per_row_record(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What importing LightZero's world model does (the root logger at DEBUG): without the
    tracing switch no per-row record is formed, and no key or slot is read for one."""
    mgr = _small_manager()
    read: list[int] = []
    real_tolist = torch.Tensor.tolist

    def counting_tolist(self: torch.Tensor) -> object:
        read.append(1)
        return real_tolist(self)

    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.DEBUG)
    try:
        with caplog.at_level(logging.DEBUG):
            _one_step(mgr)  # warm: index shortcuts may read on their own
            caplog.clear()
            monkeypatch.setattr(torch.Tensor, "tolist", counting_tolist)
            _one_step(mgr)
            reads_untraced = len(read)
            assert [r for r in caplog.records if r.name.startswith("zerokv")] == []
            with trace.tracing():
                _one_step(mgr)
            traced = [r.getMessage() for r in caplog.records if r.name.startswith("zerokv")]
    finally:
        root.setLevel(before)
    # The switch is what forms them (the test bites: traced, the records are there).
    assert any(m.startswith("lookup env=0 key=11") for m in traced), traced
    assert any(m.startswith("store root[0] key=11") for m in traced), traced
    assert len(read) > 2 * reads_untraced  # tracing reads keys and slots; untraced does not


def test_tracing_switch_is_scoped_and_typed() -> None:
    assert trace.tracing_enabled() is False
    with trace.tracing():
        assert trace.tracing_enabled() is True
        with trace.tracing(False):
            assert trace.tracing_enabled() is False
        assert trace.tracing_enabled() is True
    assert trace.tracing_enabled() is False
    with pytest.raises(ConfigError, match="bool"):
        trace.set_tracing("yes")  # type: ignore[arg-type]
    assert trace.tracing_enabled() is False


def test_tracing_environment_variable_is_read_at_import() -> None:
    import subprocess
    import sys

    probe = "import zerokv.trace as t; print(t.tracing_enabled())"
    env = {"ZEROKV_TRACE": "1", "PATH": "/usr/bin:/bin"}
    import os

    env.update({k: v for k, v in os.environ.items() if k.startswith(("PYTHON", "VIRTUAL"))})
    on = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    env["ZEROKV_TRACE"] = "0"
    off = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert (on.stdout.strip(), off.stdout.strip()) == ("True", "False"), (on.stderr, off.stderr)
