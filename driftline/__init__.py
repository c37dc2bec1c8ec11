"""driftline: streaming features, online predictions and drift detection on Apache Kafka.

The one import package of the distribution. Two of its subpackages live in the repository's
top-level folders, as the project lays them out: ``streams/`` is :mod:`driftline.streams` (pure
computations) and ``agents/`` is :mod:`driftline.agents` (worker wiring). A wheel installs them
inside ``driftline/`` (``[tool.hatch.build.targets.wheel.sources]`` in ``pyproject.toml``); in a
source checkout (the editable install of ``make setup``) a finder below maps exactly those two
names to the folders, so the same imports work in both.
"""

from __future__ import annotations

__version__ = "0.1.0"

SUBPACKAGE_FOLDERS = ("streams", "agents")


def _map_checkout_folders() -> None:
    import importlib.abc
    import importlib.util
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    root = here.parent
    if (here / "streams").is_dir() or not (root / "streams" / "__init__.py").is_file():
        return  # installed from a wheel: the subpackages sit inside driftline/

    class _CheckoutFolders(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):  # type: ignore[no-untyped-def]
            prefix, _, name = fullname.partition(".")
            if prefix != __name__ or name not in SUBPACKAGE_FOLDERS:
                return None
            folder = root / name
            return importlib.util.spec_from_file_location(
                fullname, folder / "__init__.py", submodule_search_locations=[str(folder)]
            )

    if not any(type(f).__name__ == "_CheckoutFolders" for f in sys.meta_path):
        sys.meta_path.insert(0, _CheckoutFolders())


_map_checkout_folders()
