"""The Schema Registry client of ``[schema_registry]``, and the gate that holds consumption while
the registry cannot be reached.

Secrets are never in the spec: HTTP basic auth (``user:password``) comes from
``$DRIFTLINE_SCHEMA_REGISTRY_BASIC_AUTH``, else from the file ``basic_auth_file`` names; the TLS
key's password from ``$DRIFTLINE_SCHEMA_REGISTRY_SSL_KEY_PASSWORD``, else ``key_password_file``.
The client itself does not retry (``max.retries = 0``): an unanswered request raises at once
(bounded by ``timeout_ms``) and :class:`RegistryGate` pauses the input and retries with backoff.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from driftline.agents.formats import RegistryUnavailable, SchemaReaders, schema_ids
from driftline.errors import SpecError
from driftline.spec import SchemaRegistrySpec

log = logging.getLogger("driftline.schema_registry")

ENV_BASIC_AUTH = "DRIFTLINE_SCHEMA_REGISTRY_BASIC_AUTH"
ENV_KEY_PASSWORD = "DRIFTLINE_SCHEMA_REGISTRY_SSL_KEY_PASSWORD"

#: ``mock://`` registries (the client library's in-memory one) by URL: one per process, so
#: whoever builds a client for the same URL (a test's serializer, the worker) shares its schemas.
_MOCKS: dict[str, Any] = {}


def _secret(env: Mapping[str, str], var: str, path: Path | None, key: str) -> str | None:
    """The secret in ``$var``, else the first line of the file at ``path`` (spec key ``key``)."""
    value = env.get(var)
    if value:
        return value
    if path is None:
        return None
    try:
        text = path.read_text().strip()
    except OSError as e:
        raise SpecError(
            f"spec key schema_registry.{key}: cannot read {path}: {e.strerror}; point it at "
            f"a readable file (or set ${var})"
        ) from None
    if not text:
        raise SpecError(f"spec key schema_registry.{key}: {path} is empty")
    return text.splitlines()[0]


def registry_client_config(
    sr: SchemaRegistrySpec, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The ``SchemaRegistryClient`` configuration of ``sr``, secrets from ``env`` (default: the
    process environment) or the files named. SpecError (no secret in it) when one is unusable.
    """
    env = os.environ if env is None else env
    conf: dict[str, Any] = {"url": sr.url, "timeout": sr.timeout_ms / 1000, "max.retries": 0}
    auth = _secret(env, ENV_BASIC_AUTH, sr.basic_auth_file, "basic_auth_file")
    if auth is not None:
        user, sep, password = auth.partition(":")
        if not sep or not user or not password:
            where = f"${ENV_BASIC_AUTH}" if env.get(ENV_BASIC_AUTH) else str(sr.basic_auth_file)
            raise SpecError(
                f"schema registry basic auth from {where} is not user:password (one line, "
                "a colon between the two)"
            )
        conf["basic.auth.user.info"] = auth
    for key, prop in (("ca_file", "ssl.ca.location"), ("cert_file", "ssl.certificate.location"),
                      ("key_file", "ssl.key.location")):  # fmt: skip
        path = getattr(sr, key)
        if path is not None:
            if not path.is_file():
                raise SpecError(f"spec key schema_registry.{key}: no file at {path}")
            conf[prop] = str(path)
    password = _secret(env, ENV_KEY_PASSWORD, sr.key_password_file, "key_password_file")
    if password is not None:
        if sr.key_file is None:
            raise SpecError(
                f"${ENV_KEY_PASSWORD} is set but [schema_registry] has no key_file to unlock"
            )
        conf["ssl.key.password"] = password
    return conf


def registry_secrets(conf: Mapping[str, Any]) -> list[str]:
    """The secret values of a :func:`registry_client_config` (for the log redactor)."""
    auth = conf.get("basic.auth.user.info")
    found = [auth.partition(":")[2]] if auth else []
    return found + ([conf["ssl.key.password"]] if "ssl.key.password" in conf else [])


def registry_client(sr: SchemaRegistrySpec, env: Mapping[str, str] | None = None) -> Any:
    """A ``confluent_kafka.schema_registry`` client for ``sr`` (``mock://NAME``: the one
    in-memory registry of that name in this process). SpecError if TLS files do not load."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    conf = registry_client_config(sr, env)
    if sr.url.startswith("mock://"):
        if sr.url not in _MOCKS:
            _MOCKS[sr.url] = SchemaRegistryClient.new_client(conf)
        return _MOCKS[sr.url]
    try:
        return SchemaRegistryClient(conf)
    except (OSError, ValueError) as e:  # ssl.SSLError is an OSError: a bad key, cert or CA
        raise SpecError(
            f"spec key schema_registry: cannot set up the registry client: "
            f"{type(e).__name__}: {e}; check ca_file, cert_file, key_file and the key password"
        ) from None


class RegistryGate:
    """Lets a batch through once every schema id in it is resolved (or known to be unknown);
    while the registry cannot be reached, holds the batch: its partitions are sought back to
    the batch's first offsets and paused, and the ids are retried after ``retry_backoff_ms``,
    doubling up to ``retry_backoff_max_ms``; then the partitions resume.

    ``up`` (``driftline_schema_registry_up``) is 0 while held, ``retries``
    (``driftline_schema_registry_retries_total``) counts retries; one log line per change.
    """

    def __init__(
        self,
        readers: SchemaReaders,
        sr: SchemaRegistrySpec,
        input_topic: str,
        up: Any = None,
        retries: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.readers = readers
        self.sr = sr
        self.input_topic = input_topic
        self._up, self._retries, self._clock = up, retries, clock
        #: partitions paused while the registry is unreachable (empty: consuming)
        self.held: list[Any] = []
        self.pending: set[int] = set()
        self.reason = ""
        self.backoff_s = sr.retry_backoff_ms / 1000
        self.next_try = 0.0
        if up is not None:
            up.set(1)

    @property
    def holding(self) -> bool:
        return bool(self.held)

    def admit(self, consumer: Any, msgs: list[Any]) -> bool:
        """True if ``msgs`` may be processed; else they are held (see the class)."""
        values = [m.value() for m in msgs if m.error() is None and m.topic() == self.input_topic]
        ids = schema_ids(values)
        try:
            self.readers.prefetch_ids(ids)
        except RegistryUnavailable as e:
            self._hold(consumer, msgs, ids, str(e))
            return False
        return True

    def retry(self, consumer: Any) -> bool:
        """When held and the backoff has passed, ask the registry again; resume if it answers.
        True if consumption resumed."""
        if not self.held or self._clock() < self.next_try:
            return False
        if self._retries is not None:
            self._retries.inc()
        try:
            self.readers.prefetch_ids(self.pending)
        except RegistryUnavailable as e:
            self.backoff_s = min(2 * self.backoff_s, self.sr.retry_backoff_max_ms / 1000)
            self.next_try = self._clock() + self.backoff_s
            if str(e) != self.reason:
                self.reason = str(e)
                log.warning("schema registry still unreachable: %s; next retry in %.1f s",
                            self.reason, self.backoff_s)  # fmt: skip
            else:
                log.debug("schema registry retry failed; next in %.1f s", self.backoff_s)
            return False
        assigned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
        mine = [tp for tp in self.held if (tp.topic, tp.partition) in assigned]
        if mine:
            consumer.resume(mine)
        log.warning(
            "schema registry %s answers again; resuming consumption of %d partitions",
            self.sr.url,
            len(mine),
        )
        self.held, self.pending, self.reason = [], set(), ""
        self.backoff_s = self.sr.retry_backoff_ms / 1000
        if self._up is not None:
            self._up.set(1)
        return True

    def _hold(self, consumer: Any, msgs: list[Any], ids: set[int], reason: str) -> None:
        from confluent_kafka import TopicPartition

        first: dict[tuple[str, int], int] = {}
        for m in msgs:
            if m.error() is None:
                first.setdefault((m.topic(), m.partition()), m.offset())
        # a partition revoked while its records were fetched is no longer ours to seek: its
        # next owner starts from the committed offset
        assigned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
        tps = [TopicPartition(t, p, o) for (t, p), o in sorted(first.items()) if (t, p) in assigned]
        consumer.pause(tps)
        for tp in tps:
            consumer.seek(tp)  # read again once the registry answers
        new = {(tp.topic, tp.partition) for tp in tps} - {(h.topic, h.partition) for h in self.held}
        self.held += [tp for tp in tps if (tp.topic, tp.partition) in new]
        self.pending |= {i for i in ids if i not in self.readers.readers}
        was_up = not self.reason
        self.reason = reason
        self.next_try = self._clock() + self.backoff_s
        if self._up is not None:
            self._up.set(0)
        if was_up:
            log.warning(
                "schema registry %s unreachable: %s; consumption paused, retrying in %.1f s "
                "(no record is dead-lettered for it)",
                self.sr.url,
                reason,
                self.backoff_s,
            )
