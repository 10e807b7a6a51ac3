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
from typing import Any

import torch

from zerokv.errors import ConfigError
from zerokv.lightzero.manager import KVCacheManager

__all__ = ["LIGHTZERO_MODULE", "install", "installed", "is_installed", "uninstall"]

#: The LightZero module whose ``KVCacheManager`` the world model instantiates.
LIGHTZERO_MODULE = "lzero.model.unizero_world_models.kv_cache_manager"

#: Module name -> LightZero's own class, while zerokv's is installed there.
_replaced: dict[str, type] = {}


def _module(module: ModuleType | None) -> ModuleType:
    if module is not None:
        if not isinstance(module, ModuleType):
            raise ConfigError(
                f"install(module) takes LightZero's kv_cache_manager module (or None: "
                f"{LIGHTZERO_MODULE}), got {type(module).__name__} {module!r}"
            )
        return module
    try:
        return importlib.import_module(LIGHTZERO_MODULE)
    except ImportError as err:
        raise ImportError(
            f"zerokv.lightzero.install() needs LightZero main (the module {LIGHTZERO_MODULE}, "
            "present from LightZero commit 9f717c80 on; lightzero==0.2.0 has no cache "
            f"manager): {err}"
        ) from err


def _with_options(options: dict[str, Any]) -> type[KVCacheManager]:
    """``KVCacheManager`` with zerokv's keyword-only options preset (LightZero passes none)."""
    allowed = {"device", "dtype", "shadow", "hit_rate_window"}
    unknown = set(options) - allowed
    if unknown:
        raise ConfigError(f"install() takes the options {sorted(allowed)}, got {sorted(unknown)}")
    _check_options(options)

    class Configured(KVCacheManager):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{**options, **kwargs})

    Configured.__name__ = Configured.__qualname__ = "KVCacheManager"
    Configured.__doc__ = f"zerokv.lightzero.KVCacheManager with {options} (install())."
    return Configured


def _check_options(options: dict[str, Any]) -> None:
    """The option values, checked now as the manager's constructor would check them when
    LightZero builds it (``ConfigError``), so a bad install fails at install time."""
    from zerokv.lightzero.manager import _canonical_device, _count

    if options.get("device") is not None:
        _canonical_device(options["device"])
    dtype = options.get("dtype")
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise ConfigError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    if "shadow" in options and not isinstance(options["shadow"], bool):
        raise ConfigError(f"shadow must be a bool, got {options['shadow']!r}")
    if "hit_rate_window" in options:
        _count(options["hit_rate_window"], "hit_rate_window")


def install(module: ModuleType | None = None, **options: Any) -> type:
    """Make LightZero build ``zerokv.lightzero.KVCacheManager``; returns the class replaced.

    ``module`` defaults to LightZero's ``kv_cache_manager`` module (imported). ``options``
    are zerokv's keyword-only constructor options for every manager LightZero builds
    (``shadow=True``, ``hit_rate_window=``, ``device=``, ``dtype=``). Installing again
    replaces the options and keeps LightZero's class for ``uninstall()``. World models
    must be built after this call, with ``use_new_cache_manager=True`` in their config.
    """
    mod = _module(module)
    current = getattr(mod, "KVCacheManager", None)
    if not isinstance(current, type):
        raise ImportError(f"{mod.__name__} has no KVCacheManager class to replace")
    cls = _with_options(options) if options else KVCacheManager
    if not issubclass(current, KVCacheManager):
        _replaced[mod.__name__] = current
    mod.KVCacheManager = cls  # type: ignore[attr-defined]
    return _replaced.get(mod.__name__, current)


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
    current = getattr(_module(module), "KVCacheManager", None)
    return isinstance(current, type) and issubclass(current, KVCacheManager)


@contextmanager
def installed(module: ModuleType | None = None, **options: Any) -> Iterator[type]:
    """``install()`` for the duration of a ``with`` block (yields LightZero's class).

    Afterwards the module holds again what it held before (zerokv's class with the options
    it had, if it was installed already).
    """
    before = getattr(_module(module), "KVCacheManager", None)
    was = is_installed(module)
    original = install(module, **options)
    try:
        yield original
    finally:
        if was:
            _module(module).KVCacheManager = before  # type: ignore[attr-defined]
        else:
            uninstall(module)
