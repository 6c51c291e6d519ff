"""Paged capture on the adapter's one worker thread (issue 10, items 7 and 8), on SQLite.

A pass gives the worker up between pages, so sink writes interleave; the cursor is saved
per page after the outbox went out, so a crash resumes from the last saved page; a row
the database refuses to record is skipped alone; capture health feeds the heartbeat.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from adapters import links
from adapters.engine import SyncEngine
from adapters.polling import CapturePass, HealthTracker
from adapters.sql import SqlAdapter
from router.adapter_config import load_adapter
from router.control import CaptureHealth, Heartbeat, pack, parse_request
from router.demo.crms import CRMS, DemoDb
from router.events import decode


class Legacy:
    def __init__(self, tmp_path: Path, page_size: int) -> None:
        crm = CRMS["legacy"]
        self.db = DemoDb(crm, tmp_path / "legacy.db")
        toml = tmp_path / "legacy.toml"
        toml.write_text(
            crm.adapter_toml(tmp_path / "legacy.db", tmp_path / "s.db", "amqp://127.0.0.1:1/")
        )
        self.adapter = SqlAdapter(load_adapter(toml), where=str(toml))
        self.engine = SyncEngine(self.adapter, "legacy", overlap=2.0, page_size=page_size)
        self.worker = ThreadPoolExecutor(max_workers=1)
        self.trips: list[str] = []  # what ran on the worker, in order
        self.saved: list[Any] = []

    async def on_worker(self, fn: Callable[..., Any], *args: Any) -> Any:
        self.trips.append(getattr(fn, "__name__", "?"))
        return await asyncio.get_running_loop().run_in_executor(self.worker, fn, *args)

    async def publish(self) -> None:
        owed = await self.on_worker(self.engine.pending)
        await self.on_worker(self.engine.mark_published, owed)

    async def save(self, _entity: str, position: Any) -> None:
        self.saved.append(position)

    def capture_pass(self) -> CapturePass:
        return CapturePass(self.engine, self.on_worker, self.publish, self.save)

    def insert_past(self, count: int, start: int = 0) -> None:
        """Rows stamped a second apart, an hour ago: older than any capture limit."""
        base = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=1)
        with self.db.engine.begin() as conn:
            conn.execute(
                self.db.table.insert(),
                [
                    {
                        "email_addr": f"user{i}@example.com",
                        "fname": "Ada",
                        "lname": "Lovelace",
                        "updated_at": base + timedelta(seconds=i),
                        "is_deleted": False,
                    }
                    for i in range(start, start + count)
                ],
            )

    def close(self) -> None:
        self.worker.shutdown()
        self.adapter.close()
        self.db.close()


@pytest.fixture
def legacy(tmp_path: Path) -> Iterator[Legacy]:
    crm = Legacy(tmp_path, page_size=10)
    yield crm
    crm.close()


async def test_sink_writes_run_between_pages(legacy: Legacy) -> None:
    legacy.insert_past(45)
    loop_pass = asyncio.create_task(legacy.capture_pass().run({}))
    await asyncio.sleep(0)  # the pass has its first trip queued
    sink = asyncio.create_task(legacy.on_worker(lambda: "applied"))
    result = await loop_pass
    assert await sink == "applied"
    assert result.pages == 5 and result.rows == 45 and result.changes == 45
    pages = [i for i, name in enumerate(legacy.trips) if name == "capture_page"]
    sink_at = legacy.trips.index("<lambda>")
    assert sink_at < pages[1], legacy.trips  # not behind the whole table
    with legacy.adapter.transaction() as tx:
        assert links.count(tx) == 45
    assert legacy.engine.pending() == []


async def test_cursor_is_saved_per_page_after_its_outbox_went_out(legacy: Legacy) -> None:
    legacy.insert_past(30)
    cursors: dict[str, Any] = {}
    await legacy.capture_pass().run(cursors)
    assert len(legacy.saved) == 3
    assert legacy.saved == sorted(legacy.saved)
    assert cursors["contact"] == legacy.saved[-1]
    order = legacy.trips
    # per page: capture it, publish what it owes, only then the cursor moves
    assert order[:4] == ["limit", "capture_page", "pending", "mark_published"]


async def test_a_crash_mid_way_resumes_from_the_last_saved_page(legacy: Legacy) -> None:
    legacy.insert_past(50)
    cursors: dict[str, Any] = {}
    crash_after = 2

    async def publish_then_crash() -> None:
        await legacy.publish()
        if len(legacy.saved) == crash_after:
            raise RuntimeError("killed")

    crashing = CapturePass(legacy.engine, legacy.on_worker, publish_then_crash, legacy.save)
    with pytest.raises(RuntimeError):
        await crashing.run(cursors)
    saved = legacy.saved[-1]
    assert cursors["contact"] == saved

    restarted = await legacy.capture_pass().run({"contact": saved})
    # only the rest (plus the overlap's re-reads) is read again, not the whole table
    assert restarted.rows < 50 - 10
    assert restarted.changes == 50 - 3 * 10  # page 3 was captured but never saved
    with legacy.adapter.transaction() as tx:
        assert links.count(tx) == 50


def test_a_row_the_database_refuses_to_record_is_skipped_alone(
    legacy: Legacy, monkeypatch: pytest.MonkeyPatch
) -> None:
    legacy.insert_past(6)
    real_save = links.save

    def save(conn: sa.Connection, link: links.Link) -> None:
        if link.source_record_id == "3":
            raise sa.exc.DataError("INSERT", {}, ValueError("value too long"))
        real_save(conn, link)

    monkeypatch.setattr(links, "save", save)
    result = legacy.engine.capture({})
    assert result.invalid == 1 and result.changes == 5
    owed = sorted(decode(e.body).source_record_id for e in legacy.engine.pending())
    assert owed == ["1", "2", "4", "5", "6"]
    assert result.positions["contact"] is not None


def test_health_tracks_failing_passes_and_rides_the_heartbeat() -> None:
    health = HealthTracker()
    for _ in range(3):
        health.failed(RuntimeError("no values here"))
    report = health.report(bad_rows=2)
    assert report == CaptureHealth(failing=3, error="RuntimeError", bad_rows=2)
    beat = Heartbeat(name="legacy", actor="legacy", at=1.0, capture=report)
    parsed = parse_request(beat.routing_key, beat.body())
    assert isinstance(parsed, Heartbeat) and parsed.capture == report
    health.ok()
    assert health.report(0).failing == 0 and health.report(0).last_ok is not None


def test_a_heartbeat_of_an_earlier_adapter_still_validates() -> None:
    parsed = parse_request("heartbeat.legacy", pack({"actor": "legacy", "at": 1.0}))
    assert isinstance(parsed, Heartbeat) and parsed.capture is None


def test_a_row_holding_bytes_that_are_not_utf8_is_skipped_alone(legacy: Legacy) -> None:
    """SQLite stores whatever bytes a CRM writes into TEXT; such a row once failed the
    read of its whole page on every poll."""
    legacy.insert_past(3)
    with legacy.db.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE contacts SET fname = CAST(x'41ff42' AS TEXT) WHERE id = 2")
    result = legacy.engine.capture({})
    assert result.invalid == 1 and result.changes == 2
    owed = sorted(decode(e.body).source_record_id for e in legacy.engine.pending())
    assert owed == ["1", "3"]
