"""A secured local broker for tests (``secured_kafka`` fixture in ``tests/conftest.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from driftline.localkafka import LocalKafka
from driftline.localkafka_security import (
    ADMIN_USER,
    CLIENT_USER,
    NOACL_USER,
    BrokerSecurity,
    read_properties,
)

#: the secured modes of ``driftline kafka start --security`` (plaintext is ``kafka_bootstrap``)
SECURED_MODES = ("sasl_ssl_scram", "sasl_ssl_plain", "ssl_mtls")


@dataclass(frozen=True)
class SecuredKafka:
    """One running secured broker and the client settings its launcher wrote.

    ``config`` / ``noacl_config`` / ``admin_config`` are read back from the written
    librdkafka property files (so tests use exactly what a user would), with
    ``bootstrap.servers``.
    """

    mode: str
    bootstrap: str
    data_dir: Path
    security: BrokerSecurity
    config: dict[str, str]  #: the client user (ACLs on all topics, groups, transactional ids)
    noacl_config: dict[str, str]  #: authenticated, no ACL: every topic access is denied
    admin_config: dict[str, str]  #: super user
    properties: Path  #: the client user's librdkafka file (kcat -F, --kafka-config)
    java_properties: Path  #: the client user's Java file (kafka-*.sh --command-config)
    noacl_properties: Path
    noacl_java_properties: Path


def start_secured(mode: str, port: int, data_dir: Path) -> tuple[LocalKafka, SecuredKafka]:
    """Start a broker secured with ``mode`` on ``port``; the caller stops the LocalKafka."""
    kafka = LocalKafka(port=port, data_dir=data_dir, security=mode)
    bootstrap = kafka.start(timeout_s=180)
    files = kafka.client_files
    secured = SecuredKafka(
        mode=mode,
        bootstrap=bootstrap,
        data_dir=data_dir,
        security=kafka.security,
        config=read_properties(files[CLIENT_USER].librdkafka),
        noacl_config=read_properties(files[NOACL_USER].librdkafka),
        admin_config=read_properties(files[ADMIN_USER].librdkafka),
        properties=files[CLIENT_USER].librdkafka,
        java_properties=files[CLIENT_USER].java,
        noacl_properties=files[NOACL_USER].librdkafka,
        noacl_java_properties=files[NOACL_USER].java,
    )
    return kafka, secured
