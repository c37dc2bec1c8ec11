"""What the detector and aggregator registries share: classes by their ``name``, and building one
from a type name and keyword parameters with the errors a spec author reads.

A registry is a plain ``dict`` (``name`` -> class), e.g. `streams.detectors.factory.DETECTORS` and
`streams.aggregators.AGGREGATORS`; ``key`` is the spec key that names the type (``type``,
``agg``) and ``noun`` what the classes are (``detector``, ``aggregator``).

Examples
--------
>>> class Doubler:
...     name = "double"
...     def __init__(self, factor: int = 2) -> None:
...         self.factor = factor
>>> things: dict[str, type] = {}
>>> register(things, Doubler, "kind", "thing") is Doubler
True
>>> build(things, "kind", "thing", "double", {"factor": 3}).factor
3
>>> build(things, "kind", "thing", "double", {"scale": 3})
Traceback (most recent call last):
...
driftline.errors.SpecError: scale: the double thing has no parameter 'scale'; it takes factor
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, TypeVar

from driftline.errors import DriftlineError, SpecError
from driftline.streams.params import choice_param

__all__ = ["build", "constructor_parameters", "lookup", "register"]

C = TypeVar("C", bound=type)


def register(registry: dict[str, Any], cls: C, key: str, noun: str) -> C:
    """Add ``cls`` to ``registry`` under ``cls.name``; `DriftlineError` if another class has it."""
    other = registry.get(cls.name)
    if other is not None and other is not cls:
        raise DriftlineError(f"{key}: {cls.name!r} is already the {other.__name__} {noun}")
    registry[cls.name] = cls
    return cls


def lookup(registry: dict[str, Any], key: str, name: object) -> Any:
    """The class registered as ``name``; `SpecError` naming ``key`` and the choices otherwise."""
    return registry[choice_param(key, name, sorted(registry))]


def constructor_parameters(cls: type) -> list[str]:
    """The keyword parameters of ``cls(...)``, in order (none for a class without ``__init__``)."""
    names = inspect.signature(cls.__init__).parameters
    return [n for n in names if n not in ("self", "args", "kwargs")]


def build(
    registry: dict[str, Any], key: str, noun: str, name: object, params: Mapping[str, Any]
) -> Any:
    """A new ``registry[name](**params)``; `SpecError` for an unknown name or parameter."""
    cls = lookup(registry, key, name)
    accepted = constructor_parameters(cls)
    for param in params:
        if param not in accepted:
            takes = f"it takes {', '.join(accepted)}" if accepted else "it takes none"
            raise SpecError(f"{param}: the {name} {noun} has no parameter {param!r}; {takes}")
    return cls(**params)
