"""Keys, fingerprints and the exact hash functions that compute them from latents.

This module owns the *definition* of every key zerokv computes. A key is a signed 64-bit
integer (the range of a torch ``int64``). A fingerprint is a second signed 64-bit integer
computed from the same latent by an independent function; a stored entry remembers it and a
lookup only hits when both match (see ``zerokv_spec.pool``).

A latent is modelled as its raw bytes plus dtype and shape (``Latent``). The functions here
are the bit-exact reference for ``zerokv.hashing``: the implementation computes the same
values with vectorised int64 tensor arithmetic on any device.

The ``zkv64`` construction (key and fingerprint differ only in their seeds):

1. Zero-pad the bytes to a multiple of 4 and read them as little-endian *signed* 32-bit
   words ``w_0 .. w_{n-1}``.
2. Two per-position tables derived from the seed by a splitmix64 stream,
   ``A_i`` and odd ``M_i`` (``position_tables``).
3. ``acc = sum_i (w_i XOR A_i) * M_i  (mod 2**64)``: a multilinear hash. The sum does not
   depend on evaluation order, so a parallel reduction on a GPU gives the same bits as
   this loop, and it costs three vectorised operations per word.
4. ``desc`` mixes the dtype code, the byte length and each shape dimension.
5. ``result = acc + desc (mod 2**64)`` as a signed integer.

There is no finaliser after step 5, on purpose. zerokv only ever compares keys and
fingerprints for equality (never buckets them by some of their bits), and a bijection
applied to ``acc + desc`` would change no answer to "are these two equal": two latents
collide with it exactly when they collide without it. The randomness is in the tables:
two rows that differ in one word ``j`` never collide (``M_j`` is odd, so it is invertible
modulo ``2**64``), and key and fingerprint use independent tables, so a key collision is
caught by the fingerprint. On a device a finaliser would cost eleven int64 operations per
call (a logical shift needs a shift and a mask) for no change in what collides.

``fmix64`` is the MurmurHash3 64-bit finaliser (a bijection on 64-bit integers); it
derives the position tables, the descriptor and the env tags.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from zerokv_spec.errors import InputError, KeyRangeError

__all__ = [
    "DTYPE_CODES",
    "DTYPE_SIZES",
    "FINGERPRINT_SEED",
    "INT64_MAX",
    "INT64_MIN",
    "KEY_SEED",
    "MASK64",
    "Latent",
    "check_key",
    "descriptor",
    "env_fingerprint_tag",
    "env_key_tag",
    "fmix64",
    "position_tables",
    "scoped_fingerprint",
    "scoped_key",
    "to_signed",
    "to_unsigned",
    "weak_key",
    "words_of",
    "zkv64",
    "zkv64_fingerprint",
    "zkv64_key",
]

MASK64 = (1 << 64) - 1
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

#: Seeds of the two zkv64 functions. Different seeds give unrelated sums in step 2.
KEY_SEED = 0x9E3779B97F4A7C15
FINGERPRINT_SEED = 0xD6E8FEB86659FD93
#: Seeds used to bind a key or fingerprint to an environment id (``scoped_*``).
SCOPE_KEY_SEED = 0xA0761D6478BD642F
SCOPE_FINGERPRINT_SEED = 0xE7037ED1A0B428DB

#: Codes mixed into the descriptor so that equal bytes of different dtypes differ.
DTYPE_CODES: dict[str, int] = {"float16": 1, "bfloat16": 2, "float32": 3, "float64": 4}
DTYPE_SIZES: dict[str, int] = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


def to_signed(x: int) -> int:
    """The signed 64-bit integer with the same low 64 bits as ``x``."""
    x &= MASK64
    return x - (1 << 64) if x >= (1 << 63) else x


def to_unsigned(x: int) -> int:
    """The unsigned 64-bit integer with the same low 64 bits as ``x``."""
    return x & MASK64


def check_key(key: int, what: str = "key") -> None:
    """Raise ``KeyRangeError`` unless ``key`` is an int in the signed 64-bit range."""
    if isinstance(key, bool) or not isinstance(key, int):
        raise KeyRangeError(f"{what} must be an int, got {type(key).__name__}")
    if not INT64_MIN <= key <= INT64_MAX:
        raise KeyRangeError(f"{what} must lie in [-2**63, 2**63), got {key}")


def fmix64(x: int) -> int:
    """MurmurHash3's 64-bit finaliser on the low 64 bits of ``x`` (unsigned result)."""
    x &= MASK64
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & MASK64
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & MASK64
    x ^= x >> 33
    return x


@dataclass(frozen=True)
class Latent:
    """A latent vector as bytes: what a torch tensor of ``shape`` and ``dtype`` holds."""

    data: bytes
    dtype: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.dtype not in DTYPE_SIZES:
            raise InputError(
                f"latent dtype must be one of {sorted(DTYPE_SIZES)}, got {self.dtype!r}"
            )
        if any(d < 0 for d in self.shape):
            raise InputError(f"latent shape must be non-negative, got {self.shape}")
        expected = prod(self.shape) * DTYPE_SIZES[self.dtype]
        if len(self.data) != expected:
            raise InputError(
                f"latent of shape {self.shape} and dtype {self.dtype} needs {expected} bytes, "
                f"got {len(self.data)}"
            )


def words_of(data: bytes) -> list[int]:
    """Little-endian signed 32-bit words of ``data`` zero-padded to a multiple of 4 bytes."""
    padded = data + b"\x00" * (-len(data) % 4)
    return [
        int.from_bytes(padded[i : i + 4], "little", signed=True) for i in range(0, len(padded), 4)
    ]


_GOLDEN = 0x9E3779B97F4A7C15


def position_tables(n: int, seed: int) -> tuple[list[int], list[int]]:
    """Step 2: ``A`` and odd ``M`` (unsigned 64-bit) for positions ``0 .. n-1``."""
    state = seed & MASK64
    a: list[int] = []
    m: list[int] = []
    for _ in range(n):
        state = (state + _GOLDEN) & MASK64
        a.append(fmix64(state))
        state = (state + _GOLDEN) & MASK64
        m.append(fmix64(state) | 1)
    return a, m


def descriptor(dtype: str, nbytes: int, shape: tuple[int, ...], seed: int) -> int:
    """Step 4 of zkv64: the dtype, byte length and shape, mixed into one 64-bit value."""
    h = fmix64(seed ^ (DTYPE_CODES[dtype] << 56) ^ nbytes)
    for dim in shape:
        h = fmix64(h ^ dim)
    return h


def zkv64(latent: Latent, seed: int) -> int:
    """The zkv64 hash of ``latent`` under ``seed`` (signed 64-bit result)."""
    if not isinstance(latent, Latent):
        raise InputError(f"expected a Latent (bytes, dtype, shape), got {type(latent).__name__}")
    words = words_of(latent.data)
    a, m = position_tables(len(words), seed)
    acc = 0
    for w, a_i, m_i in zip(words, a, m):
        acc = (acc + (((w ^ a_i) & MASK64) * m_i)) & MASK64
    desc = descriptor(latent.dtype, len(latent.data), latent.shape, seed)
    return to_signed(acc + desc)


def zkv64_key(latent: Latent) -> int:
    """The default key of a latent."""
    return zkv64(latent, KEY_SEED)


def zkv64_fingerprint(latent: Latent) -> int:
    """The default fingerprint of a latent: zkv64 under an independent seed."""
    return zkv64(latent, FINGERPRINT_SEED)


def weak_key(latent: Latent) -> int:
    """A deliberately weak key (one of 4 values) for collision tests: byte sum mod 4."""
    if not isinstance(latent, Latent):
        raise InputError(f"expected a Latent (bytes, dtype, shape), got {type(latent).__name__}")
    return sum(latent.data) % 4


def env_key_tag(env_id: int) -> int:
    """The 64-bit tag that binds recurrent keys to environment ``env_id``."""
    return fmix64(SCOPE_KEY_SEED ^ env_id)


def env_fingerprint_tag(env_id: int) -> int:
    """The 64-bit tag that binds recurrent fingerprints to environment ``env_id``."""
    return fmix64(SCOPE_FINGERPRINT_SEED ^ env_id)


def scoped_key(key: int, env_id: int) -> int:
    """Bind ``key`` to an environment: the recurrent pool's key in ``Scope.ENV`` mode.

    ``key XOR env_key_tag(env_id)``: for one environment a bijection (scoping never makes
    two keys of one environment collide); keys of two environments meet only when
    ``k1 ^ k2 == t1 ^ t2``, and a wrong hit also needs the scoped fingerprints to meet.
    """
    return to_signed(to_unsigned(key) ^ env_key_tag(env_id))


def scoped_fingerprint(fingerprint: int | None, env_id: int) -> int:
    """Bind a fingerprint to an environment: ``(fingerprint or 0) XOR env_fingerprint_tag``.

    A missing fingerprint counts as 0, so every recurrent entry and lookup in
    ``Scope.ENV`` carries a fingerprint: even an unverified lookup can never return
    another environment's entry.
    """
    base = 0 if fingerprint is None else to_unsigned(fingerprint)
    return to_signed(base ^ env_fingerprint_tag(env_id))
