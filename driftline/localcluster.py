"""Run a local N-broker Apache Kafka cluster (KRaft) from the same jars as :mod:`localkafka`.

Layout: the first ``min(N, 3)`` nodes are combined broker+controller nodes forming the KRaft
quorum (3 voters for N >= 3, so the cluster survives one node being SIGKILLed); further nodes
are brokers only. Node ``i`` (0-based) listens for clients on ``port + i`` (a controller also
on ``port + N + i``) and keeps its state in ``data_dir/node-<i>`` (``server.properties``,
``broker.log``, ``broker.json``, ``log/``, as a single :class:`~driftline.localkafka.LocalKafka`
does). ``data_dir/cluster.json`` holds the
cluster id and every node's ports, so a node (or the whole cluster) restarts on the same data
and the same quorum.

The cluster's own topics are replicated like a production cluster's: ``__consumer_offsets``
and ``__transaction_state`` get ``min(N, 3)`` replicas (min ISR 2 from 3 brokers on).

``security=`` (see :mod:`driftline.localkafka_security`) secures every node's client listener
with one CA and one set of users in ``data_dir/security``; the client files in
``data_dir/clients`` name every broker.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from driftline.errors import KafkaLauncherError
from driftline.localkafka import (
    KAFKA_VERSION,
    LocalKafka,
    _count_topics,
    _random_cluster_id,
    default_data_dir,
    fetch_jars,
    require_java,
    secure_clients,
)
from driftline.localkafka_security import ADMIN_USER, BrokerSecurity, ClientFiles

__all__ = ["CLUSTER_FILE", "ClusterNode", "LocalCluster", "is_cluster_dir"]

#: The file in a cluster's data dir naming its nodes (its presence makes a dir a cluster's).
CLUSTER_FILE = "cluster.json"
#: Controllers of the KRaft quorum: 3 voters tolerate one lost node.
MAX_VOTERS = 3


def is_cluster_dir(data_dir: Path | None) -> bool:
    """True if ``data_dir`` (default: the launcher's) holds a multi-broker cluster."""
    return ((data_dir or default_data_dir()) / CLUSTER_FILE).exists()


def _parallel(fn: Callable[[ClusterNode], None], nodes: list[ClusterNode]) -> list[BaseException]:
    """Run ``fn`` on every node at once; the exceptions raised, once all have ended."""
    errors: list[BaseException] = []

    def run(node: ClusterNode) -> None:
        try:
            fn(node)
        except BaseException as exc:  # reported by the caller, after every thread ended
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def _override(properties: str, values: dict[str, str]) -> str:
    """``properties`` (``key=value`` lines) with ``values`` replacing or adding keys."""
    out, seen = [], set()
    for line in properties.splitlines():
        key = line.split("=", 1)[0].strip()
        if key in values:
            line = f"{key}={values[key]}"
            seen.add(key)
        out.append(line)
    out += [f"{k}={v}" for k, v in values.items() if k not in seen]
    return "\n".join(out) + "\n"


class ClusterNode(LocalKafka):
    """One node of a :class:`LocalCluster`: a :class:`LocalKafka` with the cluster's id,
    quorum and replication settings."""

    def __init__(self, cluster: LocalCluster, index: int, *, heap: str) -> None:
        node = cluster.layout["nodes"][index]
        super().__init__(
            port=int(node["port"]),
            data_dir=cluster.data_dir / f"node-{index}",
            version=cluster.version,
            heap=heap,
            auto_create_topics=cluster.auto_create_topics,
        )
        self.security = cluster.security  # one CA, one set of users for every node
        self.cluster = cluster
        self.index = index
        self.node_id = index + 1
        self.controller = index < cluster.voters

    def _controller_port(self) -> int:
        return int(self.cluster.layout["nodes"][self.index]["controller_port"])

    def _secure_clients(self) -> None:
        """The cluster grants the ACLs and writes the client files once all nodes answer."""

    def _cluster_id(self) -> str:
        return str(self.cluster.layout["cluster_id"])

    def _server_properties(self, controller_port: int) -> str:
        c, n = self.cluster, self.cluster.brokers
        replicas = str(min(n, MAX_VOTERS))
        min_isr = "2" if n >= MAX_VOTERS else "1"
        listeners = f"PLAINTEXT://127.0.0.1:{self.port}"
        if self.controller:
            listeners += f",CONTROLLER://127.0.0.1:{controller_port}"
        return _override(
            super()._server_properties(controller_port),
            {
                "process.roles": "broker,controller" if self.controller else "broker",
                "node.id": str(self.node_id),
                "controller.quorum.voters": c.quorum_voters,
                "listeners": listeners,
                "offsets.topic.replication.factor": replicas,
                "transaction.state.log.replication.factor": replicas,
                "transaction.state.log.min.isr": min_isr,
                "share.coordinator.state.topic.replication.factor": replicas,
                "share.coordinator.state.topic.min.isr": min_isr,
                "default.replication.factor": replicas,
            },
        )

    @property
    def pid(self) -> int | None:
        """The node's JVM pid while it runs."""
        state = self._live_state()
        return int(state["pid"]) if state is not None else None

    def kill(self, timeout_s: float = 10.0) -> None:
        """SIGKILL the node's JVM (no clean shutdown) and wait until it is gone."""
        pid = self.pid
        if pid is None:
            raise KafkaLauncherError(f"broker {self.index} ({self.bootstrap}) is not running")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        if not self._wait_gone(pid, timeout_s):
            raise KafkaLauncherError(f"Kafka pid {pid} survived SIGKILL; check `ps {pid}`")
        self.state_file.unlink(missing_ok=True)
        self._proc = None


class LocalCluster:
    """A local N-broker KRaft cluster on 127.0.0.1 (see the module docstring for its layout).

    ``start`` is idempotent like :meth:`LocalKafka.start`: nodes already running from
    ``data_dir`` are reused.
    """

    def __init__(
        self,
        brokers: int = 3,
        *,
        port: int = 9092,
        data_dir: Path | None = None,
        version: str = KAFKA_VERSION,
        heap: str = "512m",
        auto_create_topics: bool = False,
        security: str | None = None,
    ) -> None:
        if brokers < 1:
            raise KafkaLauncherError(f"--brokers must be at least 1, not {brokers}")
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        #: the client listeners' security (see :mod:`driftline.localkafka_security`)
        self.security = BrokerSecurity(self.data_dir, security)
        self.version = version
        self.auto_create_topics = auto_create_topics
        self.already_running = False
        self.layout = self._load_or_plan(brokers, port)
        self.brokers = len(self.layout["nodes"])
        self.voters = min(self.brokers, MAX_VOTERS)
        self.nodes = [ClusterNode(self, i, heap=heap) for i in range(self.brokers)]

    # ----------------------------------------------------------------- layout

    @property
    def layout_file(self) -> Path:
        return self.data_dir / CLUSTER_FILE

    def _load_or_plan(self, brokers: int, port: int) -> dict[str, Any]:
        """The recorded layout of ``data_dir``, else a new one (written at ``start``)."""
        with contextlib.suppress(OSError, ValueError):
            layout = dict(json.loads(self.layout_file.read_text()))
            return layout
        if (self.data_dir / "log" / "meta.properties").exists():
            raise KafkaLauncherError(
                f"{self.data_dir} holds a single broker's data; pick another --data-dir for a "
                "cluster (or delete it)"
            )
        return {
            "cluster_id": _random_cluster_id(),
            # controller ports next to the client ports, not random ones: a restarted node must
            # bind the port its voters know, and a random (ephemeral-range) port may be taken
            # by a client socket meanwhile
            "nodes": [
                {"port": port + i, "controller_port": port + brokers + i} for i in range(brokers)
            ],
        }

    @property
    def quorum_voters(self) -> str:
        nodes = self.layout["nodes"][: min(len(self.layout["nodes"]), MAX_VOTERS)]
        return ",".join(f"{i + 1}@127.0.0.1:{n['controller_port']}" for i, n in enumerate(nodes))

    @property
    def bootstrap(self) -> str:
        """Every broker's address, comma-separated (clients need only one that is up)."""
        return ",".join(n.bootstrap for n in self.nodes)

    # ----------------------------------------------------------------- whole cluster

    def start(self, timeout_s: float = 120.0) -> str:
        """Start every node (in parallel: a node answers only once the quorum has formed) and
        wait until each answers; return :attr:`bootstrap`."""
        require_java()
        fetch_jars(self.version)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.layout_file.write_text(json.dumps(self.layout, indent=2) + "\n")
        self.security.prepare()  # once, before the nodes start in parallel
        running = [n.pid is not None for n in self.nodes]
        errors = _parallel(lambda n: n.start(timeout_s=timeout_s), self.nodes)
        if errors:
            self.stop()
            raise errors[0]
        self.already_running = all(running)
        if not self.already_running:
            secure_clients(self.security, self.bootstrap, self.stop)
        return self.bootstrap

    @property
    def client_files(self) -> dict[str, ClientFiles]:
        """Each client user's property files ({} when plaintext), with every broker's address."""
        return self.security.client_files()

    def _admin_security(self) -> dict[str, str]:
        return self.security.client_config(ADMIN_USER)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop every node (SIGTERM, SIGKILL after ``timeout_s``): the broker-only nodes, then
        the controllers together (one by one, the last ones would wait for a lost quorum)."""
        for group in ([n for n in self.nodes if not n.controller], self.voter_nodes):
            errors = _parallel(lambda n: n.stop(timeout_s=timeout_s), group)
            if errors:
                raise errors[0]
        self.already_running = False

    @property
    def voter_nodes(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.controller]

    def status(self, timeout_s: float = 5.0) -> dict[str, Any]:
        """``{"running", "brokers", "up", "pids", "bootstrap", "topics", "data_dir", "security"}``;
        running: at least one node runs; up: how many do."""
        pids = [n.pid for n in self.nodes]
        up = [n.bootstrap for n, pid in zip(self.nodes, pids, strict=True) if pid is not None]
        return {
            "running": bool(up),
            "brokers": self.brokers,
            "up": len(up),
            "pids": pids,
            "bootstrap": self.bootstrap,
            "topics": self._count_topics(",".join(up), timeout_s) if up else None,
            "data_dir": str(self.data_dir),
            "security": self.security.mode,
        }

    def _count_topics(self, bootstrap: str, timeout_s: float) -> int | None:
        return _count_topics(bootstrap, timeout_s, self._admin_security())

    # ----------------------------------------------------------------- one node

    def kill_broker(self, i: int) -> None:
        """SIGKILL node ``i`` (0-based): the crash of a machine, no clean shutdown."""
        self.nodes[i].kill()

    def stop_broker(self, i: int, timeout_s: float = 30.0) -> None:
        """Stop node ``i`` cleanly (SIGTERM; SIGKILL after ``timeout_s``)."""
        self.nodes[i].stop(timeout_s=timeout_s)

    def start_broker(self, i: int, timeout_s: float = 120.0) -> None:
        """Start node ``i`` again on its data dir and ports; wait until it answers."""
        self.nodes[i].start(timeout_s=timeout_s)
