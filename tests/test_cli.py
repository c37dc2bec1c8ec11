"""The command line's contract: --version, exit statuses (2 usage or configuration, 1 failed
while running), errors as one line without a traceback, a sub-command's own usage on errors."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import driftline
from driftline.cli import EXIT_FAILED, EXIT_USAGE, build_parser, main
from driftline.localkafka import free_port
from tests.specs import minimal_spec

ROOT = Path(__file__).resolve().parents[1]

SPEC = minimal_spec("cli-test")


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driftline.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text(SPEC)
    return path


def test_version_is_the_package_version() -> None:
    r = cli("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"driftline {driftline.__version__}\n"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert driftline.__version__ == pyproject["project"]["version"]
    assert driftline.__version__ == importlib.metadata.version("driftline")
    assert cli("-V").stdout == r.stdout


def test_the_help_documents_the_exit_statuses() -> None:
    r = cli("--help")
    assert r.returncode == 0
    assert "exit status: 0 done, 1 failed while running" in " ".join(r.stdout.split())
    assert "topics" in r.stdout and "--version" in r.stdout


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["worker", "-c", "x.toml", "--bogus"], "usage: driftline worker "),
        (["kafka", "stop", "--bogus"], "usage: driftline kafka stop "),
        (["kafka", "status", "--partitions", "3"], "usage: driftline kafka status "),
        (["topics", "create", "-c", "x.toml", "--topic", "t"], "usage: driftline topics create "),
        (["alerts", "tail", "--follow"], "usage: driftline alerts tail "),
    ],
)
def test_unknown_options_print_the_sub_commands_usage(
    argv: list[str], usage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(usage), err
    assert "unrecognized arguments" in err
    assert "usage: driftline [-h]" not in err  # not the top-level usage


def test_a_missing_sub_command_prints_that_groups_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topics"]) == EXIT_USAGE
    assert "usage: driftline topics" in capsys.readouterr().err
    assert main(["kafka"]) == EXIT_USAGE
    assert "usage: driftline kafka" in capsys.readouterr().err


def test_kafka_stop_and_status_accept_port_like_start(tmp_path: Path) -> None:
    """Stopping a broker started with --port by the same --port is not a usage error."""
    data_dir = str(tmp_path / "no-broker")
    stop = cli("kafka", "stop", "--port", "19092", "--data-dir", data_dir)
    assert stop.returncode == 0, stop.stderr
    assert "Kafka was not running" in stop.stdout
    status = cli("kafka", "status", "--port", "19092", "--data-dir", data_dir)
    assert status.returncode == 1
    assert "Kafka is not running" in status.stdout
    for command in ("start", "status", "stop"):
        assert "--port" in cli("kafka", command, "--help").stdout


def test_configuration_errors_exit_2_in_one_line(spec: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(SPEC.replace('agg = "sum"', 'agg = "summ"'))
    cases = [
        (["validate", "-c", str(bad)], "spec key features[0]"),
        (["validate", "-c", str(tmp_path / "missing.toml")], "cannot read spec file"),
        (["validate", "-c", str(ROOT / "README.md")], "is not valid TOML"),
        (["topics", "create", "-c", str(spec)], "pass --bootstrap HOST:PORT"),
        (["batch-features", "load", "-c", str(spec), "x.csv", "--bootstrap", "127.0.0.1:1"],
         "has no [batch_features] section"),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    for argv, message in cases:
        r = cli(*argv, env=env)
        assert r.returncode == EXIT_USAGE, (argv, r.stderr)
        assert r.stderr.startswith("driftline: error: ") and message in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr


def test_runtime_errors_exit_1_in_one_line(spec: Path, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"user_id": "u", "ts": 1, "amount": 2.0}\n')
    out = str(tmp_path / "features.jsonl")
    cases = [
        (["replay", "-c", str(spec), "--input", str(tmp_path / "gone.jsonl"), "--output", out,
          "--no-progress"], "No such file or directory"),
        (["replay", "-c", str(spec), "--input", str(events), "--output", str(tmp_path / "f.xls"),
          "--no-progress"], "cannot tell the format"),
        (["status", "--url", f"http://127.0.0.1:{free_port()}", "--timeout", "2"],
         "cannot read the worker status"),
    ]  # fmt: skip
    for argv, message in cases:
        r = cli(*argv)
        assert r.returncode == EXIT_FAILED, (argv, r.stderr)
        assert r.stderr.startswith("driftline: error: ") and message in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    # a model file that is no model: the spec's model.path is wrong (a configuration error),
    # said in one line too
    garbage = tmp_path / "model.pkl"
    garbage.write_bytes(b"garbage\n")
    with_model = tmp_path / "with-model.toml"
    with_model.write_text(SPEC + f'\n[model]\npath = "{garbage}"\ninputs = ["amount"]\n')
    r = cli("replay", "-c", str(with_model), "--input", str(events), "--output", out,
            "--no-progress")  # fmt: skip
    assert r.returncode == EXIT_USAGE, r.stderr
    assert r.stderr.startswith(
        f"driftline: error: spec key model.path: cannot load model {garbage} (ValueError: "
    ), r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    ok = cli("replay", "-c", str(spec), "--input", str(events), "--output", out, "--no-progress")
    assert ok.returncode == 0 and "replayed 1 events" in ok.stdout, ok.stderr


def test_driftline_traceback_shows_the_traceback(spec: Path, tmp_path: Path) -> None:
    argv = ["replay", "-c", str(spec), "--input", str(tmp_path / "gone.jsonl"), "--output",
            str(tmp_path / "f.jsonl"), "--no-progress"]  # fmt: skip
    r = cli(*argv, env={**os.environ, "DRIFTLINE_TRACEBACK": "1"})
    assert r.returncode == EXIT_FAILED
    assert "Traceback (most recent call last)" in r.stderr
    assert r.stderr.rstrip().splitlines()[-1].startswith("driftline: error: ")


def test_new_options_have_help_with_an_example() -> None:
    for argv in (["topics", "create"], ["worker"], ["kafka", "stop"]):
        r = cli(*argv, "--help")
        assert r.returncode == 0 and "example" in r.stdout, argv
    assert "--create-topics" in cli("worker", "--help").stdout
    usage = build_parser().format_usage()
    assert usage.startswith("usage: driftline [-h] [-V]"), usage
