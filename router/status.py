"""``crmsync status``: adapters registered and alive, queue depths, router counters."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiormq
from aio_pika.abc import AbstractRobustConnection

from router import topology
from router.control import RpcClient
from router.dlq import read_entry
from router.errors import RouterUnavailable


@dataclass(frozen=True)
class QueueDepth:
    name: str
    messages: int | None  # None: the queue does not exist
    consumers: int | None
    oldest_failure_age: float | None = None  # DLQs: seconds since the head entry first failed


async def _head_failed_at(connection: AbstractRobustConnection, name: str) -> float | None:
    """Peek at a DLQ's head without moving it.

    On RabbitMQ 3.10 quorum queues an explicit nack(requeue) puts the message at the
    BACK, but a message still unacked when its channel closes keeps its place (checked
    by tests/integration/test_status_dlq.py). Only the broker's x-delivery-count rises.
    """
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(name, passive=True)
        message = await queue.get(no_ack=False, fail=False)
        if message is None:
            return None
        # The same reading of the failure headers as `crmsync dlq list` uses.
        return read_entry(name, 0, message.body, message.headers).first_failed_at
    finally:
        if not channel.is_closed:
            await channel.close()


async def queue_depths(connection: AbstractRobustConnection, names: list[str]) -> list[QueueDepth]:
    depths = []
    for name in names:
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
            result = queue.declaration_result
            age = None
            if name.startswith("crmsync.dlq.") and result.message_count:
                first = await _head_failed_at(connection, name)
                age = round(time.time() - first, 1) if first is not None else None
            depths.append(QueueDepth(name, result.message_count, result.consumer_count, age))
        except aiormq.exceptions.ChannelNotFoundEntity:
            depths.append(QueueDepth(name, None, None))
        finally:
            if not channel.is_closed:
                await channel.close()
    return depths


async def gather_status(
    connection: AbstractRobustConnection, timeout: float = 3.0
) -> dict[str, Any]:
    """Everything ``crmsync status`` shows, as plain data (the ``--json`` output)."""
    rpc = RpcClient(connection)
    router: dict[str, Any] | None
    try:
        router = await rpc.call("op.status", {}, timeout=timeout)
    except RouterUnavailable:
        router = None
    now = time.time()
    adapters = []
    queues = [topology.INGRESS, topology.INVALID, topology.ROUTER_CONTROL]
    if router:
        limit = float(router.get("heartbeat_timeout", 30.0))
        for a in router["adapters"]:
            age = now - a["last_heartbeat"]
            adapters.append({**a, "heartbeat_age": round(age, 1), "alive": age <= limit})
            queues += [topology.sink_queue(a["name"]), topology.dlq_queue(a["name"])]
    depths = await queue_depths(connection, queues)
    return {
        "router": {
            "alive": router is not None,
            **(
                {
                    k: router[k]
                    for k in (
                        "hub_actor",
                        "uptime",
                        "last_batch_age",
                        "verdicts",
                        "invalid",
                        "store",
                    )
                }
                if router
                else {}
            ),
        },
        "adapters": adapters,
        "queues": [
            {
                "name": d.name,
                "messages": d.messages,
                "consumers": d.consumers,
                "oldest_failure_age": d.oldest_failure_age,
            }
            for d in depths
        ],
        "drained": router is not None
        and all(
            (d.messages or 0) == 0
            for d in depths
            if d.name != topology.INVALID and not d.name.startswith("crmsync.dlq.")
        ),
    }


def run_status(connection_factory: Any, timeout: float) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        connection = await connection_factory()
        try:
            return await gather_status(connection, timeout)
        finally:
            await connection.close()

    return asyncio.run(go())
