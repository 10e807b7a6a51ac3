"""Checks of the built wheel, run by the ``package`` nox session (not collected by pytest).

``python tests/check_wheel.py contents WHEEL`` checks that the wheel holds exactly the two
packages, every ``.py`` file of ``impl/zerokv`` and ``spec/zerokv_spec`` and their
``py.typed`` markers, plus the ``.dist-info`` metadata with the license, and nothing else
(no tests, docs, benchmark output or caches); and that the metadata names the license.

``python tests/check_wheel.py run`` (in a fresh environment where the wheel is installed,
from a directory outside the repository) imports both packages from that environment's
``site-packages`` and runs one root step and one simulation step of the batched API, and
the LightZero adapter once.

`tests/test_packaging.py` shows that the contents check fails on wheels with a missing or
an extra file.
"""

from __future__ import annotations

import sys
import zipfile
from collections.abc import Iterable
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Package name -> its source directory in the repository.
PACKAGES: dict[str, Path] = {
    "zerokv": ROOT / "impl" / "zerokv",
    "zerokv_spec": ROOT / "spec" / "zerokv_spec",
}
#: Files every ``.dist-info`` directory of this wheel must hold (``licenses/`` apart).
DIST_INFO_FILES = frozenset({"METADATA", "WHEEL", "RECORD", "top_level.txt"})
LICENSE_NAME = "Apache-2.0"


def expected_package_files(packages: dict[str, Path] = PACKAGES) -> set[str]:
    """Wheel paths of every module and ``py.typed`` of the packages' source trees."""
    files: set[str] = set()
    for name, source in packages.items():
        for path in source.rglob("*"):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            if path.suffix == ".py" or path.name == "py.typed":
                files.add(f"{name}/{path.relative_to(source).as_posix()}")
    return files


def contents_problems(names: Iterable[str], expected: set[str]) -> list[str]:
    """What is wrong with a wheel whose archive holds `names` (empty: nothing)."""
    names = list(names)
    problems: list[str] = []
    infos = {n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")}
    if len(infos) != 1:
        return [f"expected one .dist-info directory, found {sorted(infos)}"]
    info = infos.pop()
    meta = {n.split("/", 1)[1] for n in names if n.startswith(info + "/")}
    for required in sorted(DIST_INFO_FILES - meta):
        problems.append(f"{info}/{required} is missing")
    if "licenses/LICENSE" not in meta:
        problems.append(f"{info}/licenses/LICENSE is missing")
    unexpected_meta = meta - DIST_INFO_FILES - {"licenses/LICENSE"}
    problems += [f"unexpected file {info}/{m}" for m in sorted(unexpected_meta)]
    packaged = {n for n in names if not n.startswith(info + "/") and not n.endswith("/")}
    problems += [f"missing {p}" for p in sorted(expected - packaged)]
    problems += [f"unexpected file {p}" for p in sorted(packaged - expected)]
    for name in PACKAGES:
        if f"{name}/py.typed" not in packaged:
            problems.append(f"{name}/py.typed is missing (the package would not be typed)")
    return problems


def metadata_problems(metadata: str) -> list[str]:
    """What is wrong with the wheel's METADATA text (empty: nothing)."""
    fields = Parser().parsestr(metadata)
    problems = []
    if fields.get("License-Expression") != LICENSE_NAME:
        problems.append(
            f"License-Expression is {fields.get('License-Expression')!r}, not {LICENSE_NAME!r}"
        )
    if "LICENSE" not in (fields.get_all("License-File") or []):
        problems.append("License-File: LICENSE is missing")
    if fields.get("Name") != "zerokv":
        problems.append(f"Name is {fields.get('Name')!r}")
    return problems


def check_contents(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        problems = contents_problems(names, expected_package_files())
        metadata = [n for n in names if n.endswith(".dist-info/METADATA")]
        if metadata:
            problems += metadata_problems(archive.read(metadata[0]).decode("utf-8"))
    return problems


def run_example() -> None:
    """One root step and one simulation step, from the installed wheel."""
    import torch

    import zerokv
    import zerokv_spec
    from zerokv import CacheConfig, CacheManager, Correction, Tier, append
    from zerokv.lightzero import KVCacheManager

    for module in (zerokv, zerokv_spec):
        where = Path(module.__file__ or "").resolve()
        if ROOT in where.parents:
            raise SystemExit(f"{module.__name__} was imported from the repository ({where})")
        if Path(sys.prefix).resolve() not in where.parents:
            raise SystemExit(f"{module.__name__} is not installed in {sys.prefix} ({where})")
    cfg = CacheConfig.legacy(
        env_num=2, num_layers=1, num_heads=2, head_dim=4, context_length=8, num_simulations=2
    )
    mgr = CacheManager(cfg)
    corr = Correction.zero(cfg.num_layers, cfg.num_heads, cfg.head_dim, cfg.context_length)
    gen = torch.Generator().manual_seed(0)
    env_ids = [0, 1]
    roots = torch.randn(2, 8, generator=gen)
    keys, fps = mgr.keys_of(roots)
    found = mgr.lookup_many(env_ids, keys, fps, tiers="root")
    batch = append(mgr.gather(found), torch.randn(1, 2, 2, 2, 2, 4, generator=gen), 8)
    mgr.store_root_batch(env_ids, keys, batch, corr, fps)
    mgr.clear_recurrent()
    mgr.begin_search(2)
    found = mgr.lookup_many(env_ids, keys, fps)
    assert found.tier.tolist() == [Tier.ROOT, Tier.ROOT], found.tier
    batch = mgr.gather_reserve(found, 2)
    assert batch.lengths.tolist() == [4, 4]
    children = torch.randn(2, 8, generator=gen)
    child_keys, child_fps = mgr.keys_of(children)
    mgr.store_recurrent_batch(env_ids, child_keys, batch, corr, child_fps)
    found = mgr.lookup_many(env_ids, child_keys, child_fps)
    assert found.tier.tolist() == [Tier.RECURRENT, Tier.RECURRENT], found.tier
    mgr.end_search()
    adapter = KVCacheManager(
        {"num_simulations": 2, "num_layers": 1, "num_heads": 2, "embed_dim": 8,
         "context_length": 8},
        env_num=1, device="cpu", dtype=torch.float32,
    )  # fmt: skip
    assert adapter.hierarchical_get(0, 1) is None
    assert zerokv_spec.SlotPool(2).capacity == 2
    print(f"zerokv {zerokv.__file__}: one root step and one simulation step ran")


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "contents":
        problems = check_contents(Path(argv[1]))
        for problem in problems:
            print(f"wheel: {problem}", file=sys.stderr)
        if not problems:
            print(f"{argv[1]}: contents and metadata as expected")
        return 1 if problems else 0
    if argv == ["run"]:
        run_example()
        return 0
    print("usage: check_wheel.py contents WHEEL | check_wheel.py run", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
