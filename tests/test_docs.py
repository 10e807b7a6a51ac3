"""The documentation stays true: its examples run, and the API reference is complete.

* Every fenced ```` ```python ```` block of every ``docs/*.md`` file is executed on the CPU,
  each in a fresh namespace (blocks do not share state), parametrized by file and block
  index. A block shows behaviour with ``assert`` statements, so a block that stops
  describing the code fails here.
* Every name in ``zerokv.__all__`` and ``zerokv_spec.__all__`` appears in ``docs/api.md``
  as code (in backticks, possibly qualified or followed by its signature).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import zerokv
import zerokv_spec

DOCS = Path(__file__).resolve().parent.parent / "docs"

#: A fenced block opened by exactly ```python (not ```pycon, ```python3 ...) at a line start.
_PYTHON_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line number of the opening fence, code)`` of every ```python block in ``text``."""
    return [
        (text.count("\n", 0, match.start()) + 1, match.group(1))
        for match in _PYTHON_BLOCK.finditer(text)
    ]


def _doc_files() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def _cases() -> list[pytest.ParameterSet]:
    cases = []
    for path in _doc_files():
        for index, (line, code) in enumerate(python_blocks(path.read_text(encoding="utf-8"))):
            cases.append(pytest.param(path, line, code, id=f"{path.name}-{index}"))
    return cases


def test_docs_exist() -> None:
    names = {p.name for p in _doc_files()}
    for required in (
        "index.md",
        "background.md",
        "quickstart.md",
        "architecture.md",
        "verification.md",
        "migration.md",
        "api.md",
    ):
        assert required in names, f"docs/{required} is missing"


def test_block_extraction() -> None:
    text = "a\n```python\nx = 1\n```\n```pycon\n>>> y\n```\n```python\nz = 2\n```\n"
    assert python_blocks(text) == [(2, "x = 1\n"), (8, "z = 2\n")]


@pytest.mark.parametrize(("path", "line", "code"), _cases())
def test_python_block_runs(path: Path, line: int, code: str) -> None:
    namespace: dict[str, object] = {"__name__": f"docs.{path.stem}"}
    compiled = compile(code, f"{path}:{line}", "exec")
    exec(compiled, namespace)


def _documented(name: str, text: str) -> bool:
    """``name`` appears as code: `name`, `name(...)`, `pkg.name`, `Class[...]` and the like."""
    pattern = rf"`(?:[\w.]*\.)?{re.escape(name)}[`(\[ ]"
    return re.search(pattern, text) is not None


@pytest.mark.parametrize(
    ("package", "names"),
    [("zerokv", list(zerokv.__all__)), ("zerokv_spec", list(zerokv_spec.__all__))],
)
def test_api_reference_is_complete(package: str, names: list[str]) -> None:
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    missing = [name for name in names if not _documented(name, text)]
    assert not missing, f"docs/api.md does not document {package}: {missing}"
