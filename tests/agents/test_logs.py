"""Worker log formats (plain, json) and secret redaction, through a real dictConfig on stderr."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from driftline.agents.logs import logging_config, redact

SCRIPT = """
import logging, logging.config, sys
from driftline.agents.logs import logging_config
logging.config.dictConfig(logging_config(sys.argv[1], "info"))
log = logging.getLogger("driftline.pipeline")
log.debug("not shown")
log.info("connecting with %s", "sasl.password=hunter2 sasl.username=bob")
log.warning("dead-lettered %s/%d@%d: %s: %s", "ev.in", 1, 42, "invalid_json", "bad")
logging.getLogger("driftline.runner").warning(
    "drift %s: detector=%s partition=%d offset=%d", "firing", "x_ks", 0, 7)
try:
    raise ValueError("password=hunter2")
except ValueError:
    log.exception("failed for kafka://bob:hunter2@broker:9092")
"""


def _run(fmt: str) -> str:
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT, fmt], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""  # logs go to stderr
    assert "hunter2" not in r.stderr, r.stderr
    return r.stderr


def test_json_format_one_object_per_line_with_record_position() -> None:
    docs = [orjson.loads(line) for line in _run("json").splitlines()]
    assert [d["level"] for d in docs] == ["INFO", "WARNING", "WARNING", "ERROR"]
    for d in docs:
        assert d["ts"].endswith("Z") and d["logger"].startswith("driftline.")
    assert docs[0]["message"] == "connecting with sasl.password=*** sasl.username=bob"
    assert {k: docs[1][k] for k in ("topic", "partition", "offset")} == {
        "topic": "ev.in",
        "partition": 1,
        "offset": 42,
    }
    assert (docs[2]["partition"], docs[2]["offset"]) == (0, 7) and "topic" not in docs[2]
    assert "topic" not in docs[0]
    assert docs[3]["message"] == "failed for kafka://bob:***@broker:9092"
    assert "ValueError: password=***" in docs[3]["exc"]


def test_plain_format_is_fausts_line_format() -> None:
    lines = [x.rstrip() for x in _run("plain").splitlines()]
    assert lines[0].endswith("[INFO] connecting with sasl.password=*** sasl.username=bob")
    assert "[WARNING] dead-lettered ev.in/1@42: invalid_json: bad" in lines[1]
    assert lines[0].startswith("[20")  # [date time] [pid] [LEVEL] message
    assert "ValueError: password=***" in "\n".join(lines)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("sasl.password=s3cr3t,x=1", "sasl.password=***,x=1"),
        ("{'sasl.password': 's3cr3t'}", "{'sasl.password': '***'}"),
        ('"ssl.key.password":"s3cr3t"', '"ssl.key.password":"***"'),
        ("PASSWORD: s3cr3t and more", "PASSWORD: *** and more"),
        (
            'sasl.jaas.config=org.Plain required username="u" password="s3cr3t";',
            'sasl.jaas.config=*** required username="u" password="***";',
        ),
        ("SASL_SSL://user:s3cr3t@broker:9093", "SASL_SSL://user:***@broker:9093"),
        ("offset=42 partition=1 topic=events", "offset=42 partition=1 topic=events"),
    ],
)
def test_redact(raw: str, clean: str) -> None:
    assert redact(raw) == clean
    assert "s3cr3t" not in redact(raw)


def test_unknown_format_is_an_error() -> None:
    with pytest.raises(ValueError, match="plain, json"):
        logging_config("xml")
