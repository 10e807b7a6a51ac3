"""A re-creation of UniZero's LEGACY KV-cache design: the benchmark's baseline and oracle.

This module owns the legacy design as docs/background.md describes it (LightZero's
UniZero world model before its cache manager), rebuilt from that description (no LightZero
code):

* per-slot cache objects shaped like LightZero's `KeysValues`: per layer a K and a V
  `LegacyLayerCache`, each a tensor (n, H, cl, d) plus an int size, tokens left-aligned,
  with the append-overflow rule of `Cache.update`;
* `LegacyPool`: a dict key -> slot, a reverse list slot -> key and a FIFO ring pointer;
  slots are allocated on first use and reused (clearing keeps their tensors);
* `LegacyBackend`: one root pool per environment, one global recurrent pool whose keys carry
  no environment id, `env_num` world-model staging slots, host-side xxHash keys (one
  device->host read per hashed latent), a clone of every hit, per-layer Python copy loops,
  batch assembly by per-layer left padding + concatenation, and the split + window rule per
  layer on store.

It is deliberately as slow as the design it re-creates; do not optimise it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import xxhash

from zerokv.bench.workload import StepOutput, WorkloadConfig

__all__ = [
    "LegacyBackend",
    "LegacyKeysValues",
    "LegacyLayerCache",
    "LegacyLayerKV",
    "LegacyPool",
    "legacy_hash",
]


def legacy_hash(latent: torch.Tensor) -> int:
    """LightZero's `hash_state` key: xxh64 of the latent's float32 bytes, on the host."""
    host = latent.detach().cpu()
    if host.dtype == torch.bfloat16:
        # numpy has no bfloat16; the key is defined on float32 bytes anyway.
        host = host.float()
    array = host.numpy()
    if array.dtype != np.float32:
        array = array.astype(np.float32)
    return xxhash.xxh64(array.tobytes()).intdigest()


class LegacyLayerCache:
    """One side (K or V) of one layer: `cache` (n, H, cap, d), tokens [0, size) valid."""

    __slots__ = ("cache", "size")

    def __init__(self, cache: torch.Tensor) -> None:
        self.cache = cache
        self.size = 0

    @property
    def capacity(self) -> int:
        return int(self.cache.shape[2])

    def update(self, x: torch.Tensor) -> int:
        """Append x (n, H, t, d) at [size, size + t); returns tokens dropped from the front.

        Overflow rule: if size + t > cap, shift left by (size + t - cap) rounded up to even;
        if that is >= size the cache is reset to empty (all `size` tokens dropped).
        """
        t = int(x.shape[2])
        cap = self.capacity
        if t > cap:
            raise ValueError(f"cannot append {t} tokens to a cache of {cap}")
        dropped = 0
        if self.size + t > cap:
            shift = self.size + t - cap
            shift += shift % 2
            if shift >= self.size:
                dropped = self.size
                self.size = 0
            else:
                # LightZero shifts with an overlapping in-place copy, which CUDA does not
                # guarantee; the clone keeps the values the rule intends.
                kept = self.cache[:, :, shift : self.size].clone()
                self.size -= shift
                self.cache[:, :, : self.size] = kept
                dropped = shift
        self.cache[:, :, self.size : self.size + t] = x
        self.size += t
        return dropped


class LegacyLayerKV:
    """K and V caches of one layer."""

    __slots__ = ("k", "v")

    def __init__(self, k: LegacyLayerCache, v: LegacyLayerCache) -> None:
        self.k = k
        self.v = v


class LegacyKeysValues:
    """A KeysValues-like entry: one `LegacyLayerKV` per layer; `size` is layer 0's K size."""

    __slots__ = ("layers",)

    def __init__(self, layers: list[LegacyLayerKV]) -> None:
        self.layers = layers

    @classmethod
    def empty(
        cls,
        n: int,
        num_heads: int,
        capacity: int,
        head_dim: int,
        num_layers: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> LegacyKeysValues:
        """A fresh zero-filled entry of n rows (like `generate_empty_keys_values`)."""
        shape = (n, num_heads, capacity, head_dim)
        return cls(
            [
                LegacyLayerKV(
                    LegacyLayerCache(torch.zeros(shape, device=device, dtype=dtype)),
                    LegacyLayerCache(torch.zeros(shape, device=device, dtype=dtype)),
                )
                for _ in range(num_layers)
            ]
        )

    @classmethod
    def over(cls, buffer: torch.Tensor) -> LegacyKeysValues:
        """An entry whose layer caches are views of buffer [L, 2, n, H, cap, d]."""
        return cls(
            [
                LegacyLayerKV(LegacyLayerCache(buffer[i, 0]), LegacyLayerCache(buffer[i, 1]))
                for i in range(buffer.shape[0])
            ]
        )

    @property
    def size(self) -> int:
        return self.layers[0].k.size

    def copy_from(self, src: LegacyKeysValues) -> None:
        """Per-layer copy of src's tensors and sizes into this entry's own tensors."""
        for dst_layer, src_layer in zip(self.layers, src.layers, strict=True):
            dst_layer.k.cache.copy_(src_layer.k.cache)
            dst_layer.v.cache.copy_(src_layer.v.cache)
            dst_layer.k.size = src_layer.k.size
            dst_layer.v.size = src_layer.v.size

    def clone(self) -> LegacyKeysValues:
        """A deep copy."""
        layers = []
        for layer in self.layers:
            k = LegacyLayerCache(layer.k.cache.clone())
            v = LegacyLayerCache(layer.v.cache.clone())
            k.size = layer.k.size
            v.size = layer.v.size
            layers.append(LegacyLayerKV(k, v))
        return LegacyKeysValues(layers)

    def nbytes(self) -> int:
        total = 0
        for layer in self.layers:
            for side in (layer.k, layer.v):
                total += side.cache.numel() * side.cache.element_size()
        return total


class LegacyPool:
    """A legacy FIFO ring of `capacity` slots.

    A new key takes slot `next_slot`, evicting the key that slot held, and the pointer
    advances modulo capacity; re-storing an existing key overwrites its slot in place and
    leaves the pointer alone; `clear` forgets every key and resets the pointer to 0 but keeps
    the slot tensors for reuse. Slots are allocated by `factory` on first use.
    """

    def __init__(self, capacity: int, factory: Callable[[], LegacyKeysValues]) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self._factory = factory
        self._key_to_slot: dict[int, int] = {}
        self._slot_to_key: list[int | None] = [None] * capacity
        self._slots: list[LegacyKeysValues | None] = [None] * capacity
        self.next_slot = 0

    def __len__(self) -> int:
        return len(self._key_to_slot)

    def __contains__(self, key: int) -> bool:
        return key in self._key_to_slot

    def slot_of(self, key: int) -> int | None:
        return self._key_to_slot.get(key)

    def key_at(self, slot: int) -> int | None:
        return self._slot_to_key[slot]

    def get(self, key: int) -> LegacyKeysValues | None:
        """The stored object itself (callers copy it), or None."""
        slot = self._key_to_slot.get(key)
        return None if slot is None else self._slots[slot]

    def put(self, key: int, kv: LegacyKeysValues) -> int:
        """Copy kv into key's slot (a new key takes the ring's next slot); returns the slot."""
        slot = self._key_to_slot.get(key)
        if slot is None:
            slot = self.next_slot
            old = self._slot_to_key[slot]
            if old is not None:
                del self._key_to_slot[old]
            self.next_slot = (self.next_slot + 1) % self.capacity
        dst = self._slots[slot]
        if dst is None:
            dst = self._factory()
            self._slots[slot] = dst
        dst.copy_from(kv)
        self._key_to_slot[key] = slot
        self._slot_to_key[slot] = key
        return slot

    def clear(self) -> None:
        self._key_to_slot.clear()
        self._slot_to_key = [None] * self.capacity
        self.next_slot = 0

    def allocated_bytes(self) -> int:
        return sum(s.nbytes() for s in self._slots if s is not None)

    def unallocated_slots(self) -> int:
        """Slots whose tensors have not been allocated yet (never used)."""
        return sum(1 for s in self._slots if s is None)


class LegacyBackend:
    """The legacy three-system cache behind the benchmark's `CacheBackend` protocol.

    Pool sizes are the legacy ones: `cfg.root_capacity` slots per environment and
    `cfg.recurrent_capacity` recurrent slots. The batch handed back is a view of a per-batch
    [L, 2, B, H, cl, d] buffer whose per-layer views play the world model's batch
    `KeysValues` (so returning it costs no extra copy), width W = S + 2.
    """

    def __init__(
        self,
        cfg: WorkloadConfig,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        *,
        name: str = "legacy",
    ) -> None:
        self.name = name
        self.cfg = cfg
        self.device = torch.device(device)
        self.dtype = dtype
        self._root_pools = [
            LegacyPool(cfg.root_capacity, self._new_entry) for _ in range(cfg.env_num)
        ]
        self._recurrent = LegacyPool(cfg.recurrent_capacity, self._new_entry)
        self._staging: list[LegacyKeysValues | None] = [None] * cfg.env_num
        self._batches: dict[int, tuple[torch.Tensor, LegacyKeysValues]] = {}
        self._scratch = self._new_entry()
        # The batch entry of the call in progress, which the stores split rows out of.
        self._current = self._scratch
        self._root_hits = 0
        self._recurrent_hits = 0
        self._misses = 0
        self._lookups = 0
        self._host_reads = 0

    # ------------------------------------------------------------------ protocol

    def root_step(
        self,
        env_ids: Sequence[int],
        continuing: torch.Tensor,
        prev_latents: torch.Tensor,
        fresh: torch.Tensor,
        new: torch.Tensor,
        cur_latents: torch.Tensor,
        correction: torch.Tensor,
    ) -> StepOutput:
        flags = [bool(c) for c in continuing.tolist()]
        rows: list[LegacyKeysValues] = []
        for b, env in enumerate(env_ids):
            if not flags[b]:
                rows.append(self._new_entry())
                continue
            self._lookups += 1
            hit = self._root_pools[env].get(self._key(prev_latents[b]))
            if hit is not None:
                self._root_hits += 1
                rows.append(self._stage(b, hit))
            else:
                self._misses += 1
                rows.append(self._fresh_entry(fresh, b))
        out, starts = self._forward(rows, new)
        for b, env in enumerate(env_ids):
            self._store(self._root_pools[env], self._key(cur_latents[b]), b, starts[b], correction)
        return out

    def sim_step(
        self,
        env_ids: Sequence[int],
        parent_latents: torch.Tensor,
        fresh: torch.Tensor,
        new: torch.Tensor,
        child_latents: torch.Tensor,
        correction: torch.Tensor,
    ) -> StepOutput:
        rows: list[LegacyKeysValues] = []
        for b, env in enumerate(env_ids):
            key = self._key(parent_latents[b])
            self._lookups += 1
            hit = self._root_pools[env].get(key)
            if hit is not None:
                self._root_hits += 1
            else:
                hit = self._recurrent.get(key)
                if hit is not None:
                    self._recurrent_hits += 1
            if hit is not None:
                rows.append(self._stage(b, hit))
            else:
                self._misses += 1
                rows.append(self._fresh_entry(fresh, b))
        out, starts = self._forward(rows, new)
        for b in range(len(env_ids)):
            self._store(self._recurrent, self._key(child_latents[b]), b, starts[b], correction)
        return out

    def clear_recurrent(self) -> None:
        self._recurrent.clear()

    def clear_env(self, env_id: int) -> None:
        self._root_pools[env_id].clear()

    def clear_all(self) -> None:
        for pool in self._root_pools:
            pool.clear()
        self._recurrent.clear()

    def hit_counts(self) -> dict[str, int]:
        return {
            "root_hits": self._root_hits,
            "recurrent_hits": self._recurrent_hits,
            "misses": self._misses,
            "lookups": self._lookups,
        }

    def storage_bytes(self) -> int:
        total = sum(p.allocated_bytes() for p in self._root_pools)
        total += self._recurrent.allocated_bytes()
        total += sum(s.nbytes() for s in self._staging if s is not None)
        total += sum(buf.numel() * buf.element_size() for buf, _ in self._batches.values())
        total += self._scratch.nbytes()
        return total

    def stored_entries(self) -> int:
        return sum(len(p) for p in self._root_pools) + len(self._recurrent)

    def steady_state_bytes(self) -> int:
        """`storage_bytes` once every pool slot and staging slot is allocated and the batch
        buffer of `env_num` rows exists: legacy allocates each on its first use, so a short
        run holds only what it reached."""
        entry = self._scratch.nbytes()
        missing = sum(p.unallocated_slots() for p in self._root_pools)
        missing += self._recurrent.unallocated_slots()
        missing += sum(1 for s in self._staging if s is None)
        if self.cfg.env_num not in self._batches:
            missing += self.cfg.env_num
        return self.storage_bytes() + missing * entry

    def host_reads(self) -> int:
        """Latents hashed on the host so far (one device->host read each on CUDA)."""
        return self._host_reads

    # ------------------------------------------------------------------ inspection

    def root_pool(self, env_id: int) -> LegacyPool:
        return self._root_pools[env_id]

    @property
    def recurrent_pool(self) -> LegacyPool:
        return self._recurrent

    # ------------------------------------------------------------------ internals

    def _new_entry(self) -> LegacyKeysValues:
        c = self.cfg
        return LegacyKeysValues.empty(
            1, c.num_heads, c.context_length, c.head_dim, c.num_layers, self.device, self.dtype
        )

    def _key(self, latent: torch.Tensor) -> int:
        self._host_reads += 1
        return legacy_hash(latent)

    def _stage(self, b: int, hit: LegacyKeysValues) -> LegacyKeysValues:
        # The pool hands out its own object; the caller clones it, then the world model
        # copies the clone into its staging slot.
        copy = hit.clone()
        slot = self._staging[b]
        if slot is None:
            slot = self._new_entry()
            self._staging[b] = slot
        slot.copy_from(copy)
        return slot

    def _fresh_entry(self, fresh: torch.Tensor, b: int) -> LegacyKeysValues:
        # A miss re-runs the model on the previous latent alone: a new 1-token entry.
        kv = self._new_entry()
        for i, layer in enumerate(kv.layers):
            layer.k.update(fresh[i, 0, b : b + 1])
            layer.v.update(fresh[i, 1, b : b + 1])
        return kv

    def _batch(self, n: int) -> tuple[torch.Tensor, LegacyKeysValues]:
        found = self._batches.get(n)
        if found is None:
            c = self.cfg
            shape = (c.num_layers, 2, n, c.num_heads, c.context_length, c.head_dim)
            buffer = torch.zeros(shape, device=self.device, dtype=self.dtype)
            found = (buffer, LegacyKeysValues.over(buffer))
            self._batches[n] = found
        return found

    def _forward(
        self, rows: list[LegacyKeysValues], new: torch.Tensor
    ) -> tuple[StepOutput, list[int]]:
        """Assemble the rows left-padded, append `new`; returns the batch and each row's
        first valid column."""
        buffer, batch = self._batch(len(rows))
        self._current = batch
        sizes = [r.size for r in rows]
        longest = max(sizes)
        for i, layer in enumerate(batch.layers):
            for side, dst in enumerate((layer.k, layer.v)):
                if longest > 0:
                    parts = []
                    for row, size in zip(rows, sizes, strict=True):
                        src = row.layers[i].k if side == 0 else row.layers[i].v
                        parts.append(F.pad(src.cache[:, :, :size], (0, 0, longest - size, 0)))
                    dst.cache[:, :, :longest] = torch.cat(parts, dim=0)
                dst.size = longest
        dropped = 0
        for i, layer in enumerate(batch.layers):
            dropped = layer.k.update(new[i, 0])
            layer.v.update(new[i, 1])
        width = batch.size
        starts = [max(longest - size - dropped, 0) for size in sizes]
        lengths = torch.tensor([width - s for s in starts], dtype=torch.int64)
        return StepOutput(buffer[:, :, :, :, :width], lengths), starts

    def _store(
        self, pool: LegacyPool, key: int, b: int, start: int, correction: torch.Tensor
    ) -> None:
        """Split row b out of the current batch, apply the window rule, store it."""
        cl = self.cfg.context_length
        batch = self._current
        width = batch.size
        windowed = width - start >= cl - 1
        for i, (src_layer, dst_layer) in enumerate(
            zip(batch.layers, self._scratch.layers, strict=True)
        ):
            for side, (src, dst) in enumerate(
                ((src_layer.k, dst_layer.k), (src_layer.v, dst_layer.v))
            ):
                row = src.cache[b : b + 1, :, start:width]
                if windowed:
                    # Drop the oldest observation+action pair and re-position the rest.
                    row = row[:, :, 2 : cl - 1] + correction[i, side, :, : cl - 3].unsqueeze(0)
                dst.cache = F.pad(row, (0, 0, 0, cl - row.shape[2]))
                dst.size = int(row.shape[2])
        pool.put(key, self._scratch)
