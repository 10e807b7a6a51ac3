"""A store keeps only each row's real tokens: whatever a batch holds in its padding (NaN
and inf included) never reaches the slab, on every code path.

The differential machines encode tokens as finite numbers, so the spec cannot speak about
NaN or inf; this test holds the stores to the spec's rule (the stored entry is the row's
real tokens, windowed with the correction, zeros before them) directly, for every index
backend and float size. It lives here so that the mutation runner runs it: a multiply by
a 0/1 mask (NaN * 0 is NaN) instead of the bit mask is one of the planted bugs.
"""

from __future__ import annotations

import pytest
import torch

from zerokv import Batch, CacheConfig, CacheManager, Correction
from zerokv.testing.backends import BACKENDS, backend, index_of


@pytest.mark.parametrize("index", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_padding_garbage_is_not_stored(index: str, dtype: torch.dtype) -> None:
    cl, rows = 8, 4
    cfg = CacheConfig(
        env_num=1,
        num_layers=2,
        num_heads=2,
        head_dim=3,
        context_length=cl,
        root_capacity=4,
        recurrent_capacity=8,
        dtype=dtype,
        index=index_of(index),
    )
    with backend(index):
        mgr = CacheManager(cfg)
        gen = torch.Generator().manual_seed(1)
        kv = torch.randn(2, 2, rows, 2, cl, 3, generator=gen).to(dtype)
        lengths = torch.tensor([3, 5, 7, 8])  # 7 is windowed (cl - 1), 8 moves by one column
        garbage = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0], dtype=dtype)
        for b, n in enumerate(lengths.tolist()):
            kv[:, :, b, :, : cl - n, :] = garbage[b]
        table = torch.randn(2, 2, 2, cl - 3, 3, generator=gen).to(dtype)
        keys = torch.tensor([11, 12, 13, 14])
        mgr.store_recurrent_batch([0] * rows, keys, Batch(kv, lengths), Correction(table))
        found = mgr.lookup_many([0] * rows, keys)
        stored = mgr.gather(found)
        want_len = [3, 5, cl - 3, cl - 3]
        assert stored.lengths.tolist() == want_len
        for b, n in enumerate(want_len):
            pad = stored.kv[:, :, b, :, : cl - n, :]
            assert torch.equal(pad, torch.zeros_like(pad)), (
                f"row {b}: padding {pad.flatten().tolist()}"
            )
            assert not torch.signbit(pad).any(), f"row {b}: padding holds -0.0"
            assert torch.isfinite(stored.kv[:, :, b]).all()
        # Unwindowed rows are stored unchanged; windowed rows keep tokens [2, cl-1) plus the
        # correction, right-aligned.
        assert torch.equal(stored.kv[:, :, 0, :, -3:, :], kv[:, :, 0, :, -3:, :])
        assert torch.equal(stored.kv[:, :, 1, :, -5:, :], kv[:, :, 1, :, -5:, :])
        kept = kv[:, :, 2, :, cl - 7 + 2 : cl - 7 + 7, :] + table
        assert torch.equal(stored.kv[:, :, 2, :, 3:, :], kept)
