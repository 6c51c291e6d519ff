"""What the router forgets (router/retention.py), on SQLite, PostgreSQL and MariaDB:
the inbox by age and by size, tombstones after their retention once nobody is owed the
delete, in bounded chunks."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

import router.state as state_module
from router import retention, schema
from router.retention import Limits, Retention
from tests.factories import make_state, new_id
from tests.integration.test_state_store import BACKENDS, Db, _provision, outgoing

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0
DAY = 86400.0


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    yield from _provision(request.param, tmp_path)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The store's idea of now (what it stamps on inbox ids and records)."""
    now = [T0]
    monkeypatch.setattr(
        state_module,
        "time",
        SimpleNamespace(time=lambda: now[0], time_ns=lambda: int(now[0] * 1e9)),
    )
    return now


def _limits(**kw: Any) -> Limits:
    values = {
        "inbox_age": DAY,
        "inbox_entries": 1_000_000,
        "tombstone_age": 30 * DAY,
        "conflict_age": 90 * DAY,
    }
    return Limits(**(values | kw))


async def _db(fn: Any, *args: Any) -> Any:
    return fn(*args)


def _ids(db: Db) -> set[str]:
    with db.store().engine.connect() as conn:
        return set(conn.execute(sa.select(schema.inbox.c.event_id)).scalars())


def test_inbox_keeps_the_newest_entries_up_to_its_size(db: Db, clock: list[float]) -> None:
    store = db.store()
    batches = [[new_id() for _ in range(300)] for _ in range(10)]
    for i, batch in enumerate(batches):
        clock[0] = T0 + i
        store.commit_batch(batch, [], [], [])
    limits = _limits(inbox_entries=1000)
    cutoff = retention.inbox_cutoff(store.engine, T0 + 10, limits)
    pruned = 0
    while n := retention.prune_inbox_chunk(store.engine, cutoff):
        pruned += n
    left = _ids(db)
    # The newest ids stay, whole batches of them, no more than one batch over the bound.
    assert 1000 <= len(left) <= 1300 and pruned == 3000 - len(left)
    assert set(batches[-1]) | set(batches[-3]) <= left
    assert not left & set(batches[0])


def test_inbox_forgets_by_age_in_bounded_chunks(db: Db, clock: list[float]) -> None:
    store = db.store()
    old = [new_id() for _ in range(retention.CHUNK + 5)]
    store.commit_batch(old, [], [], [])
    clock[0] = T0 + 2 * DAY
    recent = [new_id() for _ in range(5)]
    store.commit_batch(recent, [], [], [])
    cutoff = retention.inbox_cutoff(store.engine, T0 + 2 * DAY, _limits())
    assert retention.prune_inbox_chunk(store.engine, cutoff) == retention.CHUNK  # bounded
    assert retention.prune_inbox_chunk(store.engine, cutoff) == 5
    assert retention.prune_inbox_chunk(store.engine, cutoff) == 0
    assert _ids(db) == set(recent)


def _tombstone(store: Any, deleted: bool = True, owed: bool = False) -> str:
    record_id = new_id()
    state = make_state(
        {"legacy": 1}, {"email": None}, record_id=record_id, deleted=deleted, version=0
    )
    made = store.commit_batch([], [state], [outgoing(1, record_id)], [])
    if not owed:  # its delivery was confirmed
        store.delete_outbox(made)
    return record_id


def test_tombstones_go_after_the_retention_once_nobody_is_owed_the_delete(
    db: Db, clock: list[float]
) -> None:
    store = db.store()
    old_delete = _tombstone(store)
    live = _tombstone(store, deleted=False)
    clock[0] = T0 + 20 * DAY
    recent_delete = _tombstone(store)

    sweep = Retention(_limits())
    now = T0 + 31 * DAY
    clock[0] = now
    pruned = asyncio.run(_round(sweep, store, now))
    assert pruned["tombstones"] == 1
    assert store.get(old_delete) is None
    assert store.get(live) is not None and store.get(recent_delete) is not None
    assert asyncio.run(_round(sweep, store, now))["tombstones"] == 0  # idempotent


def test_a_tombstone_whose_delete_is_still_owed_is_kept(db: Db, clock: list[float]) -> None:
    store = db.store()
    owed = _tombstone(store, owed=True)  # the broker never confirmed its delivery
    clock[0] = T0 + 1
    done = _tombstone(store)
    clock[0] = T0 + 40 * DAY
    deleted, _ = retention.prune_tombstones_chunk(store.engine, T0 + 10 * DAY, "")
    assert deleted == 0  # an owed delivery as old as them holds every tombstone after it
    assert store.get(owed) is not None and store.get(done) is not None
    store.delete_outbox([oid for oid, _ in store.pending_outbox()])
    deleted, _ = retention.prune_tombstones_chunk(store.engine, T0 + 10 * DAY, "")
    assert deleted == 2


def test_tombstone_walk_is_chunked(
    db: Db, clock: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "CHUNK", 3)
    store = db.store()
    ids = {_tombstone(store) for _ in range(7)}
    after, total, rounds = "", 0, 0
    while True:
        deleted, after = retention.prune_tombstones_chunk(store.engine, T0 + 1, after)
        total, rounds = total + deleted, rounds + 1
        if not after:
            break
    assert (total, rounds) == (7, 3)
    assert all(store.get(i) is None for i in ids)


async def _round(sweep: Retention, store: Any, now: float) -> dict[str, int]:
    retention_time = retention.time
    retention.time = SimpleNamespace(time=lambda: now)  # type: ignore[assignment]
    try:
        return await sweep.round(_db, store, full=True)
    finally:
        retention.time = retention_time  # type: ignore[assignment]
