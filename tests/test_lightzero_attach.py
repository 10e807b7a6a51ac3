"""``zerokv.lightzero.attach`` without LightZero: the batch view LightZero's attention
reads, the refusals that need no model, and the benchmark's message when LightZero is
missing. The real-model tests are tests/integration/test_attach_real_model.py
(``nox -s integration``)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch

from zerokv.errors import ConfigError, UnsupportedOperationError
from zerokv.lightzero import BatchView, attach, attachment_of
from zerokv.lightzero.attach import detect_version


def test_batch_view_is_lightzeros_left_padded_cache() -> None:
    """A right-aligned zerokv batch, viewed from column ``cl - t - S``, is the batch
    LightZero's trim_and_pad_kv_cache builds: each row left-padded to the longest ``S``;
    ``update`` writes new tokens after the window, ``get`` returns the window."""
    layers, rows, heads, cl, dim, t = 2, 3, 2, 8, 4, 2
    sizes = [1, 3, 2]
    longest = max(sizes)
    kv = torch.zeros(layers, 2, rows, heads, cl, dim)
    tokens = {}
    for row, size in enumerate(sizes):
        data = torch.randn(layers, 2, heads, size, dim)
        tokens[row] = data
        kv[:, :, row, :, cl - t - size : cl - t] = data
    view = BatchView(kv, cl - t - longest, cl - t)
    assert len(view) == layers and view.size == longest
    assert view[0].shape == (rows, heads, longest, dim)
    for layer in range(layers):
        k, v = view[layer].get()
        for row, size in enumerate(sizes):
            want = torch.zeros(heads, longest, dim)
            want[:, longest - size :] = tokens[row][layer, 0]
            assert torch.equal(k[row], want)
            want[:, longest - size :] = tokens[row][layer, 1]
            assert torch.equal(v[row], want)
    new_k, new_v = torch.randn(rows, heads, 1, dim), torch.randn(rows, heads, 1, dim)
    view[0].update(new_k, new_v)
    assert view[0].shape[2] == longest + 1 and view.size == longest + 1
    k, v = view[0].get()
    assert torch.equal(k[:, :, -1:], new_k) and torch.equal(v[:, :, -1:], new_v)
    assert torch.equal(kv[0, 0, :, :, cl - t : cl - t + 1], new_k)  # written in place
    view[0].update(new_k, new_v)
    with pytest.raises(UnsupportedOperationError, match="overflow"):
        view[0].update(new_k, new_v)


@pytest.mark.parametrize("thing", [object(), 3, torch.nn.Linear(2, 2)])
def test_attach_refuses_what_is_not_a_world_model(thing: object) -> None:
    with pytest.raises(ConfigError, match="UniZero"):
        attach(thing)
    assert attachment_of(thing) is None


def test_an_unknown_version_is_refused() -> None:
    """A module with every method name but LightZero's signatures of neither version."""

    class Imitation(torch.nn.Module):
        transformer = None
        shared_pool_size_init = 2

        def wm_forward_for_initial_infererence(self, obs: object) -> None: ...

        def update_cache_context(self, latent: object) -> None: ...

        forward_initial_inference = forward_recurrent_inference = wm_forward_for_initial_infererence
        retrieve_or_generate_kvcache = trim_and_pad_kv_cache = wm_forward_for_initial_infererence
        clear_caches = reset_for_initial_inference = wm_forward_for_initial_infererence

    with pytest.raises(ConfigError, match="unsupported version"):
        detect_version(Imitation())


@pytest.mark.skipif(
    importlib.util.find_spec("lzero") is not None, reason="LightZero is installed here"
)
def test_bench_model_without_lightzero_says_what_to_install() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "zerokv.bench", "--model", "unizero"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert "lightzero==0.2.0" in run.stderr and "--no-deps" in run.stderr
