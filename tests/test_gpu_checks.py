"""``tests/gpu_checks.sh``, the CUDA checks as one prepared run: it names every test file
that holds ``cuda`` tests (a file it leaves out would never run on a GPU machine), it is
valid bash, and without a CUDA device it stops at once, saying why, instead of reporting
a run of skipped tests as a pass."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "gpu_checks.sh"


def named_files(script: str) -> set[str]:
    """The test files the script's ``cuda_test_files`` array names."""
    found = re.search(r"^cuda_test_files=\(([^)]*)\)", script, re.MULTILINE)
    assert found is not None, "the script has no cuda_test_files=(...) line"
    return set(found.group(1).split())


#: A ``cuda`` mark on a test or a class, or on a whole module.
CUDA_MARK = re.compile(
    r"^\s*(@pytest\.mark\.cuda\b|pytestmark\s*=.*pytest\.mark\.cuda\b)", re.MULTILINE
)


def files_with_cuda_tests(tests: Path) -> set[str]:
    """Every test module under ``tests`` that marks a test ``cuda``."""
    return {
        str(path.relative_to(tests.parent))
        for path in sorted(tests.rglob("test_*.py"))
        if CUDA_MARK.search(path.read_text())
    }


def missing(script: str, tests: Path) -> set[str]:
    return files_with_cuda_tests(tests) - named_files(script)


def test_the_script_names_every_file_with_cuda_tests() -> None:
    assert files_with_cuda_tests(ROOT / "tests"), "no cuda tests found: the search is broken"
    assert missing(SCRIPT.read_text(), ROOT / "tests") == set()


def test_a_file_left_out_is_found(tmp_path: Path) -> None:
    """Planted: a new test module with a ``cuda`` test that the script does not name."""
    tests = tmp_path / "tests"
    shutil.copytree(ROOT / "tests", tests, ignore=shutil.ignore_patterns("__pycache__"))
    (tests / "test_new_gpu_feature.py").write_text(
        "import pytest\n\n\n@pytest.mark.cuda\ndef test_it() -> None:\n    assert True\n"
    )
    assert missing(SCRIPT.read_text(), tests) == {"tests/test_new_gpu_feature.py"}


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_without_cuda_it_stops_and_says_why(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert "no CUDA device" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["env.txt"]  # nothing else ran
