"""The topic plan: replication, min ISR, retention and partitions of every topic a pipeline
creates, from the spec's ``[topics]`` and the cluster's size (no broker needed)."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from driftline.agents.topics import PlannedTopic, host_leader_topic, pipeline_topics
from driftline.errors import SpecError
from driftline.spec import parse_spec
from tests.specs import minimal_spec

WEEK, MONTH = "604800000", "2592000000"


def _spec(extra: str = "") -> Any:
    return parse_spec(tomllib.loads(minimal_spec("tp", extra=extra)))


def _plan(extra: str, brokers: int, partitions: int = 4) -> dict[str, PlannedTopic]:
    return {t.role: t for t in pipeline_topics(_spec(extra), partitions, brokers)}


def _row(t: PlannedTopic) -> tuple[int, int, str, str | None, str | None]:
    c = t.config
    return (
        t.partitions,
        t.replication_factor,
        c["min.insync.replicas"],
        c.get("retention.ms"),
        c.get("retention.bytes"),
    )


# role -> (partitions, replicas, min ISR, retention.ms, retention.bytes)
DEFAULTS_1 = {
    "input": (4, 1, "1", None, None),
    "output": (4, 1, "1", WEEK, "-1"),
    "dead letters": (4, 1, "1", MONTH, "-1"),
    "late events": (4, 1, "1", WEEK, "-1"),
    "state changelog": (4, 1, "1", None, None),
    "worker host": (1, 1, "1", None, None),
}
DEFAULTS_2 = {r: (p, 2, "1", ms, b) for r, (p, _, _, ms, b) in DEFAULTS_1.items()}
DEFAULTS_3 = {r: (p, 3, "2", ms, b) for r, (p, _, _, ms, b) in DEFAULTS_1.items()}
DEFAULTS_5 = DEFAULTS_3  # never more than 3 replicas unless the spec says so

OVERRIDES = """
[topics]
replication_factor = 2
min_insync_replicas = 1
[topics.outputs]
partitions = 12
retention_ms = 3600000
retention_bytes = 1073741824
[topics.dlq]
replication_factor = 3
min_insync_replicas = 2
retention_ms = -1
[topics.late]
partitions = 1
[topics.changelog]
replication_factor = 3
[topics.host]
min_insync_replicas = 2
"""
EXPLICIT_3 = {
    "input": (4, 2, "1", None, None),
    "output": (12, 2, "1", "3600000", "1073741824"),
    "dead letters": (4, 3, "2", "-1", "-1"),
    "late events": (1, 2, "1", WEEK, "-1"),
    "state changelog": (4, 3, "1", None, None),
    "worker host": (1, 2, "2", None, None),
}
# replication written in the spec, min ISR left to its default (capped at replicas - 1)
ONLY_RF = "[topics]\nreplication_factor = 2\n[topics.changelog]\nreplication_factor = 1\n"
ONLY_RF_3 = {
    "input": (4, 2, "1", None, None),
    "output": (4, 2, "1", WEEK, "-1"),
    "dead letters": (4, 2, "1", MONTH, "-1"),
    "late events": (4, 2, "1", WEEK, "-1"),
    "state changelog": (4, 1, "1", None, None),
    "worker host": (1, 2, "1", None, None),
}


@pytest.mark.parametrize(
    ("extra", "brokers", "expected"),
    [
        ("", 1, DEFAULTS_1),
        ("", 2, DEFAULTS_2),
        ("", 3, DEFAULTS_3),
        ("", 5, DEFAULTS_5),
        (OVERRIDES, 3, EXPLICIT_3),
        (ONLY_RF, 3, ONLY_RF_3),
        (ONLY_RF, 2, ONLY_RF_3),
    ],
    ids=["1-broker", "2-brokers", "3-brokers", "5-brokers", "overrides", "rf-only-3", "rf-only-2"],
)
def test_plan(extra: str, brokers: int, expected: dict[str, tuple[Any, ...]]) -> None:
    plan = _plan(extra, brokers)
    assert {role: _row(t) for role, t in plan.items()} == expected


def test_every_topic_and_its_fixed_configs() -> None:
    spec = _spec()
    plan = {t.name: t for t in pipeline_topics(spec, 2, 3)}
    o = spec.output
    assert set(plan) == {
        spec.input.topic, *o.all_topics, "driftline.tp.state-changelog",
        "driftline.tp.host-__assignor-__leader",
    }  # fmt: skip
    assert host_leader_topic(spec) == "driftline.tp.host-__assignor-__leader"
    log = plan["driftline.tp.state-changelog"]
    assert log.config["cleanup.policy"] == "compact" and log.same_as_input
    assert [t.role for t in plan.values() if t.same_as_input] == ["state changelog"]


def test_the_changelog_follows_the_input_partitions_whatever_outputs_say() -> None:
    plan = _plan("[topics.outputs]\npartitions = 9\n", 3, partitions=6)
    assert (plan["state changelog"].partitions, plan["output"].partitions) == (6, 9)
    assert plan["dead letters"].partitions == 6  # outputs' setting is the outputs' only


@pytest.mark.parametrize(
    ("extra", "brokers", "message"),
    [
        (
            "[topics]\nreplication_factor = 3\n",
            1,
            "spec key topics.replication_factor: 3 replicas, but the cluster lists 1 live "
            "broker; lower it or leave it out",
        ),
        (
            "[topics.dlq]\nreplication_factor = 4\n",
            3,
            "spec key topics.dlq.replication_factor: 4 replicas, but the cluster lists 3 live "
            "brokers",
        ),
        (
            "[topics]\nmin_insync_replicas = 2\n",
            1,
            "spec key topics.min_insync_replicas: 2 is more than the 1 replica of the "
            "topics, so no write (acks=all) could succeed; lower it to at most 1",
        ),
    ],
    ids=["rf>brokers", "role-rf>brokers", "isr>default-rf-on-1-broker"],
)
def test_what_the_cluster_cannot_do_is_a_config_error(
    extra: str, brokers: int, message: str
) -> None:
    spec = _spec(extra)  # valid on its own: a cluster could be big enough
    with pytest.raises(SpecError) as err:
        pipeline_topics(spec, 3, brokers)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "[topics]\nreplication_factor = 2\nmin_insync_replicas = 3\n",
            "spec key topics.min_insync_replicas: 3 is more than the 2 replicas of the outputs "
            "topics",
        ),
        (
            "[topics.late]\nreplication_factor = 1\nmin_insync_replicas = 2\n",
            "spec key topics.late.min_insync_replicas: 2 is more than the 1 replica of the late "
            "topics",
        ),
        ("[topics]\nreplication_factor = 0\n", "spec key topics.replication_factor: 0 is less"),
        ("[topics.changelog]\npartitions = 3\n", "spec key topics.changelog: Additional"),
        ("[topics.host]\nretention_ms = 5\n", "spec key topics.host: Additional"),
        ("[topics.dlq]\nretention_ms = -2\n", "spec key topics.dlq.retention_ms: -2 is less"),
        ("[topics.outputs]\npartitions = 0\n", "spec key topics.outputs.partitions: 0 is less"),
        ("[topics]\nreplicas = 3\n", "spec key topics: Additional properties"),
    ],
)
def test_a_spec_no_cluster_could_honour_is_refused_at_load(extra: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        _spec(extra)
    assert str(err.value).startswith(message)


def test_the_business_topic_is_planned_like_the_labels_topic() -> None:
    plan = _plan('[business]\ntopic = "shop.orders"\nfield = "total"\n', brokers=3, partitions=6)
    b = plan["business"]
    assert (b.name, b.partitions, b.same_as_input) == ("shop.orders", 6, True)
    assert b.replication_factor == plan["input"].replication_factor == 3
