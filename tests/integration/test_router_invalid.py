"""Events the router refuses end in crmsync.router.invalid, byte for byte, with the reason.

DESIGN "Topology" (crmsync.router.invalid), "Security" (a source that never registered),
"Vector clocks" (an EQUAL clock with other content is a reused counter: clock-reuse).
"""

from __future__ import annotations

import pytest
from aio_pika.abc import AbstractRobustConnection

from router import topology
from router.events import encode_dict
from tests.factories import new_id, wire_event
from tests.integration.support import (
    RunningRouter,
    collect,
    depth,
    eventually,
    publish_event,
    publish_raw,
    register,
)

pytestmark = pytest.mark.integration


async def test_refused_events_land_in_invalid_queue_with_reason_and_original_bytes(
    router: RunningRouter, connection: AbstractRobustConnection
) -> None:
    assert (await register(connection, "legacy"))["ok"] is True
    assert (await register(connection, "sales"))["ok"] is True
    channel = await connection.channel()

    garbage = b"\xc1\xff\x00 this is not msgpack \x93"
    await publish_raw(channel, garbage, "legacy.contact.upsert", message_id="garbage-1")

    wrong_type = encode_dict(
        wire_event("legacy", new_id(), {"legacy": "3"}, {"email": "a@example.com"})
    )
    await publish_raw(channel, wrong_type, "legacy.contact.upsert")

    spoofed = wire_event("ghost", new_id(), {"ghost": 1}, {"email": "g@example.com"})
    spoofed_body = await publish_event(channel, spoofed)

    refused = await collect(channel, topology.INVALID, 3)
    by_reason = {m.headers[topology.REASON_HEADER]: m for m in refused}
    assert set(by_reason) == {"undecodable", "invalid-schema", "unregistered-source"}
    assert by_reason["undecodable"].body == garbage
    assert by_reason["invalid-schema"].body == wrong_type
    assert by_reason["unregistered-source"].body == spoofed_body
    # The message id survives, so an operator can find the original publish.
    assert by_reason["undecodable"].message_id == "garbage-1"
    assert by_reason["unregistered-source"].message_id == spoofed["event_id"]
    for message in refused:
        assert message.headers.get(topology.DETAIL_HEADER), "a refusal says why"
    detail = str(by_reason["invalid-schema"].headers[topology.DETAIL_HEADER])
    assert "clock" in detail

    # The router is still working: a valid event afterwards reaches the other subscriber.
    good = wire_event("legacy", new_id(), {"legacy": 1}, {"email": "ok@example.com"})
    good_body = await publish_event(channel, good)
    (delivered,) = await collect(channel, topology.sink_queue("sales"), 1)
    assert delivered.body == good_body
    assert delivered.message_id == good["event_id"]
    assert not router.task.done()
    assert dict(router.stats.invalid) == {
        "undecodable": 1,
        "invalid-schema": 1,
        "unregistered-source": 1,
    }
    assert await depth(connection, topology.INVALID) == 0
    assert await depth(connection, topology.sink_queue("legacy")) == 0
    await router.stop()
    # Stopping the router closes its channel: anything it held unacked would be ready again.
    assert await depth(connection, topology.INGRESS) == 0


async def test_clock_reuse_is_refused_and_the_stored_record_is_unchanged(
    router: RunningRouter, connection: AbstractRobustConnection
) -> None:
    await register(connection, "legacy")
    await register(connection, "sales")
    channel = await connection.channel()
    record_id = new_id()

    first = wire_event("legacy", record_id, {"legacy": 1}, {"email": "first@example.com"})
    await publish_event(channel, first)
    await collect(channel, topology.sink_queue("sales"), 1)

    reused = wire_event("legacy", record_id, {"legacy": 1}, {"email": "other@example.com"})
    reused_body = await publish_event(channel, reused)
    (refused,) = await collect(channel, topology.INVALID, 1)
    assert refused.headers[topology.REASON_HEADER] == "clock-reuse"
    assert refused.body == reused_body
    assert router.stats.invalid["clock-reuse"] == 1

    stored = router.store.get(record_id)
    assert stored is not None
    assert stored.fields["email"] == "first@example.com"
    assert stored.event_id == first["event_id"]
    assert stored.clock.to_dict() == {"legacy": 1}

    # Nothing was delivered for the reused counter; the next real edit still goes through.
    nxt = wire_event("legacy", record_id, {"legacy": 2}, {"email": "second@example.com"})
    nxt_body = await publish_event(channel, nxt)
    (delivered,) = await collect(channel, topology.sink_queue("sales"), 1)
    assert delivered.body == nxt_body
    await eventually(
        lambda: (
            (s := router.store.get(record_id)) is not None
            and s.fields["email"] == "second@example.com"
        ),
        what="the next edit to be stored",
    )
    assert await depth(connection, topology.INVALID) == 0
    await router.stop()
    assert await depth(connection, topology.INGRESS) == 0


async def test_identical_republish_under_a_new_event_id_is_a_duplicate_not_clock_reuse(
    router: RunningRouter, connection: AbstractRobustConnection
) -> None:
    """Same clock, same content (a republish with a fresh id): harmless, a duplicate."""
    await register(connection, "legacy")
    await register(connection, "sales")
    channel = await connection.channel()
    record_id = new_id()
    fields = {"email": "same@example.com"}
    await publish_event(channel, wire_event("legacy", record_id, {"legacy": 1}, fields))
    await collect(channel, topology.sink_queue("sales"), 1)
    await publish_event(channel, wire_event("legacy", record_id, {"legacy": 1}, fields))
    await eventually(lambda: router.stats.verdicts["duplicate"] == 1, what="a duplicate verdict")
    # A marker on another record: once it arrived, anything owed for the copy would have.
    marker = wire_event("legacy", new_id(), {"legacy": 1}, {"email": "m@example.com"})
    await publish_event(channel, marker)
    (got,) = await collect(channel, topology.sink_queue("sales"), 1)
    assert got.message_id == marker["event_id"]
    assert await depth(connection, topology.INVALID) == 0
    assert router.stats.invalid["clock-reuse"] == 0


async def test_numbers_no_store_can_hold_are_refused_and_a_republish_is_no_clock_reuse(
    router: RunningRouter, connection: AbstractRobustConnection
) -> None:
    """NaN != NaN made a crash-republish of identical bytes look like a reused counter;
    2**63 passed the wire and then failed in SQLite. Both are refused at decode."""
    assert (await register(connection, "legacy"))["ok"] is True
    assert (await register(connection, "sales"))["ok"] is True
    channel = await connection.channel()
    bodies = []
    for value in (float("nan"), float("inf"), 2**63):
        payload = wire_event("legacy", new_id(), {"legacy": 1}, {"email": "n@x.io", "score": value})
        bodies.append(encode_dict(payload))
    for body in [*bodies, bodies[0]]:  # the NaN event twice, as after a crash
        await publish_raw(channel, body, "legacy.contact.upsert")
    refused = await collect(channel, topology.INVALID, 4)
    assert [m.headers[topology.REASON_HEADER] for m in refused] == ["invalid-schema"] * 4
    assert [m.body for m in refused] == [*bodies, bodies[0]]
    assert dict(router.stats.invalid) == {"invalid-schema": 4}
    assert router.store.counts()["records"] == 0
