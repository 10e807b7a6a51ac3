"""Nox sessions for zerokv.

Default sessions (``nox``): lint, typecheck, tests, compiled, crosshair, package,
integration.
Extra sessions (``nox -s NAME``): mutants, bench.

Every session runs on the interpreter nox itself runs under (no hard-coded versions).

Installers: uv when it is there, pip otherwise
----------------------------------------------
Sessions create their virtual environments with ``uv`` when nox can find it (``pip
install "nox[uv]"`` puts it next to nox) and fall back to ``venv`` + pip otherwise
(``nox.options.default_venv_backend = "uv|venv"``; ``nox -db venv`` forces pip). With uv,
torch is unpacked once into uv's cache and hard-linked into every session's environment,
so the sessions share one copy on disk and a new session installs it in a second or two.

uv does not read pip's configuration, and pip's configuration is how a machine may say
where its packages come from (a local CPU torch wheel in ``find-links``, a mirror in
``extra-index-url``, a ``constraint`` file). So before any session runs, this file asks
pip for its effective settings (``python -m pip config list``: its configuration files and
its ``PIP_*`` environment variables, with pip's precedence) and hands uv the same sources
through uv's own variables (`uv_environment`): ``find-links`` -> ``UV_FIND_LINKS``,
``index-url`` -> ``UV_INDEX_URL``, ``extra-index-url`` -> ``UV_EXTRA_INDEX_URL``,
``constraint`` -> ``UV_CONSTRAINT``, ``no-index`` -> ``UV_NO_INDEX``, ``cert`` ->
``SSL_CERT_FILE``, and ``UV_INDEX_STRATEGY=unsafe-best-match`` (pip's rule: every index is
searched and the best match wins). A ``UV_*`` variable you set yourself is left alone.
Every session that installs torch logs the build it got (for example ``2.13.0+cpu``).

Choosing torch
--------------
Sessions that need torch install ``TORCH_REQUIREMENT`` *before* the project, so the
project's unpinned ``torch>=2.1`` dependency is already satisfied and nothing else is
fetched. The default is ``torch==2.13.0`` (on the project's machines pip's configuration
resolves that to a local CPU wheel). To use another build (e.g. a CUDA one) without editing
any file, set the environment variable ``ZEROKV_TORCH`` to a single requirement, and name
the index that serves it with pip's own environment variables (uv gets them too, see
above). PyTorch's documented CUDA index is ``https://download.pytorch.org/whl/<cuda>``::

    ZEROKV_TORCH="torch==2.13.0+cu128" \\
    PIP_EXTRA_INDEX_URL="https://download.pytorch.org/whl/cu128" nox -s tests

(``PIP_INDEX_URL`` / ``PIP_FIND_LINKS`` work the same way.)

Adding a session that needs torch
---------------------------------
Call ``install_project(session, [extras])``: it installs the same torch requirement the
other sessions use (with uv, the same cached copy) and the project, editable.

Reusing venvs
-------------
``nox -r`` reuses existing session venvs (the torch install is then a no-op);
``nox -R`` additionally skips the install commands altogether.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import nox
from nox.virtualenv import find_uv

nox.options.sessions = [
    "lint",
    "typecheck",
    "tests",
    "compiled",
    "crosshair",
    "package",
    "integration",
]
nox.options.default_venv_backend = "uv|venv"

#: The torch requirement installed before the project (one requirement string).
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

#: What ``lzero.model.unizero_model`` (LightZero 0.2.0's UniZero model) and its UniZero
#: policy import, installed
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
    # LightZero's UniZero policy through DI-engine's create_policy on the CartPole zoo
    # config (tests/integration/test_attach_policy.py): ding.envs / data / framework, the
    # zoo env's matplotlib, lzero.policy's utils. wandb and tensorboard are stubbed
    # (zerokv.testing.lightzero_policy.stub_tensorboard).
    "gymnasium",
    "hickle",
    "h5py",
    "mpire",
    "tqdm",
    "redis",
    "pynng",
    "cffi",
    "sniffio",
    "matplotlib",
    "pillow",
    "pyparsing",
    "cycler",
    "python-dateutil",
    "kiwisolver",
    "fonttools",
    "scipy",
    "psutil",
    "pympler",
    # train_unizero (tests/integration/test_train_unizero.py): compile_config saves the
    # config formatted with yapf.
    "yapf",
    "platformdirs",
]

MYPY_TARGETS: list[str] = ["spec/zerokv_spec", "impl/zerokv", "tests", "noxfile.py"]

# --------------------------------------------------------------------------- pip -> uv

#: pip settings that say where packages come from, with the uv variable each becomes.
_PIP_TO_UV: dict[str, str] = {
    "find-links": "UV_FIND_LINKS",
    "index-url": "UV_INDEX_URL",
    "extra-index-url": "UV_EXTRA_INDEX_URL",
    "constraint": "UV_CONSTRAINT",
    "no-index": "UV_NO_INDEX",
}

#: Scopes of ``pip config list`` from the weakest to the strongest (pip's precedence: an
#: ``[install]`` section beats ``[global]``, a ``PIP_*`` variable beats every file).
_PIP_SCOPES: tuple[str, ...] = ("global", "install", ":env:")


def parse_pip_config(text: str) -> dict[str, str]:
    """The effective pip settings in the output of ``pip config list``.

    Each line reads ``scope.key='value'``; for a key set in several scopes the strongest
    scope (`_PIP_SCOPES`) wins. Lines of other scopes (another command's section) are
    ignored.
    """
    chosen: dict[str, tuple[int, str]] = {}
    for line in text.splitlines():
        name, sep, raw = line.strip().partition("=")
        scope, dot, key = name.rpartition(".")
        if not sep or not dot or scope not in _PIP_SCOPES:
            continue
        value = raw.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        rank = _PIP_SCOPES.index(scope)
        if key not in chosen or rank >= chosen[key][0]:
            chosen[key] = (rank, value)
    return {key: value for key, (_, value) in chosen.items()}


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def uv_environment(pip: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """The uv variables that make uv use the package sources of pip's settings `pip`.

    Variables already set in `environ` are not returned (the user's choice wins). pip
    separates list values by whitespace; uv wants commas in ``UV_FIND_LINKS`` and spaces
    elsewhere. ``file://`` indexes that do not exist are dropped, as pip ignores them.
    """
    out: dict[str, str] = {}
    for key, variable in _PIP_TO_UV.items():
        value = pip.get(key, "").strip()
        if not value:
            continue
        if key == "no-index":
            if _truthy(value):
                out[variable] = "1"
            continue
        items = value.split()
        if key in ("index-url", "extra-index-url"):
            items = [
                url
                for url in items
                if not url.startswith("file://") or Path(url.removeprefix("file://")).exists()
            ]
        if items:
            out[variable] = (",".join if key == "find-links" else " ".join)(items)
    cert = pip.get("cert", "").strip()
    if cert:
        out["SSL_CERT_FILE"] = cert
    out["UV_INDEX_STRATEGY"] = "unsafe-best-match"
    return {k: v for k, v in out.items() if k not in environ}


def _pip_config_text() -> str:
    """``pip config list`` of nox's own interpreter, else of the ``pip`` on PATH ("" if
    neither answers)."""
    candidates: list[list[str]] = [[sys.executable, "-m", "pip"]]
    for name in ("pip3", "pip"):
        found = shutil.which(name)
        if found:
            candidates.append([found])
    for command in candidates:
        try:
            done = subprocess.run(
                [*command, "config", "list"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return done.stdout
    return ""


#: What this file added to the environment for uv (logged by every installing session).
UV_SOURCES: dict[str, str] = uv_environment(parse_pip_config(_pip_config_text()), os.environ)
os.environ.update(UV_SOURCES)


def _uses_uv(session: nox.Session) -> bool:
    return session.venv_backend == "uv"


def _log_sources(session: nox.Session) -> None:
    if _uses_uv(session):
        shown = ", ".join(f"{k}={v}" for k, v in sorted(UV_SOURCES.items()))
        session.log(f"installer: uv, with pip's package sources ({shown or 'none'})")
    else:
        session.log("installer: pip (uv not found: pip install 'nox[uv]' for faster set-up)")


def _log_torch(session: nox.Session, python: str = "python") -> None:
    """Log the torch build the environment got, without importing torch (fast)."""
    session.run(
        python,
        "-c",
        "import importlib.metadata as m; print('torch build installed:', m.version('torch'))",
        silent=False,
        external=True,
    )


def install_project(session: nox.Session, extras: Sequence[str] = ()) -> None:
    """Install ``TORCH_REQUIREMENT`` first, then the project (editable) with ``extras``."""
    _log_sources(session)
    session.install(TORCH_REQUIREMENT)
    _log_torch(session)
    target = f".[{','.join(extras)}]" if extras else "."
    session.install("-e", target)


# --------------------------------------------------------------------------- sessions


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


def _pytest_env() -> dict[str, str]:
    env: dict[str, str] = {}
    profile = os.environ.get("HYPOTHESIS_PROFILE")
    if profile:
        env["HYPOTHESIS_PROFILE"] = profile
    return env


@nox.session(python=None)
def tests(session: nox.Session) -> None:
    """pytest, except the tests marked ``compiled`` (posargs replace that selection, e.g.
    ``nox -s tests -- -k spec -x``)."""
    install_project(session, ["test", "bench"])
    args = session.posargs or ["-m", "not compiled"]
    session.run("pytest", *args, env=_pytest_env())


@nox.session(python=None)
def compiled(session: nox.Session) -> None:
    """The tests marked ``compiled``: the hot path's kernels through ``torch.compile``
    (inductor on the CPU; a C++ compiler must be on PATH), against eager and against the
    spec. Compilation takes most of the time, so these run apart from ``tests``."""
    install_project(session, ["test", "bench"])
    session.run(
        "pytest", "-m", "compiled", "-p", "no:cacheprovider", *session.posargs, env=_pytest_env()
    )


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
    session.log(
        f"CrossHair checks every driver of {', '.join(CROSSHAIR_TARGETS)}; it prints "
        f"nothing until it finds a counterexample (usually 2-4 minutes, at most "
        f"{CROSSHAIR_WALL_CLOCK_LIMIT} s)"
    )
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
def package(session: nox.Session) -> None:
    """Build the sdist and, from it, the wheel (``python -m build``), check the wheel's
    contents, install it into a fresh environment outside the repository and run a one-step
    example there (``tests/check_wheel.py``)."""
    session.install("build", "setuptools>=77")
    with tempfile.TemporaryDirectory(prefix="zerokv-package-") as tmp:
        dist = Path(tmp) / "dist"
        # The wheel is built from the unpacked sdist, so a stale build/ cannot leak into it.
        session.run("python", "-m", "build", "--no-isolation", "--outdir", str(dist))
        wheels = sorted(dist.glob("zerokv-*.whl"))
        if len(wheels) != 1:
            session.error(f"expected one wheel in {dist}, found {wheels}")
        wheel = str(wheels[0])
        session.run("python", "tests/check_wheel.py", "contents", wheel)
        venv = Path(tmp) / "venv"
        python = str(venv / "bin" / "python")
        if _uses_uv(session):
            uv = find_uv()[1]
            session.run(uv, "venv", "--quiet", "--python", sys.executable, str(venv), external=True)
            session.run(
                uv, "pip", "install", "--python", python, TORCH_REQUIREMENT, wheel, external=True
            )
        else:
            session.run(sys.executable, "-m", "venv", str(venv), external=True)
            session.run(
                python, "-m", "pip", "install", "--quiet", TORCH_REQUIREMENT, wheel,
                external=True,
            )  # fmt: skip
        _log_torch(session, python)
        example = str(Path("tests/check_wheel.py").resolve())
        session.chdir(tmp)
        session.run(python, example, "run", external=True)


@nox.session(python=None)
def mutants(session: nox.Session) -> None:
    """Mutation testing (tests/mutants/run_mutants.py); not a default session."""
    install_project(session, ["test", "bench"])
    session.run("python", "tests/mutants/run_mutants.py", *session.posargs)


@nox.session(python=None)
def bench(session: nox.Session) -> None:
    """Workload replay / benchmark (``python -m zerokv.bench``); not a default session."""
    install_project(session, ["bench"])
    session.log("running: python -m zerokv.bench " + shlex.join(session.posargs))
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
