"""The in-memory broker routes, prefetches and settles the way the daemons rely on."""

from __future__ import annotations

import asyncio

import pytest

from router import topology
from router.broker.memory import MemoryBroker, _topic_matches
from router.errors import EntityMissing, Unroutable
from router.messages import Delivery, Outgoing


@pytest.mark.parametrize(
    ("pattern", "key", "hit"),
    [
        ("#", "a.b.c", True),
        ("#", "", True),
        ("register.*", "register.legacy", True),
        ("register.*", "register.legacy.x", False),
        ("register.*", "register", False),
        ("op.#", "op.conflicts.list", True),
        ("op.#", "op", True),
        ("op.#", "opx.status", False),
        ("a.*.c", "a.b.c", True),
        ("a.#.c", "a.c", True),
        ("a.#.c", "a.x.y.c", True),
    ],
)
def test_topic_patterns_match_like_amqp(pattern: str, key: str, hit: bool) -> None:
    assert _topic_matches(pattern, key) is hit


async def test_bcc_fans_out_and_is_stripped_and_mandatory_returns_raise() -> None:
    broker = MemoryBroker()
    conn = await broker.connect()
    await conn.declare([*topology.adapter_queues("a"), *topology.adapter_queues("b")])
    publisher = await conn.publisher()
    await publisher.publish(Outgoing(topology.DELIVERIES, "a", b"x", "m1", {"BCC": ["b"], "k": 1}))
    for name in ("a", "b"):
        [got] = broker.messages(topology.sink_queue(name))
        assert got.body == b"x" and got.headers == {"k": 1}
    with pytest.raises(Unroutable):
        await publisher.publish(Outgoing(topology.DELIVERIES, "nobody", b"x"))
    await publisher.publish(Outgoing(topology.DELIVERIES, "nobody", b"x", mandatory=False))
    with pytest.raises(EntityMissing):
        await publisher.publish(Outgoing("no.such.exchange", "k", b"x"))


async def test_prefetch_holds_back_until_acked_and_nack_requeues_as_redelivered() -> None:
    broker = MemoryBroker()
    conn = await broker.connect()
    await conn.declare([*topology.adapter_queues("a")])
    for i in range(3):
        await (await conn.publisher()).publish(Outgoing("", topology.sink_queue("a"), b"%d" % i))
    got: list[Delivery] = []

    async def handler(delivery: Delivery) -> None:
        got.append(delivery)

    await conn.consume(topology.sink_queue("a"), handler, prefetch=2)
    await asyncio.sleep(0.01)
    assert [d.body for d in got] == [b"0", b"1"]  # the third waits for room
    await got[1].ack(multiple=True)
    await asyncio.sleep(0.01)
    assert [d.body for d in got] == [b"0", b"1", b"2"]
    await got[2].nack(requeue=True)
    await asyncio.sleep(0.01)
    assert got[-1].body == b"2" and got[-1].redelivered
    assert await conn.queue_counts(topology.sink_queue("a")) == (0, 1)
