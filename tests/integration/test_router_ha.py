"""One active router per ingress (issue 10 item 10): a standby takes over, a second router
on one SQLite file refuses, and the ingress's delivery limit dead-letters into the invalid
queue with a reason operators can read.

Routers run as real processes (``python -m router.cli router``) so ``kill -9`` is real;
the PostgreSQL state lives in a database of this test's own, dropped at the end.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
import sqlalchemy as sa
from aio_pika.abc import AbstractRobustConnection

from router import topology
from router.broker.aio import Connection, connect
from router.broker.dlq import browse_all
from router.config import BrokerConfig
from router.demo import Fleet
from router.errors import EXIT_STATE, TopologyMismatch
from router.schema import records
from router.status import gather_status
from tests.integration.support import (
    event,
    logged,
    new_id,
    publish_event,
    register,
    running_router,
)
from tests.integration.test_sql_servers import _admin_engine

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_state() -> Iterator[str]:
    """A PostgreSQL database of this test's own for the routers' state."""
    admin = _admin_engine("postgresql")
    name = f"crmsync_ha_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _router_toml(path: Path, amqp: str, state_url: str) -> None:
    path.write_text(
        f'[broker]\nurl = "{amqp}"\n[state]\nurl = "{state_url}"\n'
        '[router]\nbatch_size = 50\nlinger = "5ms"\n'
    )


async def _status(amqp: str) -> dict[str, Any]:
    connection = await connect(BrokerConfig(url=amqp), "crmsync-test")
    try:
        return await gather_status(connection, timeout=1.0)
    finally:
        await connection.close()


async def _active(amqp: str) -> str:
    status = await _status(amqp)
    return str(status["router"].get("active_router", "")) if status["router"]["alive"] else ""


async def _wait_active(amqp: str, fleet: Fleet, other_than: str = "", timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fleet.check()
        active = await _active(amqp)
        if active and not active.startswith(other_than or "\0"):
            return active
        await asyncio.sleep(0.1)
    raise AssertionError("no router became active")


async def test_standby_takes_over_after_kill_9_nothing_lost(
    amqp: str, tmp_path: Path, pg_state: str, connection: AbstractRobustConnection
) -> None:
    _router_toml(tmp_path / "router.toml", amqp, pg_state)
    fleet = Fleet(tmp_path, amqp)
    channel = await connection.channel()
    try:
        fleet.start("a", "router", "--config", "router.toml")
        first = await _wait_active(amqp, fleet)
        fleet.start("b", "router", "--config", "router.toml")
        for name in ("legacy", "sales"):
            assert (await register(connection, name))["ok"] is True
        await asyncio.sleep(1.5)  # b is up and waiting as a standby
        assert await _active(amqp) == first  # the standby did not answer or take over
        assert first.split(" ")[0].endswith(f":{fleet.procs['a'].pid}")

        published: list[str] = []
        records_sent: dict[str, str] = {}

        async def send(n: int) -> None:
            for _ in range(n):
                payload = event("legacy", new_id(), {"legacy": 1}, {"email": "a@example.com"})
                await publish_event(channel, payload)
                published.append(payload["event_id"])
                records_sent[payload["record_id"]] = payload["event_id"]
                await asyncio.sleep(0.002)

        await send(300)
        killed_at = time.monotonic()
        fleet.kill("a")  # kill -9 while events flow
        flow = asyncio.create_task(send(300))
        second = await _wait_active(amqp, fleet, other_than=first.split(" ")[0])
        takeover = time.monotonic() - killed_at
        await flow
        print(f"takeover after kill -9: {takeover:.2f}s")
        assert takeover < 10, f"standby took {takeover:.1f}s to take over"
        assert second.split(" ")[0].endswith(f":{fleet.procs['b'].pid}")

        # Nothing lost: every event reaches the other subscriber; copies of one event
        # (an outbox republished after the crash) are the same event, applied by clock.
        sink = await channel.declare_queue(topology.sink_queue("sales"), passive=True)
        got: dict[str, int] = {}
        deadline = time.monotonic() + 30
        while set(got) != set(published) and time.monotonic() < deadline:
            message = await sink.get(no_ack=True, fail=False)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            got[str(message.message_id)] = got.get(str(message.message_id), 0) + 1
        assert set(got) == set(published)
        print(f"copies republished after the crash: {sum(got.values()) - len(got)}")
        # Nothing doubled: one state per record, the version its one event made.
        engine = sa.create_engine(pg_state)
        try:
            with engine.connect() as conn:
                rows = conn.execute(sa.select(records.c.record_id, records.c.version)).all()
        finally:
            engine.dispose()
        assert {r.record_id for r in rows} == set(records_sent)
        assert all(r.version == 1 for r in rows)
        assert await _depth(connection, topology.INVALID) == 0  # nothing dead-lettered
    finally:
        await channel.close()
        fleet.stop()


async def _depth(connection: AbstractRobustConnection, name: str) -> int:
    counts = await Connection(connection).queue_counts(name)
    assert counts is not None
    return counts[0]


async def test_second_router_on_one_sqlite_file_refuses_with_one_line(
    amqp: str, tmp_path: Path
) -> None:
    db = tmp_path / "state" / "router.db"
    _router_toml(tmp_path / "router.toml", amqp, f"sqlite:///{db}")
    async with running_router(amqp, db):
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "router.cli", "router", "--config", "router.toml"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == EXIT_STATE
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "another router" in lines[0] and str(db) in lines[0]
    assert "Traceback" not in result.stderr


async def test_ingress_delivery_limit_dead_letters_into_invalid_with_a_reason(
    amqp: str, connection: AbstractRobustConnection
) -> None:
    await Connection(connection).declare()
    channel = await connection.channel()
    payload = event("legacy", new_id(), {"legacy": 1}, {"email": "a@example.com"})
    body = await publish_event(channel, payload)
    # A router that dies holding it, over and over (each requeue is one such death;
    # basic.get is not allowed on a single-active-consumer queue: consume).
    await channel.set_qos(prefetch_count=1)
    ingress = await channel.declare_queue(topology.INGRESS, passive=True)
    held = 0

    async def die_holding(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal held
        held += 1
        await message.nack(requeue=True)

    tag = await ingress.consume(die_holding)
    deadline = time.monotonic() + 30
    while held <= topology.INGRESS_DELIVERY_LIMIT and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await ingress.cancel(tag)
    await channel.close()
    assert held == topology.INGRESS_DELIVERY_LIMIT + 1  # then the broker took it away

    def entries() -> list[Any]:
        return list(browse_all(BrokerConfig(url=amqp), None, True).entries)

    deadline = time.monotonic() + 10
    found = entries()
    while not found and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        found = entries()
    [entry] = found
    assert entry.error_type == "delivery-limit"
    assert topology.INGRESS in entry.error
    assert entry.body == body  # byte for byte
    assert entry.id == payload["event_id"]
    assert await _depth(connection, topology.INGRESS) == 0


async def test_an_ingress_from_before_the_single_active_router_gets_the_upgrade_path(
    connection: AbstractRobustConnection,
) -> None:
    channel = await connection.channel()
    await channel.declare_queue(
        topology.INGRESS, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await channel.close()
    with pytest.raises(TopologyMismatch) as info:
        await Connection(connection).declare()
    message = str(info.value)
    assert "\n" not in message
    assert "stop the adapters" in message and f"delete_queue {topology.INGRESS}" in message


async def test_a_standby_answers_nothing_until_it_is_active(
    amqp: str, tmp_path: Path, pg_state: str
) -> None:
    """In-process: the second router waits without a registry, consumer or control reply."""
    from router.config import RouterConfig
    from router.daemon import Router

    config = RouterConfig.model_validate({"broker": {"url": amqp}, "state": {"url": pg_state}})
    first, second = Router(config), Router(config)
    with logged("crmsync.router") as logs:
        task_a = asyncio.create_task(first.run())
        await asyncio.wait_for(first.ready.wait(), 10)
        task_b = asyncio.create_task(second.run())
        await asyncio.sleep(1.5)
        assert not second.ready.is_set()
        assert any("standby" in r.getMessage() for r in logs)
        first.stop()
        await asyncio.wait_for(task_a, 10)
        await asyncio.wait_for(second.ready.wait(), 10)  # took over
        second.stop()
        await asyncio.wait_for(task_b, 10)


async def test_a_router_that_loses_its_lock_session_stops_deciding(
    amqp: str, pg_state: str
) -> None:
    """The database ends the lock's session (restart, network cut): another router may be
    active by now, so this one stops at once and exits non-zero (systemd restarts it)."""
    from router.config import RouterConfig
    from router.daemon import Router
    from router.daemon.leader import PG_LOCK_CLASS, LeadershipLost

    config = RouterConfig.model_validate({"broker": {"url": amqp}, "state": {"url": pg_state}})
    router = Router(config)
    task = asyncio.create_task(router.run())
    await asyncio.wait_for(router.ready.wait(), 10)
    engine = sa.create_engine(pg_state, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            # Only this test's database: the session holding our router's lock.
            killed = conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND classid = :cls "
                    "AND database = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database())"
                ),
                {"cls": PG_LOCK_CLASS},
            ).all()
        assert killed == [(True,)]
        with pytest.raises(LeadershipLost, match="lost the state store's router lock"):
            await asyncio.wait_for(task, 15)
    finally:
        engine.dispose()
        if not task.done():
            router.stop()
            await asyncio.wait_for(task, 10)
