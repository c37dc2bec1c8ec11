"""``driftline`` command line (minimal entry point; subcommands register themselves here)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from driftline.kafka_cli import add_kafka_parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftline",
        description="Streaming features, online predictions and drift detection on Apache Kafka.",
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    add_kafka_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
