"""Kafka client settings: one :class:`KafkaConfig` for every client driftline makes.

Settings are librdkafka property names (``security.protocol``, ``sasl.username``,
``ssl.ca.location``...). They come from four places; a later one overrides an earlier one:

1. the spec's ``[kafka]`` section (TOML dotted keys: ``security.protocol = "SASL_SSL"``);
2. the ``--kafka-config FILE`` of a command: a Java-style ``.properties`` file, the syntax
   ``kafka-*.sh --command-config`` takes (``#``/``!`` comments, ``key=value``, ``key: value`` or
   ``key value``, ``\\`` escapes and line continuations);
3. environment variables ``DRIFTLINE_KAFKA_<NAME>``: the property name upper-cased with ``.``
   as ``_`` (``DRIFTLINE_KAFKA_SASL_PASSWORD`` sets ``sasl.password``);
4. for ``bootstrap.servers`` only: ``--bootstrap`` (and, below the ``DRIFTLINE_KAFKA_``
   variables, ``$KAFKA_BOOTSTRAP_SERVERS``).

Under all of them are driftline's own per-client settings (batch sizes, compression...), which
these override. A few properties carry driftline's guarantees (``group.id``,
``transactional.id``, ``isolation.level``...): they are refused wherever they come from.

Secrets (:data:`SECRET_PROPERTIES`: ``sasl.password``, ``ssl.key.password``...) come from the
file or the environment only: a spec is checked in and shared, so a secret in ``[kafka]`` is
refused. A :class:`KafkaConfig` never shows a secret in its ``repr``, ``str`` or messages.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from driftline.errors import KafkaConfigError

__all__ = [
    "ENV_PREFIX",
    "RESERVED_PROPERTIES",
    "SECRET_PROPERTIES",
    "Kafka",
    "KafkaConfig",
    "env_name",
    "flatten_section",
    "is_secret",
    "load_kafka_config",
    "parse_properties",
    "read_properties",
    "spec_section_errors",
]

ENV_PREFIX = "DRIFTLINE_KAFKA_"
#: The bootstrap variable driftline took before the DRIFTLINE_KAFKA_ ones (still honoured).
LEGACY_BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"
BOOTSTRAP = "bootstrap.servers"
REDACTED = "***"

#: Properties whose values are secrets: never in a spec, never shown.
SECRET_PROPERTIES = frozenset({
    "sasl.password",
    "ssl.key.password",
    "ssl.keystore.password",
    "ssl.key.pem",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.config",
    "sasl.oauthbearer.assertion.private.key.passphrase",
    "sasl.oauthbearer.assertion.private.key.pem",
})  # fmt: skip

#: Properties driftline sets itself for its guarantees (refused in every source), with why.
RESERVED_PROPERTIES: Mapping[str, str] = {
    "group.id": "driftline names its consumer groups after pipeline.name",
    "group.instance.id": "the worker sets it from --worker-id",
    "transactional.id": "the worker sets it from pipeline.name and --worker-id",
    "enable.auto.commit": "offsets are committed with the outputs (worker.processing_guarantee)",
    "enable.auto.offset.store": "offsets are committed with the outputs",
    "isolation.level": "the worker reads committed records only",
    "enable.idempotence": "driftline's producers are idempotent or transactional",
    "auto.offset.reset": "set worker.auto_offset_reset in the spec",
    "partition.assignment.strategy": "input and labels partitions are assigned together (range)",
}

#: Java client properties people copy from ``kafka-*.sh`` configs, with the librdkafka way.
JAVA_ONLY_HINTS: Mapping[str, str] = {
    "sasl.jaas.config": "set sasl.username and sasl.password instead",
    "ssl.truststore.location": "librdkafka reads a PEM CA file: set ssl.ca.location",
    "ssl.truststore.password": "librdkafka reads a PEM CA file: set ssl.ca.location",
    "ssl.truststore.type": "librdkafka reads a PEM CA file: set ssl.ca.location",
    "ssl.keystore.type": "set ssl.certificate.location and ssl.key.location (PEM) instead",
}

#: Keys the Python client takes as callables (never settable from text).
_PYTHON_ONLY = frozenset({
    "logger", "error_cb", "throttle_cb", "stats_cb", "oauth_cb", "on_delivery", "on_commit",
})  # fmt: skip


def is_secret(name: str) -> bool:
    """Whether property ``name`` holds a secret (its value is never shown).

    >>> is_secret("sasl.password"), is_secret("ssl.truststore.password"), is_secret("sasl.username")
    (True, True, False)
    """
    return name in SECRET_PROPERTIES or name.endswith((".password", ".secret"))


def env_name(prop: str) -> str:
    """The environment variable that sets ``prop``.

    >>> env_name("sasl.password")
    'DRIFTLINE_KAFKA_SASL_PASSWORD'
    """
    return ENV_PREFIX + prop.upper().replace(".", "_")


def prop_of_env(var: str) -> str:
    """The property a ``DRIFTLINE_KAFKA_`` variable sets (librdkafka names have no ``_``).

    >>> prop_of_env("DRIFTLINE_KAFKA_SSL_CA_LOCATION")
    'ssl.ca.location'
    """
    return var.removeprefix(ENV_PREFIX).lower().replace("_", ".")


# -- .properties files (java.util.Properties.load syntax) ----------------------------------------
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}
_WS = " \t\f"


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, logical line): natural lines joined where one ends in an odd number
    of backslashes (the next line's leading whitespace dropped); comments and blanks skipped."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        start, line = i + 1, lines[i].lstrip(_WS)
        i += 1
        if not line or line[0] in "#!":
            continue
        while (len(line) - len(line.rstrip("\\"))) % 2 == 1:
            line = line[:-1]
            if i >= len(lines):
                break
            line += lines[i].lstrip(_WS)
            i += 1
        yield start, line


def _unescape(text: str, where: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c != "\\" or i + 1 >= len(text):
            out.append(c)
            i += 1
            continue
        n = text[i + 1]
        if n == "u":
            digits = text[i + 2 : i + 6]
            if len(digits) != 4 or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise KafkaConfigError(
                    f"{where}: malformed \\uXXXX escape {text[i : i + 6]!r}; write four hex "
                    "digits, or \\\\ for a backslash"
                )
            out.append(chr(int(digits, 16)))
            i += 6
            continue
        out.append(_ESCAPES.get(n, n))
        i += 2
    return "".join(out)


def _split_key(line: str) -> tuple[str, str]:
    """The raw key and raw value of a logical line (separator ``=``, ``:`` or whitespace)."""
    i = 0
    while i < len(line):
        c = line[i]
        if c == "\\":
            i += 2
            continue
        if c in "=:" or c in _WS:
            break
        i += 1
    key, rest = line[:i], line[i:].lstrip(_WS)
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(_WS)
    return key, rest


def parse_properties(text: str, source: str = "properties") -> dict[str, tuple[str, int]]:
    """Parse Java ``.properties`` text: key -> (value, line number); a later key wins.

    Examples
    --------
    >>> p = parse_properties("# c\\nsasl.username = bob\\nsasl.password: p\\\\=w\\\\\\n  d\\n")
    >>> {k: v for k, (v, _) in p.items()}
    {'sasl.username': 'bob', 'sasl.password': 'p=wd'}
    """
    out: dict[str, tuple[str, int]] = {}
    for n, line in _logical_lines(text):
        raw_key, raw_value = _split_key(line)
        where = f"{source} line {n}"
        out[_unescape(raw_key, where)] = (_unescape(raw_value, where), n)
    return out


def read_properties(path: str | Path) -> dict[str, tuple[str, int]]:
    """:func:`parse_properties` of the file at ``path`` (UTF-8)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise KafkaConfigError(
            f"cannot read --kafka-config file {p}: {e.strerror}; pass an existing .properties file"
        ) from None
    except UnicodeDecodeError:
        raise KafkaConfigError(
            f"--kafka-config file {p} is not UTF-8 text; write non-ASCII characters as \\uXXXX"
        ) from None
    return parse_properties(text, f"--kafka-config {p}")


# -- the spec's [kafka] section -------------------------------------------------------------------
def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def flatten_section(section: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``[kafka]`` as written in TOML (dotted keys make nested tables) -> property -> text.

    >>> flatten_section({"security": {"protocol": "SSL"}, "socket.timeout.ms": 5000,
    ...                  "enable": {"ssl": {"certificate": {"verification": False}}}})
    ... # doctest: +NORMALIZE_WHITESPACE
    {'security.protocol': 'SSL', 'socket.timeout.ms': '5000',
     'enable.ssl.certificate.verification': 'false'}
    """
    out: dict[str, str] = {}
    for k, v in section.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_section(v, name + "."))
        else:
            out[name] = _text(v)
    return out


def spec_section_errors(section: Mapping[str, Any]) -> Iterator[str]:
    """Why the spec's ``[kafka]`` section is refused (secrets, reserved keys), one per key."""
    for name in flatten_section(section):
        yield from _refusal(name, f"spec key kafka.{name}", in_spec=True)


def _refusal(name: str, where: str, in_spec: bool = False) -> Iterator[str]:
    if in_spec and is_secret(name):
        yield (
            f"{where} holds a secret, and a spec is shared and checked in: remove it and set "
            f"{env_name(name)} (or put it in the --kafka-config file)"
        )
    elif name in RESERVED_PROPERTIES:
        yield f"{where}: driftline sets {name} itself ({RESERVED_PROPERTIES[name]}); remove it"
    elif name in _PYTHON_ONLY:
        yield f"{where}: {name} is a Python callback, not a setting; remove it"
    elif name in JAVA_ONLY_HINTS:
        yield f"{where}: {name} is a Java client property, not a librdkafka one: " + (
            JAVA_ONLY_HINTS[name]
        )


# -- the merged settings --------------------------------------------------------------------------
@dataclass(frozen=True)
class KafkaConfig:
    """Every client's librdkafka settings (``bootstrap.servers`` included), with their origins.

    ``str()`` is the bootstrap servers (for messages); ``repr()`` hides secrets.
    """

    properties: Mapping[str, str]
    #: property -> where its value came from (``--kafka-config f.properties line 3``, ...)
    origins: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, kafka: Kafka) -> KafkaConfig:
        """``kafka`` itself, or the settings of a bare bootstrap string."""
        if isinstance(kafka, KafkaConfig):
            return kafka
        return cls({BOOTSTRAP: kafka}, {BOOTSTRAP: "bootstrap argument"})

    @property
    def bootstrap(self) -> str:
        return self.properties.get(BOOTSTRAP, "")

    @property
    def security_protocol(self) -> str:
        return self.properties.get("security.protocol", "plaintext").upper()

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.properties.get(name, default)

    def with_bootstrap(self, bootstrap: str) -> KafkaConfig:
        """These settings on another cluster address (the demo's own broker)."""
        return KafkaConfig(
            {**self.properties, BOOTSTRAP: bootstrap},
            {**self.origins, BOOTSTRAP: "bootstrap argument"},
        )

    def client(self, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A client's config: driftline's ``base`` settings for it, then these on top."""
        return {**(base or {}), **self.properties}

    def as_environ(self) -> dict[str, str]:
        """The ``DRIFTLINE_KAFKA_*`` variables that give a child process these settings."""
        return {env_name(k): v for k, v in self.properties.items()}

    def secret_values(self) -> list[str]:
        """The secret values set (for log redaction by value)."""
        return [v for k, v in self.properties.items() if is_secret(k) and v]

    def redacted(self) -> dict[str, str]:
        """The properties with every secret value replaced by ``***``."""
        return {k: REDACTED if is_secret(k) else v for k, v in self.properties.items()}

    def describe(self) -> str:
        """``security.protocol=SASL_SSL, sasl.mechanism=SCRAM-SHA-512, sasl.username=bob``: how
        the clients connect (for error messages; no secrets)."""
        keys = ("security.protocol", "sasl.mechanism", "sasl.mechanisms", "sasl.username")
        return ", ".join(f"{k}={self.properties[k]}" for k in keys if k in self.properties) or (
            "security.protocol=PLAINTEXT (default)"
        )

    def origin(self, name: str) -> str:
        return self.origins.get(name, "default")

    def __str__(self) -> str:
        return self.bootstrap

    def __repr__(self) -> str:
        return f"KafkaConfig({self.redacted()!r})"


#: What client helpers accept: full settings, or a bare bootstrap string (a plaintext cluster).
Kafka = KafkaConfig | str


def load_kafka_config(
    *,
    spec_section: Mapping[str, Any] | None = None,
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    bootstrap: str | None = None,
    require_bootstrap: bool = True,
    check: bool = True,
) -> KafkaConfig:
    """Merge the settings of the spec, the file, the environment and ``--bootstrap``.

    Raises :class:`KafkaConfigError` (one line naming the source) for a secret in the spec, a
    reserved or unknown property, a value librdkafka refuses, a missing bootstrap address.
    ``check=False`` skips asking librdkafka (the unit tables of the merge itself).
    """
    env = os.environ if environ is None else environ
    props: dict[str, str] = {}
    origins: dict[str, str] = {}
    errors: list[str] = []

    def put(name: str, value: str, where: str, in_spec: bool = False) -> None:
        errors.extend(_refusal(name, where, in_spec))
        props[name], origins[name] = value, where

    for name, value in flatten_section(spec_section or {}).items():
        put(name, value, f"spec key kafka.{name}", in_spec=True)
    if config_file is not None:
        for name, (value, line) in read_properties(config_file).items():
            put(name, value, f"--kafka-config {config_file} line {line}")
    if env.get(LEGACY_BOOTSTRAP_ENV):
        put(BOOTSTRAP, env[LEGACY_BOOTSTRAP_ENV], f"${LEGACY_BOOTSTRAP_ENV}")
    for var in sorted(v for v in env if v.startswith(ENV_PREFIX)):
        if var == ENV_PREFIX or not re.fullmatch(r"[A-Z0-9_]+", var):
            errors.append(f"${var}: not a {ENV_PREFIX}<PROPERTY> name (upper case, _ for .)")
            continue
        put(prop_of_env(var), env[var], f"${var}")
    if bootstrap:
        put(BOOTSTRAP, bootstrap, "--bootstrap")
    if errors:
        raise KafkaConfigError(errors[0])
    if require_bootstrap and not props.get(BOOTSTRAP):
        raise KafkaConfigError(
            "no Kafka cluster given: pass --bootstrap HOST:PORT or set KAFKA_BOOTSTRAP_SERVERS "
            "(or bootstrap.servers in the --kafka-config file); `driftline kafka start` runs a "
            "local one on 127.0.0.1:9092"
        )
    config = KafkaConfig(props, origins)
    if check:
        check_properties(config)
    return config


def check_properties(config: KafkaConfig) -> None:
    """Ask librdkafka whether it takes these settings (names, values, the files they name) by
    making a client that never connects; raise :class:`KafkaConfigError` naming the source."""
    from confluent_kafka import KafkaException, Producer

    quiet = logging.getLogger("driftline.kafka.check")
    quiet.propagate, quiet.disabled = False, True
    conf = {k: v for k, v in config.properties.items() if k != BOOTSTRAP}
    try:
        Producer({**conf, "logger": quiet})
    except KafkaException as e:
        raise KafkaConfigError(_explain_refusal(e.args[0].str(), config)) from None


def _explain_refusal(message: str, config: KafkaConfig) -> str:
    m = re.search(r'configuration property:? "([^"]+)"', message)
    if m:
        name = m.group(1)
        where = config.origin(name)
        if "No such configuration property" in message:
            hint = JAVA_ONLY_HINTS.get(name) or (
                "see librdkafka's CONFIGURATION.md for the names it takes"
            )
            return f"{where}: {name} is not a librdkafka property; {hint}"
        value = REDACTED if is_secret(name) else repr(config.properties.get(name))
        return f"{where}: librdkafka refuses {name} = {value}: {_clean(message, config)}"
    text = _clean(message.removeprefix("Failed to create producer: "), config)
    hint = ""
    if "sasl.username and sasl.password must be set" in text:
        hint = (
            f"; put sasl.username in the --kafka-config file or the spec, and the password in "
            f"{env_name('sasl.password')} or the file"
        )
    elif re.search(r"ssl\.\w+(\.\w+)* failed", text):
        name = re.search(r"(ssl\.[\w.]+) failed", text).group(1)  # type: ignore[union-attr]
        hint = (
            f" ({name} = {config.get(name)!r} from {config.origin(name)}: check the file "
            "exists, is PEM, and its key password)"
        )
    return f"Kafka client settings refused by librdkafka: {text}{hint}"


def _clean(text: str, config: KafkaConfig) -> str:
    for secret in config.secret_values():
        text = text.replace(secret, REDACTED)
    return text


# -- the faust host (aiokafka) ---------------------------------------------------------------------
#: SASL mechanisms the faust host's aiokafka client can use from these settings.
AIOKAFKA_SASL = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def aiokafka_auth(config: KafkaConfig) -> dict[str, Any]:
    """The same connection for aiokafka: ``security_protocol``, ``ssl_context``,
    ``sasl_mechanism``, ``sasl_plain_username``/``password`` (what faust's credentials carry).
    """
    proto = config.security_protocol
    if proto not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
        raise KafkaConfigError(f"security.protocol: unknown value {proto!r}")
    out: dict[str, Any] = {"security_protocol": proto}
    if proto in ("SSL", "SASL_SSL"):
        out["ssl_context"] = ssl_context(config)
    if proto.startswith("SASL_"):
        mech = (config.get("sasl.mechanism") or config.get("sasl.mechanisms") or "GSSAPI").upper()
        if mech not in AIOKAFKA_SASL:
            raise KafkaConfigError(
                f"{config.origin('sasl.mechanism')}: sasl.mechanism {mech} is not supported by "
                f"the worker's faust host; use one of {', '.join(AIOKAFKA_SASL)}"
            )
        out.update(
            sasl_mechanism=mech,
            sasl_plain_username=config.get("sasl.username"),
            sasl_plain_password=config.get("sasl.password"),
        )
    return out


def ssl_context(config: KafkaConfig) -> ssl.SSLContext:
    """A client TLS context from librdkafka's ``ssl.*`` settings: CA (``ssl.ca.location`` file
    or directory, or ``ssl.ca.pem``; else the system's), client certificate and key (files or
    PEM text, ``ssl.key.password``), hostname checking (``ssl.endpoint.identification.algorithm``,
    ``enable.ssl.certificate.verification``)."""
    ca = config.get("ssl.ca.location")
    if config.get("ssl.keystore.location"):
        raise KafkaConfigError(
            f"{config.origin('ssl.keystore.location')}: the worker's faust host cannot read a "
            "PKCS#12 keystore; give the client certificate and key as PEM files "
            "(ssl.certificate.location, ssl.key.location)"
        )
    try:
        if ca and ca != "probe" and Path(ca).is_dir():
            ctx = ssl.create_default_context(capath=ca)
        elif ca and ca != "probe":
            ctx = ssl.create_default_context(cafile=ca)
        else:
            ctx = ssl.create_default_context(cadata=config.get("ssl.ca.pem"))
        cert, key = config.get("ssl.certificate.location"), config.get("ssl.key.location")
        cert_pem, key_pem = config.get("ssl.certificate.pem"), config.get("ssl.key.pem")
        if cert_pem or key_pem:
            with tempfile.TemporaryDirectory(prefix="driftline-tls-") as d:
                if cert_pem:
                    cert = str(Path(d) / "cert.pem")
                    Path(cert).write_text(cert_pem)
                if key_pem:
                    key = str(Path(d) / "key.pem")
                    Path(key).touch(mode=0o600)
                    Path(key).write_text(key_pem)
                if cert:
                    ctx.load_cert_chain(cert, key, config.get("ssl.key.password"))
        elif cert:
            ctx.load_cert_chain(cert, key, config.get("ssl.key.password"))
    except (OSError, ssl.SSLError) as e:
        raise KafkaConfigError(
            f"cannot load the TLS files of the Kafka settings ({_clean(str(e), config)}): check "
            "ssl.ca.location, ssl.certificate.location, ssl.key.location and ssl.key.password"
        ) from None
    if config.get("ssl.endpoint.identification.algorithm", "https").lower() == "none":
        ctx.check_hostname = False
    if config.get("enable.ssl.certificate.verification", "true").lower() == "false":
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
