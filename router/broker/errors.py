"""The one place where aio-pika/aiormq and pika exceptions become crmsync's own.

Everything else catches :mod:`router.errors` types only. Each mapper is a context
manager: crmsync's own errors and bugs (anything not listed) pass through untouched;
library errors are re-raised as crmsync errors chained ``from`` the original.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import aio_pika.exceptions
import aiormq.exceptions
import pika.exceptions

from router.broker.denials import access_refused, not_found
from router.errors import (
    AccessRefused,
    BrokerUnavailable,
    CrmsyncError,
    EntityMissing,
    PublishFailed,
    TopologyMismatch,
    Unroutable,
)


def describe(e: BaseException) -> str:
    """``Type: text`` on one line (library messages span lines and repeat themselves)."""
    text = "; ".join(str(a) for a in e.args if str(a)) or str(e)
    text = " ".join(text.split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _refusal(code: int, text: str, where: str) -> CrmsyncError | None:
    """A 403 or a missing hub exchange as one line (:mod:`router.broker.denials`)."""
    from router.topology import HUB_EXCHANGES

    if code == 403:
        return AccessRefused(access_refused(text, where) or f"{where}: {text}")
    if code == 404:
        line = not_found(text, where, frozenset(x.name for x in HUB_EXCHANGES))
        return EntityMissing(line or f"{where}: {text}")
    return None


def _from_aio(e: BaseException, where: str) -> CrmsyncError | None:
    if isinstance(e, aio_pika.exceptions.PublishError):
        return Unroutable(f"{where} was returned as unroutable")
    if isinstance(e, aio_pika.exceptions.DeliveryError):
        return PublishFailed(f"the broker refused {where} (nack)")
    if isinstance(e, aiormq.exceptions.ChannelPreconditionFailed):
        return TopologyMismatch(f"{where}: {e.args[0] if e.args else e}")
    if isinstance(e, aiormq.exceptions.ChannelAccessRefused):
        return _refusal(403, str(e.args[0] if e.args else e), where)
    if isinstance(e, aiormq.exceptions.ChannelNotFoundEntity):
        return _refusal(404, str(e.args[0] if e.args else e), where)
    # ChannelInvalidStateError (a RuntimeError): the robust channel is mid-reconnect.
    gone = (
        aiormq.exceptions.AMQPError,
        aiormq.exceptions.ChannelInvalidStateError,
        ConnectionError,
        TimeoutError,
        OSError,
    )
    if isinstance(e, gone):
        return BrokerUnavailable(f"lost the broker during {where}: {describe(e)}")
    return None


def _connection_cancelled() -> bool:
    """Whether a CancelledError came from the connection, not from someone cancelling us.

    aiormq fails the futures of a connection it declares stuck (missed heartbeats) with
    CancelledError. Let through, that ends the awaiting task as if it had been cancelled:
    an adapter's capture loop died silently that way after a half-open connection."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() == 0


@contextmanager
def aio_errors(where: str) -> Iterator[None]:
    """Map what aio-pika/aiormq raise inside the block; ``where`` says what we were doing."""
    try:
        yield
    except CrmsyncError:
        raise
    except asyncio.CancelledError as e:
        if not _connection_cancelled():
            raise
        raise BrokerUnavailable(f"lost the broker during {where}: the connection died") from e
    except Exception as e:
        mapped = _from_aio(e, where)
        if mapped is None:
            raise
        raise mapped from e


def _from_pika(e: BaseException, where: str) -> CrmsyncError | None:
    if isinstance(e, pika.exceptions.UnroutableError):
        return Unroutable(f"{where} was returned as unroutable")
    if isinstance(e, pika.exceptions.NackError):
        return PublishFailed(f"the broker refused {where} (nack)")
    if isinstance(e, pika.exceptions.ChannelClosedByBroker):
        mapped = _refusal(e.reply_code, e.reply_text, where)
        if mapped is not None:
            return mapped
        return CrmsyncError(f"RabbitMQ refused {where}: {e.reply_code} {e.reply_text}")
    if isinstance(e, (pika.exceptions.AMQPError, OSError)):
        return BrokerUnavailable(f"lost the connection to RabbitMQ during {where} ({describe(e)})")
    return None


@contextmanager
def pika_errors(where: str) -> Iterator[None]:
    """Map what pika raises inside the block."""
    try:
        yield
    except CrmsyncError:
        raise
    except Exception as e:
        mapped = _from_pika(e, where)
        if mapped is None:
            raise
        raise mapped from e
