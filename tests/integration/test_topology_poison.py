"""The sink's delivery limit is the last line of defence: a message a crashing adapter
keeps taking back ends in the adapter's DLQ instead of looping for ever (issue 4)."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

from router import topology
from router.broker.aio import Connection
from tests.integration.support import depth, eventually

pytestmark = pytest.mark.integration


async def test_a_message_returned_too_often_is_dead_lettered_with_x_death(
    connection: AbstractRobustConnection,
) -> None:
    await Connection(connection).declare(topology.adapter_queues("sales", [("1s", 1.0)]))
    channel = await connection.channel()
    exchange = await channel.get_exchange(topology.DELIVERIES, ensure=False)
    await exchange.publish(aio_pika.Message(b"poison", delivery_mode=2), "sales")
    sink = await channel.declare_queue(topology.sink_queue("sales"), passive=True)

    returned = 0
    while (message := await sink.get(no_ack=False, fail=False)) is not None:
        await message.nack(requeue=True)  # what a crashing consumer amounts to
        returned += 1
        assert returned <= topology.SINK_DELIVERY_LIMIT + 1, "the limit did not stop it"
        await asyncio.sleep(0.01)
    assert returned == topology.SINK_DELIVERY_LIMIT + 1

    await eventually(lambda: depth(connection, topology.dlq_queue("sales")), what="the DLQ entry")
    assert await depth(connection, topology.sink_queue("sales")) == 0
    dlq = await channel.declare_queue(topology.dlq_queue("sales"), passive=True)
    entry = await dlq.get(no_ack=True)
    assert entry.body == b"poison"
    (death,) = entry.headers["x-death"]
    assert death["reason"] == "delivery_limit"
    assert death["queue"] == topology.sink_queue("sales")
