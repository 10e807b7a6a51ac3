"""Every command line in the README and the docs still works.

Commands are taken from fenced ``bash`` / ``sh`` / ``console`` blocks (every line; ``&&``
chains are split, comments and line continuations handled) and from inline code spans
that start with a program this project documents (`INLINE_PROGRAMS`, after optional
``NAME=value`` assignments). Each distinct command runs once, through the handler of its
program:

* ``python -m zerokv.bench.train ARGS``: the arguments must parse (not run: minutes of
  LightZero training);
* ``python -m zerokv.bench ARGS`` and ``nox -s bench -- ARGS``: the arguments must parse,
  output files must go under ``bench-out/`` (or regenerate ``docs/performance.*``), and
  the benchmark runs for real in a temporary directory, scaled down to one step and one
  repeat, one point per sweep and no stage breakdown (tests/test_bench_cli.py runs that);
  the files it names must appear. ``--device cuda``
  without CUDA must stop with exit status 2 and the hint of how to get a CUDA torch;
  ``--model unizero`` without LightZero likewise, naming what to install.
* ``nox ...``: ``nox ... --list`` must accept the options, every ``-s`` session must exist;
  arguments after ``--`` go to the session's handler (``tests``: pytest collection,
  ``bench``: as above, ``mutants``: the runner's ``--list``); other sessions take none.
* ``pytest ARGS``: ``pytest --collect-only ARGS`` must collect at least one test.
* ``python3 -m venv DIR && . DIR/bin/activate``: run in bash in a temporary directory
  (``--without-pip``, to be quick), and the activated interpreter must be the new one.
* ``python -m build``: builds the sdist and the wheel into a temporary directory;
  ``python3 --version``: runs, and the version must be one zerokv supports.
* ``python -c CODE``: runs for real.
* ``python tests/SCRIPT.py ...``: the script exists and has a ``__main__`` block (not run:
  the documented ones time a real model for minutes).
* ``crosshair check ...``: runs for real.
* ``bash .ci/run``: the script must exist and parse (``bash -n``); CI runs it.
* ``pip install ...``: not run (network, minutes). Every requirement must parse, every
  extra of ``.`` must be declared in ``pyproject.toml``, and an extra of a package
  installed here (``nox[uv]``) must be one that package declares. The real installs run
  in ``.ci/run`` and ``nox -s package``.

A command with no handler fails: a new kind of example needs a handler here. The tests at
the end show that rotted examples are reported.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hypothesis import settings
from hypothesis.errors import InvalidArgument
from packaging.requirements import InvalidRequirement, Requirement

from zerokv.bench.__main__ import _parser, main

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
#: Inline code spans that start with one of these (after NAME=value assignments) are
#: commands; other spans (`mypy --strict`, `ruff check`) name what a session runs.
INLINE_PROGRAMS = ("nox", "pip", "python", "python3", "pytest", "bash", "uv")
#: Inline spans that look like commands but are not: synopses with placeholders, and
#: words in prose.
NOT_COMMANDS = {
    "python -m zerokv.bench [options]",  # synopsis
    "nox -s bench -- [options]",  # synopsis
    "python",  # "every `python` block"
}
#: Where benchmark examples may write.
OUTPUT_PREFIXES = ("bench-out/", "docs/performance.")

_FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


# --------------------------------------------------------------------------- extraction


def split_chain(line: str) -> list[str]:
    """The commands of one shell line: comments dropped, split on ``&&`` and ``;``."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in ("&&", ";"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [shlex.join(c) for c in commands if c]


def normalize(line: str) -> str:
    """`line` without a trailing comment (a ``#`` after a blank, outside quotes) and with
    runs of blanks collapsed."""
    without = re.sub(r"\s#(?=[^\"']*$).*$", "", " " + line)
    return re.sub(r"\s+", " ", without).strip()


def fenced_commands(text: str) -> list[tuple[int, str]]:
    """(line, command line) of every line of the shell blocks of `text` (`normalize`d)."""
    found: list[tuple[int, str]] = []
    for match in _FENCE.finditer(text):
        if match.group(1) not in SHELL_LANGUAGES:
            continue
        first = text.count("\n", 0, match.start(2)) + 1
        pending = ""
        for offset, raw in enumerate(match.group(2).splitlines()):
            line = raw.rstrip()
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            line = normalize(pending + line)
            pending = ""
            if line:
                found.append((first + offset, line))
    return found


def _program(command: str) -> str | None:
    words = shlex.split(command, comments=True)
    while words and _ASSIGNMENT.match(words[0]):
        words.pop(0)
    return words[0] if words else None


def inline_commands(text: str) -> list[tuple[int, str]]:
    """(line, span) of every inline code span outside fenced blocks that is a command."""
    outside = _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    found: list[tuple[int, str]] = []
    for match in _INLINE.finditer(outside):
        span = match.group(1).strip()
        try:
            program = _program(span)
        except ValueError:
            continue
        if program in INLINE_PROGRAMS and span not in NOT_COMMANDS:
            found.append((outside.count("\n", 0, match.start()) + 1, span))
    return found


def collect() -> dict[str, list[str]]:
    """Every command line of the docs -> where it appears (``file:line``)."""
    where: dict[str, list[str]] = {}
    for path in DOC_FILES:
        text = path.read_text(encoding="utf-8")
        for line, command in [*fenced_commands(text), *inline_commands(text)]:
            location = f"{path.relative_to(ROOT)}:{line}"
            where.setdefault(command, []).append(location)
    return where


# --------------------------------------------------------------------------- handlers


@dataclass
class Context:
    tmp: Path
    monkeypatch: pytest.MonkeyPatch


Handler = Callable[[dict[str, str], list[str], Context], None]


def _env(assignments: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(assignments)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "spec"), str(ROOT / "impl"), env.get("PYTHONPATH", "")]
    )
    return env


def _run(argv: list[str], env: dict[str, str], cwd: Path = ROOT, timeout: int = 300) -> str:
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, (
        f"{shlex.join(argv)} exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    )
    return done.stdout


def _bench_run(args: tuple[str, ...], tmp: str) -> int:
    old = Path.cwd()
    os.chdir(tmp)
    try:
        return main(list(args))
    finally:
        os.chdir(old)


def run_bench(env: dict[str, str], args: list[str], ctx: Context) -> None:
    try:
        parsed = _parser().parse_args(args)
    except SystemExit as exc:
        if exc.code == 0 and ("--help" in args or "-h" in args):
            return  # the help was printed
        raise AssertionError(f"the benchmark rejects {args}") from exc
    outputs = [p for p in (parsed.json, parsed.plot, parsed.markdown) if p]
    for path in outputs:
        assert path.startswith(OUTPUT_PREFIXES), f"{path} is not under {OUTPUT_PREFIXES}"
    if parsed.device == "cuda" and not torch.cuda.is_available():
        assert _bench_run(tuple(args), str(ctx.tmp)) == 2
        return
    if parsed.model and importlib.util.find_spec("lzero") is None:
        assert _bench_run(tuple(args), str(ctx.tmp)) == 2  # it names what to install
        return
    scaled = [*args, "--steps", "1", "--repeats", "1", "--no-stages"]
    if parsed.plot or parsed.envs_sweep or parsed.cl_sweep:
        scaled += ["--envs-sweep", "2", "--cl-sweep", "8"]
    assert _bench_run(tuple(scaled), str(ctx.tmp)) == 0
    for path in outputs:
        assert (ctx.tmp / path).is_file(), f"the benchmark did not write {path}"


class _Selected:
    """A pytest plugin that records how many tests a collection selected."""

    def __init__(self) -> None:
        self.count: int | None = None

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.count = len(session.items)


def run_pytest(env: dict[str, str], args: list[str], ctx: Context) -> None:
    """``pytest --collect-only ARGS``, in this process (the imports are already done)."""
    selected = _Selected()
    ctx.monkeypatch.chdir(ROOT)
    code = pytest.main(
        ["--collect-only", "-q", "-p", "no:cacheprovider", *args], plugins=[selected]
    )
    assert code == pytest.ExitCode.OK, f"pytest {args} exits {code!r}"
    assert selected.count, f"pytest {args} selects no test"


@functools.cache
def nox_sessions() -> frozenset[str]:
    """Every session of the noxfile (``nox --list`` marks defaults ``*``, others ``-``)."""
    out = _run([sys.executable, "-m", "nox", "--list"], _env({}))
    return frozenset(m.group(1) for m in re.finditer(r"^[*-] (\S+)", out, re.MULTILINE))


def _sessions_named(nox_args: list[str]) -> list[str]:
    names: list[str] = []
    for i, arg in enumerate(nox_args):
        if arg in ("-s", "--session", "--sessions", "-e") and i + 1 < len(nox_args):
            names.append(nox_args[i + 1])
        elif arg.startswith("--session="):
            names.append(arg.split("=", 1)[1])
    return names


def run_nox(env: dict[str, str], args: list[str], ctx: Context) -> None:
    nox_args, posargs = (
        (args[: args.index("--")], args[args.index("--") + 1 :]) if ("--" in args) else (args, [])
    )
    names = _sessions_named(nox_args)
    for name in names:
        assert name in nox_sessions(), f"nox has no session {name!r} ({sorted(nox_sessions())})"
    _run([sys.executable, "-m", "nox", *nox_args, "--list"], _env(env))
    if "ZEROKV_TORCH" in env:
        Requirement(env["ZEROKV_TORCH"])  # one requirement, no index options
    for variable in ("PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL"):
        if variable in env:
            assert env[variable].startswith("https://"), f"{variable} is not a real index"
    if not posargs:
        return
    assert len(names) == 1, f"arguments after -- need exactly one session: {args}"
    if names[0] == "tests":
        run_pytest(env, posargs, ctx)
    elif names[0] == "bench":
        run_bench(env, posargs, ctx)
    elif names[0] == "mutants":
        _run([sys.executable, "tests/mutants/run_mutants.py", *posargs, "--list"], _env(env))
    else:
        raise AssertionError(f"no handler for arguments to the {names[0]} session: {posargs}")


def _project_extras() -> set[str]:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    block = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([A-Za-z0-9_-]+)\s*=", block, re.MULTILINE))


def check_pip(env: dict[str, str], args: list[str], ctx: Context) -> None:
    assert args[:1] == ["install"], f"pip {args}: only `pip install` examples are handled"
    targets = [a for a in args[1:] if not a.startswith("-")]
    assert targets, f"pip {args} installs nothing"
    for target in targets:
        if target == "." or target.startswith(".["):
            extras = set(target[2:-1].split(",")) if target.startswith(".[") else set()
            missing = extras - _project_extras()
            assert not missing, f"pyproject.toml declares no extra {sorted(missing)}"
            continue
        try:
            requirement = Requirement(target)
        except InvalidRequirement as exc:
            raise AssertionError(f"{target!r} is not a requirement: {exc}") from exc
        try:
            declared = importlib.metadata.metadata(requirement.name).get_all("Provides-Extra")
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here: the syntax is all that can be checked offline
        unknown = requirement.extras - set(declared or [])
        assert not unknown, f"{requirement.name} has no extra {sorted(unknown)}"


def run_python(env: dict[str, str], args: list[str], ctx: Context) -> None:
    if args[:2] == ["-m", "zerokv.bench.train"]:
        # Parsed, not run: a training benchmark runs LightZero's train_unizero for minutes.
        from zerokv.bench import train

        parsed = train._parser().parse_args(args[2:])
        assert parsed.json is None or parsed.json.startswith(OUTPUT_PREFIXES), parsed.json
    elif args[:2] == ["-m", "zerokv.bench"]:
        run_bench(env, args[2:], ctx)
    elif args == ["--version"]:
        out = _run([sys.executable, "--version"], _env(env))
        version = tuple(int(x) for x in out.split()[1].split(".")[:2])
        assert version >= (3, 10), f"zerokv needs Python >= 3.10, this is {out.strip()}"
    elif args[:1] == ["-c"]:
        _run([sys.executable, *args], _env(env))
    elif args[:1] and args[0].startswith("tests/") and args[0].endswith(".py"):
        run_test_script(env, args, ctx)
    elif args[:2] == ["-m", "build"]:
        _run(
            [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(ctx.tmp / "d")],
            _env(env),
            timeout=600,
        )
        assert sorted(p.suffix for p in (ctx.tmp / "d").iterdir()) == [".gz", ".whl"]
    else:
        raise AssertionError(f"no handler for python {args}")


def run_test_script(env: dict[str, str], args: list[str], ctx: Context) -> None:
    """``python tests/SCRIPT.py ARGS``: the script exists and runs as a script (it has a
    ``__main__`` block). Not run: the documented ones time a real model for minutes."""
    script = ROOT / args[0]
    assert script.is_file(), f"{args[0]} does not exist"
    assert 'if __name__ == "__main__":' in script.read_text(encoding="utf-8"), (
        f"{args[0]} has no __main__ block"
    )


def run_crosshair(env: dict[str, str], args: list[str], ctx: Context) -> None:
    crosshair = shutil.which("crosshair")
    command = [crosshair] if crosshair else [sys.executable, "-m", "crosshair"]
    _run([*command, *args], _env(env), timeout=300)


def check_bash(env: dict[str, str], args: list[str], ctx: Context) -> None:
    assert args == [".ci/run"], f"no handler for bash {args}"
    script = ROOT / ".ci" / "run"
    assert script.is_file()
    _run(["bash", "-n", str(script)], _env(env))
    assert '"$VENV/bin/nox"' in script.read_text()


HANDLERS: dict[str, Handler] = {
    "nox": run_nox,
    "pytest": run_pytest,
    "python": run_python,
    "python3": run_python,
    "pip": check_pip,
    "crosshair": run_crosshair,
    "bash": check_bash,
}


def run_venv_line(line: str, ctx: Context) -> None:
    """``python3 -m venv DIR && . DIR/bin/activate ...``, for real, in `ctx.tmp`."""
    script = line.replace("-m venv ", "-m venv --without-pip ", 1)
    check = 'python -c "import sys; print(sys.prefix)"'
    out = _run(["bash", "-c", f"{script} && {check}"], dict(os.environ), cwd=ctx.tmp)
    venv = shlex.split(line)[shlex.split(line).index("venv") + 1]
    assert Path(out.strip().splitlines()[-1]).resolve() == (ctx.tmp / venv).resolve()


def run_line(line: str, ctx: Context) -> None:
    """Run one documented command line (a chain of commands) through the handlers."""
    if re.match(r"python3? -m venv ", line):
        run_venv_line(line, ctx)
        return
    for command in split_chain(line):
        words = shlex.split(command)
        env: dict[str, str] = {}
        while words and _ASSIGNMENT.match(words[0]):
            name, value = words.pop(0).split("=", 1)
            env[name] = value
        if "HYPOTHESIS_PROFILE" in env:
            try:
                settings.get_profile(env["HYPOTHESIS_PROFILE"])
            except InvalidArgument as exc:
                raise AssertionError(f"no hypothesis profile {env['HYPOTHESIS_PROFILE']}") from exc
        assert words, f"{command!r} runs no program"
        handler = HANDLERS.get(words[0])
        assert handler is not None, f"no handler for {words[0]!r} (in {line!r}): add one"
        handler(env, words[1:], ctx)


# --------------------------------------------------------------------------- the tests

COMMANDS = collect()


def test_the_docs_have_command_examples() -> None:
    assert 'pip install "nox[uv]" && nox -s bench' in COMMANDS
    assert any(c.startswith("nox -s tests --") for c in COMMANDS)
    assert any(c.startswith("python -m zerokv.bench") for c in COMMANDS)


@pytest.mark.parametrize("line", sorted(COMMANDS), ids=lambda c: c[:60])
def test_documented_command_runs(
    line: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:
        run_line(line, Context(tmp_path, monkeypatch))
    except AssertionError as exc:
        raise AssertionError(f"{line!r} ({', '.join(COMMANDS[line])}): {exc}") from exc


def test_extraction() -> None:
    text = (
        "Run `nox -s lint` or `mypy --strict`; `python -m zerokv.bench [options]`.\n"
        "```bash\n"
        "A=1 nox -s tests -- -k spec \\\n"
        "    -x   # comment\n"
        "pip install nox && nox\n"
        "```\n"
        "```python\nprint('not a command')\n```\n"
    )
    assert inline_commands(text) == [(1, "nox -s lint")]
    assert fenced_commands(text) == [
        (4, "A=1 nox -s tests -- -k spec -x"),
        (5, "pip install nox && nox"),
    ]
    assert normalize('pip install "a#b"  # note') == 'pip install "a#b"'
    assert normalize("# only a comment") == ""
    assert split_chain("pip install nox && nox   # x") == ["pip install nox", "nox"]
    assert split_chain('pip install "nox[uv]"') == ["pip install 'nox[uv]'"]


@pytest.mark.parametrize(
    "line",
    [
        "nox -s benchmark",  # no such session
        "nox -s tests -- -k 'not test'",  # selects nothing
        "nox -s tests -- --no-such-pytest-option",
        "python -m zerokv.bench --no-such-option",
        "nox -s bench -- --json out.json",  # writes into the repository root
        'pip install ".[no-such-extra]"',
        'pip install "nox[no-such-extra]"',
        "pip install 'torch>=>2'",
        "nox -s lint -- --fix",  # arguments the session's handler does not know
        "make test",  # no handler
        "bash .ci/missing",
        "HYPOTHESIS_PROFILE=nosuch nox -s tests",
        "python -m zerokv.bench --config no-such-preset",
        "python tests/no_such_script.py 5",
        'python -c "import zerokv.no_such_module"',
        "python tests/conftest.py",  # exists, but is not a script
    ],
)
def test_rotted_commands_are_reported(
    line: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(AssertionError):
        run_line(line, Context(tmp_path, monkeypatch))
