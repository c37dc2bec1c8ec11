"""The worker's web surface on a real worker: it listens on ``worker.web_host`` alone, serves
driftline's pages only (faust's ``/router/``, ``/table/``, ``/`` ... answer 404), and
``/status.json`` carries no input values unless ``worker.status_values`` is set."""

from __future__ import annotations

import errno
import socket
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from driftline.agents.demo import named_ks_adwin_spec, stop_process
from driftline.agents.synthetic import SyntheticStream
from driftline.localkafka import free_port
from driftline.spec import load_spec
from tests.kafka_helpers import kcat_produce, start_worker, wait_for_metric, write_pipeline
from tests.specs import minimal_spec

pytestmark = pytest.mark.integration

#: A loopback address other than the default 127.0.0.1: listening there, and not on 127.0.0.1,
#: shows the server binds what the spec says (faust's default binds every interface).
HOST = "127.0.0.2"
N = 10_000  # per partition, the KS detector (windows of 2000) has a reference and a window
STREAM = SyntheticStream(n=N, shift_at=N, seed=3, n_entities=50)

DRIFTLINE_PAGES = ["/metrics", "/status", "/status.json"]
FAUST_PAGES = [
    "/", "/router/", "/router/topics", "/router/some-table/some-key/", "/table/",
    "/table/some-table/", "/graph/", "/assignment/", "/performance/", "/stats/",
]  # fmt: skip


@dataclass
class Worker:
    url: str
    port: int
    proc: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def worker(
    kafka_bootstrap: str, kcat: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    tmp = tmp_path_factory.mktemp("web")
    data = named_ks_adwin_spec(f"web-{uuid.uuid4().hex[:10]}")
    port = free_port()
    data["worker"].update(web_host=HOST, web_port=port)
    spec_path, spec = write_pipeline(tmp, data, kafka_bootstrap, model_rows=3000)
    events = list(STREAM.events())
    lines = [e["user_id"].encode() + b"|" + orjson.dumps(e) for e in events]
    kcat_produce(kcat, kafka_bootstrap, spec.input.topic, lines)
    log = tmp / "worker.log"
    proc = start_worker(spec_path, kafka_bootstrap, log)
    w = Worker(f"http://{HOST}:{port}", port, proc)
    try:
        wait_for_metric(w.url + "/metrics", "driftline_records_consumed_total", N, proc, log)
        yield w
    finally:
        stop_process(proc, timeout_s=30)


def _listening(port: int) -> set[str]:
    """The local addresses with a TCP socket listening on ``port`` (IPv4 and IPv6)."""
    out = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(addr)
                # /proc prints each 32-bit word in host (little-endian) order
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, width // 2, 4))
                family = socket.AF_INET if width == 8 else socket.AF_INET6
                out.add(socket.inet_ntop(family, words))
    return out


def _connects(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except OSError as e:
        assert e.errno in (errno.ECONNREFUSED, errno.EADDRNOTAVAIL, errno.ENETUNREACH), e
        return False


def _other_local_addresses() -> set[str]:
    """This host's IPv4 addresses besides HOST (another loopback one, and any interface's)."""
    addrs = {"127.0.0.1", "127.0.0.3"}
    try:
        addrs |= {i[4][0] for i in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    except OSError:
        pass
    return addrs - {HOST}


def test_it_listens_on_the_configured_address_only(worker: Worker) -> None:
    assert _listening(worker.port) == {HOST}
    assert _connects(HOST, worker.port)
    for addr in sorted(_other_local_addresses()):
        assert not _connects(addr, worker.port), addr


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.mark.parametrize("path", DRIFTLINE_PAGES)
def test_driftline_pages_are_served(worker: Worker, path: str) -> None:
    assert _get(worker.url + path)[0] == 200
    assert _get(worker.url + "/healthz")[0] in (200, 503)  # served; its status is its answer


@pytest.mark.parametrize("path", FAUST_PAGES)
def test_faust_pages_are_not(worker: Worker, path: str) -> None:
    status, body = _get(worker.url + path)
    assert status == 404, (path, body[:200])


def test_status_json_has_no_input_values_by_default(worker: Worker) -> None:
    status, body = _get(worker.url + "/status.json")
    assert status == 200
    st = orjson.loads(body)
    assert st["values_shown"] is False
    ks = [d for d in st["detectors"] if d["type"] == "ks"]
    assert ks and all(d["distribution"] is None for d in ks)
    assert all(d["n_seen"] > 0 and d["statistic"] is not None for d in ks)  # statistics stay
    text = body.decode()
    # the produced values with all their 4 decimals (a short one like 90.6 may be any number)
    values = {repr(e[k]) for e in STREAM.events() for k in ("amount", "latency_ms")}
    values = {v for v in values if len(v.split(".")[-1]) == 4}
    assert not [v for v in values if v in text]
    page = _get(worker.url + "/status")[1].decode()
    assert not [v for v in values if v in page] and '<svg class="plot dist"' not in page
    assert "worker.status_values = true" in page  # says why, and how to show them


def test_the_default_address_is_loopback(tmp_path: Path) -> None:
    spec = tmp_path / "p.toml"
    spec.write_text(minimal_spec("web-default"))
    assert load_spec(spec).worker.web_host == "127.0.0.1"
