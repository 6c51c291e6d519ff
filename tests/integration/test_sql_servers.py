"""SyncEngine + SqlAdapter against real database servers: PostgreSQL and MariaDB.

The core flow of the SQLite unit tests (tests/unit/adapters/test_sql_engine_sqlite.py)
on the servers crmsync supports: capture an insert, apply a delivery and read it back,
and the conditional write that never overwrites a user edit capture has not seen.

Each test gets its own PostgreSQL schema / MariaDB database (``crmsync_link`` is a fixed
table name, so concurrent runs must never share one) and drops it at the end. In CI
(env ``CI`` set) an unreachable server fails the test; elsewhere it is skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

import msgpack
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from adapters import links
from adapters.engine import SyncEngine
from adapters.links import OutboxEntry
from adapters.rules import FieldVersions
from adapters.sql import SqlAdapter
from router.adapter_config import AdapterConfig
from router.clock import Order, VectorClock, compare, merge
from router.errors import PermanentWriteError
from router.events import ChangeEvent, decode, encode, new_event_id
from tests.schemas import first_release_link_table

pytestmark = pytest.mark.integration

T = TypeVar("T")

# Candidate admin URLs per backend (env overrides first). PostgreSQL trusts local users:
# try ``postgres``, then ``root``.
CANDIDATES: dict[str, list[str]] = {
    "postgresql": [
        u
        for u in (
            os.environ.get("CRMSYNC_TEST_PG_URL"),
            "postgresql+psycopg://postgres@127.0.0.1:5432/test",
            "postgresql+psycopg://root@127.0.0.1:5432/test",
        )
        if u
    ],
    "mariadb": [
        u
        for u in (
            os.environ.get("CRMSYNC_TEST_MYSQL_URL"),
            "mysql+pymysql://root@127.0.0.1:3306/test",
        )
        if u
    ],
}

UPDATED_AT = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

FIELDS = {"email": "email_addr", "first_name": "fname", "last_name": "lname", "phone": "phone"}


def _admin_engine(backend: str) -> sa.Engine:
    problems: list[str] = []
    for url in CANDIDATES[backend]:
        engine = sa.create_engine(
            url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
        )
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.DBAPIError as e:
            engine.dispose()
            problems.append(f"{engine.url.render_as_string()}: {str(e.orig).strip()[:200]}")
            continue
        return engine
    reason = f"{backend} is not reachable: " + "; ".join(problems)
    if os.environ.get("CI"):
        pytest.fail(f"integration tests need {backend} and CI must have it: {reason}")
    pytest.skip(reason)


@dataclass
class Server:
    """One test's private database on one server."""

    backend: str
    url: str  # for the adapter: points into the private schema/database
    user: sa.Engine  # the CRM's users (and the test) edit rows through this
    prefix: str
    meta: sa.MetaData = field(default_factory=sa.MetaData)
    adapters: list[SqlAdapter] = field(default_factory=list)

    def contacts_table(self, text_ids: bool = False) -> sa.Table:
        name = f"{self.prefix}_{'people' if text_ids else 'contacts'}"
        table = sa.Table(
            name,
            self.meta,
            sa.Column("id", sa.String(64), primary_key=True)
            if text_ids
            else sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            *(sa.Column(col, sa.String(255)) for col in FIELDS.values()),
            sa.Column("updated_at", UPDATED_AT, nullable=False, index=True),
            sa.Column("notes", sa.String(255)),
            sa.Column("is_deleted", sa.Boolean, nullable=False, default=False),
        )
        table.create(self.user)
        return table

    def engine_for(self, table: sa.Table, name: str = "legacy") -> SyncEngine:
        config = AdapterConfig.model_validate(
            {
                "name": name,
                "database": {"url": self.url},
                "entities": {
                    "contact": {
                        "table": table.name,
                        "id": "id",
                        "updated_at": "updated_at",
                        "deleted": "is_deleted",
                        "fields": FIELDS,
                    }
                },
            }
        )
        adapter = SqlAdapter(config, where=f"{self.backend} test config")
        self.adapters.append(adapter)
        return SyncEngine(adapter, name, overlap=2.0)


@contextmanager
def private_database(backend: str, tmp_path: Path | None = None) -> Iterator[str]:
    """The URL of a database of this test's own (a schema on PostgreSQL, a database on
    MariaDB, a file under ``tmp_path`` on SQLite), dropped afterwards."""
    if backend == "sqlite":
        assert tmp_path is not None
        yield f"sqlite:///{tmp_path / f'crm-{uuid.uuid4().hex[:8]}.db'}"
        return
    admin = _admin_engine(backend)
    private = f"crmsync_t_{uuid.uuid4().hex[:16]}"
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
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(drop))
        admin.dispose()


class _HasAdapters(Protocol):
    adapters: list[SqlAdapter]


ServerT = TypeVar("ServerT", bound=_HasAdapters)


@contextmanager
def private_server(
    kind: Callable[[str, str, sa.Engine, str], ServerT],
    backend: str,
    tmp_path: Path | None = None,
) -> Iterator[ServerT]:
    """A ``kind`` on a private database; its adapters closed and engine disposed after."""
    with private_database(backend, tmp_path) as url:
        user = sa.create_engine(url)
        srv = kind(backend, url, user, f"t{uuid.uuid4().hex[:8]}")
        try:
            yield srv
        finally:
            for adapter in srv.adapters:
                adapter.close()
            user.dispose()


@pytest.fixture(params=["postgresql", "mariadb"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    with private_server(Server, request.param) as srv:
        yield srv


# -- helpers --------------------------------------------------------------------------


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def insert_row(srv: Server, table: sa.Table, email: str, **extra: Any) -> Any:
    values: dict[str, Any] = {
        "email_addr": email,
        "fname": "Ada",
        "lname": "Lovelace",
        "phone": "+44-1",
        "updated_at": now(),
        "is_deleted": False,
        **extra,
    }
    with srv.user.begin() as conn:
        key = conn.execute(table.insert().values(values)).inserted_primary_key
    assert key is not None
    return key[0]


def edit_row(srv: Server, table: sa.Table, row_id: Any, **columns: Any) -> None:
    columns["updated_at"] = now()
    with srv.user.begin() as conn:
        conn.execute(table.update().where(table.c.id == row_id).values(columns))


def read_row(srv: Server, table: sa.Table, row_id: Any) -> dict[str, Any] | None:
    with srv.user.connect() as conn:
        r = conn.execute(sa.select(table).where(table.c.id == row_id)).mappings().first()
    return dict(r) if r else None


def all_rows(srv: Server, table: sa.Table) -> list[dict[str, Any]]:
    with srv.user.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(table)).mappings()]


def link_of(engine: SyncEngine, record_id: str) -> links.Link | None:
    with engine.adapter.transaction() as tx:
        return links.by_record(tx, record_id)


def delivery(
    record_id: str, clock: VectorClock | dict[str, int], fields: dict[str, Any], op: str = "upsert"
) -> ChangeEvent:
    return ChangeEvent(
        event_id=new_event_id(),
        source="sales",
        actor="sales",
        entity="contact",
        record_id=record_id,
        source_record_id="S-1",
        op=op,  # type: ignore[arg-type]
        clock=dict(clock),
        fields=fields,
        changed=sorted(fields),
        occurred_at=datetime.now(UTC),
    )


@dataclass(frozen=True)
class Owed:
    """What the engine returned, with the outbox entries the call added (the engine
    itself only counts them)."""

    positions: dict[str, Any]
    invalid: int
    action: str | None
    pending: list[OutboxEntry]


def newly_owed(engine: SyncEngine, action: Callable[[], T]) -> tuple[T, list[OutboxEntry]]:
    before = set(engine.pending())
    result = action()
    added = [e for e in engine.pending() if e not in before]
    for entry in added:  # each entry's id and routing key are its event's
        event = decode(entry.body)
        assert (entry.event_id, entry.routing_key) == (event.event_id, event.routing_key)
    return result, added


def capture(engine: SyncEngine, cursors: dict[str, Any]) -> Owed:
    result, added = newly_owed(engine, lambda: engine.capture(cursors))
    assert result.changes == len(added)
    return Owed(result.positions, result.invalid, None, added)


def apply(engine: SyncEngine, event: ChangeEvent) -> Owed:
    result, added = newly_owed(engine, lambda: engine.apply(event))
    assert result.pending == bool(added)
    return Owed({}, 0, result.action, added)


def capture_one(engine: SyncEngine) -> ChangeEvent:
    result = capture(engine, {})
    assert len(result.pending) == 1, result.pending
    engine.mark_published(result.pending)
    return decode(result.pending[0].body)


# -- tests ----------------------------------------------------------------------------


def test_capture_insert_yields_event(server: Server) -> None:
    table = server.contacts_table()
    engine = server.engine_for(table)
    row_id = insert_row(server, table, "ada@example.com")

    result = capture(engine, {})
    assert result.invalid == 0
    [entry] = result.pending
    event = decode(entry.body)
    assert event.record_id == entry.record_id
    assert event.op == "upsert"
    assert event.source == "legacy"
    assert event.clock == {"legacy": 1}
    assert event.source_record_id == str(row_id)
    assert event.fields == {
        "email": "ada@example.com",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "phone": "+44-1",
    }
    position = result.positions["contact"]
    assert isinstance(position, datetime)

    engine.mark_published(result.pending)
    assert engine.pending() == []
    # the version token and the content hash are stable across re-reads on this server
    assert capture(engine, result.positions).pending == []
    assert capture(engine, {}).pending == []

    edit_row(server, table, row_id, fname="Grace")
    update = capture_one(engine)
    assert update.record_id == event.record_id
    assert update.clock == {"legacy": 2}
    assert update.changed == ["first_name"]


def test_overlap_window_captures_late_commit(server: Server) -> None:
    table = server.contacts_table()
    engine = server.engine_for(table)
    insert_row(server, table, "first@example.com")
    first = capture(engine, {})
    engine.mark_published(first.pending)
    cursor = first.positions["contact"]
    insert_row(server, table, "late@example.com", updated_at=cursor - timedelta(seconds=1))
    second = capture(engine, first.positions)
    [entry] = second.pending
    assert decode(entry.body).fields["email"] == "late@example.com"


def test_apply_delivery_writes_row_and_reads_it_back(server: Server) -> None:
    table = server.contacts_table()
    engine = server.engine_for(table)
    row_id = insert_row(server, table, "ada@example.com")
    created = capture_one(engine)

    clock = merge(created.vclock, VectorClock({"sales": 1}))
    event = delivery(
        created.record_id, clock, {**created.fields, "first_name": "Augusta", "phone": None}
    )
    result = apply(engine, event)
    assert result.action == "applied"
    assert result.pending == []

    row = read_row(server, table, row_id)
    assert row is not None
    assert (row["email_addr"], row["fname"], row["lname"], row["phone"]) == (
        "ada@example.com",
        "Augusta",
        "Lovelace",
        None,
    )
    assert not row["is_deleted"]
    link = link_of(engine, created.record_id)
    assert link is not None
    assert link.clock == clock
    assert link.source_record_id == str(row_id)
    assert link.fields["first_name"] == "Augusta"
    with server.user.connect() as conn:
        token = conn.execute(
            sa.select(sa.cast(table.c.updated_at, sa.String)).where(table.c.id == row_id)
        ).scalar_one()
    assert link.version == token

    # the echo is not published; duplicates are skipped
    assert capture(engine, {}).pending == []
    assert apply(engine, event).action == "skip-stale"
    assert len(all_rows(server, table)) == 1


def test_apply_unknown_record_inserts_row(server: Server) -> None:
    table = server.contacts_table()
    engine = server.engine_for(table)
    existing = insert_row(server, table, "first@example.com")
    capture_one(engine)
    record_id = str(uuid.uuid4())
    fields = {"email": "new@example.com", "first_name": "New", "last_name": "Person"}
    assert apply(engine, delivery(record_id, {"sales": 1}, fields)).action == "applied"
    rows = {r["email_addr"]: r for r in all_rows(server, table)}
    new = rows["new@example.com"]
    assert new["id"] != existing
    assert (new["fname"], new["lname"], new["phone"]) == ("New", "Person", None)
    link = link_of(engine, record_id)
    assert link is not None and link.source_record_id == str(new["id"])
    assert capture(engine, {}).pending == []


def test_apply_unknown_record_text_ids_use_record_id(server: Server) -> None:
    table = server.contacts_table(text_ids=True)
    engine = server.engine_for(table, name="sales")
    record_id = str(uuid.uuid4())
    event = delivery(record_id, {"sales": 1}, {"email": "new@example.com"}).model_copy(
        update={"source": "legacy", "actor": "legacy", "clock": {"legacy": 1}}
    )
    assert apply(engine, event).action == "applied"
    row = read_row(server, table, record_id)
    assert row is not None and row["email_addr"] == "new@example.com"
    assert capture(engine, {}).pending == []


def test_user_edit_not_yet_captured_wins_over_delivery(server: Server) -> None:
    table = server.contacts_table()
    engine = server.engine_for(table)
    row_id = insert_row(server, table, "ada@example.com")
    created = capture_one(engine)
    edit_row(server, table, row_id, fname="UserEdit")  # capture has not seen this

    clock = merge(created.vclock, VectorClock({"sales": 1}))
    event = delivery(created.record_id, clock, {**created.fields, "first_name": "Delivered"})
    result = apply(engine, event)

    assert result.action == "local-change-first"
    row = read_row(server, table, row_id)
    assert row is not None and row["fname"] == "UserEdit"
    [entry] = result.pending
    local = decode(entry.body)
    assert [decode(e.body) for e in engine.pending()] == [local]
    assert local.fields["first_name"] == "UserEdit"
    assert local.clock == {"legacy": 2}
    assert compare(local.vclock, event.vclock) is Order.CONCURRENT
    assert capture(engine, {}).pending == []
    assert apply(engine, event).action == "skip-concurrent"


def test_unmapped_column_edit_does_not_block_delivery(server: Server) -> None:
    table = server.contacts_table()
    engine = server.engine_for(table)
    row_id = insert_row(server, table, "ada@example.com")
    created = capture_one(engine)
    edit_row(server, table, row_id, notes="VIP")

    clock = merge(created.vclock, VectorClock({"sales": 1}))
    event = delivery(created.record_id, clock, {**created.fields, "first_name": "Delivered"})
    result = apply(engine, event)

    assert result.action == "applied"
    assert result.pending == []
    row = read_row(server, table, row_id)
    assert row is not None
    assert (row["fname"], row["notes"]) == ("Delivered", "VIP")
    assert engine.pending() == []
    assert capture(engine, {}).pending == []


def test_delete_delivery_sets_flag_and_update_wins_resurrects(server: Server) -> None:
    table = server.contacts_table()
    engine = server.engine_for(table)
    row_id = insert_row(server, table, "ada@example.com")
    created = capture_one(engine)

    gone = delivery(
        created.record_id, created.vclock.increment("sales"), created.fields, op="delete"
    )
    assert apply(engine, gone).action == "applied"
    row = read_row(server, table, row_id)
    assert row is not None and row["is_deleted"]
    assert capture(engine, {}).pending == []

    back = delivery(created.record_id, gone.vclock.increment("sales"), created.fields)
    assert apply(engine, back).action == "applied"
    row = read_row(server, table, row_id)
    assert row is not None and not row["is_deleted"]
    assert len(all_rows(server, table)) == 1
    assert capture(engine, {}).pending == []


def test_link_table_of_an_older_version_is_upgraded(server: Server) -> None:
    table = server.contacts_table()
    old = first_release_link_table()
    old.create(server.user)
    owed = ChangeEvent(
        event_id=new_event_id(),
        source="legacy",
        actor="legacy",
        entity="contact",
        record_id=str(uuid.uuid4()),
        source_record_id="7",
        op="delete",
        clock={"legacy": 2},
        fields={"email": "gone@example.com"},
        changed=[],
        occurred_at=datetime.now(UTC),
    )
    with server.user.begin() as conn:
        conn.execute(
            old.insert().values(
                record_id=owed.record_id,
                entity="contact",
                source_record_id="7",
                clock=msgpack.packb(owed.clock, use_bin_type=True),
                content_hash="0" * 32,
                fields=msgpack.packb(owed.fields, use_bin_type=True),
                version=None,
                deleted=True,
                published=False,
                pending_event=encode(owed),
            )
        )

    engine = server.engine_for(table)  # the adapter creates (here: upgrades) crmsync_link
    columns = {c["name"] for c in sa.inspect(server.user).get_columns("crmsync_link")}
    assert columns >= {"pending_event_id", "pending_routing_key", "field_versions"}
    with server.user.connect() as conn:
        kept = links.by_record(conn, owed.record_id)
    assert kept is not None and kept.field_versions is None  # unknown: written before them
    # the row the older version wrote publishes with its event's id and routing key
    [entry] = engine.pending()
    body = encode(owed)
    assert entry == OutboxEntry(owed.record_id, owed.event_id, "legacy.contact.delete", body)
    engine.mark_published([entry])
    assert engine.pending() == []

    # a change recorded now keeps its id and routing key beside the event
    insert_row(server, table, "ada@example.com")
    [fresh] = capture(engine, {}).pending
    c = links.link_table.c
    with server.user.connect() as conn:
        stored = conn.execute(
            sa.select(c.pending_event_id, c.pending_routing_key).where(
                c.record_id == fresh.record_id
            )
        ).one()
    assert tuple(stored) == (fresh.event_id, "legacy.contact.upsert")
    # ...and the counter of the edit that set each value, in the link and the event
    published = decode(fresh.body)
    assert published.field_versions == dict.fromkeys(published.fields, 1)
    with server.user.connect() as conn:
        link = links.by_record(conn, fresh.record_id)
    assert link is not None
    assert link.field_versions == FieldVersions("legacy", dict.fromkeys(published.fields, 1))
    server.engine_for(table)  # starting again on the upgraded table changes nothing
    assert engine.pending() == [fresh]


def test_a_refused_write_keeps_the_databases_text_for_the_dlq_but_not_for_logs(
    server: Server,
) -> None:
    """PostgreSQL's and MariaDB's duplicate-key errors quote the value (``Key
    (email_addr)=(...)``, ``Duplicate entry '...'``): the error's message keeps it for the
    DLQ header (the body holds the record anyway), its log text does not."""
    table = server.contacts_table()
    with server.user.begin() as conn:
        conn.execute(sa.text(f"CREATE UNIQUE INDEX {table.name}_mail ON {table.name} (email_addr)"))
    engine = server.engine_for(table)
    insert_row(server, table, "taken@example.com")
    capture_one(engine)
    fields = {"email": "taken@example.com", "first_name": "Dup", "last_name": "Licate"}
    with pytest.raises(PermanentWriteError) as info:
        engine.apply(delivery(str(uuid.uuid4()), {"sales": 1}, fields))
    assert "taken@example.com" in str(info.value)
    assert "taken@example.com" not in info.value.log_text
    assert info.value.log_text.startswith(("UniqueViolation", "IntegrityError"))
    if server.backend == "postgresql":
        assert info.value.log_text == f"UniqueViolation ({table.name}_mail)"
