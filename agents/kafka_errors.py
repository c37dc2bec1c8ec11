"""librdkafka errors as one line saying what failed and what to check.

The connection errors librdkafka reports through ``error_cb`` (and raises from calls) are terse
and repeat forever while it retries. :func:`explain` turns one into a sentence naming the
cluster, how the clients connect (never a secret) and which setting to look at;
:func:`is_fatal_at_connect` says which of them no retry can fix (a wrong password, an untrusted
certificate), so a command stops at once instead of retrying until its deadline.
"""

from __future__ import annotations

import re

from confluent_kafka import KafkaError

from driftline.kafka_config import KafkaConfig, env_name

#: Errors no retry fixes: the settings (or the cluster's users) must change.
_AUTH = (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED)
_SASL = (KafkaError.UNSUPPORTED_SASL_MECHANISM, KafkaError.ILLEGAL_SASL_STATE)
_UNREACHABLE = (
    KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE,
    KafkaError._TIMED_OUT,
)  # fmt: skip

#: ACL errors -> (resource kind, the operation the worker needs).
AUTHORIZATION = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "topic",
    KafkaError.GROUP_AUTHORIZATION_FAILED: "consumer group",
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: "transactional id",
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: "cluster",
}

_TLS_WORDS = re.compile(r"(?i)\bssl\b|handshake|certificate|\btls\b")
_WHEN = re.compile(r"\s*\(after \d+ms in state [A-Z_]+\)")
_BROKER = re.compile(r"^(?:\S+://)?\S+?/(?:bootstrap|\d+): ")


def is_tls(err: KafkaError) -> bool:
    """A TLS failure. librdkafka reports some as transport errors: under TLS 1.3 a broker that
    refuses the client's certificate says so after the handshake, in an alert the client reads
    as ``Receive failed: ...SSL routines::ssl/tls alert bad certificate``."""
    text = err.str().lower()
    return err.code() == KafkaError._SSL or (
        err.code() == KafkaError._TRANSPORT
        and ("handshake" in text or "ssl routines" in text or "tls alert" in text)
    )


def is_fatal_at_connect(err: KafkaError) -> bool:
    """Whether retrying cannot help: authentication, SASL or TLS failures."""
    return err.code() in _AUTH or err.code() in _SASL or is_tls(err)


def reason(err: KafkaError) -> str:
    """librdkafka's text without the broker prefix and state timing."""
    return _WHEN.sub("", _BROKER.sub("", err.str())).strip()


def _setting(kafka: KafkaConfig, name: str) -> str:
    value = kafka.get(name)
    if value is None:
        return f"{name} (not set)"
    return f"{name} = {value} (from {kafka.origin(name)})"


def explain(err: KafkaError, kafka: KafkaConfig, what: str = "") -> str:
    """One line: what failed (talking to which cluster, as whom) and what to check.

    ``what`` names the resource of an authorization error (``topic 'events' (needs Read)``).
    """
    code, why, at = err.code(), reason(err), kafka.bootstrap
    how = kafka.describe()
    if code in _AUTH:
        pw = kafka.origin("sasl.password") if kafka.get("sasl.password") else "not set"
        return (
            f"Kafka authentication failed at {at} ({how}): {why}; check sasl.username, "
            f"the password ({env_name('sasl.password')} or the --kafka-config file; now from "
            f"{pw}) and that the user exists for sasl.mechanism on the cluster"
        )
    if code in _SASL:
        return (
            f"Kafka SASL handshake failed at {at} ({how}): {why}; check sasl.mechanism is one "
            "the broker's listener enables"
        )
    if is_tls(err):
        low = why.lower()
        if "verify" in low or "unknown ca" in low or "self-signed" in low or "issuer" in low:
            check = (
                "the broker's certificate is not trusted: check "
                f"{_setting(kafka, 'ssl.ca.location')} names the CA that signed it"
            )
            if "hostname" in low or "name mismatch" in low:
                check = (
                    "the broker's certificate does not name the host in bootstrap.servers: "
                    "connect by a name it lists"
                )
        else:
            check = (
                "the broker may require a client certificate: check "
                f"{_setting(kafka, 'ssl.certificate.location')}, "
                f"{_setting(kafka, 'ssl.key.location')} and {_setting(kafka, 'ssl.ca.location')}"
            )
        return f"TLS handshake with the Kafka broker at {at} failed ({why}); {check}"
    if code in AUTHORIZATION:
        kind = AUTHORIZATION[code]
        user = kafka.get("sasl.username") or "this client's principal"
        target = what or f"a {kind}"
        return (
            f"Kafka refused access to {target} at {at} ({code_name(err)}): ask the cluster's "
            f"admins for an ACL allowing it to {user} (or fix the name in the spec)"
        )
    if code in _UNREACHABLE:
        return unreachable(kafka, why)
    return f"Kafka error at {at} ({how}): {why}"


def unreachable(kafka: KafkaConfig, why: str, waited_s: float | None = None) -> str:
    """No broker answered: check the address, the network and the listener's protocol."""
    within = f" within {waited_s:.0f}s" if waited_s is not None else ""
    hint = ""
    if "security.protocol" in why or "ApiVersion" in why:
        hint = f"; is security.protocol ({kafka.security_protocol}) the listener's?"
    return (
        f"no Kafka broker answered at {kafka.bootstrap}{within} ({why}){hint}; check "
        "bootstrap.servers, the network and that security.protocol matches the listener "
        "(start a local broker with `driftline kafka start`)"
    )


class PersistentFailure:
    """Counts a running client's failures no retry fixes (authentication, TLS): a password
    rotated or a certificate expired under a running worker. librdkafka retries those forever;
    once they have lasted ``grace_s`` (a broker restarting can refuse briefly), :meth:`seen`
    says to stop. A pause longer than ``grace_s`` between two of them starts the count over.
    """

    def __init__(self, grace_s: float = 20.0) -> None:
        self.grace_s = grace_s
        self.since: float | None = None
        self.last: float | None = None

    def seen(self, err: KafkaError, now: float) -> bool:
        """Record ``err`` (at monotonic time ``now``); True once the worker should stop."""
        if not is_fatal_at_connect(err):
            return False
        if self.since is None or self.last is None or now - self.last > self.grace_s:
            self.since = now
        self.last = now
        return now - self.since >= self.grace_s


def code_name(err: KafkaError) -> str:
    return err.name() or str(err.code())
