"""Replay planning (router/dlq.py ``plan_replay``): what is republished, what is left."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router import dlq, topology
from router.events import ChangeEvent, encode
from tests.factories import make_event

SALES_DLQ = topology.dlq_queue("sales")
GARBAGE = b"\x00garbage"


def event() -> ChangeEvent:
    """A distinct record per entry (entry ids are event ids)."""
    return make_event("legacy", record_id=str(uuid.uuid4()), event_id=str(uuid.uuid4()))


def entry(position: int, body: bytes | None = None, queue: str = SALES_DLQ) -> dlq.Entry:
    headers = {topology.TARGET_HEADER: "sales", topology.ERROR_TYPE_HEADER: "permanent"}
    return dlq.read_entry(queue, position, encode(event()) if body is None else body, headers)


def test_nothing_to_plan() -> None:
    assert dlq.plan_replay([], named=False) == ([], [])
    assert dlq.plan_replay([], named=True) == ([], [])


def test_every_decodable_entry_is_planned_in_queue_order_as_replay_of_says() -> None:
    entries = [entry(0), entry(1, queue=topology.INVALID), entry(2)]
    plan, skipped = dlq.plan_replay(entries, named=False)
    assert skipped == []
    assert plan == [(e, dlq.replay_of(e)) for e in entries]
    assert [m.exchange for _, m in plan] == [
        topology.DELIVERIES,
        topology.CHANGES,  # the router's invalid queue goes back to the router
        topology.DELIVERIES,
    ]


def test_an_undecodable_entry_in_a_selection_is_skipped_with_the_reason() -> None:
    entries = [entry(0), entry(1, GARBAGE), entry(2)]
    plan, skipped = dlq.plan_replay(entries, named=False)
    assert [e.position for e, _ in plan] == [0, 2]
    [(left, reason)] = skipped
    assert left is entries[1]
    assert left.id in reason and "cannot be replayed" in reason
    assert f"crmsync dlq show {left.id}" in reason  # says what to do with it


def test_a_named_entry_that_cannot_be_replayed_is_refused() -> None:
    """Refused, not skipped: the operator asked for that one, and the caller changes
    nothing before planning is done."""
    entries = [entry(0), entry(1, GARBAGE)]
    with pytest.raises(dlq.NotReplayable, match=f"{entries[1].id} .* cannot be replayed"):
        dlq.plan_replay(entries, named=True)


def test_named_entries_that_all_decode_are_planned() -> None:
    entries = [entry(0), entry(1)]
    plan, skipped = dlq.plan_replay(entries, named=True)
    assert [e for e, _ in plan] == entries
    assert skipped == []


@given(st.lists(st.booleans(), max_size=12))
def test_plan_and_skipped_split_the_entries_keeping_their_order(decodes: list[bool]) -> None:
    entries = [entry(i, None if ok else GARBAGE + bytes([i])) for i, ok in enumerate(decodes)]
    plan, skipped = dlq.plan_replay(entries, named=False)
    assert [e for e, _ in plan] == [e for e in entries if e.event is not None]
    assert [e for e, _ in skipped] == [e for e in entries if e.event is None]
    assert all(m.message_id == e.id for e, m in plan)
