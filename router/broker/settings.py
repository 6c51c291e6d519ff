"""Connection settings both clients share: the URL as logs may show it, and TLS."""

from __future__ import annotations

import ssl
from typing import Final

from router.config import BrokerConfig

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
    """The TLS context for ``broker.tls``; the system's CAs for a bare ``amqps://`` URL."""
    if cfg.tls is None:
        return ssl.create_default_context() if url.startswith("amqps://") else None
    context = ssl.create_default_context(cafile=str(cfg.tls.ca_file) if cfg.tls.ca_file else None)
    if cfg.tls.cert_file:
        context.load_cert_chain(
            str(cfg.tls.cert_file), str(cfg.tls.key_file) if cfg.tls.key_file else None
        )
    return context
