"""Batched keys and fingerprints on the device: ``zkv64`` with int64 tensor arithmetic.

This module owns the implementation of ``zerokv_spec.keys``: the same functions, computed
for a whole batch of latents ``[B, ...]`` at once, on the latents' device, with no host
synchronisation. The results are bit-identical to the spec on every device because every
step is integer arithmetic modulo 2**64 (torch's int64 multiply and sum wrap), and the
reduction is a sum, whose value does not depend on the order a GPU adds in.

Also here: ``scoped_keys`` / ``scoped_fingerprints`` (the recurrent tier's env binding),
``weak_keys`` (a 4-valued hash to test collision safety) and ``legacy_keys``
(LightZero's ``xxh64(latent.float32 bytes).intdigest()``, computed on the host: one
device-to-host copy per call, which synchronises on CUDA).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import torch

from zerokv.errors import DTypeError, ShapeError
from zerokv.kernels import EAGER, Kernels
from zerokv_spec.keys import (
    FINGERPRINT_SEED,
    KEY_SEED,
    descriptor,
    env_fingerprint_tag,
    env_key_tag,
    to_signed,
)

__all__ = [
    "DTYPE_NAMES",
    "KeyFn",
    "env_tags",
    "fmix64",
    "keys_and_fingerprints",
    "legacy_keys",
    "scoped_fingerprints",
    "scoped_keys",
    "weak_keys",
    "zkv64",
    "zkv64_fingerprints",
    "zkv64_keys",
]

#: A key function: latents ``[B, ...]`` -> keys ``[B]`` int64 on the same device.
KeyFn = Callable[[torch.Tensor], torch.Tensor]

DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.float32: "float32",
    torch.float64: "float64",
}

_MUL1 = to_signed(0xFF51AFD7ED558CCD)
_MUL2 = to_signed(0xC4CEB9FE1A85EC53)
_LOW31 = (1 << 31) - 1  # mask after an arithmetic shift by 33 = a logical shift


def fmix64(x: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's finaliser on int64 tensors (two's complement, wrapping)."""
    x = x ^ ((x >> 33) & _LOW31)
    x = x * _MUL1
    x = x ^ ((x >> 33) & _LOW31)
    x = x * _MUL2
    return x ^ ((x >> 33) & _LOW31)


def _check_latents(latents: torch.Tensor) -> str:
    if not isinstance(latents, torch.Tensor):
        raise DTypeError(f"latents must be a torch.Tensor, got {type(latents).__name__}")
    name = DTYPE_NAMES.get(latents.dtype)
    if name is None:
        raise DTypeError(
            f"latents must have a float dtype in {sorted(DTYPE_NAMES.values())}, "
            f"got {latents.dtype}"
        )
    if latents.dim() < 1:
        raise ShapeError("latents must be [B, ...], got a 0-d tensor")
    return name


def _rows_of(latents: torch.Tensor) -> torch.Tensor:
    """``[B, n]``: each row flattened (``reshape(B, -1)`` is ambiguous for ``B = 0``)."""
    if latents.dim() == 2:
        return latents  # already rows (a reshape would still dispatch a view)
    return latents.reshape(latents.shape[0], math.prod(latents.shape[1:]))


def _words(latents: torch.Tensor) -> torch.Tensor:
    """``[B, n]`` int32: each row's little-endian signed 32-bit words (zero-padded).

    Left as int32: the XOR with the int64 tables sign-extends them in the same kernel.
    """
    rows = latents.shape[0]
    flat = _rows_of(latents).contiguous()
    nbytes = flat.shape[1] * flat.element_size()
    if nbytes == 0:
        return torch.zeros((rows, 0), dtype=torch.int32, device=latents.device)
    if nbytes % 4 == 0:
        return flat.view(torch.int32)
    raw = torch.nn.functional.pad(flat.view(torch.uint8), (0, -nbytes % 4))
    return raw.view(torch.int32)


_GOLDEN = to_signed(0x9E3779B97F4A7C15)  # ``zerokv_spec.keys``'s splitmix64 increment


def position_table_tensors(
    n: int, seeds: tuple[int, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``zerokv_spec.keys.position_tables`` of every seed, built on ``device`` in one pass:
    ``A`` and ``M`` as ``[len(seeds), 1, n]`` int64 (two's complement).

    The spec's loop advances a splitmix64 state by a constant, so state ``k`` is
    ``seed + k * GOLDEN``: ``A[i] = fmix64(state 2i + 1)``, ``M[i] = fmix64(state 2i + 2) | 1``,
    all in wrapping int64 arithmetic (bit-identical to the spec; tested). A table for
    262k words costs milliseconds where the spec's Python loop costs seconds.
    """
    steps = torch.arange(1, 2 * n + 1, dtype=torch.int64, device=device)
    seed = torch.tensor([to_signed(s) for s in seeds], dtype=torch.int64, device=device)
    mixed = fmix64(seed.view(-1, 1) + steps.view(1, -1) * _GOLDEN).view(len(seeds), n, 2)
    shape = (len(seeds), 1, n)
    return mixed[:, :, 0].reshape(shape), (mixed[:, :, 1] | 1).reshape(shape)


@lru_cache(maxsize=64)
def _tables(
    n: int, seeds: tuple[int, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``position_table_tensors``, cached per word count, seeds and device (the first
    ``keys_of`` of a row size builds them; later calls reuse them)."""
    return position_table_tensors(n, seeds, device)


@lru_cache(maxsize=256)
def _descriptors(
    name: str, nbytes: int, row_shape: tuple[int, ...], seeds: tuple[int, ...], device: torch.device
) -> torch.Tensor:
    desc = [to_signed(descriptor(name, nbytes, row_shape, s)) for s in seeds]
    return torch.tensor(desc, dtype=torch.int64).view(len(seeds), 1).to(device)


def zkv64(
    latents: torch.Tensor, seeds: tuple[int, ...], kernels: Kernels | None = None
) -> torch.Tensor:
    """``[len(seeds), B]``: zkv64 of every row under every seed (one pass over the words,
    one ``zkv64_mix`` kernel; ``kernels`` runs it, eager by default)."""
    name = _check_latents(latents)
    words = _words(latents)
    a, m = _tables(words.shape[1], seeds, latents.device)
    row_shape = tuple(int(d) for d in latents.shape[1:])
    nbytes = torch.Size(row_shape).numel() * latents.element_size()
    kernels = EAGER if kernels is None else kernels
    descriptors = _descriptors(name, nbytes, row_shape, seeds, latents.device)
    return kernels(zkv64_mix)(words, a, m, descriptors)


def _word_sums(words: torch.Tensor, a: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``[seeds, B]``: the sum over a row's words of ``(word ^ A[i]) * M[i]`` (wrapping)."""
    # int32 ^ int64 promotes (sign-extends) the words inside the XOR, and [B, n] against
    # [seeds, 1, n] broadcasts to [seeds, B, n]; the product is then formed in place, so
    # the pass allocates one [seeds, B, n] buffer.
    return (words ^ a).mul_(m).sum(dim=2)


def zkv64_mix(
    words: torch.Tensor, a: torch.Tensor, m: torch.Tensor, descriptors: torch.Tensor
) -> torch.Tensor:
    """The kernel of ``zkv64``: word sums + descriptor per seed and row (``words``
    ``[B, n]`` int32, tables ``[seeds, 1, n]``, descriptors ``[seeds, 1]``)."""
    return _word_sums(words, a, m).add_(descriptors)


def zkv64_keys(latents: torch.Tensor) -> torch.Tensor:
    """The default keys ``[B]`` (``zerokv_spec.keys.zkv64_key`` of every row)."""
    return zkv64(latents, (KEY_SEED,))[0]


def zkv64_fingerprints(latents: torch.Tensor) -> torch.Tensor:
    """The default fingerprints ``[B]`` (``zerokv_spec.keys.zkv64_fingerprint``)."""
    return zkv64(latents, (FINGERPRINT_SEED,))[0]


def keys_and_fingerprints(
    latents: torch.Tensor, kernels: Kernels | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and fingerprints together, in one pass."""
    keys, fingerprints = zkv64(latents, (KEY_SEED, FINGERPRINT_SEED), kernels).unbind(0)
    return keys, fingerprints


def weak_keys(latents: torch.Tensor) -> torch.Tensor:
    """``zerokv_spec.keys.weak_key``: byte sum mod 4 (for collision tests only)."""
    _check_latents(latents)
    flat = _rows_of(latents).contiguous()
    return flat.view(torch.uint8).to(torch.int64).sum(dim=1) % 4


def legacy_keys(latents: torch.Tensor) -> torch.Tensor:
    """LightZero's keys: ``xxh64(row as float32 bytes).intdigest()`` as signed int64.

    Computed on the host: the latents are copied to the CPU once per call (a device
    synchronisation on CUDA). Use it only where LightZero's exact keys are required.
    """
    import xxhash  # local: only this legacy path needs it

    _check_latents(latents)
    host = _rows_of(latents.detach().to("cpu", torch.float32)).numpy()
    keys = [to_signed(xxhash.xxh64(row.tobytes()).intdigest()) for row in host]
    return torch.tensor(keys, dtype=torch.int64).to(latents.device)


@lru_cache(maxsize=64)
def env_tags(env_num: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per environment id, ``zerokv_spec.keys.env_key_tag`` and ``env_fingerprint_tag``."""
    key_tags = [to_signed(env_key_tag(e)) for e in range(env_num)]
    fp_tags = [to_signed(env_fingerprint_tag(e)) for e in range(env_num)]
    return (
        torch.tensor(key_tags, dtype=torch.int64, device=device),
        torch.tensor(fp_tags, dtype=torch.int64, device=device),
    )


def scoped_keys(keys: torch.Tensor, key_tag: torch.Tensor) -> torch.Tensor:
    """``zerokv_spec.keys.scoped_key`` per row; ``key_tag`` is ``env_tags(...)[0][env_ids]``."""
    return keys ^ key_tag


def scoped_fingerprints(
    fingerprints: torch.Tensor, has_fingerprint: torch.Tensor, fp_tag: torch.Tensor
) -> torch.Tensor:
    """``zerokv_spec.keys.scoped_fingerprint`` per row (a missing fingerprint counts as 0)."""
    return (fingerprints * has_fingerprint) ^ fp_tag
