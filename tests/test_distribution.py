"""The built wheel's metadata: the Apache-2.0 license file, the version, the parquet extra."""

from __future__ import annotations

import email.parser
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import driftline

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def metadata(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, list[str]], set[str]]:
    """(METADATA headers, file names) of a freshly built wheel."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (whl,) = out.glob("driftline-*.whl")
    with zipfile.ZipFile(whl) as z:
        names = set(z.namelist())
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        msg = email.parser.Parser().parsestr(z.read(meta).decode())
        license_files = [n for n in names if "/licenses/" in n]
        assert len(license_files) == 1, license_files
        assert z.read(license_files[0]) == (ROOT / "LICENSE").read_bytes()
    headers: dict[str, list[str]] = {}
    for key, value in msg.items():
        headers.setdefault(key, []).append(value)
    return headers, names


def test_the_license_is_apache_2_and_ships_in_the_wheel(
    metadata: tuple[dict[str, list[str]], set[str]],
) -> None:
    headers, names = metadata
    assert headers["License-Expression"] == ["Apache-2.0"]
    assert any(n.endswith("/licenses/LICENSE") for n in names)
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n                           Version 2.0")
    for section in ("1. Definitions.", "4. Redistribution.", "9. Accepting Warranty"):
        assert section in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_the_wheel_carries_the_version_and_the_parquet_extra(
    metadata: tuple[dict[str, list[str]], set[str]],
) -> None:
    headers, _ = metadata
    assert headers["Version"] == [driftline.__version__]
    assert "parquet" in headers["Provides-Extra"]
    pyarrow = [r for r in headers["Requires-Dist"] if r.startswith("pyarrow")]
    assert pyarrow and all("extra ==" in r for r in pyarrow), pyarrow
    assert any(r.replace('"', "'").endswith("extra == 'parquet'") for r in pyarrow), pyarrow
