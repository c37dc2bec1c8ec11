"""pyarrow is the optional extra ``driftline[parquet]``: without it every command runs on JSON
Lines and CSV, and a Parquet file gets one clear error (pyarrow's import blocked in a child
interpreter, as if it were not installed)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from driftline.io_files import RecordWriter, count_records, read_records
from tests.specs import minimal_spec

ROOT = Path(__file__).resolve().parents[2]

# Runs `driftline ARGS...` with pyarrow made unimportable; prints whether it got imported.
WITHOUT_PYARROW = """
import importlib.abc, sys

class NoPyarrow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoPyarrow())
from driftline.cli import main
status = main(sys.argv[1:])
print("pyarrow imported:", any(m == "pyarrow" or m.startswith("pyarrow.") for m in sys.modules))
sys.exit(status)
"""

SPEC = minimal_spec("parquet-test")

EVENTS = [
    {"user_id": "u1", "ts": 1000, "amount": 2.5},
    {"user_id": "u2", "ts": 2000, "amount": 1.0},
]


def without_pyarrow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_PYARROW, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    spec = tmp_path / "pipeline.toml"
    spec.write_text(SPEC)
    jsonl = tmp_path / "events.jsonl"
    with RecordWriter(jsonl) as w:
        w.write_many(EVENTS)
    parquet = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_pylist(EVENTS), parquet)
    return {"spec": spec, "jsonl": jsonl, "parquet": parquet}


def test_without_pyarrow_json_lines_and_csv_work(files: dict[str, Path], tmp_path: Path) -> None:
    for out in ("features.jsonl", "features.csv"):
        r = without_pyarrow("replay", "-c", str(files["spec"]), "--input", str(files["jsonl"]),
                            "--output", str(tmp_path / out), "--no-progress")  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert "replayed 2 events: 2 feature vectors" in r.stdout
        assert "pyarrow imported: False" in r.stdout


def test_without_pyarrow_reading_parquet_says_how_to_install_it(files: dict[str, Path]) -> None:
    r = without_pyarrow("replay", "-c", str(files["spec"]), "--input", str(files["parquet"]),
                        "--output", str(files["parquet"].with_suffix(".out.jsonl")),
                        "--no-progress")  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.startswith(
        "driftline: error: reading .parquet needs pyarrow: pip install 'driftline[parquet]'"
    ), r.stderr
    assert "Traceback" not in r.stderr


def test_without_pyarrow_writing_parquet_fails_before_any_work(
    files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "features.parquet"
    r = without_pyarrow("replay", "-c", str(files["spec"]), "--input", str(files["jsonl"]),
                        "--output", str(out), "--no-progress")  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.startswith(
        "driftline: error: writing .parquet needs pyarrow: pip install 'driftline[parquet]'"
    ), r.stderr
    assert "replayed" not in r.stdout and not out.exists()


def test_with_pyarrow_parquet_round_trips(files: dict[str, Path], tmp_path: Path) -> None:
    assert list(read_records(files["parquet"])) == EVENTS
    assert count_records(files["parquet"]) == 2
    out = tmp_path / "copy.parquet"
    with RecordWriter(out) as w:
        w.write_many({"nested": {"a": e["amount"]}, **e} for e in EVENTS)
    assert [r["nested.a"] for r in read_records(out)] == [2.5, 1.0]


def test_pyarrow_is_the_parquet_extra_and_in_the_test_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("pyarrow")]
    extras = project["optional-dependencies"]
    assert [d for d in extras["parquet"] if d.startswith("pyarrow")]
    assert [d for d in extras["test"] if d.startswith("pyarrow")]
