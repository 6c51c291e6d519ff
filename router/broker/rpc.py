"""Request/reply with the router over ``crmsync.control``.

Requests and replies are the typed models of :mod:`router.control`; this module only
moves them: publish with ``reply_to`` and a correlation id, wait on an exclusive reply
queue, time out with a line that says what to check.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from router.broker.aio import connect
from router.broker.base import BrokerConnection, BrokerPublisher
from router.config import BrokerConfig
from router.control import R, Request, pack, parse_reply, unpack
from router.errors import EntityMissing, RouterUnavailable
from router.messages import Delivery, Outgoing
from router.topology import CONTROL

HEARTBEAT_TTL = 60.0  # seconds: an old heartbeat says nothing about liveness now


class RpcClient:
    """Calls the router and waits for its answer on an exclusive reply queue."""

    def __init__(self, connection: BrokerConnection) -> None:
        self._connection = connection
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._reply_to: str | None = None
        self._publisher: BrokerPublisher | None = None

    async def _ensure(self) -> tuple[BrokerPublisher, str]:
        if self._reply_to is None:
            try:
                self._reply_to = await self._connection.reply_queue(self._on_reply)
            except EntityMissing:  # its binding on crmsync.control
                raise _no_control() from None
        if self._publisher is None:
            self._publisher = await self._connection.publisher()
        return self._publisher, self._reply_to

    async def _on_reply(self, message: Delivery) -> None:
        future = self._pending.pop(message.correlation_id or "", None)
        if future is None or future.done():
            return  # an answer to a call that timed out
        try:
            future.set_result(unpack(message.body))
        except Exception as e:  # a garbled answer fails the call, not the consumer
            future.set_exception(RouterUnavailable(f"the router's answer is garbled: {e}"))

    async def _publish(self, item: Outgoing) -> None:
        publisher, _ = await self._ensure()
        try:
            await publisher.publish(item)
        except EntityMissing:
            self._publisher = None  # the broker closed that channel
            raise _no_control() from None

    async def call(self, routing_key: str, payload: Any, timeout: float = 10.0) -> Any:
        """Send ``payload`` (any msgpack value) and return the raw answer."""
        return await self.call_raw(routing_key, pack(payload), timeout)

    async def call_raw(self, routing_key: str, body: bytes, timeout: float = 10.0) -> Any:
        _, reply_to = await self._ensure()
        correlation_id = str(uuid.uuid4())
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        try:
            await self._publish(
                Outgoing(
                    CONTROL,
                    routing_key,
                    body,
                    correlation_id=correlation_id,
                    reply_to=reply_to,
                    expiration=timeout,
                    mandatory=False,
                    # Verified by the broker: the router authorises requests by it.
                    user_id=self._connection.user,
                )
            )
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise RouterUnavailable(
                f"the router did not answer '{routing_key}' within {timeout:g}s; "
                "is 'crmsync router' running? (see 'crmsync status')"
            ) from None
        finally:
            self._pending.pop(correlation_id, None)

    async def request(self, request: Request, expected: type[R], timeout: float = 10.0) -> R:
        """The router's typed answer; its refusal as a one-line :class:`CrmsyncError`."""
        raw = await self.call_raw(request.routing_key, request.body(), timeout)
        return parse_reply(raw, expected, request.routing_key)

    async def ask_adapter(
        self, request: Request, expected: type[R], adapter: str, timeout: float = 60.0
    ) -> R:
        """:meth:`request` to an adapter: its silence names the adapter, not the router."""
        try:
            raw = await self.call_raw(request.routing_key, request.body(), timeout)
        except RouterUnavailable:
            raise RouterUnavailable(
                f"adapter {adapter!r} did not answer within {timeout:g}s; is "
                f"'crmsync adapter' running for {adapter}? (see 'crmsync status')"
            ) from None
        return parse_reply(raw, expected, request.routing_key)

    async def notify(self, request: Request) -> None:
        """Fire and forget (heartbeats)."""
        await self._publish(
            Outgoing(
                CONTROL,
                request.routing_key,
                request.body(),
                expiration=HEARTBEAT_TTL,
                mandatory=False,
                user_id=self._connection.user,
            )
        )


def call_router(cfg: BrokerConfig, request: Request, expected: type[R], timeout: float) -> R:
    """One request to the router from a short command."""

    async def go() -> R:
        connection = await connect(cfg, "crmsync-cli")
        try:
            return await RpcClient(connection).request(request, expected, timeout=timeout)
        finally:
            await connection.close()

    return asyncio.run(go())


def call_adapter(
    cfg: BrokerConfig, request: Request, expected: type[R], adapter: str, timeout: float
) -> R:
    """One request to an adapter from a short command (its silence names the adapter)."""

    async def go() -> R:
        connection = await connect(cfg, "crmsync-cli")
        try:
            return await RpcClient(connection).ask_adapter(request, expected, adapter, timeout)
        finally:
            await connection.close()

    return asyncio.run(go())


def _no_control() -> RouterUnavailable:
    return RouterUnavailable(
        f"{CONTROL} does not exist on this broker/vhost: no router has run here yet "
        "(start 'crmsync router' or run 'crmsync topology declare')"
    )
