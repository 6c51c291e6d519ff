"""TLS settings of both broker clients (issue 13, item 5): what the context verifies, a
file that cannot be used is a ConfigError naming its key, and a failed connect reads as
one line saying what to check (the live cases are in tests/integration/test_broker_tls.py)."""

from __future__ import annotations

import logging
import ssl
import subprocess
from pathlib import Path

import aiormq.exceptions
import pika.exceptions
import pytest

from router.broker.refusals import connect_failure, login_user
from router.broker.settings import ssl_context
from router.config import BrokerConfig
from router.errors import EXIT_BROKER, AccessRefused, BrokerUnavailable, ConfigError
from tests.tls_certs import Pki, make_pki

URL = "amqps://crm:s3cr%23t@mq.example.com:5671/crm"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _cfg(pki: Pki, **tls: object) -> BrokerConfig:
    settings = {
        "ca_file": pki.ca,
        "cert_file": pki.client.cert,
        "key_file": pki.client.key,
        **tls,
    }
    return BrokerConfig(url=URL, tls={k: v for k, v in settings.items() if v is not None})


def test_amqps_verifies_the_chain_and_the_host_name_by_default(pki: Pki) -> None:
    context = ssl_context(_cfg(pki), URL)
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    [ca] = context.get_ca_certs()
    assert ("commonName", "crmsync-test-ca") in [pair for rdn in ca["subject"] for pair in rdn]
    # a bare amqps:// URL: still verified, against the system's CAs
    bare = ssl_context(BrokerConfig(url=URL), URL)
    assert bare is not None and bare.check_hostname and bare.verify_mode == ssl.CERT_REQUIRED
    assert ssl_context(BrokerConfig(), "amqp://guest:guest@127.0.0.1:5672/") is None


def test_host_name_verification_can_be_turned_off_only_loudly(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "crmsync.broker"):
        context = ssl_context(_cfg(pki, verify_hostname=False), URL)
    assert context is not None
    assert context.check_hostname is False
    assert context.verify_mode == ssl.CERT_REQUIRED  # the chain is still checked
    [warning] = [r for r in caplog.records if "verify_hostname = false" in r.getMessage()]
    assert warning.levelno == logging.WARNING


@pytest.mark.parametrize("key", ["ca_file", "cert_file", "key_file"])
def test_a_missing_file_is_a_config_error_naming_its_key(
    pki: Pki, tmp_path: Path, key: str
) -> None:
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(ConfigError, match=rf"^broker\.tls\.{key}: cannot read {missing}"):
        ssl_context(_cfg(pki, **{key: missing}), URL)


def test_unusable_files_are_config_errors_naming_the_key(pki: Pki, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"^broker\.tls\.ca_file: .* no usable PEM"):
        ssl_context(_cfg(pki, ca_file=junk), URL)
    with pytest.raises(ConfigError, match=r"^broker\.tls\.key_file: .* is not the key of"):
        ssl_context(_cfg(pki, key_file=pki.server.key), URL)
    with pytest.raises(ConfigError, match=r"^broker\.tls\.cert_file / key_file: .*not a PEM"):
        ssl_context(_cfg(pki, cert_file=junk), URL)
    locked = tmp_path / "locked.key"
    encrypt = ["openssl", "pkey", "-in", str(pki.client.key), "-aes256", "-passout", "pass:x"]
    subprocess.run([*encrypt, "-out", str(locked)], check=True)
    # without the callback OpenSSL would prompt on the terminal: a daemon would hang
    with pytest.raises(ConfigError, match=r"^broker\.tls\.key_file: .* is encrypted"):
        ssl_context(_cfg(pki, key_file=locked), URL)


def test_a_key_without_its_certificate_is_refused_at_load(pki: Pki) -> None:
    with pytest.raises(ValueError, match=r"broker\.tls\.key_file needs broker\.tls\.cert_file"):
        BrokerConfig(url=URL, tls={"key_file": str(pki.client.key)})


def _verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    e = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
    e.verify_code = code
    e.verify_message = message
    return e


def test_connect_failures_read_as_one_line_saying_what_to_check(pki: Pki) -> None:
    cfg = _cfg(pki)
    # aio-pika: the ssl error is the cause of an AMQPConnectionError
    untrusted = aiormq.exceptions.AMQPConnectionError(1, "certificate verify failed")
    untrusted.__cause__ = _verify_error(19, "self-signed certificate in certificate chain")
    line = str(connect_failure(untrusted, URL, cfg))
    assert line.startswith("certificate verify failed: self-signed certificate in certificate")
    assert line.endswith("check broker.tls.ca_file") and str(pki.ca) in line
    # pika: bare
    mismatch = _verify_error(64, "IP address mismatch, certificate is not valid for '10.0.0.7'.")
    line = str(connect_failure(mismatch, URL, cfg))
    assert "not valid for '10.0.0.7'" in line and "subjectAltName" in line
    # pika quotes the broker's alert in an IncompatibleProtocolError's text only
    alert = pika.exceptions.IncompatibleProtocolError(
        "StreamLostError: (\"Stream connection lost: SSLError(1, '[SSL: "
        "TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required')\",)"
    )
    line = str(connect_failure(alert, URL, BrokerConfig(url=URL)))
    assert "refused our TLS client certificate (tlsv13 alert certificate required)" in line
    assert "set broker.tls.cert_file" in line
    # TLS 1.3: the alert often loses the race against the reset of what we sent
    reset = aiormq.exceptions.AMQPConnectionError("Server connection reset")
    reset.__cause__ = ConnectionResetError(104, "Connection reset by peer")
    line = str(connect_failure(reset, URL, BrokerConfig(url=URL)))
    assert "closed the TLS connection at once" in line and "client certificate" in line
    assert "cannot reach" in str(connect_failure(reset, "amqp://h/", BrokerConfig()))
    plain = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    assert "does not speak TLS" in str(connect_failure(plain, URL, cfg))
    for error in (untrusted, mismatch, alert, plain, reset):
        failure = connect_failure(error, URL, cfg)
        assert isinstance(failure, BrokerUnavailable) and failure.exit_code == EXIT_BROKER
        assert "s3cr" not in str(failure) and "\n" not in str(failure)


def test_a_refused_login_names_the_user_never_the_password(pki: Pki) -> None:
    for refused in (
        aiormq.exceptions.ProbableAuthenticationError("ACCESS_REFUSED - Login was refused"),
        pika.exceptions.ProbableAuthenticationError("ConnectionClosedByBroker: (403) ..."),
    ):
        failure = connect_failure(refused, URL, _cfg(pki))
        assert isinstance(failure, AccessRefused) and failure.exit_code == EXIT_BROKER
        line = str(failure)
        assert "refused the login of user 'crm' (ACCESS_REFUSED" in line
        assert "amqps://crm:***@mq.example.com:5671/crm" in line
        assert "s3cr" not in line
    assert login_user("amqp://h:5672/") == "guest"
    assert login_user("amqp://ops%40eu:p@w@h/") == "ops@eu"
