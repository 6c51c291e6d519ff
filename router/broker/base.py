"""What the daemons need of a broker, as protocols: the AMQP client
(:mod:`router.broker.aio`) and the in-memory stand-in (:mod:`router.broker.memory`)
both provide them, so the router's pipeline and control server run on either."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

from router.messages import Delivery, Outgoing
from router.topology import QueueSpec

Handler = Callable[[Delivery], Awaitable[None]]


class BrokerPublisher(Protocol):
    async def publish_many(self, items: Sequence[Outgoing]) -> None:
        """Return once the broker confirmed every item, or raise a crmsync error."""

    async def publish(self, item: Outgoing) -> None: ...


class BrokerConnection(Protocol):
    @property
    def user(self) -> str | None:
        """The broker user this connection logged in as (the ``user_id`` it may set)."""

    async def declare(
        self, queues: Iterable[QueueSpec] = (), *, hub: bool = True, check_exchanges: bool = False
    ) -> None: ...

    async def publisher(self, *, signed: bool = False) -> BrokerPublisher: ...

    async def consume(
        self, queue: str | QueueSpec, handler: Handler, *, prefetch: int, exclusive: bool = False
    ) -> None: ...

    async def reply_queue(self, handler: Handler) -> str: ...

    async def serve(self, bindings: Iterable[tuple[str, str]], handler: Handler) -> str: ...

    async def queue_counts(self, name: str) -> tuple[int, int] | None: ...

    async def peek(self, name: str) -> tuple[bytes, dict[str, Any]] | None: ...

    async def close(self) -> None: ...
