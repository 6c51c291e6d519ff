"""Capture sees every committed change; writes never overwrite a same-second edit; a bad
row never blocks an entity (issue 10, items 3, 4 and 7), on SQLite, PostgreSQL and MariaDB.

Timestamps here are what real CRMs write: second precision (MariaDB ``DATETIME``,
PostgreSQL ``timestamp(0)``, whole seconds in SQLite) and many rows sharing one value
(Odoo stamps a transaction's rows with its start; SuiteCRM/EspoCRM/vtiger use seconds).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from adapters import cursor, links, sqlclock
from adapters.engine import SyncEngine
from adapters.sql import SqlAdapter
from router.adapter_config import AdapterConfig
from router.clock import Order, VectorClock, compare
from router.events import INT_MAX, ChangeEvent, decode
from tests.integration.test_sql_servers import delivery, private_server

pytestmark = pytest.mark.integration

FIELDS = {"email": "email_addr", "first_name": "fname", "last_name": "lname"}
OVERLAP = 2.0

FRACTION = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
SECONDS = (
    sa.DateTime()
    .with_variant(mysql.DATETIME(fsp=0), "mysql", "mariadb")
    .with_variant(postgresql.TIMESTAMP(precision=0), "postgresql")
)


@dataclass
class Db:
    backend: str
    url: str
    user: sa.Engine  # the CRM's users (and the test) edit rows through this
    prefix: str
    meta: sa.MetaData = field(default_factory=sa.MetaData)
    adapters: list[SqlAdapter] = field(default_factory=list)

    def table(self, stamp: Any = SECONDS, id_type: Any = None) -> sa.Table:
        table = sa.Table(
            f"{self.prefix}_contacts",
            self.meta,
            sa.Column("id", id_type, primary_key=True)
            if id_type is not None
            else sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            *(sa.Column(col, sa.String(255)) for col in FIELDS.values()),
            sa.Column("notes", sa.String(255)),
            sa.Column("updated_at", stamp, nullable=False, index=True),
            sa.Column("is_deleted", sa.Boolean, nullable=False, default=False),
        )
        table.create(self.user)
        return table

    def engine_for(self, table: sa.Table, page_size: int = 500) -> SyncEngine:
        config = AdapterConfig.model_validate(
            {
                "name": "legacy",
                "database": {"url": self.url},
                "entities": {
                    "contact": {
                        "table": table.name,
                        "deleted": "is_deleted",
                        "fields": FIELDS,
                    }
                },
            }
        )
        adapter = SqlAdapter(config, where=f"{self.backend} test config")
        self.adapters.append(adapter)
        return SyncEngine(adapter, "legacy", overlap=OVERLAP, page_size=page_size)

    def now(self) -> datetime:
        """The database's clock, naive UTC (what these tables hold)."""
        with self.user.connect() as conn:
            raw = conn.execute(
                sa.select(sqlclock.now_expr(conn.dialect.name, sqlclock.Kind.NAIVE))
            ).scalar_one()
        value: datetime = sqlclock.as_position(raw, sqlclock.Kind.NAIVE)
        return value

    def second(self, ago: float = 0.0) -> datetime:
        """A whole second of the database's clock, ``ago`` seconds back."""
        return (self.now() - timedelta(seconds=ago)).replace(microsecond=0)

    def insert(self, table: sa.Table, email: str, when: datetime, **extra: Any) -> Any:
        values = {
            "email_addr": email,
            "fname": "Ada",
            "lname": "Lovelace",
            "updated_at": when,
            "is_deleted": False,
            **extra,
        }
        with self.user.begin() as conn:
            key = conn.execute(table.insert().values(values)).inserted_primary_key
        assert key is not None
        return key[0]

    def edit(self, table: sa.Table, row_id: Any, when: datetime, **columns: Any) -> None:
        with self.user.begin() as conn:
            conn.execute(
                table.update().where(table.c.id == row_id).values(updated_at=when, **columns)
            )

    def row(self, table: sa.Table, row_id: Any) -> dict[str, Any]:
        with self.user.connect() as conn:
            return dict(conn.execute(sa.select(table).where(table.c.id == row_id)).mappings().one())


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    with private_server(Db, request.param, tmp_path) as srv:
        yield srv


def captured(engine: SyncEngine, cursors: dict[str, Any]) -> tuple[list[ChangeEvent], Any]:
    """Capture, confirm what it owes (as the runtime does); its events and the cursor."""
    before = set(engine.pending())
    result = engine.capture(cursors)
    owed = [e for e in engine.pending() if e not in before]
    engine.mark_published(owed)
    return [decode(e.body) for e in owed], result.positions.get("contact")


# -- the cursor and the database's clock ------------------------------------------------


def test_reads_never_start_after_the_database_clock_less_the_overlap(db: Db) -> None:
    table = db.table(FRACTION)
    engine = db.engine_for(table)
    for i in range(3):
        db.insert(table, f"u{i}@example.com", db.now() + timedelta(seconds=5 * i))
    events, position = captured(engine, {})
    assert len(events) == 3
    assert cursor.since(position, OVERLAP) <= db.now() - timedelta(seconds=OVERLAP)


def test_a_row_stamped_in_the_future_does_not_hide_later_edits(db: Db) -> None:
    table = db.table(FRACTION)
    engine = db.engine_for(table)
    db.insert(table, "future@example.com", db.now() + timedelta(seconds=30))
    first, position = captured(engine, {})
    assert [e.fields["email"] for e in first] == ["future@example.com"]
    assert position <= db.now()

    ordinary = db.insert(table, "ordinary@example.com", db.now())
    later, position = captured(engine, {"contact": position})
    # the ordinary edit is seen; the future row, re-read, is an echo and not sent again
    assert [e.fields["email"] for e in later] == ["ordinary@example.com"]
    db.edit(table, ordinary, db.now(), fname="Grace")
    [edit], _ = captured(engine, {"contact": position})
    assert (edit.fields["first_name"], edit.clock) == ("Grace", {"legacy": 2})


def test_a_delivery_is_stamped_by_the_database_clock(db: Db) -> None:
    table = db.table(FRACTION)
    engine = db.engine_for(table)
    row_id = db.insert(table, "ada@example.com", db.second(ago=10))
    [created], _ = captured(engine, {})
    before = db.now()
    event = delivery(
        created.record_id, created.vclock.increment("sales"), {"first_name": "Augusta"}
    )
    assert engine.apply(event).action == "applied"
    after = db.now()
    stamp = db.row(table, row_id)["updated_at"]
    assert before - timedelta(seconds=1) <= stamp <= after + timedelta(seconds=1)
    assert captured(engine, {})[0] == []  # the echo


@pytest.mark.parametrize("db", ["mariadb"], indirect=True)  # SET timestamp is MariaDB's
def test_mariadb_adapter_follows_the_database_clock_not_its_hosts(db: Db) -> None:
    """The CRM's database runs an hour behind the adapter's host: capture's cursor and the
    stamps of deliveries follow the database, never the host."""
    table = db.table(FRACTION)
    engine = db.engine_for(table)
    behind = time.time() - 3600
    adapter = db.adapters[-1]

    def hour_behind(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET timestamp = {behind:.6f}")

    sa.event.listen(adapter.engine, "connect", hour_behind)
    adapter.engine.dispose()
    db_clock = datetime.utcfromtimestamp(behind)
    row_id = db.insert(table, "ada@example.com", db_clock - timedelta(seconds=10))
    [created], position = captured(engine, {})
    assert position <= db_clock
    event = delivery(created.record_id, created.vclock.increment("sales"), {"first_name": "A"})
    assert engine.apply(event).action == "applied"
    stamp = db.row(table, row_id)["updated_at"]
    assert abs((stamp - db_clock).total_seconds()) < 60
    # a user edit stamped by the database's clock is captured from the saved cursor
    db.edit(table, row_id, db_clock, fname="User")
    [edit], _ = captured(engine, {"contact": position})
    assert edit.fields["first_name"] == "User"


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)  # only it reports xact_start
def test_postgresql_long_transaction_rows_are_captured(db: Db) -> None:
    """A 6 s transaction (3x the default overlap) commits rows stamped with its start
    (PostgreSQL now()) while other edits flow and capture moves on; its rows are seen."""
    table = db.table(FRACTION)
    engine = db.engine_for(table)
    db.insert(table, "first@example.com", db.now())
    _, position = captured(engine, {})
    started = threading.Event()
    release = threading.Event()

    def long_transaction() -> None:
        with db.user.begin() as conn:
            conn.execute(
                table.insert().values(
                    email_addr="long@example.com",
                    fname="Long",
                    lname="Txn",
                    updated_at=sa.func.timezone("UTC", sa.func.now()),
                    is_deleted=False,
                )
            )
            started.set()
            release.wait(30)

    worker = threading.Thread(target=long_transaction)
    worker.start()
    try:
        assert started.wait(10)
        seen: list[str] = []
        deadline = time.monotonic() + 6.0
        i = 0
        while time.monotonic() < deadline:
            db.insert(table, f"flow{i}@example.com", db.now())
            i += 1
            events, position = captured(engine, {"contact": position})
            seen += [str(e.fields["email"]) for e in events]
            time.sleep(0.4)
    finally:
        release.set()
        worker.join(10)
    for _ in range(2):
        events, position = captured(engine, {"contact": position})
        seen += [str(e.fields["email"]) for e in events]
    assert "long@example.com" in seen
    assert {f"flow{n}@example.com" for n in range(i)} <= set(seen)


# -- second precision and shared timestamps ---------------------------------------------


def test_a_same_second_user_edit_is_never_overwritten(db: Db) -> None:
    table = db.table(SECONDS)
    engine = db.engine_for(table)
    stamp = db.second(ago=5)
    row_id = db.insert(table, "ada@example.com", stamp)
    [created], _ = captured(engine, {})
    # The user edits in the same second: a second-precision token does not move.
    db.edit(table, row_id, stamp, fname="UserEdit")

    event = delivery(
        created.record_id, created.vclock.increment("sales"), {"first_name": "Delivered"}
    )
    result = engine.apply(event)
    assert result.action == "local-change-first"
    assert db.row(table, row_id)["fname"] == "UserEdit"
    [owed] = engine.pending()
    local = decode(owed.body)
    assert local.fields["first_name"] == "UserEdit"
    assert compare(local.vclock, event.vclock) is Order.CONCURRENT


def test_a_same_second_edit_of_an_unmapped_column_lets_the_delivery_through(db: Db) -> None:
    table = db.table(SECONDS)
    engine = db.engine_for(table)
    stamp = db.second(ago=5)
    row_id = db.insert(table, "ada@example.com", stamp)
    [created], _ = captured(engine, {})
    db.edit(table, row_id, stamp, notes="VIP")
    event = delivery(
        created.record_id, created.vclock.increment("sales"), {"first_name": "Delivered"}
    )
    assert engine.apply(event).action == "applied"
    row = db.row(table, row_id)
    assert (row["fname"], row["notes"]) == ("Delivered", "VIP")
    assert engine.pending() == []


def test_rows_sharing_one_second_are_all_captured_across_pages(db: Db) -> None:
    table = db.table(SECONDS)
    engine = db.engine_for(table, page_size=5)
    stamp = db.second(ago=5)
    ids = [db.insert(table, f"u{i}@example.com", stamp) for i in range(23)]
    events, position = captured(engine, {})
    assert len({e.source_record_id for e in events}) == 23
    # an edit in the same second, on a row in the middle of a page, is seen too
    db.edit(table, ids[11], stamp, fname="Same-second")
    [edit], _ = captured(engine, {"contact": position})
    assert (edit.source_record_id, edit.fields["first_name"]) == (str(ids[11]), "Same-second")
    assert captured(engine, {"contact": position})[0] == []


# -- bad rows ---------------------------------------------------------------------------


def test_bad_rows_are_skipped_counted_and_the_cursor_moves_on(db: Db) -> None:
    table = db.table(SECONDS, id_type=sa.String(400))
    engine = db.engine_for(table)
    stamp = db.second(ago=8)
    db.insert(table, "good@example.com", stamp, id="G-1")
    db.insert(table, "edge@example.com", stamp, id="C-1")
    first, _ = captured(engine, {})
    g, c = sorted(first, key=lambda e: e.source_record_id != "G-1")
    assert (g.source_record_id, c.source_record_id) == ("G-1", "C-1")
    # C's link now holds our own counter at its maximum: its next edit cannot count on
    near_max = VectorClock({"legacy": INT_MAX, "sales": 1})
    assert engine.apply(delivery(c.record_id, near_max, {"first_name": "Max"})).action == "applied"

    later = db.second(ago=4)
    db.insert(table, "long@example.com", later, id="L" * 300)  # over the wire's 255
    db.edit(table, "C-1", later, fname="Overflow")
    db.edit(table, "G-1", later, fname="Still flowing")
    before = engine.invalid_rows
    result = engine.capture({})
    events = [decode(e.body) for e in engine.pending()]
    assert [(e.source_record_id, e.fields["first_name"]) for e in events] == [
        ("G-1", "Still flowing")
    ]
    assert result.invalid == 2 and engine.invalid_rows == before + 2
    assert result.positions["contact"] >= later
    engine.mark_published(engine.pending())
    # re-read through the overlap, they are not counted again; the links are untouched
    assert engine.capture({}).invalid == 2 and engine.invalid_rows == before + 2
    with engine.adapter.transaction() as tx:
        assert links.by_source(tx, "contact", ["L" * 300]) == {}
        link = links.by_record(tx, c.record_id)
    assert link is not None and link.fields["first_name"] == "Max"
    assert g.record_id != c.record_id
