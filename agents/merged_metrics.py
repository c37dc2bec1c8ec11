"""One ``/metrics`` page for the worker processes of ``driftline worker --processes N``.

Each process serves its own page; the supervisor reads them all and serves one exposition in
which every sample carries a ``process`` label (``"0"`` … ``"N-1"``), so Prometheus scrapes
one target per machine and sums or splits by that label. ``driftline_process_up`` says, per
process, whether its page could be read this time (a process restarting is 0, not an
absent series).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

__all__ = ["PROCESS_LABEL", "UP_METRIC", "merge_expositions"]

#: The label naming the process a sample came from.
PROCESS_LABEL = "process"
#: The gauge saying whether a process's page was read (1) or not (0).
UP_METRIC = "driftline_process_up"


def merge_expositions(pages: Sequence[tuple[str, str | None]]) -> bytes:
    """One text exposition from ``(process, page)`` pairs; a page of None could not be read.

    Examples
    --------
    >>> page = '# HELP x_total things\\n# TYPE x_total counter\\nx_total{k="a"} 2.0\\n'
    >>> text = merge_expositions([("0", page), ("1", page), ("2", None)]).decode()
    >>> [line for line in text.splitlines() if not line.startswith("#")]
    ... # doctest: +NORMALIZE_WHITESPACE
    ['x_total{k="a",process="0"} 2.0', 'x_total{k="a",process="1"} 2.0',
     'driftline_process_up{process="0"} 1.0', 'driftline_process_up{process="1"} 1.0',
     'driftline_process_up{process="2"} 0.0']
    """
    families: dict[str, Metric] = {}
    for process, page in pages:
        if page is None:
            continue
        for family in text_string_to_metric_families(page):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            merged.samples.extend(
                s._replace(labels={**s.labels, PROCESS_LABEL: process}) for s in family.samples
            )
    up = Metric(UP_METRIC, "1 if this worker process's /metrics page was read", "gauge")
    up.samples.extend(
        Sample(UP_METRIC, {PROCESS_LABEL: process}, 0.0 if page is None else 1.0)
        for process, page in pages
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed([*families.values(), up]))
    return generate_latest(registry)


class _Fixed:
    """A collector that yields the families it was given."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families
