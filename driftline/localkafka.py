"""Run a real single-node Apache Kafka broker (KRaft) on this machine, without Docker.

The jars come from Maven Central through ``mvn`` and are cached outside the repository in
``${XDG_CACHE_HOME:-~/.cache}/driftline/kafka-<version>/libs``. The broker runs as a detached
JVM in its own session; its state lives in a data directory (default
``${XDG_STATE_HOME:-~/.local/state}/driftline/kafka``) holding ``server.properties``,
``broker.log``, ``broker.json`` (pid, ports, bootstrap) and the ``log`` directory.

Needs Java 17+ (Kafka 4 brokers refuse older JVMs) and Maven for the first fetch.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from driftline.errors import KafkaLauncherError
from driftline.localkafka_security import ADMIN_USER, BrokerSecurity, ClientFiles

__all__ = [
    "KAFKA_VERSION",
    "LocalKafka",
    "fetch_jars",
    "fetch_tool_jars",
    "free_port",
    "free_ports",
    "secure_clients",
    "tool_classpath",
]

# Newest 4.x line that aiokafka 0.14 / faust-streaming 0.15.3 / librdkafka 2.16 were verified
# against here. KRaft only; Java 17 is the minimum for Kafka 4 brokers.
KAFKA_VERSION = "4.1.1"
MIN_JAVA = 17
LOG4J_VERSION = "2.24.3"
# Kafka pulls slf4j-api 1.7, which does not see the slf4j2 binding: logging would go NOP.
SLF4J_VERSION = "2.0.17"
INSTALL_HINT = "Debian/Ubuntu: apt-get install -y openjdk-17-jre-headless maven"
LOG_TAIL_LINES = 30

_log = logging.getLogger(__name__)

_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>driftline.local</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId>
      <version>{slf4j}</version>
    </dependency>
  </dependencies>
</project>
"""

# Kafka's command-line tools (kafka-console-consumer.sh & co.: org.apache.kafka.tools.*) live in
# kafka-tools, whose other dependencies (Connect, Jetty, Jersey...) the tools do not need: the
# one jar goes next to the broker's classpath (``tool_classpath``).
_TOOLS_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>driftline.local</groupId>
  <artifactId>kafka-tools-runtime</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId>
      <version>{version}</version>
      <exclusions><exclusion><groupId>*</groupId><artifactId>*</artifactId></exclusion></exclusions>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
"""

_SERVER_PROPERTIES = """process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={log_dir}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable={auto_create}
message.max.bytes=4194304
"""


# --------------------------------------------------------------------------- paths


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def cache_dir(version: str = KAFKA_VERSION) -> Path:
    """Where the jars of ``version`` are cached (outside the repository)."""
    return _xdg("XDG_CACHE_HOME", ".cache") / "driftline" / f"kafka-{version}"


def default_data_dir() -> Path:
    """Default broker data directory."""
    return _xdg("XDG_STATE_HOME", ".local/state") / "driftline" / "kafka"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(n: int) -> int:
    """A port p with p .. p+n-1 free on 127.0.0.1 (a local cluster's brokers, the processes of
    ``driftline worker --processes N``), below the kernel's ephemeral range, where client
    sockets could take one at any moment."""
    while True:
        port = random.randrange(20_000, 32_000)
        if not any(_port_in_use(port + i) for i in range(n)):
            return port


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# --------------------------------------------------------------------------- tools


def _require_tool(name: str, why: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise KafkaLauncherError(
            f"`{name}` not found on PATH; it is needed {why}. Install it ({INSTALL_HINT})."
        )
    return path


def _java_major(java: str) -> int:
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KafkaLauncherError(f"could not run `{java} -version`: {exc}") from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match is None:
        raise KafkaLauncherError(f"could not parse the Java version from: {out.stderr.strip()!r}")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0_301" style
        major = int(match.group(2))
    return major


def require_java() -> str:
    """Absolute path of a ``java`` that is new enough for Kafka 4, or KafkaLauncherError."""
    java = _require_tool("java", f"to run the Kafka broker (Java {MIN_JAVA}+)")
    major = _java_major(java)
    if major < MIN_JAVA:
        raise KafkaLauncherError(
            f"{java} is Java {major}, but Kafka {KAFKA_VERSION} brokers need Java {MIN_JAVA}+. "
            f"Install a newer JDK ({INSTALL_HINT}) and put it first on PATH."
        )
    return java


# --------------------------------------------------------------------------- jars


def _tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _run_maven(mvn: str, libs: Path, pom_text: str, version: str, quiet: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="driftline-kafka-pom-") as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(pom_text)
        cmd = [
            mvn,
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}",
            "-DincludeScope=runtime",
        ]
        if quiet:
            cmd.insert(1, "-q")
        proc = subprocess.run(cmd, cwd=tmp, capture_output=quiet, text=True, check=False)
    if proc.returncode != 0:
        detail = _tail((proc.stdout or "") + (proc.stderr or "")) if quiet else "see above"
        raise KafkaLauncherError(
            f"Maven could not fetch Kafka {version} jars from Maven Central (exit "
            f"{proc.returncode}); check network access / ~/.m2/settings.xml proxies.\n{detail}"
        )


def fetch_jars(version: str = KAFKA_VERSION, *, quiet: bool = True) -> Path:
    """Download Kafka ``version`` and its runtime deps once; return the ``libs`` directory.

    A marker file is written only after Maven succeeded, so an interrupted fetch is redone.
    Concurrent callers are serialised with a file lock.
    """
    pom = _POM.format(version=version, log4j=LOG4J_VERSION, slf4j=SLF4J_VERSION)
    return _fetch(cache_dir(version) / "libs", pom, "kafka_2.13", version, quiet)


def fetch_tool_jars(version: str = KAFKA_VERSION, *, quiet: bool = True) -> Path:
    """Download Kafka's command-line tools jar once; return its directory.

    See ``tool_classpath``."""
    pom = _TOOLS_POM.format(version=version)
    return _fetch(cache_dir(version) / "tools", pom, "kafka-tools", version, quiet)


def tool_classpath(version: str = KAFKA_VERSION) -> str:
    """Java ``-cp`` for Kafka's tools (``org.apache.kafka.tools.consumer.ConsoleConsumer``...):
    the broker's jars plus kafka-tools, fetched if needed."""
    return f"{fetch_jars(version)}/*:{fetch_tool_jars(version)}/*"


def _fetch(libs: Path, pom: str, artifact: str, version: str, quiet: bool) -> Path:
    """Run Maven on ``pom`` into ``libs`` once (a marker file, written last, says it is done)."""
    root = libs.parent
    marker = root / (".complete" if libs.name == "libs" else f".complete-{libs.name}")
    if marker.exists():
        return libs
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return libs
        mvn = _require_tool("mvn", f"once, to download the Kafka {version} jars")
        shutil.rmtree(libs, ignore_errors=True)
        _run_maven(mvn, libs, pom, version, quiet)
        if not any(libs.glob(f"{artifact}-*.jar")):
            raise KafkaLauncherError(f"Maven succeeded but no {artifact} jar landed in {libs}")
        marker.write_text(f"{version}\n")
    return libs


# --------------------------------------------------------------------------- processes


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie (orphans may wait unreaped in containers)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _is_kafka(pid: int) -> bool:
    """Guard against pid reuse: the process must be a ``kafka.Kafka`` JVM."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return _pid_alive(pid)  # no /proc: trust the pid
    return b"kafka.Kafka" in cmdline


def _admin(bootstrap: str, security: dict[str, str] | None = None) -> Any:
    """An AdminClient for ``bootstrap``; ``security``: librdkafka settings of a secured broker."""
    from confluent_kafka.admin import AdminClient

    # Route librdkafka's connection-refused chatter to logging instead of stderr.
    return AdminClient({"bootstrap.servers": bootstrap, "logger": _log, **(security or {})})


def _count_topics(
    bootstrap: str, timeout_s: float, security: dict[str, str] | None = None
) -> int | None:
    """Number of non-internal topics, or None if the broker does not answer in time."""
    from confluent_kafka import KafkaException

    try:
        meta = _admin(bootstrap, security).list_topics(timeout=timeout_s)
    except KafkaException:
        return None
    return sum(1 for name in meta.topics if not name.startswith("__"))


def _random_cluster_id() -> str:
    """A Kafka-style base64url UUID; like Kafka's Uuid.randomUuid it never starts with '-',
    which the StorageTool argument parser would take for an option."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def secure_clients(security: BrokerSecurity, bootstrap: str, stop: Callable[[], None]) -> None:
    """As admin, grant the client user's ACLs, then write the client property files (secured
    brokers only); if the broker refuses, ``stop`` it and raise KafkaLauncherError."""
    if not security.secured:
        return
    try:
        security.grant_acls(_admin(bootstrap, security.client_config(ADMIN_USER)))
    except Exception as exc:
        stop()
        raise KafkaLauncherError(
            f"the secured Kafka at {bootstrap} refused the client user's ACLs (stopped it): {exc}"
        ) from exc
    security.write_client_files(bootstrap)


# --------------------------------------------------------------------------- launcher


class LocalKafka:
    """One KRaft broker+controller on 127.0.0.1, with its state in ``data_dir``.

    ``start`` is idempotent: if ``data_dir`` already has a live broker it is reused (see
    ``already_running``). Use as a context manager to start and stop around a block.
    ``security`` (one of ``localkafka_security.MODES``; None: the data dir's, else plaintext)
    secures the client listener; ``client_files`` then names the client property files.
    """

    def __init__(
        self,
        *,
        port: int = 9092,
        data_dir: Path | None = None,
        version: str = KAFKA_VERSION,
        heap: str = "768m",
        auto_create_topics: bool = False,
        security: str | None = None,
    ) -> None:
        self.port = port
        #: broker-side auto-creation of topics a client names (one partition, default configs).
        #: Off by default: a producer naming a missing topic gets an error instead of a silent
        #: one-partition topic (``driftline topics create`` makes a pipeline's topics).
        self.auto_create_topics = auto_create_topics
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self.security = BrokerSecurity(self.data_dir, security)
        self.version = version
        self.heap = heap
        self.already_running = False
        self._proc: subprocess.Popen[bytes] | None = None

    # ----------------------------------------------------------------- files

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def client_files(self) -> dict[str, ClientFiles]:
        """Each client user's property files ({} when plaintext); written by ``start``."""
        return self.security.client_files()

    def _admin_security(self) -> dict[str, str]:
        return self.security.client_config(ADMIN_USER)

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def state_file(self) -> Path:
        return self.data_dir / "broker.json"

    def _read_state(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self.state_file.read_text()))
        except (OSError, ValueError):
            return None

    def _live_state(self) -> dict[str, Any] | None:
        """broker.json if its pid is a live Kafka JVM; a stale file is removed."""
        state = self._read_state()
        if state is None:
            return None
        if _pid_alive(int(state["pid"])) and _is_kafka(int(state["pid"])):
            return state
        self.state_file.unlink(missing_ok=True)
        return None

    def _log_tail(self) -> str:
        try:
            return _tail(self.log_file.read_text(errors="replace"))
        except OSError:
            return "(no broker.log)"

    # ----------------------------------------------------------------- start

    def _java_cmd(self, java: str, libs: Path, *args: str) -> list[str]:
        log4j = self.data_dir / "log4j2.properties"
        return [java, "-cp", f"{libs}/*", f"-Dlog4j2.configurationFile={log4j}", *args]

    def _server_properties(self, controller_port: int) -> str:
        """The text of ``server.properties`` (a cluster node overrides some of its keys)."""
        return _SERVER_PROPERTIES.format(
            port=self.port,
            controller_port=controller_port,
            log_dir=self.data_dir / "log",
            auto_create=str(self.auto_create_topics).lower(),
        )

    def _controller_port(self) -> int:
        """The KRaft controller listener's port (a cluster node keeps the one its voters know)."""
        return free_port()

    def _cluster_id(self) -> str:
        """The id the storage is formatted with (a cluster's nodes share one)."""
        return _random_cluster_id()

    def _write_config(self, controller_port: int) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2)
        props = self.data_dir / "server.properties"
        props.write_text(self.security.server_properties(self._server_properties(controller_port)))
        os.chmod(props, 0o600)  # a secured broker's file holds its keystore and JAAS passwords
        return props

    def _format_storage(self, java: str, libs: Path, props: Path) -> None:
        if (self.data_dir / "log" / "meta.properties").exists():
            return  # already formatted: keep the data
        cmd = self._java_cmd(
            java,
            libs,
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={self._cluster_id()}",
            "-c",
            str(props),
            *self.security.format_args(),
        )
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise KafkaLauncherError(
                f"formatting the Kafka storage in {self.data_dir / 'log'} failed "
                f"(exit {proc.returncode}); delete that directory if it is corrupt.\n"
                f"{_tail(proc.stdout + proc.stderr)}"
            )

    def _spawn(self, java: str, libs: Path, props: Path, controller_port: int) -> int:
        cmd = self._java_cmd(java, libs, "kafka.Kafka", str(props))
        cmd.insert(1, f"-Xmx{self.heap}")
        with open(self.log_file, "ab") as log:
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        state = {
            "pid": self._proc.pid,
            "port": self.port,
            "controller_port": controller_port,
            "bootstrap": self.bootstrap,
            "version": self.version,
            "security": self.security.mode,
            "data_dir": str(self.data_dir),
            "started_at": time.time(),
        }
        self.state_file.write_text(json.dumps(state, indent=2) + "\n")
        return self._proc.pid

    def _wait_ready(self, pid: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not _port_in_use(self.port):
            self._check_alive_or_late(pid, deadline, timeout_s)
            time.sleep(0.2)
        admin = _admin(self.bootstrap, self._admin_security())
        while True:
            with contextlib.suppress(Exception):
                admin.list_topics(timeout=2.0)
                return
            self._check_alive_or_late(pid, deadline, timeout_s)
            time.sleep(0.2)

    def _check_alive_or_late(self, pid: int, deadline: float, timeout_s: float) -> None:
        if self._gone(pid):
            code = self._proc.returncode if self._proc is not None else "unknown"
            self.state_file.unlink(missing_ok=True)
            raise KafkaLauncherError(
                f"the Kafka broker (pid {pid}) exited with code {code} during start-up; "
                f"last lines of {self.log_file}:\n{self._log_tail()}"
            )
        if time.monotonic() > deadline:
            self.stop()
            raise KafkaLauncherError(
                f"the Kafka broker did not answer on {self.bootstrap} within {timeout_s:g} s "
                f"(stopped it); raise --timeout on slow machines. Last lines of "
                f"{self.log_file}:\n{self._log_tail()}"
            )

    def start(self, timeout_s: float = 60.0) -> str:
        """Start the broker (fetching jars if needed) and wait until it answers.

        Returns the bootstrap address. If a live broker already runs from ``data_dir``, its
        bootstrap is returned and ``already_running`` is set instead of starting another one.
        """
        state = self._live_state()
        if state is not None:
            self.port = int(state["port"])
            self.already_running = True
            self.security.prepare()  # refuses another --security than the data dir's
            self._wait_ready(int(state["pid"]), timeout_s)  # it may still be starting up
            _log.info("Kafka already running from %s at %s", self.data_dir, self.bootstrap)
            return self.bootstrap
        self.already_running = False
        java = require_java()
        if _port_in_use(self.port):
            raise KafkaLauncherError(
                f"port {self.port} on 127.0.0.1 is already in use by another process; "
                "stop it or pick another port (--port)."
            )
        libs = fetch_jars(self.version)
        controller_port = self._controller_port()
        self.security.prepare()
        props = self._write_config(controller_port)
        self._format_storage(java, libs, props)
        pid = self._spawn(java, libs, props, controller_port)
        self._wait_ready(pid, timeout_s)
        self._secure_clients()
        _log.info("Kafka %s up at %s (pid %s)", self.version, self.bootstrap, pid)
        return self.bootstrap

    def _secure_clients(self) -> None:
        """Grant the client user's ACLs and write the client property files (secured only)."""
        secure_clients(self.security, self.bootstrap, self.stop)

    # ----------------------------------------------------------------- stop / status

    def _pid(self) -> int | None:
        state = self._read_state()
        if state is not None:
            return int(state["pid"])
        return self._proc.pid if self._proc is not None else None

    def _gone(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is not None  # reaps our own child
        return not _pid_alive(pid)

    def _wait_gone(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._gone(pid):
                return True
            time.sleep(0.1)
        return self._gone(pid)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the broker's process group, SIGKILL after ``timeout_s``; no-op if not running."""
        pid = self._pid()
        if pid is not None and not self._gone(pid) and _is_kafka(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            if not self._wait_gone(pid, timeout_s):
                _log.warning("Kafka pid %s ignored SIGTERM for %gs; killing it", pid, timeout_s)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                if not self._wait_gone(pid, 10.0):
                    raise KafkaLauncherError(f"Kafka pid {pid} survived SIGKILL; check `ps {pid}`")
        self.state_file.unlink(missing_ok=True)
        self._proc = None
        self.already_running = False

    def _count_topics(self, bootstrap: str, timeout_s: float) -> int | None:
        try:
            security = self._admin_security()
        except KafkaLauncherError as exc:  # a secured data dir missing its secrets
            _log.warning("cannot count the topics of %s: %s", bootstrap, exc)
            return None
        return _count_topics(bootstrap, timeout_s, security)

    def status(self, timeout_s: float = 5.0) -> dict[str, Any]:
        """``{"running", "pid", "bootstrap", "topics", "data_dir", "security"}``; topics
        excludes ``__*``; ``security`` is the data dir's mode (see ``localkafka_security``)."""
        state = self._live_state()
        if state is None:
            return {
                "running": False,
                "pid": None,
                "bootstrap": self.bootstrap,
                "topics": None,
                "data_dir": str(self.data_dir),
                "security": self.security.mode,
            }
        bootstrap = str(state["bootstrap"])
        return {
            "running": True,
            "pid": int(state["pid"]),
            "bootstrap": bootstrap,
            "topics": self._count_topics(bootstrap, timeout_s),
            "data_dir": str(self.data_dir),
            "security": self.security.mode,
        }

    # ----------------------------------------------------------------- context manager

    def __enter__(self) -> LocalKafka:
        """Start (or reuse) the broker; ``__exit__`` stops it only if this object started it."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.already_running:
            self.stop()
