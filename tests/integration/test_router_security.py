"""DESIGN "Security": where adapters have their own broker users, the router accepts an
event only when the broker-verified ``user_id`` is the user bound to its source."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

from router import topology
from router.config import RouterConfig
from router.daemon import Router
from router.events import decode, encode_dict
from tests.integration.support import collect, depth, event, new_id, register, stop_router

pytestmark = pytest.mark.integration


async def _publish(
    channel: aio_pika.abc.AbstractChannel, body: bytes, rk: str, user_id: str | None
) -> None:
    exchange = await channel.get_exchange(topology.CHANGES, ensure=False)
    await exchange.publish(
        aio_pika.Message(
            body,
            content_type="application/msgpack",
            user_id=user_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        rk,
    )


async def test_events_must_come_from_the_sources_own_user(
    amqp: str, tmp_path: Path, connection: AbstractRobustConnection
) -> None:
    config = RouterConfig.model_validate(
        {
            "broker": {"url": amqp},
            "state": {"url": f"sqlite:///{tmp_path}/router.db"},
            # guest is the only user a test broker has: bind legacy to it and sales to another.
            "security": {"adapter_users": {"legacy": "guest", "sales": "crmsync-sales"}},
        }
    )
    router = Router(config)
    task = asyncio.create_task(router.run())
    await asyncio.wait_for(router.ready.wait(), 10)
    try:
        for name in ("legacy", "sales", "mktg"):
            assert (await register(connection, name))["ok"]
        channel = await connection.channel()

        unsigned = encode_dict(event("legacy", new_id(), {"legacy": 1}, {"email": "a@x.io"}))
        await _publish(channel, unsigned, "legacy.contact.upsert", None)
        spoofed = encode_dict(event("sales", new_id(), {"sales": 1}, {"email": "b@x.io"}))
        # guest (verified by the broker) claims to be sales, which is bound to another user
        await _publish(channel, spoofed, "sales.contact.upsert", "guest")
        refused = await collect(channel, topology.INVALID, 2)
        assert {m.body for m in refused} == {unsigned, spoofed}
        assert {m.headers[topology.REASON_HEADER] for m in refused} == {"spoofed-source"}

        signed = event("legacy", new_id(), {"legacy": 1}, {"email": "c@x.io"})
        await _publish(channel, encode_dict(signed), "legacy.contact.upsert", "guest")
        # mktg has no bound user: the registry check alone applies
        free = event("mktg", new_id(), {"mktg": 1}, {"email": "d@x.io"})
        await _publish(channel, encode_dict(free), "mktg.contact.upsert", None)
        delivered = await collect(channel, topology.sink_queue("sales"), 2)
        assert {decode(m.body).record_id for m in delivered} == {
            signed["record_id"],
            free["record_id"],
        }
        assert await depth(connection, topology.INVALID) == 0
        assert router.stats.verdicts["accepted"] == 2
    finally:
        await stop_router(router, task)


async def test_broker_rejects_a_user_id_that_is_not_the_connections_user(
    amqp: str, connection: AbstractRobustConnection
) -> None:
    """The property the check above relies on: RabbitMQ verifies user_id."""
    from router.broker.aio import Connection

    await Connection(connection).declare()
    channel = await connection.channel()
    with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
        await _publish(channel, b"x", "legacy.contact.upsert", "crmsync-legacy")
