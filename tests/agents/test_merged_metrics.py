"""The supervisor's one /metrics page: every process's samples, labelled, plus up."""

from __future__ import annotations

import pytest

from driftline.agents.merged_metrics import merge_expositions
from driftline.agents.scrape import parse_samples, sample_sum

PAGE = """# HELP driftline_records_total records
# TYPE driftline_records_total counter
driftline_records_total{outcome="processed"} {n}
# HELP driftline_latency_seconds latency
# TYPE driftline_latency_seconds histogram
driftline_latency_seconds_bucket{le="0.1"} 1.0
driftline_latency_seconds_bucket{le="+Inf"} 2.0
driftline_latency_seconds_sum 0.5
driftline_latency_seconds_count 2.0
# HELP driftline_drift_firing firing
# TYPE driftline_drift_firing gauge
driftline_drift_firing{detector="amount-ks"} {f}
"""


def page(n: float, f: float) -> str:
    return PAGE.replace("{n}", str(n)).replace("{f}", str(f))


@pytest.mark.parametrize(
    ("pages", "records", "up"),
    [
        ([("0", page(3, 0)), ("1", page(4, 1))], {"0": 3.0, "1": 4.0}, {"0": 1.0, "1": 1.0}),
        ([("0", page(3, 0)), ("1", None)], {"0": 3.0}, {"0": 1.0, "1": 0.0}),
        ([("0", None), ("1", None)], {}, {"0": 0.0, "1": 0.0}),
        ([("0", "")], {}, {"0": 1.0}),  # an empty page is a page
    ],
)
def test_each_sample_labelled_by_process(
    pages: list[tuple[str, str | None]], records: dict[str, float], up: dict[str, float]
) -> None:
    samples = parse_samples(merge_expositions(pages).decode())
    got = {lab["process"]: v for n, lab, v in samples if n == "driftline_records_total"}
    assert got == records
    assert {lab["process"]: v for n, lab, v in samples if n == "driftline_process_up"} == up


def test_histograms_and_gauges_keep_their_labels_and_sum_across_processes() -> None:
    samples = parse_samples(merge_expositions([("0", page(3, 0)), ("1", page(4, 1))]).decode())
    assert sample_sum(samples, "driftline_latency_seconds_count") == 4.0
    assert sample_sum(samples, "driftline_latency_seconds_bucket", {"le": "0.1"}) == 2.0
    assert sample_sum(samples, "driftline_drift_firing", {"detector": "amount-ks"}) == 1.0
    assert sample_sum(samples, "driftline_drift_firing", {"process": "1"}) == 1.0


def test_one_type_line_per_family() -> None:
    text = merge_expositions([("0", page(3, 0)), ("1", page(4, 1))]).decode()
    assert text.count("# TYPE driftline_records_total counter") == 1
    assert text.count("# TYPE driftline_latency_seconds histogram") == 1
