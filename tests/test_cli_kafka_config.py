"""Every command that talks to Kafka takes --kafka-config; the spec's [kafka] section; their
refusals are one configuration-error line (exit status 2) before any connection."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from driftline.cli import EXIT_USAGE, _parsers, build_parser, main
from driftline.errors import SpecError
from driftline.spec import load_spec
from tests.specs import minimal_spec

PASSWORD = "n0t-in-the-spec"

#: The commands that make Kafka clients (every one takes --bootstrap and --kafka-config).
KAFKA_COMMANDS = [
    "worker", "topics create", "demo", "produce-synthetic", "label-synthetic",
    "batch-features load", "batch-features delete", "alerts tail", "report",
]  # fmt: skip


def _options(words: str) -> set[str]:
    parser = build_parser()
    for p in _parsers(parser):
        if p.prog == f"driftline {words}":
            return {s for a in p._actions for s in a.option_strings}
    raise AssertionError(f"no command {words!r}")


@pytest.mark.parametrize("words", KAFKA_COMMANDS)
def test_every_kafka_command_takes_the_settings(words: str) -> None:
    assert {"--bootstrap", "--kafka-config"} <= _options(words)


def test_only_kafka_commands_take_them() -> None:
    takers = {
        p.prog.removeprefix("driftline ")
        for p in _parsers(build_parser())
        if any("--kafka-config" in a.option_strings for a in p._actions)
        and not isinstance(p, argparse._SubParsersAction)
    }
    assert takers == set(KAFKA_COMMANDS)


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    p = tmp_path / "pipeline.toml"
    p.write_text(minimal_spec("kc", extra='[batch_features]\ntopic = "bf"\n'
                              "[batch_features.fields]\nscore = \"float\"\n"))  # fmt: skip
    return p


@pytest.mark.parametrize(
    ("argv", "file_text", "message"),
    [
        (["topics", "create", "-c", "{spec}"], "bootstrap.servers=127.0.0.1:1\nsasl.pasword=x\n",
         "--kafka-config {file} line 2: sasl.pasword is not a librdkafka property"),
        (["worker", "-c", "{spec}"], "bootstrap.servers=127.0.0.1:1\ngroup.id=g\n",
         "--kafka-config {file} line 2: driftline sets group.id itself"),
        (["produce-synthetic", "--topic", "t"], "bootstrap.servers 127.0.0.1:1\n"
         "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\nsasl.username=bob\n",
         "sasl.username and sasl.password must be set"),
        (["alerts", "tail", "--bootstrap", "127.0.0.1:1"], "ssl.truststore.location=/t.jks\n",
         "ssl.truststore.location is a Java client property"),
        (["batch-features", "delete", "-c", "{spec}", "u1"], "# only a comment\n",
         "pass --bootstrap HOST:PORT or set KAFKA_BOOTSTRAP_SERVERS"),
        (["label-synthetic", "-c", "{spec}", "--kafka-config", "{spec}.missing"], None,
         "cannot read --kafka-config file"),
    ],
)  # fmt: skip
def test_bad_settings_exit_2_in_one_line(
    argv: list[str],
    file_text: str | None,
    message: str,
    spec: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    f = tmp_path / "client.properties"
    args = [a.format(spec=spec) for a in argv]
    if file_text is not None:
        f.write_text(file_text)
        args += ["--kafka-config", str(f)]
    assert main(args) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("driftline: error: ") and message.format(file=f) in err, err
    assert len(err.splitlines()) == 1


def test_spec_kafka_section(tmp_path: Path) -> None:
    p = tmp_path / "s.toml"
    p.write_text(minimal_spec("k", extra='[kafka]\nsecurity.protocol = "SASL_SSL"\n'
                              'sasl.mechanism = "SCRAM-SHA-512"\n"socket.timeout.ms" = 5000\n'
                              "ssl.endpoint.identification.algorithm = \"none\"\n"))  # fmt: skip
    assert dict(load_spec(p).kafka) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "socket.timeout.ms": "5000",
        "ssl.endpoint.identification.algorithm": "none",
    }
    p.write_text(minimal_spec("k"))
    assert dict(load_spec(p).kafka) == {}


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (f'sasl.password = "{PASSWORD}"',
         "spec key kafka.sasl.password holds a secret, and a spec is shared and checked in: "
         "remove it and set DRIFTLINE_KAFKA_SASL_PASSWORD (or put it in the --kafka-config "
         "file)"),
        ('isolation.level = "read_uncommitted"',
         "spec key kafka.isolation.level: driftline sets isolation.level itself"),
        ("socket.timeout.ms = [1, 2]", "spec key kafka.socket.timeout.ms: [1, 2] is not valid"),
    ],
)  # fmt: skip
def test_spec_kafka_refusals(tmp_path: Path, section: str, message: str) -> None:
    p = tmp_path / "s.toml"
    p.write_text(minimal_spec("k", extra=f"[kafka]\n{section}\n"))
    with pytest.raises(SpecError) as e:
        load_spec(p)
    assert str(e.value).startswith(message), str(e.value)
    assert PASSWORD not in str(e.value)


def test_worker_refuses_a_secret_in_the_spec_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "s.toml"
    p.write_text(minimal_spec("k", extra=f'[kafka]\nssl.key.password = "{PASSWORD}"\n'))
    assert main(["worker", "-c", str(p), "--bootstrap", "127.0.0.1:1"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "spec key kafka.ssl.key.password holds a secret" in err
    assert PASSWORD not in err
