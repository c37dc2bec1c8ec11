"""The worker's access check at start: may it read, write and transact what the spec names?

Without it a missing ACL shows up late and quietly: a consumer that never gets records, a
producer whose sends time out, a host app that waits for a group forever. :func:`check_access`
asks the cluster (within a bounded time) for the operations this client may do on each topic
and consumer group (KIP-430 ``authorized_operations``) and, under ``exactly_once``, starts the
worker's transactional id once; the first refusal becomes one :class:`AccessError` line naming
the resource, the operation and the principal. Only refusals fail: a question the cluster does
not answer in time (a coordinator still starting) is left to the clients.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Producer, TopicCollection
from confluent_kafka.admin import AclOperation, AdminClient

from driftline.agents.kafka_errors import AUTHORIZATION, explain
from driftline.agents.kafka_io import client_conf
from driftline.errors import DriftlineError
from driftline.kafka_config import KafkaConfig

log = logging.getLogger("driftline.access")

#: Group coordinator not ready yet (a fresh cluster): ask again until the deadline.
_RETRY = {
    KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError._TIMED_OUT, KafkaError._TRANSPORT,
}  # fmt: skip


class AccessError(DriftlineError):
    """The cluster refuses an operation the worker needs (a missing ACL)."""


@dataclass(frozen=True)
class Needs:
    """What a worker does on the cluster."""

    read_topics: tuple[str, ...]
    write_topics: tuple[str, ...]
    groups: tuple[str, ...]
    transactional_id: str | None = None

    def only_topics(self) -> Needs:
        """What these needs ask of topics alone (no groups, no transactional id)."""
        return Needs(self.read_topics, self.write_topics, ())


def _op(op: AclOperation) -> str:
    return op.name.replace("_", " ").title().replace(" ", "")


def _principal(kafka: KafkaConfig) -> str:
    user = kafka.get("sasl.username")
    return f"User:{user}" if user else "this client's principal"


def _refused(kafka: KafkaConfig, kind: str, name: str, op: AclOperation) -> AccessError:
    return AccessError(
        f"Kafka refuses {_op(op)} on {kind} {name!r} to {_principal(kafka)} at {kafka.bootstrap}: "
        f"ask the cluster's admins for an ACL allowing {_op(op)} on {kind} {name} (e.g. "
        f"kafka-acls.sh --add --allow-principal {_principal(kafka)} --operation {_op(op)} "
        f"--{kind.split()[-1]} {name}), or fix the name in the spec"
    )


def check_access(kafka: KafkaConfig, needs: Needs, timeout_s: float = 15.0) -> None:
    """Raise :class:`AccessError` for the first operation of ``needs`` the cluster refuses."""
    deadline = time.monotonic() + timeout_s
    admin = AdminClient(client_conf(kafka))
    _check_topics(admin, kafka, needs, deadline)
    _check_groups(admin, kafka, needs.groups, deadline)
    if needs.transactional_id is not None:
        _check_transactions(kafka, needs.transactional_id, deadline)


def _left(deadline: float) -> float:
    return max(1.0, deadline - time.monotonic())


def _check_topics(admin: AdminClient, kafka: KafkaConfig, needs: Needs, deadline: float) -> None:
    wanted: dict[str, set[AclOperation]] = {}
    for t in needs.read_topics:
        wanted.setdefault(t, set()).add(AclOperation.READ)
    for t in needs.write_topics:
        wanted.setdefault(t, set()).add(AclOperation.WRITE)
    if not wanted:
        return
    futures = admin.describe_topics(
        TopicCollection(sorted(wanted)),
        include_authorized_operations=True,
        request_timeout=_left(deadline),
    )
    for topic, fut in futures.items():
        try:
            desc = fut.result()
        except KafkaException as e:
            err = e.args[0]
            if err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                raise _refused(kafka, "topic", topic, AclOperation.DESCRIBE) from None
            if err.code() in AUTHORIZATION:
                raise AccessError(explain(err, kafka, f"topic {topic!r}")) from None
            # unknown topic: created by the preflight (needs Create) or reported there; a
            # timeout is no refusal either: the clients will find out
            log.debug("access to topic %s not checked: %s", topic, err)
            continue
        allowed = desc.authorized_operations
        if allowed is None:  # the broker did not say: the clients will find out
            continue
        for op in sorted(wanted[topic], key=lambda o: o.value):
            if op not in allowed and AclOperation.ALL not in allowed:
                raise _refused(kafka, "topic", topic, op)


def _check_groups(
    admin: AdminClient, kafka: KafkaConfig, groups: Iterable[str], deadline: float
) -> None:
    todo = list(groups)
    while todo:
        futures = admin.describe_consumer_groups(
            todo, include_authorized_operations=True, request_timeout=_left(deadline)
        )
        retry = []
        for group, fut in futures.items():
            try:
                desc = fut.result()
            except KafkaException as e:
                err = e.args[0]
                if err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
                    raise _refused(kafka, "consumer group", group, AclOperation.READ) from None
                if err.code() in AUTHORIZATION:
                    raise AccessError(explain(err, kafka, f"consumer group {group!r}")) from None
                if err.code() in _RETRY and time.monotonic() < deadline:
                    retry.append(group)  # coordinator not ready yet (a fresh cluster)
                else:  # no answer is no refusal: the consumers will find out
                    log.debug("access to consumer group %s not checked: %s", group, err)
                continue
            allowed = desc.authorized_operations
            if allowed is not None and not {AclOperation.READ, AclOperation.ALL} & set(allowed):
                raise _refused(kafka, "consumer group", group, AclOperation.READ)
        todo = retry
        if todo:
            time.sleep(0.3)


def _check_transactions(kafka: KafkaConfig, transactional_id: str, deadline: float) -> None:
    """Start the worker's transactional id once (the worker does the same right after)."""
    producer = Producer(client_conf(kafka, {"transactional.id": transactional_id}))
    try:
        producer.init_transactions(_left(deadline))
    except KafkaException as e:
        err = e.args[0]
        prefix = transactional_id.rsplit(".", 1)[0] + "."
        if err.code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
            raise AccessError(
                f"Kafka refuses the transactional id {transactional_id!r} to "
                f"{_principal(kafka)} at {kafka.bootstrap} (processing_guarantee = "
                "exactly_once): ask the cluster's admins for an ACL allowing Write on "
                f"transactional-id {transactional_id} (a prefixed ACL on {prefix} covers every "
                "worker), or use at_least_once"
            ) from None
        if err.code() in AUTHORIZATION:
            what = f"transactional id {transactional_id!r}"
            raise AccessError(explain(err, kafka, what)) from None
        # not a refusal (the transaction coordinator is slow to start): the worker's own
        # init_transactions waits longer and reports what it meets
        log.debug("transactional id %s not checked: %s", transactional_id, err)
    # nothing was produced: the probe is dropped (flushing a fenced one would raise)
