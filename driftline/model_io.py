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
        doc = pickle.loads(Path(path).read_bytes())
    # a file that is not a pickle fails in many ways (b"garbage" raises ValueError)
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError,
            KeyError, AttributeError, ImportError) as e:  # fmt: skip
        raise DriftlineError(
            f"cannot load model {path}: {e}; write it with driftline's save_model"
        ) from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DriftlineError(f"{path} is not a driftline model file (format {FORMAT!r} expected)")
    try:
        model = pickle.loads(doc["model"])
    except (ImportError, AttributeError, TypeError, ValueError, pickle.UnpicklingError) as e:
        raise DriftlineError(
            f"cannot load model {path} ({type(e).__name__}: {e}); was it saved with another "
            "river version? Retrain it with this one (driftline train)"
        ) from e
    return model, str(doc["version"])
