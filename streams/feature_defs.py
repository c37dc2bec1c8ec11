"""What a feature is: `FeatureDef` (one windowed feature, validated) and `FeatureBatch` (the
engine's output for one batch).

`streams.features` computes them; this module holds the definitions every other part shares
(the window states, the spec loader, the benchmarks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from driftline.errors import SpecError
from driftline.streams.aggregators import AGGREGATIONS, NEEDS_FIELD
from driftline.streams.windows import WINDOW_KINDS, check_size_ms, check_step_ms

__all__ = ["DEFAULT_IDLE_TTL_MS", "NUMERIC_AGGS", "FeatureBatch", "FeatureDef", "needed_columns"]

DEFAULT_IDLE_TTL_MS = 86_400_000
#: Aggregations that read a numeric source column.
NUMERIC_AGGS = frozenset({"sum", "mean", "var", "std", "min", "max", "first", "last"})


@dataclass(frozen=True)
class FeatureDef:
    """One windowed feature.

    Parameters
    ----------
    name
        Output name, e.g. ``"amount_mean_1m"``.
    field
        Source column. Numeric for sum, mean, var, std, min, max, first, last; any hashable
        values (e.g. strings) for distinct; ignored by count, rate and since_prev (may be None).
    agg
        One of `AGGREGATIONS`: ``count``, ``sum``, ``mean``, ``var``, ``std``, ``min``, ``max``,
        ``first``, ``last``, ``distinct``, ``rate``, ``since_prev``.
    window_ms
        Window size (tumbling, hopping) or look-back (sliding) in ms, > 0; None for count
        windows.
    window
        ``"tumbling"`` (default), ``"hopping"``, ``"sliding"`` or ``"count"``.
    step_ms
        Hopping only: the hop, > 0, dividing ``window_ms``.
    count
        Count windows only: N, the number of most recent events, > 0.
    where_field, where_equals
        Optional filter: only events whose ``where_field`` column equals ``where_equals``
        contribute (give both or neither).
    idle_ttl_ms
        Count and sliding windows: events older than this relative to the current event do not
        count and idle entities are dropped; count windows default to one day, sliding windows
        to ``window_ms`` (their own bound).

    Raises
    ------
    SpecError
        If any of the above does not hold.

    Examples
    --------
    >>> FeatureDef("amount_sum_1m", "amount", "sum", 60_000).window
    'tumbling'
    >>> FeatureDef("amount_sum_1m", None, "sum", 60_000)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    driftline.errors.SpecError: feature 'amount_sum_1m': agg 'sum' needs a numeric source field; ...
    >>> FeatureDef("last5", "amount", "mean", None, window="count", count=5).idle_ttl_ms
    86400000
    """

    name: str
    field: str | None
    agg: str
    window_ms: int | None
    window: str = "tumbling"
    step_ms: int | None = None
    count: int | None = None
    where_field: str | None = None
    where_equals: str | int | float | bool | None = None
    idle_ttl_ms: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise SpecError(f"feature name: got {self.name!r}; expected a non-empty string")
        where = f"feature {self.name!r}"
        if self.agg not in AGGREGATIONS:
            raise SpecError(
                f"{where}: agg {self.agg!r} is not supported; "
                f"expected one of {', '.join(map(repr, AGGREGATIONS))}"
            )
        if self.field is None:
            if self.agg in NEEDS_FIELD:
                kind = "numeric " if self.agg != "distinct" else ""
                raise SpecError(
                    f"{where}: agg {self.agg!r} needs a {kind}source field; field=None is only "
                    "allowed for agg 'count', 'rate' and 'since_prev'"
                )
        elif not isinstance(self.field, str) or not self.field:
            raise SpecError(
                f"{where}: field {self.field!r}; expected a non-empty column name or None"
            )
        if self.window not in WINDOW_KINDS:
            raise SpecError(
                f"{where}: window {self.window!r}; expected one of "
                f"{', '.join(map(repr, WINDOW_KINDS))}"
            )
        if self.window == "count":
            if self.window_ms is not None:
                raise SpecError(
                    f"{where}: window_ms {self.window_ms!r}; count windows take count=N and "
                    "window_ms=None"
                )
            check_size_ms(self.count, f"{where}: count")  # same rule: integer > 0
            ttl = DEFAULT_IDLE_TTL_MS if self.idle_ttl_ms is None else self.idle_ttl_ms
            object.__setattr__(self, "idle_ttl_ms", check_size_ms(ttl, f"{where}: idle_ttl_ms"))
        else:
            check_size_ms(self.window_ms, f"{where}: window_ms")
            if self.count is not None:
                raise SpecError(
                    f"{where}: count {self.count!r} is only for window='count'; expected None"
                )
            if self.idle_ttl_ms is not None:
                if self.window != "sliding":
                    raise SpecError(
                        f"{where}: idle_ttl_ms {self.idle_ttl_ms!r} is only for window='sliding' "
                        "or 'count'; expected None"
                    )
                check_size_ms(self.idle_ttl_ms, f"{where}: idle_ttl_ms")
        if self.window == "hopping":
            check_step_ms(int(self.window_ms), self.step_ms, f"{where}: step_ms")  # type: ignore[arg-type]
        elif self.step_ms is not None:
            raise SpecError(
                f"{where}: step_ms {self.step_ms!r} is only for window='hopping'; expected None"
            )
        if self.where_field is None:
            if self.where_equals is not None:
                raise SpecError(f"{where}: where_equals is set; expected where_field with it")
        else:
            if not isinstance(self.where_field, str) or not self.where_field:
                raise SpecError(
                    f"{where}: where_field {self.where_field!r}; expected a non-empty column name"
                )
            if not isinstance(self.where_equals, str | int | float | bool):
                raise SpecError(
                    f"{where}: where_equals {self.where_equals!r}; expected a str, int, float "
                    "or bool to compare the where_field column with"
                )

    @property
    def source(self) -> str | None:
        """The column this feature reads (None for count, rate and since_prev)."""
        return self.field if self.agg in NEEDS_FIELD else None

    @property
    def group_key(self) -> tuple:
        """Features with equal keys share one window state."""
        return (
            self.window,
            self.window_ms,
            self.step_ms,
            self.count,
            self.idle_ttl_ms,
            self.where_field,
            type(self.where_equals).__name__,
            self.where_equals,
        )


@dataclass
class FeatureBatch:
    """Output of `FeatureEngine.update`, aligned with the input events.

    Attributes
    ----------
    values
        Feature name -> ``float64`` array, one value per event, NaN where the event was late.
    late
        ``bool`` array, True where the event was late and NOT applied to the state.
    window_start_ms
        Tumbling window size -> ``int64`` start of the window containing each event (late ones
        too).
    """

    values: dict[str, np.ndarray]
    late: np.ndarray
    window_start_ms: dict[int, np.ndarray]


def needed_columns(features: Sequence[FeatureDef]) -> tuple[list[str], list[str]]:
    """The numeric source columns and the distinct-count columns ``features`` read, sorted."""
    num = sorted({f.field for f in features if f.agg in NUMERIC_AGGS})  # type: ignore[misc]
    dist = sorted({f.field for f in features if f.agg == "distinct"})  # type: ignore[misc]
    return num, dist
