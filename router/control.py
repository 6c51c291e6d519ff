"""Request/reply on ``crmsync.control``: registration, heartbeats and operator requests.

Routing keys: ``register.<adapter>``, ``heartbeat.<adapter>``, ``op.<verb>``. Bodies are
msgpack maps; replies carry ``ok`` and either a result or a one-line ``error``.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aio_pika
import aiormq
import msgpack
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from router.config import BrokerConfig
from router.errors import CrmsyncError, RouterUnavailable
from router.topology import CONTROL


def pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def unpack(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False)


class RpcClient:
    """Calls the router and waits for its answer on an exclusive reply queue."""

    def __init__(self, connection: AbstractRobustConnection) -> None:
        self._connection = connection
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._reply_queue: str | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None

    async def _ensure(self) -> tuple[aio_pika.abc.AbstractChannel, str]:
        if self._channel is None or self._channel.is_closed or self._reply_queue is None:
            self._channel = await self._connection.channel()
            queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.consume(self._on_reply, no_ack=True)
            self._reply_queue = queue.name
        return self._channel, self._reply_queue

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._pending.pop(message.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(unpack(message.body))

    async def _publish(self, routing_key: str, message: aio_pika.Message) -> None:
        channel, _ = await self._ensure()
        try:
            exchange = await channel.get_exchange(CONTROL, ensure=False)
            await exchange.publish(message, routing_key, mandatory=False)
        except aiormq.exceptions.ChannelNotFoundEntity:
            self._channel = None  # the broker closed it
            raise RouterUnavailable(
                f"{CONTROL} does not exist on this broker/vhost: no router has run here yet "
                "(start 'crmsync router' or run 'crmsync topology declare')"
            ) from None

    async def call(self, routing_key: str, payload: dict[str, Any], timeout: float = 10.0) -> Any:
        _, reply_to = await self._ensure()
        correlation_id = str(uuid.uuid4())
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        try:
            await self._publish(
                routing_key,
                aio_pika.Message(
                    pack(payload),
                    content_type="application/msgpack",
                    correlation_id=correlation_id,
                    reply_to=reply_to,
                    expiration=timeout,
                ),
            )
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise RouterUnavailable(
                f"the router did not answer '{routing_key}' within {timeout:g}s; "
                "is 'crmsync router' running? (see 'crmsync status')"
            ) from None
        finally:
            self._pending.pop(correlation_id, None)

    async def notify(self, routing_key: str, payload: dict[str, Any]) -> None:
        await self._publish(
            routing_key,
            aio_pika.Message(pack(payload), content_type="application/msgpack", expiration=60),
        )


def call_router(
    cfg: BrokerConfig, routing_key: str, payload: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """One request to the router from a short command; :class:`RouterUnavailable` if it
    does not answer, :class:`CrmsyncError` if its answer is not a map."""
    from router.transport import connect

    async def go() -> dict[str, Any]:
        connection = await connect(cfg, "crmsync-cli")
        try:
            reply = await RpcClient(connection).call(routing_key, payload, timeout=timeout)
        finally:
            await connection.close()
        if not isinstance(reply, dict):
            raise CrmsyncError(f"the router's answer to {routing_key} is not a map")
        return reply

    return asyncio.run(go())
