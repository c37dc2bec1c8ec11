"""``driftline demo``: local broker, worker, and a synthetic stream drifting at a known point."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import uuid
from collections.abc import Mapping
from contextlib import ExitStack
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, TopicPartition
from river import compose, linear_model, optim, preprocessing

from driftline.agents.kafka_io import (
    client_conf,
    ensure_topics,
    make_producer,
    produce_all,
    wait_for_broker,
)
from driftline.agents.scrape import read_metric
from driftline.agents.synthetic import SyntheticStream, labels_for
from driftline.alert_format import format_alert
from driftline.errors import DriftlineError
from driftline.kafka_config import Kafka, KafkaConfig
from driftline.localkafka import LocalKafka, free_port
from driftline.model_io import save_model
from driftline.spec import PipelineSpec, parse_spec
from driftline.streams.features import FeatureDef, FeatureEngine

MALFORMED: list[bytes] = [
    b"{not json",
    b'{"user_id": "u1", "ts": 1767225600000, "amount": "12", "latency_ms": 1, "country": "de"}',
    b'{"user_id": "u1", "ts": 1767225600000, "latency_ms": 1, "country": "de"}',
    b'{"user_id": "u1", "ts": 1767225600000, "amount": NaN, "latency_ms": 1, "country": "de"}',
    b"[1, 2, 3]",
]


def example_spec_text(name: str) -> str:
    """The text of ``driftline/examples/<name>.toml``."""
    return resources.files("driftline").joinpath(f"examples/{name}.toml").read_text()


def demo_spec_text() -> str:
    """What `driftline demo` runs: every field watched by the default detector set."""
    return example_spec_text("demo")


def ks_adwin_spec_text() -> str:
    """The demo's pipeline with two hand-picked detectors (``amount_ks``, ``latency_adwin``)
    instead of ``[drift] watch``: what the tests and benchmarks run."""
    return example_spec_text("ks_adwin")


def named_ks_adwin_spec(prefix: str, extra_outputs: tuple[str, ...] = ()) -> dict[str, Any]:
    """`ks_adwin_spec_text` as data, its pipeline named ``prefix`` and every topic
    ``<prefix>.<kind>`` (the ``extra_outputs`` keys of ``[output]`` too), so runs side by side
    never share a topic."""
    data = tomllib.loads(ks_adwin_spec_text())
    data["pipeline"]["name"] = prefix
    data["input"]["topic"] = f"{prefix}.events"
    keys = [*data["output"], *extra_outputs]
    data["output"] = {k: f"{prefix}.{k.removesuffix('_topic')}" for k in keys}
    return data


def train_demo_model(path: Path, inputs: list[str], seed: int = 99, n: int = 20_000) -> str:
    """Fit the demo's river model on pre-shift synthetic data, features computed by ``streams/``."""
    s = SyntheticStream(n=n, shift_at=n, seed=seed)
    a = s.arrays()
    eng = FeatureEngine([FeatureDef("amount_mean_1m", "amount", "mean", 60_000)])
    feats = eng.update(a["user_id"].astype(str).astype(object), a["ts"], {"amount": a["amount"]})
    cols = {"amount": a["amount"], "latency_ms": a["latency_ms"], **feats.values}
    y = labels_for(a["amount"], a["latency_ms"], seed)
    model = compose.Pipeline(
        preprocessing.StandardScaler(), linear_model.LogisticRegression(optimizer=optim.SGD(0.05))
    )
    rows = np.column_stack([cols[c] for c in inputs]).tolist()
    for row, label in zip(rows, y.tolist(), strict=True):
        model.learn_one(dict(zip(inputs, row, strict=True)), bool(label))
    return save_model(model, path, version="demo-logreg-1")


def worker_argv(spec_path: str | Path, bootstrap: Kafka, *options: str) -> list[str]:
    """The command line of a ``driftline worker`` subprocess on this interpreter (the demo's and
    the integration tests'); run it with :func:`worker_env` for settings beyond the address."""
    return [sys.executable, "-m", "driftline.cli", "worker", "-c", str(spec_path),
            "--bootstrap", str(bootstrap), *options]  # fmt: skip


def worker_env(bootstrap: Kafka, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) plus the ``DRIFTLINE_KAFKA_*`` variables
    that give a child the same Kafka settings (secrets pass in the environment, never argv)."""
    return {**(os.environ if base is None else base), **KafkaConfig.of(bootstrap).as_environ()}


def consumer_at_end(bootstrap: Kafka, topic: str, group_prefix: str) -> Consumer:
    """A read_committed consumer assigned to every partition of ``topic`` at its current end."""
    c = Consumer(
        client_conf(
            bootstrap,
            {
                "group.id": f"{group_prefix}-{uuid.uuid4()}",  # assign() only; never commits
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            },
        )
    )
    md = c.list_topics(topic, timeout=10).topics[topic]
    tps = []
    for p in md.partitions:
        _, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        tps.append(TopicPartition(topic, p, hi))
    c.assign(tps)
    return c


class AlertTail(threading.Thread):
    """Prints every alert that arrives on the alerts topic after it started."""

    def __init__(self, bootstrap: Kafka, topic: str, pipeline: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.pipeline = bootstrap, topic, pipeline
        self.alerts: list[dict[str, Any]] = []
        self.stop_event = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        c = consumer_at_end(self.bootstrap, self.topic, "driftline-demo-tail")
        self.ready.set()
        try:
            while not self.stop_event.is_set():
                msg = c.poll(0.2)
                if msg is None or msg.error():
                    continue
                doc = orjson.loads(msg.value())
                if doc.get("pipeline") != self.pipeline:
                    continue
                self.alerts.append(doc)
                print("ALERT " + format_alert(doc), flush=True)
        finally:
            c.close()


class Labeller(threading.Thread):
    """Plays the user's ground-truth system: labels the demo's predictions, late and out of order.

    The truth follows the relation the model was trained on until event ``shift_at``, then the
    effect of ``amount`` inverts (concept drift), so live accuracy drops and the error-stream
    detector fires. ``share`` of the predictions get a label, 0-60 s (event time) after the event.
    """

    def __init__(self, bootstrap: Kafka, predictions_topic: str, labels_topic: str,
                 pipeline: str, shift_at: int, seed: int, share: float = 0.9) -> None:  # fmt: skip
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.labels_topic = bootstrap, predictions_topic, labels_topic
        self.pipeline, self.shift_at, self.share = pipeline, shift_at, share
        self.rng = np.random.default_rng(seed + 1)
        self.sent = 0
        self.seen = 0
        #: why the labeller stopped early (the demo reports it instead of waiting for labels)
        self.error: BaseException | None = None
        self.stop_event = threading.Event()
        self.ready = threading.Event()

    def truth(self, amount: np.ndarray, latency: np.ndarray, index: np.ndarray) -> np.ndarray:
        z = np.where(index < self.shift_at,
                     0.15 * (amount - 50.0) + 0.05 * (latency - 100.0),
                     -0.15 * (amount - 58.0) + 0.05 * (latency - 130.0))  # fmt: skip
        return (self.rng.random(amount.size) < 1.0 / (1.0 + np.exp(-z))).astype(np.int64)

    def run(self) -> None:
        try:
            self._label()
        except BaseException as e:  # reported by the demo, which stops waiting for labels
            self.error = e
            raise

    def _label(self) -> None:
        start, step = SyntheticStream.start_ms, SyntheticStream.step_ms
        c = consumer_at_end(self.bootstrap, self.topic, "driftline-demo-labeller")
        producer = make_producer(self.bootstrap, log_level=3)
        self.ready.set()
        try:
            while not self.stop_event.is_set():
                msgs = [m for m in c.consume(5_000, 0.2) if m.error() is None]
                docs = [orjson.loads(m.value()) for m in msgs]
                docs = [d for d in docs if d.get("pipeline") == self.pipeline]
                if not docs:
                    continue
                self.seen += len(docs)
                t = np.array([d["event_time_ms"] for d in docs], dtype=np.int64)
                amount = np.array([d["inputs"]["amount"] for d in docs])
                latency = np.array([d["inputs"]["latency_ms"] for d in docs])
                y = self.truth(amount, latency, (t - start) // step)
                keep = self.rng.random(len(docs)) < self.share
                delay = self.rng.integers(0, 60_000, len(docs))
                order = self.rng.permutation(len(docs))  # out of order
                out = []
                for i in order[keep[order]].tolist():
                    pid = docs[i]["prediction_id"]
                    doc = {"prediction_id": pid, "label": int(y[i]),
                           "label_time_ms": int(t[i] + delay[i])}  # fmt: skip
                    # keyed by entity like the events: each label lands on the partition that
                    # made its prediction (a label keyed otherwise is forwarded there)
                    key = docs[i]["entity"].encode()
                    out.append((self.labels_topic, key, orjson.dumps(doc)))
                produce_all(producer, out)
                producer.flush(30)
                self.sent += len(out)
        finally:
            producer.flush(30)
            c.close()


def run_labeller(
    spec: PipelineSpec,
    bootstrap: Kafka,
    *,
    shift_at: int,
    seed: int = 7,
    share: float = 0.9,
    seconds: float | None = None,
) -> int:
    """``driftline label-synthetic``: the demo's ground-truth system for a running pipeline.

    Labels the predictions the pipeline writes from now on (see `Labeller`), until SIGINT or
    SIGTERM, or for ``seconds``.
    """
    if not 0.0 < share <= 1.0:
        raise DriftlineError(f"--share: got {share}; expected a number in (0, 1]")
    if spec.labels is None:
        raise DriftlineError(
            f"spec {spec.source_path} has no [labels] section: the worker would not read the labels"
        )
    wait_for_broker(bootstrap, 60)
    ensure_topics(bootstrap, [spec.output.predictions_topic], 1)
    labeller = Labeller(bootstrap, spec.output.predictions_topic, spec.labels.topic, spec.name,
                        shift_at, seed, share)  # fmt: skip
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    labeller.start()
    labeller.ready.wait(30)
    print(f"labelling predictions of {spec.name} from {spec.output.predictions_topic} "
          f"to {spec.labels.topic}", flush=True)  # fmt: skip
    stop.wait(seconds)
    labeller.stop_event.set()
    labeller.join(30)
    print(f"sent {labeller.sent} labels for {labeller.seen} predictions", flush=True)
    return 0


def model_quality_line(url: str, window: str) -> str:
    """One line: live accuracy and AUC over ``window`` (mean over partitions), label counts."""

    def avg(metric: str) -> float:
        vals = [read_metric(url, "driftline_model_metric",
                            {"metric": metric, "window": window, "partition": str(p)})
                for p in (0, 1)]  # fmt: skip
        vals = [v for v in vals if v == v and v >= 0]
        return sum(vals) / len(vals) if vals else float("nan")

    outcome = "driftline_label_join_outcomes_total"
    joined = read_metric(url, outcome, {"outcome": "joined"})
    expired = read_metric(url, outcome, {"outcome": "expired_prediction"})
    return (
        f"labels: {joined:.0f} joined, {expired:.0f} predictions expired unlabelled; model "
        f"accuracy over the {window.removeprefix('last_')} latest labels {avg('accuracy'):.3f}, "
        f"AUC {avg('auc'):.3f}"
    )


def run_demo(
    *,
    kafka: KafkaConfig,
    events: int,
    shift_at: int,
    timeout_s: float,
    web_port: int | None,
    seed: int = 7,
) -> int:
    """``driftline demo``: on ``kafka``'s cluster, or on a local broker if it names none."""
    bootstrap: Kafka = kafka
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="driftline-demo-")))
        if not kafka.bootstrap:
            print(
                "starting a local Apache Kafka broker (first run downloads its jars) ...",
                flush=True,
            )
            t0 = time.monotonic()
            local = LocalKafka(port=free_port(), data_dir=tmp / "kafka")
            bootstrap = kafka.with_bootstrap(local.start())
            stack.callback(local.stop)
            print(f"broker up at {bootstrap} in {time.monotonic() - t0:.1f}s", flush=True)
        wait_for_broker(bootstrap)
        run_id = uuid.uuid4().hex[:8]
        data = tomllib.loads(demo_spec_text())
        data["pipeline"]["name"] = f"demo-{run_id}"
        data["input"]["topic"] = f"driftline.demo-{run_id}.events"
        port = web_port or free_port()
        data["worker"]["web_port"] = port
        # delayed labels from the Labeller below: live model metrics and concept drift
        data["labels"] = {"topic": f"driftline.demo-{run_id}.labels",
                          "time_field": "label_time_ms", "count_window": 1000}  # fmt: skip
        data["drift"]["watch"].append("error")  # error_adwin: a rising error (concept drift)
        version = train_demo_model(tmp / "demo-model.pkl", list(data["model"]["inputs"]))
        spec = parse_spec(data, base_dir=tmp)
        spec_path = tmp / "demo.toml"
        spec_path.write_text(_to_toml(data))
        o = spec.output
        assert spec.labels is not None
        ensure_topics(bootstrap, [spec.input.topic, spec.labels.topic], partitions=2)
        ensure_topics(bootstrap, o.all_topics, 2)
        print(
            f"pipeline {spec.name}: model {version}; {events} events, shift at event {shift_at}; "
            f"metrics at http://127.0.0.1:{port}/metrics",
            flush=True,
        )

        tail = AlertTail(bootstrap, o.alerts_topic, spec.name)
        tail.start()
        tail.ready.wait(30)
        stack.callback(tail.stop_event.set)
        labeller = Labeller(bootstrap, o.predictions_topic, spec.labels.topic, spec.name,
                            min(shift_at, events), seed)  # fmt: skip
        labeller.start()
        labeller.ready.wait(30)
        stack.callback(labeller.stop_event.set)

        worker = subprocess.Popen(
            worker_argv(spec_path, bootstrap, "--loglevel", "warning"),
            env=worker_env(bootstrap),
            stdout=subprocess.DEVNULL,
            stderr=open(tmp / "worker.log", "wb"),
        )
        stack.callback(stop_process, worker)

        stream = SyntheticStream(n=events, shift_at=min(shift_at, events), seed=seed)
        producer = make_producer(bootstrap, log_level=3)
        t_prod = time.monotonic()
        produce_all(
            producer,
            ((spec.input.topic, e["user_id"].encode(), orjson.dumps(e)) for e in stream.events()),
        )
        produce_all(producer, ((spec.input.topic, b"bad", m) for m in MALFORMED))
        producer.flush(60)
        del producer
        total = events + len(MALFORMED)
        print(
            f"produced {total} events ({len(MALFORMED)} malformed) in "
            f"{time.monotonic() - t_prod:.1f}s",
            flush=True,
        )

        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + timeout_s
        first: tuple[float, float] | None = None
        consumed = 0.0
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                raise DriftlineError(
                    f"the worker exited ({worker.returncode}); see {tmp / 'worker.log'}:\n"
                    + (tmp / "worker.log").read_text()[-3000:]
                )
            try:
                consumed = read_metric(
                    url, "driftline_records_consumed_total", {"topic": spec.input.topic}
                )
            except OSError:
                time.sleep(0.5)
                continue
            now = time.monotonic()
            if first is None and consumed > 0:
                first = (now, consumed)
            if consumed >= total:
                break
            time.sleep(0.25)
        dead = read_metric(url, "driftline_records_dead_lettered_total")
        t_done = time.monotonic()
        # the labeller labels what the worker predicted; wait for the worker to join it all
        joined = "driftline_label_join_outcomes_total"
        while (
            time.monotonic() < deadline
            and worker.poll() is None
            and labeller.is_alive()
            and (
                labeller.seen < events
                or read_metric(url, joined, {"outcome": "joined"}) < labeller.sent
            )
        ):
            time.sleep(0.25)
        if labeller.error is not None:
            print(f"the labeller stopped: {labeller.error!r}", flush=True)
        elif labeller.seen < events:
            print(f"the labeller saw {labeller.seen}/{events} predictions in time", flush=True)
        time.sleep(1.0)  # let the tail print the last alerts
        if first is not None and consumed > first[1]:
            rate = (consumed - first[1]) / max(t_done - first[0], 1e-9)
            print(
                f"worker consumed {consumed:.0f} records ({dead:.0f} dead-lettered) at "
                f"~{rate:,.0f} events/s; {len(tail.alerts)} alerts",
                flush=True,
            )
            print(model_quality_line(url, "last_1000"), flush=True)
        if consumed < total:
            print(
                f"stopped after {timeout_s:.0f}s with {consumed:.0f}/{total} records consumed",
                flush=True,
            )
            return 1
    print("demo finished; broker and worker stopped", flush=True)
    return 0


def produce_synthetic(
    bootstrap: Kafka, topic: str, *, events: int, shift_at: int, rate: float | None, seed: int = 7
) -> int:
    """Produce the synthetic stream to ``topic``, at most ``rate`` events/s when given."""
    wait_for_broker(bootstrap, 60)
    producer = make_producer(bootstrap, log_level=3)
    stream = SyntheticStream(n=events, shift_at=min(shift_at, events), seed=seed)
    t0 = time.monotonic()
    chunk: list[tuple[str, bytes, bytes]] = []
    sent = 0
    for e in stream.events():
        chunk.append((topic, e["user_id"].encode(), orjson.dumps(e)))
        if len(chunk) == 1000:
            produce_all(producer, chunk)
            sent += len(chunk)
            chunk = []
            if rate:
                ahead = sent / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
    produce_all(producer, chunk)
    sent += len(chunk)
    left = producer.flush(60)
    print(f"produced {sent - left} events to {topic} in {time.monotonic() - t0:.1f}s", flush=True)
    return 0 if left == 0 else 1


def stop_process(p: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    """SIGTERM ``p`` and wait up to ``timeout_s``; SIGKILL it if it has not exited by then."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def _to_toml(data: dict[str, Any]) -> str:
    """Minimal TOML writer for the spec's shape (tables, arrays of tables, scalars, lists)."""
    lines: list[str] = []

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return orjson.dumps(v).decode()
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        raise TypeError(f"cannot write {type(v).__name__} to TOML")

    def table(name: str, d: dict[str, Any], array: bool = False) -> None:
        lines.append(f"[[{name}]]" if array else f"[{name}]")
        subs = []
        for k, v in d.items():
            if isinstance(v, dict):
                subs.append((k, v))
            else:
                lines.append(f"{k} = {scalar(v)}")
        for k, v in subs:
            table(f"{name}.{k}", v)

    for k, v in data.items():
        if isinstance(v, dict):
            table(k, v)
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            for item in v:
                table(k, item, array=True)
    return "\n".join(lines) + "\n"
