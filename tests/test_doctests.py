"""Every module's doctests, imported under its one package name (``driftline.…``).

pytest's ``--doctest-modules`` would import ``streams/x.py`` as ``streams.x``, a second copy of
``driftline.streams.x``; walking the package keeps one copy of each module.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import driftline


def package_modules() -> list[str]:
    """Every module of the driftline package, by its import name."""
    names = {"driftline"}
    for info in pkgutil.iter_modules(driftline.__path__, "driftline."):
        names.add(info.name)
    for sub in driftline.SUBPACKAGE_FOLDERS:
        package = importlib.import_module(f"driftline.{sub}")
        names.add(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            names.add(info.name)
    return sorted(names)


MODULES = package_modules()


def test_the_package_walk_finds_the_subpackages() -> None:
    assert "driftline.streams.features" in MODULES
    assert "driftline.streams.detectors.ks" in MODULES
    assert "driftline.agents.pipeline" in MODULES
    assert "driftline.cli" in MODULES
    assert all(name.startswith("driftline") for name in MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
