"""crmsync_link on SQLite: the outbox entries it keeps, and upgrading a table that an
older version created (without the outbox's event id and routing key columns)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgpack
import pytest
import sqlalchemy as sa

from adapters import links
from adapters.engine import SyncEngine
from adapters.links import OutboxEntry
from adapters.runtime import _outgoing
from adapters.sql import SqlAdapter
from router import topology
from router.adapter_config import AdapterConfig
from router.events import ChangeEvent, decode, encode, new_event_id
from tests.schemas import first_release_link_table

NEW_COLUMNS = {"pending_event_id", "pending_routing_key", "field_versions"}


def old_pending_row(event: ChangeEvent, *, published: bool = False) -> dict[str, Any]:
    """A link row as the first release wrote it for a local change."""
    return {
        "record_id": event.record_id,
        "entity": event.entity,
        "source_record_id": event.source_record_id,
        "clock": msgpack.packb(event.clock, use_bin_type=True),
        "content_hash": "0" * 32,
        "fields": msgpack.packb(event.fields, use_bin_type=True),
        "version": "2024-05-01 12:00:00.000000",
        "deleted": event.op == "delete",
        "published": published,
        "pending_event": None if published else encode(event),
    }


def local_change(source_record_id: str, op: str = "upsert") -> ChangeEvent:
    return ChangeEvent(
        event_id=new_event_id(),
        source="legacy",
        actor="legacy",
        entity="contact",
        record_id=str(uuid.uuid4()),
        source_record_id=source_record_id,
        op=op,  # type: ignore[arg-type]
        clock={"legacy": 1},
        fields={"email": f"user{source_record_id}@example.com", "first_name": "Ada"},
        changed=["email", "first_name"],
        occurred_at=datetime.now(UTC),
    )


class Crm:
    """A one-table CRM on a SQLite file."""

    def __init__(self, path: Path) -> None:
        self.url = f"sqlite:///{path}"
        self.db = sa.create_engine(self.url)
        self.meta = sa.MetaData()
        self.contacts = sa.Table(
            "contacts",
            self.meta,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("email_addr", sa.String(255)),
            sa.Column("fname", sa.String(255)),
            sa.Column("updated_at", sa.DateTime, nullable=False),
            sa.Column("is_deleted", sa.Boolean, nullable=False, default=False),
        )
        self.contacts.create(self.db)

    def adapter(self) -> SqlAdapter:
        config = AdapterConfig.model_validate(
            {
                "name": "legacy",
                "database": {"url": self.url},
                "entities": {
                    "contact": {
                        "table": "contacts",
                        "deleted": "is_deleted",
                        "fields": {"email": "email_addr", "first_name": "fname"},
                    }
                },
            }
        )
        return SqlAdapter(config, where="test config")

    def insert(self, email: str) -> None:
        with self.db.begin() as conn:
            conn.execute(
                self.contacts.insert().values(
                    email_addr=email, fname="Ada", updated_at=datetime.now(UTC), is_deleted=False
                )
            )

    def columns(self) -> set[str]:
        return {c["name"] for c in sa.inspect(self.db).get_columns("crmsync_link")}

    def raw_links(self) -> dict[str, Any]:
        table = sa.Table("crmsync_link", sa.MetaData(), autoload_with=self.db)
        with self.db.connect() as conn:
            return {r.record_id: r for r in conn.execute(sa.select(table))}


@pytest.fixture
def crm(tmp_path: Path) -> Any:
    made = Crm(tmp_path / "legacy.db")
    yield made
    made.db.dispose()


def test_old_link_table_is_upgraded_and_its_pending_row_publishes(crm: Crm) -> None:
    old = first_release_link_table(sa.MetaData())
    old.create(crm.db)
    owed, done = local_change("1", op="delete"), local_change("2")
    with crm.db.begin() as conn:
        conn.execute(old.insert().values(old_pending_row(owed)))
        conn.execute(old.insert().values(old_pending_row(done, published=True)))
    assert crm.columns().isdisjoint(NEW_COLUMNS)

    adapter = crm.adapter()  # creates crmsync_link if missing: here, upgrades it
    try:
        assert crm.columns() >= NEW_COLUMNS
        raw = crm.raw_links()[owed.record_id]
        assert (raw.pending_event_id, raw.pending_routing_key) == (None, None)
        assert raw.field_versions is None  # unknown: the old version did not keep them
        engine = SyncEngine(adapter, "legacy", overlap=2.0)

        # the entry written by the old version: id and routing key read from its event
        [entry] = engine.pending()
        assert entry == OutboxEntry(
            owed.record_id, owed.event_id, "legacy.contact.delete", encode(owed)
        )
        message = _outgoing(entry, "legacy")
        assert (message.exchange, message.routing_key) == (topology.CHANGES, owed.routing_key)
        assert message.message_id == owed.event_id
        assert message.body == encode(owed)
        assert message.headers == {topology.RECORD_KEY_HEADER: owed.record_id}
        assert message.user_id == "legacy"
        engine.mark_published([entry])
        assert engine.pending() == []

        # the old rows still read as links
        with adapter.transaction() as tx:
            kept = links.by_record(tx, done.record_id)
        assert kept is not None and kept.published and kept.fields == done.fields

        # a change recorded now stores its id and routing key beside the event
        crm.insert("new@example.com")
        assert engine.capture({}).changes == 1
        [fresh] = engine.pending()
        event = decode(fresh.body)
        assert (fresh.event_id, fresh.routing_key) == (event.event_id, "legacy.contact.upsert")
        raw = crm.raw_links()[fresh.record_id]
        assert (raw.pending_event_id, raw.pending_routing_key) == (
            event.event_id,
            "legacy.contact.upsert",
        )
        engine.mark_published([fresh])
        raw = crm.raw_links()[fresh.record_id]
        assert raw.published
        assert (raw.pending_event, raw.pending_event_id, raw.pending_routing_key) == (
            None,
            None,
            None,
        )
    finally:
        adapter.close()
    # once upgraded, creating again changes nothing
    with crm.db.begin() as conn:
        links.create(conn)
    assert crm.columns() >= NEW_COLUMNS


def test_new_entries_publish_without_decoding(crm: Crm, monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = crm.adapter()
    try:
        engine = SyncEngine(adapter, "legacy", overlap=2.0)
        crm.insert("a@example.com")
        crm.insert("b@example.com")
        assert engine.capture({}).changes == 2

        def refuse(body: bytes) -> ChangeEvent:
            raise AssertionError("an outbox entry with its id and routing key was decoded")

        monkeypatch.setattr(links, "decode", refuse)
        entries = engine.pending()
        assert len(entries) == 2
        assert {e.routing_key for e in entries} == {"legacy.contact.upsert"}
        engine.mark_published(entries)
        assert engine.pending() == []
    finally:
        adapter.close()


def test_every_column_added_after_the_first_release_is_nullable() -> None:
    """create() can add only nullable columns: an older table already has rows."""
    first = {c.name for c in first_release_link_table(sa.MetaData()).columns}
    added = [c for c in links.link_table.columns if c.name not in first]
    assert {c.name for c in added} == NEW_COLUMNS
    assert all(c.nullable for c in added)


def test_highest_counter_of_an_actor_over_every_link(tmp_path: Path) -> None:
    from router.clock import VectorClock

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'crm.db'}")
    with engine.begin() as conn:
        links.create(conn)
        assert links.highest_counter(conn, "legacy") == 0
        for i, clock in enumerate(({"legacy": 3}, {"legacy": 7, "sales": 9}, {"sales": 2})):
            links.save(
                conn,
                links.Link(
                    str(uuid.uuid4()), "contact", f"c{i}", VectorClock(clock), "h", {}, None, False
                ),
            )
        assert links.highest_counter(conn, "legacy") == 7
        assert links.highest_counter(conn, "legacy@2") == 0
        # The connection is still usable for any statement after the scan.
        assert links.count(conn) == 3
    engine.dispose()
