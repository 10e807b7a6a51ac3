"""The package metadata and the wheel check (``tests/check_wheel.py``, run by ``nox -s
package``) and the noxfile's translation of pip's package sources for uv.

The wheel check must fail on a wheel that lacks a module, a ``py.typed`` marker or the
license, or that carries anything else (tests, docs, a stray file); these tests build such
wheels' file lists from the real one's and show that each is reported.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


check_wheel = _load("check_wheel", ROOT / "tests" / "check_wheel.py")
noxfile = _load("zerokv_noxfile", ROOT / "noxfile.py")

INFO = "zerokv-0.1.0.dist-info"
GOOD_META = [f"{INFO}/{n}" for n in ("METADATA", "WHEEL", "RECORD", "top_level.txt")] + [
    f"{INFO}/licenses/LICENSE"
]


def good_names() -> list[str]:
    return sorted(check_wheel.expected_package_files()) + GOOD_META


def problems(names: list[str]) -> list[str]:
    result: list[str] = check_wheel.contents_problems(names, check_wheel.expected_package_files())
    return result


def test_expected_files_are_both_packages_with_py_typed() -> None:
    files = check_wheel.expected_package_files()
    assert {"zerokv/py.typed", "zerokv_spec/py.typed", "zerokv/__init__.py"} <= files
    assert "zerokv/bench/__main__.py" in files and "zerokv_spec/drivers/manager_drivers.py" in files
    assert all(f.split("/")[0] in ("zerokv", "zerokv_spec") for f in files)
    assert not any("__pycache__" in f for f in files)


def test_a_complete_wheel_passes() -> None:
    assert problems(good_names()) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda n: [x for x in n if x != "zerokv/py.typed"], "zerokv/py.typed is missing"),
        (lambda n: [x for x in n if x != "zerokv_spec/py.typed"], "zerokv_spec/py.typed"),
        (lambda n: [x for x in n if x != "zerokv/manager.py"], "missing zerokv/manager.py"),
        (lambda n: [*n, "tests/test_keys.py"], "unexpected file tests/test_keys.py"),
        (lambda n: [*n, "docs/index.md"], "unexpected file docs/index.md"),
        (lambda n: [*n, "zerokv/notes.txt"], "unexpected file zerokv/notes.txt"),
        (lambda n: [x for x in n if not x.endswith("LICENSE")], "licenses/LICENSE is missing"),
        (lambda n: [x for x in n if not x.endswith("RECORD")], "RECORD is missing"),
        (lambda n: [*n, f"{INFO}/entry_points.txt"], "unexpected file"),
        (lambda n: [*n, "other-1.0.dist-info/METADATA"], "one .dist-info directory"),
    ],
)
def test_the_contents_check_bites(change: Callable[[list[str]], list[str]], expected: str) -> None:
    found = problems(change(good_names()))
    assert any(expected in p for p in found), found


GOOD_METADATA = (
    "Metadata-Version: 2.4\nName: zerokv\nVersion: 0.1.0\n"
    "License-Expression: Apache-2.0\nLicense-File: LICENSE\n"
)


def test_the_metadata_check_bites() -> None:
    assert check_wheel.metadata_problems(GOOD_METADATA) == []
    no_license = GOOD_METADATA.replace("License-Expression: Apache-2.0\n", "")
    assert check_wheel.metadata_problems(no_license)
    mit = GOOD_METADATA.replace("Apache-2.0", "MIT")
    assert check_wheel.metadata_problems(mit)
    no_file = GOOD_METADATA.replace("License-File: LICENSE\n", "")
    assert check_wheel.metadata_problems(no_file)


def test_pyproject_declares_the_license_and_the_license_is_apache() -> None:
    lines = (ROOT / "pyproject.toml").read_text().splitlines()
    assert 'license = "Apache-2.0"' in lines
    assert 'license-files = ["LICENSE"]' in lines
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert (ROOT / "CHANGELOG.md").read_text().startswith("# Changelog")


def test_package_is_a_default_nox_session() -> None:
    assert "package" in noxfile.nox.options.sessions


# --------------------------------------------------------------------------- pip -> uv

PIP_CONFIG = """\
:env:.cert='/etc/ssl/certs/ca-certificates.crt'
:env:.find-links='/opt/wheels'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='https://mirror.example/simple file:///does/not/exist'
global.find-links='/somewhere/else'
install.index-url='https://index.example/simple'
global.index-url='https://ignored.example/simple'
freeze.find-links='/not/for/install'
"""


def test_pip_config_precedence() -> None:
    pip = noxfile.parse_pip_config(PIP_CONFIG)
    assert pip["find-links"] == "/opt/wheels"  # a PIP_* variable beats every file
    assert pip["index-url"] == "https://index.example/simple"  # [install] beats [global]
    assert pip["constraint"] == "/etc/xdg/pip/constraints.txt"
    assert pip["cert"] == "/etc/ssl/certs/ca-certificates.crt"


def test_uv_gets_pips_sources() -> None:
    env = noxfile.uv_environment(noxfile.parse_pip_config(PIP_CONFIG), {})
    assert env == {
        "UV_FIND_LINKS": "/opt/wheels",
        "UV_INDEX_URL": "https://index.example/simple",
        # pip ignores a file:// index that is not there; so does the translation
        "UV_EXTRA_INDEX_URL": "https://mirror.example/simple",
        "UV_CONSTRAINT": "/etc/xdg/pip/constraints.txt",
        "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
        "UV_INDEX_STRATEGY": "unsafe-best-match",
    }


def test_uv_list_separators_and_user_choices() -> None:
    pip = {"find-links": "/a  /b\n/c", "extra-index-url": "https://x/simple https://y/simple"}
    env = noxfile.uv_environment(pip, {"UV_INDEX_STRATEGY": "first-index"})
    assert env["UV_FIND_LINKS"] == "/a,/b,/c"  # uv splits find-links on commas
    assert env["UV_EXTRA_INDEX_URL"] == "https://x/simple https://y/simple"
    assert "UV_INDEX_STRATEGY" not in env  # set by the user: left alone
    assert noxfile.uv_environment({"no-index": "true"}, {})["UV_NO_INDEX"] == "1"
    assert "UV_NO_INDEX" not in noxfile.uv_environment({"no-index": "false"}, {})
