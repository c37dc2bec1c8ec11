"""The distribution: one import package, no import cycles, layers that only import downwards,
and offline commands that do not pay for the worker's faust host."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Folder of the repository -> import prefix in the wheel.
SOURCES = {"driftline": "driftline", "streams": "driftline.streams", "agents": "driftline.agents"}

# Lower layers never import higher ones. Modules of driftline/ not listed are layer 2 (spec,
# files, schemas, the local broker launcher); the CLI sits on top.
LAYERS: list[tuple[str, int]] = [
    ("driftline.errors", 0),
    ("driftline.streams", 1),
    ("driftline.agents", 3),
    ("driftline.cli", 4),
    ("driftline.kafka_cli", 4),
]

# What streams/ (the pure computations) must never import.
NOT_IN_STREAMS = ("faust", "mode", "aiokafka", "confluent_kafka", "asyncio", "prometheus_client")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    parts = [SOURCES[rel.parts[0]], *rel.parts[1:]]
    parts[-1] = parts[-1].removesuffix(".py")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_files() -> dict[str, Path]:
    files = {}
    for folder in SOURCES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            files[module_name(path)] = path
    return files


def imports_of(name: str, path: Path) -> set[str]:
    """Every module ``path`` imports, at module level or inside functions."""
    out: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{alias.name}" for alias in node.names)
    return out


def internal_graph() -> dict[str, set[str]]:
    files = package_files()
    return {
        name: {m for m in imports_of(name, path) if m in files and m != name}
        for name, path in files.items()
    }


def layer(name: str) -> int:
    for prefix, level in LAYERS:
        if name == prefix or name.startswith(prefix + "."):
            return level
    return 2


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    assert cycles(internal_graph()) == []


def test_layers_only_import_downwards() -> None:
    upward = [
        f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
        for a, targets in internal_graph().items()
        for b in sorted(targets)
        if layer(b) > layer(a)
    ]
    assert upward == []


def test_streams_is_pure() -> None:
    bad = []
    for name, path in package_files().items():
        if name.startswith("driftline.streams"):
            for mod in imports_of(name, path):
                if mod.split(".")[0] in NOT_IN_STREAMS:
                    bad.append(f"{name} imports {mod}")
    assert bad == []


def test_code_imports_only_the_driftline_namespace() -> None:
    """``import streams`` would load a second copy of every module in a source checkout."""
    bare = []
    for folder in ("driftline", "streams", "agents", "tests", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for mod in imports_of("x", path):
                if mod.split(".")[0] in ("streams", "agents"):
                    bare.append(f"{path.relative_to(ROOT)}: {mod}")
    assert bare == []


@pytest.mark.parametrize(
    "module",
    [
        "driftline.cli",
        "driftline.spec",
        "driftline.agents.replay",
        "driftline.agents.modes",
        "driftline.agents.status_page",
        "driftline.streams.features",
    ],
)
def test_offline_modules_import_no_faust(module: str) -> None:
    code = (
        f"import sys, {module}; "
        "print(sorted(m for m in ('faust', 'mode', 'aiokafka') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (whl,) = out.glob("driftline-*.whl")
    return whl


def test_the_wheel_installs_one_import_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"driftline", f"driftline-{wheel.name.split('-')[1]}.dist-info"}
    for expected in (
        "driftline/streams/features.py",
        "driftline/streams/detectors/ks.py",
        "driftline/agents/pipeline.py",
        "driftline/_schemas/spec.schema.json",
        "driftline/py.typed",
    ):
        assert expected in names
    assert not [n for n in names if "__pycache__" in n]


def test_the_installed_wheel_imports_from_itself(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    code = (
        "import driftline.streams.features as f, driftline.agents.replay as r, "
        "driftline.schemas as s; print(f.__file__); print(r.__file__); print(s.schemas_dir())"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
        cwd=tmp_path,
    )  # fmt: skip
    for line in out.stdout.split():
        assert line.startswith(str(target / "driftline")), line


def test_the_editable_install_builds_and_points_at_the_checkout(tmp_path: Path) -> None:
    """``make setup`` installs with ``pip install -e``: hatchling must build that wheel (it refuses
    prefix-changing source rewrites unless dev-mode-dirs says what to put on sys.path)."""
    from hatchling.builders.wheel import WheelBuilder

    (built,) = WheelBuilder(str(ROOT)).build(directory=str(tmp_path), versions=["editable"])
    names = zipfile.ZipFile(built).namelist()
    (pth,) = [n for n in names if n.endswith(".pth")]
    assert zipfile.ZipFile(built).read(pth).decode().split() == [str(ROOT)]
