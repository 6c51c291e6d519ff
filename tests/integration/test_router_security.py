"""DESIGN "Security" and issue 13 items 2-3, with real broker users of the test's own:
with ``[security] adapter_users`` the router accepts an event only when the broker-verified
``user_id``, the routing key and the body's source name one adapter (an operator may replay
for any), and serves control requests only to the adapter itself or an operator."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import prometheus_client as prom
import pytest
from aio_pika.abc import AbstractRobustConnection

from router import topology
from router.broker.aio import Connection
from router.broker.rpc import RpcClient
from router.config import RouterConfig
from router.daemon import Router
from router.events import decode, encode_dict
from tests.broker import create_user, delete_user, user_url
from tests.integration.support import collect, event, new_id, register, stop_router

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


@pytest.fixture
def users(vhost: str) -> Iterator[dict[str, tuple[str, str]]]:
    """Broker users of this test's own (name, password) for legacy, sales, an operator."""
    made = {role: create_user(vhost, role) for role in ("legacy", "sales", "ops")}
    try:
        yield made
    finally:
        for name, _ in made.values():
            delete_user(name)


async def _as(vhost: str, user: tuple[str, str]) -> AbstractRobustConnection:
    return await aio_pika.connect_robust(user_url(vhost, *user))


async def _secured_router(
    amqp: str, tmp_path: Path, users: dict[str, tuple[str, str]]
) -> tuple[Router, asyncio.Task[None]]:
    config = RouterConfig.model_validate(
        {
            "broker": {"url": amqp},
            "state": {"url": f"sqlite:///{tmp_path}/router.db"},
            "security": {
                "adapter_users": {"legacy": users["legacy"][0], "sales": users["sales"][0]},
                "operator_users": [users["ops"][0]],
            },
        }
    )
    router = Router(config)
    task = asyncio.create_task(router.run())
    await asyncio.wait_for(router.ready.wait(), 10)
    return router, task


async def test_an_event_is_accepted_only_from_its_own_adapters_user(
    amqp: str, vhost: str, tmp_path: Path, users: dict[str, tuple[str, str]]
) -> None:
    router, task = await _secured_router(amqp, tmp_path, users)
    legacy, sales, ops = [await _as(vhost, users[r]) for r in ("legacy", "sales", "ops")]
    guest = await aio_pika.connect_robust(amqp)
    try:
        assert (await register(legacy, "legacy"))["ok"]
        assert (await register(sales, "sales"))["ok"]
        as_legacy, as_guest, as_ops = [await c.channel() for c in (legacy, guest, ops)]
        lu, ou = users["legacy"][0], users["ops"][0]

        signed = event("legacy", new_id(), {"legacy": 1}, {"email": "c@x.io"})
        await _publish(as_legacy, encode_dict(signed), "legacy.contact.upsert", lu)
        # legacy's credentials claiming to be sales: in the body, in the key, in both
        as_sales = encode_dict(event("sales", new_id(), {"sales": 1}, {"email": "b@x.io"}))
        await _publish(as_legacy, as_sales, "sales.contact.upsert", lu)
        await _publish(as_legacy, as_sales, "legacy.contact.upsert", lu)
        lying_key = encode_dict(event("legacy", new_id(), {"legacy": 2}, {"email": "d@x.io"}))
        await _publish(as_legacy, lying_key, "sales.contact.upsert", lu)
        # a user no adapter is bound to, and no user_id at all
        unlisted = encode_dict(event("mktg", new_id(), {"mktg": 1}, {"email": "e@x.io"}))
        await _publish(as_guest, unlisted, "mktg.contact.upsert", "guest")
        unsigned = encode_dict(event("legacy", new_id(), {"legacy": 3}, {"email": "f@x.io"}))
        await _publish(as_legacy, unsigned, "legacy.contact.upsert", None)

        refused = await collect(as_guest, topology.INVALID, 5)
        assert {m.headers[topology.REASON_HEADER] for m in refused} == {"spoofed-source"}
        assert sorted(m.body for m in refused) == sorted(
            [as_sales, as_sales, lying_key, unlisted, unsigned]
        )
        # An operator replays the sales event: judged by the operator's rights.
        await _publish(as_ops, as_sales, "sales.contact.upsert", ou)
        to_sales = await collect(as_guest, topology.sink_queue("sales"), 1)
        to_legacy = await collect(as_guest, topology.sink_queue("legacy"), 1)
        assert decode(to_sales[0].body).record_id == signed["record_id"]
        assert decode(to_legacy[0].body).source == "sales"
        assert router.stats.verdicts["accepted"] == 2
    finally:
        for c in (legacy, sales, ops, guest):
            await c.close()
        await stop_router(router, task)


async def test_one_adapters_credentials_cannot_register_as_remove_edit_or_resolve(
    amqp: str, vhost: str, tmp_path: Path, users: dict[str, tuple[str, str]]
) -> None:
    router, task = await _secured_router(amqp, tmp_path, users)
    legacy, sales, ops = [await _as(vhost, users[r]) for r in ("legacy", "sales", "ops")]
    denied_before = _denied()
    try:
        assert (await register(sales, "sales"))["ok"]
        rpc = RpcClient(Connection(legacy))
        attempts = {
            "register.sales": {"actor": None, "entities": {"contact": ["email"]}, "version": "t"},
            "register.mktg": {"actor": None, "entities": {"contact": ["email"]}, "version": "t"},
            "op.adapter-remove": {"name": "sales"},
            "op.edit": {"record_id": new_id(), "fields": {"email": "x@y.io"}},
            "op.conflicts.resolve": {"id": "c-1", "by": "ops", "take": "sales"},
            "op.status": {},
        }
        for key, payload in attempts.items():
            reply = await rpc.call(key, payload, timeout=5)
            assert reply["ok"] is False and reply["error"].startswith("denied: "), (key, reply)
        assert _denied() - denied_before == len(attempts)
        # The registry is as it was; an operator sees it, the real sales still works.
        status = await RpcClient(Connection(ops)).call("op.status", {}, timeout=5)
        assert status["ok"] is not False and [a["name"] for a in status["adapters"]] == ["sales"]
        assert (await register(sales, "sales"))["ok"]
    finally:
        for c in (legacy, sales, ops):
            await c.close()
        await stop_router(router, task)


def _denied() -> float:
    return sum(
        sample.value
        for metric in prom.REGISTRY.collect()
        if metric.name == "crmsync_router_control_denied"
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


async def test_broker_rejects_a_user_id_that_is_not_the_connections_user(
    amqp: str, connection: AbstractRobustConnection
) -> None:
    """The property the check above relies on: RabbitMQ verifies user_id."""
    from router.broker.aio import Connection

    await Connection(connection).declare()
    channel = await connection.channel()
    with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
        await _publish(channel, b"x", "legacy.contact.upsert", "crmsync-legacy")
