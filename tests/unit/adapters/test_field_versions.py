"""Field versions on the adapter side (DESIGN "Exact attribution under reordering"): per
field, the counter of the adapter's own edit that set the value its link holds; the pure
rules (adapters/rules.py, adapters/capture.py), and the SQL engine keeping them in
``crmsync_link`` (upgraded tables included) and publishing them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from adapters import links
from adapters.capture import Content, Publish, capture_row
from adapters.engine import SyncEngine
from adapters.links import Link
from adapters.rules import (
    FieldVersions,
    content_hash,
    versions_after_change,
    versions_after_delivery,
)
from router.clock import VectorClock
from router.events import ChangeEvent, decode, new_event_id
from tests.schemas import first_release_link_table
from tests.unit.adapters.test_links import Crm, old_pending_row

ACTOR = "legacy"
ADA = {"email": "ada@example.com", "first_name": "Ada", "phone": "+1"}


# -- the pure rules ----------------------------------------------------------------------


def test_a_new_record_is_all_this_edit() -> None:
    clock = VectorClock({ACTOR: 1})
    assert versions_after_change(None, True, sorted(ADA), ADA, clock, ACTOR) == FieldVersions(
        ACTOR, dict.fromkeys(ADA, 1)
    )


def test_a_change_sets_its_fields_and_keeps_the_others() -> None:
    known = FieldVersions(ACTOR, {"email": 1, "first_name": 2})
    clock = VectorClock({ACTOR: 5, "sales": 3})
    after = versions_after_change(known, False, ["phone"], ADA, clock, ACTOR)
    # phone was received before (no counter): now this edit, 5, set it
    assert after == FieldVersions(ACTOR, {"email": 1, "first_name": 2, "phone": 5})


def test_a_field_no_longer_carried_drops_its_counter() -> None:
    known = FieldVersions(ACTOR, {"email": 1, "mobile": 1})
    after = versions_after_change(known, False, [], ADA, VectorClock({ACTOR: 2}), ACTOR)
    assert after == FieldVersions(ACTOR, {"email": 1})


@pytest.mark.parametrize("known", [None, FieldVersions("legacy@2", {"email": 1})])
def test_unknown_or_another_epochs_versions_stay_unknown(known: FieldVersions | None) -> None:
    """An older version's link, or counters of another epoch of this adapter (read as
    this one's they would name the wrong edits): the event carries none."""
    clock = VectorClock({ACTOR: 3})
    assert versions_after_change(known, False, ["email"], ADA, clock, ACTOR) is None
    assert FieldVersions("legacy@2", {"email": 1}).for_event(ACTOR) is None


def test_a_delivered_value_is_the_hubs_and_a_kept_one_keeps_its_counter() -> None:
    known = FieldVersions(ACTOR, {"email": 4, "first_name": 2, "phone": 3})
    delivered = {**ADA, "first_name": "Grace"}
    after = versions_after_delivery(known, ADA, delivered, ACTOR)
    assert after == FieldVersions(ACTOR, {"email": 4, "phone": 3})


@pytest.mark.parametrize("known", [None, FieldVersions("legacy@2", {"email": 1})])
def test_a_delivery_makes_unknown_versions_known(known: FieldVersions | None) -> None:
    """A delivery is applied only after the link's clock: the router has seen every edit
    of ours, so every value the link holds is in its past."""
    assert versions_after_delivery(known, ADA, ADA, ACTOR) == FieldVersions(ACTOR, {})


def test_capture_publishes_the_links_versions_with_the_edit() -> None:
    known = FieldVersions(ACTOR, {"email": 1})  # first_name and phone were received
    link = Link(
        record_id=str(uuid.UUID(int=7)),
        entity="contact",
        source_record_id="42",
        clock=VectorClock({ACTOR: 1, "sales": 2}),
        content_hash=content_hash(ADA, False),
        fields=dict(ADA),
        version="v1",
        deleted=False,
        field_versions=known,
    )
    edited = {**ADA, "phone": "+2"}
    decision = capture_row(Content(edited, False, "v2"), link, actor=ACTOR, soft_deletes=True)
    assert isinstance(decision, Publish)
    assert decision.field_versions == FieldVersions(ACTOR, {"email": 1, "phone": 2})
    event = decision.event(
        event_id=new_event_id(),
        record_id=link.record_id,
        source=ACTOR,
        actor=ACTOR,
        entity="contact",
        source_record_id="42",
        occurred_at=datetime.now(UTC),
    )
    assert event.field_versions == {"email": 1, "phone": 2}
    assert event.changed == ["phone"]


# -- the SQL engine and crmsync_link -------------------------------------------------------


@pytest.fixture
def crm(tmp_path: Path) -> Any:
    made = Crm(tmp_path / "legacy.db")
    yield made
    made.db.dispose()


def _edit_first_name(crm: Crm, email: str, name: str) -> None:
    later = datetime.now(UTC) + timedelta(seconds=1)  # the token moves
    with crm.db.begin() as conn:
        conn.execute(
            crm.contacts.update()
            .where(crm.contacts.c.email_addr == email)
            .values(fname=name, updated_at=later)
        )


def _publish(engine: SyncEngine) -> list[ChangeEvent]:
    """Capture and confirm (what the runtime does); the events published."""
    engine.capture({})
    owed = engine.pending()
    engine.mark_published(owed)
    return [decode(entry.body) for entry in owed]


def _delivery(event: ChangeEvent, **fields: Any) -> ChangeEvent:
    """The hub's next version of ``event``'s record, setting ``fields``."""
    return ChangeEvent(
        event_id=new_event_id(),
        source="sales",
        actor="sales",
        entity="contact",
        record_id=event.record_id,
        source_record_id="S-1",
        op="upsert",
        clock=event.vclock.increment("sales").to_dict(),
        fields={**event.fields, **fields},
        changed=sorted(fields),
        occurred_at=datetime.now(UTC),
        field_versions={name: 1 for name in fields},  # sales's: no concern of ours
    )


def test_engine_keeps_versions_in_its_links_and_publishes_them(crm: Crm) -> None:
    adapter = crm.adapter()
    try:
        engine = SyncEngine(adapter, ACTOR, overlap=2.0)
        crm.insert("a@example.com")
        [first] = _publish(engine)
        assert first.field_versions == {"email": 1, "first_name": 1}

        assert engine.apply(_delivery(first, email="b@example.com")).action == "applied"
        with adapter.transaction() as tx:
            link = links.by_record(tx, first.record_id)
        assert link is not None and link.field_versions == FieldVersions(
            ACTOR, {"first_name": 1}
        )  # the delivered email is the hub's

        _edit_first_name(crm, "b@example.com", "Grace")
        [second] = _publish(engine)
        assert second.clock == {ACTOR: 2, "sales": 1}
        assert second.changed == ["first_name"]
        assert second.field_versions == {"first_name": 2}  # email: received, no counter
    finally:
        adapter.close()


def test_an_upgraded_link_table_sends_none_until_a_delivery_makes_them_known(crm: Crm) -> None:
    """A link written by a version without field_versions does not know which of its
    values are its own unseen edits: its events carry none (the router bounds) until a
    delivery after its clock says the router has seen them all."""
    old = first_release_link_table(sa.MetaData())
    old.create(crm.db)
    crm.insert("a@example.com")
    with crm.db.connect() as conn:
        sid = str(conn.execute(sa.select(crm.contacts.c.id)).scalar_one())
    known = ChangeEvent(
        event_id=new_event_id(),
        source=ACTOR,
        actor=ACTOR,
        entity="contact",
        record_id=str(uuid.uuid4()),
        source_record_id=sid,
        op="upsert",
        clock={ACTOR: 1},
        fields={"email": "a@example.com", "first_name": "Ada"},
        changed=["email", "first_name"],
        occurred_at=datetime.now(UTC),
    )
    row = old_pending_row(known, published=True)
    with crm.db.begin() as conn:
        conn.execute(old.insert().values(row))
    adapter = crm.adapter()  # upgrades crmsync_link: field_versions NULL on that row
    try:
        engine = SyncEngine(adapter, ACTOR, overlap=2.0)
        with adapter.transaction() as tx:
            link = links.by_record(tx, known.record_id)
            assert link is not None and link.field_versions is None
            # the row's token as this version reads it (old_pending_row has a placeholder)
            current = adapter.read_record(tx, "contact", sid)
            assert current is not None
            links.save(tx, link.evolve(version=current.version))
        _edit_first_name(crm, "a@example.com", "Grace")
        [edit] = _publish(engine)
        assert edit.clock == {ACTOR: 2} and edit.field_versions is None

        assert engine.apply(_delivery(edit, email="b@example.com")).action == "applied"
        _edit_first_name(crm, "b@example.com", "Lin")
        [after] = _publish(engine)
        assert after.field_versions == {"first_name": 3}
    finally:
        adapter.close()
