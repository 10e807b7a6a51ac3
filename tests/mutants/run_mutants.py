"""Mutation testing of the differential suite: planted bugs in ``impl/zerokv`` must be caught.

Usage (``nox -s mutants`` runs it from the repository root)::

    python tests/mutants/run_mutants.py [--jobs N] [--timeout SECONDS] [-k NAME ...] [--list]

Every mutant is a list of exact-string replacements in ``impl/zerokv``; each string must
occur exactly once in its file (checked in the repository first: a stale mutant is an
error, not a silent survivor). For each mutant the script copies ``impl/``, ``spec/``,
``tests/`` and ``pyproject.toml`` to a temporary directory, applies the replacements there
(the working tree is never touched) and runs the differential tests
(``tests/differential/test_diff_*.py``, without the ``compiled`` ones) with ``pytest -x -q`` under
``HYPOTHESIS_PROFILE=ci`` and a timeout, the machines most likely to catch the bug first.
A mutant is *killed* when pytest exits non-zero (a timeout counts as killed and is marked
so), *survived* otherwise. An unmutated baseline copy runs too and must pass, so that a
broken copy cannot pass for a killing suite.

The copies run the ``ci`` profile without Hypothesis' shrinking phase (a small
``conftest.py`` added to the copy): the first failure is the verdict, and shrinking a
stateful failure can take minutes.

Prints a table; exits 0 when every mutant was killed and the baseline passed, 1 when a
mutant survived, 2 when a mutant string does not match, the copy would not be the code
imported (checked per run), or the baseline failed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DIFF_DIR = Path("tests") / "differential"

#: Added to each copy: the loaded (ci) profile without shrinking and without a database.
NO_SHRINK_CONFTEST = '''"""Added by run_mutants.py: the current profile without shrinking."""

from hypothesis import Phase, settings

settings.register_profile(
    "mutants",
    settings(settings.default, phases=[Phase.explicit, Phase.generate], database=None),
)
settings.load_profile("mutants")
'''


@dataclass(frozen=True)
class Edit:
    """Replace ``old`` (which must occur exactly once) by ``new`` in ``path``."""

    path: str
    old: str
    new: str


@dataclass(frozen=True)
class Mutant:
    name: str
    description: str
    edits: tuple[Edit, ...]
    #: Test files to run first (the differential tests follow): a file name in
    #: ``tests/differential``, or a path from the repository root.
    first: tuple[str, ...]


INDEX = "impl/zerokv/index/device.py"
HOST = "impl/zerokv/index/host.py"
ENTRY = "impl/zerokv/entry.py"
SLAB = "impl/zerokv/slab.py"
MANAGER = "impl/zerokv/manager.py"
GUARD = "impl/zerokv/guard.py"
POOL = "impl/zerokv/pool.py"
SPEC_POOL = "spec/zerokv_spec/pool.py"
ROWS = "impl/zerokv/rows.py"
KEYS_MOD = "impl/zerokv/keys.py"
RELIABILITY_T = "tests/test_reliability.py"
POOL_T, MANAGER_T, BATCH_T = "test_diff_pool.py", "test_diff_manager.py", "test_diff_batch.py"
ERRORS_T, WEAK_T = "test_diff_errors.py", "test_diff_weak_hash.py"
SEARCH_T, PADDING_T = "test_diff_search.py", "test_diff_padding.py"

MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "with-length-keeps-padding",
        "Batch.with_length: a shrunk row keeps its dropped tokens as non-zero padding",
        (
            Edit(
                ENTRY,
                "self.kv.view(ints).bitwise_and_(bits.view(1, 1, self.rows, 1, self.width, 1))",
                "pass",
            ),
        ),
        (BATCH_T,),
    ),
    Mutant(
        "fifo-ring-off-by-one",
        "FIFOIndex: the ring pointer advances one slot too far after a batch that inserted",
        (
            Edit(
                INDEX,
                "next_slot.add_(advance).remainder_(cap)",
                "next_slot.add_(advance + (advance > 0).long()).remainder_(cap)",
            ),
        ),
        (POOL_T,),
    ),
    Mutant(
        "fifo-missed-eviction-flag",
        "FIFOIndex: an insert into an occupied slot is not flagged as an eviction",
        (
            Edit(
                INDEX,
                "evicted_mask = new & (lapped | occupied.index_select(0, flat))",
                "evicted_mask = new & lapped",
            ),
        ),
        (POOL_T,),
    ),
    Mutant(
        "lru-evicts-most-recent",
        "LRUIndex: the victim is the most recently used key (argmax instead of argmin)",
        (
            Edit(
                INDEX,
                "return self._grid(self.last_use).index_select(0, pool_id).argmin(dim=1)",
                "return self._grid(self.last_use).index_select(0, pool_id).argmax(dim=1)",
            ),
        ),
        (POOL_T,),
    ),
    Mutant(
        "priority-tie-newest",
        "PriorityIndex: priority ties evict the newest insertion instead of the oldest",
        (
            Edit(
                INDEX,
                "return torch.where(lowest, age, big).argmin(dim=1)",
                "return torch.where(lowest, -age, big).argmin(dim=1)",
            ),
        ),
        (POOL_T,),
    ),
    Mutant(
        "fit-width-wrong-side",
        "_fit_width keeps the leftmost columns (cuts the real tokens, keeps the padding)",
        (
            Edit(
                ENTRY,
                "return kv[:, :, :, :, have - width :, :]",
                "return kv[:, :, :, :, :width, :]",
            ),
        ),
        (BATCH_T,),
    ),
    Mutant(
        "stale-slab-lengths",
        "write_rows_at (the slab scatter): lengths not written (slots keep their old lengths)",
        (
            Edit(
                SLAB,
                "stored_lengths.index_copy_(0, slots, lengths)",
                "stored_lengths.index_copy_(0, slots, stored_lengths.index_select(0, slots))",
            ),
        ),
        (POOL_T,),
    ),
    Mutant(
        "window-correction-dropped",
        "window rule: the correction table is not added",
        (
            Edit(
                ENTRY,
                "torch.addcmul(moved, padded",
                "torch.addcmul(moved, 0 * padded",
            ),
        ),
        (BATCH_T,),
    ),
    Mutant(
        "window-threshold-cl",
        "window rule applied from cl tokens instead of cl - 1",
        (Edit(ENTRY, "windowed = sizes >= cl - 1", "windowed = sizes >= cl"),),
        (BATCH_T,),
    ),
    Mutant(
        "first-writer-wins",
        "SlotIndex: a batch's duplicate writes keep the first row's data, not the last",
        (
            Edit(
                INDEX,
                "after = same_pool & (idx.unsqueeze(0) > idx.unsqueeze(1))",
                "after = same_pool & (idx.unsqueeze(0) < idx.unsqueeze(1))",
            ),
        ),
        (POOL_T,),
    ),
    Mutant(
        "fifo-plain-first-writer-wins",
        "fifo_put's closed form: the first of a batch's same-key rows is written, not the last",
        (
            Edit(
                INDEX,
                "superseded = superseded_rows(later, flat) if fold else same_key_before.any(dim=0)",
                "superseded = superseded_rows(later, flat) if fold else same_key_before.any(dim=1)",
            ),
        ),
        (POOL_T,),
    ),
    Mutant(
        "fifo-plain-repeat-takes-latest",
        "fifo_plain: a repeated key takes the slot of its latest earlier row, not its first",
        (
            Edit(
                INDEX,
                "repeat, earliest = same_key_before.max(dim=1)",
                "repeat, earliest = same_key_before.any(dim=1), same_key_before.shape[1] - 1 "
                "- same_key_before.flip(1).to(torch.int8).argmax(dim=1)",
            ),
        ),
        ("tests/test_index_backends.py", POOL_T),
    ),
    Mutant(
        "collision-as-hit",
        "SlotIndex.lookup: a fingerprint mismatch is returned as a hit",
        (
            Edit(
                INDEX,
                "hit, collision = found & verified, found > verified",
                "hit, collision = found, found > verified",
            ),
        ),
        (WEAK_T, POOL_T),
    ),
    Mutant(
        "manager-stats-double-count",
        "CacheManager.stats: root hits are counted as recurrent hits as well",
        (
            Edit(
                MANAGER,
                "recurrent_hits = self.recurrent.stats(None).hits",
                "recurrent_hits = self.recurrent.stats(None).hits + root_hits",
            ),
        ),
        (MANAGER_T,),
    ),
    Mutant(
        "env-scope-ignored",
        "SlotIndex: recurrent keys bound to env 0 whatever the row's env (Scope.ENV)",
        (
            Edit(
                INDEX,
                "key_tag = self._tags[0].index_select(0, envs)",
                "key_tag = self._tags[0].index_select(0, torch.zeros_like(envs))",
            ),
        ),
        (MANAGER_T,),
    ),
    Mutant(
        "append-unclamped-lengths",
        "append: row lengths not clamped to the kept width after the overflow drop",
        (
            Edit(
                ENTRY,
                "return Batch(grown, batch.lengths.clamp(max=kept) + t, batch.verified)",
                "return Batch(grown, batch.lengths + t, batch.verified)",
            ),
        ),
        (BATCH_T,),
    ),
    Mutant(
        "registers-keep-lengths",
        "remove_registers: row lengths not reduced by the register count",
        (
            Edit(
                ENTRY,
                "(batch.lengths - count).clamp(min=0)",
                "batch.lengths.clamp(max=width)",
            ),
        ),
        (BATCH_T,),
    ),
    Mutant(
        "clear-keeps-fifo-pointer",
        "FIFOIndex: clearing one pool does not reset its ring pointer",
        (Edit(INDEX, "self.next[pool_id] = 0", "self.next[pool_id] = self.next[pool_id]"),),
        (POOL_T, MANAGER_T),
    ),
    Mutant(
        "host-fifo-advance-two",
        "HostIndex: the FIFO ring pointer advances by two per insert",
        (
            Edit(
                HOST,
                "self.next[p] = (self.next[p] + 1) % self.capacity",
                "self.next[p] = (self.next[p] + 2) % self.capacity",
            ),
        ),
        (POOL_T,),
    ),
    Mutant(
        "host-first-writer-wins",
        "HostIndex: a batch's duplicate writes keep the first row's data, not the last",
        (Edit(HOST, "writer[(p, slot)] = b", "writer.setdefault((p, slot), b)"),),
        (POOL_T,),
    ),
    Mutant(
        "host-collisions-uncounted",
        "HostIndex: fingerprint mismatches are not counted as collisions",
        (Edit(HOST, "stats[_C] += slot is not None", "stats[_C] += 0"),),
        (POOL_T,),
    ),
    Mutant(
        "host-lookup-collision-lost",
        "HostIndex tier lookup: a recurrent fingerprint mismatch is not reported as collided",
        (Edit(HOST, "found.collided[b] = True", "found.collided[b] = code == 1"),),
        (MANAGER_T, WEAK_T),
    ),
    Mutant(
        "host-store-slice-shifted",
        "Slab.store: a contiguous store lands one slot after its targets",
        (
            Edit(
                SLAB,
                "self.kv[:, :, first : first + rows], lengths)",
                "self.kv[:, :, first + 1 : first + rows + 1], lengths)",
            ),
        ),
        (SEARCH_T,),
    ),
    Mutant(
        "host-store-correction-everywhere",
        "write_rows: a mixed batch adds the correction to every row, windowed or not",
        (
            Edit(
                ENTRY,
                "out.addcmul_(correction.padded, weight.view(1, 1, rows, 1, 1, 1))",
                "out.add_(correction.padded)",
            ),
        ),
        (BATCH_T, MANAGER_T),
    ),
    Mutant(
        "gather-append-unclamped",
        "gather_append / gather_reserve: row lengths not clamped to the kept columns",
        (
            Edit(
                SLAB,
                "return out, lengths.clamp(max=kept) + t",
                "return out, lengths + t",
            ),
        ),
        (SEARCH_T, MANAGER_T),
    ),
    Mutant(
        "gather-reserve-unzeroed",
        "gather_reserve: the reserved columns keep whatever the new buffer held",
        (
            Edit(
                SLAB,
                "            tail.zero_()",
                "            pass",
            ),
        ),
        (MANAGER_T,),
    ),
    Mutant(
        "store-mask-multiplies",
        "stores zero the padding with a 0/1 multiply (NaN * 0 stays NaN) instead of bits",
        (
            Edit(
                ENTRY,
                "return torch.bitwise_and(kv.view(ints), bits).view(kv.dtype)",
                "return kv * (bits != 0).to(kv.dtype)",
            ),
            Edit(
                ENTRY,
                "torch.bitwise_and(kv.view(ints), bits, out=dest.view(ints))",
                "torch.mul(kv, (bits != 0).to(kv.dtype), out=dest)",
            ),
        ),
        (PADDING_T,),
    ),
    Mutant(
        "env-range-off-by-one",
        "validate: env id == env_num accepted",
        (Edit(ROWS, "if not 0 <= e < env_num", "if not 0 <= e <= env_num"),),
        (ERRORS_T,),
    ),
    Mutant(
        "unchecked-lengths",
        "lengths of a batch or entries made outside zerokv are stored unchecked",
        (
            Edit(
                ENTRY,
                "    if not value.verified and _out_of_range(value.lengths, value.width):",
                "    if False:",
            ),
        ),
        (RELIABILITY_T, ERRORS_T),
    ),
    Mutant(
        "stale-lookup-accepted",
        "CacheManager: a lookup older than the last store or clear is gathered anyway",
        (
            Edit(
                MANAGER,
                "if found.owner != self._owner or found.generation != self.generation:",
                "if found.owner != self._owner:",
            ),
        ),
        (RELIABILITY_T, MANAGER_T),
    ),
    Mutant(
        "concurrent-use-waits",
        "CacheManager: a second thread waits for the lock instead of being refused",
        (
            Edit(
                GUARD,
                "if not self._busy.acquire(blocking=False):",
                "if not self._busy.acquire(blocking=True):",
            ),
        ),
        (RELIABILITY_T,),
    ),
    Mutant(
        "pool-generation-not-bumped",
        "SlotPool: a store or clear through a tier does not start a new generation",
        (
            Edit(
                POOL,
                "        if rows:\n            self.generation += 1",
                "        if False:\n            pass",
            ),
        ),
        (RELIABILITY_T,),
    ),
    Mutant(
        "spec-peek-fingerprint-unchecked",
        "zerokv_spec: peek (and so peek_many) accepts a fingerprint that is not a 64-bit int",
        (
            Edit(
                SPEC_POOL,
                'no statistics, no recency."""\n        check_key(key)\n'
                "        _check_fingerprint(fingerprint)",
                'no statistics, no recency."""\n        check_key(key)',
            ),
        ),
        ("tests/test_spec_properties.py",),
    ),
    Mutant(
        "correction-edit-ignored",
        "Correction: an in-place edit of the table is ignored (the first derivation kept)",
        (Edit(ENTRY, "        if self._version[0] != self.table._version:", "        if False:"),),
        (RELIABILITY_T,),
    ),
    Mutant(
        "zero-row-keys",
        "key functions reshape with -1 (ambiguous, fails) for zero-row latents",
        (
            Edit(
                KEYS_MOD,
                "return latents.reshape(latents.shape[0], math.prod(latents.shape[1:]))",
                "return latents.reshape(latents.shape[0], -1)",
            ),
        ),
        (RELIABILITY_T,),
    ),
    Mutant(
        "shadow-entry-at-kv-unchecked",
        "ShadowManager.entry_at: the K/V comparison is gone (the issue's example)",
        (
            Edit(
                "impl/zerokv/shadow.py",
                '_same_tensor(op, f"K/V in slot {slot}", entries.kv[:, :, 0], stored.kv)',
                "pass",
            ),
        ),
        ("tests/test_shadow.py",),
    ),
)


@dataclass(frozen=True)
class Outcome:
    name: str
    killed: bool
    timed_out: bool
    seconds: float
    detail: str
    invalid: bool = False  # the run did not test the copy (a string or an import problem)


#: Prints where ``zerokv`` / ``zerokv_spec`` would be imported from, without importing them.
WHERE = (
    "import importlib.util as u; "
    "print(u.find_spec('zerokv').origin); print(u.find_spec('zerokv_spec').origin)"
)


def check_strings(mutants: Sequence[Mutant]) -> list[str]:
    """Problems with the mutants' strings in the repository (empty: all match once)."""
    problems = []
    for m in mutants:
        for e in m.edits:
            path = ROOT / e.path
            if not path.exists():
                problems.append(f"{m.name}: {e.path} does not exist")
                continue
            count = path.read_text().count(e.old)
            if count != 1:
                problems.append(f"{m.name}: {e.old!r} occurs {count} times in {e.path}")
    return problems


def diff_tests() -> list[str]:
    return sorted(p.name for p in (ROOT / DIFF_DIR).glob("test_diff_*.py"))


def make_copy(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", ".hypothesis", ".pytest_cache", "*.pyc")
    for name in ("impl", "spec", "tests"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")
    (dest / DIFF_DIR / "conftest.py").write_text(NO_SHRINK_CONFTEST)


def run_one(mutant: Mutant | None, timeout: float) -> Outcome:
    """Run the differential tests on a mutated copy (``None``: the unmutated baseline)."""
    name = mutant.name if mutant is not None else "baseline (no mutation)"
    with tempfile.TemporaryDirectory(prefix="zerokv-mutant-") as tmp:
        dest = Path(tmp)
        make_copy(dest)
        first: tuple[str, ...] = ()
        if mutant is not None:
            for e in mutant.edits:
                path = dest / e.path
                text = path.read_text()
                if text.count(e.old) != 1:
                    return Outcome(name, False, False, 0.0, f"no match: {e.old!r}", True)
                path.write_text(text.replace(e.old, e.new))
            first = mutant.first
        order = [*first, *(t for t in diff_tests() if t not in first)]
        files = [t if "/" in t else str(DIFF_DIR / t) for t in order]
        env = dict(os.environ)
        env.update(
            HYPOTHESIS_PROFILE="ci",
            PYTHONPATH=os.pathsep.join([str(dest / "spec"), str(dest / "impl")]),
            PYTHONDONTWRITEBYTECODE="1",
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
        )
        where = subprocess.run(
            [sys.executable, "-c", WHERE], cwd=dest, env=env, capture_output=True, text=True
        )
        origins = where.stdout.split()
        if len(origins) != 2 or not all(Path(o).is_relative_to(dest) for o in origins):
            return Outcome(name, False, False, 0.0, f"imports not from the copy: {origins}", True)
        # Not the compiled machines: they check compiled code against the spec (nox -s
        # compiled); the mutants are in the kernels both paths share, caught eagerly.
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
        cmd += ["-m", "not compiled", *files]
        start = time.monotonic()
        try:
            proc = subprocess.run(
                cmd, cwd=dest, env=env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return Outcome(name, True, True, time.monotonic() - start, f"timeout {timeout:.0f}s")
        seconds = time.monotonic() - start
        lines = (proc.stdout + proc.stderr).splitlines()
        failed = [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))]
        detail = failed[0] if failed else (lines[-1] if lines else "")
        return Outcome(name, proc.returncode != 0, False, seconds, detail[:110])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant")
    parser.add_argument("-k", dest="names", action="append", help="run only these mutants")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args(argv)

    mutants = [m for m in MUTANTS if not args.names or m.name in args.names]
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:28} {m.description}")
        return 0
    problems = check_strings(mutants)
    if problems:
        print("mutation strings that do not match exactly once:", *problems, sep="\n  ")
        return 2
    if not mutants:
        print("no mutant selected")
        return 2

    start = time.monotonic()
    jobs: list[Mutant | None] = [None, *mutants]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        outcomes = list(pool.map(lambda m: run_one(m, args.timeout), jobs))
    baseline, results = outcomes[0], outcomes[1:]

    width = max(len(r.name) for r in outcomes)
    print(f"\n{'mutant':{width}}  {'result':16}  {'secs':>6}  first failure")
    print(f"{'-' * width}  {'-' * 16}  {'-' * 6}  {'-' * 40}")
    for r in results:
        verdict = "KILLED (timeout)" if r.timed_out else "killed" if r.killed else "SURVIVED"
        verdict = "INVALID" if r.invalid else verdict
        print(f"{r.name:{width}}  {verdict:16}  {r.seconds:6.1f}  {r.detail}")
    base = "FAILED" if baseline.killed or baseline.invalid else "passed"
    print(f"{baseline.name:{width}}  {base:16}  {baseline.seconds:6.1f}  {baseline.detail}")
    killed = sum(r.killed and not r.invalid for r in results)
    print(f"\nkilled {killed}/{len(results)} mutants in {time.monotonic() - start:.0f}s")
    if baseline.killed or baseline.invalid:
        print("the unmutated baseline failed: the verdicts above mean nothing")
        return 2
    if any(r.invalid for r in results):
        print("some mutants could not be tested (see INVALID above)")
        return 2
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
