"""Hard deletes (adapters/deletes.py, adapters/journal.py): the pure rules, and the
journal on the demo CRMs' SQLite files (no broker)."""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from adapters import journal
from adapters.capture import Publish, journaled_delete
from adapters.deletes import missing, next_start
from adapters.engine import SyncEngine
from adapters.links import Link
from adapters.polling import CapturePass
from adapters.rules import content_hash
from adapters.sql import SqlAdapter
from router.adapter_config import AdapterConfig
from router.clock import VectorClock
from router.errors import ConfigError
from router.events import Scalar
from tests.unit.adapters import test_sql_engine_sqlite as engine_tests
from tests.unit.adapters.test_sql_engine_sqlite import Crm, after, decode_all, delivery, only

# the demo CRMs' fixtures
make_crm, legacy, mktg = engine_tests.make_crm, engine_tests.legacy, engine_tests.mktg

ADA: dict[str, Scalar] = {"email": "ada@example.com", "first_name": "Ada"}


def link_for(deleted: bool = False) -> Link:
    return Link(
        record_id=str(uuid.UUID(int=3)),
        entity="contact",
        source_record_id="1",
        clock=VectorClock({"mktg": 1, "sales": 2}),
        content_hash=content_hash(ADA, deleted),
        fields=dict(ADA),
        version="v1",
        deleted=deleted,
    )


# -- pure -----------------------------------------------------------------------------


def test_a_journaled_id_of_a_live_link_is_its_delete() -> None:
    change = journaled_delete(link_for(), actor="mktg")
    assert isinstance(change, Publish)
    assert (change.op, change.record_id) == ("delete", str(uuid.UUID(int=3)))
    assert change.clock == VectorClock({"mktg": 2, "sales": 2})
    assert dict(change.content.fields) == ADA  # the last known fields, as a tombstone


def test_a_journaled_id_of_a_tombstone_or_of_no_link_is_nothing() -> None:
    assert journaled_delete(link_for(deleted=True), actor="mktg") is None
    assert journaled_delete(None, actor="mktg") is None


def test_missing_keeps_the_chunks_order() -> None:
    assert missing(["1", "10", "2", "3"], {"10", "3"}) == ["1", "2"]


@given(st.lists(st.integers(0, 10**6), unique=True), st.integers(1, 50))
def test_the_scan_covers_every_link_within_ceil_links_over_chunk_steps(
    ids: list[int], size: int
) -> None:
    """Keyset steps over the sorted ids, as links.live_chunk reads them."""
    ordered = sorted(str(i) for i in ids)
    seen: list[str] = []
    start: str | None = None
    for _ in range(max(1, math.ceil(len(ordered) / size))):
        chunk = [sid for sid in ordered if start is None or sid > start][:size]
        assert len(chunk) <= size  # bounded per step
        seen += chunk
        start = next_start(chunk, size)
    assert seen == ordered


def test_trigger_names_are_short_plain_and_distinct() -> None:
    a = journal.trigger_name("contact", "Customer Data", "Cust ID")
    b = journal.trigger_name("contact", "Customer Data", "numéro")
    assert a == journal.trigger_name("contact", "Customer Data", "Cust ID")
    assert a != b and len(a) < 64 and a.replace("_", "").isalnum() and a.isascii()


# -- the journal on SQLite ------------------------------------------------------------


def journal_rows(crm: Crm) -> int:
    with crm.adapter.transaction() as tx:
        return journal.count(tx)


def test_our_own_hard_delete_is_drained_without_an_event(mktg: Crm) -> None:
    [email] = mktg.db.insert_contacts(1)
    [created] = mktg.capture_and_publish()
    event = delivery(created.record_id, after(created.vclock), created.fields, op="delete")
    assert mktg.apply(event).action == "applied"
    assert journal_rows(mktg) == 1  # the trigger fires for the adapter's deletes too
    assert mktg.capture({}).pending == []
    assert journal_rows(mktg) == 0
    link = mktg.link(created.record_id)
    assert link is not None and link.deleted and link.source_record_id is None
    assert mktg.row_by_email(email) is None


def test_more_deletes_than_a_page_are_all_drained_before_rows_are_read(make_crm: Any) -> None:
    crm: Crm = make_crm("mktg")
    crm.engine = SyncEngine(crm.adapter, "mktg", overlap=2.0, page_size=2)
    emails = crm.db.insert_contacts(7)
    created = {e.fields["email"]: e for e in crm.capture_and_publish()}
    for email in emails[:5]:
        crm.db.delete_by_email(email)
    crm.db.insert_contacts(1, start=70)  # may reuse a freed id: a new record all the same
    events = decode_all(crm.capture({}).pending)
    deletes = {e.record_id for e in events if e.op == "delete"}
    assert deletes == {created[email].record_id for email in emails[:5]}
    [new] = [e for e in events if e.op == "upsert"]
    assert new.fields["email"] == "user70@example.com" and new.clock == {"mktg": 1}
    assert journal_rows(crm) == 0


def test_a_row_purged_from_a_soft_delete_table_is_a_delete(legacy: Crm) -> None:
    """A table with a ``deleted`` flag whose row a DBA removes outright."""
    [email] = legacy.db.insert_contacts(1)
    [created] = legacy.capture_and_publish()
    with legacy.db.engine.begin() as conn:
        conn.execute(legacy.db.table.delete().where(legacy.db.c[legacy.f["email"]] == email))
    gone = only(legacy.capture_events())
    assert (gone.op, gone.record_id) == ("delete", created.record_id)


def test_the_journal_is_a_table_of_the_crms_database(mktg: Crm) -> None:
    with mktg.db.engine.connect() as conn:
        triggers = conn.execute(
            sa.text("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        ).scalars()
        assert [t for t in triggers if t.startswith("crmsync_del_")]
        assert sa.inspect(conn).has_table("crmsync_deleted")


def test_deletes_the_journal_never_saw_are_found_by_one_scan_round_after_start(
    make_crm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Upgrading to the journal: a row deleted before the trigger existed."""
    before: Crm = make_crm("mktg", journal=False)
    emails = before.db.insert_contacts(3)
    created = {e.fields["email"]: e for e in before.capture_and_publish()}
    before.db.delete_by_email(emails[0])  # no trigger yet: never journaled
    before.adapter.close()
    after_upgrade: Crm = make_crm("mktg")
    assert after_upgrade.capture({}).pending == []  # nothing journaled, rows unchanged
    gone = only(decode_all(after_upgrade.scan_hard_deletes()))
    assert (gone.op, gone.record_id) == ("delete", created[emails[0]].record_id)
    # the round is done (3 links, one chunk): later scans leave it to the journal
    monkeypatch.setattr(after_upgrade.adapter, "existing_ids", _no_more_scans)
    assert after_upgrade.scan_hard_deletes() == []


def _no_more_scans(*_: Any) -> set[str]:
    raise AssertionError("the id comparison ran again after its round")


def test_a_table_that_cannot_get_a_trigger_says_how_to_go_on(tmp_path: Path) -> None:
    """A mapped view (SQLite refuses AFTER triggers on views): one clear line naming the
    setting; with the journal off the same config starts."""
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE base (id INTEGER PRIMARY KEY, mail TEXT, ts TEXT)"))
        conn.execute(sa.text("CREATE VIEW people AS SELECT id, mail, ts FROM base"))
    engine.dispose()
    raw = {
        "name": "viewcrm",
        "database": {"url": url},
        "entities": {
            "contact": {"table": "people", "updated_at": "ts", "fields": {"email": "mail"}}
        },
    }
    with pytest.raises(ConfigError, match=r"capture\.delete_journal = false"):
        SqlAdapter(AdapterConfig.model_validate(raw))
    SqlAdapter(AdapterConfig.model_validate({**raw, "capture": {"delete_journal": False}})).close()


async def test_a_capture_pass_drains_a_journal_longer_than_a_page(make_crm: Any) -> None:
    """The runtime's pass (one page per trip to the worker) goes on while deletes wait,
    publishing each page's before the next."""
    crm: Crm = make_crm("mktg")
    crm.engine = SyncEngine(crm.adapter, "mktg", overlap=2.0, page_size=2)
    emails = crm.db.insert_contacts(6)
    created = {e.fields["email"]: e for e in crm.capture_and_publish()}
    for email in emails[:5]:
        crm.db.delete_by_email(email)
    published: list[str] = []

    async def on_worker(fn: Any, *args: Any) -> Any:
        return fn(*args)

    async def publish() -> None:
        owed = crm.engine.pending()
        published.extend(e.record_id for e in decode_all(owed) if e.op == "delete")
        crm.engine.mark_published(owed)

    async def save(_entity: str, _position: Any) -> None:
        return None

    result = await CapturePass(crm.engine, on_worker, publish, save).run({})
    assert sorted(published) == sorted(created[email].record_id for email in emails[:5])
    assert result.changes == 5 and result.pages >= 3
    assert journal_rows(crm) == 0
