"""router/provenance.py with ``field_versions``: exact attribution of what an event whose
parent the router never saw carries (DESIGN "Exact attribution under reordering"), and
the bounding rule kept for events without them."""

from __future__ import annotations

from router.clock import VectorClock
from router.decide import Verdict, decide
from router.events import ChangeEvent
from router.policies import Rules
from router.provenance import event_changed, event_version
from tests.factories import make_event, make_state

# The stored version: sales set phone after legacy's first edit ({legacy:1} seen).
STORED = make_state(
    {"legacy": 1, "sales": 2},
    {"email": "old@x.test", "phone": "sales-phone"},
    actor="sales",
    field_clocks={"email": {"legacy": 1}, "phone": {"legacy": 1, "sales": 2}},
)
PRIORITY = Rules(policy="priority", priority=("legacy", "sales"))


def overtaking(**field_versions: int) -> ChangeEvent:
    """legacy's third version ({legacy:3, sales:1}; the router never saw its second),
    changing email and carrying a phone that differs from the stored one."""
    return make_event(
        "legacy",
        {"legacy": 3, "sales": 1},
        {"email": "new@x.test", "phone": "old-or-own"},
        changed=["email"],
        field_versions=field_versions or None,
    )


def test_a_value_without_a_counter_was_received_and_the_stored_side_replaced_it() -> None:
    event = overtaking(email=3)
    assert event_changed(event, STORED, PRIORITY) == {"email"}
    version = event_version(event, STORED, rules=PRIORITY)
    # in the stored version's past: not in play, whatever the ranks
    assert STORED.clock.dominates(version.field_clock("phone"))


def test_a_counter_the_stored_side_has_not_seen_is_the_unseen_parents_edit() -> None:
    event = overtaking(email=3, phone=2)
    assert event_changed(event, STORED, PRIORITY) == {"email", "phone"}
    version = event_version(event, STORED, rules=PRIORITY)
    assert version.field_clock("phone") == VectorClock({"legacy": 2})  # edit 2, exactly
    assert version.sources["phone"] == "legacy"
    assert version.field_clock("email") == VectorClock({"legacy": 3, "sales": 1})
    assert not STORED.clock.dominates(version.field_clock("phone"))


def test_a_counter_the_stored_side_has_seen_is_an_old_value_of_the_events_own() -> None:
    event = overtaking(email=3, phone=1)  # legacy's first edit set it; sales replaced it
    assert event_changed(event, STORED, PRIORITY) == {"email"}
    version = event_version(event, STORED, rules=PRIORITY)
    assert version.field_clock("phone") == VectorClock({"legacy": 1})
    assert STORED.clock.dominates(version.field_clock("phone"))


def test_decide_keeps_the_stored_value_the_event_only_carries() -> None:
    decision = decide(overtaking(email=3), STORED, ["legacy", "sales"], "hub", PRIORITY)
    assert decision.verdict is Verdict.CONFLICT and decision.state is not None
    assert decision.state.fields == {"email": "new@x.test", "phone": "sales-phone"}


def test_decide_lets_the_unseen_parents_edit_contest() -> None:
    """legacy ranks first: its unseen edit of phone wins the contest."""
    event = overtaking(email=3, phone=2)
    decision = decide(event, STORED, ["legacy", "sales"], "hub", PRIORITY)
    assert decision.state is not None
    assert decision.state.fields == {"email": "new@x.test", "phone": "old-or-own"}


def test_without_field_versions_the_bounding_rule_stands() -> None:
    """An older producer's event: the ambiguous phone counts as legacy's under priority
    (legacy outranks the stored author), as before."""
    event = overtaking()
    assert event.field_versions is None
    assert event_changed(event, STORED, PRIORITY) == {"email", "phone"}
    assert event_changed(event, STORED, Rules()) == {"email"}
