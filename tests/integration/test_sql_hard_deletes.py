"""Hard deletes and id reuse (issue 10, item 6), on SQLite, PostgreSQL and MariaDB.

Alice (id 1) captured, hard-deleted, Bob inserted as id 1 before the next poll: Alice's
delete must propagate and Bob must be a new record, never an update of Alice's. The
delete journal (an ``AFTER DELETE`` trigger per mapped table) makes both visible on the
next poll; with ``capture.delete_journal = false`` the incremental id comparison finds
deletes within ceil(links / chunk) scans.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from adapters import journal, links
from adapters.engine import SyncEngine
from adapters.sql import SqlAdapter
from router.adapter_config import AdapterConfig
from router.events import ChangeEvent, decode
from tests.integration import test_sql_capture
from tests.integration.test_sql_capture import FRACTION, OVERLAP, Db, captured
from tests.integration.test_sql_identifiers import NAMES
from tests.integration.test_sql_servers import delivery

pytestmark = pytest.mark.integration

db = test_sql_capture.db  # the fixture: one private database per test on each backend

FIELDS = {"email": "email_addr", "first_name": "fname"}


def hard_table(
    db: Db,
    name: str = "contacts",
    id_col: str = "id",
    updated_at: str = "updated_at",
    fields: dict[str, str] = FIELDS,
) -> sa.Table:
    """A table without a ``deleted`` column: its rows are hard-deleted."""
    table = sa.Table(
        f"{db.prefix} {name}"[:60] if name != "contacts" else f"{db.prefix}_contacts",
        db.meta,
        sa.Column(id_col, sa.Integer, primary_key=True, autoincrement=True),
        *(sa.Column(col, sa.String(255)) for col in fields.values()),
        sa.Column(updated_at, FRACTION, nullable=False),
    )
    table.create(db.user)
    return table


def engine_for(
    db: Db,
    table: sa.Table,
    *,
    delete_journal: bool = True,
    chunk: int = 10000,
    id_col: str = "id",
    updated_at: str = "updated_at",
    fields: dict[str, str] = FIELDS,
) -> SyncEngine:
    config = AdapterConfig.model_validate(
        {
            "name": "legacy",
            "database": {"url": db.url},
            "capture": {"delete_journal": delete_journal, "hard_delete_chunk": chunk},
            "entities": {
                "contact": {
                    "table": table.name,
                    "id": id_col,
                    "updated_at": updated_at,
                    "fields": fields,
                }
            },
        }
    )
    adapter = SqlAdapter(config, where=f"{db.backend} test config")
    db.adapters.append(adapter)
    return SyncEngine(adapter, "legacy", overlap=OVERLAP, hard_delete_chunk=chunk)


def add(db: Db, table: sa.Table, row_id: int | None, email: str, **cols: Any) -> Any:
    """A user's insert (``row_id`` None: the database picks the id)."""
    values: dict[str, Any] = {"email_addr": email, "fname": email.split("@")[0], **cols}
    values.setdefault("updated_at", db.now())
    if row_id is not None:
        values["id"] = row_id
    with db.user.begin() as conn:
        key = conn.execute(table.insert().values(values)).inserted_primary_key
    assert key is not None
    return key[0]


def remove(db: Db, table: sa.Table, *row_ids: Any, id_col: str = "id") -> None:
    """A user's hard delete."""
    with db.user.begin() as conn:
        conn.execute(table.delete().where(table.c[id_col].in_(row_ids)))


def journal_rows(engine: SyncEngine) -> int:
    with engine.adapter.transaction() as tx:
        return journal.count(tx)


def link_of(engine: SyncEngine, record_id: str) -> links.Link:
    with engine.adapter.transaction() as tx:
        link = links.by_record(tx, record_id)
    assert link is not None
    return link


def test_a_hard_delete_propagates_on_the_next_poll(db: Db) -> None:
    table = hard_table(db)
    engine = engine_for(db, table)
    alice_id = add(db, table, None, "alice@example.com")
    add(db, table, None, "carol@example.com")
    created, position = captured(engine, {})
    alice = next(e for e in created if e.fields["email"] == "alice@example.com")
    remove(db, table, alice_id)
    assert journal_rows(engine) == 1
    [gone], _ = captured(engine, {"contact": position})
    assert (gone.op, gone.record_id, gone.source_record_id) == (
        "delete",
        alice.record_id,
        str(alice_id),
    )
    assert gone.clock == {"legacy": 2} and gone.fields == alice.fields
    assert journal_rows(engine) == 0  # handled, in the transaction that recorded it
    tombstone = link_of(engine, alice.record_id)
    assert tombstone.deleted and tombstone.source_record_id is None
    assert captured(engine, {"contact": position})[0] == []  # reported once


def test_a_reused_id_is_the_old_records_delete_then_a_new_record(db: Db) -> None:
    """Case 6: Alice (id 1) captured, hard-deleted; Bob inserted as id 1 before the next
    poll. Alice's delete goes out, and Bob as a record of his own."""
    table = hard_table(db)
    engine = engine_for(db, table)
    add(db, table, 1, "alice@example.com")
    [alice], position = captured(engine, {})
    remove(db, table, 1)
    add(db, table, 1, "bob@example.com")
    events, position = captured(engine, {"contact": position})
    # two records, so their order in the outbox does not matter
    gone, bob = sorted(events, key=lambda e: e.op)
    assert [(e.op, e.source_record_id) for e in (gone, bob)] == [("delete", "1"), ("upsert", "1")]
    assert gone.record_id == alice.record_id and gone.fields["email"] == "alice@example.com"
    assert bob.record_id != alice.record_id
    assert (bob.fields["email"], bob.clock) == ("bob@example.com", {"legacy": 1})
    assert link_of(engine, bob.record_id).source_record_id == "1"
    assert link_of(engine, alice.record_id).source_record_id is None
    # Bob's next edit is Bob's, and Alice stays deleted
    with db.user.begin() as conn:
        conn.execute(
            table.update().where(table.c.id == 1).values(fname="Robert", updated_at=db.now())
        )
    [edit], _ = captured(engine, {"contact": position})
    assert (edit.record_id, edit.op, edit.clock) == (bob.record_id, "upsert", {"legacy": 2})
    assert link_of(engine, alice.record_id).deleted


@pytest.mark.parametrize("db", ["postgresql", "mariadb"], indirect=True)
def test_a_delete_and_reinsert_during_a_page_is_seen_on_the_next(
    db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page reads the journal and the rows in one snapshot (REPEATABLE READ): a
    delete + reinsert committed between the two reads is in neither, so the row under
    the old id is never read against the old record's link. (SQLite's page holds the
    write lock, so no user commit lands inside it.)"""
    table = hard_table(db)
    engine = engine_for(db, table)
    add(db, table, 1, "alice@example.com")
    [alice], _ = captured(engine, {})
    adapter = engine.adapter
    read = adapter.read_changes

    def racing(tx: sa.Connection, *args: Any) -> Any:
        remove(db, table, 1)  # committed by another session, after the journal read
        add(db, table, 1, "bob@example.com")
        monkeypatch.setattr(adapter, "read_changes", read)
        return read(tx, *args)

    monkeypatch.setattr(adapter, "read_changes", racing)
    assert captured(engine, {})[0] == []  # the snapshot still holds Alice, unchanged
    gone, bob = sorted(captured(engine, {})[0], key=lambda e: e.op)
    assert (gone.op, gone.record_id) == ("delete", alice.record_id)
    assert (bob.op, bob.fields["email"]) == ("upsert", "bob@example.com")
    assert bob.record_id != alice.record_id


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)  # the one that reuses freed ids
def test_a_delivery_inserting_into_a_freed_id_settles_its_journal_first(db: Db) -> None:
    """SQLite hands an insert the highest freed id: Carol's row deleted by a user, then a
    delivery inserts Dave under her id before capture ran. Carol's delete goes out; the
    journal entry is not taken later for a delete of Dave."""
    table = hard_table(db)
    engine = engine_for(db, table)
    add(db, table, None, "alice@example.com")
    carol_id = add(db, table, None, "carol@example.com")
    created, position = captured(engine, {})
    carol = next(e for e in created if e.source_record_id == str(carol_id))
    remove(db, table, carol_id)
    before = set(engine.pending())
    dave = {"email": "dave@example.com", "first_name": "Dave"}
    result = engine.apply(delivery(str(uuid.uuid4()), {"sales": 1}, dave))
    assert (result.action, result.pending) == ("applied", True)
    [owed] = [e for e in engine.pending() if e not in before]
    gone = decode(owed.body)
    assert (gone.op, gone.record_id) == ("delete", carol.record_id)
    engine.mark_published([owed])
    with db.user.connect() as conn:
        dave_id = conn.execute(
            sa.select(table.c.id).where(table.c.email_addr == "dave@example.com")
        ).scalar_one()
    assert dave_id == carol_id  # the freed id, reused
    assert captured(engine, {"contact": position})[0] == []  # no delete of Dave
    assert journal_rows(engine) == 0


@pytest.mark.parametrize("case", sorted(NAMES))
def test_the_trigger_quotes_awkward_names_and_installs_once(db: Db, case: str) -> None:
    name, id_col, updated_at, _, fields = NAMES[case]
    table = hard_table(db, name, id_col, updated_at, fields)
    options = {"id_col": id_col, "updated_at": updated_at, "fields": fields}
    engine = engine_for(db, table, **options)
    engine_for(db, table, **options)  # a restart installs again: nothing doubles
    values = {table.c[fields["email"]]: "ada@example.com", table.c[fields["first_name"]]: "Ada"}
    with db.user.begin() as conn:
        conn.execute(table.insert().values({**values, table.c[updated_at]: db.now()}))
    [created], position = captured(engine, {})
    remove(db, table, int(created.source_record_id), id_col=id_col)
    assert journal_rows(engine) == 1
    [gone], _ = captured(engine, {"contact": position})
    assert (gone.op, gone.record_id) == ("delete", created.record_id)


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_a_delete_from_a_session_with_another_search_path_is_journaled(db: Db) -> None:
    table = hard_table(db)
    engine = engine_for(db, table)
    row_id = add(db, table, None, "ada@example.com")
    [created], _ = captured(engine, {})
    with db.user.begin() as conn:
        schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
        conn.execute(sa.text("SET LOCAL search_path TO public"))
        conn.execute(sa.text(f'DELETE FROM "{schema}"."{table.name}" WHERE id = {row_id}'))
    [gone], _ = captured(engine, {})
    assert (gone.op, gone.record_id) == ("delete", created.record_id)


def test_without_the_journal_the_scan_finds_deletes_within_ceil_links_over_chunk(
    db: Db,
) -> None:
    table = hard_table(db)
    chunk = 3
    engine = engine_for(db, table, delete_journal=False, chunk=chunk)
    with db.user.connect() as conn:
        assert not sa.inspect(conn).has_table(journal.journal_table.name)  # nothing installed
    ids = [add(db, table, None, f"u{i}@example.com") for i in range(10)]
    created, _ = captured(engine, {})
    by_sid = {e.source_record_id: e for e in created}
    remove(db, table, ids[1], ids[8])
    found: list[ChangeEvent] = []
    scans = math.ceil(len(ids) / chunk)
    for _ in range(scans):
        before = set(engine.pending())
        engine.scan_hard_deletes()
        owed = [e for e in engine.pending() if e not in before]
        engine.mark_published(owed)
        found += [decode(e.body) for e in owed]
    assert sorted((e.op, e.source_record_id) for e in found) == [
        ("delete", str(ids[1])),
        ("delete", str(ids[8])),
    ]
    assert {e.record_id for e in found} == {by_sid[str(i)].record_id for i in (ids[1], ids[8])}
    for _ in range(scans):  # a full round later: nothing more
        assert engine.scan_hard_deletes() == 0
