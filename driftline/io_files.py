"""Reading and writing record files: JSON Lines (optionally gzip), CSV and Parquet.

The format follows the file name: ``.jsonl``/``.ndjson``/``.json`` (one object per line),
``.jsonl.gz``/``.json.gz``, ``.csv`` (header row; cells converted by the spec's field types),
``.parquet`` (via pyarrow, the optional extra ``driftline[parquet]``: imported only when a
Parquet file is read or written, so the other formats work without it).
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import orjson

from driftline.errors import DriftlineError

FORMATS = ("jsonl", "jsonl.gz", "csv", "parquet")

PARQUET_EXTRA = "pip install 'driftline[parquet]'"


def _pyarrow(doing: str) -> tuple[ModuleType, ModuleType]:
    """``(pyarrow, pyarrow.parquet)``, or a DriftlineError saying how to install them."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as e:
        raise DriftlineError(f"{doing} .parquet needs pyarrow: {PARQUET_EXTRA} ({e})") from e
    return pyarrow, pyarrow.parquet


def file_format(path: str | Path) -> str:
    name = Path(path).name.lower()
    if name.endswith((".jsonl.gz", ".ndjson.gz", ".json.gz")):
        return "jsonl.gz"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".parquet"):
        return "parquet"
    raise DriftlineError(
        f"cannot tell the format of {path}: name it *.jsonl, *.jsonl.gz, *.csv or *.parquet"
    )


def _convert_cell(value: str, ftype: str | None) -> Any:
    if value == "":
        return None
    if ftype == "float":
        try:
            return float(value)
        except ValueError:
            return value
    if ftype in ("int", "timestamp"):
        try:
            return int(value)
        except ValueError:
            return value
    if ftype == "bool":
        low = value.lower()
        return True if low == "true" else False if low == "false" else value
    return value


def read_records(
    path: str | Path, fields: Mapping[str, str] | None = None
) -> Iterator[dict[str, Any]]:
    """Yield one dict per record. CSV cells are converted to the spec's ``fields`` types
    (a cell that does not convert is kept as text, so validation reports it)."""
    fmt = file_format(path)
    if fmt in ("jsonl", "jsonl.gz"):
        opener: Any = gzip.open if fmt == "jsonl.gz" else open
        with opener(path, "rb") as fh:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        yield orjson.loads(line)
                    except orjson.JSONDecodeError as e:
                        raise DriftlineError(f"{path}:{n}: not a JSON object: {e}") from e
    elif fmt == "csv":
        types = fields or {}
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                yield {k: _convert_cell(v, types.get(k)) for k, v in row.items()}
    else:
        _, pq = _pyarrow("reading")
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=65_536):
            yield from batch.to_pylist()


def count_records(path: str | Path) -> int | None:
    """Number of records when cheap to know (Parquet metadata, or lines of a plain file)."""
    fmt = file_format(path)
    if fmt == "parquet":
        _, pq = _pyarrow("reading")
        return int(pq.ParquetFile(path).metadata.num_rows)
    if fmt == "jsonl":
        with open(path, "rb") as fh:
            return sum(1 for line in fh if line.strip())
    if fmt == "csv":
        with open(path, "rb") as fh:
            return max(sum(1 for _ in fh) - 1, 0)
    return None


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in doc.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


class RecordWriter:
    """Writes dicts to a file in the format its name says; nested dicts are flattened with
    dots for CSV and Parquet (``features.amount_mean_1m``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.format = file_format(path)
        self._fh: IO[bytes] | IO[str] | None = None
        self._csv: csv.DictWriter[str] | None = None
        self._rows: list[dict[str, Any]] = []
        self.count = 0
        if self.format == "parquet":
            _pyarrow("writing")  # before any work is done for a file that cannot be written
        if self.format == "jsonl":
            self._fh = open(self.path, "wb")
        elif self.format == "jsonl.gz":
            self._fh = gzip.open(self.path, "wb")

    def write_many(self, docs: Iterable[Mapping[str, Any]]) -> None:
        for doc in docs:
            self.count += 1
            if self.format in ("jsonl", "jsonl.gz"):
                self._fh.write(orjson.dumps(doc) + b"\n")  # type: ignore[union-attr,arg-type]
            elif self.format == "csv":
                row = _flatten(doc)
                if self._csv is None:
                    self._fh = open(self.path, "w", newline="")
                    self._csv = csv.DictWriter(self._fh, fieldnames=list(row))
                    self._csv.writeheader()
                self._csv.writerow(row)
            else:
                self._rows.append(_flatten(doc))

    def close(self) -> None:
        if self.format == "parquet":
            pa, pq = _pyarrow("writing")
            pq.write_table(pa.Table.from_pylist(self._rows), self.path)
        elif self._fh is not None:
            self._fh.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
