"""SyncEngine + SqlAdapter against the demo CRMs on real SQLite files (no broker).

Capture, the adapter outbox, applying deliveries, echo suppression, conditional
writes, soft/hard deletes and resurrection, invalid rows and the overlap window.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa

from adapters import links
from adapters.engine import SyncEngine
from adapters.links import OutboxEntry
from adapters.sql import SqlAdapter
from router.adapter_config import load_adapter
from router.clock import Order, VectorClock, compare, merge
from router.demo.crms import CRMS, DemoDb
from router.errors import PermanentWriteError
from router.events import ChangeEvent, decode, new_event_id

T = TypeVar("T")


@dataclass(frozen=True)
class Captured:
    """A capture's result with the outbox entries it added (the engine only counts them)."""

    positions: dict[str, Any]
    invalid: int
    pending: list[OutboxEntry]


@dataclass(frozen=True)
class Applied:
    """An apply's result with the outbox entries it added (the engine says only whether)."""

    action: str
    pending: list[OutboxEntry]


def newly_owed(engine: SyncEngine, action: Callable[[], T]) -> tuple[T, list[OutboxEntry]]:
    """Run ``action``; also return the outbox entries it added, in outbox order."""
    before = set(engine.pending())
    result = action()
    return result, [e for e in engine.pending() if e not in before]


@dataclass
class Crm:
    name: str
    db: DemoDb
    adapter: SqlAdapter
    engine: SyncEngine

    # -- direct access to the CRM's table, as a user (or a test) would ------------------
    @property
    def f(self) -> dict[str, str]:
        return self.db.crm.fields

    def row_by_email(self, email: str) -> dict[str, Any] | None:
        with self.db.engine.connect() as conn:
            r = (
                conn.execute(sa.select(self.db.table).where(self.db.c[self.f["email"]] == email))
                .mappings()
                .first()
            )
        return dict(r) if r else None

    def row_by_id(self, sid: Any) -> dict[str, Any] | None:
        with self.db.engine.connect() as conn:
            r = (
                conn.execute(sa.select(self.db.table).where(self.db.c[self.db.crm.id] == sid))
                .mappings()
                .first()
            )
        return dict(r) if r else None

    def all_rows(self) -> list[dict[str, Any]]:
        with self.db.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.select(self.db.table)).mappings()]

    def edit_columns(self, email: str, **columns: Any) -> None:
        """A user edit of raw columns (bumps updated_at like a CRM)."""
        columns[self.db.crm.updated_at] = datetime.now(UTC).replace(tzinfo=None)
        with self.db.engine.begin() as conn:
            conn.execute(
                self.db.table.update().where(self.db.c[self.f["email"]] == email).values(columns)
            )

    def set_notes(self, email: str, notes: str) -> None:
        """A user edit of a column crmsync does not map."""
        self.edit_columns(email, notes=notes)

    def set_email(self, email: str, new: str) -> None:
        self.edit_columns(email, **{self.f["email"]: new})

    def link(self, record_id: str) -> links.Link | None:
        with self.adapter.transaction() as tx:
            return links.by_record(tx, record_id)

    def link_by_source(self, sid: str) -> links.Link | None:
        with self.adapter.transaction() as tx:
            return links.by_source(tx, "contact", [sid]).get(sid)

    def capture(self, cursors: dict[str, Any]) -> Captured:
        result, added = newly_owed(self.engine, lambda: self.engine.capture(cursors))
        assert result.changes == len(added)
        return Captured(result.positions, result.invalid, added)

    def apply(self, event: ChangeEvent) -> Applied:
        result, added = newly_owed(self.engine, lambda: self.engine.apply(event))
        assert result.pending == bool(added)
        return Applied(result.action, added)

    def scan_hard_deletes(self) -> list[OutboxEntry]:
        found, added = newly_owed(self.engine, self.engine.scan_hard_deletes)
        assert found == len(added)
        return added

    def find_hard_deletes(self) -> list[OutboxEntry]:
        """What the runtime's next cycle records for rows a user hard-deleted: the journal
        drained by capture, or (journal off) the id comparison."""
        if self.adapter.journals_deletes("contact"):
            return self.capture({}).pending
        return self.scan_hard_deletes()

    def capture_events(self, cursors: dict[str, Any] | None = None) -> list[ChangeEvent]:
        return decode_all(self.capture(cursors or {}).pending)

    def capture_and_publish(self) -> list[ChangeEvent]:
        """Capture, then confirm everything pending (what the runtime does)."""
        result = self.capture({})
        self.engine.mark_published(result.pending)
        return decode_all(result.pending)


@pytest.fixture
def make_crm(tmp_path: Path) -> Iterator[Any]:
    made: list[Crm] = []

    def make(name: str, journal: bool = True) -> Crm:
        crm = CRMS[name]
        db = DemoDb(crm, tmp_path / f"{name}.db")
        toml = tmp_path / f"{name}.toml"
        toml.write_text(
            crm.adapter_toml(
                tmp_path / f"{name}.db", tmp_path / f"{name}.state.db", "amqp://127.0.0.1:1/"
            )
        )
        config = load_adapter(toml)
        if not journal:  # the fallback for databases where triggers are not allowed
            capture = config.capture.model_copy(update={"delete_journal": False})
            config = config.model_copy(update={"capture": capture})
        adapter = SqlAdapter(config, where=str(toml))
        engine = SyncEngine(adapter, name, overlap=2.0)
        made.append(Crm(name, db, adapter, engine))
        return made[-1]

    yield make
    for c in made:
        c.adapter.close()
        c.db.close()


@pytest.fixture
def legacy(make_crm: Any) -> Crm:
    crm: Crm = make_crm("legacy")
    return crm


@pytest.fixture
def sales(make_crm: Any) -> Crm:
    crm: Crm = make_crm("sales")
    return crm


@pytest.fixture
def mktg(make_crm: Any) -> Crm:
    crm: Crm = make_crm("mktg")
    return crm


@pytest.fixture
def mktg_scan(make_crm: Any) -> Crm:
    """mktg with ``capture.delete_journal = false``: hard deletes found by the id scan."""
    crm: Crm = make_crm("mktg", journal=False)
    return crm


@pytest.fixture(params=["journal", "scan"])
def mktg_hard(request: pytest.FixtureRequest, make_crm: Any) -> Crm:
    """mktg with either way of finding hard deletes."""
    crm: Crm = make_crm("mktg", journal=request.param == "journal")
    return crm


def delivery(
    record_id: str,
    clock: dict[str, int] | VectorClock,
    fields: dict[str, Any] | None = None,
    *,
    op: str = "upsert",
    source: str = "sales",
    changed: list[str] | None = None,
) -> ChangeEvent:
    """An event another adapter (or the hub) made, as the router delivers it."""
    fields = (
        fields
        if fields is not None
        else {
            "email": "ada@example.com",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "phone": "+44-1",
        }
    )
    return ChangeEvent(
        event_id=new_event_id(),
        source=source,
        actor=source,
        entity="contact",
        record_id=record_id,
        source_record_id="S-1",
        op=op,  # type: ignore[arg-type]
        clock=dict(clock),
        fields=fields,
        changed=changed if changed is not None else sorted(fields),
        occurred_at=datetime.now(UTC),
    )


def after(known: VectorClock, actor: str = "sales") -> VectorClock:
    return known.increment(actor)


def only(events: list[ChangeEvent]) -> ChangeEvent:
    assert len(events) == 1, events
    return events[0]


def decode_all(pending: list[OutboxEntry]) -> list[ChangeEvent]:
    """The entries' events; each entry's id and routing key are its event's."""
    events = [decode(entry.body) for entry in pending]
    for entry, event in zip(pending, events, strict=True):
        assert (entry.record_id, entry.event_id, entry.routing_key) == (
            event.record_id,
            event.event_id,
            event.routing_key,
        )
    return events


# -- capture --------------------------------------------------------------------------


def test_capture_inserted_rows_yields_pending_events(legacy: Crm) -> None:
    emails = legacy.db.insert_contacts(3)
    result = legacy.capture({})
    assert result.invalid == 0
    assert "contact" in result.positions
    events = decode_all(result.pending)
    assert sorted(str(e.fields["email"]) for e in events) == sorted(emails)
    rows = {r["email_addr"]: r for r in legacy.all_rows()}
    for entry, e in zip(result.pending, events, strict=True):
        assert e.record_id == entry.record_id
        uuid.UUID(e.record_id)
        assert e.op == "upsert"
        assert e.source == "legacy"
        assert e.actor == "legacy"
        assert e.entity == "contact"
        assert e.clock == {"legacy": 1}
        row = rows[e.fields["email"]]
        assert e.source_record_id == str(row["id"])
        # canonical names, not the CRM's columns
        assert e.fields == {
            "email": row["email_addr"],
            "first_name": row["fname"],
            "last_name": row["lname"],
            "phone": row["phone"],
        }
        assert sorted(e.changed) == ["email", "first_name", "last_name", "phone"]
        assert e.occurred_at.tzinfo is not None
        assert e.routing_key == "legacy.contact.upsert"
    # every record got its own global id
    assert len({e.record_id for e in events}) == 3


def test_capture_sales_text_ids_and_own_column_names(sales: Crm) -> None:
    sales.db.insert_contacts(2)
    events = sales.capture_events()
    assert sorted(e.source_record_id for e in events) == ["S-000000", "S-000001"]
    for e in events:
        assert set(e.fields) == {"email", "first_name", "last_name", "phone"}
        assert e.clock == {"sales": 1}


def test_capture_mktg_maps_no_phone(mktg: Crm) -> None:
    mktg.db.insert_contacts(1)
    e = only(mktg.capture_events())
    assert set(e.fields) == {"email", "first_name", "last_name"}


def test_mark_published_clears_pending_and_capture_dedups(legacy: Crm) -> None:
    legacy.db.insert_contacts(3)
    first = legacy.capture({})
    assert len(first.pending) == 3
    assert set(legacy.engine.pending()) == set(first.pending)
    for entry in first.pending:
        link = legacy.link(entry.record_id)
        assert link is not None and not link.published and link.pending_event is not None

    legacy.engine.mark_published(first.pending)
    assert legacy.engine.pending() == []
    for entry in first.pending:
        link = legacy.link(entry.record_id)
        assert link is not None and link.published and link.pending_event is None

    # same cursor, or from the beginning: the content hashes match, nothing new
    assert legacy.capture(first.positions).pending == []
    assert legacy.capture({}).pending == []
    assert legacy.engine.pending() == []


def test_pending_survives_until_confirmed(legacy: Crm) -> None:
    """An unconfirmed local change stays in the outbox (published again after a restart)."""
    legacy.db.insert_contacts(2)
    first = legacy.capture({})
    assert legacy.capture({}).pending == []  # not captured twice...
    assert set(legacy.engine.pending()) == set(first.pending)  # ...but still owed
    legacy.engine.mark_published(first.pending[:1])
    assert legacy.engine.pending() == first.pending[1:]


def test_mark_published_keeps_a_newer_pending_change(legacy: Crm) -> None:
    [email] = legacy.db.insert_contacts(1)
    first = legacy.capture({})
    legacy.db.update_by_email(email, first_name="Zed")
    second = legacy.capture({})
    assert len(second.pending) == 1
    legacy.engine.mark_published(first.pending)  # the old confirm arrives late
    assert legacy.engine.pending() == second.pending


def test_update_yields_counter_two_and_changed_field_only(legacy: Crm) -> None:
    [email] = legacy.db.insert_contacts(1)
    [created] = legacy.capture_and_publish()
    legacy.db.update_by_email(email, first_name="Zed")
    e = only(legacy.capture_events())
    assert e.record_id == created.record_id
    assert e.source_record_id == created.source_record_id
    assert e.op == "upsert"
    assert e.clock == {"legacy": 2}
    assert e.changed == ["first_name"]
    assert e.fields == {**created.fields, "first_name": "Zed"}


def test_update_of_unmapped_column_yields_nothing_but_updates_link_version(legacy: Crm) -> None:
    [email] = legacy.db.insert_contacts(1)
    [created] = legacy.capture_and_publish()
    before = legacy.link(created.record_id)
    assert before is not None
    legacy.set_notes(email, "called on Monday")
    assert legacy.capture({}).pending == []
    now = legacy.link(created.record_id)
    assert now is not None
    assert now.version != before.version
    assert now.version is not None
    row = legacy.row_by_email(email)
    assert row is not None
    assert now.version == str(row["updated_at"])
    assert now.clock == before.clock
    assert now.content_hash == before.content_hash
    assert legacy.engine.pending() == []


# -- apply ----------------------------------------------------------------------------


def test_apply_delivery_writes_row_and_echo_is_not_captured(legacy: Crm) -> None:
    [email] = legacy.db.insert_contacts(1)
    [created] = legacy.capture_and_publish()
    clock = merge(created.vclock, VectorClock({"sales": 1}))
    event = delivery(
        created.record_id,
        clock,
        {**created.fields, "first_name": "Augusta", "phone": "+44-2"},
        changed=["first_name", "phone"],
    )
    result = legacy.apply(event)
    assert result.action == "applied"
    assert result.pending == []
    row = legacy.row_by_email(email)
    assert row is not None
    assert row["fname"] == "Augusta"
    assert row["phone"] == "+44-2"
    assert row["lname"] == created.fields["last_name"]
    assert str(row["id"]) == created.source_record_id
    assert row["is_deleted"] is False
    link = legacy.link(created.record_id)
    assert link is not None
    assert link.clock == clock
    assert link.published
    assert link.version == str(row["updated_at"])
    # the echo: capture sees our own write and publishes nothing
    assert legacy.capture({}).pending == []
    assert legacy.engine.pending() == []


def test_apply_duplicate_and_stale_deliveries_are_skipped(legacy: Crm) -> None:
    [email] = legacy.db.insert_contacts(1)
    [created] = legacy.capture_and_publish()
    clock = merge(created.vclock, VectorClock({"sales": 2}))
    newer = delivery(created.record_id, clock, {**created.fields, "first_name": "New"})
    assert legacy.apply(newer).action == "applied"

    duplicate = legacy.apply(newer)
    assert duplicate.action == "skip-stale"
    assert duplicate.pending == []
    older = delivery(
        created.record_id,
        merge(created.vclock, VectorClock({"sales": 1})),
        {**created.fields, "first_name": "Old"},
    )
    assert legacy.apply(older).action == "skip-stale"
    row = legacy.row_by_email(email)
    assert row is not None and row["fname"] == "New"
    assert legacy.capture({}).pending == []


def test_apply_concurrent_delivery_is_skipped(legacy: Crm) -> None:
    [email] = legacy.db.insert_contacts(1)
    [created] = legacy.capture_and_publish()
    legacy.db.update_by_email(email, first_name="Mine")
    [mine] = legacy.capture_and_publish()
    assert mine.clock == {"legacy": 2}
    # made by sales on top of our first version: concurrent with our second
    theirs = delivery(
        created.record_id, {"legacy": 1, "sales": 1}, {**created.fields, "first_name": "Theirs"}
    )
    result = legacy.apply(theirs)
    assert result.action == "skip-concurrent"
    assert result.pending == []
    row = legacy.row_by_email(email)
    assert row is not None and row["fname"] == "Mine"
    link = legacy.link(created.record_id)
    assert link is not None and link.clock == VectorClock({"legacy": 2})


def test_apply_many_in_one_transaction(legacy: Crm) -> None:
    legacy.db.insert_contacts(2)
    created = legacy.capture_and_publish()
    events = [
        delivery(e.record_id, after(e.vclock), {**e.fields, "last_name": "Batch"}) for e in created
    ]
    results = legacy.engine.apply_many([*events, events[0]])
    assert [r.action for r in results] == ["applied", "applied", "skip-stale"]
    assert {r["lname"] for r in legacy.all_rows()} == {"Batch"}
    assert legacy.capture({}).pending == []


def test_apply_unmapped_entity(legacy: Crm) -> None:
    event = delivery(str(uuid.uuid4()), {"sales": 1}).model_copy(update={"entity": "deal"})
    assert legacy.apply(event).action == "not-mapped"


def test_apply_unknown_record_inserts_row_with_autoincrement_id(legacy: Crm) -> None:
    legacy.db.insert_contacts(2)
    legacy.capture_and_publish()
    record_id = str(uuid.uuid4())
    result = legacy.apply(delivery(record_id, {"sales": 1}))
    assert result.action == "applied"
    row = legacy.row_by_email("ada@example.com")
    assert row is not None
    assert row["id"] == 3  # the database chose the id
    assert (row["fname"], row["lname"], row["phone"]) == ("Ada", "Lovelace", "+44-1")
    assert row["is_deleted"] is False
    link = legacy.link(record_id)
    assert link is not None
    assert link.source_record_id == "3"
    assert link.clock == VectorClock({"sales": 1})
    assert legacy.capture({}).pending == []


def test_apply_unknown_record_text_ids_use_record_id(sales: Crm) -> None:
    record_id = str(uuid.uuid4())
    result = sales.apply(delivery(record_id, {"legacy": 1}, source="legacy"))
    assert result.action == "applied"
    row = sales.row_by_id(record_id)
    assert row is not None
    assert (row["mail"], row["first"], row["last"], row["mobile"]) == (
        "ada@example.com",
        "Ada",
        "Lovelace",
        "+44-1",
    )
    assert row["deleted_flag"] is False
    link = sales.link(record_id)
    assert link is not None and link.source_record_id == record_id
    assert sales.capture({}).pending == []
    # a later version updates that same row
    assert (
        sales.apply(
            delivery(
                record_id,
                {"legacy": 2},
                {"email": "ada@example.com", "first_name": "Augusta"},
                source="legacy",
            )
        ).action
        == "applied"
    )
    assert len(sales.all_rows()) == 1
    row = sales.row_by_id(record_id)
    assert row is not None and row["first"] == "Augusta"
    assert row["last"] == "Lovelace"  # a field the delivery does not carry is kept


def test_apply_unknown_record_writes_only_mapped_fields(mktg: Crm) -> None:
    record_id = str(uuid.uuid4())
    assert mktg.apply(delivery(record_id, {"sales": 1})).action == "applied"
    [row] = mktg.all_rows()
    assert (row["email"], row["given_name"], row["family_name"]) == (
        "ada@example.com",
        "Ada",
        "Lovelace",
    )
    link = mktg.link(record_id)
    assert link is not None and "phone" not in link.fields
    assert mktg.capture({}).pending == []


def test_applied_delivery_then_local_edit_builds_on_delivered_clock(legacy: Crm) -> None:
    record_id = str(uuid.uuid4())
    legacy.apply(delivery(record_id, {"sales": 3, "hub": 1}))
    legacy.db.update_by_email("ada@example.com", last_name="King")
    e = only(legacy.capture_events())
    assert e.record_id == record_id
    assert e.clock == {"sales": 3, "hub": 1, "legacy": 1}
    assert e.changed == ["last_name"]


# -- conditional writes ---------------------------------------------------------------


def test_user_edit_not_yet_captured_wins_over_delivery(legacy: Crm) -> None:
    [email] = legacy.db.insert_contacts(1)
    [created] = legacy.capture_and_publish()
    legacy.db.update_by_email(email, first_name="UserEdit")  # capture has not seen this
    clock = merge(created.vclock, VectorClock({"sales": 1}))
    event = delivery(created.record_id, clock, {**created.fields, "first_name": "Delivered"})

    result = legacy.apply(event)

    assert result.action == "local-change-first"
    row = legacy.row_by_email(email)
    assert row is not None and row["fname"] == "UserEdit"
    assert len(result.pending) == 1
    [local] = decode_all(result.pending)
    assert decode_all(legacy.engine.pending()) == [local]
    assert local.record_id == created.record_id
    assert local.op == "upsert"
    assert local.fields["first_name"] == "UserEdit"
    assert local.changed == ["first_name"]
    assert local.clock == {"legacy": 2}
    assert compare(local.vclock, event.vclock) is Order.CONCURRENT
    # the edit is not published a second time by capture
    assert legacy.capture({}).pending == []
    # and the same delivery, redelivered, is now concurrent with our change: skipped
    assert legacy.apply(event).action == "skip-concurrent"
    row = legacy.row_by_email(email)
    assert row is not None and row["fname"] == "UserEdit"


def test_unmapped_column_edit_does_not_block_delivery(legacy: Crm) -> None:
    [email] = legacy.db.insert_contacts(1)
    [created] = legacy.capture_and_publish()
    legacy.set_notes(email, "VIP")  # capture has not seen this either
    clock = merge(created.vclock, VectorClock({"sales": 1}))
    event = delivery(created.record_id, clock, {**created.fields, "first_name": "Delivered"})

    result = legacy.apply(event)

    assert result.action == "applied"
    assert result.pending == []
    row = legacy.row_by_email(email)
    assert row is not None
    assert row["fname"] == "Delivered"
    assert row["notes"] == "VIP"
    assert legacy.engine.pending() == []
    assert legacy.capture({}).pending == []


def test_user_delete_not_yet_captured_wins_over_delivery(mktg: Crm) -> None:
    [email] = mktg.db.insert_contacts(1)
    [created] = mktg.capture_and_publish()
    mktg.db.delete_by_email(email)  # hard delete capture has not seen
    event = delivery(created.record_id, after(created.vclock), {**created.fields, "last_name": "X"})
    result = mktg.apply(event)
    assert result.action == "local-change-first"
    [local] = decode_all(result.pending)
    assert local.op == "delete"
    assert local.clock == {"mktg": 2}
    assert compare(local.vclock, event.vclock) is Order.CONCURRENT
    assert mktg.all_rows() == []


# -- deletes --------------------------------------------------------------------------


def test_soft_delete_on_legacy_is_captured_as_delete(legacy: Crm) -> None:
    [email] = legacy.db.insert_contacts(1)
    [created] = legacy.capture_and_publish()
    legacy.db.delete_by_email(email)
    e = only(legacy.capture_events())
    assert e.op == "delete"
    assert e.record_id == created.record_id
    assert e.clock == {"legacy": 2}
    assert e.routing_key == "legacy.contact.delete"
    link = legacy.link(created.record_id)
    assert link is not None and link.deleted


def test_row_deleted_before_it_was_ever_shared_is_not_published(legacy: Crm) -> None:
    [email] = legacy.db.insert_contacts(1)
    legacy.db.delete_by_email(email)
    assert legacy.capture({}).pending == []


def test_delete_delivery_on_legacy_sets_flag(legacy: Crm) -> None:
    [email] = legacy.db.insert_contacts(1)
    [created] = legacy.capture_and_publish()
    event = delivery(created.record_id, after(created.vclock), created.fields, op="delete")
    assert legacy.apply(event).action == "applied"
    row = legacy.row_by_email(email)
    assert row is not None
    assert row["is_deleted"] is True
    link = legacy.link(created.record_id)
    assert link is not None and link.deleted and link.clock == event.vclock
    assert legacy.capture({}).pending == []  # the echo of the delete
    assert legacy.apply(event).action == "skip-stale"


def test_delete_delivery_on_mktg_deletes_row(mktg: Crm) -> None:
    [email] = mktg.db.insert_contacts(1)
    [created] = mktg.capture_and_publish()
    event = delivery(created.record_id, after(created.vclock), created.fields, op="delete")
    assert mktg.apply(event).action == "applied"
    assert mktg.row_by_email(email) is None
    link = mktg.link(created.record_id)
    assert link is not None and link.deleted
    assert mktg.capture({}).pending == []
    assert mktg.scan_hard_deletes() == []  # we deleted it: not a local change


def test_delete_delivery_for_unknown_record_keeps_a_tombstone(legacy: Crm) -> None:
    record_id = str(uuid.uuid4())
    event = delivery(record_id, {"sales": 2}, op="delete")
    assert legacy.apply(event).action == "applied"
    assert legacy.all_rows() == []
    link = legacy.link(record_id)
    assert link is not None and link.deleted and link.clock == VectorClock({"sales": 2})
    # an older upsert of that record does not create it
    stale = delivery(record_id, {"sales": 1})
    assert legacy.apply(stale).action == "skip-stale"
    assert legacy.all_rows() == []


def test_scan_hard_deletes_finds_user_delete(mktg_scan: Crm) -> None:
    mktg = mktg_scan
    emails = mktg.db.insert_contacts(2)
    created = {e.fields["email"]: e for e in mktg.capture_and_publish()}
    assert mktg.scan_hard_deletes() == []
    mktg.db.delete_by_email(emails[0])
    assert mktg.capture({}).pending == []  # a vanished row is invisible to polling
    pending = mktg.scan_hard_deletes()
    e = only(decode_all(pending))
    gone = created[emails[0]]
    assert e.op == "delete"
    assert e.record_id == gone.record_id
    assert e.source_record_id == gone.source_record_id
    assert e.clock == {"mktg": 2}
    assert e.fields == gone.fields
    assert mktg.engine.pending() == pending
    mktg.engine.mark_published(pending)
    assert mktg.scan_hard_deletes() == []  # reported once


def test_legacy_has_no_hard_delete_scan(legacy: Crm) -> None:
    legacy.db.insert_contacts(1)
    legacy.capture_and_publish()
    with legacy.adapter.transaction() as tx:
        assert legacy.adapter.list_ids(tx, "contact") is None
    assert legacy.scan_hard_deletes() == []


def _hard_deleted_in_mktg(mktg: Crm) -> tuple[ChangeEvent, ChangeEvent, ChangeEvent]:
    """A record created in mktg, then edited in sales (applied here), then hard-deleted by
    a mktg user: (created, the sales edit, the tombstone found by the journal or scan)."""
    emails = mktg.db.insert_contacts(2)
    created = {e.fields["email"]: e for e in mktg.capture_and_publish()}[emails[0]]
    edit = delivery(
        created.record_id, after(created.vclock), {**created.fields, "last_name": "Edited"}
    )
    assert mktg.apply(edit).action == "applied"
    mktg.db.delete_by_email(emails[0])
    pending = mktg.find_hard_deletes()
    mktg.engine.mark_published(pending)
    tombstone = only(decode_all(pending))
    assert tombstone.op == "delete"
    assert tombstone.clock == {"mktg": 2, "sales": 1}
    return created, edit, tombstone


def test_upsert_after_tombstone_reinserts_row_in_mktg(mktg_hard: Crm) -> None:
    mktg = mktg_hard
    created, _, tombstone = _hard_deleted_in_mktg(mktg)
    email = str(created.fields["email"])
    assert mktg.row_by_email(email) is None
    clock = merge(tombstone.vclock, VectorClock({"sales": 2}))
    event = delivery(created.record_id, clock, {**created.fields, "first_name": "Back"})
    assert mktg.apply(event).action == "applied"
    row = mktg.row_by_email(email)
    assert row is not None
    assert row["given_name"] == "Back"
    link = mktg.link(created.record_id)
    assert link is not None
    assert not link.deleted
    assert link.source_record_id == str(row["lead_id"])
    assert link.clock == clock
    assert mktg.capture({}).pending == []
    assert mktg.scan_hard_deletes() == []


def test_stale_upsert_does_not_resurrect_in_mktg(mktg_hard: Crm) -> None:
    mktg = mktg_hard
    created, edit, tombstone = _hard_deleted_in_mktg(mktg)
    email = str(created.fields["email"])
    # the sales edit the delete was made on top of, redelivered (a replay)
    assert compare(edit.vclock, tombstone.vclock) is Order.BEFORE
    assert mktg.apply(edit).action == "skip-stale"
    # an older version too
    older = delivery(created.record_id, created.vclock, created.fields, source="mktg")
    assert mktg.apply(older).action == "skip-stale"
    assert mktg.row_by_email(email) is None
    link = mktg.link(created.record_id)
    assert link is not None and link.deleted


def test_upsert_after_tombstone_clears_flag_in_legacy(legacy: Crm) -> None:
    [email] = legacy.db.insert_contacts(1)
    [created] = legacy.capture_and_publish()
    edit = delivery(
        created.record_id, after(created.vclock), {**created.fields, "last_name": "Edited"}
    )
    assert legacy.apply(edit).action == "applied"
    legacy.db.delete_by_email(email)
    [tombstone] = legacy.capture_and_publish()
    assert tombstone.op == "delete"
    assert tombstone.clock == {"legacy": 2, "sales": 1}

    assert legacy.apply(edit).action == "skip-stale"  # replayed: no resurrection
    row = legacy.row_by_email(email)
    assert row is not None and row["is_deleted"] is True

    clock = merge(tombstone.vclock, VectorClock({"sales": 2}))
    event = delivery(created.record_id, clock, {**created.fields, "first_name": "Back"})
    assert legacy.apply(event).action == "applied"
    row = legacy.row_by_email(email)
    assert row is not None
    assert row["is_deleted"] is False
    assert row["fname"] == "Back"
    assert len(legacy.all_rows()) == 1  # the same row came back, no new one
    link = legacy.link(created.record_id)
    assert link is not None and not link.deleted
    assert legacy.capture({}).pending == []


def test_new_row_in_mktg_after_hard_delete_is_a_new_record(mktg_hard: Crm) -> None:
    mktg = mktg_hard
    """A customer created after another was hard-deleted is a new record, not the deleted
    one coming back (the database may hand the new row the freed id)."""
    emails = mktg.db.insert_contacts(2)
    created = {e.fields["email"]: e for e in mktg.capture_and_publish()}
    mktg.db.delete_by_email(emails[1])  # the newest row: its id is the highest
    mktg.engine.mark_published(mktg.find_hard_deletes())
    mktg.db.insert_contacts(1, start=50)
    new_row = mktg.row_by_email("user50@example.com")
    assert new_row is not None
    e = only(mktg.capture_events())
    assert e.source_record_id == str(new_row["lead_id"])
    assert e.op == "upsert"
    assert e.fields["email"] == "user50@example.com"
    assert e.record_id not in {c.record_id for c in created.values()}
    assert e.clock == {"mktg": 1}


# -- invalid rows ---------------------------------------------------------------------


def test_invalid_rows_are_counted_not_published(legacy: Crm) -> None:
    emails = legacy.db.insert_contacts(3)
    legacy.set_email(emails[1], "not-an-email")
    result = legacy.capture({})
    assert result.invalid == 1
    assert legacy.engine.invalid_rows == 1
    events = decode_all(result.pending)
    assert sorted(str(e.fields["email"]) for e in events) == sorted([emails[0], emails[2]])
    assert set(legacy.engine.pending()) == set(result.pending)


def test_row_becoming_invalid_is_not_published(legacy: Crm) -> None:
    [email] = legacy.db.insert_contacts(1)
    [created] = legacy.capture_and_publish()
    legacy.set_email(email, "broken")
    result = legacy.capture({})
    assert result.pending == []
    assert result.invalid == 1
    link = legacy.link(created.record_id)
    assert link is not None and link.fields["email"] == email  # last good version kept
    # fixed again: published as the next version
    legacy.set_email("broken", "fixed@example.com")
    e = only(legacy.capture_events())
    assert e.fields["email"] == "fixed@example.com"
    assert e.clock == {"legacy": 2}


def test_delivery_with_invalid_email_is_a_permanent_write_error(legacy: Crm) -> None:
    """The runtime dead-letters PermanentWriteError; any other exception escapes its sink
    loop. A delivery the canonical model refuses must fail as a permanent write error
    (validation errors are permanent, DESIGN "Failed writes") and leave nothing behind."""
    record_id = str(uuid.uuid4())
    event = delivery(record_id, {"sales": 1}, {"email": "not-an-email", "first_name": "Bad"})
    with pytest.raises(PermanentWriteError):
        legacy.apply(event)
    assert legacy.all_rows() == []
    assert legacy.link(record_id) is None


# -- overlap window -------------------------------------------------------------------


def _insert_at(crm: Crm, email: str, when: datetime) -> None:
    with crm.db.engine.begin() as conn:
        conn.execute(
            crm.db.table.insert().values(
                {
                    "email_addr": email,
                    "fname": "Late",
                    "lname": "Commit",
                    "phone": None,
                    "updated_at": when,
                    "is_deleted": False,
                }
            )
        )


def test_overlap_window_captures_late_commit(legacy: Crm) -> None:
    legacy.db.insert_contacts(2)
    first = legacy.capture({})
    legacy.engine.mark_published(first.pending)
    cursor = first.positions["contact"]
    assert isinstance(cursor, datetime)
    # committed after the poll, but stamped before the cursor (a long transaction)
    _insert_at(legacy, "late@example.com", cursor - timedelta(seconds=1))
    second = legacy.capture(first.positions)
    e = only(decode_all(second.pending))
    assert e.fields["email"] == "late@example.com"
    assert e.clock == {"legacy": 1}
    # the cursor never moves backwards because of it
    assert second.positions["contact"] >= cursor
    legacy.engine.mark_published(second.pending)
    assert legacy.capture(second.positions).pending == []


def test_overlap_window_is_bounded(legacy: Crm) -> None:
    legacy.db.insert_contacts(1)
    first = legacy.capture({})
    cursor = first.positions["contact"]
    _insert_at(legacy, "very-late@example.com", cursor - timedelta(seconds=5))
    assert legacy.capture(first.positions).pending == []
    # from the beginning it is found
    e = only(legacy.capture_events({}))
    assert e.fields["email"] == "very-late@example.com"


def test_capture_pages_through_many_rows(make_crm: Any) -> None:
    crm: Crm = make_crm("legacy")
    crm.engine.page_size = 7
    crm.db.insert_contacts(30)
    result = crm.capture({})
    events = decode_all(result.pending)
    assert len(events) == 30
    assert len({e.source_record_id for e in events}) == 30
    crm.engine.mark_published(result.pending)
    assert crm.capture(result.positions).pending == []
    assert crm.capture({}).pending == []
