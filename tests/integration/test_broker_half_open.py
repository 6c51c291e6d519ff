"""A half-open connection (the broker's host gone without a FIN) is noticed within about
two heartbeats and the daemon reconnects by itself; a publish whose confirm never comes
fails after ``broker.confirm_timeout`` instead of stalling its caller forever."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
from aio_pika.abc import AbstractRobustConnection

from router import topology
from router.broker.aio import Connection, Publisher, connect
from router.config import BrokerConfig
from router.errors import BrokerUnavailable
from router.messages import Outgoing
from tests.faults.proxy import Proxy
from tests.integration.support import collect, eventually, logged

pytestmark = pytest.mark.integration

QUEUE = "half-open-probe"


@pytest.fixture
def proxy(amqp: str) -> Iterator[Proxy]:
    parts = urlsplit(amqp)
    p = Proxy(parts.port or 5672, parts.hostname or "127.0.0.1").start()
    try:
        yield p
    finally:
        p.close()


def _through(amqp: str, proxy: Proxy) -> str:
    parts = urlsplit(amqp)
    netloc = parts.netloc.rsplit(":", 1)[0] if parts.port else parts.netloc
    return urlunsplit(parts._replace(netloc=f"{netloc}:{proxy.port}"))


async def _connected(
    amqp: str, proxy: Proxy, monkeypatch: pytest.MonkeyPatch, **settings: str
) -> Connection:
    url = _through(amqp, proxy)
    monkeypatch.setenv("CRMSYNC_AMQP_URL", url)  # the env wins over broker.url
    conn = await connect(BrokerConfig(url=url, **settings), "half-open-test")
    await conn.declare([topology.QueueSpec(QUEUE, {})], hub=False)
    return conn


def _probe(n: int) -> Outgoing:
    return Outgoing("", QUEUE, f"probe-{n}".encode(), f"m{n}", {})


async def test_half_open_connection_is_detected_and_replaced(
    amqp: str,
    proxy: Proxy,
    connection: AbstractRobustConnection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn = await _connected(amqp, proxy, monkeypatch, heartbeat="2s")
    try:
        publisher = await conn.publisher()
        await publisher.publish(_probe(1))
        # An outbox publishing all along: publishes in flight when the connection dies
        # must fail as BrokerUnavailable, never end the task (they used to, cancelled).
        outbox = asyncio.create_task(_publish_forever(publisher))
        with logged("crmsync.broker") as records:
            proxy.half_open()
            await eventually(
                lambda: any("lost the broker" in r.getMessage() for r in records),
                timeout=20,
                what="the half-open connection to be noticed",
            )
            [noticed] = proxy.detections()
            # a reconnect attempt times out while the path is still silent
            await eventually(
                lambda: sum("lost the broker" in r.getMessage() for r in records) >= 2,
                timeout=30,
                what="a reconnect attempt to fail",
            )
            proxy.heal()
            await eventually(
                lambda: any("restored" in r.getMessage() for r in records),
                timeout=20,
                what="the connection to be restored",
            )
        # within two heartbeats (of 2 s), with a second for the proxy's own bookkeeping
        assert noticed <= 2 * 2 + 1, f"noticed after {noticed:.1f}s"
        assert len(proxy.links) >= 2
        await eventually(lambda: _publishes(publisher), timeout=10, what="publishing again")
        assert not outbox.done(), outbox
        outbox.cancel()
        channel = await connection.channel()
        queue = await channel.declare_queue(QUEUE, passive=True)
        queued = queue.declaration_result.message_count or 0
        bodies = {m.body for m in await collect(channel, QUEUE, queued, timeout=5)}
        assert {b"probe-1", b"probe-2"} <= bodies
    finally:
        await conn.close()


async def _publish_forever(publisher: Publisher) -> None:
    n = 100
    while True:
        n += 1
        try:
            await publisher.publish_many([_probe(n), _probe(n)])
        except BrokerUnavailable:
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.05)


async def _publishes(publisher: object) -> bool:
    try:
        await publisher.publish(_probe(2))  # type: ignore[attr-defined]
    except BrokerUnavailable:
        return False
    return True


async def test_unconfirmed_publish_fails_after_the_confirm_timeout(
    amqp: str, proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # heartbeats far away: only the confirm timeout can end the wait
    conn = await _connected(amqp, proxy, monkeypatch, heartbeat="60s", confirm_timeout="1s")
    try:
        publisher = await conn.publisher()
        proxy.half_open()
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable, match="lost the broker during publish"):
            await publisher.publish(_probe(3))
        assert time.monotonic() - started < 5
    finally:
        await conn.close()


@pytest.mark.parametrize(("query", "negotiated"), [("", 7), ("?heartbeat=3", 3)])
async def test_heartbeat_comes_from_the_config_unless_the_url_sets_one(
    amqp: str, monkeypatch: pytest.MonkeyPatch, query: str, negotiated: int
) -> None:
    url = amqp + query
    monkeypatch.setenv("CRMSYNC_AMQP_URL", url)
    conn = await connect(BrokerConfig(url=url, heartbeat="7s"), "heartbeat-test")
    try:
        transport = conn._robust.transport
        assert transport is not None
        assert transport.connection.heartbeat_timeout == negotiated
    finally:
        await conn.close()
