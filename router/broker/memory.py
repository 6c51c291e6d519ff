"""An in-memory broker with the seam's shape, for unit tests of the daemons' logic.

It routes like RabbitMQ does for what crmsync uses — direct and topic exchanges, the
default exchange, sender-selected distribution (``BCC``), mandatory publishes (returned
as :class:`~router.errors.Unroutable`), prefetch, ack with ``multiple``, nack with
requeue (``redelivered`` set) — so the router's pipeline and control server run against
it unchanged (``Router(config, broker=MemoryBroker().connect)``). It does not model
TTLs, dead-lettering, delivery limits or permissions: integration tests cover those on
the real RabbitMQ.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from router.broker.base import Handler
from router.config import BrokerConfig
from router.errors import EntityMissing, Unroutable
from router.messages import Delivery, Outgoing
from router.topology import HUB_EXCHANGES, QueueSpec, hub_queues


def _topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: ``*`` is exactly one word, ``#`` zero or more."""

    def match(pat: list[str], words: list[str]) -> bool:
        if not pat:
            return not words
        if pat[0] == "#":
            return any(match(pat[1:], words[i:]) for i in range(len(words) + 1))
        return bool(words) and pat[0] in ("*", words[0]) and match(pat[1:], words[1:])

    return match(pattern.split("."), key.split("."))


@dataclass
class _Consumer:
    handler: Handler
    prefetch: int
    auto_ack: bool
    unacked: dict[int, Outgoing] = field(default_factory=dict)


@dataclass
class _Queue:
    name: str
    ready: deque[tuple[Outgoing, bool]] = field(default_factory=deque)  # (message, redelivered)
    consumers: list[_Consumer] = field(default_factory=list)
    bindings: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Settle:
    broker: MemoryBroker
    queue: _Queue
    consumer: _Consumer
    tag: int

    async def ack(self, multiple: bool = False) -> None:
        tags = [t for t in self.consumer.unacked if t <= self.tag] if multiple else [self.tag]
        for tag in tags:
            self.consumer.unacked.pop(tag, None)
        self.broker._pump(self.queue)

    async def nack(self, multiple: bool = False, requeue: bool = True) -> None:
        tags = [t for t in self.consumer.unacked if t <= self.tag] if multiple else [self.tag]
        back = [self.consumer.unacked.pop(t) for t in tags if t in self.consumer.unacked]
        if requeue:
            self.queue.ready.extendleft((m, True) for m in reversed(back))
        self.broker._pump(self.queue)


class MemoryBroker:
    """One broker (think: one vhost); every :meth:`connect` shares its queues."""

    def __init__(self) -> None:
        self.exchanges: dict[str, str] = {}  # name -> kind
        self.queues: dict[str, _Queue] = {}
        self.published: list[Outgoing] = []  # everything routed, in order (for assertions)
        self._tags = itertools.count(1)
        self._names = itertools.count(1)
        self._pumping: set[str] = set()

    async def connect(self, _cfg: BrokerConfig | None = None, _name: str = "") -> MemoryConnection:
        return MemoryConnection(self)

    def messages(self, queue: str) -> list[Outgoing]:
        """What ``queue`` holds ready, in order (not what consumers hold unacked)."""
        return [m for m, _ in self.queues[queue].ready]

    def declare_queue(self, spec: QueueSpec) -> None:
        queue = self.queues.setdefault(spec.name, _Queue(spec.name))
        for binding in spec.bindings:
            if binding[0] not in self.exchanges:
                raise EntityMissing(f"bind {spec.name}: no exchange {binding[0]}")
            if binding not in queue.bindings:
                queue.bindings.append(binding)

    def route(self, item: Outgoing) -> None:
        if item.exchange and item.exchange not in self.exchanges:
            raise EntityMissing(f"publish to {item.exchange}: no such exchange")
        keys = [item.routing_key, *item.headers.get("BCC", ())]
        message = replace(item, headers={k: v for k, v in item.headers.items() if k != "BCC"})
        targets: list[_Queue] = []
        for queue in self.queues.values():
            if item.exchange == "":
                hit = queue.name in keys
            elif self.exchanges[item.exchange] == "topic":
                hit = any(
                    ex == item.exchange and _topic_matches(p, k)
                    for ex, p in queue.bindings
                    for k in keys
                )
            else:
                hit = any(ex == item.exchange and p in keys for ex, p in queue.bindings)
            if hit:
                targets.append(queue)
        if not targets and item.mandatory:
            raise Unroutable(f"{item.exchange or '(default)'}/{item.routing_key} was returned")
        self.published.append(message)
        for queue in targets:
            queue.ready.append((message, False))
            self._pump(queue)

    def _pump(self, queue: _Queue) -> None:
        """Hand ready messages to consumers with room under their prefetch (soon, not now:
        a consumer callback never runs inside the publisher's call)."""
        if queue.name not in self._pumping and queue.consumers and queue.ready:
            self._pumping.add(queue.name)
            asyncio.get_running_loop().create_task(self._deliver(queue))

    async def _deliver(self, queue: _Queue) -> None:
        try:
            while queue.ready:
                consumer = next(
                    (c for c in queue.consumers if len(c.unacked) < c.prefetch or c.auto_ack),
                    None,
                )
                if consumer is None:
                    return
                message, redelivered = queue.ready.popleft()
                tag = next(self._tags)
                if not consumer.auto_ack:
                    consumer.unacked[tag] = message
                await consumer.handler(
                    Delivery(
                        body=message.body,
                        routing_key=message.routing_key,
                        settle=_Settle(self, queue, consumer, tag),
                        message_id=message.message_id,
                        user_id=message.user_id,
                        redelivered=redelivered,
                        headers=dict(message.headers),
                        reply_to=message.reply_to,
                        correlation_id=message.correlation_id,
                    )
                )
        finally:
            self._pumping.discard(queue.name)


class MemoryPublisher:
    def __init__(self, broker: MemoryBroker, signer: str | None = None) -> None:
        self._broker = broker
        self._signer = signer

    async def publish_many(self, items: Sequence[Outgoing]) -> None:
        for item in items:
            await self.publish(item)

    async def publish(self, item: Outgoing) -> None:
        if self._signer and not item.user_id:
            item = replace(item, user_id=self._signer)
        self._broker.route(item)


class MemoryConnection:
    def __init__(self, broker: MemoryBroker, user: str | None = None) -> None:
        self.broker = broker
        self._user = user

    @property
    def user(self) -> str | None:
        return self._user

    async def declare(
        self, queues: Iterable[QueueSpec] = (), *, hub: bool = True, check_exchanges: bool = False
    ) -> None:
        for spec in HUB_EXCHANGES:
            if check_exchanges and spec.name not in self.broker.exchanges:
                raise EntityMissing(f"check exchange {spec.name}: no such exchange")
            self.broker.exchanges.setdefault(spec.name, spec.kind)
        for queue in [*(hub_queues() if hub else []), *queues]:
            self.broker.declare_queue(queue)

    async def publisher(self, *, signed: bool = False) -> MemoryPublisher:
        return MemoryPublisher(self.broker, self._user if signed else None)

    async def consume(
        self, queue: str | QueueSpec, handler: Handler, *, prefetch: int, exclusive: bool = False
    ) -> None:
        if isinstance(queue, QueueSpec):
            self.broker.declare_queue(queue)
            queue = queue.name
        found = self.broker.queues.get(queue)
        if found is None:
            raise EntityMissing(f"consume {queue}: no such queue")
        found.consumers.append(_Consumer(handler, prefetch, auto_ack=False))
        self.broker._pump(found)

    async def reply_queue(self, handler: Handler) -> str:
        name = f"amq.gen-{next(self.broker._names)}"
        queue = self.broker.queues[name] = _Queue(name)
        queue.consumers.append(_Consumer(handler, 0, auto_ack=True))
        return name

    async def serve(self, bindings: Iterable[tuple[str, str]], handler: Handler) -> str:
        name = f"amq.gen-{next(self.broker._names)}"
        queue = self.broker.queues[name] = _Queue(name)
        queue.bindings.extend(bindings)
        queue.consumers.append(_Consumer(handler, 0, auto_ack=True))
        return name

    async def queue_counts(self, name: str) -> tuple[int, int] | None:
        queue = self.broker.queues.get(name)
        return None if queue is None else (len(queue.ready), len(queue.consumers))

    async def peek(self, name: str) -> tuple[bytes, dict[str, Any]] | None:
        queue = self.broker.queues.get(name)
        if queue is None or not queue.ready:
            return None
        message, _ = queue.ready[0]
        return message.body, dict(message.headers)

    async def close(self) -> None:
        return None
