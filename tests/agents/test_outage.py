"""Outage logging: one driftline line per change of the link to the brokers, and the Kafka
clients' repeated lines held back (each kind once per period, with a count)."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError
from prometheus_client import CollectorRegistry, Gauge

from driftline.agents.logs import ClientNoise
from driftline.agents.outage import BrokerLink


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def gauge() -> Gauge:
    return Gauge("connected", "test", registry=CollectorRegistry())


@pytest.mark.parametrize(
    ("events", "lines", "connected", "outages"),
    [
        ([], [], 1, 0),
        (["ok", "ok"], [], 1, 0),
        (["lost"], ["lost connection"], 0, 1),
        (["lost", "lost", "lost"], ["lost connection"], 0, 1),
        (["lost", "wait 12.5", "ok"], ["lost connection", "reconnected after 12.5 s"], 1, 1),
        (["lost", "wait 2", "ok", "ok", "lost", "wait 3", "lost", "ok"],
         ["lost connection", "reconnected after 2.0 s", "lost connection",
          "reconnected after 3.0 s"], 1, 2),
    ],
)  # fmt: skip
def test_one_line_per_change(
    events: list[str], lines: list[str], connected: int, outages: int,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    clock, g = Clock(), gauge()
    link = BrokerLink("127.0.0.1:9092", g, clock)
    with caplog.at_level(logging.INFO, logger="driftline.outage"):
        for ev in events:
            if ev == "lost":
                link.lost("no broker answers")
            elif ev == "ok":
                link.ok()
            else:
                clock.t += float(ev.split()[1])
    got = [r.getMessage() for r in caplog.records if r.name == "driftline.outage"]
    assert len(got) == len(lines)
    for message, want in zip(got, lines, strict=True):
        assert want.split(" after")[0] in message and "127.0.0.1:9092" in message
        if "after" in want:
            assert message.endswith(want.split("reconnected ")[1])
    assert g._value.get() == connected
    assert (link.outages, link.up) == (outages, connected == 1)


@pytest.mark.parametrize(
    ("code", "is_lost"),
    [(KafkaError._ALL_BROKERS_DOWN, True), (KafkaError._TRANSPORT, False),
     (KafkaError._MSG_TIMED_OUT, False)],
)  # fmt: skip
def test_error_cb_only_all_brokers_down_is_an_outage(code: int, is_lost: bool) -> None:
    link = BrokerLink("b:1", None, Clock())
    link.error_cb(KafkaError(code))
    assert link.up is not is_lost


def record(name: str, msg: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, (), None)


FAIL = (
    "FAIL [rdkafka#consumer-{n}] 127.0.0.1:{port}/1: Connect failed (after {ms}ms in state CONNECT)"
)


@pytest.mark.parametrize(
    ("stream", "passed"),
    [
        # driftline's own lines always pass
        ([(0, "driftline.runner", "revoked partitions e:0")] * 3, [0, 1, 2]),
        ([(0, "driftline.outage", "lost connection")] * 2, [0, 1]),
        # the same kind (numbers differ) once per 60 s; other kinds and loggers apart
        ([(0, "driftline.kafka", FAIL.format(n=1, port=4, ms=0)),
          (1, "driftline.kafka", FAIL.format(n=1, port=4, ms=3)),
          (2, "driftline.kafka", FAIL.format(n=6, port=5, ms=12)),
          (2, "aiokafka.conn", "Unable connect to node with id 1"),
          (3, "aiokafka.conn", "Unable connect to node with id 2"),
          (3, "aiokafka.cluster", "Unable to update metadata from [1]"),
          (61, "driftline.kafka", FAIL.format(n=1, port=4, ms=9)),
          (62, "aiokafka.conn", "Unable connect to node with id 1")],
         [0, 3, 5, 6, 7]),
        ([(t, "aiokafka.fetcher", "Failed fetch messages from 1") for t in range(0, 200, 10)],
         [0, 6, 12, 18]),
    ],
)  # fmt: skip
def test_client_noise_held_back(stream: list[tuple[float, str, str]], passed: list[int]) -> None:
    clock = Clock()
    noise = ClientNoise(60.0, clock)
    got, messages = [], []
    for i, (t, name, msg) in enumerate(stream):
        clock.t = 100.0 + t
        rec = record(name, msg)
        if noise.filter(rec):
            got.append(i)
            messages.append(rec.getMessage())
    assert got == passed
    if stream[0][1] == "driftline.kafka":  # the next FAIL line says how many were held back
        assert messages[3].endswith("(2 more like it held back)")
        assert "held back" not in messages[0]
