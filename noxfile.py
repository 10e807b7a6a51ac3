"""Nox sessions for zerokv.

Default sessions (``nox``): lint, typecheck, tests, crosshair, integration.
Extra sessions (``nox -s NAME``): mutants, bench.

Every session runs on the interpreter nox itself runs under (no hard-coded versions).

Choosing torch
--------------
Sessions that need torch install ``TORCH_REQUIREMENT`` *before* the project, so the
project's unpinned ``torch>=2.1`` dependency is already satisfied and pip fetches nothing
else. The default is ``torch==2.13.0`` (on the project's machines pip resolves that to a
local CPU wheel). To use another build (e.g. a CUDA one) without editing any file, set
the environment variable ``ZEROKV_TORCH`` to a single pip requirement, and tell pip where
to find it with pip's own environment variables, e.g.::

    ZEROKV_TORCH="torch==2.13.0+cu128" \\
    PIP_EXTRA_INDEX_URL="https://<index-serving-cuda-wheels>/cu128" nox -s tests

(``PIP_INDEX_URL`` / ``PIP_FIND_LINKS`` work the same way.)

Reusing venvs
-------------
``nox -r`` reuses existing session venvs (the torch install is then a no-op);
``nox -R`` additionally skips the install commands altogether.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "crosshair", "integration"]
nox.options.default_venv_backend = "venv"

#: The torch requirement installed before the project (one pip requirement string).
TORCH_REQUIREMENT: str = os.environ.get("ZEROKV_TORCH", "torch==2.13.0")

#: Pinned CrossHair version (its behaviour changes between releases).
CROSSHAIR_REQUIREMENT = "crosshair-tool==0.0.113"

#: Files checked by CrossHair in the ``crosshair`` session: every module of
#: ``zerokv_spec.drivers`` that defines drivers (PEP 316 docstring contracts). The other
#: modules of the package hold no contracts, only what the drivers share. Extend this list
#: when a driver module is added.
CROSSHAIR_TARGETS: list[str] = [
    "spec/zerokv_spec/drivers/pool_drivers.py",
    "spec/zerokv_spec/drivers/entry_drivers.py",
    "spec/zerokv_spec/drivers/manager_drivers.py",
]

#: CPU seconds CrossHair may spend on one condition (pre/post pair).
CROSSHAIR_PER_CONDITION_TIMEOUT = 20
#: CPU seconds CrossHair may spend on one execution path.
CROSSHAIR_PER_PATH_TIMEOUT = 3
#: Consecutive iterations without new coverage before CrossHair gives up on a condition.
CROSSHAIR_MAX_UNINTERESTING_ITERATIONS = 40
#: Hard wall-clock limit (seconds) for the whole CrossHair run; exceeding it fails.
CROSSHAIR_WALL_CLOCK_LIMIT = 600

#: LightZero's release on the package index, for the ``integration`` session.
LIGHTZERO_REQUIREMENT = "lightzero==0.2.0"

#: What ``lzero.model.unizero_model`` (LightZero 0.2.0's UniZero model) imports, installed
#: with ``--no-deps`` so that nothing replaces the pinned torch: LightZero's own
#: requirements (gym, gymnasium, wandb, matplotlib, ...) serve its policies, buffers and
#: entry points, which the integration tests do not import. Found by importing the model
#: in a fresh venv and adding each missing module (DI-engine's imports, mostly);
#: ``DI-treetensor`` is the ``treetensor`` module (the project named ``treetensor`` is
#: another package), ``gym`` is DI-engine's pin.
LIGHTZERO_PACKAGES: list[str] = [
    "einops",
    "easydict",
    "DI-engine==0.5.3",
    "DI-toolkit",
    "DI-treetensor",
    "treevalue",
    "hbutils",
    "deprecation",
    "packaging",
    "rich",
    "pygments",
    "cloudpickle",
    "graphviz",
    "dill",
    "pyyaml",
    "requests",
    "urllib3",
    "idna",
    "certifi",
    "flask",
    "werkzeug",
    "click",
    "blinker",
    "itsdangerous",
    "urlobject",
    "enum_tools",
    "tabulate",
    "tensorboardX",
    "protobuf",
    "gym==0.25.1",
    "xxhash",
]

MYPY_TARGETS: list[str] = ["spec/zerokv_spec", "impl/zerokv", "tests", "noxfile.py"]


def install_project(session: nox.Session, extras: Sequence[str] = ()) -> None:
    """Install ``TORCH_REQUIREMENT`` first, then the project (editable) with ``extras``."""
    session.install(TORCH_REQUIREMENT)
    target = f".[{','.join(extras)}]" if extras else "."
    session.install("-e", target)


@nox.session(python=None)
def lint(session: nox.Session) -> None:
    """Ruff lint and format check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=None)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over spec, impl, tests and this file."""
    install_project(session, ["test", "bench", "dev"])
    session.run("mypy", "--strict", *MYPY_TARGETS, *session.posargs)


@nox.session(python=None)
def tests(session: nox.Session) -> None:
    """pytest (posargs are forwarded, e.g. ``nox -s tests -- -k spec -x``)."""
    install_project(session, ["test", "bench"])
    env: dict[str, str] = {}
    profile = os.environ.get("HYPOTHESIS_PROFILE")
    if profile:
        env["HYPOTHESIS_PROFILE"] = profile
    session.run("pytest", *session.posargs, env=env)


@nox.session(python=None)
def crosshair(session: nox.Session) -> None:
    """CrossHair over the spec's drivers (PEP 316 contracts), under a hard wall-clock limit.

    The spec is stdlib-only, so torch is not installed here (``--no-deps``).
    """
    missing = [t for t in CROSSHAIR_TARGETS if t.endswith(".py") and not os.path.exists(t)]
    if missing:
        session.error(f"CrossHair targets do not exist: {', '.join(missing)}")
    timeout = shutil.which("timeout")
    if timeout is None:
        session.error("the `timeout` command (GNU coreutils) is required")
    session.install(CROSSHAIR_REQUIREMENT)
    session.install("--no-deps", "-e", ".")
    session.run(
        timeout,
        "--kill-after=30",
        str(CROSSHAIR_WALL_CLOCK_LIMIT),
        "crosshair",
        "check",
        "--analysis_kind=PEP316",
        f"--per_condition_timeout={CROSSHAIR_PER_CONDITION_TIMEOUT}",
        f"--per_path_timeout={CROSSHAIR_PER_PATH_TIMEOUT}",
        f"--max_uninteresting_iterations={CROSSHAIR_MAX_UNINTERESTING_ITERATIONS}",
        *CROSSHAIR_TARGETS,
        *session.posargs,
        external=True,
    )


@nox.session(python=None)
def mutants(session: nox.Session) -> None:
    """Mutation testing (tests/mutants/run_mutants.py); not a default session."""
    install_project(session, ["test", "bench"])
    session.run("python", "tests/mutants/run_mutants.py", *session.posargs)


@nox.session(python=None)
def bench(session: nox.Session) -> None:
    """Workload replay / benchmark (``python -m zerokv.bench``); not a default session."""
    install_project(session, ["bench"])
    session.run("python", "-m", "zerokv.bench", *session.posargs)


@nox.session(python=None)
def integration(session: nox.Session) -> None:
    """LightZero 0.2.0's real UniZero model with zerokv attached (tests/integration).

    Installs ``LIGHTZERO_REQUIREMENT`` and ``LIGHTZERO_PACKAGES`` with ``--no-deps`` after
    the pinned torch and the project, checks that torch was not replaced, and runs the
    tests with ``ZEROKV_REQUIRE_LIGHTZERO=1`` (a missing LightZero fails instead of
    skipping). posargs go to pytest.
    """
    install_project(session, ["test"])
    probe = "import torch; print(torch.__version__)"
    before = session.run("python", "-c", probe, silent=True)
    session.install("--no-deps", LIGHTZERO_REQUIREMENT, *LIGHTZERO_PACKAGES)
    after = session.run("python", "-c", probe, silent=True)
    if before != after:
        session.error(f"installing LightZero replaced torch: {before!r} -> {after!r}")
    session.run(
        "pytest",
        "tests/integration",
        "-p",
        "no:cacheprovider",
        *session.posargs,
        env={"ZEROKV_REQUIRE_LIGHTZERO": "1"},
    )
