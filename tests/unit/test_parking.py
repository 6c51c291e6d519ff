"""Parked conflicts (router/decide.py, router/conflicts.py): a ``manual`` field both sides
changed parks the record; later events join, replace or repeat its sides; an operator
resolves it (``resolve_parked``); and the conflict's documents and operator views.

The pure resolver: tests/unit/test_policies.py."""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import msgpack
import pytest

from router.clock import Order, VectorClock, compare, merge
from router.conflicts import Conflict, Version, detail, summary
from router.decide import Decision, Verdict, decide, resolve_parked
from router.events import ChangeEvent, Scalar
from router.policies import OPERATOR, Choice, Rules, SetValue, TakeSide, resolve
from router.provenance import sides_of
from router.record import RecordState
from tests.factories import RECORD_ID, T0, at, make_event, make_state, make_version

SUBSCRIBERS = ("legacy", "mktg", "sales")
HUB = "hub"
MANUAL = Rules(policy="manual")
BASE: dict[str, Scalar] = {"email": "a@old", "phone": "1", "last_name": "L"}


def again(event: ChangeEvent, **update: Any) -> ChangeEvent:
    """The same version redelivered (or, with ``update``, other content under its clock)."""
    return event.model_copy(update={"event_id": str(uuid.uuid4()), **update})


@dataclass(frozen=True)
class Parked:
    before: RecordState  # the stored state the conflicting event met
    state: RecordState  # the same, marked parked
    conflict: Conflict
    sales: ChangeEvent
    mktg: ChangeEvent
    rules: Rules

    def decide(self, event: ChangeEvent) -> Decision:
        return decide(event, self.state, SUBSCRIBERS, HUB, self.rules, self.conflict)


def park(
    rules: Rules = MANUAL,
    *,
    base_clock: dict[str, int] | None = None,
    sales_fields: dict[str, Scalar] | None = None,
    mktg_fields: dict[str, Scalar] | None = None,
) -> Parked:
    """sales edits email; then mktg, concurrently, edits email and last_name (the router
    never saw mktg's first version: its counter is 2). Under ``manual``: parked."""
    clock = base_clock or {"legacy": 1}
    stored = make_state(clock, BASE, field_sources="legacy")
    sales_fields = sales_fields or {"email": "s", "phone": "1"}
    sales_changed = sorted(n for n, v in sales_fields.items() if BASE.get(n) != v)
    sales = make_event(
        "sales", {**clock, "sales": 1}, sales_fields, occurred_at=at(1), changed=sales_changed
    )
    accepted = decide(sales, stored, SUBSCRIBERS, HUB, rules)
    assert accepted.verdict is Verdict.ACCEPTED
    assert accepted.state is not None
    mktg = make_event(
        "mktg",
        {**clock, "mktg": 2},
        mktg_fields or {"email": "m", "last_name": "M"},
        occurred_at=at(2),
    )
    decision = decide(mktg, accepted.state, SUBSCRIBERS, HUB, rules)
    assert decision.verdict is Verdict.PARKED
    assert decision.state is not None
    assert decision.conflict is not None
    return Parked(accepted.state, decision.state, decision.conflict, sales, mktg, rules)


def with_legacy_phone(parked: Parked) -> Parked:
    """A third CRM edits another field while the record is parked: it joins."""
    legacy = make_event("legacy", {"legacy": 2}, {"phone": "2"}, occurred_at=at(3))
    held = parked.decide(legacy)
    assert held.verdict is Verdict.HELD
    assert held.state is not None
    assert held.conflict is not None
    return replace(parked, state=held.state, conflict=held.conflict)


# -- parking -------------------------------------------------------------------------------


def test_concurrent_edit_of_one_field_under_manual_parks() -> None:
    stored = make_state({"legacy": 1}, BASE, field_sources="legacy")
    sales = make_event("sales", {"legacy": 1, "sales": 1}, {"email": "s"}, occurred_at=at(1))
    first = decide(sales, stored, SUBSCRIBERS, HUB, MANUAL).state
    assert first is not None
    mktg = make_event(
        "mktg", {"legacy": 1, "mktg": 1}, {"email": "m", "last_name": "M"}, occurred_at=at(2)
    )
    decision = decide(mktg, first, SUBSCRIBERS, HUB, MANUAL)

    assert decision.verdict is Verdict.PARKED
    assert decision.delivery is None
    assert decision.targets == ()
    conflict = decision.conflict
    assert conflict is not None
    # Nothing changes but the marker: the values stay as they were until an operator acts.
    assert decision.state == replace(first, parked=conflict.id)
    assert conflict.id.startswith("c-")
    assert (conflict.record_id, conflict.entity) == (RECORD_ID, "contact")
    assert conflict.status == "open"
    assert conflict.settlement is None
    assert conflict.held == 0
    assert conflict.base == first.fields
    assert conflict.policies == {"email": "manual"}
    assert conflict.undecided == ("email",)
    assert conflict.sources == ["mktg", "sales"]
    stored_side, event_side = conflict.sides
    assert (stored_side.event_id, stored_side.clock) == (sales.event_id, sales.vclock)
    assert stored_side.fields == first.fields
    assert stored_side.changed == {"email"}
    assert (event_side.event_id, event_side.clock) == (mktg.event_id, mktg.vclock)
    assert event_side.fields == {"email": "m", "last_name": "M"}
    assert event_side.changed == {"email", "last_name"}
    assert event_side.deleted is False


def test_manual_never_parks_edits_of_different_fields() -> None:
    stored = make_state({"legacy": 1}, BASE, field_sources="legacy")
    sales = make_event("sales", {"legacy": 1, "sales": 1}, {"email": "s"}, occurred_at=at(1))
    first = decide(sales, stored, SUBSCRIBERS, HUB, MANUAL).state
    assert first is not None
    # mktg carries the old email but changed only last_name.
    mktg = make_event(
        "mktg",
        {"legacy": 1, "mktg": 1},
        {"email": "a@old", "last_name": "M"},
        occurred_at=at(2),
        changed=["last_name"],
    )
    decision = decide(mktg, first, SUBSCRIBERS, HUB, MANUAL)
    assert decision.verdict is Verdict.CONFLICT
    assert decision.state is not None
    assert decision.state.parked is None
    assert decision.state.fields == {"email": "s", "phone": "1", "last_name": "M"}
    assert decision.targets == SUBSCRIBERS
    assert decision.delivery is not None
    assert decision.delivery.fields == decision.state.fields
    assert decision.conflict is not None
    assert decision.conflict.status == "resolved"
    assert decision.conflict.undecided == ()
    assert decision.conflict.policies == {}
    assert decision.conflict.settlement is not None
    assert decision.conflict.settlement.by == "policy"


def test_a_parked_record_needs_its_conflict() -> None:
    parked = park()
    event = make_event("legacy", {"legacy": 2}, {"phone": "2"})
    message = f"record {RECORD_ID} is parked in {parked.conflict.id}, not given"
    with pytest.raises(ValueError) as caught:
        decide(event, parked.state, SUBSCRIBERS, HUB, MANUAL)
    assert str(caught.value) == message
    other = replace(parked.conflict, id="c-00000000")
    with pytest.raises(ValueError):
        decide(event, parked.state, SUBSCRIBERS, HUB, MANUAL, other)


# -- events for a parked record ---------------------------------------------------------------


def assert_nothing_happens(decision: Decision, verdict: Verdict) -> None:
    assert decision.verdict is verdict
    assert decision.state is None
    assert decision.delivery is None
    assert decision.targets == ()
    assert decision.conflict is None


def test_duplicate_of_a_side_is_a_duplicate() -> None:
    parked = park()
    assert_nothing_happens(parked.decide(again(parked.mktg)), Verdict.DUPLICATE)
    assert_nothing_happens(parked.decide(again(parked.sales)), Verdict.DUPLICATE)


def test_older_than_a_side_is_stale() -> None:
    parked = park()
    # mktg's first version (counter 1), delivered late; concurrent with the stored side.
    late = make_event("mktg", {"legacy": 1, "mktg": 1}, {"email": "m0", "last_name": "L"})
    assert compare(late.vclock, parked.state.clock) is Order.CONCURRENT
    assert_nothing_happens(parked.decide(late), Verdict.STALE)
    # Older than the stored side.
    assert_nothing_happens(
        parked.decide(make_event("legacy", {"legacy": 1}, {"phone": "0"})), Verdict.STALE
    )


def test_same_clock_as_a_side_with_other_content_is_a_reused_counter() -> None:
    parked = park()
    reused = again(parked.mktg, fields={"email": "other", "last_name": "M"})
    assert_nothing_happens(parked.decide(reused), Verdict.CLOCK_REUSE)
    deleted = again(parked.mktg, op="delete", fields={}, changed=[])
    assert_nothing_happens(parked.decide(deleted), Verdict.CLOCK_REUSE)


@pytest.mark.parametrize("source", ["mktg", "sales"])
def test_a_newer_version_from_a_side_replaces_that_side(source: str) -> None:
    parked = park()
    old = parked.mktg if source == "mktg" else parked.sales
    clock = {**old.clock, source: old.clock[source] + 1}
    newer = make_event(source, clock, {"email": f"{source} again"}, occurred_at=at(5))
    decision = parked.decide(newer)

    assert decision.verdict is Verdict.HELD
    assert decision.delivery is None
    assert decision.targets == ()
    assert decision.state == parked.state  # still parked in the same conflict
    conflict = decision.conflict
    assert conflict is not None
    assert conflict.id == parked.conflict.id
    assert conflict.held == 1
    assert len(conflict.sides) == 2
    assert conflict.sources == ["mktg", "sales"]
    replaced = next(v for v in conflict.sides if v.source == source)
    kept = next(v for v in conflict.sides if v.source != source)
    assert replaced.event_id == newer.event_id
    assert replaced.clock == newer.vclock
    assert replaced.fields["email"] == f"{source} again"
    # What the replaced side changed still counts: one line of history.
    assert replaced.changed >= next(v for v in parked.conflict.sides if v.source == source).changed
    assert kept == next(v for v in parked.conflict.sides if v.source != source)
    assert conflict.undecided == ("email",)
    assert conflict.policies == {"email": "manual"}
    assert conflict.settlement is None


def test_a_third_crm_joins_as_a_third_side() -> None:
    parked = park()
    legacy = make_event("legacy", {"legacy": 2}, {"phone": "2"}, occurred_at=at(3))
    decision = parked.decide(legacy)
    assert decision.verdict is Verdict.HELD
    assert decision.delivery is None
    assert decision.targets == ()
    assert decision.state == parked.state
    conflict = decision.conflict
    assert conflict is not None
    assert conflict.id == parked.conflict.id
    assert len(conflict.sides) == 3
    assert conflict.sides[:2] == parked.conflict.sides
    assert conflict.sides[2].event_id == legacy.event_id
    assert conflict.sides[2].changed == {"phone"}
    assert conflict.sources == ["legacy", "mktg", "sales"]
    assert conflict.held == 1
    assert conflict.undecided == ("email",)
    assert conflict.policies == {"email": "manual"}
    # A newer legacy version then replaces the third side: still three, held twice.
    newer = make_event("legacy", {"legacy": 3}, {"phone": "3"}, occurred_at=at(4))
    assert decision.state is not None
    replaced = decide(newer, decision.state, SUBSCRIBERS, HUB, MANUAL, conflict)
    assert replaced.verdict is Verdict.HELD
    assert replaced.conflict is not None
    assert len(replaced.conflict.sides) == 3
    assert replaced.conflict.held == 2
    assert replaced.conflict.sides[2].fields == {"phone": "3"}


def test_a_side_joining_from_an_older_base_contests_what_the_stored_side_changed_since() -> None:
    stored = make_state({"legacy": 1}, BASE, field_sources="legacy")
    steps = [
        make_event(
            "sales", {"legacy": 1, "sales": 1}, {"email": "s1", "phone": "2"}, occurred_at=at(1)
        ),
        make_event(
            "sales",
            {"legacy": 1, "sales": 2},
            {"email": "s2", "phone": "2"},
            occurred_at=at(2),
            changed=["email"],
        ),
    ]
    for event in steps:
        decision = decide(event, stored, SUBSCRIBERS, HUB, MANUAL)
        assert decision.verdict is Verdict.ACCEPTED
        assert decision.state is not None
        stored = decision.state
    # mktg saw sales' first version: against it, sales changed only email since.
    mktg = make_event(
        "mktg", {"legacy": 1, "sales": 1, "mktg": 1}, {"email": "m"}, occurred_at=at(3)
    )
    parked = decide(mktg, stored, SUBSCRIBERS, HUB, MANUAL)
    assert parked.verdict is Verdict.PARKED
    assert parked.conflict is not None
    assert parked.state is not None
    assert parked.conflict.undecided == ("email",)
    assert parked.conflict.sides[0].changed == {"email"}
    # legacy saw neither: against it, sales changed phone too, and so did legacy.
    legacy = make_event("legacy", {"legacy": 2}, {"phone": "L2"}, occurred_at=at(4))
    held = decide(legacy, parked.state, SUBSCRIBERS, HUB, MANUAL, parked.conflict)
    assert held.verdict is Verdict.HELD
    assert held.conflict is not None
    assert held.conflict.undecided == ("email", "phone")
    assert held.conflict.sides[0].changed == {"email", "phone"}


def test_a_concurrent_delete_under_delete_wins_resolves_and_unparks() -> None:
    rules = Rules(policy="manual", deletes="delete-wins")
    parked = park(rules)
    delete = make_event("legacy", {"legacy": 2}, {}, op="delete", changed=[], occurred_at=at(3))
    decision = parked.decide(delete)
    assert decision.verdict is Verdict.CONFLICT
    assert decision.state is not None
    assert decision.state.deleted is True
    assert decision.state.parked is None
    assert decision.delivery is not None
    assert decision.delivery.op == "delete"
    assert decision.targets == SUBSCRIBERS
    conflict = decision.conflict
    assert conflict is not None
    assert conflict.id == parked.conflict.id
    assert conflict.status == "resolved"
    assert conflict.undecided == ()
    assert conflict.held == 1
    assert len(conflict.sides) == 3
    assert conflict.settlement is not None
    assert conflict.settlement.by == "policy"
    assert conflict.settlement.deleted is True
    assert conflict.settlement.clock == decision.state.clock


def test_a_concurrent_delete_under_update_wins_stays_parked() -> None:
    parked = park()
    delete = make_event("legacy", {"legacy": 2}, {}, op="delete", changed=[], occurred_at=at(3))
    decision = parked.decide(delete)
    assert decision.verdict is Verdict.HELD
    assert decision.delivery is None
    assert decision.conflict is not None
    assert decision.conflict.undecided == ("email",)
    assert len(decision.conflict.sides) == 3


# -- operator resolution ---------------------------------------------------------------------


def test_take_a_source_for_every_contested_field_and_merge_the_rest() -> None:
    parked = with_legacy_phone(park())
    now = at(60)
    state, resolution, settled = resolve_parked(
        parked.state, parked.conflict, MANUAL, HUB, "operator:ann", take="sales", now=now
    )
    # email from sales; last_name only mktg changed; phone: the held legacy change.
    assert state.fields == {"email": "s", "phone": "2", "last_name": "M"}
    assert state.parked is None
    assert state.deleted is False
    assert (state.source, state.actor) == ("hub", HUB)
    assert state.occurred_at == now
    sides = {v.source: v for v in parked.conflict.sides}
    assert state.field_sources["email"] == "sales"
    assert state.field_sources["last_name"] == "mktg"
    assert state.field_sources["phone"] == "legacy"
    assert state.field_clocks["email"] == sides["sales"].clock
    assert state.field_clocks["last_name"] == sides["mktg"].clock
    assert state.field_clocks["phone"] == sides["legacy"].clock

    clock = state.clock
    assert clock == merge(parked.state.clock, *(v.clock for v in sides.values())).increment(HUB)
    assert clock == VectorClock({"legacy": 2, "sales": 1, "mktg": 2, "hub": 1})
    for version in sides.values():
        assert compare(clock, version.clock) is Order.AFTER
    assert compare(clock, parked.state.clock) is Order.AFTER

    assert resolution.source == "hub"
    assert resolution.actor == HUB
    assert resolution.vclock == clock
    assert resolution.fields == state.fields
    assert resolution.op == "upsert"
    assert resolution.event_id == state.event_id
    assert sorted(resolution.changed) == ["email", "last_name", "phone"]

    assert settled.id == parked.conflict.id
    assert settled.status == "resolved"
    assert settled.undecided == ()
    assert settled.policies == {"email": "operator"}
    assert settled.held == 1
    settlement = settled.settlement
    assert settlement is not None
    assert (settlement.by, settlement.at, settlement.clock) == ("operator:ann", now, clock)
    assert settlement.event_id == resolution.event_id
    assert settlement.deleted is False
    assert settlement.fields == {
        "email": {"policy": "operator", "value": "s", "source": "sales", "losing": [["mktg", "m"]]}
    }


def test_take_the_other_source() -> None:
    parked = park()
    state, _, settled = resolve_parked(
        parked.state, parked.conflict, MANUAL, HUB, "operator:bob", take="mktg"
    )
    assert state.fields == {"email": "m", "phone": "1", "last_name": "M"}
    assert settled.settlement is not None
    assert settled.settlement.fields["email"]["losing"] == [["sales", "s"]]
    assert settled.settlement.fields["email"]["source"] == "mktg"


def two_contested() -> Parked:
    return park(
        sales_fields={"email": "s", "last_name": "S"},
        mktg_fields={"email": "m", "last_name": "M"},
    )


def test_per_field_choices_and_an_operator_value() -> None:
    parked = two_contested()
    assert parked.conflict.undecided == ("email", "last_name")
    choices: dict[str, Choice] = {"email": TakeSide("mktg"), "last_name": SetValue("X")}
    state, resolution, settled = resolve_parked(
        parked.state, parked.conflict, MANUAL, HUB, "operator:ann", choices=choices
    )
    assert state.fields == {"email": "m", "phone": "1", "last_name": "X"}
    # The operator's value: set by the hub, at the resolution.
    assert state.field_sources["last_name"] == OPERATOR
    assert state.field_clocks["last_name"] == state.clock == resolution.vclock
    assert state.field_sources["email"] == "mktg"
    assert state.field_clocks["email"] == parked.mktg.vclock
    assert settled.policies == {"email": "operator", "last_name": "operator"}
    assert settled.settlement is not None
    assert settled.settlement.fields == {
        "email": {"policy": "operator", "value": "m", "source": "mktg", "losing": [["sales", "s"]]},
        "last_name": {
            "policy": "operator",
            "value": "X",
            "source": OPERATOR,
            "losing": [["sales", "S"], ["mktg", "M"]],
        },
    }


def test_choices_override_take_for_their_fields() -> None:
    parked = two_contested()
    state, _, _ = resolve_parked(
        parked.state,
        parked.conflict,
        MANUAL,
        HUB,
        "operator:ann",
        take="sales",
        choices={"last_name": TakeSide("mktg")},
    )
    assert state.fields == {"email": "s", "phone": "1", "last_name": "M"}


def test_resolution_clock_increments_the_hub_entry_it_already_has() -> None:
    parked = park(base_clock={"legacy": 1, "hub": 2})
    state, resolution, _ = resolve_parked(
        parked.state, parked.conflict, MANUAL, HUB, "operator:ann", take="sales"
    )
    assert state.clock == VectorClock({"legacy": 1, "hub": 3, "sales": 1, "mktg": 2})
    assert resolution.vclock == state.clock
    # A new epoch of the hub (after a restore from backup) gets its own entry.
    state, _, _ = resolve_parked(
        parked.state, parked.conflict, MANUAL, "hub@2", "operator:ann", take="sales"
    )
    assert state.clock == VectorClock({"legacy": 1, "hub": 2, "hub@2": 1, "sales": 1, "mktg": 2})


def test_after_resolution_the_losing_source_edits_again_and_is_accepted() -> None:
    parked = with_legacy_phone(park())
    state, resolution, _ = resolve_parked(
        parked.state, parked.conflict, MANUAL, HUB, "operator:ann", take="sales"
    )
    # mktg applied the resolution, then a user changed email there again.
    clock = resolution.vclock.increment("mktg").to_dict()
    edit = make_event("mktg", clock, {"email": "m3", "last_name": "M"}, changed=["email"])
    decision = decide(edit, state, SUBSCRIBERS, HUB, MANUAL)
    assert decision.verdict is Verdict.ACCEPTED
    assert decision.state is not None
    assert decision.state.fields == {"email": "m3", "phone": "2", "last_name": "M"}
    assert decision.targets == ("legacy", "sales")
    # Late copies of the sides that were settled are stale now.
    for old in (parked.sales, parked.mktg):
        assert decide(again(old), state, SUBSCRIBERS, HUB, MANUAL).verdict is Verdict.STALE


def test_after_an_operator_value_a_descending_edit_is_accepted() -> None:
    parked = two_contested()
    state, resolution, _ = resolve_parked(
        parked.state,
        parked.conflict,
        MANUAL,
        HUB,
        "ann",
        choices={"email": TakeSide("sales"), "last_name": SetValue("X")},
    )
    clock = resolution.vclock.increment("sales").to_dict()
    edit = make_event("sales", clock, {"email": "s", "last_name": "S2"}, changed=["last_name"])
    decision = decide(edit, state, SUBSCRIBERS, HUB, MANUAL)
    assert decision.verdict is Verdict.ACCEPTED
    assert decision.state is not None
    assert decision.state.fields["last_name"] == "S2"


def refused(stored: RecordState, conflict: Conflict, message: str, **kwargs: Any) -> None:
    """``resolve_parked`` refuses with exactly ``message`` and changes nothing."""
    stored_before, conflict_before = copy.deepcopy(stored), copy.deepcopy(conflict)
    with pytest.raises(ValueError) as caught:
        resolve_parked(stored, conflict, MANUAL, HUB, "operator:ann", **kwargs)
    assert str(caught.value) == message
    assert "\n" not in message
    assert stored == stored_before
    assert conflict == conflict_before


def test_take_of_an_unknown_source_is_refused() -> None:
    parked = park()
    cid = parked.conflict.id
    message = f"no side of conflict {cid} comes from 'erp' (sides: mktg, sales)"
    refused(parked.state, parked.conflict, message, take="erp")
    refused(parked.state, parked.conflict, message, choices={"email": TakeSide("erp")})


def test_a_choice_for_a_field_not_contested_is_refused() -> None:
    parked = park()
    cid = parked.conflict.id
    message = f"field 'phone' is not contested in conflict {cid} (contested: email)"
    refused(parked.state, parked.conflict, message, choices={"phone": SetValue("x")})
    refused(parked.state, parked.conflict, message, take="sales", choices={"phone": SetValue("x")})


def test_leaving_a_field_undecided_is_refused() -> None:
    parked = with_legacy_phone(two_contested())
    message = "still undecided: last_name; add --field NAME=SOURCE or --value NAME=VALUE for each"
    refused(parked.state, parked.conflict, message, choices={"email": TakeSide("mktg")})
    both = (
        "still undecided: email, last_name; add --field NAME=SOURCE or --value NAME=VALUE for each"
    )
    refused(parked.state, parked.conflict, both, choices={})
    # legacy holds neither contested field: taking it decides nothing.
    refused(parked.state, parked.conflict, both, take="legacy")


def test_taking_a_side_that_holds_no_value_of_the_field_is_refused() -> None:
    parked = with_legacy_phone(park())
    message = "legacy has no edit of email in play in this conflict"
    refused(parked.state, parked.conflict, message, choices={"email": TakeSide("legacy")})


def test_resolving_twice_is_refused() -> None:
    parked = park()
    state, _, settled = resolve_parked(
        parked.state, parked.conflict, MANUAL, HUB, "operator:ann", take="sales"
    )
    message = f"conflict {settled.id} was already resolved (operator:ann)"
    refused(parked.state, settled, message, take="mktg")
    refused(state, settled, message, take="mktg")


def test_resolving_a_record_not_parked_in_the_conflict_is_refused() -> None:
    parked = park()
    message = f"record {RECORD_ID} is not parked in conflict {parked.conflict.id}"
    refused(parked.before, parked.conflict, message, take="sales")
    elsewhere = replace(parked.state, parked="c-00000000")
    refused(elsewhere, parked.conflict, message, take="sales")


# -- documents and views --------------------------------------------------------------------


def round_trip(conflict: Conflict) -> Conflict:
    """Through msgpack as the state store keeps it (router/state.py)."""
    raw = msgpack.packb(conflict.to_doc(), datetime=True, use_bin_type=True)
    doc = msgpack.unpackb(raw, raw=False, timestamp=3)
    return Conflict.from_doc(conflict.id, conflict.record_id, conflict.entity, doc)


def test_parked_conflict_round_trips() -> None:
    parked = with_legacy_phone(park())
    conflict = parked.conflict
    assert conflict.held == 1
    back = round_trip(conflict)
    assert back == conflict
    assert back.opened_at.tzinfo is not None
    assert all(isinstance(v.clock, VectorClock) for v in back.sides)


def test_settled_conflict_round_trips() -> None:
    parked = with_legacy_phone(two_contested())
    _, _, settled = resolve_parked(
        parked.state,
        parked.conflict,
        MANUAL,
        HUB,
        "operator:ann",
        choices={"email": TakeSide("mktg"), "last_name": SetValue(None)},
    )
    back = round_trip(settled)
    assert back == settled
    assert back.settlement is not None
    assert back.settlement.fields["last_name"]["value"] is None
    assert back.status == "resolved"


def test_summary_of_a_parked_and_a_settled_conflict() -> None:
    parked = with_legacy_phone(park())
    conflict = parked.conflict
    now = conflict.opened_at + timedelta(seconds=90)
    assert summary(conflict, now) == {
        "id": conflict.id,
        "record_id": RECORD_ID,
        "entity": "contact",
        "status": "open",
        "sources": ["legacy", "mktg", "sales"],
        "sides": ["sales", "mktg", "legacy"],
        "fields": ["email"],
        "undecided": ["email"],
        "opened_at": conflict.opened_at.isoformat(),
        "age_seconds": 90.0,
        "held": 1,
        "resolved_at": None,
        "resolved_by": None,
    }
    _, _, settled = resolve_parked(
        parked.state, conflict, MANUAL, HUB, "operator:ann", take="mktg", now=now
    )
    view = summary(settled, now)
    assert view["status"] == "resolved"
    assert view["undecided"] == []
    assert view["resolved_at"] == now.isoformat()
    assert view["resolved_by"] == "operator:ann"


def test_detail_shows_every_field_of_every_side() -> None:
    parked = with_legacy_phone(park())
    conflict = parked.conflict
    now = conflict.opened_at + timedelta(seconds=5)
    view = detail(conflict, now)
    assert view["id"] == conflict.id
    assert view["settlement"] is None
    # Compare the keys this test is about (the view may grow more).
    keys = ("name", "base", "values", "changed_by", "policy", "undecided")
    assert [{k: f[k] for k in keys} for f in view["field_values"]] == [
        {
            "name": "email",
            "base": "s",
            "values": {"sales": "s", "mktg": "m"},
            "changed_by": ["sales", "mktg"],
            "policy": "manual",
            "undecided": True,
        },
        {
            "name": "last_name",
            "base": "L",
            "values": {"sales": "L", "mktg": "M"},
            "changed_by": ["mktg"],
            "policy": "merge",
            "undecided": False,
        },
        {
            "name": "phone",
            "base": "1",
            "values": {"sales": "1", "legacy": "2"},
            "changed_by": ["legacy"],
            "policy": "merge",
            "undecided": False,
        },
    ]
    sides = view["sides"]
    assert [s["label"] for s in sides] == ["sales", "mktg", "legacy"]
    assert sides[1] == {
        "label": "mktg",
        "source": "mktg",
        "actor": "mktg",
        "event_id": parked.mktg.event_id,
        "clock": {"legacy": 1, "mktg": 2},
        "occurred_at": at(2).isoformat(),
        "deleted": False,
        "changed": ["email", "last_name"],
    }

    _, _, settled = resolve_parked(
        parked.state, conflict, MANUAL, HUB, "operator:ann", take="sales", now=now
    )
    view = detail(settled, now)
    settlement = view["settlement"]
    assert settlement["by"] == "operator:ann"
    assert settlement["at"] == now.isoformat()
    assert settlement["fields"]["email"]["losing"] == [["mktg", "m"]]
    assert view["field_values"][0]["policy"] == "operator"
    assert view["field_values"][0]["undecided"] is False


def test_two_sides_from_one_source_are_labelled_by_actor() -> None:
    parked = park()
    # sales came back as a new epoch (it lost its state) and edited email again.
    epoch = make_event("sales@2", {"legacy": 1, "sales@2": 1}, {"email": "s2"}, occurred_at=at(4))
    decision = parked.decide(epoch)
    assert decision.verdict is Verdict.HELD
    conflict = decision.conflict
    assert conflict is not None
    assert len(conflict.sides) == 3
    assert conflict.sources == ["mktg", "sales"]
    now = conflict.opened_at
    view = summary(conflict, now)
    assert view["sides"] == ["sales", "mktg", "sales@2"]
    assert view["sources"] == ["mktg", "sales"]
    view = detail(conflict, now)
    assert [s["label"] for s in view["sides"]] == ["sales", "mktg", "sales@2"]
    email = view["field_values"][0]
    assert email["name"] == "email"
    assert email["values"] == {"sales": "s", "mktg": "m", "sales@2": "s2"}
    assert email["changed_by"] == ["sales", "mktg", "sales@2"]
    # Taking "sales" takes the latest of its sides.
    assert decision.state is not None
    state, _, _ = resolve_parked(decision.state, conflict, MANUAL, HUB, "ann", take="sales")
    assert state.fields["email"] == "s2"


# -- an event whose parent the router never saw: the ambiguous field -------------------


def _jumped(rules: Rules) -> Decision:
    """legacy@2 set phone; sales edits phone concurrently (accepted); legacy@4 arrives
    before legacy@3, carrying a phone that differs from the stored one and email in its
    changed list: did legacy@3 edit phone, or does legacy@4 carry an older value?"""
    stored = make_state(
        {"legacy": 2, "sales": 1}, {"email": "a", "phone": "sales-phone"}, field_sources="legacy"
    )
    stored = replace(
        stored,
        field_clocks={
            "email": VectorClock({"legacy": 2}),
            "phone": VectorClock({"legacy": 2, "sales": 1}),
        },
        field_sources={**stored.field_sources, "phone": "sales"},
    )
    event = make_event(
        "legacy", {"legacy": 4}, {"email": "b", "phone": "legacy-phone"}, changed=["email"]
    )
    return decide(event, stored, SUBSCRIBERS, HUB, rules)


def test_ambiguous_field_goes_to_an_operator_under_manual() -> None:
    decision = _jumped(MANUAL)
    assert decision.verdict is Verdict.PARKED
    assert decision.conflict is not None
    assert decision.conflict.undecided == ("phone",)


def test_ambiguous_field_goes_to_a_higher_ranked_event_source_under_priority() -> None:
    decision = _jumped(Rules(policy="priority", priority=("legacy", "sales")))
    assert decision.state is not None
    assert decision.state.fields["phone"] == "legacy-phone"
    lower = _jumped(Rules(policy="priority", priority=("sales", "legacy")))
    assert lower.state is not None
    assert lower.state.fields["phone"] == "sales-phone"


def test_ambiguous_field_stays_with_the_stored_edit_under_lww() -> None:
    decision = _jumped(Rules())
    assert decision.state is not None
    assert decision.state.fields == {"email": "b", "phone": "sales-phone"}


def test_a_value_an_event_only_carries_is_credited_to_no_one() -> None:
    """A field the record never had, carried but not changed by the event: its author is
    unknown, so neither --take of the carrier nor priority treats it as the carrier's."""
    stored = make_state({"legacy": 1, "sales": 1}, {"email": "a"}, field_sources="legacy")
    event = make_event(
        "mktg", {"legacy": 1, "mktg": 1}, {"email": "m", "fax": "from-elsewhere"}, changed=["email"]
    )
    decision = decide(event, stored, SUBSCRIBERS, HUB, Rules())
    assert decision.state is not None
    assert decision.state.fields["fax"] == "from-elsewhere"
    assert decision.state.field_sources["fax"] == ""
    assert decision.state.field_sources["email"] == "mktg"


# -- which side touches a field: decided from the provenance of the values (sides_of) ------


def touching(versions: list[Version], base: dict[str, Scalar], name: str) -> list[str]:
    return [s.source for s in sides_of(versions, base) if s.touched(name)]


def test_an_edit_another_side_has_seen_and_replaced_is_no_contest() -> None:
    """sales's phone was set at {legacy:2}, which mktg's side has seen before setting its
    own: one line of history, whatever sales's ``changed`` set claims (it was widened
    relative to an older base when mktg joined)."""
    sales = make_version(
        "sales", {"legacy": 2, "sales": 1}, {"phone": "p1"}, field_clocks={"phone": {"legacy": 2}}
    )
    mktg = make_version("mktg", {"legacy": 2, "mktg": 1}, {"phone": "p2"})
    assert touching([sales, mktg], {"phone": "p0"}, "phone") == ["mktg"]


def carried_and_concurrent() -> tuple[Version, Version]:
    """legacy's side carries, unchanged, sales's phone edit nobody else has seen (its
    ``changed`` set does not list it: the edit came with a side it superseded); mktg
    edits phone concurrently."""
    legacy = make_version(
        "legacy",
        {"legacy": 3, "sales": 1},
        {"phone": "p1"},
        changed=set(),
        field_clocks={"phone": {"sales": 1}},
    )
    legacy = replace(legacy, sources={"phone": "sales"})
    return legacy, make_version("mktg", {"legacy": 1, "mktg": 1}, {"phone": "p2"})


def test_a_value_a_side_only_carries_is_contested_when_nobody_replaced_it() -> None:
    legacy, mktg = carried_and_concurrent()
    assert touching([legacy, mktg], {"phone": "p0"}, "phone") == ["legacy", "mktg"]


def test_a_side_that_only_inherits_a_field_has_not_replaced_values_of_it() -> None:
    """crm ``mktg`` maps no phone: its side holds phone only from the side it superseded
    (seen at {legacy:1}). Its own clock has seen sales's edit, but it never held that
    value, so it did not replace it: the values contest."""
    mktg = make_version(
        "mktg",
        {"legacy": 1, "sales": 1, "mktg": 2},
        {"phone": "p1", "email": "m"},
        changed={"email"},
        field_clocks={"phone": {"legacy": 1}},
        field_seen={"phone": {"legacy": 1}},
    )
    sales = make_version("sales", {"sales": 1}, {"phone": "p2"})
    assert touching([mktg, sales], {"phone": "p0"}, "phone") == ["mktg", "sales"]
    blind = replace(mktg, field_seen={})
    assert touching([blind, sales], {"phone": "p0"}, "phone") == ["mktg"]


def test_two_sides_holding_the_same_new_value_are_no_contest() -> None:
    a = make_version("sales", {"sales": 1}, {"email": "same"})
    b = make_version("mktg", {"mktg": 1}, {"email": "same"})
    assert touching([a, b], {"email": "old"}, "email") == ["sales", "mktg"]
    outcome = resolve(sides_of([a, b], {"email": "old"}), {"email": "old"}, MANUAL)
    assert outcome.fields == {"email": "same"}
    assert outcome.undecided == ()
    assert outcome.contests == {}
    # Credited to the best-ranked of its authors, whatever the order of the sides.
    ranked = Rules(policy="manual", priority=("mktg", "sales"))
    for order in ([a, b], [b, a]):
        kept = resolve(sides_of(order, {"email": "old"}), {"email": "old"}, ranked)
        assert order[kept.taken["email"] or 0].source == "mktg"


def test_the_same_value_set_again_is_kept_as_the_later_edit() -> None:
    """mktg sets phone to the value it already had: an edit all the same, so the
    resolution records mktg as its author (priority ranks by it later)."""
    stored = make_version("legacy", {"legacy": 1}, {"phone": "p"}, changed=set())
    mktg = make_version("mktg", {"legacy": 1, "mktg": 1}, {"phone": "p"})
    assert touching([stored, mktg], {"phone": "p"}, "phone") == ["mktg"]
    assert touching([stored, replace(mktg, changed=frozenset())], {"phone": "p"}, "phone") == []


def test_show_names_the_sides_whose_edits_are_in_play() -> None:
    """``conflicts show`` asks the resolver which sides' values compete: a side carrying
    a concurrent edit unchanged is listed, with the edit's author."""
    legacy, mktg = carried_and_concurrent()
    conflict = Conflict(
        id="c-00000001",
        record_id=RECORD_ID,
        entity="contact",
        opened_at=T0,
        sides=(legacy, mktg),
        base={"phone": "p0"},
        policies={"phone": "manual"},
        undecided=("phone",),
    )
    (phone,) = detail(conflict, T0, sides_of(conflict.sides, conflict.base))["field_values"]
    assert phone["changed_by"] == ["legacy", "mktg"]
    assert phone["set_by"] == {"legacy": "sales", "mktg": "mktg"}
    (raw,) = detail(conflict, T0)["field_values"]
    assert raw["changed_by"] == ["mktg"]


def test_a_none_for_a_field_nobody_set_is_no_edit_in_a_join() -> None:
    """crm0 maps last_name, which the record never had: its row holds None. Its edit of
    email joins the parked conflict (superseding the stored side); that None is nobody's
    edit and must not contest crm1's real last_name (found by the simulation)."""
    stored = make_state({"crm3": 1}, {"email": "e3", "first_name": "f3"}, field_sources="legacy")
    crm2 = make_event("crm2", {"crm3": 1, "crm2": 1}, {"email": "e2"})
    accepted = decide(crm2, stored, SUBSCRIBERS, HUB, MANUAL)
    assert accepted.state is not None
    crm1 = make_event("crm1", {"crm3": 1, "crm1": 1}, {"email": "e1", "last_name": "L1"})
    parked = decide(crm1, accepted.state, SUBSCRIBERS, HUB, MANUAL)
    assert parked.verdict is Verdict.PARKED
    assert parked.state is not None and parked.conflict is not None
    crm0 = make_event(
        "crm0",
        {"crm3": 1, "crm2": 1, "crm0": 1},
        {"email": "e0", "first_name": "f3", "last_name": None},
        changed=["email"],
    )
    held = decide(crm0, parked.state, SUBSCRIBERS, HUB, MANUAL, parked.conflict)
    assert held.verdict is Verdict.HELD
    assert held.conflict is not None
    assert held.conflict.undecided == ("email",)
    assert "last_name" not in held.conflict.policies


def test_take_never_gives_a_value_another_side_has_replaced() -> None:
    """crm0 joins with a phone edit and still carries the email crm1 had replaced: that
    email is not crm0's edit to give. ``--take crm0`` leaves email undecided and says so;
    ``--field email=crm0`` is refused; nothing changes either way."""
    stored = make_state({"crm2": 1}, {"email": "e8", "phone": "p"}, field_sources="legacy")
    crm1 = make_event("crm1", {"crm2": 1, "crm1": 1}, {"email": "e20"}, changed=["email"])
    accepted = decide(crm1, stored, SUBSCRIBERS, HUB, MANUAL)
    assert accepted.state is not None
    crm2 = make_event("crm2", {"crm2": 2}, {"email": "e22"}, changed=["email"])
    parked = decide(crm2, accepted.state, SUBSCRIBERS, HUB, MANUAL)
    assert parked.verdict is Verdict.PARKED
    assert parked.state is not None and parked.conflict is not None
    crm0 = make_event(
        "crm0", {"crm2": 1, "crm0": 1}, {"email": "e8", "phone": "p0"}, changed=["phone"]
    )
    held = decide(crm0, parked.state, SUBSCRIBERS, HUB, MANUAL, parked.conflict)
    assert held.verdict is Verdict.HELD
    assert held.state is not None and held.conflict is not None
    assert held.conflict.undecided == ("email",)
    undecided = "still undecided: email; add --field NAME=SOURCE or --value NAME=VALUE for each"
    refused(held.state, held.conflict, undecided, take="crm0")
    message = "crm0 has no edit of email in play in this conflict"
    refused(held.state, held.conflict, message, choices={"email": TakeSide("crm0")})
    state, _, _ = resolve_parked(
        held.state,
        held.conflict,
        MANUAL,
        HUB,
        "operator:ann",
        take="crm0",
        choices={"email": TakeSide("crm2")},
    )
    assert state.fields == {"email": "e22", "phone": "p0"}
