"""The ``driftline`` command line.

Exit status: 0 done; 1 the command failed while running (a broker that does not answer, a
transaction aborted, a file it cannot read or write); 2 a usage or configuration error (an
unknown option, an invalid pipeline spec, a missing --bootstrap, a missing input topic): fix
the command or the spec; 130 interrupted. Errors are one ``driftline: error: ...`` line, without
a traceback (``DRIFTLINE_TRACEBACK=1`` adds it).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import driftline
from driftline.errors import DriftlineError, KafkaConfigError, SpecError, UsageError
from driftline.kafka_cli import add_kafka_parser

_RAW = argparse.RawDescriptionHelpFormatter

#: ``driftline`` exit statuses.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

EXIT_STATUS_HELP = (
    "exit status: 0 done, 1 failed while running (e.g. no broker answered), 2 usage or "
    "configuration error (bad option, invalid spec, missing --bootstrap or input topic), "
    "130 interrupted"
)


def version() -> str:
    """driftline's version (``driftline.__version__``; the package metadata says the same)."""
    return driftline.__version__


def _kafka(args: argparse.Namespace, spec: Any = None, required: bool = True) -> Any:
    """The Kafka client settings of a command (:mod:`driftline.kafka_config`): the spec's
    ``[kafka]``, then ``--kafka-config``, then ``DRIFTLINE_KAFKA_*``, then ``--bootstrap``."""
    from driftline.agents.logs import add_secrets
    from driftline.kafka_config import load_kafka_config

    kafka = load_kafka_config(
        spec_section=getattr(spec, "kafka", None),
        config_file=args.kafka_config,
        bootstrap=args.bootstrap,
        require_bootstrap=required,
    )
    add_secrets(kafka.secret_values())  # redacted by value from every log line and error
    return kafka


def _port(text: str) -> int:
    """An argparse type: a TCP port, 1-65535."""
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return port


def _args(args: argparse.Namespace, *names: str, **renamed: str) -> dict[str, Any]:
    """Keyword arguments from parsed options: ``names`` as they are, ``param="option"`` renamed."""
    return {name: getattr(args, name) for name in names} | {
        param: getattr(args, option) for param, option in renamed.items()
    }


def _cmd_worker(args: argparse.Namespace) -> int:
    from driftline.agents.kafka_io import CONNECT_TIMEOUT_S, wait_for_broker
    from driftline.agents.web import check_listen
    from driftline.spec import check_web_host, load_spec

    spec = load_spec(args.config)
    if args.web_host is not None:
        check_web_host(args.web_host, "--web-host")
    web_host = args.web_host or spec.worker.web_host
    web_port = spec.worker.web_port if args.web_port is None else args.web_port
    check_listen(web_host, web_port)  # a port in use or another host's address: say so first
    kafka = _kafka(args, spec)
    # before the worker's (slow) imports: an unreachable cluster, a wrong password or an
    # untrusted certificate ends the command in seconds
    wait_for_broker(kafka, CONNECT_TIMEOUT_S)
    if args.processes > 1:
        return _run_processes(args, spec, kafka, web_host, web_port)
    from driftline.agents.process_group import die_with_parent
    from driftline.agents.worker import run_worker

    die_with_parent()  # one of `--processes N`: stop with the supervisor
    run_worker(
        spec,
        kafka,
        web_host=web_host,
        web_port=web_port,
        loglevel=args.loglevel,
        worker_id=args.worker_id,
        log_format=args.log_format,
        create_topics=args.create_topics,
        reset_state=args.reset_state,
    )
    return 0


def _run_processes(
    args: argparse.Namespace, spec: Any, kafka: Any, web_host: str, web_port: int
) -> int:
    """``driftline worker --processes N``: N worker processes under one supervisor
    (`driftline.agents.process_group`)."""
    import logging.config
    import signal

    from driftline.agents.demo import worker_env
    from driftline.agents.kafka_io import topic_partitions
    from driftline.agents.logs import logging_config
    from driftline.agents.process_group import ProcessGroup, ProcessPlan
    from driftline.agents.runner import default_worker_id
    from driftline.agents.web import check_listen

    if args.reset_state:
        raise UsageError(
            "--reset-state with --processes: each process would reset the partitions it is "
            "given, again after every rebalance; run the worker once with --processes 1 and "
            "--reset-state, stop it after its first commit, then start the processes"
        )
    plan = ProcessPlan(args.processes, web_host, web_port, args.worker_id or default_worker_id())
    for i in range(plan.count):
        check_listen(web_host, plan.port_of(i))
    logging.config.dictConfig(logging_config(args.log_format, args.loglevel))
    log = logging.getLogger("driftline.worker")
    if args.create_topics:
        from driftline.agents.topics import create_pipeline_topics

        for outcome in create_pipeline_topics(spec, kafka):
            if outcome.created:
                log.info("%s", outcome.describe())
    partitions = topic_partitions(kafka, spec.input.topic)
    if partitions is not None and partitions < plan.count:
        log.warning(
            "input topic %s has %d partitions: %d of the %d processes will have none to work "
            "on (a consumer group gives each partition to one member); add partitions",
            spec.input.topic, partitions, plan.count - partitions, plan.count,
        )  # fmt: skip

    def argv_of(i: int) -> list[str]:
        return [sys.executable, "-m", "driftline.cli", "worker", "-c", str(args.config),
                "--web-host", web_host, "--web-port", str(plan.port_of(i)),
                "--worker-id", plan.worker_id_of(i), "--loglevel", args.loglevel,
                "--log-format", args.log_format]  # fmt: skip

    group = ProcessGroup(plan, argv_of, worker_env(kafka))  # settings in the environment
    server = group.serve()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda n, _frame: group.request_stop(n))
    log.info("supervising %d worker processes; one /metrics for all on http://%s:%d/metrics",
             plan.count, web_host, web_port)  # fmt: skip
    try:
        return group.run()
    finally:
        server.shutdown()


def _cmd_demo(args: argparse.Namespace) -> int:
    from driftline.agents.demo import run_demo

    return run_demo(
        kafka=_kafka(args, required=False),
        **_args(args, "events", "shift_at", "web_port", timeout_s="timeout"),
    )


def _cmd_label(args: argparse.Namespace) -> int:
    from driftline.agents.demo import run_labeller
    from driftline.spec import load_spec

    spec = load_spec(args.config, model_file_required=False)
    return run_labeller(
        spec, _kafka(args, spec), **_args(args, "shift_at", "seed", "share", "seconds")
    )


def _cmd_produce(args: argparse.Namespace) -> int:
    from driftline.agents.demo import produce_synthetic

    return produce_synthetic(
        _kafka(args), args.topic, **_args(args, "events", "shift_at", "rate", "seed")
    )


def _cmd_alerts_tail(args: argparse.Namespace) -> int:
    from driftline.agents.alerts_tail import tail_alerts
    from driftline.spec import default_of, load_spec

    topic, spec, readers = args.topic, None, None
    if args.config:
        spec = load_spec(args.config)
        topic = spec.output.alerts_topic
        if spec.output.format == "avro" and spec.schema_registry is not None:
            from driftline.agents.formats import SchemaReaders
            from driftline.agents.registry import registry_client

            readers = SchemaReaders(registry_client(spec.schema_registry), "avro")
    return tail_alerts(
        _kafka(args, spec),
        topic or default_of("output.alerts_topic"),
        readers=readers,
        **_args(args, "from_beginning", as_json="json", max_alerts="max", timeout_s="timeout"),
    )


def _cmd_status(args: argparse.Namespace) -> int:
    import json

    from driftline.agents.status_page import fetch_status, summarize

    data = fetch_status(args.url, args.timeout)
    print(json.dumps(data, indent=2) if args.json else summarize(data))
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from driftline.agents.replay import replay
    from driftline.spec import load_spec

    spec = load_spec(args.config)
    stats = replay(
        spec,
        args.input,
        args.output,
        progress=not args.no_progress,
        labels=_label_feed(args, spec, args.partitions),
        business=_business_feed(args, spec, args.partitions),
        **_args(
            args,
            "partitions",
            "partitioner",
            predictions_path="predictions",
            alerts_path="alerts",
            dead_letters_path="dlq",
            batch_features_path="batch_features",
            model_metrics_path="model_metrics",
        ),
    )
    dead = ", ".join(f"{k}={v}" for k, v in sorted(stats.dead_letters.items())) or "none"
    labels = f" and {stats.labels} labels" if args.labels is not None else ""
    if args.business is not None:
        labels += f" and {stats.business} business records"
    print(
        f"replayed {stats.events} events{labels}: {stats.feature_vectors} feature vectors -> "
        f"{args.output}, {stats.predictions} predictions, {stats.alerts} alerts, "
        f"{stats.late} late, dead letters: {dead}"
    )
    return 0


def _label_feed(args: argparse.Namespace, spec: Any, partitions: int) -> Any:
    """The ``--labels`` file as a ``LabelFeed`` over ``partitions`` (None without it)."""
    if args.labels is None:
        return None
    from driftline.agents.replay_labels import LabelFeed

    return LabelFeed(spec, args.labels, max(partitions, 1), args.partitioner)


def _business_feed(args: argparse.Namespace, spec: Any, partitions: int) -> Any:
    """The ``--business`` file as a ``BusinessFeed`` over ``partitions`` (None without it)."""
    if args.business is None:
        return None
    from driftline.agents.replay_business import BusinessFeed

    return BusinessFeed(spec, args.business, max(partitions, 1), args.partitioner)


def _cmd_report(args: argparse.Namespace) -> int:
    from driftline.agents.report import report_of_file, report_of_topic, write_report
    from driftline.spec import load_spec

    ranged = [o for o in ("from_offset", "from_time", "to_offset", "to_time") if getattr(args, o)]
    if args.input is not None and ranged:
        flag = "--" + ranged[0].replace("_", "-")
        raise UsageError(f"{flag} reads a topic range: give it with --topic, not --input")
    for name in ("from_offset", "to_offset"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be 0 or more, got {value}")
    spec = load_spec(args.config)
    progress = not args.no_progress
    if args.input is not None:
        report = report_of_file(
            spec, args.input, progress=progress,
            labels=_label_feed(args, spec, args.partitions),
            business=_business_feed(args, spec, args.partitions),
            **_args(args, "partitions", "partitioner", batch_features_path="batch_features"),
        )  # fmt: skip
    else:
        from driftline.agents.topic_range import Bound, RangeError, TopicRange, parse_time_ms

        try:
            start = Bound(args.from_offset, args.from_time and parse_time_ms(args.from_time))
            end = Bound(args.to_offset, args.to_time and parse_time_ms(args.to_time))
            rng = TopicRange(_kafka(args, spec), args.topic, start, end)
        except RangeError as e:
            raise UsageError(str(e)) from None
        try:
            report = report_of_topic(
                spec, rng, progress=progress, batch_features_path=args.batch_features,
                labels=_label_feed(args, spec, len(rng.ranges)),
                business=_business_feed(args, spec, len(rng.ranges)),
            )  # fmt: skip
        finally:
            rng.close()
    write_report(report, args.output, args.json)
    s = report["summary"]
    fired = sum(1 for d in report["detectors"] if d["episodes"])
    print(
        f"replayed {s['events']} events: {s['episodes']} drift episodes from {fired} of "
        f"{len(report['detectors'])} detectors -> {args.output}"
        + (f" (JSON: {args.json})" if args.json else "")
    )
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    import orjson

    from driftline.agents.replay import build_profile
    from driftline.spec import load_spec

    spec = load_spec(args.config)
    doc = build_profile(spec, args.input, progress=not args.no_progress)
    Path(args.output).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    print(f"profiled {doc['events']} events, columns {sorted(doc['columns'])} -> {args.output}")
    if "calibration" in doc:
        n = doc["calibration"]["n_fit"]
        print(f"calibration of the scores on {n} labelled predictions (performance_estimation)")
    for name, ref in doc.get("multivariate", {}).items():
        print(f"multivariate {name}: PCA reference on {ref['n']} complete rows, "
              f"{len(ref['components'])} of {len(ref['mean'])} components kept")  # fmt: skip
    return 0


def _batch_spec(args: argparse.Namespace) -> Any:
    """The spec's ``[batch_features]``, the Kafka settings and the spec's ``[topics]``."""
    from driftline.spec import load_spec

    spec = load_spec(args.config, model_file_required=False)
    if spec.batch_features is None:
        raise UsageError(f"{args.config} has no [batch_features] section")
    return spec.batch_features, _kafka(args, spec), spec.topics


def _cmd_bf_load(args: argparse.Namespace) -> int:
    from driftline.agents.batch_features import load_batch_features

    bf, kafka, topics = _batch_spec(args)
    stats = load_batch_features(
        bf,
        kafka,
        args.file,
        progress=not args.no_progress,
        topics=topics,
        **_args(args, "version", "partitions"),
    )
    rejected = ", ".join(f"{k}={v}" for k, v in sorted(stats.rejected.items())) or "none"
    print(f"loaded {stats.loaded} entities to {bf.topic}; rejected rows: {rejected}")
    return 0 if not stats.rejected else 1


def _cmd_bf_delete(args: argparse.Namespace) -> int:
    from driftline.agents.batch_features import delete_batch_features

    bf, kafka, _topics = _batch_spec(args)
    n = delete_batch_features(bf, kafka, args.entities)
    print(f"deleted {n} entities from {bf.topic}")
    return 0


def _cmd_predict_batch(args: argparse.Namespace) -> int:
    from driftline.agents.modes import predict_batch
    from driftline.spec import load_spec

    n = predict_batch(load_spec(args.config), args.input, args.output)
    print(f"wrote {n} predictions to {args.output}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from driftline.agents.modes import train
    from driftline.spec import load_spec

    spec = load_spec(args.config, model_file_required=False)
    stats = train(
        spec,
        args.input,
        args.output,
        progress=not args.no_progress,
        **_args(args, "version", label_field="label", batch_features_path="batch_features"),
    )
    skipped = ", ".join(f"{k}={v}" for k, v in sorted(stats.skipped.items())) or "none"
    print(
        f"trained on {stats.rows} rows (skipped: {skipped}); model {stats.version} -> {args.output}"
    )
    return 0


def _cmd_topics_create(args: argparse.Namespace) -> int:
    from driftline.agents.topics import create_pipeline_topics
    from driftline.spec import load_spec

    spec = load_spec(args.config, model_file_required=False)
    outcomes = create_pipeline_topics(
        spec, _kafka(args, spec), args.partitions, args.replication_factor
    )
    for outcome in outcomes:
        print(outcome.describe())
    made = sum(o.created for o in outcomes)
    print(f"pipeline {spec.name!r}: {made} topics created, {len(outcomes) - made} existed")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from driftline.agents.predictor import build_predictor
    from driftline.spec import load_spec

    spec = load_spec(args.config)  # reference profiles are read and checked here
    build_predictor(spec)  # the model file, loaded and checked as the worker does at start
    if spec.schema_registry is not None:  # its secrets (environment, files) and TLS files
        from driftline.agents.registry import registry_client

        registry_client(spec.schema_registry)
    print(
        f"{args.config}: valid pipeline {spec.name!r}: input {spec.input.topic}, "
        f"{len(spec.features)} features, {len(spec.detectors)} detectors, "
        f"model {'yes' if spec.model else 'no'}"
    )
    return 0


def _usage(parser: argparse.ArgumentParser, to_stderr: bool = True) -> Any:
    """A ``func`` for a command group run without a sub-command: its help, exit status 2."""

    def show(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr if to_stderr else None)
        return EXIT_USAGE

    return show


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and every sub-command parser under it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from _parsers(sub)


def _command(sub: Any, words: str, func: Any = None) -> argparse.ArgumentParser:
    """Add the sub-command ``words`` (its last word) with its ``_TEXTS`` and ``func``."""
    help, description, examples = _TEXTS[words]
    epilog = None
    if examples:
        epilog = ("example:" if len(examples) == 1 else "examples:") + "".join(
            f"\n  {example}" for example in examples
        )
    parser: argparse.ArgumentParser = sub.add_parser(
        words.split()[-1], help=help, formatter_class=_RAW, description=description, epilog=epilog
    )
    if func is not None:
        parser.set_defaults(func=func)
    return parser


def _group(sub: Any, words: str, usage_to_stderr: bool = True) -> Any:
    """Add the command group ``words`` (run alone: its help, exit status 2); its sub-parsers."""
    parser = _command(sub, words)
    parser.set_defaults(func=_usage(parser, usage_to_stderr))
    return parser.add_subparsers(title="commands", metavar="COMMAND")


def _config_arg(
    parser: argparse.ArgumentParser, help: str = "pipeline spec (TOML)", required: bool = True
) -> None:
    parser.add_argument("-c", "--config", required=required, help=help)


def _bootstrap_arg(
    parser: argparse.ArgumentParser,
    help: str = "Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS)",
) -> None:
    parser.add_argument("--bootstrap", help=help)
    parser.add_argument(
        "--kafka-config",
        metavar="FILE",
        help="Kafka client settings (librdkafka names) in a .properties file, as kafka-*.sh "
        "--command-config takes: security.protocol, sasl.*, ssl.*; overrides the spec's [kafka], "
        "overridden by DRIFTLINE_KAFKA_* variables (DRIFTLINE_KAFKA_SASL_PASSWORD sets "
        "sasl.password)",
    )


def _spec_and_files(parser: argparse.ArgumentParser, **helps: str) -> None:
    """``-c/--config``, then required files, e.g. ``input="events file"`` adds ``--input``."""
    _config_arg(parser)
    for name, help in helps.items():
        parser.add_argument(f"--{name}", required=True, help=help)


def _options(parser: argparse.ArgumentParser, **helps: str) -> None:
    """Plain string options, e.g. ``alerts="..."`` adds ``--alerts`` (``_`` becomes ``-``)."""
    for name, help in helps.items():
        parser.add_argument("--" + name.replace("_", "-"), help=help)


def _no_progress_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


#: Each command's help line, description (or None) and examples, by its words after ``driftline``.
_TEXTS: dict[str, tuple[str, str | None, tuple[str, ...]]] = {
    "worker": (
        "run a pipeline worker (join its consumer group)",
        "Consume the spec's input topic, compute features, predict, detect drift, and serve "
        "Prometheus metrics on /metrics. Stop with Ctrl-C or SIGTERM.",
        ("driftline worker -c pipeline.toml --bootstrap 127.0.0.1:9092 --web-port 6066",),
    ),
    "topics": (
        "create the Kafka topics a pipeline uses",
        "Manage the topics a pipeline spec names.",
        ("driftline topics create -c pipeline.toml --bootstrap 127.0.0.1:9092 --partitions 4",),
    ),
    "topics create": (
        "create the input, labels, output, state and batch-features topics",
        "Create every topic the spec names that does not exist yet, with the partition counts and "
        "configs the worker needs: the input topic with --partitions, the labels topic, the "
        "outputs and the state changelog (compacted) with as many partitions as the input topic, "
        "the batch-features topic compacted. Existing topics are kept; an input topic with another "
        "count than --partitions, or a labels topic or changelog whose count differs from the "
        "input's, is refused before anything is created. Use it instead of letting producers "
        "auto-create topics (one partition, default configs).",
        (
            "driftline topics create -c pipeline.toml --bootstrap 127.0.0.1:9092 --partitions 4",
            "driftline topics create -c pipeline.toml   # input exists: the others match it",
        ),
    ),
    "demo": (
        "run the demo: local broker, worker, drifting synthetic stream",
        "Start a local Apache Kafka broker (unless --bootstrap or $KAFKA_BOOTSTRAP_SERVERS names "
        "one), a worker and a synthetic producer whose stream shifts at a known event; print each "
        "drift alert as it arrives, then stop and clean up.",
        ("driftline demo --events 100000 --shift-at 60000",),
    ),
    "validate": (
        "check a pipeline spec and exit",
        "Validate a spec against schemas/spec.schema.json and its cross-references, and load "
        "what it names as the worker would: the model file (it must load, be a river "
        "classifier or regressor, score a row of its inputs, and be learnable with "
        "labels.learn) and the detectors' reference profiles. Exit status 2 with one line "
        "saying what is wrong otherwise.",
        ("driftline validate -c pipeline.toml",),
    ),
    "produce-synthetic": (
        "produce the demo's drifting synthetic stream to a topic",
        "Produce seeded synthetic payment events (user_id, ts, amount, latency_ms, country) whose "
        "amount and latency shift at --shift-at.",
        (
            "driftline produce-synthetic --bootstrap 127.0.0.1:9092 --topic driftline.demo.events "
            "--events 100000 --rate 5000",
        ),
    ),
    "label-synthetic": (
        "label a running pipeline's predictions like the demo (late, out of order)",
        "Play the ground-truth system for the synthetic stream: read the pipeline's predictions "
        "and send a label for --share of them to its labels topic, 0-60 s (event time) late and "
        "out of order; the concept changes at --shift-at. Runs until interrupted (or --seconds).",
        (
            "driftline label-synthetic -c pipeline.toml --bootstrap 127.0.0.1:9092 --shift-at "
            "600000",
        ),
    ),
    "replay": (
        "compute the feature vectors of a file offline, as the worker would",
        "Run the spec's decoding, features, model and detectors over a file (JSON Lines, "
        ".jsonl.gz, CSV or Parquet) and write the feature vectors the worker would have written. "
        "To match a topic's lateness decisions give its partition count and the producer's "
        "partitioner.",
        (
            "driftline replay -c pipeline.toml --input events.jsonl.gz --output features.parquet "
            "--partitions 6",
        ),
    ),
    "report": (
        "replay a file or a topic range and write an HTML drift report (and its JSON)",
        "Replay a history file (as `driftline replay` does) or a range of a topic through the "
        "spec and write one self-contained HTML page (inline CSS and SVG charts: it opens "
        "offline): where each detector would have fired (episodes with partitions, offsets and "
        "event times), reference vs current distributions, each detector's statistic over "
        "time, and the model metrics and estimated performance the replay produced. --json "
        "writes the same as JSON (schemas/report.schema.json) for CI. A topic range is read "
        "once with the Kafka client settings of the other commands, read_committed, without a "
        "consumer group: from --from-offset or --from-time (default: the beginning) up to, not "
        "including, --to-offset or --to-time (default: the end when the report starts).",
        (
            "driftline report -c pipeline.toml --input events.jsonl.gz --output report.html "
            "--json report.json",
            "driftline report -c pipeline.toml --topic events --from-time 2026-11-01T00:00:00Z "
            "--to-time 2026-11-08T00:00:00Z --bootstrap 127.0.0.1:9092 --output week.html",
        ),
    ),
    "predict-batch": (
        "score every entity of a batch-features file (batch prediction)",
        "Batch prediction with batch features only: the spec's model.inputs must all be batch "
        "features. Scores equal the worker's for the same inputs.",
        (
            "driftline predict-batch -c pipeline.toml --input users.parquet --output "
            "predictions.jsonl",
        ),
    ),
    "train": (
        "fit the spec's river model on a labelled events file",
        "Compute each row's model inputs with the worker's own code (event fields, streaming "
        "features, batch features) and fit the spec's model; writes it with a version.",
        (
            "driftline train -c pipeline.toml --input labelled.jsonl --output model.pkl --label "
            "label",
        ),
    ),
    "profile": (
        "build a reference profile (for detectors' reference_profile) from a file",
        "Profile every input field, feature and the prediction score of a training file: moments, "
        "a quantile sketch and category frequencies, mergeable and compact.",
        ("driftline profile -c pipeline.toml --input train.parquet --output reference.json",),
    ),
    "batch-features": ("publish batch features", None, ()),
    "batch-features load": (
        "publish a table (CSV, Parquet, JSON Lines) to the batch-features topic",
        "One record per entity on the compacted batch-features topic, with an as-of time and a "
        "version; every worker caches all of them and follows updates.",
        (
            "driftline batch-features load -c pipeline.toml users.parquet --bootstrap "
            "127.0.0.1:9092",
        ),
    ),
    "batch-features delete": (
        "delete entities (tombstones)",
        None,
        ("driftline batch-features delete -c pipeline.toml u1 u2",),
    ),
    "alerts": ("read drift alerts", None, ()),
    "alerts tail": (
        "print alerts as they arrive, one line each",
        "Follow the alerts topic and print each alert in one readable line (or as JSON with "
        "--json). Stop with Ctrl-C.",
        (
            "driftline alerts tail --bootstrap 127.0.0.1:9092",
            "driftline alerts tail -c pipeline.toml --from-beginning --json --max 10",
        ),
    ),
    "status": (
        "summarise a running worker (from its /status.json)",
        "Print a running worker's pipeline, partitions, records consumed and dead-lettered, drift "
        "alerts firing and latency percentiles. The worker serves the same as a page on /status.",
        ("driftline status --url http://127.0.0.1:6066",),
    ),
}


def _add_worker(sub: Any) -> None:
    w = _command(sub, "worker", _cmd_worker)
    _config_arg(w)
    _bootstrap_arg(w)
    w.add_argument(
        "--web-host",
        default=None,
        help="the one address the web server (/metrics, /healthz, /status) listens on "
        "(default: the spec's worker.web_host, 127.0.0.1)",
    )
    w.add_argument(
        "--web-port",
        type=_port,
        default=None,
        help="its port (default: the spec's worker.web_port)",
    )
    w.add_argument(
        "--worker-id",
        default=None,
        help="stable id of this worker (default: the host name); it names the worker's Kafka "
        "transactional id, so give each worker on one host its own, and reuse it on restart",
    )
    w.add_argument(
        "--processes",
        type=_processes,
        default=1,
        metavar="N",
        help="run N worker processes on this machine (auto: one per core), each its own "
        "member of the consumer group with worker id <worker-id>-<i> and web port "
        "web-port+1+i; this process supervises them (restarts one that dies) and serves one "
        "/metrics for all, each sample labelled process=<i>, and /healthz on --web-port",
    )
    w.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    w.add_argument(
        "--log-format",
        default="plain",
        choices=["plain", "json"],
        help="plain lines, or one JSON object per line (ts, level, logger, message, and "
        "topic/partition/offset when a line is about a record); secrets are redacted",
    )
    w.add_argument(
        "--create-topics",
        action="store_true",
        help="first create the pipeline's missing topics, as `driftline topics create` does "
        "(the input topic with 3 partitions if it is missing: use that command to choose)",
    )
    w.add_argument(
        "--reset-state",
        type=_reset_state,
        default=frozenset(),
        metavar="PARTITIONS",
        help="ignore the saved state of these input partitions (all, or e.g. 0,2) once: their "
        "windows, detectors and alert episodes start empty at the group's committed offsets. "
        "Only on purpose: a worker refuses to start a partition whose state is missing or "
        "damaged, and says which",
    )


def _processes(text: str) -> int:
    from driftline.agents.process_group import parse_processes

    try:
        return parse_processes(text)
    except DriftlineError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--processes: ")) from None


def _reset_state(text: str) -> Any:
    from driftline.agents.state import parse_reset_state

    try:
        return parse_reset_state(text)
    except DriftlineError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--reset-state: ")) from None


def _add_topics(sub: Any) -> None:
    tp_sub = _group(sub, "topics")
    tc = _command(tp_sub, "topics create", _cmd_topics_create)
    _config_arg(tc)
    _bootstrap_arg(tc)
    tc.add_argument(
        "--partitions",
        type=int,
        default=None,
        metavar="N",
        help="input partitions: the pipeline's parallelism (default: the input topic's count "
        "if it exists, else 3)",
    )
    tc.add_argument(
        "--replication-factor",
        type=int,
        default=None,
        metavar="R",
        help="replicas of every topic, as if the spec's topics.replication_factor said so "
        "(default: the spec's; left out there: 3, or one per broker on a smaller cluster)",
    )


def _add_demo_commands(sub: Any) -> None:
    d = _command(sub, "demo", _cmd_demo)
    _bootstrap_arg(d, "use this Kafka cluster instead of starting one")
    d.add_argument("--events", type=int, default=200_000, help="events to produce (default 200000)")
    d.add_argument("--shift-at", type=int, default=120_000, help="event index of the shift")
    d.add_argument("--timeout", type=float, default=120.0, help="stop after this many seconds")
    d.add_argument(
        "--web-port", type=_port, default=None, help="worker metrics port (default: free)"
    )

    v = _command(sub, "validate", _cmd_validate)
    _config_arg(v)

    ps = _command(sub, "produce-synthetic", _cmd_produce)
    _bootstrap_arg(ps)
    ps.add_argument("--topic", required=True)
    ps.add_argument("--events", type=int, default=200_000)
    ps.add_argument("--shift-at", type=int, default=120_000)
    ps.add_argument(
        "--rate", type=float, default=None, help="events/s cap (default: as fast as possible)"
    )
    ps.add_argument("--seed", type=int, default=7)

    lb = _command(sub, "label-synthetic", _cmd_label)
    _config_arg(lb, "the pipeline spec (with [labels])")
    _bootstrap_arg(lb)
    lb.add_argument("--shift-at", type=int, default=120_000, help="event index of the change")
    lb.add_argument("--share", type=float, default=0.9, help="share of predictions labelled")
    lb.add_argument("--seed", type=int, default=7)
    lb.add_argument("--seconds", type=float, default=None, help="stop after this long")


def _add_replay(sub: Any) -> None:
    rp = _command(sub, "replay", _cmd_replay)
    _spec_and_files(rp, input="events file", output="feature vectors file")
    for name, what in [
        ("predictions", "predictions"),
        ("alerts", "drift alerts"),
        ("dlq", "dead letters (undecodable records)"),
        ("model-metrics", "model-metrics messages (estimated performance per chunk; with "
         "--labels the realized metrics too)"),
    ]:
        rp.add_argument(f"--{name}", help=f"also write {what} to this file")
    _labels_arg(rp)
    _business_arg(rp)
    _partition_args(rp)
    _options(rp, batch_features="batch features file to join (if the spec has any)")
    _no_progress_arg(rp)


def _labels_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--labels",
        metavar="FILE",
        help="labels to join as the worker would (JSON Lines, CSV, Parquet: the entity, "
        "input.event_id_field, the label and labels.time_field): realized model metrics, "
        "error/label detectors and slices",
    )


def _business_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--business",
        metavar="FILE",
        help="records of the [business] topic to feed beside the events (JSON Lines, CSV, "
        "Parquet: business.field, business.time_field and the entity in input.key_field, which "
        "routes a record to its partition like the events): the business metric and each "
        "alert's business line",
    )


def _partition_args(parser: argparse.ArgumentParser, of: str = "") -> None:
    """``--partitions`` and ``--partitioner``: how a replayed file's events are partitioned
    (``of``: a prefix for their help)."""
    parser.add_argument(
        "--partitions", type=int, default=1, help=f"{of}input topic partitions (default 1)"
    )
    parser.add_argument(
        "--partitioner",
        default="consistent",
        choices=["consistent", "murmur2"],
        help=f"{of}consistent: librdkafka/kcat default (CRC-32); murmur2: Java client default",
    )


def _add_report(sub: Any) -> None:
    rp = _command(sub, "report", _cmd_report)
    _config_arg(rp)
    src = rp.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="events file to replay (JSON Lines, .jsonl.gz, CSV, Parquet)")
    src.add_argument("--topic", help="topic whose range to replay (see --from-*/--to-*)")
    rp.add_argument("--output", required=True, help="HTML report to write")
    rp.add_argument("--json", help="also write the report as JSON (schemas/report.schema.json)")
    start = rp.add_mutually_exclusive_group()
    start.add_argument("--from-offset", type=int, help="first offset of every partition")
    start.add_argument(
        "--from-time", help="first record at or after this time (ISO 8601 or epoch ms)"
    )
    end = rp.add_mutually_exclusive_group()
    end.add_argument("--to-offset", type=int, help="stop before this offset in every partition")
    end.add_argument("--to-time", help="stop before the first record at or after this time")
    _partition_args(rp, "with --input, --labels or --business: ")
    _labels_arg(rp)
    _business_arg(rp)
    _options(rp, batch_features="batch features file to join (if the spec has any)")
    _bootstrap_arg(rp)
    _no_progress_arg(rp)


def _add_batch_commands(sub: Any) -> None:
    pb = _command(sub, "predict-batch", _cmd_predict_batch)
    _spec_and_files(pb, input="batch features file", output="predictions file")

    tr = _command(sub, "train", _cmd_train)
    _spec_and_files(tr, input="labelled events file", output="model file to write")
    _options(
        tr,
        label="label column (default: model.label_field)",
        batch_features="batch features file to join",
        version="model version (default: a hash of the model)",
    )
    _no_progress_arg(tr)

    pf = _command(sub, "profile", _cmd_profile)
    _spec_and_files(pf, input="training events file", output="profile file (JSON)")
    _no_progress_arg(pf)


def _add_batch_features(sub: Any) -> None:
    bf_sub = _group(sub, "batch-features", usage_to_stderr=False)
    bl = _command(bf_sub, "batch-features load", _cmd_bf_load)
    _config_arg(bl)
    bl.add_argument("file", help="table with the entity key and the batch feature columns")
    _bootstrap_arg(bl)
    _options(bl, version="version string stored with each row (default: load-<ms>)")
    bl.add_argument("--partitions", type=int, default=3, help="partitions if the topic is created")
    _no_progress_arg(bl)

    bd = _command(bf_sub, "batch-features delete", _cmd_bf_delete)
    _config_arg(bd)
    bd.add_argument("entities", nargs="+", help="entity keys to delete")
    _bootstrap_arg(bd)


def _add_monitoring(sub: Any) -> None:
    al_sub = _group(sub, "alerts", usage_to_stderr=False)
    at = _command(al_sub, "alerts tail", _cmd_alerts_tail)
    _bootstrap_arg(at)
    _config_arg(at, "take the alerts topic from this spec", required=False)
    _options(at, topic="alerts topic (default driftline.alerts)")
    at.add_argument("--from-beginning", action="store_true", help="print past alerts too")
    at.add_argument("--json", action="store_true", help="print each alert as one JSON line")
    at.add_argument("--max", type=int, default=None, help="exit after this many alerts")
    at.add_argument("--timeout", type=float, default=None, help="exit after this many idle seconds")

    st = _command(sub, "status", _cmd_status)
    st.add_argument(
        "--url",
        default="http://127.0.0.1:6066",
        help="the worker's web address (default %(default)s)",
    )
    st.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the worker")
    st.add_argument("--json", action="store_true", help="print /status.json as it is")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftline",
        description="Streaming features, online predictions and drift detection on Apache Kafka.",
        epilog="examples:\n  driftline demo\n"
        "  driftline topics create -c pipeline.toml --bootstrap 127.0.0.1:9092 --partitions 4\n"
        "  driftline worker -c pipeline.toml --bootstrap 127.0.0.1:9092\n\n" + EXIT_STATUS_HELP,
        formatter_class=_RAW,
    )
    parser.add_argument(
        "-V", "--version", action="version", version=f"driftline {version()}",
        help="print driftline's version and exit",
    )  # fmt: skip
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_worker(sub)
    _add_topics(sub)
    _add_demo_commands(sub)
    _add_replay(sub)
    _add_report(sub)
    _add_batch_features(sub)
    _add_batch_commands(sub)
    _add_monitoring(sub)
    add_kafka_parser(sub)
    for p in _parsers(parser):  # errors found after parsing print this command's usage
        p.set_defaults(_parser=p)
    return parser


def _error(e: BaseException, status: int) -> int:
    logging.getLogger("driftline").debug("failed", exc_info=True)
    if os.environ.get("DRIFTLINE_TRACEBACK"):
        traceback.print_exception(e)
    from driftline.agents.logs import redact

    print(f"driftline: error: {redact(str(e))}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status (argparse exits 2 itself on usage errors)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # argparse would blame the top-level command: name the one that was run
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if not hasattr(args, "func"):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except (UsageError, SpecError, KafkaConfigError) as e:  # the command line or the config
        return _error(e, EXIT_USAGE)
    except (DriftlineError, OSError) as e:  # failed while running
        return _error(e, EXIT_FAILED)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
