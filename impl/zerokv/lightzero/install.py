"""``install()`` / ``uninstall()``: make LightZero's world model build zerokv's manager.

This module owns the one-line way in. LightZero main's ``WorldModel`` builds its cache
manager, when its config says ``use_new_cache_manager=True``, with
``from .kv_cache_manager import KVCacheManager`` inside the constructor
(``_initialize_cache_structures``), so the class is looked up in the module
``lzero.model.unizero_world_models.kv_cache_manager`` at the moment each world model is
built. ``install()`` puts ``zerokv.lightzero.KVCacheManager`` there (keeping LightZero's
class aside), ``uninstall()`` puts LightZero's back; world models built in between use
zerokv's manager, the others are untouched. ``installed()`` does both around a block.

LightZero 0.2.0 (the release on the package index) has no ``kv_cache_manager`` module at
all - its world model has only the legacy dict caches - so ``install()`` needs LightZero
main (from commit 9f717c80 on; see docs/migration.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from zerokv.lightzero.manager import KVCacheManager

__all__ = ["LIGHTZERO_MODULE", "install", "installed", "is_installed", "uninstall"]

#: The LightZero module whose ``KVCacheManager`` the world model instantiates.
LIGHTZERO_MODULE = "lzero.model.unizero_world_models.kv_cache_manager"

#: Module name -> LightZero's own class, while zerokv's is installed there.
_replaced: dict[str, type] = {}


def _module(module: ModuleType | None) -> ModuleType:
    if module is not None:
        return module
    try:
        return importlib.import_module(LIGHTZERO_MODULE)
    except ImportError as err:
        raise ImportError(
            f"zerokv.lightzero.install() needs LightZero main (the module {LIGHTZERO_MODULE}, "
            "present from LightZero commit 9f717c80 on; lightzero==0.2.0 has no cache "
            f"manager): {err}"
        ) from err


def install(module: ModuleType | None = None) -> type:
    """Make LightZero build ``zerokv.lightzero.KVCacheManager``; returns the class replaced.

    ``module`` defaults to LightZero's ``kv_cache_manager`` module (imported). Installing
    twice is harmless; ``uninstall()`` restores LightZero's class. World models must be
    built after this call, with ``use_new_cache_manager=True`` in their config.
    """
    mod = _module(module)
    current = getattr(mod, "KVCacheManager", None)
    if not isinstance(current, type):
        raise ImportError(f"{mod.__name__} has no KVCacheManager class to replace")
    if current is KVCacheManager:
        return _replaced.get(mod.__name__, current)
    _replaced[mod.__name__] = current
    mod.KVCacheManager = KVCacheManager  # type: ignore[attr-defined]
    return current


def uninstall(module: ModuleType | None = None) -> bool:
    """Put LightZero's own class back; False when zerokv's was not installed there."""
    mod = _module(module)
    original = _replaced.pop(mod.__name__, None)
    if original is None:
        return False
    mod.KVCacheManager = original  # type: ignore[attr-defined]
    return True


def is_installed(module: ModuleType | None = None) -> bool:
    """Whether LightZero's world model would build zerokv's manager now."""
    return getattr(_module(module), "KVCacheManager", None) is KVCacheManager


@contextmanager
def installed(module: ModuleType | None = None) -> Iterator[type]:
    """``install()`` for the duration of a ``with`` block (yields LightZero's class)."""
    was = is_installed(module)
    original = install(module)
    try:
        yield original
    finally:
        if not was:
            uninstall(module)
