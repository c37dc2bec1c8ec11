"""Kafka client settings: the .properties reader, the environment mapping, the precedence of
the four sources, refusals (secrets in the spec, reserved and unknown properties) and the
aiokafka (faust host) mapping with real TLS files."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from driftline.errors import KafkaConfigError
from driftline.kafka_config import (
    KafkaConfig,
    aiokafka_auth,
    env_name,
    flatten_section,
    is_secret,
    load_kafka_config,
    parse_properties,
    prop_of_env,
    read_properties,
    ssl_context,
)

PASSWORD = "s3cr3t-Pa55word"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a=1", {"a": "1"}),
        ("a = 1", {"a": "1"}),
        ("a:1", {"a": "1"}),
        ("a : 1", {"a": "1"}),
        ("a 1", {"a": "1"}),  # whitespace separates too
        ("a\t=\t1", {"a": "1"}),
        ("   a=1", {"a": "1"}),  # leading whitespace skipped
        ("a=1  ", {"a": "1  "}),  # trailing whitespace kept (as Java does)
        ("a=", {"a": ""}),
        ("a", {"a": ""}),
        ("a=b=c", {"a": "b=c"}),  # only the first separator splits
        ("a==b", {"a": "=b"}),
        ("a:=b", {"a": "=b"}),
        ("# comment\na=1", {"a": "1"}),
        ("! comment\na=1", {"a": "1"}),
        ("  # indented comment\na=1", {"a": "1"}),
        ("a=1 # not a comment", {"a": "1 # not a comment"}),
        ("\n\n  \na=1\n\n", {"a": "1"}),
        ("a=1\r\nb=2\r\n", {"a": "1", "b": "2"}),
        ("a=1\nb=2\na=3", {"a": "3", "b": "2"}),  # a later key wins
        ("a=x\\\n    y", {"a": "xy"}),  # continuation: next line's indent dropped
        ("a=x \\\n  y \\\n  z", {"a": "x y z"}),
        ("a=x\\\\\nb=2", {"a": "x\\", "b": "2"}),  # even backslashes: no continuation
        ("a=x\\\\\\\n y", {"a": "x\\y"}),  # odd: escaped backslash, then continuation
        ("# c \\\na=1", {"a": "1"}),  # a comment line never continues
        ("a=\\t\\n\\r\\f", {"a": "\t\n\r\f"}),
        ("a=\\u0041\\u00e9", {"a": "Aé"}),
        ("a=p\\=w\\:d\\#", {"a": "p=w:d#"}),
        ("a=\\q", {"a": "q"}),  # an unknown escape is the character
        ("a\\=b=c", {"a=b": "c"}),  # escaped separator in the key
        ("a\\ b = c", {"a b": "c"}),
        ("a=ünï", {"a": "ünï"}),
        ("a=x\\", {"a": "x"}),  # continuation at end of file
        (
            'sasl.jaas.config=org.apache.ScramLoginModule required \\\n  username="u";',
            {"sasl.jaas.config": 'org.apache.ScramLoginModule required username="u";'},
        ),
    ],
)
def test_properties_syntax(text: str, expected: dict[str, str]) -> None:
    assert {k: v for k, (v, _) in parse_properties(text).items()} == expected


def test_properties_line_numbers_name_the_first_line_of_a_logical_line() -> None:
    got = parse_properties("# c\na=1\\\n 2\n\nb=3\n")
    assert got == {"a": ("12", 2), "b": ("3", 5)}


@pytest.mark.parametrize("bad", ["a=\\u00", "a=\\uZZZZ", "a=\\u12 x"])
def test_properties_malformed_unicode_escape(bad: str) -> None:
    with pytest.raises(KafkaConfigError, match=r"f line 1: malformed \\uXXXX escape"):
        parse_properties(bad, "f")


def test_read_properties_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(KafkaConfigError) as e:
        read_properties(tmp_path / "nope.properties")
    assert str(e.value) == (
        f"cannot read --kafka-config file {tmp_path / 'nope.properties'}: No such file or "
        "directory; pass an existing .properties file"
    )


@pytest.mark.parametrize(
    ("prop", "var"),
    [
        ("sasl.password", "DRIFTLINE_KAFKA_SASL_PASSWORD"),
        ("bootstrap.servers", "DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS"),
        ("ssl.ca.location", "DRIFTLINE_KAFKA_SSL_CA_LOCATION"),
        ("enable.ssl.certificate.verification",
         "DRIFTLINE_KAFKA_ENABLE_SSL_CERTIFICATE_VERIFICATION"),
        ("sasl.mechanism", "DRIFTLINE_KAFKA_SASL_MECHANISM"),
    ],
)
def test_environment_names_map_both_ways(prop: str, var: str) -> None:
    assert env_name(prop) == var
    assert prop_of_env(var) == prop


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("sasl.password", True),
        ("ssl.key.password", True),
        ("ssl.keystore.password", True),
        ("ssl.key.pem", True),
        ("sasl.oauthbearer.client.secret", True),
        ("ssl.truststore.password", True),
        ("sasl.username", False),
        ("ssl.key.location", False),
        ("ssl.ca.location", False),
    ],
)
def test_secret_properties(name: str, secret: bool) -> None:
    assert is_secret(name) is secret


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "client.properties"
    p.write_text(text)
    return p


# (spec [kafka], file text, environment, --bootstrap) -> merged properties and origins
PRECEDENCE = [
    pytest.param(
        {"bootstrap": {"servers": "spec:9092"}, "client": {"id": "from-spec"}},
        None, {}, None,
        {"bootstrap.servers": "spec:9092", "client.id": "from-spec"},
        {"bootstrap.servers": "spec key kafka.bootstrap.servers"},
        id="spec-only",
    ),
    pytest.param(
        {"client.id": "from-spec", "socket.timeout.ms": 5000},
        "client.id=from-file\nbootstrap.servers=file:9092\n", {}, None,
        {"client.id": "from-file", "socket.timeout.ms": "5000", "bootstrap.servers": "file:9092"},
        {"client.id": "line 1", "socket.timeout.ms": "spec key kafka.socket.timeout.ms"},
        id="file-over-spec",
    ),
    pytest.param(
        {"client.id": "from-spec"},
        "client.id=from-file\nbootstrap.servers=file:9092\n",
        {"DRIFTLINE_KAFKA_CLIENT_ID": "from-env"}, None,
        {"client.id": "from-env", "bootstrap.servers": "file:9092"},
        {"client.id": "$DRIFTLINE_KAFKA_CLIENT_ID"},
        id="env-over-file",
    ),
    pytest.param(
        None, "bootstrap.servers=file:9092\n", {"KAFKA_BOOTSTRAP_SERVERS": "legacy:9092"}, None,
        {"bootstrap.servers": "legacy:9092"},
        {"bootstrap.servers": "$KAFKA_BOOTSTRAP_SERVERS"},
        id="legacy-env-over-file",
    ),
    pytest.param(
        None, None,
        {"KAFKA_BOOTSTRAP_SERVERS": "legacy:9092",
         "DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS": "new:9092"}, None,
        {"bootstrap.servers": "new:9092"},
        {"bootstrap.servers": "$DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS"},
        id="driftline-env-over-legacy",
    ),
    pytest.param(
        {"bootstrap.servers": "spec:9092"}, "bootstrap.servers=file:9092\n",
        {"DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS": "env:9092"}, "flag:9092",
        {"bootstrap.servers": "flag:9092"},
        {"bootstrap.servers": "--bootstrap"},
        id="flag-over-all",
    ),
    pytest.param(
        {"security.protocol": "SASL_SSL", "sasl": {"mechanism": "SCRAM-SHA-512"}},
        "sasl.username=bob\n", {"DRIFTLINE_KAFKA_SASL_PASSWORD": PASSWORD}, "b:9093",
        {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
         "sasl.username": "bob", "sasl.password": PASSWORD, "bootstrap.servers": "b:9093"},
        {"sasl.password": "$DRIFTLINE_KAFKA_SASL_PASSWORD", "sasl.username": "line 1"},
        id="secured",
    ),
    pytest.param(
        None, None, {"UNRELATED": "x", "DRIFTLINE_TRACEBACK": "1"}, "b:1",
        {"bootstrap.servers": "b:1"}, {}, id="other-variables-ignored",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("section", "file_text", "env", "flag", "expected", "origins"), PRECEDENCE
)
def test_precedence(
    tmp_path: Path,
    section: dict | None,
    file_text: str | None,
    env: dict[str, str],
    flag: str | None,
    expected: dict[str, str],
    origins: dict[str, str],
) -> None:
    path = _write(tmp_path, file_text) if file_text is not None else None
    got = load_kafka_config(spec_section=section, config_file=path, environ=env, bootstrap=flag)
    assert dict(got.properties) == expected
    for name, origin in origins.items():
        assert got.origin(name).endswith(origin), (name, got.origin(name))
    assert str(got) == expected["bootstrap.servers"]


# (spec [kafka], file text, environment) -> the one error line
REFUSED = [
    pytest.param(
        {"sasl": {"password": PASSWORD}}, None, {},
        "spec key kafka.sasl.password holds a secret, and a spec is shared and checked in: "
        "remove it and set DRIFTLINE_KAFKA_SASL_PASSWORD (or put it in the --kafka-config file)",
        id="secret-in-spec",
    ),
    pytest.param(
        {"ssl.key.password": PASSWORD}, None, {},
        "spec key kafka.ssl.key.password holds a secret, and a spec is shared and checked in: "
        "remove it and set DRIFTLINE_KAFKA_SSL_KEY_PASSWORD (or put it in the --kafka-config "
        "file)",
        id="key-password-in-spec",
    ),
    pytest.param(
        {"group.id": "mine"}, None, {},
        "spec key kafka.group.id: driftline sets group.id itself (driftline names its consumer "
        "groups after pipeline.name); remove it",
        id="reserved-in-spec",
    ),
    pytest.param(
        None, "# x\nisolation.level=read_uncommitted\n", {},
        "--kafka-config {file} line 2: driftline sets isolation.level itself (the worker reads "
        "committed records only); remove it",
        id="reserved-in-file",
    ),
    pytest.param(
        None, None, {"DRIFTLINE_KAFKA_TRANSACTIONAL_ID": "t"},
        "$DRIFTLINE_KAFKA_TRANSACTIONAL_ID: driftline sets transactional.id itself (the worker "
        "sets it from pipeline.name and --worker-id); remove it",
        id="reserved-in-env",
    ),
    pytest.param(
        None, "bootstrap.servers=b:1\nsecurity.protocoll=SSL\n", {},
        "--kafka-config {file} line 2: security.protocoll is not a librdkafka property; see "
        "librdkafka's CONFIGURATION.md for the names it takes",
        id="unknown-in-file",
    ),
    pytest.param(
        {"fetch.wait.max.mss": 5}, None, {},
        "spec key kafka.fetch.wait.max.mss: fetch.wait.max.mss is not a librdkafka property; "
        "see librdkafka's CONFIGURATION.md for the names it takes",
        id="unknown-in-spec",
    ),
    pytest.param(
        None, None, {"DRIFTLINE_KAFKA_SASL_PASWORD": PASSWORD},
        "$DRIFTLINE_KAFKA_SASL_PASWORD: sasl.pasword is not a librdkafka property; see "
        "librdkafka's CONFIGURATION.md for the names it takes",
        id="unknown-in-env",
    ),
    pytest.param(
        None, "ssl.truststore.location=/etc/kafka/truststore.jks\n", {},
        "--kafka-config {file} line 1: ssl.truststore.location is a Java client property, not "
        "a librdkafka one: librdkafka reads a PEM CA file: set ssl.ca.location",
        id="java-only",
    ),
    pytest.param(
        None, "sasl.jaas.config=org.apache...ScramLoginModule required;\n", {},
        "--kafka-config {file} line 1: sasl.jaas.config is a Java client property, not a "
        "librdkafka one: set sasl.username and sasl.password instead",
        id="jaas",
    ),
    pytest.param(
        {"security.protocol": "SASL_SSLX"}, None, {},
        "spec key kafka.security.protocol: librdkafka refuses security.protocol = 'SASL_SSLX': "
        'Invalid value "SASL_SSLX" for configuration property "security.protocol"',
        id="bad-value",
    ),
    pytest.param(
        {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
         "sasl.username": "bob"}, None, {},
        "Kafka client settings refused by librdkafka: sasl.username and sasl.password must be "
        "set; put sasl.username in the --kafka-config file or the spec, and the password in "
        "DRIFTLINE_KAFKA_SASL_PASSWORD or the file",
        id="no-password",
    ),
    pytest.param(
        None, None, {"DRIFTLINE_KAFKA_": "x"},
        "$DRIFTLINE_KAFKA_: not a DRIFTLINE_KAFKA_<PROPERTY> name (upper case, _ for .)",
        id="empty-env-name",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("section", "file_text", "env", "message"), REFUSED)
def test_refusals_are_one_line_naming_the_source(
    tmp_path: Path, section: dict | None, file_text: str | None, env: dict, message: str
) -> None:
    path = _write(tmp_path, file_text) if file_text is not None else None
    with pytest.raises(KafkaConfigError) as e:
        load_kafka_config(spec_section=section, config_file=path, environ=env, bootstrap="b:1")
    assert str(e.value) == message.format(file=path)
    assert PASSWORD not in str(e.value) and "\n" not in str(e.value)


def test_a_bootstrap_address_is_required_unless_asked_otherwise() -> None:
    with pytest.raises(KafkaConfigError, match="pass --bootstrap HOST:PORT or set KAFKA_BOO"):
        load_kafka_config(environ={})
    assert load_kafka_config(environ={}, require_bootstrap=False).bootstrap == ""


def test_secrets_never_shown() -> None:
    c = load_kafka_config(
        spec_section={"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"},
        environ={"DRIFTLINE_KAFKA_SASL_PASSWORD": PASSWORD,
                 "DRIFTLINE_KAFKA_SASL_USERNAME": "alice"},
        bootstrap="b:9093",
    )  # fmt: skip
    for text in (str(c), repr(c), c.describe(), str(c.redacted()), str(c.origins)):
        assert PASSWORD not in text
    assert c.describe() == "security.protocol=SASL_SSL, sasl.mechanism=PLAIN, sasl.username=alice"
    assert c.redacted()["sasl.password"] == "***"
    assert c.secret_values() == [PASSWORD]
    assert c.as_environ()["DRIFTLINE_KAFKA_SASL_PASSWORD"] == PASSWORD
    # a child process given as_environ() reads back the same settings
    assert load_kafka_config(environ=c.as_environ()).properties == c.properties


def test_client_config_puts_the_users_settings_over_driftlines() -> None:
    c = KafkaConfig({"bootstrap.servers": "b:1", "linger.ms": "50"})
    assert c.client({"linger.ms": 5, "acks": "all"}) == {
        "linger.ms": "50", "acks": "all", "bootstrap.servers": "b:1",
    }  # fmt: skip
    assert KafkaConfig.of("h:1").properties == {"bootstrap.servers": "h:1"}
    assert KafkaConfig.of(c) is c
    assert c.with_bootstrap("x:2").properties == {"bootstrap.servers": "x:2", "linger.ms": "50"}


@pytest.mark.parametrize(
    ("section", "flat"),
    [
        ({}, {}),
        ({"security": {"protocol": "SSL"}}, {"security.protocol": "SSL"}),
        ({"ssl": {"ca": {"location": "/ca.pem"}, "key": {"location": "/k"}}},
         {"ssl.ca.location": "/ca.pem", "ssl.key.location": "/k"}),
        ({"socket.timeout.ms": 5000, "enable.ssl.certificate.verification": False},
         {"socket.timeout.ms": "5000", "enable.ssl.certificate.verification": "false"}),
        ({"x": {"y.z": True}}, {"x.y.z": "true"}),
        ({"a": 1.5}, {"a": "1.5"}),
    ],
)  # fmt: skip
def test_flatten_spec_section(section: dict, flat: dict) -> None:
    assert flatten_section(section) == flat


# -- TLS files for the faust host's context --------------------------------------------------------
@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA, and a client certificate it signed whose key is encrypted."""
    d = tmp_path_factory.mktemp("tls")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=test-ca")
    run("req", "-newkey", "rsa:2048", "-keyout", "client.key", "-out", "client.csr",
        "-subj", "/CN=client", "-passout", f"pass:{PASSWORD}")
    run("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "client.pem", "-days", "2")  # fmt: skip
    return {"ca": d / "ca.pem", "cert": d / "client.pem", "key": d / "client.key"}


def _tls_config(tls: dict[str, Path], **extra: str) -> KafkaConfig:
    return KafkaConfig({
        "bootstrap.servers": "b:9093", "security.protocol": "SSL",
        "ssl.ca.location": str(tls["ca"]), "ssl.certificate.location": str(tls["cert"]),
        "ssl.key.location": str(tls["key"]), "ssl.key.password": PASSWORD, **extra,
    })  # fmt: skip


def test_librdkafka_takes_the_tls_files(tls: dict[str, Path]) -> None:
    props = dict(_tls_config(tls).properties)
    env = {f"DRIFTLINE_KAFKA_{k.upper().replace('.', '_')}": v for k, v in props.items()}
    assert load_kafka_config(environ=env).properties == props


def test_librdkafka_refuses_a_missing_ca_file_naming_it(tmp_path: Path) -> None:
    with pytest.raises(KafkaConfigError) as e:
        load_kafka_config(
            environ={"DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "SSL",
                     "DRIFTLINE_KAFKA_SSL_CA_LOCATION": str(tmp_path / "nope.pem")},
            bootstrap="b:1",
        )  # fmt: skip
    msg = str(e.value)
    assert msg.startswith("Kafka client settings refused by librdkafka: ssl.ca.location failed")
    origin = "from $DRIFTLINE_KAFKA_SSL_CA_LOCATION"
    assert f"ssl.ca.location = '{tmp_path / 'nope.pem'}' {origin}" in msg


def test_ssl_context_loads_ca_and_client_certificate(tls: dict[str, Path]) -> None:
    ctx = ssl_context(_tls_config(tls))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "test-ca"),),)]
    # the same from inline PEM text, and from the CA's directory of one file
    pem = KafkaConfig({
        "security.protocol": "SSL", "ssl.ca.pem": tls["ca"].read_text(),
        "ssl.certificate.pem": tls["cert"].read_text(), "ssl.key.pem": tls["key"].read_text(),
        "ssl.key.password": PASSWORD,
    })  # fmt: skip
    assert len(ssl_context(pem).get_ca_certs()) == 1


@pytest.mark.parametrize(
    ("extra", "check_hostname", "verify_mode"),
    [
        ({}, True, ssl.CERT_REQUIRED),
        ({"ssl.endpoint.identification.algorithm": "none"}, False, ssl.CERT_REQUIRED),
        ({"enable.ssl.certificate.verification": "false"}, False, ssl.CERT_NONE),
    ],
)
def test_ssl_context_verification_settings(
    tls: dict[str, Path], extra: dict, check_hostname: bool, verify_mode: ssl.VerifyMode
) -> None:
    ctx = ssl_context(_tls_config(tls, **extra))
    assert (ctx.check_hostname, ctx.verify_mode) == (check_hostname, verify_mode)


def test_ssl_context_wrong_key_password_is_one_line_without_it(tls: dict[str, Path]) -> None:
    with pytest.raises(KafkaConfigError) as e:
        ssl_context(_tls_config(tls, **{"ssl.key.password": "wrong-" + PASSWORD}))
    assert str(e.value).startswith("cannot load the TLS files of the Kafka settings (")
    assert PASSWORD not in str(e.value)


@pytest.mark.parametrize(
    ("props", "expected"),
    [
        ({}, {"security_protocol": "PLAINTEXT"}),
        ({"security.protocol": "plaintext"}, {"security_protocol": "PLAINTEXT"}),
        ({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
          "sasl.username": "u", "sasl.password": PASSWORD},
         {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
          "sasl_plain_username": "u", "sasl_plain_password": PASSWORD}),
        ({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "scram-sha-256",
          "sasl.username": "u", "sasl.password": PASSWORD},
         {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256",
          "sasl_plain_username": "u", "sasl_plain_password": PASSWORD}),
    ],
)  # fmt: skip
def test_aiokafka_auth_without_tls(props: dict, expected: dict) -> None:
    assert aiokafka_auth(KafkaConfig(props)) == expected


def test_aiokafka_auth_with_tls(tls: dict[str, Path]) -> None:
    ssl_only = aiokafka_auth(_tls_config(tls))
    assert ssl_only["security_protocol"] == "SSL"
    assert isinstance(ssl_only["ssl_context"], ssl.SSLContext)
    scram = aiokafka_auth(KafkaConfig({
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "u", "sasl.password": PASSWORD, "ssl.ca.location": str(tls["ca"]),
    }))  # fmt: skip
    assert scram["sasl_mechanism"] == "SCRAM-SHA-512"
    assert scram["ssl_context"].get_ca_certs()[0]["subject"] == ((("commonName", "test-ca"),),)


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"security.protocol": "SASL_PLAINTEXT"},
         "default: sasl.mechanism GSSAPI is not supported by the worker's faust host; use one "
         "of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
        ({"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER"},
         "default: sasl.mechanism OAUTHBEARER is not supported by the worker's faust host; use "
         "one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
        ({"security.protocol": "SSL", "ssl.keystore.location": "/k.p12"},
         "default: the worker's faust host cannot read a PKCS#12 keystore; give the client "
         "certificate and key as PEM files (ssl.certificate.location, ssl.key.location)"),
    ],
)  # fmt: skip
def test_aiokafka_auth_refusals(props: dict, message: str) -> None:
    with pytest.raises(KafkaConfigError) as e:
        aiokafka_auth(KafkaConfig(props))
    assert str(e.value) == message
