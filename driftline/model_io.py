"""Saving and loading river models with a version string.

A model file is a pickle: loading one runs whatever code it names, so driftline loads only the
file the spec's ``model.path`` names (the operator's own file, like the spec itself). Nothing
that comes from Kafka is ever unpickled: the online-learned copy of a model goes to the state
changelog as plain data (`driftline.streams.plain_state`), never as a pickle.

File layout (``driftline-model/2``): the line ``DRIFTLINE-MODEL/2``, one JSON line
``{"version", "bytes", "sha256"}``, then the model's pickle. The checksum is verified before
anything is unpickled, so a truncated or damaged file is refused with a clear message instead
of being fed to pickle (which may fail in any way, or try to allocate gigabytes for a length
field with one bit flipped). Files of the first layout (a pickled dict, ``driftline-model/1``)
still load, without that check.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

from driftline.errors import DriftlineError

FORMAT = "driftline-model/1"
MAGIC = b"DRIFTLINE-MODEL/2\n"
#: Longest header line read (a version string and two numbers).
MAX_HEADER = 4096


def save_model(model: Any, path: str | Path, version: str | None = None) -> str:
    """Pickle ``model`` with a version (default: a hash of the pickle) and a checksum; return
    the version."""
    blob = pickle.dumps(model)
    digest = hashlib.sha256(blob).hexdigest()
    version = version or "sha-" + digest[:12]
    header = json.dumps({"version": version, "bytes": len(blob), "sha256": digest}).encode()
    Path(path).write_bytes(MAGIC + header + b"\n" + blob)
    return version


def _unpickle(path: str | Path, blob: bytes, hint: str) -> Any:
    try:
        return pickle.loads(blob)
    # a file that is not a pickle, or a damaged one, fails in many ways (b"garbage" raises
    # ValueError; a damaged object's __setstate__ anything): report each the same
    except Exception as e:
        raise DriftlineError(
            f"cannot load model {path} ({type(e).__name__}: {str(e)[:200]}); {hint}"
        ) from None


def _checked_blob(path: str | Path, raw: bytes) -> tuple[bytes, str]:
    """The pickle and version of a ``driftline-model/2`` file, its checksum verified."""
    end = raw.find(b"\n", len(MAGIC), len(MAGIC) + MAX_HEADER)
    try:
        header = json.loads(raw[len(MAGIC) : end]) if end > 0 else None
    except ValueError:
        header = None
    ok = isinstance(header, dict) and isinstance(header.get("version"), str)
    if (
        not ok
        or not isinstance(header.get("bytes"), int)
        or not isinstance(header.get("sha256"), str)
    ):
        raise DriftlineError(f"{path} is a damaged driftline model file (its header)")
    blob = raw[end + 1 :]
    if len(blob) != header["bytes"]:
        raise DriftlineError(
            f"{path} is a damaged driftline model file: {len(blob)} bytes of model where it "
            f"says {header['bytes']} (truncated?); write it again with `driftline train`"
        )
    if hashlib.sha256(blob).hexdigest() != header["sha256"]:
        raise DriftlineError(
            f"{path} is a damaged driftline model file: its checksum does not match; write "
            "it again with `driftline train`"
        )
    return blob, header["version"]


def load_model(path: str | Path) -> tuple[Any, str]:
    """The model and its version from a file written by :func:`save_model`.

    Only for the configured model file (``model.path``): unpickling a file runs its code.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise DriftlineError(f"cannot read model {path}: {e.strerror}") from None
    retrain = "was it saved with another river version? Retrain it with this one (driftline train)"
    if raw.startswith(MAGIC):
        blob, version = _checked_blob(path, raw)
        return _unpickle(path, blob, retrain), version
    doc = _unpickle(
        path, raw, "is it a file written by `driftline train` (or driftline.model_io.save_model)?"
    )
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DriftlineError(f"{path} is not a driftline model file (format {FORMAT!r} expected)")
    if not isinstance(doc.get("model"), bytes) or not isinstance(doc.get("version"), str):
        raise DriftlineError(f"{path} is a damaged driftline model file (no model or version)")
    return _unpickle(path, doc["model"], retrain), doc["version"]
