"""The router's decision (router/decide.py) and last-writer-wins (router/policies.py).

The other policies, parking and operator resolutions: tests/unit/test_policies.py and
tests/unit/test_parking.py."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.clock import Order, VectorClock, compare, merge
from router.decide import Decision, Verdict, accept, decide
from router.events import ChangeEvent, Scalar
from router.policies import DeleteRule, Outcome, Rules, Side, resolve
from router.record import RecordState
from tests.factories import RECORD_ID, at, make_event, make_state

SUBSCRIBERS = ("legacy", "mktg", "sales")
HUB = "hub"

BASE_FIELDS: dict[str, Scalar] = {"email": "ada@old.example", "phone": "+44 1", "first_name": "Ada"}


def base_state() -> RecordState:
    return make_state({"legacy": 2, "sales": 1}, BASE_FIELDS)


def run(
    event: ChangeEvent,
    stored: RecordState | None,
    hub_actor: str = HUB,
    deletes: DeleteRule = "update-wins",
) -> Decision:
    return decide(event, stored, SUBSCRIBERS, hub_actor, Rules(deletes=deletes))


# -- accepted ------------------------------------------------------------------------------


def test_first_version_is_accepted_and_sent_to_everyone_else() -> None:
    event = make_event("sales", {"sales": 1}, {"email": "ada@example.com"})
    decision = run(event, None)
    assert decision.verdict is Verdict.ACCEPTED
    assert decision.targets == ("legacy", "mktg")
    assert decision.state is not None
    assert decision.state.clock == event.vclock
    assert decision.state.fields == {"email": "ada@example.com"}
    assert decision.state.deleted is False
    assert decision.state.source == "sales"
    assert decision.state.actor == "sales"
    assert decision.state.event_id == event.event_id
    assert decision.state.version == 0
    assert decision.delivery is not None
    assert decision.delivery.event_id == event.event_id
    assert decision.delivery.vclock == event.vclock


def test_source_not_subscribed_delivers_to_all_subscribers() -> None:
    event = make_event("crm-x", {"crm-x": 1}, {"email": "a@b.c"})
    decision = run(event, None)
    assert decision.verdict is Verdict.ACCEPTED
    assert decision.targets == SUBSCRIBERS


def test_after_overlays_fields_onto_stored_ones() -> None:
    stored = base_state()
    # sales does not map phone: its snapshot lacks it, which must not erase it.
    event = make_event(
        "sales", {"legacy": 2, "sales": 2}, {"email": "ada@new.example", "first_name": "Ada"}
    )
    assert compare(event.vclock, stored.clock) is Order.AFTER
    decision = run(event, stored)
    assert decision.verdict is Verdict.ACCEPTED
    assert decision.targets == ("legacy", "mktg")
    assert decision.state is not None
    assert decision.state.fields == {
        "email": "ada@new.example",
        "phone": "+44 1",
        "first_name": "Ada",
    }
    assert decision.state.clock == event.vclock
    assert decision.state.version == stored.version  # compare-and-set token carried over
    assert decision.delivery is not None
    assert decision.delivery.fields == decision.state.fields
    assert decision.delivery.op == "upsert"


def test_null_clears_a_field() -> None:
    stored = base_state()
    event = make_event("sales", {"legacy": 2, "sales": 2}, {"phone": None})
    decision = run(event, stored)
    assert decision.state is not None
    assert decision.state.fields["phone"] is None


def test_delete_after_stores_a_tombstone_and_delivers_a_delete() -> None:
    stored = base_state()
    event = make_event("sales", {"legacy": 2, "sales": 2}, {}, op="delete")
    decision = run(event, stored)
    assert decision.verdict is Verdict.ACCEPTED
    assert decision.state is not None
    assert decision.state.deleted is True
    assert decision.state.clock == event.vclock
    assert decision.delivery is not None
    assert decision.delivery.op == "delete"
    assert decision.targets == ("legacy", "mktg")


def test_stale_upsert_does_not_resurrect_a_tombstone() -> None:
    tombstone = make_state({"legacy": 2, "sales": 2}, BASE_FIELDS, actor="sales", deleted=True)
    event = make_event("legacy", {"legacy": 2}, {"email": "zombie@example.com"})
    decision = run(event, tombstone)
    assert decision.verdict is Verdict.STALE
    assert decision.state is None


def test_field_clocks_follow_changed_values() -> None:
    old = VectorClock({"legacy": 2, "sales": 1})
    stored = make_state(
        {"legacy": 2, "sales": 1},
        {"email": "old@example.com", "phone": "+44 1", "first_name": "Ada"},
        field_clocks={"email": old, "phone": old, "first_name": old},
    )
    event = make_event(
        "sales",
        {"legacy": 2, "sales": 2},
        # email changed, first_name unchanged, last_name new; phone not mapped by sales.
        {"email": "new@example.com", "first_name": "Ada", "last_name": "Lovelace"},
        changed=["email", "last_name"],
    )
    decision = run(event, stored)
    assert decision.state is not None
    clocks = decision.state.field_clocks
    assert clocks["email"] == event.vclock
    assert clocks["last_name"] == event.vclock
    assert clocks["first_name"] == old
    assert clocks["phone"] == old


def test_field_clock_set_for_value_change_missing_from_changed() -> None:
    # The router never saw the parent (counter jumped): a changed value still counts.
    old = VectorClock({"legacy": 2, "sales": 1})
    stored = make_state({"legacy": 2, "sales": 1}, {"email": "old@example.com"})
    event = make_event("sales", {"legacy": 2, "sales": 5}, {"email": "new@example.com"}, changed=[])
    state = accept(event, stored)
    assert state.field_clocks["email"] == event.vclock
    assert stored.field_clocks["email"] == old


# -- stale, duplicate, reused counter --------------------------------------------------------


def test_before_is_stale_and_sends_nothing() -> None:
    stored = base_state()
    event = make_event("legacy", {"legacy": 1}, {"email": "older@example.com"})
    assert compare(event.vclock, stored.clock) is Order.BEFORE
    decision = run(event, stored)
    assert decision.verdict is Verdict.STALE
    assert decision.state is None
    assert decision.delivery is None
    assert decision.targets == ()


def test_equal_with_same_content_is_a_duplicate() -> None:
    stored = base_state()
    # The source maps a subset of the stored fields; same values: a redelivery.
    event = make_event("legacy", {"legacy": 2, "sales": 1}, {"email": "ada@old.example"})
    decision = run(event, stored)
    assert decision.verdict is Verdict.DUPLICATE
    assert decision.state is None
    assert decision.delivery is None
    assert decision.targets == ()


def test_equal_with_other_content_is_a_reused_counter() -> None:
    stored = base_state()
    event = make_event("legacy", {"legacy": 2, "sales": 1}, {"email": "someone@else.example"})
    decision = run(event, stored)
    assert decision.verdict is Verdict.CLOCK_REUSE
    assert decision.state is None
    assert decision.delivery is None
    assert decision.targets == ()


def test_equal_clock_delete_against_live_record_is_a_reused_counter() -> None:
    stored = base_state()
    event = make_event("legacy", {"legacy": 2, "sales": 1}, {}, op="delete")
    assert run(event, stored).verdict is Verdict.CLOCK_REUSE


# -- conflicts -------------------------------------------------------------------------------


@pytest.mark.parametrize("hub_actor", ["hub", "hub@3"])
def test_concurrent_is_a_conflict_resolved_by_the_hub(hub_actor: str) -> None:
    stored = make_state({"legacy": 3, "sales": 1}, BASE_FIELDS, actor="legacy", occurred_at=at(1))
    event = make_event(
        "sales", {"legacy": 2, "sales": 2}, {"email": "sales@example.com"}, occurred_at=at(2)
    )
    assert compare(event.vclock, stored.clock) is Order.CONCURRENT
    decision = run(event, stored, hub_actor=hub_actor)
    assert decision.verdict is Verdict.CONFLICT
    # Every subscriber, both sides of the conflict included.
    assert decision.targets == SUBSCRIBERS
    expected = merge(event.vclock, stored.clock).increment(hub_actor)
    state, resolution = decision.state, decision.delivery
    assert state is not None
    assert resolution is not None
    assert state.clock == expected
    assert resolution.vclock == expected
    assert compare(expected, event.vclock) is Order.AFTER
    assert compare(expected, stored.clock) is Order.AFTER
    assert resolution.source == "hub"
    assert resolution.actor == hub_actor
    assert state.actor == hub_actor
    assert resolution.record_id == RECORD_ID
    assert resolution.entity == "contact"
    assert resolution.event_id == state.event_id
    assert resolution.event_id not in (event.event_id, stored.event_id)
    # lww: the later sales edit wins email; phone, unmapped by sales, survives.
    assert state.fields == {**BASE_FIELDS, "email": "sales@example.com"}
    assert resolution.fields == state.fields
    assert resolution.op == "upsert"
    assert "email" in resolution.changed


def test_conflict_lww_keeps_the_later_stored_side() -> None:
    stored = make_state({"legacy": 3, "sales": 1}, BASE_FIELDS, occurred_at=at(5))
    event = make_event(
        "sales", {"legacy": 2, "sales": 2}, {"email": "sales@example.com"}, occurred_at=at(2)
    )
    decision = run(event, stored)
    assert decision.verdict is Verdict.CONFLICT
    assert decision.state is not None
    assert decision.state.fields == BASE_FIELDS
    assert decision.state.occurred_at == at(5)


def side(actor: str, minutes: int, fields: dict[str, Scalar], deleted: bool = False) -> Side:
    return Side(actor, actor, at(minutes), fields, deleted)


def resolve_lww(stored: Side, incoming: Side, deletes: DeleteRule = "update-wins") -> Outcome:
    return resolve([stored, incoming], stored.fields, Rules(deletes=deletes))


def test_lww_picks_the_later_occurred_at() -> None:
    early = side("sales", 1, {"email": "early"})
    late = side("legacy", 2, {"email": "late"})
    for stored, incoming in ((early, late), (late, early)):
        outcome = resolve_lww(stored, incoming)
        contest = outcome.contests["email"]
        assert contest.policy == "lww"
        assert [stored, incoming][contest.winner or 0] == late
        assert contest.losing == (("sales", "early"),)
        assert outcome.fields == {"email": "late"}
        assert outcome.deleted is False


def test_lww_tie_is_broken_by_actor_name_in_either_order() -> None:
    a = side("legacy", 1, {"email": "from legacy"})
    b = side("sales", 1, {"email": "from sales"})
    first = resolve_lww(a, b)
    second = resolve_lww(b, a)
    assert first.fields == second.fields
    # "sales" > "legacy": the greater actor name wins a tie.
    assert first.fields == {"email": "from sales"}
    assert first.losing == second.losing == {"email": [("legacy", "from legacy")]}


def test_lww_loser_fields_survive_where_winner_has_none() -> None:
    loser = side("legacy", 1, {"email": "old", "phone": "+44 1"})
    winner = side("sales", 2, {"email": "new"})
    assert resolve_lww(loser, winner).fields == {"email": "new", "phone": "+44 1"}


@pytest.mark.parametrize("delete_is_later", [True, False])
@pytest.mark.parametrize("delete_is_stored", [True, False])
def test_update_wins_keeps_the_record_whatever_the_timestamps(
    delete_is_later: bool, delete_is_stored: bool
) -> None:
    delete_at, update_at = (at(9), at(1)) if delete_is_later else (at(1), at(9))
    if delete_is_stored:
        stored = make_state(
            {"legacy": 3, "sales": 1}, BASE_FIELDS, deleted=True, occurred_at=delete_at
        )
        event = make_event(
            "sales", {"legacy": 2, "sales": 2}, {"email": "edit@example.com"}, occurred_at=update_at
        )
    else:
        stored = make_state({"legacy": 3, "sales": 1}, BASE_FIELDS, occurred_at=update_at)
        event = make_event(
            "sales", {"legacy": 2, "sales": 2}, {}, op="delete", occurred_at=delete_at
        )
    decision = run(event, stored)  # update-wins is the default
    assert decision.verdict is Verdict.CONFLICT
    assert decision.state is not None
    assert decision.delivery is not None
    assert decision.state.deleted is False
    assert decision.delivery.op == "upsert"
    assert decision.targets == SUBSCRIBERS
    if delete_is_stored:
        assert decision.state.fields["email"] == "edit@example.com"
    else:
        assert decision.state.fields == BASE_FIELDS


@pytest.mark.parametrize("delete_is_later", [True, False])
def test_delete_wins_deletes(delete_is_later: bool) -> None:
    delete_at, update_at = (at(9), at(1)) if delete_is_later else (at(1), at(9))
    stored = make_state({"legacy": 3, "sales": 1}, BASE_FIELDS, occurred_at=update_at)
    event = make_event("sales", {"legacy": 2, "sales": 2}, {}, op="delete", occurred_at=delete_at)
    decision = run(event, stored, deletes="delete-wins")
    assert decision.verdict is Verdict.CONFLICT
    assert decision.state is not None
    assert decision.delivery is not None
    assert decision.state.deleted is True
    assert decision.delivery.op == "delete"
    assert decision.targets == SUBSCRIBERS


def test_resolve_lww_delete_rule_directly() -> None:
    deleted = side("sales", 9, {}, deleted=True)
    edited = side("legacy", 1, {"email": "edit"})
    for stored, incoming in ((deleted, edited), (edited, deleted)):
        kept = resolve_lww(stored, incoming, "update-wins")
        assert kept.deleted is False
        assert kept.fields == {"email": "edit"}
        assert resolve_lww(stored, incoming, "delete-wins").deleted is True


# -- order independence ------------------------------------------------------------------------

FIELD_NAMES = ["email", "phone", "first_name", "last_name"]
values = st.one_of(st.none(), st.sampled_from(["x", "y", "z"]), st.integers(0, 2))
snapshots = st.dictionaries(st.sampled_from(FIELD_NAMES), values)


def converge(
    e1: ChangeEvent, e2: ChangeEvent, stored: RecordState, deletes: DeleteRule
) -> tuple[tuple[dict[str, Scalar], bool], tuple[dict[str, Scalar], bool]]:
    """The final (fields, deleted) after seeing e1 then e2, and after e2 then e1."""
    results = []
    for first, second in ((e1, e2), (e2, e1)):
        d1 = run(first, stored, deletes=deletes)
        assert d1.verdict is Verdict.ACCEPTED
        d2 = run(second, d1.state, deletes=deletes)
        assert d2.verdict is Verdict.CONFLICT
        assert d2.state is not None
        results.append((d2.state.fields, d2.state.deleted))
    return results[0], results[1]


@given(
    base=snapshots,
    f1=snapshots,
    f2=snapshots,
    op1=st.sampled_from(["upsert", "delete"]),
    op2=st.sampled_from(["upsert", "delete"]),
    t1=st.integers(0, 3),
    t2=st.integers(0, 3),
    deletes=st.sampled_from(["update-wins", "delete-wins"]),
)
def test_lww_resolution_does_not_depend_on_arrival_order(
    base: dict[str, Scalar],
    f1: dict[str, Scalar],
    f2: dict[str, Scalar],
    op1: str,
    op2: str,
    t1: int,
    t2: int,
    deletes: DeleteRule,
) -> None:
    stored = make_state({"legacy": 4, "sales": 2, "mktg": 1}, base)
    e1 = make_event("sales", {"legacy": 4, "sales": 3, "mktg": 1}, f1, op=op1, occurred_at=at(t1))
    e2 = make_event("mktg", {"legacy": 4, "sales": 2, "mktg": 2}, f2, op=op2, occurred_at=at(t2))
    one_way, other_way = converge(e1, e2, stored, deletes)
    assert one_way == other_way


@given(
    base=snapshots,
    v1=st.lists(values, min_size=len(FIELD_NAMES), max_size=len(FIELD_NAMES)),
    v2=st.lists(values, min_size=len(FIELD_NAMES), max_size=len(FIELD_NAMES)),
    op1=st.sampled_from(["upsert", "delete"]),
    op2=st.sampled_from(["upsert", "delete"]),
    t1=st.integers(0, 3),
    t2=st.integers(0, 3),
    deletes=st.sampled_from(["update-wins", "delete-wins"]),
)
def test_lww_order_independent_when_sources_map_the_same_fields(
    base: dict[str, Scalar],
    v1: list[Scalar],
    v2: list[Scalar],
    op1: str,
    op2: str,
    t1: int,
    t2: int,
    deletes: DeleteRule,
) -> None:
    stored = make_state({"legacy": 4, "sales": 2, "mktg": 1}, base)
    f1 = dict(zip(FIELD_NAMES, v1, strict=True))
    f2 = dict(zip(FIELD_NAMES, v2, strict=True))
    e1 = make_event("sales", {"legacy": 4, "sales": 3, "mktg": 1}, f1, op=op1, occurred_at=at(t1))
    e2 = make_event("mktg", {"legacy": 4, "sales": 2, "mktg": 2}, f2, op=op2, occurred_at=at(t2))
    one_way, other_way = converge(e1, e2, stored, deletes)
    assert one_way == other_way


def test_lww_concurrent_edit_of_unmapped_field_survives_in_either_order() -> None:
    """Concrete case of the property above.

    Base: phone "+44 1". sales (does not map phone) edits email at 12:10; mktg,
    concurrently, edits email and phone at 12:05. lww: sales wins email. Nobody else
    changed phone, so mktg's phone must survive, whichever event the router sees first.
    """
    stored = make_state({"legacy": 1}, {"email": "old@example.com", "phone": "+44 1"})
    by_sales = make_event(
        "sales", {"legacy": 1, "sales": 1}, {"email": "s@example.com"}, occurred_at=at(10)
    )
    by_mktg = make_event(
        "mktg",
        {"legacy": 1, "mktg": 1},
        {"email": "m@example.com", "phone": "+44 2"},
        occurred_at=at(5),
    )
    sales_first, mktg_first = converge(by_sales, by_mktg, stored, "update-wins")
    assert mktg_first == ({"email": "s@example.com", "phone": "+44 2"}, False)
    assert sales_first == mktg_first
