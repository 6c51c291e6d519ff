"""``crmsync status``: adapters registered and alive, queue depths, router counters."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiormq
from aio_pika.abc import AbstractRobustConnection

from router import topology
from router.control import RpcClient
from router.errors import RouterUnavailable


@dataclass(frozen=True)
class QueueDepth:
    name: str
    messages: int | None  # None: the queue does not exist
    consumers: int | None
    oldest_failure_age: float | None = None  # DLQs: seconds since the head entry first failed


def failed_at(headers: dict[str, Any] | None) -> float | None:
    """When a DLQ entry first failed: crmsync's header, else the broker's x-death time
    (poison messages dead-lettered by the sink's delivery limit carry only that)."""
    headers = headers or {}
    first = headers.get(topology.FIRST_FAILED_HEADER)
    if isinstance(first, int) and not isinstance(first, bool):
        return first / 1000.0  # epoch ms
    if isinstance(first, float):
        return first  # seconds, as written before the header became milliseconds
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[-1], dict):
        when = deaths[-1].get("time")
        if isinstance(when, datetime):
            return when.replace(tzinfo=when.tzinfo or UTC).timestamp()
    return None


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
        return failed_at(dict(message.headers or {})) if message is not None else None
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
