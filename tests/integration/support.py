"""Helpers shared by the router integration tests (this module holds no tests).

The router runs in-process on the test's event loop against the test's own vhost; the
tests talk to it the way adapters do: raw publishes to ``crmsync.changes``, registration
over ``crmsync.control``, and reads of the sink and invalid queues.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from router import topology
from router.broker.aio import Connection
from router.broker.rpc import RpcClient
from router.config import RouterConfig
from router.daemon import Router
from router.events import encode_dict
from tests import factories

if TYPE_CHECKING:
    from router.daemon.stats import Stats
    from router.state import RouterStore

ENTITIES = {"contact": ["email", "first_name"]}

# tests/factories.py under the names older tests import from here.
event = factories.wire_event
new_id = factories.new_id


def router_config(amqp: str, db: Path, **tuning: Any) -> RouterConfig:
    raw: dict[str, Any] = {"broker": {"url": amqp}, "state": {"url": f"sqlite:///{db}"}}
    if tuning:
        raw["router"] = tuning
    return RouterConfig.model_validate(raw)


async def start_router(amqp: str, db: Path, **tuning: Any) -> tuple[Router, asyncio.Task[None]]:
    router = Router(router_config(amqp, db, **tuning))
    task = asyncio.create_task(router.run())
    ready = asyncio.create_task(router.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if ready not in done:
        ready.cancel()
        if task in done:
            task.result()  # re-raise why the router died
        raise AssertionError("router did not become ready within 10s")
    return router, task


async def stop_router(router: Router, task: asyncio.Task[None]) -> None:
    router.stop()
    await asyncio.wait_for(task, 10)


@dataclass
class RunningRouter:
    """A router running in-process on the test's event loop (see ``running_router``)."""

    router: Router
    task: asyncio.Task[None]
    _stopped: bool = field(default=False, repr=False)

    @property
    def stats(self) -> Stats:
        return self.router.stats

    @property
    def store(self) -> RouterStore:
        return self.router.store

    async def stop(self) -> None:
        """Stop it (it drains) and wait until it has; re-raises why it died, if it did.
        Stopping it again does nothing."""
        if not self._stopped:
            self._stopped = True
            await stop_router(self.router, self.task)


@asynccontextmanager
async def running_router(amqp: str, db: Path, **tuning: Any) -> AsyncIterator[RunningRouter]:
    """A router on ``amqp``'s vhost with its state in ``db``, ready for the block and
    stopped after it, unless the block stopped it first. For a test that restarts the
    router; a test that needs one router throughout takes the ``router`` fixture."""
    router, task = await start_router(amqp, db, **tuning)
    running = RunningRouter(router, task)
    try:
        yield running
    finally:
        await running.stop()


async def register(
    connection: AbstractRobustConnection,
    name: str,
    actor: str | None = None,
    entities: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    reply: dict[str, Any] = await RpcClient(Connection(connection)).call(
        f"register.{name}",
        {"actor": actor, "entities": entities or ENTITIES, "version": "t"},
        timeout=5.0,
    )
    return reply


async def publish_raw(
    channel: AbstractChannel,
    body: bytes,
    routing_key: str,
    *,
    message_id: str | None = None,
    record_key: str | None = None,
) -> None:
    exchange = await channel.get_exchange(topology.CHANGES, ensure=False)
    headers = {topology.RECORD_KEY_HEADER: record_key} if record_key else None
    await exchange.publish(
        aio_pika.Message(
            body,
            content_type="application/msgpack",
            message_id=message_id,
            headers=headers,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key,
        mandatory=True,
    )


async def publish_event(channel: AbstractChannel, payload: dict[str, Any]) -> bytes:
    body = encode_dict(payload)
    await publish_raw(
        channel,
        body,
        f"{payload['source']}.{payload['entity']}.{payload['op']}",
        message_id=payload["event_id"],
        record_key=payload["record_id"],
    )
    return body


async def collect(
    channel: AbstractChannel, queue_name: str, count: int, timeout: float = 5.0
) -> list[AbstractIncomingMessage]:
    """Take ``count`` messages from a queue (no ack), failing if they do not come in time."""
    queue = await channel.declare_queue(queue_name, passive=True)
    got: list[AbstractIncomingMessage] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        message = await queue.get(no_ack=True, fail=False)
        if message is not None:
            got.append(message)
            continue
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{queue_name}: expected {count} message(s) within {timeout}s, got {len(got)}"
            )
        await asyncio.sleep(0.05)
    return got


async def depth(connection: AbstractRobustConnection, queue_name: str) -> int:
    """Ready messages in a queue, read with a passive declare on a throwaway channel."""
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(queue_name, passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await channel.close()


async def poll(
    check: Callable[[], bool] | Callable[[], Awaitable[bool]], timeout: float = 5.0
) -> bool:
    """Whether ``check`` (asked every 50 ms) holds within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)


async def eventually(
    check: Callable[[], bool] | Callable[[], Awaitable[bool]],
    timeout: float = 5.0,
    what: str = "condition",
) -> None:
    if not await poll(check, timeout):
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def logged(logger: str) -> Iterator[list[logging.LogRecord]]:
    """The records ``logger`` emits meanwhile, whatever handlers and propagation another
    test in this process (the CLI configures logging) left it with."""
    handler = _Records()
    target = logging.getLogger(logger)
    target.addHandler(handler)
    try:
        yield handler.records
    finally:
        target.removeHandler(handler)
