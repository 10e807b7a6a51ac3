"""Collision safety under a deliberately weak hash: zero wrong entries, spec agreeing.

The implementation manager runs with ``key_fn=zerokv.keys.weak_keys`` (byte sum mod 4:
only 4 distinct keys) and real fingerprints (``keys_and_fingerprints`` via
``CacheManager.keys_of``); the spec manager gets the same keys and fingerprints computed
by ``zerokv_spec.keys.weak_key`` / ``zkv64_fingerprint`` on the latents' bytes (checked
equal at set-up). The latents come from a small set of six, so several share a key.

Besides the spec comparison (tier, slot, collided flag, K/V, the invariant over every
pool), the machine keeps its own model: the latest entry stored for every (tier, scope,
latent). Every lookup passes the real fingerprints, and every hit must return exactly
that latest entry of the *looked-up* latent - never the entry of another latent sharing
its key. Rules: ``lookup`` (hierarchical / root / recurrent), ``store`` (``store_*_many``,
some rows without a fingerprint), ``expand`` (lookup, gather, append, window rule,
``store_*_batch``) and the clears; both scopes, every policy and index backend.
"""

from __future__ import annotations

from collections import Counter

import torch
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, precondition, rule

import zerokv
from zerokv.keys import weak_keys
from zerokv.testing import (
    Shape,
    assert_same_manager,
    decode_batch,
    decode_entries,
    encode_entries,
    encode_new_tokens,
    run_both,
)
from zerokv.testing.stateful import (
    BACKENDS,
    DiffMachine,
    assert_put_results,
    cache_config,
    clear_both,
    entry_sizes,
    shapes,
)
from zerokv_spec import entry as spec_entry
from zerokv_spec.entry import Correction, Entry
from zerokv_spec.keys import Latent, weak_key, zkv64_fingerprint
from zerokv_spec.manager import CacheManager, Scope, Tier
from zerokv_spec.manager import TierLookup as SpecTierLookup
from zerokv_spec.pool import Policy

LATENT_VALUES = st.sampled_from([0.0, 1.0, 2.0, -1.0, 0.5, 3.0])
NUM_LATENTS = 6
LATENT_DIM = 3


class WeakHashMachine(DiffMachine):
    """Weak keys, real fingerprints: no wrong entry ever (module docstring)."""

    @initialize(
        shape=shapes((4, 5, 6)),
        policy=st.sampled_from(list(Policy)),
        scope=st.sampled_from(list(Scope)),
        root_capacity=st.sampled_from([1, 2, 3]),
        recurrent_capacity=st.sampled_from([2, 3, 4]),
        backend=st.sampled_from(BACKENDS),
        latents=st.lists(
            st.tuples(*[LATENT_VALUES] * (LATENT_DIM - 1)),
            min_size=NUM_LATENTS,
            max_size=NUM_LATENTS,
        ),
    )
    def setup(
        self,
        shape: Shape,
        policy: Policy,
        scope: Scope,
        root_capacity: int,
        recurrent_capacity: int,
        backend: str,
        latents: list[tuple[float, ...]],
    ) -> None:
        self.shape = shape
        self.scope = scope
        config = cache_config(
            shape,
            2,
            root_capacity=root_capacity,
            recurrent_capacity=recurrent_capacity,
            policy=policy,
            scope=scope,
            index=self.use_backend(backend),
        )
        self.impl = zerokv.CacheManager(config, key_fn=weak_keys)
        self.spec = CacheManager(config.spec_config())
        # The first coordinate makes the six latents distinct; their keys still collide.
        rows = [(float(i), *rest) for i, rest in enumerate(latents)]
        self.latents = torch.tensor(rows, dtype=torch.float32)
        keys, fps = self.impl.keys_of(self.latents)
        self.ikeys, self.ifps = keys, fps
        spec_latents = [
            Latent(row.numpy().tobytes(), "float32", (LATENT_DIM,)) for row in self.latents
        ]
        self.keys = [weak_key(x) for x in spec_latents]
        self.fps = [zkv64_fingerprint(x) for x in spec_latents]
        assert keys.tolist() == self.keys, f"weak keys: spec {self.keys} impl {keys.tolist()}"
        assert fps.tolist() == self.fps, "fingerprints differ from zkv64_fingerprint"
        assert max(Counter(self.keys).values()) >= 2, "six latents, four keys: some must share"
        self.latest: dict[tuple[Tier, int, int], Entry] = {}
        self.ready = True

    # ------------------------------------------------------------------ helpers
    def scope_of(self, tier: Tier, env: int) -> int:
        return env if tier is Tier.ROOT or self.scope is Scope.ENV else -1

    def draw_rows(self, data: st.DataObject, max_rows: int) -> list[tuple[int, int]]:
        n = data.draw(st.integers(1, max_rows), label="rows")
        row = st.tuples(st.integers(0, 1), st.integers(0, NUM_LATENTS - 1))
        return data.draw(st.lists(row, min_size=n, max_size=n), label="(env, latent) rows")

    def tensors(self, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and fingerprints as the implementation computes them for these latents."""
        keys, fps = self.impl.keys_of(self.latents[torch.tensor(ids, dtype=torch.int64)])
        return keys, fps

    def do_lookup(
        self, data: st.DataObject, max_rows: int
    ) -> tuple[list[tuple[int, int]], list[SpecTierLookup], zerokv.TierLookup]:
        rows = self.draw_rows(data, max_rows)
        tiers = data.draw(st.sampled_from(["hierarchical", "root", "recurrent"]))
        envs = [e for e, _ in rows]
        ids = [i for _, i in rows]
        keys, fps = self.tensors(ids)
        spec = self.spec.lookup_many(
            envs, [self.keys[i] for i in ids], [self.fps[i] for i in ids], tiers
        )
        found = self.impl.lookup_many(envs, keys, fps, None, tiers)
        want = [(int(r.tier), -1 if r.slot is None else r.slot, r.collided) for r in spec]
        got = list(
            zip(
                found.tier.tolist(), found.slot.tolist(), [bool(c) for c in found.collided.tolist()]
            )
        )
        assert got == want, f"lookup (tier, slot, collided):\n spec {want}\n impl {got}"
        read = decode_entries(self.impl.read(found), self.shape)
        for (env, latent), r, entry in zip(rows, spec, read):
            if r.tier is Tier.MISS:
                event("miss (collided)" if r.collided else "miss")
                assert entry == Entry.empty(self.shape.num_layers)
                continue
            event(f"hit {r.tier.name}")
            latest = self.latest.get((r.tier, self.scope_of(r.tier, env), latent))
            assert latest is not None, f"a hit for latent {latent} that was never stored there"
            assert entry == latest, (
                f"WRONG ENTRY for latent {latent} (env {env}, {r.tier.name}):\n"
                f" latest stored {latest}\n returned {entry}"
            )
            assert r.entry == latest, "the spec returned a wrong entry"
        return rows, spec, found

    def record(self, tier: Tier, rows: list[tuple[int, int]], entries: list[Entry]) -> None:
        for (env, latent), entry in zip(rows, entries):
            self.latest[(tier, self.scope_of(tier, env), latent)] = entry

    # ------------------------------------------------------------------ rules
    @precondition(lambda self: self.ready)
    @rule(data=st.data())
    def lookup(self, data: st.DataObject) -> None:
        self.do_lookup(data, 6)

    @precondition(lambda self: self.ready)
    @rule(data=st.data(), tier=st.sampled_from([Tier.ROOT, Tier.RECURRENT]))
    def store(self, data: st.DataObject, tier: Tier) -> None:
        rows = self.draw_rows(data, 5)
        envs = [e for e, _ in rows]
        ids = [i for _, i in rows]
        keys, fps = self.tensors(ids)
        has = data.draw(
            st.lists(st.booleans() | st.just(True), min_size=len(rows), max_size=len(rows))
        )
        has_t = torch.tensor(has, dtype=torch.bool)
        spec_fps = [self.fps[i] if h else None for i, h in zip(ids, has)]
        cl = self.shape.context_length
        entries = [
            self.source.entry(self.shape.num_layers, data.draw(entry_sizes(cl))) for _ in rows
        ]
        ientries = encode_entries(entries, self.shape)
        spec_keys = [self.keys[i] for i in ids]
        if tier is Tier.ROOT:
            spec_out = self.spec.store_root_many(envs, spec_keys, entries, spec_fps)
            out = self.impl.store_root_many(envs, keys, ientries, fps, has_t)
        else:
            spec_out = self.spec.store_recurrent_many(envs, spec_keys, entries, spec_fps)
            out = self.impl.store_recurrent_many(envs, keys, ientries, fps, has_t)
        assert_put_results(spec_out, out)
        self.record(tier, rows, entries)

    @precondition(lambda self: self.ready)
    @rule(data=st.data(), tier=st.sampled_from([Tier.ROOT, Tier.RECURRENT]))
    def expand(self, data: st.DataObject, tier: Tier) -> None:
        """Lookup -> gather -> append -> window rule + ``store_*_batch`` of child latents."""
        rows, spec_found, found = self.do_lookup(data, 4)
        cl = self.shape.context_length
        batch = self.spec.gather(spec_found, cl)
        ibatch = self.impl.gather(found)
        assert decode_batch(ibatch, self.shape) == batch, "gather differs"
        t = data.draw(st.integers(1, 2))
        new_k, new_v = self.source.new_tokens(self.shape.num_layers, len(rows), t)
        batch = spec_entry.append(batch, new_k, new_v, cl)
        ibatch = zerokv.append(ibatch, encode_new_tokens(new_k, new_v, self.shape), cl)
        assert decode_batch(ibatch, self.shape) == batch, "append differs"
        envs = [e for e, _ in rows]
        children = data.draw(
            st.lists(st.integers(0, NUM_LATENTS - 1), min_size=len(rows), max_size=len(rows))
        )
        keys, fps = self.tensors(children)
        zero = Correction.zero(self.shape.num_layers, cl)
        s = self.shape
        izero = zerokv.Correction.zero(s.num_layers, s.num_heads, s.head_dim, cl)
        spec_keys = [self.keys[i] for i in children]
        spec_fps: list[int | None] = [self.fps[i] for i in children]
        if tier is Tier.ROOT:
            both = run_both(
                lambda: self.spec.store_root_batch(envs, spec_keys, batch, zero, spec_fps),
                lambda: self.impl.store_root_batch(envs, keys, ibatch, izero, fps),
            )
        else:
            both = run_both(
                lambda: self.spec.store_recurrent_batch(envs, spec_keys, batch, zero, spec_fps),
                lambda: self.impl.store_recurrent_batch(envs, keys, ibatch, izero, fps),
            )
        assert both is not None
        assert_put_results(*both)
        stored = list(spec_entry.store_rows(batch, cl, zero))
        self.record(tier, list(zip(envs, children)), stored)

    @precondition(lambda self: self.ready)
    @rule(data=st.data(), which=st.sampled_from(["env", "roots", "recurrent", "all"]))
    def clear(self, data: st.DataObject, which: str) -> None:
        env = data.draw(st.integers(0, 1)) if which == "env" else 0
        clear_both(self.spec, self.impl, which, env)

    @precondition(lambda self: self.ready)
    @invariant()
    def same_state(self) -> None:
        assert_same_manager(self.spec, self.impl, self.shape)


TestWeakHash = WeakHashMachine.TestCase
