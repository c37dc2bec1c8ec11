"""The public Python API: driftline.detectors, driftline.features, driftline.windows, and the
README sections that document it (the Python API example runs; the hyperparameter table lists
every registered detector's parameters with their real defaults)."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from driftline.streams.aggregators import AGGREGATORS
from driftline.streams.detectors.factory import DETECTORS, build_detector, detector_parameters

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PUBLIC = ("driftline.detectors", "driftline.features", "driftline.windows")


def section(title: str) -> str:
    """The README text under the heading ``title`` (any level), up to the next heading."""
    m = re.search(rf"^(#+) {re.escape(title)}\n(.*?)(?=^#+ |\Z)", README, re.M | re.S)
    assert m, f"README has no section {title!r}"
    return m.group(2)


# --------------------------------------------------------------------------- modules
@pytest.mark.parametrize("name", PUBLIC)
def test_public_module_exports_what_its_docstring_names(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert len(set(exported)) == len(exported) and exported
    doc = module.__doc__ or ""
    for item in exported:
        obj = getattr(module, item)
        assert f"`{item}`" in doc, f"{name} docstring does not name {item}"
        internal = getattr(obj, "__module__", "") or ""
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert internal.startswith("driftline.streams."), (item, internal)
            assert obj.__doc__, item
    public = {n for n in vars(module) if not n.startswith("_")} - {"annotations"}
    assert public == set(exported), f"{name}: names outside __all__: {public - set(exported)}"


def test_every_registered_detector_and_aggregator_is_public() -> None:
    detectors = importlib.import_module("driftline.detectors")
    features = importlib.import_module("driftline.features")
    for cls in DETECTORS.values():
        assert getattr(detectors, cls.__name__) is cls and cls.__name__ in detectors.__all__
    for agg in AGGREGATORS.values():
        assert getattr(features, agg.__name__) is agg and agg.__name__ in features.__all__
    assert detectors.DETECTORS is DETECTORS and features.AGGREGATORS is AGGREGATORS


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_class_has_a_seeded_example(name: str) -> None:
    module = importlib.import_module(name)
    classes = [getattr(module, n) for n in module.__all__ if inspect.isclass(getattr(module, n))]
    for cls in classes:
        doc = inspect.getdoc(cls) or ""
        assert "Examples\n--------\n" in doc, cls.__name__
        examples = doc.split("Examples\n--------\n", 1)[1]
        assert ">>> " in examples and "np.random.default_rng(" in examples, cls.__name__


def test_the_public_modules_do_not_load_the_worker() -> None:
    code = (
        "import sys, driftline.detectors, driftline.features, driftline.windows; "
        "print(sorted(m for m in ('faust', 'confluent_kafka', 'aiokafka', 'driftline.agents') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- README
def test_readme_python_api_example_runs_and_prints_what_it_says() -> None:
    text = section("Python API")
    m = re.search(r"```python\n(.*?)```", text, re.S)
    assert m, "no python block in the Python API section"
    code = m.group(1)
    lines = [ln for ln in code.splitlines() if ln.strip()]
    assert len(lines) <= 6, "the example is meant to stay short"
    expected = lines[-1].split("# ", 1)[1].strip()  # the printed output, as a comment
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    assert out.getvalue().strip() == expected


def hyperparameter_rows() -> list[tuple[list[str], str, str]]:
    """``(detectors, key, default cell)`` per row of the README's hyperparameter table."""
    rows = []
    for line in section("Detector hyperparameters").splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        names = re.findall(r"`(\w+)`", cells[0])
        key = cells[1].strip("`")
        rows.append((names, key, cells[2]))
    return rows


def literal(cell: str) -> tuple[bool, Any]:
    """``(True, value)`` when the cell is one backticked TOML value, else ``(False, None)``."""
    m = re.fullmatch(r"`([^`]+)`", cell)
    if not m:
        return False, None
    try:
        return True, tomllib.loads(f"v = {m.group(1)}")["v"]
    except tomllib.TOMLDecodeError:
        return False, None


def test_readme_hyperparameter_table_covers_every_registered_detector() -> None:
    rows = hyperparameter_rows()
    listed: dict[tuple[str, str], str] = {}
    for names, key, default in rows:
        for name in names:
            assert name in DETECTORS, f"README lists unknown detector {name!r}"
            assert (name, key) not in listed, f"README lists {name}.{key} twice"
            listed[(name, key)] = default
    wanted = {(name, p) for name in DETECTORS for p in detector_parameters(name)}
    assert set(listed) == wanted, (
        f"missing: {sorted(wanted - set(listed))}; extra: {sorted(set(listed) - wanted)}"
    )
    for (name, key), cell in sorted(listed.items()):
        signature_default = inspect.signature(DETECTORS[name].__init__).parameters[key].default
        is_value, value = literal(cell)
        if is_value:
            # the value the detector really uses (psi/jsd resolve a None threshold)
            actual = getattr(build_detector(name), key, signature_default)
            assert value == actual and type(value) is type(actual), (name, key, cell, actual)
        else:
            assert signature_default is None, (name, key, cell, signature_default)
