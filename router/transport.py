"""The only seam that touches aio-pika for connections and publishing.

Library exceptions become crmsync's own here (``BrokerUnavailable``, ``PublishFailed``),
always chained, so the rest of the code never imports aiormq to catch something.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractRobustConnection,
    DeliveryMode,
)

from router.config import BrokerConfig
from router.errors import BrokerUnavailable, PublishFailed
from router.events import CONTENT_TYPE
from router.logs import kv

CONNECT_TIMEOUT = 10.0

log = logging.getLogger("crmsync.transport")


def redact(url: str) -> str:
    """The URL with its password removed: safe for logs and error lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _ssl_context(cfg: BrokerConfig) -> ssl.SSLContext | None:
    if cfg.tls is None:
        return None
    context = ssl.create_default_context(cafile=str(cfg.tls.ca_file) if cfg.tls.ca_file else None)
    if cfg.tls.cert_file:
        context.load_cert_chain(
            str(cfg.tls.cert_file), str(cfg.tls.key_file) if cfg.tls.key_file else None
        )
    return context


async def connect(cfg: BrokerConfig, client_name: str) -> AbstractRobustConnection:
    """A robust connection: it reconnects by itself and restores channels and consumers."""
    url = cfg.effective_url()
    try:
        connection = await aio_pika.connect_robust(
            url,
            timeout=CONNECT_TIMEOUT,
            ssl_context=_ssl_context(cfg),
            client_properties={"connection_name": client_name},
        )
    except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as e:
        raise BrokerUnavailable(
            f"cannot reach RabbitMQ at {redact(url)} ({type(e).__name__}: {e or 'no answer'}); "
            "start it with 'rabbitmq-server -detached' or point CRMSYNC_AMQP_URL at it"
        ) from e

    # The libraries' own logs are silenced (see logs.quiet_libraries); say it here instead.
    def on_close(_conn: object, exc: BaseException | None = None) -> None:
        if exc is not None and not isinstance(exc, asyncio.CancelledError):  # ours: clean
            log.warning(
                "lost the broker connection; reconnecting",
                extra=kv(client=client_name, error=str(exc)),
            )

    connection.close_callbacks.add(on_close)
    connection.reconnect_callbacks.add(
        lambda _conn: log.warning("broker connection restored", extra=kv(client=client_name))
    )
    return connection


@dataclass(frozen=True)
class Outgoing:
    """One message to publish. ``exchange=""`` is the default exchange (to a queue by name)."""

    exchange: str
    routing_key: str
    body: bytes
    message_id: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    reply_to: str | None = None
    correlation_id: str | None = None
    # RabbitMQ checks a user_id against the connection's user: it proves who published.
    user_id: str | None = None
    expiration: float | None = None  # seconds (per-message TTL, for retry tiers)

    def to_message(self) -> aio_pika.Message:
        return aio_pika.Message(
            self.body,
            content_type=CONTENT_TYPE,
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=self.message_id,
            headers=self.headers or None,
            reply_to=self.reply_to,
            correlation_id=self.correlation_id,
            user_id=self.user_id,
            expiration=self.expiration,
        )


class Publisher:
    """Publishes batches with confirms gathered, and ``mandatory`` so nothing vanishes.

    Awaiting each confirm in turn halves throughput; gathering a whole batch does not
    weaken anything, because the caller acks upstream only after ``publish_many``
    returned without error.
    """

    def __init__(self, channel: AbstractChannel) -> None:
        self._channel = channel
        self._exchanges: dict[str, AbstractExchange] = {}

    @classmethod
    async def open(cls, connection: AbstractRobustConnection) -> Publisher:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        return cls(channel)

    async def _exchange(self, name: str) -> AbstractExchange:
        if name == "":
            return self._channel.default_exchange
        exchange = self._exchanges.get(name)
        if exchange is None:
            exchange = await self._channel.get_exchange(name, ensure=False)
            self._exchanges[name] = exchange
        return exchange

    async def publish_many(self, items: Sequence[Outgoing]) -> None:
        if not items:
            return
        try:
            exchanges = [await self._exchange(item.exchange) for item in items]
        except Exception as e:
            raise _publish_error(items[0], e) from e
        results = await asyncio.gather(
            *(
                exchange.publish(item.to_message(), item.routing_key, mandatory=True)
                for exchange, item in zip(exchanges, items, strict=True)
            ),
            return_exceptions=True,
        )
        for item, result in zip(items, results, strict=True):
            if isinstance(result, BaseException):
                raise _publish_error(item, result) from result

    async def publish(self, item: Outgoing) -> None:
        await self.publish_many([item])

    async def close(self) -> None:
        if not self._channel.is_closed:
            await self._channel.close()


def _publish_error(item: Outgoing, err: BaseException) -> Exception:
    where = f"{item.exchange or '(default)'}/{item.routing_key}"
    if isinstance(err, aio_pika.exceptions.PublishError):
        return PublishFailed(f"publish to {where} was returned as unroutable")
    if isinstance(err, aio_pika.exceptions.DeliveryError):
        return PublishFailed(f"broker refused publish to {where} (nack)")
    # ChannelInvalidStateError (a RuntimeError): the robust channel is mid-reconnect.
    broker_gone = (
        aiormq.exceptions.AMQPError,
        aiormq.exceptions.ChannelInvalidStateError,
        ConnectionError,
        TimeoutError,
    )
    if isinstance(err, broker_gone):
        return BrokerUnavailable(f"lost the broker while publishing to {where}: {err}")
    return err if isinstance(err, Exception) else RuntimeError(str(err))
