"""zerokv.keys against zerokv_spec.keys: bit-identical keys, fingerprints, scoped keys;
shape and dtype are part of the key; LightZero's legacy key is xxh64 of the float32 bytes."""

from __future__ import annotations

import pytest
import torch
import xxhash
from hypothesis import given
from hypothesis import strategies as st

from zerokv.errors import DTypeError
from zerokv.keys import (
    DTYPE_NAMES,
    env_tags,
    keys_and_fingerprints,
    legacy_keys,
    position_table_tensors,
    scoped_fingerprints,
    scoped_keys,
    weak_keys,
    zkv64_fingerprints,
    zkv64_keys,
)
from zerokv_spec.keys import (
    FINGERPRINT_SEED,
    KEY_SEED,
    Latent,
    position_tables,
    scoped_fingerprint,
    scoped_key,
    to_signed,
    weak_key,
    zkv64_fingerprint,
    zkv64_key,
)

DTYPES = list(DTYPE_NAMES)


def _latent(row: torch.Tensor) -> Latent:
    row = row.contiguous()
    data = row.view(torch.uint8).numpy().tobytes() if row.numel() else b""
    return Latent(data, DTYPE_NAMES[row.dtype], tuple(row.shape))


@given(
    dtype=st.sampled_from(DTYPES),
    rows=st.integers(1, 4),
    row_shape=st.lists(st.integers(0, 5), min_size=1, max_size=3),
    seed=st.integers(0, 2**31 - 1),
)
def test_impl_matches_spec(dtype: torch.dtype, rows: int, row_shape: list[int], seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn((rows, *row_shape), generator=gen).to(dtype)
    keys, fps = keys_and_fingerprints(latents)
    assert keys.dtype == torch.int64 and tuple(keys.shape) == (rows,)
    assert torch.equal(keys, zkv64_keys(latents))
    assert torch.equal(fps, zkv64_fingerprints(latents))
    weak = weak_keys(latents)
    for b in range(rows):
        lat = _latent(latents[b])
        assert int(keys[b]) == zkv64_key(lat)
        assert int(fps[b]) == zkv64_fingerprint(lat)
        assert int(weak[b]) == weak_key(lat)


def test_shape_and_dtype_are_part_of_the_key() -> None:
    x = torch.arange(12, dtype=torch.float32).view(1, 12)
    same_bytes = [x, x.view(1, 3, 4), x.view(1, 4, 3)]
    keys = {int(zkv64_keys(t)[0]) for t in same_bytes}
    assert len(keys) == 3
    as_int = x.view(torch.int32).view(torch.float32)  # identical bytes, identical dtype
    assert int(zkv64_keys(as_int)[0]) == int(zkv64_keys(x)[0])
    half = torch.zeros(1, 4, dtype=torch.float16)
    bf = torch.zeros(1, 4, dtype=torch.bfloat16)
    assert int(zkv64_keys(half)[0]) != int(zkv64_keys(bf)[0])


def test_keys_are_deterministic_and_distinct() -> None:
    latents = torch.randn(64, 32, generator=torch.Generator().manual_seed(1))
    a, b = zkv64_keys(latents), zkv64_keys(latents.clone())
    assert torch.equal(a, b)
    assert len(set(a.tolist())) == 64
    # A one-ulp change of one value changes the key.
    bumped = latents.clone()
    bumped[5, 7] = torch.nextafter(bumped[5, 7], torch.tensor(1.0))
    assert int(zkv64_keys(bumped)[5]) != int(a[5])


def test_scoped_keys_match_spec() -> None:
    keys = torch.tensor([0, 1, -5, 2**62, -(2**63)])
    fps = torch.tensor([3, -3, 7, 0, 9])
    has = torch.tensor([True, False, True, True, False])
    envs = torch.tensor([0, 1, 2, 3, 0])
    key_tags, fp_tags = env_tags(4, torch.device("cpu"))
    sk = scoped_keys(keys, key_tags[envs])
    sf = scoped_fingerprints(fps, has, fp_tags[envs])
    for i in range(5):
        assert int(sk[i]) == scoped_key(int(keys[i]), int(envs[i]))
        fp = int(fps[i]) if bool(has[i]) else None
        assert int(sf[i]) == scoped_fingerprint(fp, int(envs[i]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_legacy_key_is_xxh64_of_float32_bytes(dtype: torch.dtype) -> None:
    latents = torch.randn(3, 10, generator=torch.Generator().manual_seed(2)).to(dtype)
    got = legacy_keys(latents)
    for b in range(3):
        raw = latents[b].to(torch.float32).numpy().tobytes()
        assert int(got[b]) == to_signed(xxhash.xxh64(raw).intdigest())


def test_bad_latents_are_refused() -> None:
    with pytest.raises(DTypeError, match="float dtype"):
        zkv64_keys(torch.zeros(2, 3, dtype=torch.int32))
    with pytest.raises(DTypeError, match=r"torch\.Tensor"):
        zkv64_keys([1.0, 2.0])  # type: ignore[arg-type]


@pytest.mark.cuda
def test_cuda_keys_equal_cpu_keys() -> None:
    latents = torch.randn(16, 48, generator=torch.Generator().manual_seed(3))
    for dtype in DTYPES:
        x = latents.to(dtype)
        cpu = keys_and_fingerprints(x)
        gpu = keys_and_fingerprints(x.cuda())
        assert torch.equal(cpu[0], gpu[0].cpu()) and torch.equal(cpu[1], gpu[1].cpu())


@given(n=st.integers(0, 300), seed=st.integers(0, (1 << 64) - 1))
def test_position_tables_are_built_vectorised_bit_for_bit(n: int, seed: int) -> None:
    """The device-built tables equal the spec's splitmix64 loop for every seed and length."""
    a, m = position_table_tensors(n, (seed, KEY_SEED), torch.device("cpu"))
    for row, s in enumerate((seed, KEY_SEED)):
        want_a, want_m = position_tables(n, s)
        assert a[row, 0].tolist() == [to_signed(x) for x in want_a]
        assert m[row, 0].tolist() == [to_signed(x) for x in want_m]


def test_position_tables_of_a_big_latent_match_the_spec_at_sampled_words() -> None:
    n = 1 << 18  # 262k words per row: the size that took seconds in pure Python
    a, m = position_table_tensors(n, (FINGERPRINT_SEED,), torch.device("cpu"))
    want_a, want_m = position_tables(n, FINGERPRINT_SEED)
    for i in (0, 1, 12345, n - 1):
        assert int(a[0, 0, i]) == to_signed(want_a[i]) and int(m[0, 0, i]) == to_signed(want_m[i])
