"""Library code logs through ``logging`` under ``zerokv`` (never prints); debug records name
the pool, the key and the slot."""

from __future__ import annotations

import logging

import pytest
import torch

from zerokv import CacheConfig, CacheManager, Correction, append


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
    with caplog.at_level(logging.DEBUG, logger="zerokv"):
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
