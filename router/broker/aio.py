"""The asyncio client (aio-pika) the daemons use: connect, declare, consume, publish.

A :class:`Connection` is robust: it reconnects by itself and restores its channels and
consumers. What crosses this module's edge are plain values
(:class:`~router.messages.Outgoing`, :class:`~router.messages.Delivery`,
:class:`~router.topology.QueueSpec`) and crmsync's own errors.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
    DeliveryMode,
    ExchangeType,
)

from router.broker.aio_queues import _close, _declare_on, _say_when_cancelled
from router.broker.base import Handler
from router.broker.errors import aio_errors, describe
from router.broker.refusals import connect_failure
from router.broker.settings import CONNECT_TIMEOUT, ssl_context
from router.config import BrokerConfig, parse_duration
from router.errors import EntityMissing, TopologyMismatch
from router.events import CONTENT_TYPE
from router.logs import kv
from router.messages import Delivery, Outgoing
from router.topology import (
    CONTROL,
    HUB_EXCHANGES,
    REPLY_PREFIX,
    REQUESTS_PREFIX,
    QueueSpec,
    hub_queues,
    reply_route,
)

log = logging.getLogger("crmsync.broker")

# aiormq declares a peer dead after (heartbeat + 1) x 3 s without a frame, checked every
# heartbeat/2 s: a half-open connection (the broker's host gone without a FIN, a NAT
# dropping state) went unnoticed for 3.5 heartbeats, while RabbitMQ's own rule, and what
# operators expect, is two. The broker beats every heartbeat/2 s, so 1.2 x (heartbeat + 1)
# of silence is still more than two of its beats missed.
aiormq.Connection.HEARTBEAT_GRACE_MULTIPLIER = 1.2  # type: ignore[assignment]


async def connect(cfg: BrokerConfig, client_name: str) -> Connection:
    """A robust connection, or one line (:mod:`router.broker.refusals`) naming the
    (redacted) URL and what to check: unreachable, TLS, or the login refused."""
    url = cfg.effective_url()
    # ``?heartbeat=N`` in the URL (how it was set before broker.heartbeat) still wins.
    in_url = "heartbeat" in parse_qs(urlsplit(url).query)
    try:
        robust = await aio_pika.connect_robust(
            url,
            timeout=CONNECT_TIMEOUT,
            heartbeat=None if in_url else cfg.heartbeat_seconds(),
            ssl_context=ssl_context(cfg, url),
            client_properties={"connection_name": client_name},
        )
    except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as e:
        raise connect_failure(e, url, cfg) from e

    connection = Connection(robust, parse_duration(cfg.confirm_timeout))

    # The libraries' own logs are silenced (see logs.quiet_libraries); say it here instead.
    # A stuck (half-open) connection closes with CancelledError, so only our own close()
    # is the clean case.
    def on_close(_conn: object, exc: BaseException | None = None) -> None:
        if not connection.closing:
            log.warning(
                "lost the broker connection; reconnecting",
                extra=kv(client=client_name, error=describe(exc) if exc else "closed"),
            )

    robust.close_callbacks.add(on_close)
    robust.reconnect_callbacks.add(
        lambda _conn: log.warning("broker connection restored", extra=kv(client=client_name))
    )
    return connection


def _message(item: Outgoing, signer: str | None = None) -> aio_pika.Message:
    return aio_pika.Message(
        item.body,
        content_type=CONTENT_TYPE,
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=item.message_id,
        headers=item.headers or None,
        reply_to=item.reply_to,
        correlation_id=item.correlation_id,
        user_id=item.user_id or signer,
        expiration=item.expiration,
    )


def _delivery(message: AbstractIncomingMessage) -> Delivery:
    return Delivery(
        body=message.body,
        routing_key=message.routing_key or "",
        settle=message,
        message_id=message.message_id,
        user_id=message.user_id,
        redelivered=bool(message.redelivered),
        headers=message.headers,
        reply_to=message.reply_to,
        correlation_id=message.correlation_id,
    )


class Publisher:
    """Publishes batches with confirms gathered, and ``mandatory`` so nothing vanishes.

    Awaiting each confirm in turn halves throughput; gathering a whole batch does not
    weaken anything, because callers ack upstream only after :meth:`publish_many`
    returned without error.
    """

    def __init__(
        self, channel: AbstractChannel, confirm_timeout: float, signer: str | None = None
    ) -> None:
        self._channel = channel
        self._signer = signer  # the user_id every message carries unless it has its own
        self._exchanges: dict[str, AbstractExchange] = {}
        self._confirm_timeout = confirm_timeout

    async def _exchange(self, name: str) -> AbstractExchange:
        if name == "":
            return self._channel.default_exchange
        exchange = self._exchanges.get(name)
        if exchange is None:
            exchange = await self._channel.get_exchange(name, ensure=False)
            self._exchanges[name] = exchange
        return exchange

    async def publish_many(self, items: Sequence[Outgoing]) -> None:
        """Returns once the broker confirmed every item; else the first failure, mapped."""
        if not items:
            return
        with aio_errors(f"publish to {_where(items[0])}"):
            exchanges = [await self._exchange(item.exchange) for item in items]
        results = await asyncio.gather(
            *(
                exchange.publish(
                    _message(item, self._signer),
                    item.routing_key,
                    mandatory=item.mandatory,
                    timeout=self._confirm_timeout,
                )
                for exchange, item in zip(exchanges, items, strict=True)
            ),
            return_exceptions=True,
        )
        for item, result in zip(items, results, strict=True):
            if isinstance(result, BaseException):
                with aio_errors(f"publish to {_where(item)}"):
                    raise result

    async def publish(self, item: Outgoing) -> None:
        await self.publish_many([item])


def _where(item: Outgoing) -> str:
    return f"{item.exchange or '(default)'}/{item.routing_key}"


class Connection:
    """One robust connection of a daemon or command."""

    def __init__(
        self, robust: AbstractRobustConnection, confirm_timeout: float | None = None
    ) -> None:
        self._robust = robust
        self._confirm_timeout = (
            parse_duration(BrokerConfig().confirm_timeout)
            if confirm_timeout is None
            else confirm_timeout
        )
        self.closing = False

    @property
    def user(self) -> str | None:
        """The user this connection logged in as: what RabbitMQ accepts as ``user_id``."""
        url = getattr(self._robust, "url", None)
        return getattr(url, "user", None) or None

    async def close(self) -> None:
        self.closing = True
        # Closing a connection that is already gone is not worth an error at shutdown.
        with aio_errors("close"):
            try:
                await self._robust.close()
            except (ConnectionError, OSError, RuntimeError):
                return

    async def _scratch(self) -> AbstractChannel:
        """A fresh channel for one operation that may close it (a failed declare does)."""
        with aio_errors("open a channel"):
            return await self._robust.channel()

    async def declare(
        self, queues: Iterable[QueueSpec] = (), *, hub: bool = True, check_exchanges: bool = False
    ) -> None:
        """Declare the hub's exchanges, its queues (``hub``), then ``queues``.

        Idempotent. A queue that exists with other arguments is a
        :class:`TopologyMismatch` that says how to fix it, never a crash loop. With
        ``check_exchanges`` (adapters) the hub's exchanges are only checked, passively:
        they are the router's (or ``crmsync topology declare``'s) to create, so an
        adapter's user needs no configure permission on them.
        """
        channel = await self._scratch()
        try:
            for exchange in HUB_EXCHANGES:
                if check_exchanges:
                    with aio_errors(f"check exchange {exchange.name}"):
                        await channel.get_exchange(exchange.name, ensure=True)
                    continue
                try:
                    with aio_errors(f"declare exchange {exchange.name}"):
                        await channel.declare_exchange(
                            exchange.name, ExchangeType(exchange.kind), durable=True
                        )
                except TopologyMismatch as e:
                    raise TopologyMismatch(
                        f"exchange {exchange.name} already exists with another type; "
                        f"expected {exchange.kind}"
                    ) from e
        finally:
            await _close(channel)
        for spec in [*(hub_queues() if hub else []), *queues]:
            await self._declare_queue(spec)

    async def _declare_queue(self, spec: QueueSpec) -> None:
        channel = await self._scratch()
        try:
            await _declare_on(channel, spec)
        finally:
            await _close(channel)

    async def publisher(self, *, signed: bool = False) -> Publisher:
        """A channel with publisher confirms whose returns (unroutable) raise; ``signed``:
        every message carries this connection's user as ``user_id`` (the router's
        deliveries, which sinks accept only from it)."""
        with aio_errors("open a publishing channel"):
            channel = await self._robust.channel(publisher_confirms=True, on_return_raises=True)
        return Publisher(channel, self._confirm_timeout, self.user if signed else None)

    async def consume(
        self,
        queue: str | QueueSpec,
        handler: Handler,
        *,
        prefetch: int,
        exclusive: bool = False,
    ) -> None:
        """Hand every message of ``queue`` to ``handler``, which must settle it.

        The consumer survives reconnects (the robust channel restores it). A queue given
        by name must exist (:class:`EntityMissing` otherwise). A queue given as a
        :class:`QueueSpec` is the caller's own: if it is deleted under the consumer, the
        broker cancels the consumer and the robust channel declares and binds it again
        at once and resumes, instead of retrying a passive declare that can never pass.
        """

        # aio-pika runs plain-function callbacks ~20x slower: keep this a coroutine.
        async def on_message(message: AbstractIncomingMessage) -> None:
            await handler(_delivery(message))

        name = queue if isinstance(queue, str) else queue.name
        with aio_errors(f"consume {name}"):
            channel = await self._robust.channel()
            await channel.set_qos(prefetch_count=prefetch)
            declared: AbstractQueue
            if isinstance(queue, str):
                declared = await channel.declare_queue(queue, passive=True)
            else:
                declared = await _declare_on(channel, queue)
                await _say_when_cancelled(channel, name)
            await declared.consume(on_message, exclusive=exclusive)

    def _own_queue(self, prefix: str) -> str:
        """``PREFIX.USER.<hex>``: named by the user, so its permissions can be written."""
        return f"{prefix}.{self.user or 'guest'}.{uuid.uuid4().hex[:16]}"

    async def reply_queue(self, handler: Handler) -> str:
        """An exclusive queue ``crmsync.reply.USER.<hex>`` for answers to this
        connection's requests, bound on crmsync.control under ``reply.QUEUE``
        (:func:`router.topology.reply_route`); its messages are acked on arrival (an
        answer nobody waits for is worthless)."""

        async def on_message(message: AbstractIncomingMessage) -> None:
            await handler(_delivery(message))

        name = self._own_queue(REPLY_PREFIX)
        # Before the queue: a missing exchange must not leave an unused queue behind.
        check = await self._scratch()
        try:
            with aio_errors(f"check exchange {CONTROL}"):
                await check.get_exchange(CONTROL, ensure=True)
        finally:
            await _close(check)
        with aio_errors(f"declare reply queue {name}"):
            channel = await self._robust.channel()
            queue = await channel.declare_queue(name, exclusive=True, auto_delete=True)
        with aio_errors(f"bind reply queue {name} to {CONTROL}"):
            await queue.bind(CONTROL, reply_route(name)[1])
        with aio_errors(f"consume {name}"):
            await queue.consume(on_message, no_ack=True)
        return name

    async def serve(self, bindings: Iterable[tuple[str, str]], handler: Handler) -> str:
        """An exclusive queue ``crmsync.requests.USER.<hex>`` bound to ``bindings`` whose
        messages go to ``handler`` unacked-free (requests: one lost with the process is
        timed out by its caller). It lives as long as this connection, so requests to a
        process that is not running are unroutable instead of piling up."""

        async def on_message(message: AbstractIncomingMessage) -> None:
            await handler(_delivery(message))

        name = self._own_queue(REQUESTS_PREFIX)
        with aio_errors(f"declare request queue {name}"):
            channel = await self._robust.channel()
            await channel.set_qos(prefetch_count=4)
            queue = await channel.declare_queue(name, exclusive=True, auto_delete=True)
        for exchange, key in bindings:
            with aio_errors(f"bind request queue {name} to {exchange}"):
                await queue.bind(exchange, key)
        with aio_errors(f"consume {name}"):
            await queue.consume(on_message, no_ack=True)
        return queue.name

    async def queue_counts(self, name: str) -> tuple[int, int] | None:
        """(ready messages, consumers) of ``name``; None when it does not exist."""
        channel = await self._scratch()
        try:
            with aio_errors(f"look at queue {name}"):
                queue = await channel.declare_queue(name, passive=True)
        except EntityMissing:
            return None
        finally:
            await _close(channel)
        result = queue.declaration_result
        return int(result.message_count or 0), int(result.consumer_count or 0)

    async def peek(self, name: str) -> tuple[bytes, dict[str, Any]] | None:
        """The head message of ``name`` (body, headers) without moving it.

        On RabbitMQ 3.10 quorum queues an explicit nack(requeue) puts the message at the
        BACK, but a message still unacked when its channel closes keeps its place
        (checked by tests/integration/test_status_dlq.py). Only the broker's
        x-delivery-count rises.
        """
        channel = await self._scratch()
        try:
            with aio_errors(f"look at queue {name}"):
                queue = await channel.declare_queue(name, passive=True)
                message = await queue.get(no_ack=False, fail=False)
        except EntityMissing:
            return None
        finally:
            await _close(channel)
        return None if message is None else (message.body, dict(message.headers))
