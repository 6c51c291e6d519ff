"""The router never halts on one event (issue 10, items 2, 5, 8), on the real broker.

Clocks are checked against what the router issued (``unknown-actor``,
``clock-from-the-future``), messages against ``router.max_event_bytes`` (``too-large``),
and anything failing on one event refuses only that event (``internal-error``). Each
refusal lands in crmsync.router.invalid byte for byte with its reason, and the rest of
its batch is delivered. Restoring a CRM's database from a backup brings its adapter back
as a new epoch, and its next edit propagates.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aio_pika.abc import AbstractRobustConnection

from router import schema, topology
from router.daemon import pipeline
from router.events import INT_MAX
from router.state import RouterStore
from tests.factories import make_state, new_id, wire_event
from tests.integration.spine import Spine
from tests.integration.support import (
    collect,
    depth,
    publish_event,
    register,
    running_router,
)

pytestmark = pytest.mark.integration


async def test_hostile_clocks_and_sizes_are_refused_and_the_rest_of_the_batch_flows(
    amqp: str, tmp_path: Path, connection: AbstractRobustConnection
) -> None:
    async with running_router(amqp, tmp_path / "router.db", max_event_bytes=4096) as router:
        for name in ("legacy", "sales"):
            assert (await register(connection, name))["ok"] is True
        channel = await connection.channel()
        record_id = new_id()
        first = wire_event("sales", record_id, {"sales": 1}, {"email": "a@x.io"})
        await publish_event(channel, first)
        await collect(channel, topology.sink_queue("legacy"), 1)

        # The attack, an actor never issued, and a message over the limit, between
        # good events.
        attacks = {
            "clock-from-the-future": wire_event(
                "legacy", record_id, {"legacy": 1, "hub": INT_MAX}, {"email": "b@x.io"}
            ),
            "unknown-actor": wire_event(
                "legacy", new_id(), {"legacy": 1, "ghost": 1}, {"email": "c@x.io"}
            ),
            "too-large": wire_event("legacy", new_id(), {"legacy": 1}, {"email": "x" * 5000}),
        }
        good = [
            wire_event("legacy", new_id(), {"legacy": 1}, {"email": f"{i}@x.io"}) for i in range(3)
        ]
        sent: dict[str, bytes] = {}
        for i, (reason, payload) in enumerate(attacks.items()):
            await publish_event(channel, good[i])
            sent[reason] = await publish_event(channel, payload)
        refused = await collect(channel, topology.INVALID, 3)
        by_reason = {m.headers[topology.REASON_HEADER]: m for m in refused}
        assert set(by_reason) == set(attacks)
        for reason, message in by_reason.items():
            assert message.body == sent[reason], f"{reason}: byte for byte"
            assert message.headers[topology.DETAIL_HEADER]
        assert "hub" in str(by_reason["clock-from-the-future"].headers[topology.DETAIL_HEADER])
        assert "ghost" in str(by_reason["unknown-actor"].headers[topology.DETAIL_HEADER])
        delivered = await collect(channel, topology.sink_queue("sales"), 3)
        assert {m.message_id for m in delivered} == {g["event_id"] for g in good}

        # Nothing halted: the poisoned clock was never stored, and a real concurrent edit
        # is still resolved (settle() increments the hub without overflowing).
        stored = router.store.get(record_id)
        assert stored is not None and stored.clock.to_dict() == {"sales": 1}
        edit = wire_event("legacy", record_id, {"legacy": 1}, {"email": "d@x.io"})
        await publish_event(channel, edit)
        resolved = await collect(channel, topology.sink_queue("sales"), 1)
        assert resolved[0].headers[topology.RECORD_KEY_HEADER] == record_id
        assert dict(router.stats.invalid) == dict.fromkeys(attacks, 1)
        assert router.store.counts()["records"] == 4
        await router.stop()
        assert not router.task.exception()
        assert await depth(connection, topology.INGRESS) == 0


async def test_an_internal_error_on_one_event_refuses_it_with_a_traceback(
    amqp: str, tmp_path: Path, connection: AbstractRobustConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = new_id()
    real = pipeline.decide

    def decide(event: Any, *args: Any) -> Any:
        if event.record_id == bad:
            raise KeyError("boom")
        return real(event, *args)

    monkeypatch.setattr(pipeline, "decide", decide)
    async with running_router(amqp, tmp_path / "router.db", linger="200ms") as router:
        for name in ("legacy", "sales"):
            await register(connection, name)
        channel = await connection.channel()
        ids = [new_id(), bad, new_id()]
        bodies = [
            await publish_event(
                channel, wire_event("legacy", r, {"legacy": 1}, {"email": "e@x.io"})
            )
            for r in ids
        ]
        (refused,) = await collect(channel, topology.INVALID, 1)
        assert refused.body == bodies[1]
        assert refused.headers[topology.REASON_HEADER] == "internal-error"
        traceback = str(refused.headers[topology.TRACEBACK_HEADER])
        assert "KeyError" in traceback and "decide" in traceback
        assert len(traceback) <= topology.TRACEBACK_LIMIT
        delivered = await collect(channel, topology.sink_queue("sales"), 2)
        assert {m.body for m in delivered} == {bodies[0], bodies[2]}
        assert router.stats.invalid["internal-error"] == 1
        await router.stop()
        assert await depth(connection, topology.INGRESS) == 0


async def test_a_state_from_before_the_marks_refuses_no_legitimate_clock(
    amqp: str, tmp_path: Path, connection: AbstractRobustConnection
) -> None:
    # An upgrade: records stored by a router that kept no actor counters.
    db = tmp_path / "router.db"
    record_id = new_id()
    store = RouterStore(f"sqlite:///{db}")
    state = make_state({"legacy": 3, "hub": 2}, {"email": "a@x.io"}, record_id=record_id, version=0)
    store.commit_batch([], [state], [], [])
    with store.engine.begin() as conn:
        conn.execute(schema.actor_counters.delete())
    store.close()
    async with running_router(amqp, db) as router:
        for name in ("legacy", "sales"):
            await register(connection, name)
        channel = await connection.channel()
        # sales applied legacy:3 and hub:2 and edits on top: a foreign counter the marks
        # learnt from the stored records.
        edit = wire_event(
            "sales", record_id, {"legacy": 3, "hub": 2, "sales": 1}, {"email": "b@x.io"}
        )
        body = await publish_event(channel, edit)
        (delivered,) = await collect(channel, topology.sink_queue("legacy"), 1)
        assert delivered.body == body
        assert await depth(connection, topology.INVALID) == 0
        assert router.router.ctx.marks.highs == {"legacy": 3, "hub": 2, "sales": 1}
    # Persisted with the batch: a restart starts from them, not from a rescan.
    store = RouterStore(f"sqlite:///{db}")
    with store.engine.connect() as conn:
        rows = {r.actor: r.counter for r in conn.execute(sa.select(schema.actor_counters))}
    store.close()
    assert rows == {"legacy": 3, "hub": 2, "sales": 1}


def _copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database (WAL included), as a backup tool makes."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


def test_a_crm_database_restored_from_a_backup_comes_back_as_a_new_epoch(spine: Spine) -> None:
    spine.start()
    legacy = spine.dbs["legacy"]
    legacy.insert_contacts(5)
    spine.wait("seeded", lambda: spine.dbs["mktg"].count() == 5)
    spine.wait_quiet()
    backup = spine.workdir / "legacy.backup.db"
    _copy_sqlite(Path(legacy.engine.url.database or ""), backup)

    legacy.update_by_email("user1@example.com", first_name="AfterBackup")
    spine.wait(
        "the edit after the backup everywhere",
        lambda: spine.dbs["sales"].contacts()["user1@example.com"]["first_name"] == "AfterBackup",
    )
    spine.wait_quiet()
    assert spine.fleet.stop_one("legacy") == 0
    legacy.close()
    _copy_sqlite(
        backup, Path(legacy.engine.url.database or "")
    )  # the restore: links go back to legacy:1 everywhere
    assert legacy.contacts()["user1@example.com"]["first_name"] != "AfterBackup"

    spine.start_adapter("legacy")
    spine.wait(
        "legacy registered as a new epoch",
        lambda: (
            {a["name"]: a["actor"] for a in spine.status()["adapters"]}.get("legacy") == "legacy@2"
        ),
    )
    legacy.update_by_email("user1@example.com", first_name="AfterRestore")
    spine.wait(
        "the edit made after the restore everywhere",
        lambda: all(
            db.contacts()["user1@example.com"]["first_name"] == "AfterRestore"
            for db in spine.dbs.values()
        ),
    )
    spine.wait_quiet()
    status = spine.status()
    assert not status["router"]["invalid"], status["router"]["invalid"]
    log = (spine.workdir / "logs" / "legacy.log").read_text()
    assert "behind what it already published" in log
