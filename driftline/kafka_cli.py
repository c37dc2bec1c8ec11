"""``driftline kafka ...``: start, inspect and stop the local Apache Kafka broker."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from driftline.errors import KafkaLauncherError
from driftline.localcluster import LocalCluster, is_cluster_dir
from driftline.localkafka import (
    KAFKA_VERSION,
    LocalKafka,
    cache_dir,
    default_data_dir,
    fetch_jars,
    fetch_tool_jars,
)
from driftline.localkafka_security import ADMIN_USER, CLIENT_USER, MODES, NOACL_USER

__all__ = ["add_kafka_parser"]

_RAW = argparse.RawDescriptionHelpFormatter


def _fail(command: str, exc: KafkaLauncherError) -> int:
    print(f"driftline kafka {command}: error: {exc}", file=sys.stderr)
    return 1


def _launcher(args: argparse.Namespace, brokers: int | None = None) -> LocalKafka | LocalCluster:
    """The data dir's cluster if it holds one (or ``brokers`` > 1 asks for one), else its
    single broker."""
    if is_cluster_dir(args.data_dir) or (brokers or 1) > 1:
        return LocalCluster(
            brokers or 1,
            port=args.port or 9092,
            data_dir=args.data_dir,
            auto_create_topics=getattr(args, "auto_create_topics", False),
            security=getattr(args, "security", None),
        )
    return LocalKafka(
        port=args.port or 9092,
        data_dir=args.data_dir,
        auto_create_topics=getattr(args, "auto_create_topics", False),
        security=getattr(args, "security", None),
    )


def _cmd_start(args: argparse.Namespace) -> int:
    if args.brokers is not None and args.brokers < 1:
        print(f"driftline kafka start: error: --brokers must be at least 1, not {args.brokers}",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        kafka = _launcher(args, args.brokers)
    except KafkaLauncherError as exc:
        return _fail("start", exc)
    if isinstance(kafka, LocalCluster) and args.brokers not in (None, kafka.brokers):
        print(
            f"driftline kafka start: error: {kafka.data_dir} holds a {kafka.brokers}-broker "
            f"cluster, not {args.brokers}; pick another --data-dir (or delete it)",
            file=sys.stderr,
        )
        return 2
    started = time.monotonic()
    try:
        bootstrap = kafka.start(timeout_s=args.timeout)
    except KafkaLauncherError as exc:
        return _fail("start", exc)
    what = f"a {kafka.brokers}-broker cluster" if isinstance(kafka, LocalCluster) else "Kafka"
    if kafka.already_running:
        print(f"{what} is already running from {kafka.data_dir} at {bootstrap}")
    else:
        took = time.monotonic() - started
        print(f"Kafka {KAFKA_VERSION} ({what}) is up at {bootstrap} (started in {took:.1f} s)")
    print(f"  data dir:  {kafka.data_dir}")
    if isinstance(kafka, LocalCluster):
        print(f"  logs:      {kafka.data_dir}/node-*/broker.log")
    else:
        print(f"  log:       {kafka.log_file}")
    _print_security(kafka)
    print(f"  stop with: driftline kafka stop --data-dir {kafka.data_dir}")
    if not kafka.auto_create_topics and not kafka.already_running:
        print("  topics:    not auto-created: driftline topics create -c SPEC makes a pipeline's")
    return 0


def _print_security(kafka: LocalKafka | LocalCluster) -> None:
    """Where the client settings are (paths only: the files hold the passwords)."""
    print(f"  security:  {kafka.security.describe()}")
    files = kafka.client_files
    if not files:
        return
    mine = files[CLIENT_USER]
    print(f"  client:    {mine.librdkafka}  (librdkafka: driftline --kafka-config, kcat -F)")
    print(f"             {mine.java}  (Java: kafka-*.sh --command-config)")
    print(
        f"  users:     {CLIENT_USER} (ACLs on every topic, group, transactional id), "
        f"{NOACL_USER} (no ACL), {ADMIN_USER} (super user): "
        f"{mine.librdkafka.parent}/<user>.{{librdkafka,java}}.properties"
    )
    print(f"  CA:        {kafka.security.ca_file}")


def _other_port(command: str, args: argparse.Namespace, info: dict[str, Any]) -> int | None:
    """With ``--port P``: exit status 1 if the data dir's broker listens elsewhere."""
    if args.port is None or not info["running"] or info["bootstrap"].endswith(f":{args.port}"):
        return None
    print(
        f"driftline kafka {command}: error: the broker of {info['data_dir']} listens on "
        f"{info['bootstrap']}, not on port {args.port}; pass its --data-dir (brokers are found "
        "by data dir; the port only checks it)",
        file=sys.stderr,
    )
    return 1


def _cmd_status(args: argparse.Namespace) -> int:
    kafka = _launcher(args)
    if isinstance(kafka, LocalCluster):
        return _cluster_status(kafka)
    info = kafka.status()
    if not info["running"]:
        print(f"Kafka is not running (data dir {info['data_dir']})")
        return 1
    if (refused := _other_port("status", args, info)) is not None:
        return refused
    topics = "no answer" if info["topics"] is None else str(info["topics"])
    print(f"Kafka is running at {info['bootstrap']}")
    print(f"  pid:       {info['pid']}")
    print(f"  topics:    {topics} (excluding internal __* topics)")
    print(f"  data dir:  {info['data_dir']}")
    print(f"  security:  {info['security']}")
    return 0


def _cluster_status(cluster: LocalCluster) -> int:
    info = cluster.status()
    if not info["running"]:
        print(f"the {info['brokers']}-broker cluster is not running (data dir {info['data_dir']})")
        return 1
    topics = "no answer" if info["topics"] is None else str(info["topics"])
    print(f"{info['up']} of {info['brokers']} brokers running; bootstrap {info['bootstrap']}")
    for node, pid in zip(cluster.nodes, info["pids"], strict=True):
        role = "broker+controller" if node.controller else "broker"
        state = f"pid {pid}" if pid is not None else "DOWN"
        print(f"  broker {node.index}:  {node.bootstrap} ({role}, {state})")
    print(f"  topics:    {topics} (excluding internal __* topics)")
    print(f"  data dir:  {info['data_dir']}")
    print(f"  security:  {info['security']}")
    return 0 if info["up"] == info["brokers"] else 1


def _cmd_stop(args: argparse.Namespace) -> int:
    kafka = _launcher(args)
    if isinstance(kafka, LocalCluster):
        try:
            kafka.stop(timeout_s=args.timeout)
        except KafkaLauncherError as exc:
            return _fail("stop", exc)
        print(f"the {kafka.brokers}-broker cluster of {kafka.data_dir} is stopped")
        return 0
    info = kafka.status(timeout_s=1.0)
    if (refused := _other_port("stop", args, info)) is not None:
        return refused
    try:
        kafka.stop(timeout_s=args.timeout)
    except KafkaLauncherError as exc:
        return _fail("stop", exc)
    if info["running"]:
        print(f"Kafka at {info['bootstrap']} (pid {info['pid']}) stopped")
    else:
        print(f"Kafka was not running (data dir {kafka.data_dir})")
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    try:
        libs = fetch_jars(quiet=not args.verbose)
        tools = fetch_tool_jars(quiet=not args.verbose)
    except KafkaLauncherError as exc:
        return _fail("fetch", exc)
    print(f"Kafka {KAFKA_VERSION} jars are in {libs}")
    print(f"  its command-line tools (console consumer, kafka-acls...) in {tools}")
    return 0


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"broker state directory (default: {default_data_dir()})",
    )


def _add_port(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="the client port the broker was started with; refuse if the data dir's broker "
        "listens on another one (the broker is found by its data dir)",
    )


def _sub(
    subparsers: Any, name: str, help_: str, epilog: str, func: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help_, description=help_, epilog=epilog, formatter_class=_RAW
    )
    parser.set_defaults(func=func)
    return parser


def add_kafka_parser(subparsers: Any) -> None:
    """Add ``kafka {start,status,stop,fetch}`` to an argparse ``add_subparsers()`` object."""
    kafka = subparsers.add_parser(
        "kafka",
        help=f"run a local Apache Kafka {KAFKA_VERSION} broker (KRaft, no Docker)",
        description=(
            f"Run a real single-node Apache Kafka {KAFKA_VERSION} broker (KRaft) as a local JVM.\n"
            "Needs Java 17+ and, for the first download of the jars, Maven\n"
            "(Debian/Ubuntu: apt-get install -y openjdk-17-jre-headless maven)."
        ),
        epilog=(
            "examples:\n"
            "  driftline kafka start            # broker on 127.0.0.1:9092\n"
            "  driftline kafka start --brokers 3 --data-dir /tmp/kafka3   # 9092-9094\n"
            "  driftline kafka status\n"
            "  driftline kafka stop"
        ),
        formatter_class=_RAW,
    )

    def _usage(_args: argparse.Namespace) -> int:
        kafka.print_help(sys.stderr)
        return 2

    kafka.set_defaults(func=_usage)
    sub = kafka.add_subparsers(title="commands", metavar="{start,status,stop,fetch}")

    start = _sub(
        sub,
        "start",
        "start the broker in the background and wait until it answers",
        "example:\n  driftline kafka start --port 19092 --data-dir /tmp/kafka-dev\n\n"
        "Idempotent: if the data dir already has a running broker, its address is printed.\n"
        "Data survives restarts; delete the data dir for a fresh cluster. Topics are not\n"
        "auto-created (unless --auto-create-topics): driftline topics create -c SPEC makes them.\n"
        "\nsecured (as a team's cluster):\n"
        "  driftline kafka start --security sasl_ssl_scram --data-dir /tmp/kafka-scram\n"
        "  kcat -F /tmp/kafka-scram/clients/driftline.librdkafka.properties -L",
        _cmd_start,
    )
    start.add_argument(
        "--port",
        type=int,
        default=9092,
        help="client port (default: 9092); broker i of an N-broker cluster listens on "
        "port + i, its controller on port + N + i",
    )
    start.add_argument(
        "--brokers",
        type=int,
        default=None,
        metavar="N",
        help="run a local N-broker KRaft cluster (default: 1; the first 3 brokers are also the "
        "controller quorum, so 3 brokers survive the loss of one)",
    )
    _add_data_dir(start)
    start.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds to wait for the broker to answer (default: 60)",
    )
    start.add_argument(
        "--auto-create-topics",
        action="store_true",
        help="let the broker create any topic a client names (one partition, default configs); "
        "off by default: create a pipeline's topics with `driftline topics create`",
    )
    start.add_argument(
        "--security",
        choices=MODES,
        default=None,
        help="secure the client listener: TLS with SCRAM-SHA-512 or PLAIN users, or TLS with "
        "client certificates (mTLS); throwaway CA, users and an ACL authorizer; client "
        "property files are written to DATA_DIR/clients (default: the data dir's mode, "
        "else plaintext; fixed when the data dir is first formatted)",
    )

    status = _sub(
        sub,
        "status",
        "say whether the broker runs; exit 0 if it does, 1 if not",
        "example:\n  driftline kafka status --data-dir /tmp/kafka-dev && echo up",
        _cmd_status,
    )
    _add_data_dir(status)
    _add_port(status)

    stop = _sub(
        sub,
        "stop",
        "stop the broker (SIGTERM, then SIGKILL after the timeout)",
        "example:\n  driftline kafka stop --data-dir /tmp/kafka-dev --port 19092",
        _cmd_stop,
    )
    _add_data_dir(stop)
    _add_port(stop)
    stop.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds to wait after SIGTERM before SIGKILL (default: 30)",
    )

    fetch = _sub(
        sub,
        "fetch",
        "download the Kafka jars from Maven Central only (done by start when needed)",
        f"example:\n  driftline kafka fetch --verbose\n\njars are cached in {cache_dir()}/libs",
        _cmd_fetch,
    )
    fetch.add_argument("--verbose", action="store_true", help="show Maven's output")
