"""The CrossHair drivers of ``zerokv_spec.drivers`` bite: planted bugs are reported.

Each test copies the spec package into a temporary directory under its own name, plants
one bug with a string replacement that must match exactly once, and runs
``crosshair check --analysis_kind=PEP316`` on one targeted driver with ``PYTHONPATH``
pointing at the copy. A planted bug must give exit code 1 and a counterexample naming the
driver, located in the driver's module; the unmodified spec must give exit code 0 on the
same drivers. A last test keeps the ``crosshair`` nox session's targets in step with the
driver modules.

CrossHair settings are those of the ``crosshair`` nox session (``noxfile.py``). The
CrossHair runs are skipped when CrossHair is not installed.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC_PACKAGE = ROOT / "spec" / "zerokv_spec"
DRIVERS = SPEC_PACKAGE / "drivers"

#: The ``crosshair`` session's limits (keep in step with ``noxfile.py``).
CROSSHAIR_OPTIONS = (
    "--analysis_kind=PEP316",
    "--per_condition_timeout=20",
    "--per_path_timeout=3",
    "--max_uninteresting_iterations=40",
)
#: Hard wall-clock limits (seconds) of one CrossHair run.
MUTANT_TIMEOUT = 60
CLEAN_TIMEOUT = 150


def crosshair_command() -> list[str] | None:
    """How to run CrossHair here: this interpreter's module, else the executable on PATH."""
    if importlib.util.find_spec("crosshair") is not None:
        return [sys.executable, "-m", "crosshair"]
    executable = shutil.which("crosshair")
    return [executable] if executable else None


CROSSHAIR = crosshair_command()
needs_crosshair = pytest.mark.skipif(
    CROSSHAIR is None, reason="CrossHair is not installed (pip install crosshair-tool==0.0.113)"
)


@dataclass(frozen=True)
class Mutant:
    name: str
    module: str  # file inside zerokv_spec/
    old: str
    new: str
    driver: str  # "<module>.<driver>" in zerokv_spec.drivers: the driver that must report it


MUTANTS = [
    Mutant(
        "fifo-pointer-advances-by-two",
        "pool.py",
        "self.next = (self.next + 1) % self.capacity",
        "self.next = (self.next + 2) % self.capacity",
        "pool_drivers.fifo_put_driver",
    ),
    Mutant(
        "fifo-pointer-wraps-one-late",
        "pool.py",
        "self.next = (self.next + 1) % self.capacity",
        "self.next = (self.next + 1) % (self.capacity + 1)",
        "pool_drivers.fifo_put_driver",
    ),
    Mutant(
        "evicted-key-keeps-its-reverse-mapping",
        "pool.py",
        "                del self.index[evicted]\n",
        "",
        "pool_drivers.fifo_put_driver",
    ),
    Mutant(
        "lru-evicts-the-most-recent-key",
        "pool.py",
        "return min(range(self.capacity), key=lambda s: self.last_use[s])",
        "return max(range(self.capacity), key=lambda s: self.last_use[s])",
        "pool_drivers.lru_put_driver",
    ),
    Mutant(
        "priority-ties-go-to-the-newest-key",
        "pool.py",
        "return (self.priority[slot], self.inserted_at[slot])",
        "return (self.priority[slot], -self.inserted_at[slot])",
        "pool_drivers.priority_put_driver",
    ),
    Mutant(
        "reserved-columns-hold-ones",
        "manager.py",
        "tuple(tuple(0.0 for _ in range(t)) for _ in range(rows))",
        "tuple(tuple(1.0 for _ in range(t)) for _ in range(rows))",
        "manager_drivers.manager_gather_driver",
    ),
]


def copy_spec(root: Path, mutant: Mutant | None = None) -> Path:
    """Copy the spec package to ``root/zerokv_spec``, planting ``mutant`` if given."""
    target = root / "zerokv_spec"
    shutil.copytree(SPEC_PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__"))
    if mutant is not None:
        path = target / mutant.module
        source = path.read_text()
        matches = source.count(mutant.old)
        assert matches == 1, f"{mutant.name}: the text to replace occurs {matches} times"
        path.write_text(source.replace(mutant.old, mutant.new))
    return root


def run_crosshair(root: Path, drivers: list[str], timeout: int) -> subprocess.CompletedProcess[str]:
    """``crosshair check`` of ``zerokv_spec.drivers.<driver>`` with only ``root`` on the path."""
    assert CROSSHAIR is not None
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(root)
    targets = [f"zerokv_spec.drivers.{d}" for d in drivers]
    return subprocess.run(
        [*CROSSHAIR, "check", *CROSSHAIR_OPTIONS, *targets],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def imported_from(root: Path) -> Path:
    """Where ``import zerokv_spec`` resolves with only ``root`` on ``PYTHONPATH``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(root)
    code = "import zerokv_spec; print(zerokv_spec.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True
    )
    return Path(out.stdout.strip()).resolve()


@needs_crosshair
@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_planted_bug_is_reported(mutant: Mutant, tmp_path: Path) -> None:
    root = copy_spec(tmp_path, mutant)
    result = run_crosshair(root, [mutant.driver], MUTANT_TIMEOUT)
    output = result.stdout + result.stderr
    assert result.returncode == 1, f"CrossHair missed {mutant.name}:\n{output}"
    module, driver = mutant.driver.split(".")
    counterexample = re.search(
        rf"drivers[/\\]{module}\.py:\d+: error: .* when calling {driver}\(", output
    )
    assert counterexample is not None, output
    # The counterexample comes from the mutated copy, not from an installed zerokv_spec.
    assert str(root.resolve()) in output or str(root) in output, output


@needs_crosshair
def test_unmodified_spec_passes_the_targeted_drivers(tmp_path: Path) -> None:
    root = copy_spec(tmp_path)
    assert imported_from(root).is_relative_to(root.resolve())
    drivers = sorted({m.driver for m in MUTANTS})
    result = run_crosshair(root, drivers, CLEAN_TIMEOUT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "error:" not in output, output


def defines_drivers(path: Path) -> bool:
    """Whether the module at ``path`` defines a function with a PEP 316 ``post:`` line."""
    tree = ast.parse(path.read_text())
    return any(
        isinstance(node, ast.FunctionDef)
        and re.search(r"^\s*post:", ast.get_docstring(node) or "", re.MULTILINE) is not None
        for node in tree.body
    )


def test_the_crosshair_session_checks_every_driver_module() -> None:
    """``CROSSHAIR_TARGETS`` (read from ``noxfile.py``, not imported) lists exactly the modules
    of ``zerokv_spec.drivers`` that define drivers."""
    noxfile = ast.parse((ROOT / "noxfile.py").read_text())
    targets = next(
        ast.literal_eval(node.value)
        for node in noxfile.body
        if isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and node.target.id == "CROSSHAIR_TARGETS"
        and node.value is not None
    )
    modules = sorted(p for p in DRIVERS.glob("*.py") if defines_drivers(p))
    assert modules, f"no module of {DRIVERS} defines a driver"
    assert sorted(targets) == sorted(p.relative_to(ROOT).as_posix() for p in modules)
