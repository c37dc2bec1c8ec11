"""Secured listeners for the local Kafka launcher: throwaway CA, certificates, users, ACLs.

``driftline kafka start --security MODE`` (``LocalKafka(security=MODE)``) runs the broker the way a
team's real cluster runs: TLS on the client listener, authenticated users, KRaft's
``StandardAuthorizer`` with ACLs. Everything lives in ``<data dir>/security`` (created once, reused
on restarts; the mode is fixed when the storage is formatted):

=================  ===========  ==============  =========================================
mode               protocol     mechanism       users
=================  ===========  ==============  =========================================
``plaintext``      PLAINTEXT    --              none, no authorizer (the default)
``sasl_ssl_scram`` SASL_SSL     SCRAM-SHA-512   created at format time (``--add-scram``)
``sasl_ssl_plain`` SASL_SSL     PLAIN           declared in the listener's JAAS config
``ssl_mtls``       SSL          client cert     the certificate's CN (``ssl.client.auth``)
=================  ===========  ==============  =========================================

Users (principals ``User:<name>``): ``admin`` (super user; the launcher's own admin client),
``driftline`` (ACLs on every topic, group and transactional id: what a pipeline needs) and
``driftline-noacl`` (authenticates, has no ACLs: every topic request is refused). The broker
talks to its controller over a loopback ``SASL_PLAINTEXT``/PLAIN listener as ``broker``.

For each client user two files are written to ``<data dir>/clients``:
``<user>.librdkafka.properties`` (librdkafka names: ``kcat -F``, ``driftline --kafka-config``) and
``<user>.java.properties``
(Kafka's Java tools: ``--command-config``, ``--consumer.config``). Passwords are random per data
dir, kept in files readable by the owner only, and never printed or logged.
Certificates are made with the ``openssl`` command line (as on any machine with Java and Kafka).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from driftline.errors import KafkaLauncherError

__all__ = [
    "ADMIN_USER",
    "CLIENT_USER",
    "MODES",
    "NOACL_USER",
    "BrokerSecurity",
    "ClientFiles",
    "make_ca",
    "read_properties",
]

MODES = ("plaintext", "sasl_ssl_scram", "sasl_ssl_plain", "ssl_mtls")
ADMIN_USER = "admin"
CLIENT_USER = "driftline"
NOACL_USER = "driftline-noacl"
BROKER_USER = "broker"  # the broker's own principal on the controller listener (and mTLS)
CLIENT_USERS = (ADMIN_USER, CLIENT_USER, NOACL_USER)
CERT_DAYS = 825
# EC P-256 keys: as widely supported as RSA 2048 (Java, OpenSSL, librdkafka), ~20x faster to make.
_NEW_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")

_PROTOCOL = {"sasl_ssl_scram": "SASL_SSL", "sasl_ssl_plain": "SASL_SSL", "ssl_mtls": "SSL"}
_MECHANISM = {"sasl_ssl_scram": "SCRAM-SHA-512", "sasl_ssl_plain": "PLAIN"}
_LOGIN_MODULE = {
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
}
_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


# --------------------------------------------------------------------------- files


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only (it holds secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def _properties_text(props: dict[str, str], header: str) -> str:
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"{key}={value}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def read_properties(path: Path) -> dict[str, str]:
    """``key=value`` lines of a properties file this module wrote (no escapes, no continuations)."""
    props: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")):
            key, _, value = line.partition("=")
            props[key.strip()] = value.strip()
    return props


# --------------------------------------------------------------------------- certificates


def _openssl(*args: str, env: dict[str, str] | None = None) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise KafkaLauncherError(
            "`openssl` not found on PATH; it makes the secured broker's certificates "
            "(Debian/Ubuntu: apt-get install -y openssl)."
        )
    proc = subprocess.run(
        [openssl, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if proc.returncode != 0:
        raise KafkaLauncherError(
            f"openssl {args[0]} failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}"
        )


def make_ca(directory: Path, name: str = "ca", cn: str = "driftline local CA") -> Path:
    """A self-signed CA ``<name>.pem`` (+ ``<name>.key``) in ``directory``; returns the cert."""
    directory.mkdir(parents=True, exist_ok=True)
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    _openssl(
        "req", "-x509", *_NEW_KEY, "-nodes", "-sha256",
        "-keyout", str(key), "-out", str(cert), "-days", str(CERT_DAYS), "-subj", f"/CN={cn}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    os.chmod(key, 0o600)
    return cert


def issue_cert(ca_cert: Path, directory: Path, cn: str, *, server: bool) -> tuple[Path, Path]:
    """Key and certificate for ``CN=<cn>`` signed by ``ca_cert`` (its key next to it).

    Server certificates name 127.0.0.1 and localhost (hostname verification stays on).
    """
    key, cert, csr = directory / f"{cn}.key", directory / f"{cn}.pem", directory / f"{cn}.csr"
    ext = directory / f"{cn}.ext"
    usage = "serverAuth,clientAuth" if server else "clientAuth"
    ext_lines = ["basicConstraints=critical,CA:FALSE", f"extendedKeyUsage={usage}"]
    if server:
        ext_lines.append("subjectAltName=IP:127.0.0.1,DNS:localhost")
    ext.write_text("\n".join(ext_lines) + "\n")
    _openssl("req", *_NEW_KEY, "-nodes", "-keyout", str(key), "-out", str(csr),
             "-subj", f"/CN={cn}")  # fmt: skip
    os.chmod(key, 0o600)
    _openssl(
        "x509", "-req", "-sha256", "-in", str(csr), "-CA", str(ca_cert),
        "-CAkey", str(ca_cert.with_suffix(".key")), "-CAcreateserial", "-out", str(cert),
        "-days", str(CERT_DAYS), "-extfile", str(ext),
    )  # fmt: skip
    csr.unlink()
    ext.unlink()
    return key, cert


def _pkcs12(key: Path, cert: Path, ca_cert: Path, password: str) -> Path:
    """A PKCS#12 keystore next to ``cert`` for Java (PEM keystores need encrypted keys)."""
    out = cert.with_suffix(".p12")
    _openssl(
        "pkcs12", "-export", "-in", str(cert), "-inkey", str(key), "-certfile", str(ca_cert),
        "-name", cert.stem, "-out", str(out), "-passout", "env:DRIFTLINE_P12_PASSWORD",
        env={"DRIFTLINE_P12_PASSWORD": password},
    )  # fmt: skip
    os.chmod(out, 0o600)
    return out


# --------------------------------------------------------------------------- security


@dataclass(frozen=True)
class ClientFiles:
    """Where one user's client settings were written."""

    user: str
    librdkafka: Path  #: librdkafka property names (kcat -F, driftline --kafka-config)
    java: Path  #: Java client property names (kafka-*.sh --command-config / --consumer.config)


class BrokerSecurity:
    """The security setup of one data dir: ``mode`` and the files under ``<data_dir>/security``.

    Parameters
    ----------
    data_dir : Path
        The broker's data directory, or a local cluster's (its nodes in ``node-*``, which
        share one CA, one set of users and one ``clients`` directory).
    mode : str or None
        One of ``MODES``; None takes the mode the data dir was formatted with (else plaintext).
    """

    def __init__(self, data_dir: Path, mode: str | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.dir = self.data_dir / "security"
        self.clients_dir = self.data_dir / "clients"
        recorded = self.recorded_mode()
        if mode is None:
            mode = recorded or "plaintext"
        if mode not in MODES:
            raise KafkaLauncherError(
                f"unknown security mode {mode!r}; choose one of {', '.join(MODES)}"
            )
        self.mode = mode

    # ----------------------------------------------------------------- mode

    @property
    def secured(self) -> bool:
        return self.mode != "plaintext"

    @property
    def protocol(self) -> str:
        """``security.protocol`` of the client listener."""
        return _PROTOCOL.get(self.mode, "PLAINTEXT")

    @property
    def mechanism(self) -> str | None:
        """``sasl.mechanism`` of the client listener (None without SASL)."""
        return _MECHANISM.get(self.mode)

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.pem"

    def recorded_mode(self) -> str | None:
        """The mode this data dir was formatted with (None if it was never formatted)."""
        try:
            return (self.dir / "mode").read_text().strip()
        except FileNotFoundError:
            storages = [self.data_dir, *self.data_dir.glob("node-*")]
            formatted = any((d / "log" / "meta.properties").exists() for d in storages)
            return "plaintext" if formatted else None

    def describe(self) -> str:
        """One line for the terminal: protocol, mechanism, authorizer (never a secret)."""
        if not self.secured:
            return "plaintext (no TLS, no authentication, no authorizer)"
        how = self.mechanism or "client certificates (mTLS)"
        return f"{self.mode}: {self.protocol} with {how}; StandardAuthorizer on"

    # ----------------------------------------------------------------- secrets

    def _secrets(self) -> dict[str, str]:
        try:
            return dict(json.loads((self.dir / "secrets.json").read_text()))
        except FileNotFoundError as exc:
            raise KafkaLauncherError(
                f"{self.dir / 'secrets.json'} is missing; the secured data dir {self.data_dir} "
                "is incomplete: delete it and start again"
            ) from exc

    def password(self, user: str) -> str:
        """The SASL password of ``user`` (for tests and clients; never print it)."""
        return self._secrets()[user]

    def _keystore_password(self) -> str:
        return self._secrets()["keystore"]

    # ----------------------------------------------------------------- prepare

    def prepare(self) -> None:
        """Make passwords, CA and certificates once; refuse a data dir formatted otherwise."""
        recorded = self.recorded_mode()
        if recorded is not None and recorded != self.mode:
            raise KafkaLauncherError(
                f"the data dir {self.data_dir} was formatted with --security {recorded}, not "
                f"{self.mode}; use another --data-dir (or delete this one) to change it"
            )
        if not self.secured:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        if not (self.dir / "secrets.json").exists():
            passwords = {user: secrets.token_hex(16) for user in (*CLIENT_USERS, BROKER_USER)}
            passwords["keystore"] = secrets.token_hex(16)
            _write_private(self.dir / "secrets.json", json.dumps(passwords, indent=2) + "\n")
        if not (self.dir / f"{NOACL_USER}.p12").exists():
            self._make_certificates()
        if recorded != self.mode:  # the nodes of a cluster read it while they start in parallel:
            # written once, and atomically (a reader never sees it empty)
            tmp = self.dir / f".mode.{os.getpid()}.{threading.get_ident()}"
            tmp.write_text(self.mode + "\n")
            os.replace(tmp, self.dir / "mode")

    def _make_certificates(self) -> None:
        ca = make_ca(self.dir)
        for cn, server in ((BROKER_USER, True), *((user, False) for user in CLIENT_USERS)):
            key, cert = issue_cert(ca, self.dir, cn, server=server)
            _pkcs12(key, cert, ca, self._keystore_password())

    # ----------------------------------------------------------------- broker side

    def format_args(self) -> list[str]:
        """Extra ``kafka-storage format`` arguments: the SCRAM users (scram mode only)."""
        if self.mode != "sasl_ssl_scram":
            return []
        args: list[str] = []
        for user in CLIENT_USERS:
            args += ["--add-scram", f"SCRAM-SHA-512=[name={user},password={self.password(user)}]"]
        return args

    def server_properties(self, text: str) -> str:
        """``server.properties`` text with the client listener secured (unchanged if plaintext).

        The ``PLAINTEXT`` listener becomes ``SASL_SSL`` / ``SSL``, the ``CONTROLLER`` listener
        ``SASL_PLAINTEXT`` with PLAIN (KRaft cannot use SCRAM there), and the security block
        (TLS stores, SASL, authorizer, super users) is appended.
        """
        if not self.secured:
            return text
        proto = self.protocol
        text = re.sub(
            r"^((?:advertised\.)?listeners=.*)$",
            lambda m: m.group(1).replace("PLAINTEXT://", f"{proto}://"),
            text,
            flags=re.M,
        )
        text = re.sub(
            r"^listener\.security\.protocol\.map=.*$",
            f"listener.security.protocol.map={proto}:{proto},CONTROLLER:SASL_PLAINTEXT",
            text,
            flags=re.M,
        )
        text = re.sub(
            r"^inter\.broker\.listener\.name=.*$",
            f"inter.broker.listener.name={proto}",
            text,
            flags=re.M,
        )
        return text + _properties_text(self._server_block(), "security (driftline --security)")

    def _server_block(self) -> dict[str, str]:
        ks = self._keystore_password()
        broker_pw = self.password(BROKER_USER)
        plain = _LOGIN_MODULE["PLAIN"]
        props = {
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(self.dir / f"{BROKER_USER}.p12"),
            "ssl.keystore.password": ks,
            "ssl.key.password": ks,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_file),
            "ssl.principal.mapping.rules": "RULE:^CN=([^,]+)$/$1/,DEFAULT",
            "authorizer.class.name": _AUTHORIZER,
            "super.users": f"User:{ADMIN_USER};User:{BROKER_USER}",
            "allow.everyone.if.no.acl.found": "false",
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": (
                f'{plain} required username="{BROKER_USER}" password="{broker_pw}" '
                f'user_{BROKER_USER}="{broker_pw}";'
            ),
        }
        listener = self.protocol.lower()
        if self.mode == "ssl_mtls":
            props["ssl.client.auth"] = "required"
        elif self.mode == "sasl_ssl_scram":
            mech = "SCRAM-SHA-512"
            props["sasl.enabled.mechanisms"] = mech
            props["sasl.mechanism.inter.broker.protocol"] = mech
            props[f"listener.name.{listener}.sasl.enabled.mechanisms"] = mech
            props[f"listener.name.{listener}.scram-sha-512.sasl.jaas.config"] = (
                f'{_LOGIN_MODULE[mech]} required username="{ADMIN_USER}" '
                f'password="{self.password(ADMIN_USER)}";'
            )
        else:  # sasl_ssl_plain: the users are declared in the JAAS config
            users = " ".join(f'user_{u}="{self.password(u)}"' for u in CLIENT_USERS)
            props["sasl.enabled.mechanisms"] = "PLAIN"
            props["sasl.mechanism.inter.broker.protocol"] = "PLAIN"
            props[f"listener.name.{listener}.sasl.enabled.mechanisms"] = "PLAIN"
            props[f"listener.name.{listener}.plain.sasl.jaas.config"] = (
                f'{plain} required username="{ADMIN_USER}" '
                f'password="{self.password(ADMIN_USER)}" {users};'
            )
        return props

    # ----------------------------------------------------------------- client side

    def client_config(self, user: str = CLIENT_USER) -> dict[str, str]:
        """librdkafka settings for ``user`` (without ``bootstrap.servers``); {} if plaintext."""
        if not self.secured:
            return {}
        conf = {"security.protocol": self.protocol}
        if self.mechanism is not None:
            conf |= {
                "sasl.mechanism": self.mechanism,
                "sasl.username": user,
                "sasl.password": self.password(user),
            }
        conf["ssl.ca.location"] = str(self.ca_file)
        if self.mode == "ssl_mtls":
            conf["ssl.certificate.location"] = str(self.dir / f"{user}.pem")
            conf["ssl.key.location"] = str(self.dir / f"{user}.key")
        return conf

    def java_client_config(self, user: str = CLIENT_USER) -> dict[str, str]:
        """Kafka Java client settings for ``user`` (without ``bootstrap.servers``)."""
        if not self.secured:
            return {}
        conf = {"security.protocol": self.protocol}
        if self.mechanism is not None:
            conf["sasl.mechanism"] = self.mechanism
            conf["sasl.jaas.config"] = (
                f'{_LOGIN_MODULE[self.mechanism]} required username="{user}" '
                f'password="{self.password(user)}";'
            )
        conf["ssl.truststore.type"] = "PEM"
        conf["ssl.truststore.location"] = str(self.ca_file)
        if self.mode == "ssl_mtls":
            ks = self._keystore_password()
            conf |= {
                "ssl.keystore.type": "PKCS12",
                "ssl.keystore.location": str(self.dir / f"{user}.p12"),
                "ssl.keystore.password": ks,
                "ssl.key.password": ks,
            }
        return conf

    def client_files(self) -> dict[str, ClientFiles]:
        """Paths of each client user's property files ({} if plaintext)."""
        if not self.secured:
            return {}
        return {
            user: ClientFiles(
                user,
                self.clients_dir / f"{user}.librdkafka.properties",
                self.clients_dir / f"{user}.java.properties",
            )
            for user in CLIENT_USERS
        }

    def write_client_files(self, bootstrap: str) -> dict[str, ClientFiles]:
        """Write every client user's librdkafka and Java property files (owner-only)."""
        files = self.client_files()
        for user, paths in files.items():
            role = {
                ADMIN_USER: "super user",
                CLIENT_USER: "client user with ACLs on all topics, groups, transactional ids",
                NOACL_USER: "authenticated user without any ACL (every topic access is denied)",
            }[user]
            head = f"local Kafka {self.mode}, user {user} ({role})"
            base = {"bootstrap.servers": bootstrap}
            _write_private(
                paths.librdkafka,
                _properties_text(
                    base | self.client_config(user),
                    f"{head}\nlibrdkafka properties: kcat -F FILE, driftline --kafka-config FILE",
                ),
            )
            _write_private(
                paths.java,
                _properties_text(
                    base | self.java_client_config(user),
                    f"{head}\nKafka Java clients: kafka-*.sh --command-config / "
                    "--consumer.config / --producer.config FILE",
                ),
            )
        return files

    def grant_acls(self, admin: Any, timeout_s: float = 30.0) -> None:
        """Give ``driftline`` everything a pipeline needs (idempotent): every topic, group and
        transactional id, and idempotent writes / describe on the cluster."""
        if not self.secured:
            return
        from confluent_kafka.admin import (
            AclBinding,
            AclOperation,
            AclPermissionType,
            ResourcePatternType,
            ResourceType,
        )

        principal, literal = f"User:{CLIENT_USER}", ResourcePatternType.LITERAL
        grants = [
            (ResourceType.TOPIC, "*", AclOperation.ALL),
            (ResourceType.GROUP, "*", AclOperation.ALL),
            (ResourceType.TRANSACTIONAL_ID, "*", AclOperation.ALL),
            (ResourceType.BROKER, "kafka-cluster", AclOperation.IDEMPOTENT_WRITE),
            (ResourceType.BROKER, "kafka-cluster", AclOperation.DESCRIBE),
            (ResourceType.BROKER, "kafka-cluster", AclOperation.DESCRIBE_CONFIGS),
        ]
        bindings = [
            AclBinding(rtype, name, literal, principal, "*", op, AclPermissionType.ALLOW)
            for rtype, name, op in grants
        ]
        for future in admin.create_acls(bindings, request_timeout=timeout_s).values():
            future.result(timeout=timeout_s)
