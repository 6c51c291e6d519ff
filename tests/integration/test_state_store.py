"""RouterStore (router/state.py) on SQLite, PostgreSQL and MariaDB.

DESIGN.md "Delivery guarantees": one transaction per batch holds the inbox entries, the
new record states (compare-and-set on ``version``) and the outbox rows; another router
that got there first makes the batch fail with ``VersionConflict`` and change nothing.

Each test gets its own SQLite file / PostgreSQL schema / MariaDB database (the table
names are fixed, so concurrent runs must never share one) and drops it at the end. In
CI (env ``CI`` set) an unreachable server fails the test; elsewhere it is skipped (the
admin-engine helper of test_sql_servers.py decides).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

import router.state as state_module
from router import retention, schema
from router.clock import VectorClock
from router.conflicts import Conflict, Settlement
from router.messages import Outgoing
from router.record import RecordState
from router.registry import Registration
from router.state import RouterStore, VersionConflict
from tests.factories import make_state, make_version, new_id
from tests.integration.test_sql_servers import _admin_engine

pytestmark = pytest.mark.integration

BACKENDS = ["sqlite", "postgresql", "mariadb"]
SERVERS = ["postgresql", "mariadb"]


@dataclass
class Db:
    """One test's private state database on one backend."""

    backend: str
    url: str
    admin: sa.Engine | None = None  # servers only: AUTOCOMMIT, outside the private db
    private: str = ""
    stores: list[RouterStore] = field(default_factory=list)

    def store(self, url: str | None = None) -> RouterStore:
        """A RouterStore (one "router") on this database; closed at the end of the test."""
        store = RouterStore(url or self.url)
        self.stores.append(store)
        return store

    def tagged_url(self, tag: str) -> str:
        """The URL, its PostgreSQL sessions named ``tag`` (to find them in pg_stat_activity)."""
        if self.backend != "postgresql":
            return self.url
        url = sa.engine.make_url(self.url).update_query_dict({"application_name": tag})
        return url.render_as_string(hide_password=False)

    def lock_waiters(self, tag: str) -> int:
        """Sessions of this test's database waiting for a row lock."""
        assert self.admin is not None
        if self.backend == "postgresql":
            query = sa.text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = :tag AND wait_event_type = 'Lock'"
            )
            params = {"tag": tag}
        else:
            query = sa.text(
                "SELECT count(*) FROM information_schema.INNODB_TRX t "
                "JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id "
                "WHERE t.trx_state = 'LOCK WAIT' AND p.DB = :db"
            )
            params = {"db": self.private}
        with self.admin.connect() as conn:
            return int(conn.execute(query, params).scalar_one())


def _provision(backend: str, tmp_path: Path) -> Iterator[Db]:
    if backend == "sqlite":
        db = Db(backend, f"sqlite:///{tmp_path / 'state' / 'router.db'}")
        try:
            yield db
        finally:
            for store in db.stores:
                store.close()
        return
    admin = _admin_engine(backend)
    private = f"crmsync_s_{uuid.uuid4().hex[:16]}"
    if backend == "postgresql":
        create = f'CREATE SCHEMA "{private}"'
        url = admin.url.update_query_dict({"options": f"-csearch_path={private}"})
        drop = f'DROP SCHEMA IF EXISTS "{private}" CASCADE'
    else:
        create = f"CREATE DATABASE `{private}`"
        url = admin.url.set(database=private)
        drop = f"DROP DATABASE IF EXISTS `{private}`"
    with admin.connect() as conn:
        conn.execute(sa.text(create))
    db = Db(backend, url.render_as_string(hide_password=False), admin, private)
    try:
        yield db
    finally:
        for store in db.stores:
            store.close()
        with admin.connect() as conn:
            conn.execute(sa.text(drop))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    yield from _provision(request.param, tmp_path)


@pytest.fixture(params=SERVERS)
def server_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    yield from _provision(request.param, tmp_path)


# -- helpers --------------------------------------------------------------------------

OCCURRED = datetime(2024, 5, 17, 13, 45, 12, 345678, tzinfo=timezone(timedelta(hours=2)))


def sample_state(record_id: str | None = None, *, name: str = "Ada") -> RecordState:
    """A record not stored yet (version 0), its fields set at different clocks, at a time
    with an offset and microseconds (they must round-trip)."""
    clock = {"sales": 1, "hub": 2}
    return make_state(
        clock,
        {"first_name": name, "age": 36},
        actor="sales",
        record_id=record_id or new_id(),
        field_clocks={"first_name": clock, "age": {"hub": 2}},
        occurred_at=OCCURRED,
        version=0,
    )


def outgoing(n: int, record_id: str = "") -> Outgoing:
    return Outgoing(
        "crmsync.deliveries",
        f"sink-{n % 3}",
        f"body-{n}".encode() + bytes([0, 255, n % 256]),
        new_id(),
        {"x-crmsync-record": record_id or new_id(), "BCC": ["legacy", "erp"]},
    )


def everything(store: RouterStore) -> tuple[Any, ...]:
    """Every observable part of the store, to show that a failed batch changed nothing."""
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(schema.records).order_by("record_id")).all()
        inbox_ids = conn.execute(sa.select(schema.inbox.c.event_id)).scalars().all()
    return (
        [tuple(r) for r in rows],
        sorted(inbox_ids),
        store.pending_outbox(),
        store.counts(),
    )


def race(
    db: Db,
    first: RouterStore,
    first_batch: tuple[Any, ...],
    second: RouterStore,
    second_batch: tuple[Any, ...],
    second_tag: str,
) -> tuple[object, object, bool]:
    """``first`` commits its batch; just before its COMMIT, ``second`` starts its own and is
    left to block on a row/index lock of ``first``'s open transaction; then ``first``
    commits. Returns both outcomes (outbox ids or the exception) and whether ``second``
    was seen waiting for the lock, i.e. whether the two transactions really overlapped."""
    outcome: dict[str, object] = {}
    overlapped: list[bool] = []

    def run_second() -> None:
        try:
            outcome["second"] = second.commit_batch(*second_batch)
        except Exception as e:  # the outcome is what the test checks
            outcome["second"] = e

    thread = threading.Thread(target=run_second, name="second-router")

    def before_commit(_conn: sa.Connection) -> None:
        if thread.ident is not None:
            return
        thread.start()
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and thread.is_alive():
            # InnoDB refreshes INNODB_TRX only when it was not read for 0.1 s
            time.sleep(0.15)
            if db.lock_waiters(second_tag):
                overlapped.append(True)
                return

    sa.event.listen(first.engine, "commit", before_commit)
    try:
        try:
            outcome["first"] = first.commit_batch(*first_batch)
        except Exception as e:
            outcome["first"] = e
    finally:
        sa.event.remove(first.engine, "commit", before_commit)
        if thread.ident is not None:
            thread.join(timeout=30)
    assert not thread.is_alive(), "the second router never finished"
    return outcome.get("first"), outcome.get("second"), bool(overlapped)


# -- 1. schema and hub identity -----------------------------------------------------


def test_tables_are_created_idempotently_and_hub_epoch_persists(db: Db) -> None:
    first = db.store()
    second = db.store()  # create_all on existing tables, hub_actor row already there
    assert first.hub_actor == "hub"
    assert second.hub_actor == "hub"
    assert first.counts() == {
        "records": 0,
        "inbox": 0,
        "outbox": 0,
        "conflicts_open": 0,
        "identities_parked": 0,
    }

    state = sample_state()
    first.commit_batch([], [state], [], [])
    assert second.get(state.record_id) == replace(state, version=1)

    assert first.bump_hub_epoch() == "hub@2"
    assert first.hub_actor == "hub@2"
    reopened = db.store()
    assert reopened.hub_actor == "hub@2"
    assert reopened.bump_hub_epoch() == "hub@3"
    assert db.store().hub_actor == "hub@3"


# -- 2. commit_batch round trip -----------------------------------------------------


def test_commit_batch_round_trips_records_inbox_and_outbox(db: Db) -> None:
    store = db.store()
    clock = VectorClock({"hub": 3, "sales@2": 7, "legacy": 2**63 - 1})
    full = RecordState(
        record_id=new_id(),
        entity="contact",
        clock=clock,
        fields={
            "first_name": "Zoë ✓",
            "empty": "",
            "age": 42,
            "big": 2**64 - 1,
            "small": -(2**63),
            "score": 3.25,
            "ratio": 0.1,
            "vip": True,
            "active": False,
            "phone": None,
        },
        field_clocks={"first_name": clock, "age": VectorClock({"hub": 1})},
        deleted=False,
        source="sales",
        actor="sales@2",
        event_id=new_id(),
        occurred_at=OCCURRED,
    )
    tomb = replace(sample_state(), deleted=True, fields={}, field_clocks={})
    processed = [new_id(), new_id()]
    deliveries = [outgoing(1, full.record_id), outgoing(2), outgoing(3)]
    deliveries[2] = replace(deliveries[2], message_id=None, headers={})

    ids = store.commit_batch(processed, [full, tomb], deliveries, [])

    # unique, and sorted in the order the deliveries were given (replay order)
    assert len(set(ids)) == 3 and ids == sorted(ids)
    assert ids == sorted(set(ids))
    got = store.get(full.record_id)
    assert got == replace(full, version=1)
    assert got is not None
    assert got.fields == full.fields
    assert [type(v) for v in got.fields.values()] == [type(v) for v in full.fields.values()]
    assert got.occurred_at == OCCURRED
    assert got.occurred_at.microsecond == 345678
    assert got.occurred_at.utcoffset() is not None
    assert store.get(tomb.record_id) == replace(tomb, version=1)
    assert store.get(new_id()) is None
    missing = new_id()
    loaded = store.load([full.record_id, full.record_id, tomb.record_id, missing])
    assert loaded == {
        full.record_id: replace(full, version=1),
        tomb.record_id: replace(tomb, version=1),
    }
    assert store.load([]) == {}

    assert store.seen([*processed, new_id()]) == set(processed)
    assert store.seen([]) == set()
    assert store.pending_outbox() == list(zip(ids, deliveries, strict=True))
    assert store.counts() == {
        "records": 2,
        "inbox": 2,
        "outbox": 3,
        "conflicts_open": 0,
        "identities_parked": 0,
    }

    # the next batch deletes what the broker confirmed since the last one
    later = outgoing(4)
    [later_id] = store.commit_batch([], [], [later], published=ids[:2])
    assert later_id > ids[2]
    assert store.pending_outbox() == [(ids[2], deliveries[2]), (later_id, later)]
    store.delete_outbox([ids[2]])
    store.delete_outbox([])
    assert store.pending_outbox() == [(later_id, later)]
    store.delete_outbox([later_id, ids[0]])  # an id already gone is harmless
    assert store.pending_outbox() == []
    assert store.counts() == {
        "records": 2,
        "inbox": 2,
        "outbox": 0,
        "conflicts_open": 0,
        "identities_parked": 0,
    }


def test_prune_inbox_removes_only_old_entries(db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    """Realistic epoch timestamps 50 s apart; the retention cut-off falls between them."""
    store = db.store()
    now = [1_700_000_010.0]
    monkeypatch.setattr(state_module, "time", SimpleNamespace(time=lambda: now[0]))
    old, recent = new_id(), new_id()
    store.commit_batch([old], [], [], [])
    now[0] = 1_700_000_060.0
    store.commit_batch([recent], [], [], [])

    assert retention.prune_inbox_chunk(store.engine, 1_700_000_030.0) == 1
    assert store.seen([old, recent]) == {recent}
    assert retention.prune_inbox_chunk(store.engine, 1_700_000_030.0) == 0
    assert retention.prune_inbox_chunk(store.engine, 1_700_000_060.0) == 0  # strictly older
    assert store.seen([recent]) == {recent}


# -- 3. compare-and-set -----------------------------------------------------------------


def test_update_with_current_version_bumps_it(db: Db) -> None:
    store = db.store()
    created = sample_state()
    store.commit_batch([], [created], [], [])
    loaded = store.get(created.record_id)
    assert loaded is not None and loaded.version == 1

    update = replace(loaded, fields={"first_name": "Grace"}, clock=loaded.clock.increment("hub"))
    store.commit_batch([new_id()], [update], [], [])
    again = store.get(created.record_id)
    assert again == replace(update, version=2)

    gone = replace(again, deleted=True)
    store.commit_batch([], [gone], [], [])
    assert store.get(created.record_id) == replace(gone, version=3)


def test_stale_version_raises_and_rolls_back_the_whole_batch(db: Db) -> None:
    store = db.store()
    created = sample_state()
    [published] = store.commit_batch([], [created], [outgoing(0)], [])
    stale = store.get(created.record_id)
    assert stale is not None
    store.commit_batch([], [replace(stale, fields={"first_name": "Winner"})], [], [])
    before = everything(store)

    bystander = sample_state()  # a new record in the same batch must not survive either
    event = new_id()
    with pytest.raises(VersionConflict):
        store.commit_batch(
            [event],
            [bystander, replace(stale, fields={"first_name": "Loser"})],
            [outgoing(1), outgoing(2)],
            [published],
        )

    assert everything(store) == before
    assert store.seen([event]) == set()
    assert store.get(bystander.record_id) is None
    current = store.get(created.record_id)
    assert current is not None and current.version == 2
    assert current.fields == {"first_name": "Winner"}
    assert [oid for oid, _ in store.pending_outbox()] == [published]  # not deleted


def test_inserting_a_record_another_router_inserted_raises(db: Db) -> None:
    mine, theirs = db.store(), db.store()
    record_id = new_id()
    theirs.commit_batch([new_id()], [sample_state(record_id, name="Theirs")], [outgoing(0)], [])
    before = everything(mine)

    event = new_id()
    with pytest.raises(VersionConflict):
        mine.commit_batch(
            [event], [sample_state(), sample_state(record_id, name="Mine")], [outgoing(1)], []
        )

    assert everything(mine) == before
    assert mine.seen([event]) == set()
    winner = mine.get(record_id)
    assert winner is not None and winner.fields["first_name"] == "Theirs"


def test_event_another_router_processed_first_raises_version_conflict(db: Db) -> None:
    """Two routers both judge the same redelivered event unseen; the second to commit must
    get VersionConflict (the daemon retries it, and the retry sees the event as a
    duplicate), not a raw IntegrityError that the batch loop does not handle."""
    mine, theirs = db.store(), db.store()
    record = sample_state()
    theirs.commit_batch([], [record], [], [])
    loaded = mine.get(record.record_id)
    assert loaded is not None
    event = new_id()
    theirs.commit_batch([event], [], [outgoing(0)], [])
    before = everything(mine)

    with pytest.raises(VersionConflict):
        mine.commit_batch([event], [], [outgoing(1)], [])

    assert everything(mine) == before


# -- 4. two routers racing on one server ---------------------------------------------


def test_racing_updates_exactly_one_wins(server_db: Db) -> None:
    tag = f"loser-{uuid.uuid4().hex[:8]}"
    first = server_db.store()
    second = server_db.store(server_db.tagged_url(tag))
    created = sample_state()
    first.commit_batch([], [created], [], [])
    seen_by_first = first.get(created.record_id)
    seen_by_second = second.get(created.record_id)
    assert seen_by_first is not None and seen_by_second is not None
    assert seen_by_first.version == seen_by_second.version == 1

    first_event, second_event = new_id(), new_id()
    one, two, overlapped = race(
        server_db,
        first,
        ([first_event], [replace(seen_by_first, fields={"first_name": "First"})], [], []),
        second,
        (
            [second_event],
            [replace(seen_by_second, fields={"first_name": "Second"})],
            [outgoing(9)],
            [],
        ),
        tag,
    )

    assert overlapped, "the second router's UPDATE never waited for the first's row lock"
    assert one == []
    assert isinstance(two, VersionConflict), two
    final = second.get(created.record_id)
    assert final is not None
    assert (final.version, final.fields) == (2, {"first_name": "First"})
    assert second.seen([first_event, second_event]) == {first_event}
    assert second.pending_outbox() == []


def test_racing_inserts_of_one_record_exactly_one_wins(server_db: Db) -> None:
    tag = f"loser-{uuid.uuid4().hex[:8]}"
    first = server_db.store()
    second = server_db.store(server_db.tagged_url(tag))
    record_id = new_id()
    first_event, second_event = new_id(), new_id()

    one, two, overlapped = race(
        server_db,
        first,
        ([first_event], [sample_state(record_id, name="First")], [outgoing(1)], []),
        second,
        ([second_event], [sample_state(record_id, name="Second")], [outgoing(2)], []),
        tag,
    )

    assert overlapped, "the second router's INSERT never waited for the first's key lock"
    assert isinstance(one, list) and len(one) == 1
    assert isinstance(two, VersionConflict), two
    final = second.get(record_id)
    assert final is not None
    assert (final.version, final.fields["first_name"]) == (1, "First")
    assert second.seen([first_event, second_event]) == {first_event}
    assert [oid for oid, _ in second.pending_outbox()] == one


# -- 5. registry ----------------------------------------------------------------------


def test_registry_lifecycle(db: Db) -> None:
    store = db.store()
    # timestamps exactly representable in any float type: precision has its own test
    legacy = Registration("legacy", 1, {"contact": ["email", "first_name"]}, "1.0", 1000.5, 1000.5)
    sales = Registration("sales", 3, {"contact": ["email"], "deal": []}, "2.1", 2000.25, 2000.25)
    store.save_registration(legacy)
    store.save_registration(sales)
    assert store.registrations() == {"legacy": legacy, "sales": sales}
    assert store.registrations()["sales"].actor == "sales@3"

    moved = replace(legacy, epoch=2, entities={"deal": ["amount"]}, sw_version="1.1")
    store.save_registration(moved)
    store.save_registration(moved)  # unchanged values: still an update, not a 2nd insert
    assert db.store().registrations() == {"legacy": moved, "sales": sales}

    store.touch_heartbeats({"legacy": 3000.75, "ghost": 3000.75})
    store.touch_heartbeats({})
    regs = store.registrations()
    assert regs["legacy"] == replace(moved, last_heartbeat=3000.75)
    assert regs["sales"] == sales
    assert "ghost" not in regs

    assert store.remove_registration("legacy") is True
    assert store.remove_registration("legacy") is False
    assert store.remove_registration("never") is False
    assert store.registrations() == {"sales": sales}


def test_registration_timestamps_keep_sub_second_precision(db: Db) -> None:
    """Heartbeats are ``time.time()`` values; they must come back as stored."""
    store = db.store()
    reg = Registration("legacy", 1, {"contact": []}, "1.0", 1_717_171_717.25, 1_717_171_777.5)
    store.save_registration(reg)
    assert store.registrations()["legacy"] == reg
    store.touch_heartbeats({"legacy": 1_717_171_800.125})
    assert store.registrations()["legacy"].last_heartbeat == 1_717_171_800.125


# -- 6. large batches and large payloads ---------------------------------------------


def test_large_batch_in_one_commit(db: Db) -> None:
    n = 1000
    store = db.store()
    states = [sample_state(name=f"n{i}") for i in range(n)]
    processed = [new_id() for _ in range(n)]
    deliveries = [outgoing(i, s.record_id) for i, s in enumerate(states)]

    ids = store.commit_batch(processed, states, deliveries, [])

    assert len(ids) == n and len(set(ids)) == n
    loaded = store.load(s.record_id for s in states)
    assert loaded == {s.record_id: replace(s, version=1) for s in states}
    assert store.seen(processed) == set(processed)
    assert store.pending_outbox() == list(zip(ids, deliveries, strict=True))

    store.delete_outbox(ids[: n // 2])
    assert store.pending_outbox() == list(zip(ids, deliveries, strict=True))[n // 2 :]

    # the next batch: every record updated, n new events, all n deliveries confirmed
    updates = [replace(loaded[s.record_id], fields={"first_name": "x"}) for s in states]
    more = [new_id() for _ in range(n)]
    assert store.commit_batch(more, updates, [], published=ids) == []
    assert store.pending_outbox() == []
    assert {s.version for s in store.load(s.record_id for s in states).values()} == {2}
    assert store.seen([*processed, *more]) == {*processed, *more}
    assert store.counts() == {
        "records": n,
        "inbox": 2 * n,
        "outbox": 0,
        "conflicts_open": 0,
        "identities_parked": 0,
    }


def test_large_record_and_delivery_round_trip(db: Db) -> None:
    """A CRM record with a long notes field (and the delivery carrying it) is not special:
    no event size limit exists, so the store must hold what the broker carries."""
    store = db.store()
    notes = "lorem ipsum " * 10_000  # ~120 kB
    state = replace(sample_state(), fields={"notes": notes})
    delivery = replace(outgoing(1, state.record_id), body=notes.encode())

    [oid] = store.commit_batch([new_id()], [state], [delivery], [])

    assert store.get(state.record_id) == replace(state, version=1)
    assert store.pending_outbox() == [(oid, delivery)]


# -- conflicts: parked ones and the audit record -------------------------------------


def make_conflict(record: RecordState) -> Conflict:
    return Conflict(
        id="c-0011aabb",
        record_id=record.record_id,
        entity=record.entity,
        opened_at=OCCURRED,
        sides=(
            make_version(
                "sales",
                record.clock,
                record.fields,
                event_id=record.event_id,
                occurred_at=OCCURRED,
                changed={"first_name"},
                sources={"age": "legacy"},
                field_clocks={"age": {"hub": 2}},
            ),
            make_version(
                "mktg@2",
                {"mktg": 1},
                {"first_name": "Augusta", "note": None, "score": 1.5, "vip": True},
                occurred_at=OCCURRED + timedelta(seconds=1),
                changed={"first_name", "vip"},
            ),
        ),
        base={"first_name": "Ada", "age": 36},
        policies={"first_name": "manual"},
        undecided=("first_name",),
        held=2,
    )


def test_parked_record_and_its_conflict_round_trip_and_settle(db: Db) -> None:
    store = db.store()
    record = replace(sample_state(), field_sources={"age": "legacy"}, parked="c-0011aabb")
    conflict = make_conflict(record)
    store.commit_batch([], [record], [], [], changed_conflicts=[conflict])
    assert store.get(record.record_id) == replace(record, version=1)
    assert store.load_conflicts(["c-0011aabb", "c-missing"]) == {conflict.id: conflict}
    assert store.open_conflicts() == [conflict]
    assert store.open_conflicts("company") == []
    assert store.counts()["conflicts_open"] == 1

    settled = conflict.settle(
        Settlement(
            at=OCCURRED + timedelta(minutes=5),
            by="operator:ops",
            event_id=new_id(),
            clock=VectorClock({"sales": 1, "mktg": 1, "hub": 3}),
            deleted=False,
            fields={
                "first_name": {
                    "policy": "operator",
                    "value": "Ada",
                    "losing": [["mktg", "Augusta"]],
                }
            },
        )
    )
    unparked = replace(record, version=1, parked=None)
    store.commit_batch([], [unparked], [], [], changed_conflicts=[settled])
    assert store.get(record.record_id) == replace(unparked, version=2)
    assert store.open_conflicts() == []
    assert store.conflict_history(record.record_id) == [settled]
    assert store.counts()["conflicts_open"] == 0

    # The audit record is kept for state.conflict_retention, then pruned; open ones never.
    assert store.prune_conflicts((OCCURRED + timedelta(minutes=4)).timestamp()) == 0
    assert store.prune_conflicts((OCCURRED + timedelta(minutes=6)).timestamp()) == 1
    assert store.conflict_history(record.record_id) == []


def test_a_failed_batch_stores_no_conflict_either(db: Db) -> None:
    store = db.store()
    created = sample_state()
    store.commit_batch([], [created], [], [])
    record = store.get(created.record_id)
    assert record is not None
    conflict = make_conflict(record)
    stale = replace(record, version=record.version + 5, parked=conflict.id)
    with pytest.raises(VersionConflict):
        store.commit_batch([], [stale], [], [], changed_conflicts=[conflict])
    assert store.load_conflicts([conflict.id]) == {}
    assert store.get(record.record_id) == record
