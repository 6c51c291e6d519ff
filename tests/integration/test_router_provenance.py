"""Exact attribution under reordering, end to end on the real broker with the router's
real SQLite state store (DESIGN "Exact attribution under reordering").

An adapter's second event reaches the router before its first: it carries an old phone
it only received from the hub, which a lower-ranked CRM has replaced since. With
``field_versions`` (no counter for phone: a received value) the router keeps the newer
phone; an older producer's event without them keeps today's bounding rule, under which
``priority`` lets the higher-ranked carrier's old value win.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aio_pika.abc import AbstractRobustConnection

from router import topology
from router.config import RouterConfig
from router.daemon import Router
from router.events import decode
from tests.factories import new_id, wire_event
from tests.integration.support import collect, eventually, publish_event, register, stop_router

pytestmark = pytest.mark.integration

ENTITIES = {"contact": ["email", "phone"]}


@pytest.fixture
async def priority_router(amqp: str, tmp_path: Path) -> AsyncIterator[Router]:
    """A router in-process whose ``contact`` conflicts go to the higher-ranked source."""
    config = RouterConfig.model_validate(
        {
            "broker": {"url": amqp},
            "state": {"url": f"sqlite:///{tmp_path / 'router.db'}"},
            "conflicts": {"contact": {"policy": "priority", "priority": ["legacy", "sales"]}},
        }
    )
    router = Router(config)
    task = asyncio.create_task(router.run())
    await asyncio.wait_for(router.ready.wait(), 10)
    try:
        yield router
    finally:
        await stop_router(router, task)


@pytest.mark.parametrize("exact", [True, False], ids=["field_versions", "older-producer"])
async def test_an_event_overtaking_its_parent_never_reverts_a_newer_value(
    priority_router: Router, connection: AbstractRobustConnection, exact: bool
) -> None:
    for name in ("legacy", "sales", "mktg"):
        await register(connection, name, entities=ENTITIES)
    channel = await connection.channel()
    rid = new_id()
    versions = (lambda **fv: {"field_versions": fv}) if exact else (lambda **fv: {})

    created = wire_event(
        "sales",
        rid,
        {"sales": 1},
        {"email": "a@x.test", "phone": "p1"},
        **versions(email=1, phone=1),
    )
    await publish_event(channel, created)
    await collect(channel, topology.sink_queue("legacy"), 1)  # legacy applies it
    newer = wire_event(
        "sales",
        rid,
        {"sales": 2},
        {"email": "a@x.test", "phone": "p2"},
        changed=["phone"],
        **versions(email=1, phone=2),
    )
    await publish_event(channel, newer)
    await collect(channel, topology.sink_queue("mktg"), 2)  # accepted: the newest phone

    # legacy's two edits of email on top of the record it received ({sales:1}, phone p1);
    # the second reaches the router first, still carrying the old phone (no counter)
    first = wire_event(
        "legacy",
        rid,
        {"legacy": 1, "sales": 1},
        {"email": "b@x.test", "phone": "p1"},
        changed=["email"],
        **versions(email=1),
    )
    second = wire_event(
        "legacy",
        rid,
        {"legacy": 2, "sales": 1},
        {"email": "c@x.test", "phone": "p1"},
        changed=["email"],
        **versions(email=2),
    )
    await publish_event(channel, second)
    (resolution,) = await collect(channel, topology.sink_queue("sales"), 1)
    await publish_event(channel, first)  # arrives stale

    settled = decode(resolution.body)
    assert settled.source == "hub" and settled.fields["email"] == "c@x.test"
    want = "p2" if exact else "p1"  # the older producer: bounded, the known loss
    assert settled.fields["phone"] == want

    store = priority_router.store
    stats = priority_router.stats
    await eventually(lambda: stats.verdicts["stale"] >= 1, what="the overtaken event judged stale")
    stored = store.get(rid)
    assert stored is not None and stored.fields == {"email": "c@x.test", "phone": want}
    assert stored.clock == settled.vclock
