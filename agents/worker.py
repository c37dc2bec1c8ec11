"""The worker: a faust-streaming app hosting a transactional batch loop.

Why not one faust agent per event: measured here, faust's per-Event stream machinery tops out near
10k events/s per process (with or without ``stream.take``). So faust hosts the worker (service
lifecycle, signals, logging, its web server for ``/metrics``), and the hot path
(:mod:`agents.runner`) consumes whole batches with confluent-kafka, hands them to ``streams/`` as
numpy arrays, and commits each batch's outputs, state and offsets in one Kafka transaction.
"""

from __future__ import annotations

import asyncio
import logging
import logging.config
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import faust
import mode

from driftline.agents.access import Needs, check_access
from driftline.agents.batch_features import BatchFeatureCache
from driftline.agents.commit.exactly_once import transactional_id
from driftline.agents.gc_tuning import tune_gc
from driftline.agents.kafka_io import (
    CONNECT_TIMEOUT_S,
    cluster_size,
    topic_partitions,
    wait_for_broker,
)
from driftline.agents.logs import add_secrets, logging_config
from driftline.agents.metrics import WorkerMetrics
from driftline.agents.predictor import build_predictor
from driftline.agents.runner import TransactionalRunner, changelog_topic, default_worker_id
from driftline.agents.state import StateReset
from driftline.agents.status_page import StatusCollector, render_html
from driftline.agents.topics import ensure_pipeline_topics, host_app_id, host_leader_topic
from driftline.agents.web import check_listen, serve_only_driftline_pages, web_settings
from driftline.errors import DriftlineError, SpecError
from driftline.kafka_config import Kafka, KafkaConfig, aiokafka_auth
from driftline.spec import PipelineSpec

log = logging.getLogger("driftline.worker")

#: /healthz says "stalled" when input records wait and no batch was processed for this long.
HEALTH_STALL_S = 60.0
#: Seconds the batch loop may take to stop (its Kafka calls are bounded well within this).
RUNNER_STOP_S = 45.0
#: Seconds after a stop begins (SIGTERM/SIGINT) past which the process exits (code 1) whatever
#: is still running: faust's own clients wait for brokers that may be away.
STOP_DEADLINE_S = 75.0
#: With the brokers away when the batch loop has stopped: seconds left for faust's clients to
#: close before the process exits (code 0: what was committed is durable; faust's consumer
#: would wait 60 s for a broker that does not answer).
OUTAGE_STOP_S = 5.0


def _exit_if_still_running(deadline_s: float, code: int = 1) -> None:
    """A daemon timer: end the process with ``code`` ``deadline_s`` from now if it has not
    ended by then."""

    def _exit() -> None:
        if code:
            log.error("the worker did not stop within %.0f s of being asked to; exiting now",
                      deadline_s)  # fmt: skip
        logging.shutdown()
        os._exit(code)

    timer = threading.Timer(deadline_s, _exit)
    timer.daemon = True
    timer.start()


class RunnerService(mode.Service):
    """Lets faust own the lifecycle of the :class:`TransactionalRunner` thread."""

    def __init__(self, runner: TransactionalRunner, **kw: Any) -> None:
        super().__init__(**kw)
        self.runner = runner

    async def on_started(self) -> None:
        if not self.runner.is_alive() and self.runner.ident is None:  # not started by run_worker
            self.runner.start()
        self.add_future(self._watch())

    async def _watch(self) -> None:
        while not self.should_stop:
            if not self.runner.is_alive():
                err = self.runner.error or DriftlineError("the worker loop stopped")
                await self.crash(err)
                return
            await asyncio.sleep(0.2)

    async def on_stop(self) -> None:
        _exit_if_still_running(STOP_DEADLINE_S)
        self.runner.stop()
        await asyncio.get_running_loop().run_in_executor(None, self.runner.join, RUNNER_STOP_S)
        if not self.runner.link.up:
            log.warning("stopping while the Kafka brokers are away: not waiting for their "
                        "clients to close")  # fmt: skip
            _exit_if_still_running(OUTAGE_STOP_S, 0)


#: The topics the worker creates at start when they are missing (:mod:`agents.topics` roles).
PREFLIGHT_ROLES = frozenset(
    {"labels", "business", "output", "dead letters", "late events", "state changelog",
     "worker host"}
)
#: Seconds for the access check (topics, groups, transactional id) once the cluster answered.
ACCESS_TIMEOUT_S = 10.0


def worker_needs(spec: PipelineSpec, worker_id: str) -> Needs:
    """The topics, groups and transactional id a worker of ``spec`` uses (its ACLs)."""
    changelog = changelog_topic(spec)
    labels = (spec.labels.topic,) if spec.labels is not None else ()
    business = (spec.business.topic,) if spec.business is not None else ()
    batch = (spec.batch_features.topic,) if spec.batch_features is not None else ()
    leader = host_leader_topic(spec)
    txn = None
    if spec.worker.processing_guarantee == "exactly_once":
        txn = transactional_id(spec, worker_id)
    return Needs(
        read_topics=(spec.input.topic, *labels, *business, changelog, *batch, leader),
        write_topics=(*spec.output.all_topics, *labels, changelog, leader),
        groups=(spec.group_id, host_app_id(spec)),
        transactional_id=txn,
    )


def preflight(spec: PipelineSpec, bootstrap: Kafka, worker_id: str | None = None) -> int:
    """Fail before starting when the cluster, the input topic or an ACL is missing (one line,
    within ``CONNECT_TIMEOUT_S`` + ``ACCESS_TIMEOUT_S``), or the spec's ``[topics]`` asks what
    the cluster cannot do; create the missing topics the worker writes (outputs, labels,
    changelog, the host's leader topic) with the spec's settings.

    Returns the input topic's partition count.
    """
    kafka = KafkaConfig.of(bootstrap)
    wait_for_broker(kafka, CONNECT_TIMEOUT_S)
    needs = worker_needs(spec, worker_id or default_worker_id())
    check_access(kafka, needs, ACCESS_TIMEOUT_S)  # existing topics, groups, transactional id
    n_in = topic_partitions(bootstrap, spec.input.topic)
    if n_in is None:
        config = spec.source_path or "pipeline.toml"
        raise SpecError(
            f"input topic {spec.input.topic!r} (spec key input.topic) does not exist on "
            f"{bootstrap}; create the pipeline's topics with `driftline topics create -c "
            f"{config} --bootstrap {bootstrap} --partitions N` (or start the worker with "
            "--create-topics), or fix the spec. Do not let producers auto-create it: brokers "
            "make one-partition topics"
        )
    ensure_pipeline_topics(spec, bootstrap, n_in, PREFLIGHT_ROLES)
    side = [
        (spec.labels, "labels", "a label is joined on the partition its prediction was made on"),
        (spec.business, "business", "partition p's business metric goes into the alerts of "
         "input partition p"),
    ]  # fmt: skip
    for section, name, why in side:
        if section is None:
            continue
        n_side = topic_partitions(bootstrap, section.topic)
        if n_side != n_in:
            raise SpecError(
                f"the {name} topic {section.topic!r} (spec key {name}.topic) has {n_side} "
                f"partitions but the input topic has {n_in}: {why}, so give both topics the "
                "same partition count"
            )
    changelog = changelog_topic(spec)
    n_log = topic_partitions(bootstrap, changelog)
    if n_log != n_in:
        raise DriftlineError(
            f"the input topic has {n_in} partitions but the state changelog {changelog} has "
            f"{n_log}: state is kept per input partition, so after adding input partitions "
            "run the pipeline under a new pipeline.name (or delete the changelog to start over)"
        )
    # the topics that did not exist at the first check (just made): may we use them too?
    check_access(kafka, needs.only_topics(), ACCESS_TIMEOUT_S)
    return n_in


def faust_broker(kafka: KafkaConfig) -> dict[str, Any]:
    """faust's ``broker`` and ``broker_credentials`` for the same cluster and settings."""
    auth = aiokafka_auth(kafka)
    creds: faust.types.auth.CredentialsT | None = None
    if auth["security_protocol"].startswith("SASL_"):
        creds = faust.SASLCredentials(
            username=auth["sasl_plain_username"],
            password=auth["sasl_plain_password"],
            ssl_context=auth.get("ssl_context"),
            mechanism=auth["sasl_mechanism"],
        )
    elif auth["security_protocol"] == "SSL":
        creds = faust.SSLCredentials(auth["ssl_context"])
    urls = [f"kafka://{hp.strip()}" for hp in kafka.bootstrap.split(",") if hp.strip()]
    return {"broker": urls, "broker_credentials": creds}


def create_app(
    spec: PipelineSpec,
    bootstrap: Kafka,
    *,
    web_host: str,
    web_port: int,
    worker_id: str,
    batch_cache: BatchFeatureCache | None = None,
    reset_state: StateReset = frozenset(),
) -> faust.App:
    """The faust app hosting the batch runner and the ``/metrics`` and ``/healthz`` pages."""
    # faust's own topics (its leader topic, planned and created by preflight) replicated as the
    # spec's [topics.host] says, not with faust's default of one replica
    host_replicas, _ = spec.topics.replication("host", cluster_size(bootstrap))
    app = faust.App(
        host_app_id(spec),
        **faust_broker(KafkaConfig.of(bootstrap)),
        store="memory://",
        # faust's own data dir (unused by driftline's state, which lives on the changelog)
        datadir=str(Path(tempfile.gettempdir()) / f"driftline-faust-{spec.name}-{worker_id}"),
        # driftline's pages only, listening on web_host alone (agents/web.py)
        **web_settings(web_host, web_port),
        topic_partitions=1,
        topic_replication_factor=host_replicas,
        # faust's own (topic-less) consumer group: after a crash its dead member must time out
        # before the host app is ready, so keep that short (the runner has its own group)
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
    )
    metrics = WorkerMetrics(spec.name)
    predictor, version = build_predictor(spec)
    runner = TransactionalRunner(
        spec, bootstrap, metrics, predictor, version, worker_id, batch_cache, reset_state
    )
    app.service(RunnerService(runner))

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(metrics.exposition(), content_type="text/plain; version=0.0.4")

    @app.page("/healthz")
    async def health(web: Any, request: Any) -> Any:
        # 200 while the loop runs with partitions and keeps up; else 503 with the reason
        report = runner.health(HEALTH_STALL_S)
        return web.json(report, status=200 if report["healthy"] else 503)

    status = StatusCollector(runner, metrics, values=spec.worker.status_values)

    @app.timer(interval=0.5)
    async def sample_status() -> None:  # the status page's statistic history
        status.sample()

    @app.page("/status")
    async def status_page(web: Any, request: Any) -> Any:
        return web.html(render_html(status.snapshot()))

    @app.page("/status.json")
    async def status_json(web: Any, request: Any) -> Any:
        return web.bytes(status.json_bytes(), content_type="application/json")

    serve_only_driftline_pages(app)
    app.driftline_runner = runner  # type: ignore[attr-defined]
    return app


def run_worker(
    spec: PipelineSpec,
    bootstrap: Kafka,
    *,
    web_host: str,
    web_port: int,
    loglevel: str = "info",
    worker_id: str | None = None,
    log_format: str = "plain",
    create_topics: bool = False,
    reset_state: StateReset = frozenset(),
) -> None:
    """Check the cluster, then run until SIGINT/SIGTERM (logs: ``plain`` or ``json`` lines).

    ``create_topics``: first create the pipeline's missing topics, as ``driftline topics
    create`` does (the input topic with its partitions if it exists, else the default count).
    ``reset_state``: input partitions whose saved state is ignored once (``--reset-state``).
    """
    add_secrets(KafkaConfig.of(bootstrap).secret_values())  # redacted by value in every log
    if spec.schema_registry is not None:  # its secrets and files, before any broker is asked
        from driftline.agents.registry import registry_client_config, registry_secrets

        add_secrets(registry_secrets(registry_client_config(spec.schema_registry)))
    logging.config.dictConfig(logging_config(log_format, loglevel))  # preflight's logs too
    check_listen(web_host, web_port)  # before anything starts
    if create_topics:
        from driftline.agents.topics import create_pipeline_topics

        for outcome in create_pipeline_topics(spec, bootstrap):
            if outcome.created:
                log.info("%s", outcome.describe())
    wid = worker_id or default_worker_id()
    preflight(spec, bootstrap, wid)
    cache = None
    if spec.batch_features is not None:
        cache = BatchFeatureCache(spec.batch_features, bootstrap)
        cache.start()
        cache.wait_loaded(spec.batch_features.load_timeout_ms / 1000)
    app = create_app(
        spec, bootstrap, web_host=web_host, web_port=web_port, worker_id=wid, batch_cache=cache,
        reset_state=reset_state,
    )  # fmt: skip
    # The runner starts now, not when faust is ready: faust's start (its own group's join,
    # which waits out a killed predecessor's member) is then off the critical path, and the
    # partitions are being restored while faust starts its web server.
    tune_gc()  # the app, the clients and the model are built: collections need not walk them
    app.driftline_runner.start()  # type: ignore[attr-defined]
    faust.Worker(
        app, loglevel=loglevel, quiet=True, logging_config=logging_config(log_format, loglevel)
    ).execute_from_commandline()
