"""``python -m zerokv.bench --adapter``: the per-call benchmark of the LightZero drop-in.

Runs a small workload end to end (check pass, timed repeats, table, JSON), and shows that
its check pass bites: a drop-in that returns other tokens than LightZero's manager is
reported as a mismatch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from zerokv.bench import adapter
from zerokv.bench.__main__ import main
from zerokv.lightzero import KVCacheManager

SMALL = adapter.AdapterWorkload(
    env_num=2, num_layers=1, num_heads=2, embed_dim=8, num_simulations=4, steps=3
)
CPU = torch.device("cpu")


def test_check_and_run_on_a_small_workload() -> None:
    hits = adapter.check(SMALL, CPU, torch.float32)
    # Every lookup of the replay hits: roots after the first step, parents, children.
    assert hits == (SMALL.steps - 1) * SMALL.env_num + SMALL.steps * SMALL.env_num * (
        SMALL.num_simulations + 1
    )
    results = adapter.run(SMALL, 2, CPU, torch.float32)
    assert set(results) == {"LightZero", "zerokv"}
    for kinds in results.values():
        assert set(kinds) == set(adapter.KINDS)
        assert all(len(v) == 2 and min(v) > 0 for v in kinds.values())
    table = adapter.format_table(results)
    assert table.count("\n") == 1 + len(adapter.KINDS)
    assert "| hierarchical_get |" in table


class _OtherTokens(KVCacheManager):
    """Planted bug: every stored entry is shifted by one."""

    def set_recur_cache(self, cache_key: int, kv_cache: Any) -> int:
        for layer in kv_cache._keys_values:
            layer._k_cache._cache = layer._k_cache._cache + 1.0
        return super().set_recur_cache(cache_key, kv_cache)


def test_check_bites(monkeypatch: pytest.MonkeyPatch) -> None:
    real = adapter._managers

    def broken(work: Any, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
        managers = real(work, device, dtype)
        managers["zerokv"] = _OtherTokens(work.config(), work.env_num, device=device, dtype=dtype)
        return managers

    monkeypatch.setattr(adapter, "_managers", broken)
    with pytest.raises(adapter.AdapterMismatch, match="different entries"):
        adapter.check(SMALL, CPU, torch.float32)


def test_cli(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(adapter, "AdapterWorkload", lambda steps, seed: SMALL)
    out = tmp_path / "adapter.json"
    assert main(["--adapter", "--repeats", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "zerokv / LightZero" in text and "| set_recur_cache |" in text
    doc = json.loads(out.read_text())
    assert set(doc["median_us"]) == {"LightZero", "zerokv"}
    assert doc["workload"]["env_num"] == SMALL.env_num
