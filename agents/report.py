"""``driftline report``: replay a history file or a topic range through a spec and write one
self-contained HTML report and its JSON twin.

The replay is the worker's own pipeline (:mod:`driftline.agents.replay`), so where the report
says a detector would have fired is where ``driftline replay --alerts`` (and a worker reading
the same partitions in the same order) fires it. :mod:`.report_data` collects,
:mod:`.report_render` draws, :mod:`.topic_range` reads a topic range.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from driftline.agents.progress import progress_bar
from driftline.agents.replay import (
    as_file_spec,
    events_batch,
    partition_outcomes,
    pipeline_factory,
    replay_outcomes,
)
from driftline.agents.report_data import ReportCollector
from driftline.agents.report_render import render_report
from driftline.io_files import count_records
from driftline.spec import PipelineSpec

#: Records per partition batch of a report's replay (one statistic reading per batch): enough
#: for `READINGS` readings per partition, within these bounds.
MIN_BATCH, MAX_BATCH, READINGS = 20, 1_000, 300


def batch_for(total: int | None, partitions: int) -> int:
    """The batch size giving about `READINGS` statistic readings per partition.

    >>> batch_for(None, 1), batch_for(2_000, 2), batch_for(10**7, 4), batch_for(100, 1)
    (1000, 20, 1000, 20)
    >>> batch_for(90_000, 1)
    300
    """
    if total is None:
        return MAX_BATCH
    return min(max(-(-total // (max(partitions, 1) * READINGS)), MIN_BATCH), MAX_BATCH)


def _batch(labels: Any, business: Any, total: int | None, partitions: int) -> int:
    """With labels or business records, their feed's events batch (as in ``driftline
    replay``), else `batch_for`."""
    return events_batch(labels, business, batch_for(total, partitions))


def report_of_file(
    spec: PipelineSpec,
    input_path: str | Path,
    *,
    partitions: int = 1,
    partitioner: str = "consistent",
    batch_features_path: str | Path | None = None,
    batch: int | None = None,
    progress: bool = True,
    labels: Any = None,
    business: Any = None,
) -> dict[str, Any]:
    """The report (JSON twin) of replaying an events file, as ``driftline replay`` does
    (``batch``: records per partition batch, default `batch_for` the file; ``labels``: an
    ``agents.replay_labels.LabelFeed`` to join; ``business``: an
    ``agents.replay_business.BusinessFeed`` to feed beside the events)."""
    source = {
        "kind": "file",
        "path": Path(input_path).name,
        "partitions": partitions,
        "partitioner": partitioner,
    }
    collector = ReportCollector(as_file_spec(spec), source)
    for docs, oc in replay_outcomes(
        spec,
        input_path,
        partitions=partitions,
        partitioner=partitioner,
        batch=batch or _batch(labels, business, count_records(input_path), partitions),
        progress=progress,
        batch_features_path=batch_features_path,
        detector_inputs=True,
        desc="report",
        labels=labels,
        business=business,
    ):
        collector.add(oc, side=docs is None)
    return collector.report()


def report_of_topic(
    spec: PipelineSpec,
    topic_range: Any,
    *,
    batch_features_path: str | Path | None = None,
    batch: int | None = None,
    progress: bool = True,
    labels: Any = None,
    business: Any = None,
) -> dict[str, Any]:
    """The report of a topic range (a :class:`~driftline.agents.topic_range.TopicRange`),
    its records in each partition's order, with their broker timestamps."""
    make = pipeline_factory(spec, batch_features_path=batch_features_path, detector_inputs=True)
    collector = ReportCollector(spec, topic_range.describe())
    bar = progress_bar(topic_range.total, "report", enabled=progress)
    try:
        size = batch or _batch(labels, business, topic_range.total, len(topic_range.ranges))
        for docs, oc in partition_outcomes(
            topic_range.records(), make, batch=size, bar=bar, labels=labels, business=business
        ):
            collector.add(oc, side=docs is None)
    finally:
        bar.close()
    return collector.report()


def write_report(
    report: dict[str, Any], html_path: str | Path, json_path: str | Path | None
) -> None:
    """The HTML page to ``html_path``, the JSON twin to ``json_path`` (if given)."""
    Path(html_path).write_text(render_report(report), encoding="utf-8")
    if json_path is not None:
        Path(json_path).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
