"""Connection settings both clients share: the URL as logs may show it, and TLS."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Final

from router.config import BrokerConfig, TlsConfig
from router.errors import ConfigError
from router.logs import kv

log = logging.getLogger("crmsync.broker")

CONNECT_TIMEOUT: Final = 10.0
UNREACHABLE_HINT: Final = (
    "start it with 'rabbitmq-server -detached' or point CRMSYNC_AMQP_URL at it"
)


def redact(url: str) -> str:
    """The URL with its password replaced by ``***``: safe for logs and error lines.

    Not parsed as a URL: a password written into the URL unencoded (``#``, ``/``, ``?``
    or ``@`` in it) would make a parser end the user part early and print the rest of the
    password as the host. Everything between ``user:`` and the last ``@`` goes instead.
    """
    scheme, sep, rest = url.partition("://")
    at = rest.rfind("@")
    if not sep or at < 0 or ":" not in rest[:at]:
        return url
    user = rest[:at].split(":", 1)[0]
    return f"{scheme}://{user}:***@{rest[at + 1 :]}"


def ssl_context(cfg: BrokerConfig, url: str) -> ssl.SSLContext | None:
    """The TLS context of an ``amqps://`` URL (None for ``amqp://``): the broker's
    certificate must chain to ``broker.tls.ca_file`` (the system's CAs without it) and name
    the URL's host; ``cert_file``/``key_file`` are our client certificate. A file that
    cannot be used is a :class:`ConfigError` naming its key, before any connection."""
    if not url.startswith("amqps://"):
        return None  # config.BrokerConfig refuses [broker.tls] with amqp:// already
    tls = cfg.tls or TlsConfig()
    # create_default_context: CERT_REQUIRED and check_hostname, TLS 1.2 at least.
    ca = _readable(tls.ca_file, "broker.tls.ca_file")
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    except ssl.SSLError as e:
        raise ConfigError(
            f"broker.tls.ca_file: {ca} holds no usable PEM certificate ({_reason(e)})"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    cert = _readable(tls.cert_file, "broker.tls.cert_file")
    if cert is not None:
        key = _readable(tls.key_file, "broker.tls.key_file")
        try:
            context.load_cert_chain(cert, key, password=_no_passphrase)
        except (ssl.SSLError, _Encrypted) as e:
            raise ConfigError(_chain_problem(e, cert, key)) from None
    if not tls.verify_hostname:
        context.check_hostname = False
        log.warning(
            "broker.tls.verify_hostname = false: any certificate broker.tls.ca_file signed "
            "is accepted as the broker, whatever host it was issued for",
            extra=kv(ca_file=ca or "(system CAs)"),
        )
    return context


class _Encrypted(Exception):
    pass


def _no_passphrase() -> str:
    # Without a callback OpenSSL would prompt on the terminal, and a daemon would hang.
    raise _Encrypted


def _readable(path: Path | None, key: str) -> str | None:
    if path is None:
        return None
    try:
        with path.open("rb"):
            pass
    except OSError as e:
        raise ConfigError(f"{key}: cannot read {path} ({e.strerror})") from None
    return str(path)


def _reason(e: ssl.SSLError) -> str:
    return str(e.reason or e.strerror or e).lower().replace("_", " ")


def _chain_problem(e: Exception, cert: str, key: str | None) -> str:
    if isinstance(e, _Encrypted):
        return (
            f"broker.tls.key_file: {key or cert} is encrypted; crmsync needs the key "
            "without a passphrase (keep it chmod 600 instead)"
        )
    assert isinstance(e, ssl.SSLError)
    if e.reason == "KEY_VALUES_MISMATCH":
        return f"broker.tls.key_file: {key or cert} is not the key of broker.tls.cert_file {cert}"
    where = f"{cert} / {key}" if key else cert
    return (
        f"broker.tls.cert_file / key_file: {where} is not a PEM certificate and key ({_reason(e)})"
    )
