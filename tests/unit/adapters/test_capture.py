"""The capture rule and the missed-write rule (adapters/capture.py), pure."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from hypothesis import assume, given
from hypothesis import strategies as st

from adapters.capture import (
    Content,
    IdReused,
    NewVersion,
    Publish,
    Skip,
    capture_row,
    row_gone,
    write_missed,
)
from adapters.links import Link
from adapters.rules import FieldVersions, changed_fields, content_hash, local_clock
from router.clock import Order, VectorClock, compare
from router.events import Scalar, decode, encode, new_event_id

ACTOR = "legacy"
ADA: dict[str, Scalar] = {"email": "ada@example.com", "first_name": "Ada", "phone": None}
KNOWN = VectorClock({"legacy": 1, "sales": 2})


def link_for(
    fields: dict[str, Scalar] = ADA,
    *,
    deleted: bool = False,
    version: str | None = "v1",
    clock: VectorClock = KNOWN,
) -> Link:
    return Link(
        record_id=str(uuid.UUID(int=7)),
        entity="contact",
        source_record_id="42",
        clock=clock,
        content_hash=content_hash(fields, deleted),
        fields=dict(fields),
        version=version,
        deleted=deleted,
    )


def capture(content: Content, link: Link | None, soft_deletes: bool = True) -> object:
    return capture_row(content, link, actor=ACTOR, soft_deletes=soft_deletes)


# -- capture_row ----------------------------------------------------------------------


def test_new_row_is_a_new_record() -> None:
    decision = capture(Content(ADA, False, "v1"), None)
    assert decision == Publish(
        record_id=None,
        clock=VectorClock({ACTOR: 1}),
        content=Content(ADA, False, "v1"),
        content_hash=content_hash(ADA, False),
        changed=("email", "first_name", "phone"),
        field_versions=FieldVersions(ACTOR, dict.fromkeys(ADA, 1)),  # all set by this edit
    )


def test_row_deleted_before_it_was_shared_is_skipped() -> None:
    assert capture(Content(ADA, True, "v1"), None) is Skip.UNSHARED


def test_echo_at_the_same_version_is_skipped() -> None:
    assert capture(Content(dict(ADA), False, "v1"), link_for()) is Skip.ECHO


def test_unmapped_column_edit_remembers_the_version() -> None:
    assert capture(Content(ADA, False, "v2"), link_for()) == NewVersion("v2")


def test_edit_is_a_local_change_on_top_of_the_link() -> None:
    link = link_for()
    edited = {**ADA, "first_name": "Grace"}
    decision = capture(Content(edited, False, "v2"), link)
    assert isinstance(decision, Publish)
    assert decision.record_id == link.record_id
    assert decision.clock == VectorClock({"legacy": 2, "sales": 2})
    assert decision.changed == ("first_name",)
    assert decision.content == Content(edited, False, "v2")
    assert decision.op == "upsert"


def test_soft_delete_is_a_local_delete() -> None:
    decision = capture(Content(ADA, True, "v2"), link_for())
    assert isinstance(decision, Publish)
    assert decision.op == "delete"
    assert decision.changed == ()  # the fields are the link's: only the flag moved


def test_undelete_under_soft_deletes_is_the_same_record() -> None:
    link = link_for(deleted=True)
    decision = capture(Content(ADA, False, "v2"), link)
    assert isinstance(decision, Publish)
    assert decision.record_id == link.record_id
    assert decision.op == "upsert"


def test_row_under_a_hard_deleted_records_id_is_a_new_record() -> None:
    link = link_for(deleted=True, version=None)
    other = {"email": "someone@example.com", "first_name": "New", "phone": None}
    decision = capture(Content(other, False, "v9"), link, soft_deletes=False)
    assert decision == IdReused(
        Publish(
            record_id=None,
            clock=VectorClock({ACTOR: 1}),  # nothing of the old record's history
            content=Content(other, False, "v9"),
            content_hash=content_hash(other, False),
            changed=("email", "first_name", "phone"),
            field_versions=FieldVersions(ACTOR, dict.fromkeys(other, 1)),
        )
    )
    # even with the same content: the id was reused, the record is not the old one
    same = capture(Content(ADA, False, "v9"), link, soft_deletes=False)
    assert isinstance(same, IdReused) and isinstance(same.then, Publish)
    assert same.then.record_id is None


def test_deleted_row_under_a_reused_id_detaches_and_skips() -> None:
    link = link_for(deleted=True)
    decision = capture(Content(ADA, True, "v9"), link, soft_deletes=False)
    assert decision == IdReused(Skip.UNSHARED)


def test_live_link_under_hard_deletes_is_not_reuse() -> None:
    decision = capture(Content(ADA, False, "v2"), link_for(), soft_deletes=False)
    assert decision == NewVersion("v2")


def test_event_of_a_publish() -> None:
    decision = capture(Content({**ADA, "phone": "+44-1"}, False, "v2"), link_for())
    assert isinstance(decision, Publish)
    when = datetime(2024, 5, 1, tzinfo=UTC)
    event_id = new_event_id()
    event = decision.event(
        event_id=event_id,
        record_id=str(decision.record_id),
        source="legacy",
        actor=ACTOR,
        entity="contact",
        source_record_id="42",
        occurred_at=when,
    )
    assert decode(encode(event)) == event  # valid on the wire
    assert event.event_id == event_id
    assert event.clock == {"legacy": 2, "sales": 2}
    assert event.fields == {**ADA, "phone": "+44-1"}
    assert event.changed == ["phone"]
    assert event.op == "upsert"
    assert event.routing_key == "legacy.contact.upsert"
    assert event.occurred_at == when


# -- write_missed / row_gone ----------------------------------------------------------


def test_missed_write_on_unmapped_edit_retries_on_the_new_version() -> None:
    assert write_missed(link_for(), Content(dict(ADA), False, "v2"), actor=ACTOR) == NewVersion(
        "v2"
    )


def test_missed_write_on_a_user_edit_publishes_it_first() -> None:
    link = link_for()
    edited = {**ADA, "phone": "+1"}
    outcome = write_missed(link, Content(edited, False, "v2"), actor=ACTOR)
    assert outcome == Publish(
        record_id=link.record_id,
        clock=local_clock(link.clock, ACTOR),
        content=Content(edited, False, "v2"),
        content_hash=content_hash(edited, False),
        changed=("phone",),
    )


def test_missed_write_on_a_vanished_row_publishes_a_delete() -> None:
    link = link_for()
    outcome = write_missed(link, None, actor=ACTOR)
    assert outcome == row_gone(link, actor=ACTOR)
    assert outcome.op == "delete"
    assert outcome.record_id == link.record_id
    assert outcome.content == Content(link.fields, True, None)
    assert outcome.changed == ()
    assert compare(outcome.clock, link.clock) is Order.AFTER


# -- properties -----------------------------------------------------------------------

# Few names and values, so equal content (echoes) is drawn often.
field_maps = st.dictionaries(
    st.sampled_from(["email", "first_name", "phone"]),
    st.sampled_from([None, "a", "b", 1]),
    max_size=3,
)
versions = st.sampled_from([None, "v1", "v2"])
clocks = st.dictionaries(
    st.sampled_from(["legacy", "sales", "hub"]), st.integers(1, 3), min_size=1
).map(VectorClock)


@st.composite
def links(draw: st.DrawFn) -> Link | None:
    if draw(st.booleans()):
        return None
    return link_for(
        draw(field_maps), deleted=draw(st.booleans()), version=draw(versions), clock=draw(clocks)
    )


contents = st.builds(Content, field_maps, st.booleans(), versions)


@given(contents, links(), st.booleans())
def test_capture_publishes_exactly_the_changes_it_must(
    content: Content, link: Link | None, soft_deletes: bool
) -> None:
    """Publish iff the content hash differs from the link's (a reused id: from no link)
    and the row is not a delete nobody was ever told of."""
    decision = capture(content, link, soft_deletes)
    reused = link is not None and link.deleted and not soft_deletes
    assert isinstance(decision, IdReused) is reused
    if isinstance(decision, IdReused):
        decision = decision.then
    known = None if reused else link
    digest = content_hash(content.fields, content.deleted)
    differs = known is None or known.content_hash != digest
    never_shared_delete = known is None and content.deleted
    assert isinstance(decision, Publish) is (differs and not never_shared_delete)
    if isinstance(decision, Publish):
        assert decision.record_id == (known.record_id if known else None)
        assert decision.clock == local_clock(known.clock if known else None, ACTOR)
        if known is not None:
            assert compare(decision.clock, known.clock) is Order.AFTER
        assert decision.content_hash == digest
        assert list(decision.changed) == changed_fields(
            known.fields if known else None, content.fields
        )
    elif known is not None and not differs:
        same_version = content.version == known.version
        assert decision == (Skip.ECHO if same_version else NewVersion(content.version))
    else:
        assert decision is Skip.UNSHARED


@given(contents, links(), st.booleans())
def test_what_capture_recorded_is_an_echo(
    content: Content, link: Link | None, soft_deletes: bool
) -> None:
    """Once a decision is acted on, capturing the same row again publishes nothing."""
    assume(soft_deletes or not content.deleted)  # without a deleted column no row is flagged
    decision = capture(content, link, soft_deletes)
    if isinstance(decision, IdReused):
        link, decision = None, decision.then
    if isinstance(decision, Skip) and link is None:
        return  # nothing recorded: nothing to compare with
    if isinstance(decision, Publish):
        link = link_for(
            dict(content.fields),
            deleted=content.deleted,
            version=content.version,
            clock=decision.clock,
        )
    elif isinstance(decision, NewVersion):
        assert link is not None
        link = link.evolve(version=decision.version)
    assert capture(content, link, soft_deletes) is Skip.ECHO


@given(st.one_of(st.none(), contents), links())
def test_missed_write_retries_iff_mapped_content_is_unchanged(
    current: Content | None, link: Link | None
) -> None:
    if link is None:
        link = link_for()
    outcome = write_missed(link, current, actor=ACTOR)
    if current is not None and content_hash(current.fields, current.deleted) == link.content_hash:
        assert outcome == NewVersion(current.version)
        return
    assert isinstance(outcome, Publish)
    assert outcome.record_id == link.record_id  # always the link's record, never a new one
    assert outcome.clock == local_clock(link.clock, ACTOR)
    assert outcome.content == (current if current is not None else Content(link.fields, True, None))
