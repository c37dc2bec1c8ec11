"""Reading a worker's Prometheus ``/metrics`` page, with prometheus_client's own text parser.

Used by the demo, the benchmarks and the integration tests.

>>> s = parse_samples('# TYPE a counter\\na_total{x="1"} 3.0\\na_total{x="2"} 4.0\\nb 2\\n')
>>> s
[('a_total', {'x': '1'}, 3.0), ('a_total', {'x': '2'}, 4.0), ('b', {}, 2.0)]
>>> sample_sum(s, "a_total"), sample_sum(s, "a_total", {"x": "2"}), sample_sum(s, "c")
(7.0, 4.0, 0.0)
"""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping, Sequence

from prometheus_client.parser import text_string_to_metric_families

Sample = tuple[str, dict[str, str], float]


def parse_samples(text: str) -> list[Sample]:
    """Every sample of a text exposition as ``(name, labels, value)``, names as exposed
    (a counter's ``_total``, a histogram's ``_bucket``/``_sum``/``_count``)."""
    return [
        (s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def sample_sum(
    samples: Sequence[Sample], name: str, labels: Mapping[str, str] | None = None
) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels`` (0 when none)."""
    want = (labels or {}).items()
    return float(
        sum(v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in want))
    )


def read_text(url: str, timeout: float = 5.0) -> str:
    """The page at ``url`` (a bounded wait)."""
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return str(r.read().decode())


def read_metric(url: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """Sum of the samples named ``name`` on the /metrics page at ``url`` whose labels include
    ``labels`` (0 when absent)."""
    return sample_sum(parse_samples(read_text(url)), name, labels)
