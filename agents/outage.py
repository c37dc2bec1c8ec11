"""Whether the worker reaches its brokers, told once per change.

During a broker outage the Kafka clients log many lines a second (each reconnect attempt, each
failed fetch and heartbeat); those are held back by :class:`~driftline.agents.logs.ClientNoise`.
What a reader needs is when the link was lost and when it came back, so :class:`BrokerLink`
logs exactly one line at each change, and exports it as ``driftline_broker_connected``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError

log = logging.getLogger("driftline.outage")

#: librdkafka errors (``error_cb``) that mean no broker can be reached now.
LOST_CODES = frozenset({KafkaError._ALL_BROKERS_DOWN})


class BrokerLink:
    """The link to the cluster at ``bootstrap``: up until a client says every broker is down,
    then down until something reaches a broker again (`ok`).

    ``gauge``: a Prometheus gauge (no labels) set to 1 while up and 0 while down.
    Safe to call from any thread.
    """

    def __init__(
        self, bootstrap: str, gauge: Any = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.bootstrap = bootstrap
        self.gauge = gauge
        self.clock = clock
        #: when the current outage began (monotonic), None while connected
        self.down_since: float | None = None
        #: outages seen so far, and the length of the last one that ended (seconds)
        self.outages = 0
        self.last_outage_s: float | None = None
        self._lock = threading.Lock()
        if gauge is not None:
            gauge.set(1)

    @property
    def up(self) -> bool:
        return self.down_since is None

    def lost(self, reason: str) -> None:
        """No broker answers (``reason``: what the client said); logged once per outage."""
        with self._lock:
            if self.down_since is not None:
                return
            self.down_since = self.clock()
            self.outages += 1
        if self.gauge is not None:
            self.gauge.set(0)
        log.warning(
            "lost connection to the Kafka brokers %s (%s); retrying, and resuming from the last "
            "commit once they answer",
            self.bootstrap,
            reason,
        )

    def ok(self) -> None:
        """Something reached a broker; logs the reconnection if the link was down."""
        with self._lock:
            if self.down_since is None:
                return
            self.last_outage_s = self.clock() - self.down_since
            self.down_since = None
        if self.gauge is not None:
            self.gauge.set(1)
        log.warning(
            "reconnected to the Kafka brokers %s after %.1f s", self.bootstrap, self.last_outage_s
        )

    def error_cb(self, err: KafkaError) -> None:
        """A librdkafka consumer's ``error_cb`` (served by its poll, so never stale): every
        broker down is an outage; a fatal error is logged; the rest is in the client's own log
        lines already."""
        if err.code() in LOST_CODES:
            self.lost("no broker answers")
        elif err.fatal():
            logging.getLogger("driftline.kafka").error("fatal client error: %s", err)
