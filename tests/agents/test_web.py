"""The worker's web settings and the check that it can listen where configured, before it
starts: a port in use or an address of another machine is one line naming the setting."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftline.agents.web import FAUST_VIEWS_OFF, check_listen, web_settings
from driftline.cli import EXIT_USAGE
from driftline.errors import SpecError
from driftline.localkafka import free_port
from tests.specs import minimal_spec


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_settings_bind_the_host_and_turn_faust_views_off() -> None:
    s = web_settings("10.1.2.3", 7000)
    assert (s["web_bind"], s["web_host"], s["web_port"]) == ("10.1.2.3", "10.1.2.3", 7000)
    assert s["web_enabled"] is True and s["web_in_thread"] is False
    assert {k: s[k] for k in FAUST_VIEWS_OFF} == dict.fromkeys(FAUST_VIEWS_OFF, False)
    assert set(FAUST_VIEWS_OFF) == {
        "web_router_enabled", "web_tables_enabled", "web_graph_enabled", "web_stats_enabled",
        "web_metrics_enabled",
    }  # fmt: skip


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "0.0.0.0"])
def test_a_free_port_on_a_local_address_passes(host: str) -> None:
    check_listen(host, free_port())


def test_a_port_in_use_is_one_clear_error(busy_port: int) -> None:
    with pytest.raises(SpecError) as e:
        check_listen("127.0.0.1", busy_port)
    assert str(e.value) == (
        f"worker.web_port {busy_port}: in use on 127.0.0.1 (another worker on this host?); give "
        "each worker its own port (worker.web_port or --web-port)"
    )


@pytest.mark.parametrize("host", ["192.0.2.1", "203.0.113.7"])  # TEST-NET: never this host's
def test_an_address_of_another_machine_is_one_clear_error(host: str) -> None:
    with pytest.raises(SpecError) as e:
        check_listen(host, free_port())
    assert str(e.value) == (
        f"worker.web_host {host!r}: cannot listen there (Cannot assign requested address); give "
        "an address of this host (127.0.0.1: this host only)"
    )


def _worker(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    spec = tmp_path / "p.toml"
    spec.write_text(minimal_spec("web-check"))
    argv = [sys.executable, "-m", "driftline.cli", "worker", "-c", str(spec), "--bootstrap",
            f"127.0.0.1:{free_port()}", *options]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--web-host", "192.0.2.1"), "worker.web_host '192.0.2.1': cannot listen there"),
        (("--web-host", "not a host"), "--web-host: 'not a host' is not an IP address"),
        (("--web-port", "0"), "argument --web-port: '0' is not a TCP port (1-65535)"),
        (("--web-port", "70000"), "argument --web-port: '70000' is not a TCP port (1-65535)"),
    ],
)
def test_the_worker_refuses_before_it_starts(
    tmp_path: Path, options: tuple[str, ...], message: str
) -> None:
    """No broker answers on --bootstrap: the check comes first, in one line, exit 2."""
    r = _worker(tmp_path, *options)
    assert r.returncode == EXIT_USAGE, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_the_worker_refuses_a_port_in_use(tmp_path: Path, busy_port: int) -> None:
    r = _worker(tmp_path, "--web-port", str(busy_port))
    assert r.returncode == EXIT_USAGE, r.stderr
    assert r.stderr == (
        f"driftline: error: worker.web_port {busy_port}: in use on 127.0.0.1 (another worker "
        "on this host?); give each worker its own port (worker.web_port or --web-port)\n"
    )
