"""Failed writes end to end (issue 4): retry tiers, the DLQ, edit & retry."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from router import topology
from router.broker.aio import connect
from router.broker.rpc import RpcClient
from router.config import BrokerConfig
from router.events import decode
from tests.broker import queue_depth
from tests.integration.spine import Spine

pytestmark = pytest.mark.integration

BLOCKED = "@blocked.example"


def _take_all(url: str, queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    async def go() -> list[aio_pika.abc.AbstractIncomingMessage]:
        connection = await aio_pika.connect_robust(url)
        try:
            channel = await connection.channel()
            q = await channel.declare_queue(queue, passive=True)
            got = []
            while (message := await q.get(no_ack=True, fail=False)) is not None:
                got.append(message)
            return got
        finally:
            await connection.close()

    return asyncio.run(go())


def _call(url: str, key: str, payload: dict[str, Any]) -> Any:
    async def go() -> Any:
        connection = await connect(BrokerConfig(url=url), "crmsync-test")
        try:
            return await RpcClient(connection).call(key, payload)
        finally:
            await connection.close()

    return asyncio.run(go())


def test_rejected_writes_are_dead_lettered_and_the_rest_flow_on(
    amqp: str, vhost: str, tmp_path: Path
) -> None:
    # sales' table refuses some addresses, by a named CHECK constraint
    with sqlite3.connect(tmp_path / "sales.db") as db:
        db.execute(
            "CREATE TABLE people (person_id VARCHAR(64) PRIMARY KEY, mail VARCHAR(255), "
            "first VARCHAR(255), last VARCHAR(255), mobile VARCHAR(255), "
            "modified DATETIME NOT NULL, notes VARCHAR(255), deleted_flag BOOLEAN NOT NULL, "
            f"CONSTRAINT mail_not_blocked CHECK (mail NOT LIKE '%{BLOCKED}'))"
        )
    spine = Spine(tmp_path, amqp)
    try:
        spine.start()
        spine.dbs["legacy"].insert_contacts(20)
        spine.wait("seeded", lambda: spine.dbs["sales"].count() == 20)
        for i in range(5):
            spine.dbs["legacy"].update_by_email(f"user{i}@example.com", email=f"user{i}{BLOCKED}")
        for i in range(5, 10):
            spine.dbs["legacy"].update_by_email(f"user{i}@example.com", first_name="Flows")
        spine.wait(
            "the other edits in sales",
            lambda: (
                sum(c["first_name"] == "Flows" for c in spine.dbs["sales"].contacts().values()) == 5
            ),
        )
        spine.wait(
            "blocked addresses in mktg",
            lambda: sum(e.endswith(BLOCKED) for e in spine.dbs["mktg"].contacts()) == 5,
        )
        spine.wait(
            "5 entries in the DLQ", lambda: queue_depth(vhost, topology.dlq_queue("sales")) == 5
        )
        assert not any(e.endswith(BLOCKED) for e in spine.dbs["sales"].contacts())
        entries = _take_all(amqp, topology.dlq_queue("sales"))
        assert len(entries) == 5
        for entry in entries:
            h = entry.headers
            assert h[topology.TARGET_HEADER] == "sales"
            assert h[topology.ERROR_TYPE_HEADER] == "permanent"
            assert "mail_not_blocked" in str(h[topology.ERROR_HEADER])
            assert h[topology.ATTEMPTS_HEADER] == 1
            assert "Traceback" in str(h[topology.TRACEBACK_HEADER])
            assert "x-death" not in h
            event = decode(entry.body)  # the original event, byte for byte decodable
            assert str(event.fields["email"]).endswith(BLOCKED)
            assert entry.message_id == event.event_id
        # The values stay in the DLQ with the record: no process logged them.
        assert "write failed, dead-lettered" in (tmp_path / "logs" / "sales.log").read_text()
        for log in (tmp_path / "logs").glob("*.log"):
            assert BLOCKED not in log.read_text(), f"{log.name} logged a customer value"
    finally:
        codes = spine.stop()
    assert all(c == 0 for c in codes.values()), codes


def test_a_database_outage_within_the_retry_budget_reaches_no_dlq(
    amqp: str, vhost: str, tmp_path: Path
) -> None:
    # Every attempt at a write waits out SQLite's busy timeout (10 s) before it fails, so
    # the outage below costs a retry or two; the budget (five attempts, four tiers) is over
    # a minute.
    spine = Spine(tmp_path, amqp, retry={"sales": ("1s", "2s", "4s", "8s")})
    try:
        spine.start()
        spine.dbs["legacy"].insert_contacts(5)
        spine.wait("seeded", lambda: spine.dbs["sales"].count() == 5)

        locked = threading.Event()
        outage = 22.0

        def hold_lock() -> None:
            db = sqlite3.connect(tmp_path / "sales.db", isolation_level=None)
            db.execute("BEGIN EXCLUSIVE")  # writers get 'database is locked'
            locked.set()
            time.sleep(outage)
            db.execute("COMMIT")
            db.close()

        holder = threading.Thread(target=hold_lock)
        holder.start()
        locked.wait(5)
        started = time.monotonic()
        spine.dbs["legacy"].insert_contacts(10, start=5)
        spine.wait("the outage to end", lambda: not holder.is_alive(), timeout=outage + 10)
        spine.wait(
            "all contacts in sales after the outage",
            lambda: spine.dbs["sales"].count() == 15,
            timeout=60,
        )
        assert time.monotonic() - started >= outage - 1
        assert queue_depth(vhost, topology.dlq_queue("sales")) == 0
        log = (tmp_path / "logs" / "sales.log").read_text()
        assert "will retry" in log and "dead-lettered" not in log
        spine.wait_quiet()
        assert {c["email"] for c in spine.dbs["sales"].contacts().values()} == {
            f"user{i}@example.com" for i in range(15)
        }
    finally:
        codes = spine.stop()
    assert all(c == 0 for c in codes.values()), codes


def test_undecodable_delivery_goes_to_the_dlq_byte_for_byte(
    amqp: str, vhost: str, spine: Spine
) -> None:
    spine.start()

    async def publish() -> None:
        connection = await aio_pika.connect_robust(amqp)
        try:
            channel = await connection.channel()
            exchange = await channel.get_exchange(topology.DELIVERIES, ensure=False)
            await exchange.publish(aio_pika.Message(b"\xc1garbage"), "sales")
        finally:
            await connection.close()

    asyncio.run(publish())
    spine.wait("the DLQ entry", lambda: queue_depth(vhost, topology.dlq_queue("sales")) == 1)
    (entry,) = _take_all(amqp, topology.dlq_queue("sales"))
    assert entry.body == b"\xc1garbage"
    assert entry.headers[topology.ERROR_TYPE_HEADER] == "undecodable"


def test_edit_makes_a_hub_version_that_reaches_every_crm(spine: Spine) -> None:
    spine.start()
    spine.dbs["legacy"].insert_contacts(3)
    spine.wait("seeded", lambda: spine.dbs["mktg"].count() == 3)
    spine.wait_quiet()
    record_id = _record_id(spine, "user1@example.com")

    reply = _call(
        spine.url,
        "op.edit",
        {"record_id": record_id, "entity": "contact", "set": {"first_name": "Edited"}},
    )
    assert reply["ok"], reply
    assert set(reply["clock"]) >= {"legacy", "hub"}
    spine.wait(
        "the edit everywhere",
        lambda: all(
            db.contacts()["user1@example.com"]["first_name"] == "Edited"
            for db in spine.dbs.values()
        ),
    )

    for bad, why in (
        (
            {"record_id": "00000000-0000-4000-8000-000000000000", "set": {"first_name": "x"}},
            "no record",
        ),
        ({"record_id": record_id, "set": {"shoe_size": "44"}}, "no adapter maps shoe_size"),
        ({"record_id": record_id, "set": {}}, "non-empty"),
    ):
        reply = _call(spine.url, "op.edit", bad)
        assert not reply["ok"] and why in reply["error"], reply
    spine.wait_quiet()
    assert spine.dbs["sales"].contacts()["user1@example.com"]["first_name"] == "Edited"


def _record_id(spine: Spine, email: str) -> str:
    import sqlalchemy as sa

    from adapters.links import link_table

    db = spine.dbs["legacy"]
    with db.engine.connect() as conn:
        row_id = conn.execute(
            sa.select(db.table.c.id).where(db.table.c.email_addr == email)
        ).scalar_one()
        return str(
            conn.execute(
                sa.select(link_table.c.record_id).where(
                    link_table.c.source_record_id == str(row_id)
                )
            ).scalar_one()
        )
