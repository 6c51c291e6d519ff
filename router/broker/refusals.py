"""What a failed connect means, as one line a person can act on.

Both clients fail a connect in their own ways: aio-pika chains the ``ssl`` error as the
cause of an ``AMQPConnectionError``; pika raises it bare, or only quotes it in the text
of an ``IncompatibleProtocolError`` (an alert the broker sent after the handshake). So
the chain is walked and its text read, and the line says which setting to look at.
The password is never part of it: the URL is redacted and only the user is named.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit

import aiormq.exceptions
import pika.exceptions

from router.broker.errors import describe
from router.broker.settings import UNREACHABLE_HINT, redact
from router.config import BrokerConfig
from router.errors import AccessRefused, BrokerUnavailable, CrmsyncError

# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH, _IP_ADDRESS_MISMATCH, _CERT_HAS_EXPIRED
_NAME_MISMATCH = {62, 64}
_EXPIRED = 10
_ALERT = re.compile(r"\[SSL: ([A-Z0-9_]+)\]")
# Alerts the broker sends when it does not accept our client certificate (TLS 1.2 / 1.3).
_CLIENT_CERT_ALERTS = (
    "CERTIFICATE_REQUIRED",
    "BAD_CERTIFICATE",
    "UNKNOWN_CA",
    "CERTIFICATE_UNKNOWN",
    "CERTIFICATE_EXPIRED",
    "CERTIFICATE_REVOKED",
    "UNSUPPORTED_CERTIFICATE",
    "ACCESS_DENIED",
)
_AUTH = (
    aiormq.exceptions.ProbableAuthenticationError,
    pika.exceptions.ProbableAuthenticationError,
    pika.exceptions.AuthenticationError,
)


def _chain(e: BaseException) -> Iterator[BaseException]:
    """``e``, its causes and contexts, and exceptions carried as arguments (pika's
    connection workflow keeps the real one in ``.exception``)."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [e]
    while todo:
        item = todo.pop(0)
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        yield item
        nested = getattr(item, "exception", None)
        todo += [item.__cause__, item.__context__]
        todo += [a for a in (*item.args, nested) if isinstance(a, BaseException)]


def _vhost_refused(e: BaseException) -> bool:
    """The broker closed the connection at ``Connection.Open``: the vhost is unknown or
    forbidden to the user (aiormq keeps only the frame's name; pika says so)."""
    if isinstance(e, pika.exceptions.ProbableAccessDeniedError):
        return True
    text = str(e)
    return "Connection.OpenOk" in text and "Connection.Close" in text


def login_user(url: str) -> str:
    """The user of ``url`` as the broker sees it (the clients' default is guest)."""
    rest = url.partition("://")[2]
    at = rest.rfind("@")
    return unquote(rest[:at].split(":", 1)[0]) if at >= 0 else "guest"


def connect_failure(e: BaseException, url: str, cfg: BrokerConfig) -> CrmsyncError:
    """The crmsync error for a connect to ``url`` that raised ``e``: exit code 3 all."""
    where = f"RabbitMQ at {redact(url)}"
    chain = list(_chain(e))
    for item in chain:
        if isinstance(item, ssl.SSLCertVerificationError):
            return BrokerUnavailable(_untrusted(item, where, cfg))
    if any(isinstance(item, _AUTH) for item in chain) or "ACCESS_REFUSED" in str(e):
        return AccessRefused(
            f"{where} refused the login of user '{login_user(url)}' (ACCESS_REFUSED: "
            "wrong password, or no such user); check broker.password_file or the password "
            "in broker.url / CRMSYNC_AMQP_URL"
        )
    if any(_vhost_refused(item) for item in chain):
        vhost = unquote(urlsplit(url).path[1:]) or "/"
        return AccessRefused(
            f"{where} refused user '{login_user(url)}' the vhost '{vhost}' (NOT_ALLOWED: "
            "it does not exist, or the user has no permissions on it); create it "
            "(rabbitmqctl add_vhost) or grant them (crmsync users create)"
        )
    alerts = [m for item in chain for m in _ALERT.findall(str(item))]
    if alerts:
        return BrokerUnavailable(_handshake(alerts[0], where, cfg))
    if url.startswith("amqps://") and _reset(chain):
        # TLS 1.3 checks our certificate after the handshake: the broker's alert then
        # races the reset of the AMQP header it will not read, and often loses.
        return BrokerUnavailable(
            f"{where} closed the TLS connection at once ({describe(e)}), as a broker that "
            f"requires a client certificate does when it gets none it trusts; {_cert_fix(cfg)}"
        )
    return BrokerUnavailable(
        f"cannot reach {where} ({describe(e) or 'no answer'}); {UNREACHABLE_HINT}"
    )


def _untrusted(e: ssl.SSLCertVerificationError, where: str, cfg: BrokerConfig) -> str:
    message = str(e.verify_message or e.reason or e).rstrip(".")
    head = f"certificate verify failed: {message} ({where})"
    if e.verify_code in _NAME_MISMATCH:
        return (
            f"{head}: its certificate does not name that host; connect by a name its "
            "subjectAltName lists, or reissue the broker's certificate for this one"
        )
    if e.verify_code == _EXPIRED:
        return f"{head}: renew the broker's certificate (or fix this host's clock)"
    ca = cfg.tls.ca_file if cfg.tls else None
    trusted = f"the CA in {ca}" if ca else "no CA of this system's store (no ca_file set)"
    return f"{head}: the broker's certificate is not signed by {trusted}; check broker.tls.ca_file"


def _handshake(alert: str, where: str, cfg: BrokerConfig) -> str:
    reason = alert.lower().replace("_", " ")
    if any(alert.endswith(a) for a in _CLIENT_CERT_ALERTS):
        return f"{where} refused our TLS client certificate ({reason}); {_cert_fix(cfg)}"
    if alert == "WRONG_VERSION_NUMBER":
        return (
            f"TLS handshake with {where} failed ({reason}): that port does not speak TLS; "
            "use the broker's TLS listener (usually 5671) with amqps://"
        )
    return f"TLS handshake with {where} failed ({reason})"


def _cert_fix(cfg: BrokerConfig) -> str:
    if cfg.tls is None or cfg.tls.cert_file is None:
        return "set broker.tls.cert_file and broker.tls.key_file (none is set)"
    return "check that broker.tls.cert_file is signed by a CA the broker trusts"


def _reset(chain: list[BaseException]) -> bool:
    """The peer dropped the connection after accepting it (not: refused, timed out)."""
    early = (
        ConnectionResetError,
        BrokenPipeError,
        aiormq.exceptions.IncompatibleProtocolError,
        pika.exceptions.IncompatibleProtocolError,
        pika.exceptions.StreamLostError,
    )
    return any(isinstance(i, early) or "reset by peer" in str(i) for i in chain)
