"""Adapter registration over crmsync.control, the registry's persistence, removal, and
topology declaration.

DESIGN "Adapters: registration and their own state", "Vector clocks" (actor epochs),
"Topology" (quorum queues; a mismatch is an error with the fix, never a crash loop).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aio_pika.abc import AbstractRobustConnection

from router import topology
from router.broker.aio import Connection
from router.broker.rpc import RpcClient
from router.errors import TopologyMismatch
from tests.factories import new_id, wire_event
from tests.integration.support import (
    collect,
    depth,
    eventually,
    publish_event,
    register,
    running_router,
)

pytestmark = pytest.mark.integration


@pytest.mark.usefixtures("router")
async def test_registration_issues_actor_epochs(connection: AbstractRobustConnection) -> None:
    first = await register(connection, "legacy")
    assert first == {"ok": True, "actor": "legacy", "epoch": 1}
    # The adapter's sink exists from registration on: deliveries wait in it.
    assert await depth(connection, topology.sink_queue("legacy")) == 0

    # It still has its state: same actor, same epoch.
    again = await register(connection, "legacy", actor="legacy")
    assert again == {"ok": True, "actor": "legacy", "epoch": 1}

    # It lost its state: it must never reuse its counters, so it gets a new epoch.
    lost = await register(connection, "legacy", actor=None)
    assert lost == {"ok": True, "actor": "legacy@2", "epoch": 2}

    # State restored from before epoch 2: its counters may repeat what epoch 2 sent, so
    # it comes back as the next epoch by itself (issue 10: it used to be refused, and the
    # CRM stayed out of sync until an operator deleted its state), with the reason.
    stale = await register(connection, "legacy", actor="legacy")
    assert stale["ok"] is True
    assert (stale["actor"], stale["epoch"]) == ("legacy@3", 3)
    assert isinstance(stale["rewound"], str)
    assert "epoch" in stale["rewound"]
    assert "\n" not in stale["rewound"]

    # The registry holds the new epoch.
    assert (await register(connection, "legacy", actor="legacy@3"))["actor"] == "legacy@3"

    for bad_name, actor in (("hub", None), ("sales", "legacy")):
        reply = await register(connection, bad_name, actor=actor)
        assert reply["ok"] is False, (bad_name, actor)
        assert reply["error"]
    status = await RpcClient(Connection(connection)).call("op.status", {}, timeout=5)
    assert [(a["name"], a["actor"]) for a in status["adapters"]] == [("legacy", "legacy@3")]


async def test_registry_survives_a_router_restart_and_adapter_remove_removes_it(
    amqp: str, tmp_path: Path, connection: AbstractRobustConnection
) -> None:
    db = tmp_path / "router.db"
    async with running_router(amqp, db):
        assert (await register(connection, "legacy"))["ok"] is True
        assert (await register(connection, "sales"))["ok"] is True

    async with running_router(amqp, db) as router:
        channel = await connection.channel()
        # No re-registration after the restart: the registry came from the state store.
        payload = wire_event("legacy", new_id(), {"legacy": 1}, {"email": "a@example.com"})
        body = await publish_event(channel, payload)
        (delivered,) = await collect(channel, topology.sink_queue("sales"), 1)
        assert delivered.body == body
        assert router.stats.verdicts["accepted"] == 1
        assert await depth(connection, topology.INVALID) == 0

        # The same name comes back without state after the restart: next epoch, not reset.
        assert (await register(connection, "legacy"))["actor"] == "legacy@2"

        rpc = RpcClient(Connection(connection))
        removed = await rpc.call("op.adapter-remove", {"name": "legacy"}, timeout=5)
        assert removed == {"ok": True, "queue": topology.sink_queue("legacy")}
        # Its queue is left in place (it may still hold deliveries for an operator).
        assert await depth(connection, topology.sink_queue("legacy")) == 0

        again = await rpc.call("op.adapter-remove", {"name": "legacy"}, timeout=5)
        assert again["ok"] is False
        assert "legacy" in again["error"]

        # From now on its events are refused as coming from an unregistered source.
        late = wire_event(
            "legacy", new_id(), {"legacy@2": 1}, {"email": "b@example.com"}, actor="legacy@2"
        )
        late_body = await publish_event(channel, late)
        (refused,) = await collect(channel, topology.INVALID, 1)
        assert refused.headers[topology.REASON_HEADER] == "unregistered-source"
        assert refused.body == late_body

        status = await rpc.call("op.status", {}, timeout=5)
        assert [a["name"] for a in status["adapters"]] == ["sales"]

    # The removal is persistent too.
    async with running_router(amqp, db) as router:
        status = await RpcClient(Connection(connection)).call("op.status", {}, timeout=5)
        assert [a["name"] for a in status["adapters"]] == ["sales"]
        await eventually(lambda: router.store.registrations().keys() == {"sales"})


@pytest.mark.usefixtures("router")
async def test_unknown_control_request_gets_an_error_reply(
    connection: AbstractRobustConnection,
) -> None:
    reply = await RpcClient(Connection(connection)).call("op.no-such-thing", {}, timeout=5)
    assert reply["ok"] is False
    assert "op.no-such-thing" in reply["error"]
    # The router still answers afterwards.
    assert (await register(connection, "legacy"))["ok"] is True


async def test_topology_declare_is_idempotent(connection: AbstractRobustConnection) -> None:
    specs = topology.adapter_queues("legacy", [("1s", 1000), ("10s", 10000)])
    await Connection(connection).declare(specs)
    await Connection(connection).declare(specs)
    for name in (
        topology.INGRESS,
        topology.INVALID,
        topology.ROUTER_CONTROL,
        topology.sink_queue("legacy"),
        topology.dlq_queue("legacy"),
        topology.retry_queue("legacy", "1s"),
        topology.retry_queue("legacy", "10s"),
    ):
        assert await depth(connection, name) == 0, name


async def test_topology_declare_reports_a_classic_ingress_queue(
    connection: AbstractRobustConnection,
) -> None:
    channel = await connection.channel()
    await channel.declare_queue(
        topology.INGRESS, durable=True, arguments={"x-queue-type": "classic"}
    )
    await channel.close()

    with pytest.raises(TopologyMismatch) as info:
        await Connection(connection).declare()
    message = str(info.value)
    assert topology.INGRESS in message
    assert "\n" not in message
    assert "topology declare" in message  # says how to fix it

    # The connection is still usable and the classic queue was left alone.
    assert await depth(connection, topology.INGRESS) == 0
