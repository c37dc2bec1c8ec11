"""Poison records on a real broker: the worker dead-letters each with its precise reason and goes
on, every record is accounted for (consumed = features + dead letters + late), and the same
worker restarted on the same kinds of input makes progress.

Before: a 1,000,000-character entity id killed the worker on every restart (numpy asked for
37 GiB), one event dated 9999-12-31 made every later event late for good, and ~1,000-deep JSON
logged a traceback per record.
"""

from __future__ import annotations

import signal
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest

from driftline.agents.demo import named_ks_adwin_spec
from driftline.agents.synthetic import SyntheticStream
from driftline.localkafka import free_port
from driftline.schemas import validate
from tests.kafka_helpers import (
    kcat_produce,
    metric,
    read_topic,
    start_worker,
    wait_for_metric,
    write_pipeline,
)

pytestmark = pytest.mark.integration

N = 3_000
ROUND_1 = SyntheticStream(n=N, shift_at=N, seed=21, n_entities=200)
ROUND_2 = SyntheticStream(
    n=N, shift_at=N, seed=22, n_entities=200, start_ms=ROUND_1.start_ms + N * ROUND_1.step_ms
)


def event(**text: str) -> bytes:
    """A demo event with fields given as JSON text (numbers no JSON library writes, too)."""
    fields = {"user_id": '"u1"', "ts": str(ROUND_1.start_ms), "amount": "1.5",
              "latency_ms": "10", "country": '"de"', **text}  # fmt: skip
    return ("{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}").encode()


# (value, reason) in the order produced; the first ones come before any good event
HOSTILE: list[tuple[bytes, str]] = [
    (event(ts='"9999-12-31T23:59:59Z"'), "future_event"),
    (event(ts=str(2**62)), "future_event"),
    (event(user_id='"' + "k" * 1_000_000 + '"'), "key_too_long"),
    (event(user_id='"' + "k" * 65_536 + '"'), "key_too_long"),
    (event(pad="[" * 1_025 + "]" * 1_025), "too_deep"),
    (event(amount="[" * 100_000 + "]" * 100_000), "too_deep"),
    (b"\xef\xbb\xbf" + event(), "byte_order_mark"),
    (event(country='"\\ud800"'), "invalid_utf8"),
    (event(country='"@@"').replace(b"@@", b"\xff"), "invalid_utf8"),
    (event(ts=str(2**63)), "number_out_of_range"),
    (event(ts=str(2**64)), "number_out_of_range"),
    (event(amount="1" * 400), "number_out_of_range"),
    (event(amount="NaN"), "non_finite"),
    (event(ts="-1"), "bad_timestamp"),
]
SPLIT = 2  # hostile records before the good events; the rest after them
# valid, but an hour before every partition's watermark: the one late event of a round
LATE = event(ts=str(ROUND_1.start_ms - 3_600_000))


def _lines(stream: SyntheticStream) -> list[bytes]:
    bad = [f"bad-{i}".encode() + b"|" + v for i, (v, _) in enumerate(HOSTILE)]
    good = [e["user_id"].encode() + b"|" + orjson.dumps(e) for e in stream.events()]
    return [*bad[:SPLIT], *good, *bad[SPLIT:], b"late|" + LATE]


def _round(spec_path: Path, bootstrap: str, log: Path, port: int, total: int) -> dict[str, float]:
    m: dict[str, float] = {}
    proc = start_worker(spec_path, bootstrap, log)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_for_metric(url, "driftline_records_consumed_total", total, proc, log, 180.0)
        counters = ("records_consumed", "records_dead_lettered", "feature_vectors", "late_events")
        m = {n: metric(url, f"driftline_{n}_total") for n in counters}
        for _, reason in HOSTILE:
            m[reason] = metric(url, "driftline_records_dead_lettered_total", {"reason": reason})
    finally:
        proc.send_signal(signal.SIGTERM)
        m["rc"] = proc.wait(60)
    return m


def test_poison_records_are_dead_lettered_and_the_worker_goes_on_across_a_restart(
    kafka_bootstrap: str, kcat: str, tmp_path: Path
) -> None:
    data = named_ks_adwin_spec(f"poison-{uuid.uuid4().hex[:10]}")
    data["input"]["max_message_bytes"] = 1_048_576
    port = data["worker"]["web_port"] = free_port()
    spec_path, spec = write_pipeline(tmp_path, data, kafka_bootstrap, model_rows=3_000)
    reasons = Counter(reason for _, reason in HOSTILE)
    total = N + len(HOSTILE) + 1

    for k, stream in enumerate((ROUND_1, ROUND_2), start=1):
        kcat_produce(kcat, kafka_bootstrap, spec.input.topic, _lines(stream))
        log = tmp_path / f"worker-{k}.log"
        m = _round(spec_path, kafka_bootstrap, log, port, total)
        # every record accounted for, exactly: no good event late behind the 9999-12-31 one
        assert m["records_consumed"] == total
        assert m["feature_vectors"] == N
        assert m["late_events"] == 1
        assert m["records_dead_lettered"] == len(HOSTILE)
        assert {r: m[r] for r in reasons} == dict(reasons)
        assert m["records_consumed"] == (
            m["feature_vectors"] + m["records_dead_lettered"] + m["late_events"]
        )
        assert m["rc"] == 0
        text = log.read_text(errors="replace")
        assert "Traceback" not in text
        dead_lines = [x for x in text.splitlines() if "dead-lettered" in x]
        assert len(dead_lines) <= len(reasons) + 1, dead_lines  # + late_event; not per record
        assert max(len(x) for x in dead_lines) < 2_000

    dlq = [orjson.loads(r.value) for r in read_topic(kafka_bootstrap, spec.output.dlq_topic)]
    for d in dlq:
        validate("dead_letter", d)
    assert Counter(d["reason"] for d in dlq) == Counter({r: 2 * c for r, c in reasons.items()})
    late = read_topic(kafka_bootstrap, spec.output.late_topic)
    assert [orjson.loads(r.value)["reason"] for r in late] == ["late_event"] * 2
    features = read_topic(kafka_bootstrap, spec.output.features_topic)
    assert len(features) == 2 * N
