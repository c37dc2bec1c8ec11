"""Saving and loading river models with a version string.

A model file is a pickle: loading one runs whatever code it names, so driftline loads only the
file the spec's ``model.path`` names (the operator's own file, like the spec itself). Nothing
that comes from Kafka is ever unpickled: the online-learned copy of a model goes to the state
changelog as plain data (`driftline.streams.plain_state`), never as a pickle.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

from driftline.errors import DriftlineError

FORMAT = "driftline-model/1"


def save_model(model: Any, path: str | Path, version: str | None = None) -> str:
    """Pickle ``model`` with a version (default: a hash of the pickle); return the version."""
    blob = pickle.dumps(model)
    version = version or "sha-" + hashlib.sha256(blob).hexdigest()[:12]
    Path(path).write_bytes(pickle.dumps({"format": FORMAT, "version": version, "model": blob}))
    return version


def load_model(path: str | Path) -> tuple[Any, str]:
    """The model and its version from a file written by :func:`save_model`.

    Only for the configured model file (``model.path``): unpickling a file runs its code.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise DriftlineError(f"cannot read model {path}: {e.strerror}") from None
    try:
        doc = pickle.loads(raw)
    # a file that is not a pickle, or a truncated or damaged one, fails in many ways (b"garbage"
    # raises ValueError; a damaged object's __setstate__ anything): report each the same
    except Exception as e:
        raise DriftlineError(
            f"cannot load model {path} ({type(e).__name__}: {str(e)[:200]}); is it a file "
            "written by `driftline train` (or driftline.model_io.save_model)?"
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DriftlineError(f"{path} is not a driftline model file (format {FORMAT!r} expected)")
    if not isinstance(doc.get("model"), bytes) or not isinstance(doc.get("version"), str):
        raise DriftlineError(f"{path} is a damaged driftline model file (no model or version)")
    try:
        model = pickle.loads(doc["model"])
    except Exception as e:
        raise DriftlineError(
            f"cannot load model {path} ({type(e).__name__}: {str(e)[:200]}); was it saved with "
            "another river version? Retrain it with this one (driftline train)"
        ) from None
    return model, doc["version"]
