"""The router's batch pipeline and control server on the in-memory broker: the same
Router class as in production, no RabbitMQ (integration tests cover the real one)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from router import control, topology
from router.authz import Principals
from router.broker.memory import MemoryBroker, MemoryConnection, MemoryPublisher
from router.broker.rpc import RpcClient
from router.config import RouterConfig
from router.daemon import Router
from router.daemon.pipeline import judge
from router.events import decode, encode_dict
from router.messages import Delivery, Outgoing
from tests.integration.support import event, eventually


@dataclass
class Hub:
    broker: MemoryBroker
    client: MemoryConnection
    rpc: RpcClient
    router: Router

    async def publish(self, body: bytes, key: str = "legacy.contact.upsert") -> None:
        publisher = await self.client.publisher()
        await publisher.publish(Outgoing(topology.CHANGES, key, body, str(uuid.uuid4())))


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    broker = MemoryBroker()
    config = RouterConfig.model_validate(
        {"state": {"url": f"sqlite:///{tmp_path / 'router.db'}"}, "router": {"linger": "1ms"}}
    )
    router = Router(config, broker=broker.connect)
    task = asyncio.create_task(router.run())
    await asyncio.wait_for(router.ready.wait(), 10)
    client = await broker.connect()
    rpc = RpcClient(client)
    for name in ("legacy", "sales", "mktg"):
        request = control.Register(name=name, entities={"contact": ["email", "first_name"]})
        await rpc.request(request, control.Registered, timeout=5)
    try:
        yield Hub(broker, client, rpc, router)
    finally:
        router.stop()
        await asyncio.wait_for(task, 10)


async def test_an_accepted_event_fans_out_to_every_other_subscriber_once(hub: Hub) -> None:
    body = encode_dict(event("legacy", str(uuid.uuid4()), {"legacy": 1}, {"email": "a@x.io"}))
    await hub.publish(body)
    await eventually(lambda: hub.router.stats.verdicts["accepted"] == 1, what="accepted")
    for target in ("mktg", "sales"):
        await eventually(lambda t=target: len(hub.broker.messages(topology.sink_queue(t))) == 1)
        [delivered] = hub.broker.messages(topology.sink_queue(target))
        assert delivered.body == body  # the producer's validated bytes, not re-encoded
    assert hub.broker.messages(topology.sink_queue("legacy")) == []
    # One publish with the other target in BCC, not one per target.
    deliveries = [m for m in hub.broker.published if m.exchange == topology.DELIVERIES]
    assert len(deliveries) == 1
    await eventually(lambda: hub.router.store.counts()["outbox"] == 0, what="an empty outbox")


async def test_the_same_event_again_is_dropped_and_garbage_goes_to_invalid(hub: Hub) -> None:
    payload = event("legacy", str(uuid.uuid4()), {"legacy": 1}, {"email": "a@x.io"})
    await hub.publish(encode_dict(payload))
    await hub.publish(encode_dict(payload))
    await hub.publish(b"\xc1 not msgpack")
    # Batches keep delivery order: once the garbage is refused, both copies were judged
    # (the second as a repeat in the same batch, or as a duplicate in the next).
    await eventually(lambda: hub.router.stats.invalid["undecodable"] == 1, what="refusal")
    assert hub.router.stats.verdicts["accepted"] == 1
    assert set(hub.router.stats.verdicts) <= {"accepted", "duplicate"}
    [refused] = hub.broker.messages(topology.INVALID)
    assert refused.body == b"\xc1 not msgpack"
    assert refused.headers[topology.REASON_HEADER] == "undecodable"
    assert len(hub.broker.messages(topology.sink_queue("sales"))) == 1


async def test_control_requests_that_make_no_sense_get_an_error_reply(hub: Hub) -> None:
    replies = [
        await hub.rpc.call_raw("op.status", b"\xc1", timeout=5),
        await hub.rpc.call("op.frobnicate", {}, timeout=5),
        await hub.rpc.call("op.edit", {"record_id": "r1"}, timeout=5),
        await hub.rpc.call("op.adapter-remove", {"name": "ghost"}, timeout=5),
        await hub.rpc.call("op.edit", {"record_id": "r1", "set": {"email": "x@y.z"}}, timeout=5),
    ]
    assert [r["ok"] for r in replies] == [False] * 5
    errors = [str(r["error"]) for r in replies]
    assert "op.status: the body is not msgpack" in errors[0]
    assert errors[1] == "unknown control request 'op.frobnicate'"
    assert errors[2].startswith("op.edit: set: Field required")
    assert errors[3] == "no adapter named 'ghost' is registered"
    assert errors[4] == "no record r1 in the router's state"
    status = await hub.rpc.request(control.StatusRequest(), control.Status, timeout=5)
    assert [a.name for a in status.adapters] == ["legacy", "mktg", "sales"]


def _delivery(body: bytes, user: str | None = None, key: str = "legacy.contact.upsert") -> Delivery:
    class Unsettled:
        async def ack(self, multiple: bool = False) -> None:
            raise AssertionError("judging settles nothing")

        async def nack(self, multiple: bool = False, requeue: bool = True) -> None:
            raise AssertionError("judging settles nothing")

    return Delivery(body, key, Unsettled(), user_id=user)


def test_judging_names_why_each_message_is_refused_and_spots_repeats() -> None:
    good: dict[str, Any] = event("legacy", str(uuid.uuid4()), {"legacy": 1}, {"email": "a@x.io"})
    stranger = event("mktg", str(uuid.uuid4()), {"mktg": 1}, {"email": "b@x.io"})
    batch = [
        _delivery(encode_dict(good), user="crm-legacy"),
        _delivery(encode_dict(good), user="crm-legacy"),
        _delivery(encode_dict(good), user="intruder"),
        _delivery(encode_dict(stranger), user="crm-mktg", key="mktg.contact.upsert"),
        _delivery(encode_dict({**good, "op": "merge"})),
    ]
    users = Principals.of({"legacy": "crm-legacy", "mktg": "crm-mktg"})
    judged = judge(batch, {"legacy", "sales"}, users)
    assert [(j.reason, j.repeat) for j in judged] == [
        (None, False),
        (None, True),
        ("spoofed-source", False),
        ("unregistered-source", False),
        ("invalid-schema", False),
    ]
    assert judged[0].event == decode(encode_dict(good))
    assert "must be published by user 'crm-legacy', not 'intruder'" in judged[2].detail
    # Without [security] nobody's user is checked, only the registry.
    open_hub = judge(batch[2:4], {"legacy", "sales"}, Principals())
    assert [j.reason for j in open_hub] == [None, "unregistered-source"]


class _GatedPublisher(MemoryPublisher):
    """Holds the first batch of deliveries until released: its confirms are late."""

    def __init__(self, broker: MemoryBroker) -> None:
        super().__init__(broker)
        self.holding = asyncio.Event()
        self.release = asyncio.Event()
        self._held_once = False

    async def publish_many(self, items: Sequence[Outgoing]) -> None:
        if not self._held_once and any(i.exchange == topology.DELIVERIES for i in items):
            self._held_once = True
            self.holding.set()
            await self.release.wait()
        await super().publish_many(items)


async def test_a_later_batch_confirmed_first_is_not_acked_before_the_earlier_one(
    tmp_path: Path,
) -> None:
    broker = MemoryBroker()
    gated = _GatedPublisher(broker)

    async def connect(_cfg: object = None, _name: str = "") -> MemoryConnection:
        connection = MemoryConnection(broker)

        async def publisher(*, signed: bool = False) -> MemoryPublisher:
            return gated

        connection.publisher = publisher  # type: ignore[method-assign]
        return connection

    config = RouterConfig.model_validate(
        {"state": {"url": f"sqlite:///{tmp_path / 'router.db'}"}, "router": {"linger": "1ms"}}
    )
    router = Router(config, broker=connect)
    task = asyncio.create_task(router.run())
    await asyncio.wait_for(router.ready.wait(), 10)
    hub = Hub(broker, await broker.connect(), RpcClient(await broker.connect()), router)
    try:
        for name in ("legacy", "sales"):
            request = control.Register(name=name, entities={"contact": ["email"]})
            await hub.rpc.request(request, control.Registered, timeout=5)
        first = event("legacy", str(uuid.uuid4()), {"legacy": 1}, {"email": "a@x.io"})
        await hub.publish(encode_dict(first))
        await asyncio.wait_for(gated.holding.wait(), 5)
        second = event("legacy", str(uuid.uuid4()), {"legacy": 1}, {"email": "b@x.io"})
        await hub.publish(encode_dict(second))
        # The second batch is committed and its delivery confirmed...
        await eventually(lambda: len(broker.messages(topology.sink_queue("sales"))) == 1)
        [consumer] = broker.queues[topology.INGRESS].consumers
        await asyncio.sleep(0.05)
        # ...but acking it (multiple) would ack the first, whose delivery is unconfirmed.
        assert len(consumer.unacked) == 2
        gated.release.set()
        await eventually(lambda: not consumer.unacked, what="both batches acked")
        assert len(broker.messages(topology.sink_queue("sales"))) == 2
    finally:
        router.stop()
        await asyncio.wait_for(task, 10)
