"""Access to the JSON Schemas in ``schemas/`` (installed as ``driftline/_schemas``)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

SCHEMA_NAMES = (
    "spec", "source", "feature_vector", "prediction", "alert", "dead_letter", "label",
    "model_metrics", "profile", "report",
)  # fmt: skip


def schemas_dir() -> Path:
    """The directory holding ``*.schema.json``: the wheel's copy, else the source tree's."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_schemas", here.parent / "schemas"):
        if (candidate / "spec.schema.json").is_file():
            return candidate
    raise FileNotFoundError(f"driftline schemas not found next to {here}; reinstall driftline")


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The parsed schema ``schemas/<name>.schema.json``."""
    return json.loads((schemas_dir() / f"{name}.schema.json").read_text())


@cache
def _registry() -> Registry:
    resources = []
    for name in SCHEMA_NAMES:
        schema = load_schema(name)
        resource = Resource.from_contents(schema)
        resources.append((schema["$id"], resource))
        resources.append((f"{name}.schema.json", resource))
    return Registry().with_resources(resources)


@cache
def validator(name: str) -> Draft202012Validator:
    """A validator for ``name`` that resolves the sibling schemas it references."""
    return Draft202012Validator(load_schema(name), registry=_registry())


def validate(name: str, instance: Any) -> None:
    """Raise ``jsonschema.ValidationError`` if ``instance`` does not match schema ``name``."""
    validator(name).validate(instance)
