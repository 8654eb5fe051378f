"""Every module of the package declares ``__all__``, and every name in it exists."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import pytest

import watchkeeper

#: Modules that need an optional dependency, and that dependency.
OPTIONAL = {"watchkeeper.apps.cartoon": "cv2", "watchkeeper.apps.img2video": "av"}


def module_names() -> list[str]:
    names = [watchkeeper.__name__]
    for info in pkgutil.walk_packages(watchkeeper.__path__, prefix=f"{watchkeeper.__name__}."):
        names.append(info.name)
    return sorted(names)


def load(name: str) -> ModuleType:
    if name in OPTIONAL:
        try:
            importlib.import_module(OPTIONAL[name])
        except ImportError:
            pytest.skip(f"{name} needs {OPTIONAL[name]}, which does not import here")
    return importlib.import_module(name)


def test_the_walk_finds_the_package() -> None:
    names = module_names()
    for expected in ("watchkeeper.worker.loop", "watchkeeper.http.errors", "watchkeeper.apps.chaos"):
        assert expected in names


@pytest.mark.parametrize("name", module_names())
def test_all_is_declared(name: str) -> None:
    module = load(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    assert isinstance(module.__all__, list | tuple)
    assert all(isinstance(n, str) for n in module.__all__)


@pytest.mark.parametrize("name", module_names())
def test_every_name_in_all_is_defined(name: str) -> None:
    module = load(name)
    names = getattr(module, "__all__", [])
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names undefined {missing}"
    assert len(set(names)) == len(names), f"{name}.__all__ has duplicates"
