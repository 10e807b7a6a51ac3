"""Differential machine for the batch rules: ``zerokv.entry`` against ``zerokv_spec.entry``.

The machine keeps one current batch on both sides (a spec ``Batch`` and an implementation
``Batch``) and transforms both with the same rule, comparing the decoded tensors (values,
lengths, width, mask, zero padding) after every step. Rules:

* ``assemble`` - fresh entries (sizes biased to ``cl - 3 .. cl``) at the dynamic width
  (``None``: the longest), the static width ``cl``, or a wider one (even ``cl + 1``);
  a width below the longest entry is refused by both (``BatchError``);
* ``append`` - ``t`` = 1, 2, 3 or ``capacity`` new tokens under the overflow rule with
  the capacity ``cl``, the current width or ``t`` (so the batch is often exactly full,
  one short, or emptied); ``t > capacity`` is refused by both;
* ``remove_registers`` - 0 .. width + 1 columns (over the width: refused by both);
* ``with_length`` - some rows get a new length in -1 .. width + 1 (outside ``[0, width]``:
  refused by both);
* ``split`` / ``store_rows`` of the current batch (width <= cl) with a zero or non-zero
  correction table;
* ``window`` - fresh entries at sizes ``cl - 3 .. cl`` (and any other) through the window
  rule, and ``window(split(batch))``.
"""

from __future__ import annotations

import torch
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import initialize, precondition, rule

import zerokv
from zerokv.entry import plan_rows, write_rows
from zerokv.testing import (
    Shape,
    decode_batch,
    decode_entries,
    encode_correction,
    encode_entries,
    encode_new_tokens,
    run_both,
)
from zerokv.testing.stateful import (
    DiffMachine,
    entry_sizes,
    shapes,
)
from zerokv_spec import entry as spec
from zerokv_spec.entry import Batch, Correction, Entry


class BatchMachine(DiffMachine):
    """Spec batch rules vs implementation batch rules (module docstring)."""

    @initialize(data=st.data(), shape=shapes(), shortcuts=st.booleans())
    def setup(self, data: st.DataObject, shape: Shape, shortcuts: bool) -> None:
        self.shape = shape
        self.use_backend("device" if shortcuts else "device-exact")
        self.batch: Batch | None = None
        self.ibatch: zerokv.Batch | None = None
        self.ready = True
        self.assemble(data, "static")  # there is always a current batch

    # ------------------------------------------------------------------ helpers
    def draw_entries(self, data: st.DataObject, max_rows: int = 5) -> list[Entry]:
        n = data.draw(st.integers(1, max_rows), label="rows")
        cl = self.shape.context_length
        sizes = data.draw(st.lists(entry_sizes(cl), min_size=n, max_size=n), label="sizes")
        return [self.source.entry(self.shape.num_layers, s) for s in sizes]

    def draw_correction(self, data: st.DataObject) -> tuple[Correction, zerokv.Correction]:
        cl, layers = self.shape.context_length, self.shape.num_layers
        if data.draw(st.booleans(), label="zero correction"):
            s = self.shape
            zero = zerokv.Correction.zero(s.num_layers, s.num_heads, s.head_dim, cl)
            return Correction.zero(layers, cl), zero
        value = st.integers(-4, 4).map(float)
        row = st.lists(value, min_size=cl - 3, max_size=cl - 3).map(tuple)
        table = st.lists(row, min_size=layers, max_size=layers).map(tuple)
        correction = Correction(data.draw(table), data.draw(table))
        return correction, encode_correction(correction, self.shape)

    def set_current(self, batch: Batch, ibatch: zerokv.Batch, what: str) -> None:
        got = decode_batch(ibatch, self.shape)
        assert got == batch, f"{what} differs:\n spec {batch}\n impl {got}"
        self.batch, self.ibatch = batch, ibatch

    def check_entries(self, want: tuple[Entry, ...], got: zerokv.Entries, what: str) -> None:
        decoded = decode_entries(got, self.shape)
        assert decoded == want, f"{what} differs:\n spec {want}\n impl {decoded}"

    # ------------------------------------------------------------------ rules
    @precondition(lambda self: self.ready)
    @rule(
        data=st.data(),
        mode=st.sampled_from(["dynamic", "static", "static", "wider", "narrower"]),
    )
    def assemble(self, data: st.DataObject, mode: str) -> None:
        entries = self.draw_entries(data)
        cl = self.shape.context_length
        longest = max(e.size for e in entries)
        width = {
            "dynamic": None,
            "static": cl,
            "wider": longest + data.draw(st.integers(0, cl + 1 - longest)),
            "narrower": longest - 1,
        }[mode]
        ientries = encode_entries(entries, self.shape)
        both = run_both(
            lambda: spec.assemble(entries, width), lambda: zerokv.assemble(ientries, width)
        )
        if both is not None:
            self.set_current(*both, what=f"assemble(width={width})")
        else:
            event("assemble refused (width below the longest entry)")

    @precondition(lambda self: self.ready and self.batch is not None)
    @rule(data=st.data())
    def append(self, data: st.DataObject) -> None:
        batch, ibatch = self.batch, self.ibatch
        assert batch is not None and ibatch is not None
        cl = self.shape.context_length
        t = data.draw(st.sampled_from([1, 2, 3, 1, 2, cl]), label="t")
        capacity = data.draw(
            st.sampled_from([cl, cl, max(1, batch.width), t, max(1, batch.width + t - 1)]),
            label="capacity",
        )
        new_k, new_v = self.source.new_tokens(self.shape.num_layers, batch.rows, t)
        new_kv = encode_new_tokens(new_k, new_v, self.shape)
        event(f"append: drop {spec.overflow_drop(batch.width, t, capacity)} of {batch.width}")
        both = run_both(
            lambda: spec.append(batch, new_k, new_v, capacity),
            lambda: zerokv.append(ibatch, new_kv, capacity),
        )
        if both is not None:
            self.set_current(*both, what=f"append(t={t}, capacity={capacity})")

    @precondition(lambda self: self.ready and self.batch is not None)
    @rule(data=st.data())
    def remove_registers(self, data: st.DataObject) -> None:
        batch, ibatch = self.batch, self.ibatch
        assert batch is not None and ibatch is not None
        count = data.draw(st.integers(0, batch.width + 1), label="registers")
        both = run_both(
            lambda: spec.remove_registers(batch, count),
            lambda: zerokv.remove_registers(ibatch, count),
        )
        if both is not None:
            self.set_current(*both, what=f"remove_registers({count})")

    @precondition(lambda self: self.ready and self.batch is not None)
    @rule(data=st.data())
    def with_length(self, data: st.DataObject) -> None:
        """The model writes fresh tokens into the last ``length`` columns of some rows,
        then those rows get that length (UniZero's miss rows); a length outside
        ``[0, width]`` is refused by both. A verified batch stays verified."""
        batch, ibatch = self.batch, self.ibatch
        assert batch is not None and ibatch is not None
        flags = data.draw(st.lists(st.booleans(), min_size=batch.rows, max_size=batch.rows))
        length = data.draw(st.integers(-1, batch.width + 1), label="length")
        iflags = torch.tensor(flags, dtype=torch.bool)
        if 0 <= length <= batch.width:
            new_k, new_v = self.source.new_tokens(self.shape.num_layers, batch.rows, length)
            new_kv = encode_new_tokens(new_k, new_v, self.shape)
            start = batch.width - length

            def written(
                old: tuple[tuple[tuple[float, ...], ...], ...],
                new: tuple[tuple[tuple[float, ...], ...], ...],
            ) -> tuple[tuple[tuple[float, ...], ...], ...]:
                return tuple(
                    tuple(
                        row[:start] + new[layer][b] if flags[b] else row
                        for b, row in enumerate(old[layer])
                    )
                    for layer in range(len(old))
                )

            batch = Batch(
                written(batch.k, new_k), written(batch.v, new_v), batch.lengths, batch.width
            )
            flagged = iflags.view(1, 1, -1, 1, 1, 1)
            tail = ibatch.kv[:, :, :, :, start:, :]
            tail.copy_(torch.where(flagged, new_kv.to(tail.dtype), tail))
        spec_batch = batch
        both = run_both(
            lambda: spec_batch.with_length(flags, length),
            lambda: ibatch.with_length(iflags, length),
        )
        if both is not None:
            assert both[1].verified == ibatch.verified
            self.set_current(*both, what=f"with_length({flags}, {length})")
        else:
            event("with_length refused (length outside [0, width])")

    @precondition(
        lambda self: (
            self.ready and self.batch is not None and self.batch.width <= self.shape.context_length
        )
    )
    @rule(data=st.data())
    def split_and_store(self, data: st.DataObject) -> None:
        """``split``, ``store_rows`` and ``window(split(batch))`` of the current batch."""
        batch, ibatch = self.batch, self.ibatch
        assert batch is not None and ibatch is not None
        cl = self.shape.context_length
        entries = spec.split(batch)
        isplit = zerokv.split(ibatch, cl)
        self.check_entries(entries, isplit, "split")
        correction, icorrection = self.draw_correction(data)
        stored = spec.store_rows(batch, cl, correction)
        self.check_entries(stored, zerokv.store_rows(ibatch, cl, icorrection), "store_rows")
        # The CPU form the manager's host path uses, where it applies (both destinations).
        plan = plan_rows(ibatch, cl, icorrection)
        event(f"plan_rows: {'planned' if plan is not None else 'general path'}")
        if plan is not None:
            lengths = torch.tensor(plan.out_lengths)
            dest = torch.full_like(ibatch.kv, float("nan"))
            written = write_rows(ibatch, plan, icorrection, dest, lengths)
            assert written.data_ptr() == dest.data_ptr()
            self.check_entries(stored, zerokv.Entries(dest, lengths), "write_rows(dest)")
            fresh = write_rows(ibatch, plan, icorrection, None, lengths)
            self.check_entries(stored, zerokv.Entries(fresh, lengths), "write_rows(None)")
        windowed = tuple(spec.window(e, cl, correction) for e in entries)
        self.check_entries(windowed, zerokv.window(isplit, icorrection), "window(split)")
        for e in entries:
            event("store: " + ("windowed" if e.size >= cl - 1 else "kept"))

    @precondition(lambda self: self.ready)
    @rule(data=st.data())
    def window(self, data: st.DataObject) -> None:
        entries = self.draw_entries(data)
        correction, icorrection = self.draw_correction(data)
        cl = self.shape.context_length
        want = tuple(spec.window(e, cl, correction) for e in entries)
        got = zerokv.window(encode_entries(entries, self.shape), icorrection)
        self.check_entries(want, got, "window")
        # The rule is idempotent only below cl - 1: a second pass must agree as well.
        again = tuple(spec.window(e, cl, correction) for e in want)
        self.check_entries(again, zerokv.window(got, icorrection), "window twice")
        assert torch.equal(got.lengths, torch.tensor([e.size for e in want], dtype=torch.int64))


TestBatchRules = BatchMachine.TestCase
