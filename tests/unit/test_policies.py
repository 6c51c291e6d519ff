"""Conflict policies (router/policies.py): the pure resolver, and one property through
``decide`` (a three-way conflict under ``priority`` does not depend on arrival order).

Last-writer-wins through ``decide``: tests/unit/test_decide.py. Parking and operator
resolutions: tests/unit/test_parking.py."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.clock import actor_name
from router.decide import Verdict, decide
from router.events import ChangeEvent, Scalar
from router.policies import (
    LWW,
    OPERATOR,
    Choice,
    Outcome,
    Rules,
    SetValue,
    Side,
    TakeSide,
    resolve,
)
from router.provenance import sides_of
from tests.factories import at, make_event, make_state, make_version

SUBSCRIBERS = ("legacy", "mktg", "sales")


def side(
    actor: str,
    minutes: int,
    fields: dict[str, Scalar],
    *,
    changed: set[str] | None = None,
    sources: dict[str, str] | None = None,
    deleted: bool = False,
) -> Side:
    return Side(
        source=actor_name(actor),
        actor=actor,
        occurred_at=at(minutes),
        fields=fields,
        deleted=deleted,
        changed=None if changed is None else frozenset(changed),
        sources=sources or {},
    )


def winner_of(outcome: Outcome, sides: Sequence[Side], name: str) -> Side | None:
    index = outcome.contests[name].winner
    return None if index is None else sides[index]


# -- Rules ---------------------------------------------------------------------------------


def test_for_field_override_then_fallback_then_policy() -> None:
    merge = Rules(policy="field-merge", fallback="priority", fields={"phone": "manual"})
    assert merge.for_field("phone") == "manual"
    assert merge.for_field("email") == "priority"
    plain = Rules(policy="lww", fallback="manual", fields={"email": "priority"})
    assert plain.for_field("email") == "priority"
    assert plain.for_field("phone") == "lww"  # fallback is for field-merge only
    assert Rules(policy="manual").for_field("email") == "manual"


def test_rank_operator_then_listed_in_order_then_unlisted() -> None:
    rules = Rules(policy="priority", priority=("sales", "legacy"))
    assert rules.rank(OPERATOR) == -1
    assert rules.rank("sales") == 0
    assert rules.rank("legacy") == 1
    assert rules.rank("mktg") == rules.rank("erp") == 2
    # Even listed last, the operator stays first.
    assert Rules(policy="priority", priority=("sales", OPERATOR)).rank(OPERATOR) == -1


def test_may_park() -> None:
    assert Rules(policy="manual").may_park
    assert Rules(policy="field-merge", fallback="manual").may_park
    assert Rules(policy="lww", fields={"email": "manual"}).may_park
    assert not Rules(policy="priority", fallback="lww", fields={"email": "lww"}).may_park


# -- lww -----------------------------------------------------------------------------------


def test_lww_contested_field_goes_to_the_latest_edit() -> None:
    sides = [
        side("sales", 5, {"email": "s", "phone": "1"}, changed={"email"}),
        side("mktg", 7, {"email": "m"}),
        side("legacy", 6, {"email": "l"}),
    ]
    outcome = resolve(sides, {"email": "base", "phone": "1"})
    assert outcome.fields == {"email": "m", "phone": "1"}
    assert outcome.deleted is False
    assert outcome.undecided == ()
    contest = outcome.contests["email"]
    assert contest.policy == "lww"
    assert contest.candidates == (0, 1, 2)
    assert contest.winner == 1
    assert outcome.taken == {"email": 1, "phone": None}
    assert sorted(contest.losing) == [("legacy", "l"), ("sales", "s")]
    assert set(outcome.contests) == {"email"}


def test_lww_tie_goes_to_the_greater_actor_name() -> None:
    sides = [side("legacy", 3, {"email": "l"}), side("mktg", 3, {"email": "m"})]
    assert resolve(sides, {}).fields == {"email": "m"}
    assert resolve(sides[::-1], {}).fields == {"email": "m"}


# -- priority ------------------------------------------------------------------------------

PRIORITY = Rules(policy="priority", priority=("sales", "legacy", "mktg"))


def test_priority_beats_a_later_edit() -> None:
    sides = [side("mktg", 9, {"email": "m"}), side("sales", 1, {"email": "s"})]
    outcome = resolve(sides, {"email": "base"}, PRIORITY)
    assert outcome.fields == {"email": "s"}
    assert outcome.contests["email"].policy == "priority"
    assert outcome.contests["email"].losing == (("mktg", "m"),)
    # lww would have taken the other one: the policy, not the timestamps, decided.
    assert resolve(sides, {"email": "base"}).fields == {"email": "m"}


def test_priority_ranks_by_the_source_that_set_the_value() -> None:
    # mktg's side carries a value sales set (it reached mktg through an earlier
    # resolution): it keeps sales' rank and beats legacy, though mktg ranks below legacy.
    from_sales = side("mktg", 1, {"email": "by sales"}, sources={"email": "sales"})
    from_legacy = side("legacy", 2, {"email": "by legacy"})
    outcome = resolve([from_legacy, from_sales], {}, PRIORITY)
    assert outcome.fields == {"email": "by sales"}
    assert outcome.contests["email"].losing == (("legacy", "by legacy"),)

    # And the side from sales carrying mktg's value ranks as mktg.
    by_mktg = side("sales", 3, {"email": "by mktg"}, sources={"email": "mktg"})
    outcome = resolve([by_mktg, from_legacy], {}, PRIORITY)
    assert outcome.fields == {"email": "by legacy"}
    # The losing value is reported under the source that set it.
    assert outcome.contests["email"].losing == (("mktg", "by mktg"),)


def test_priority_setter_is_per_field() -> None:
    a = side("sales", 1, {"email": "a", "phone": "a"}, sources={"phone": "mktg"})
    b = side("legacy", 2, {"email": "b", "phone": "b"})
    outcome = resolve([a, b], {}, PRIORITY)
    assert outcome.fields == {"email": "a", "phone": "b"}


def test_unlisted_sources_rank_after_listed_ones() -> None:
    rules = Rules(policy="priority", priority=("sales", "mktg"))
    sides = [side("erp", 9, {"email": "erp"}), side("mktg", 1, {"email": "mktg"})]
    assert resolve(sides, {}, rules).fields == {"email": "mktg"}
    assert resolve(sides[::-1], {}, rules).fields == {"email": "mktg"}


@pytest.mark.parametrize("order", [0, 1])
def test_equal_rank_goes_to_the_latest_edit(order: int) -> None:
    rules = Rules(policy="priority", priority=("sales",))
    unlisted = [side("erp", 4, {"email": "erp"}), side("crm", 2, {"email": "crm"})]
    epochs = [side("sales", 2, {"email": "old epoch"}), side("sales@2", 4, {"email": "new"})]
    tied = [side("erp", 4, {"email": "erp"}), side("crm", 4, {"email": "crm"})]
    if order:
        unlisted, epochs, tied = unlisted[::-1], epochs[::-1], tied[::-1]
    assert resolve(unlisted, {}, rules).fields == {"email": "erp"}
    assert resolve(epochs, {}, rules).fields == {"email": "new"}
    assert resolve(tied, {}, rules).fields == {"email": "erp"}  # "erp" > "crm"


def test_operator_value_outranks_every_source() -> None:
    rules = Rules(policy="priority", priority=("sales", "legacy"))
    operator = side("legacy", 1, {"email": "by operator"}, sources={"email": OPERATOR})
    sales = side("sales", 9, {"email": "by sales"})
    for sides in ([operator, sales], [sales, operator]):
        outcome = resolve(sides, {}, rules)
        assert outcome.fields == {"email": "by operator"}
        assert outcome.contests["email"].losing == (("sales", "by sales"),)
    # Also when the hub's own resolution side carries it (source "hub").
    hub = side("hub", 0, {"email": "hub value"})
    assert resolve([sales, hub], {}, rules).fields == {"email": "hub value"}


# -- manual, per-field overrides, field-merge --------------------------------------------------


def test_manual_leaves_a_contested_field_undecided_and_merges_the_rest() -> None:
    sides = [
        side("sales", 1, {"email": "s", "phone": "2"}),
        side("mktg", 2, {"email": "m", "last_name": "M"}),
    ]
    base = {"email": "base", "phone": "1", "last_name": "L"}
    outcome = resolve(sides, base, Rules(policy="manual"))
    assert outcome.undecided == ("email",)
    assert outcome.fields == {"email": "base", "phone": "2", "last_name": "M"}
    assert outcome.taken == {"email": None, "phone": 0, "last_name": 1}
    contest = outcome.contests["email"]
    assert contest.policy == "manual"
    assert contest.winner is None
    assert contest.candidates == (0, 1)
    assert contest.losing == ()  # nothing lost yet
    assert outcome.losing == {}


def test_manual_contested_field_missing_from_base_stands_as_none() -> None:
    sides = [side("sales", 1, {"email": "s"}), side("mktg", 2, {"email": "m"})]
    outcome = resolve(sides, {}, Rules(policy="manual"))
    assert outcome.undecided == ("email",)
    assert outcome.fields == {"email": None}


def test_per_field_override_beats_the_entity_policy() -> None:
    rules = Rules(
        policy="lww", priority=("sales",), fields={"email": "priority", "last_name": "manual"}
    )
    sides = [
        side("sales", 1, {"email": "s", "phone": "s", "last_name": "s"}),
        side("mktg", 2, {"email": "m", "phone": "m", "last_name": "m"}),
    ]
    outcome = resolve(sides, {}, rules)
    assert outcome.fields == {"email": "s", "phone": "m", "last_name": None}
    assert outcome.undecided == ("last_name",)
    assert {n: c.policy for n, c in outcome.contests.items()} == {
        "email": "priority",
        "phone": "lww",
        "last_name": "manual",
    }
    # And the other way round: a manual entity with an lww field parks only the others.
    rules = Rules(policy="manual", fields={"phone": "lww"})
    outcome = resolve(sides, {}, rules)
    assert outcome.undecided == ("email", "last_name")
    assert outcome.fields["phone"] == "m"


@pytest.mark.parametrize(
    ("fallback", "email", "undecided"),
    [("lww", "m", ()), ("priority", "s", ()), ("manual", "base", ("email",))],
)
def test_field_merge_uses_the_fallback_for_contested_fields_only(
    fallback: Any, email: str, undecided: tuple[str, ...]
) -> None:
    rules = Rules(policy="field-merge", fallback=fallback, priority=("sales",))
    sides = [
        side(
            "sales", 1, {"email": "s", "phone": "2", "last_name": "L"}, changed={"email", "phone"}
        ),
        side(
            "mktg",
            2,
            {"email": "m", "phone": "1", "last_name": "M"},
            changed={"email", "last_name"},
        ),
    ]
    base = {"email": "base", "phone": "1", "last_name": "L", "first_name": "Ada"}
    outcome = resolve(sides, base, rules)
    assert outcome.fields == {"email": email, "phone": "2", "last_name": "M", "first_name": "Ada"}
    assert outcome.undecided == undecided
    assert set(outcome.contests) == {"email"}
    assert outcome.contests["email"].policy == fallback
    assert outcome.taken["phone"] == 0
    assert outcome.taken["last_name"] == 1
    assert outcome.taken["first_name"] is None


def test_unchanged_carried_values_do_not_compete() -> None:
    # mktg carries an old phone it did not change: sales' edit is the only one.
    sides = [
        side("sales", 1, {"phone": "new"}, changed={"phone"}),
        side("mktg", 9, {"phone": "old", "email": "m"}, changed={"email"}),
    ]
    for rules in (LWW, Rules(policy="manual")):
        outcome = resolve(sides, {"phone": "old"}, rules)
        assert outcome.fields["phone"] == "new"
        assert "phone" not in outcome.contests
        assert "phone" not in outcome.undecided


def test_field_no_side_changed_and_base_lacks_is_taken_from_a_carrier() -> None:
    sides = [side("sales", 1, {"email": "s"}), side("mktg", 2, {"fax": None}, changed=set())]
    outcome = resolve(sides, {}, Rules(policy="manual"))
    assert outcome.fields == {"email": "s", "fax": None}
    assert outcome.taken == {"email": 0, "fax": 1}


# -- deletes -------------------------------------------------------------------------------


def three_with_a_delete() -> list[Side]:
    return [
        side("sales", 1, {"email": "s", "phone": "s"}, changed={"email"}),
        side("legacy", 9, {"email": "l", "last_name": "l"}, deleted=True),
        side("mktg", 2, {"email": "m", "phone": "1"}, changed={"email"}),
    ]


def test_update_wins_keeps_the_record_and_the_delete_does_not_compete() -> None:
    sides = three_with_a_delete()
    outcome = resolve(sides, {"email": "base", "phone": "1"}, Rules(deletes="update-wins"))
    assert outcome.deleted is False
    contest = outcome.contests["email"]
    # The deleted side is the latest edit, yet only the living sides compete.
    assert contest.candidates == (0, 2)
    assert contest.winner == 2
    assert contest.losing == (("sales", "s"),)
    assert outcome.fields["email"] == "m"
    assert outcome.fields["phone"] == "1"
    # A field only the deleted side changed is still its change.
    assert outcome.fields["last_name"] == "l"
    assert outcome.taken["last_name"] == 1


def test_update_wins_with_a_single_live_side_takes_its_values() -> None:
    sides = [
        side("sales", 9, {"email": "s"}, deleted=True),
        side("legacy", 1, {"email": "l"}),
        side("mktg", 8, {"email": "m"}, deleted=True),
    ]
    for rules in (LWW, Rules(policy="manual"), PRIORITY):
        outcome = resolve(sides, {}, rules)
        assert outcome.deleted is False
        assert outcome.fields == {"email": "l"}
        assert outcome.undecided == ()
        assert "email" not in outcome.contests


@pytest.mark.parametrize("policy", ["lww", "priority", "field-merge", "manual"])
def test_delete_wins_deletes_and_never_waits_for_an_operator(policy: Any) -> None:
    rules = Rules(
        policy=policy,
        fallback="manual",
        priority=("sales",),
        deletes="delete-wins",
        fields={"phone": "manual"},
    )
    sides = three_with_a_delete()
    outcome = resolve(sides, {"email": "base", "phone": "1"}, rules)
    assert outcome.deleted is True
    assert outcome.undecided == ()
    # Every side competes; manual fields go to lww.
    contest = outcome.contests["email"]
    assert contest.candidates == (0, 1, 2)
    if rules.for_field("email") == "priority":
        assert outcome.fields["email"] == "s"
    else:
        assert contest.policy == "lww"
        assert outcome.fields["email"] == "l"


@pytest.mark.parametrize("deletes", ["update-wins", "delete-wins"])
def test_every_side_deleted_is_deleted(deletes: Any) -> None:
    sides = [side("sales", 1, {}, deleted=True), side("mktg", 2, {}, deleted=True)]
    assert resolve(sides, {"email": "x"}, Rules(deletes=deletes)).deleted is True


# -- operator choices ----------------------------------------------------------------------

MANUAL = Rules(policy="manual")


def manual_sides() -> list[Side]:
    return [
        side("sales", 1, {"email": "s", "phone": "s"}),
        side("mktg", 2, {"email": "m", "phone": "m"}),
        side("legacy", 3, {"email": "l", "last_name": "L"}),
    ]


def test_take_side_decides_a_manual_field() -> None:
    sides = manual_sides()
    outcome = resolve(sides, {}, MANUAL, {"email": TakeSide("mktg")})
    assert outcome.fields["email"] == "m"
    assert outcome.taken["email"] == 1
    assert outcome.undecided == ("phone",)
    contest = outcome.contests["email"]
    assert contest.policy == "operator"
    assert contest.winner == 1
    assert sorted(contest.losing) == [("legacy", "l"), ("sales", "s")]


def test_take_side_overrides_a_policy_winner() -> None:
    sides = manual_sides()
    outcome = resolve(sides, {}, PRIORITY, {"email": TakeSide("mktg")})
    assert outcome.fields["email"] == "m"
    assert outcome.contests["email"].policy == "operator"
    assert outcome.fields["phone"] == "s"  # the rest by the policy


def test_set_value_decides_with_the_operator_value() -> None:
    sides = manual_sides()
    choices: dict[str, Choice] = {"email": SetValue("op@example.com"), "phone": SetValue("m")}
    outcome = resolve(sides, {"email": "base"}, MANUAL, choices)
    assert outcome.undecided == ()
    assert outcome.fields == {"email": "op@example.com", "phone": "m", "last_name": "L"}
    assert outcome.taken["email"] is None
    assert outcome.taken["phone"] is None
    email, phone = outcome.contests["email"], outcome.contests["phone"]
    assert (email.policy, email.winner) == ("operator", None)
    assert sorted(email.losing) == [("legacy", "l"), ("mktg", "m"), ("sales", "s")]
    # The value mktg had is the one kept: it did not lose.
    assert phone.losing == (("sales", "s"),)
    assert outcome.losing == {"email": list(email.losing), "phone": [("sales", "s")]}


def test_set_value_none_clears_the_field() -> None:
    outcome = resolve(manual_sides(), {"email": "base"}, MANUAL, {"email": SetValue(None)})
    assert "email" not in outcome.undecided
    assert outcome.fields["email"] is None


def test_take_side_of_a_source_without_the_field_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^legacy has no edit of phone in play in this conflict$"):
        resolve(manual_sides(), {}, MANUAL, {"phone": TakeSide("legacy")})
    with pytest.raises(ValueError, match=r"^erp has no edit of email in play in this conflict$"):
        resolve(manual_sides(), {}, MANUAL, {"email": TakeSide("erp")})


def test_take_side_with_two_epochs_of_a_source_takes_the_latest() -> None:
    sides = [
        side("sales", 5, {"email": "old epoch"}),
        side("sales@2", 6, {"email": "new epoch"}),
        side("mktg", 7, {"email": "m"}),
    ]
    outcome = resolve(sides, {}, MANUAL, {"email": TakeSide("sales")})
    assert outcome.fields["email"] == "new epoch"
    assert sorted(outcome.contests["email"].losing) == [("mktg", "m"), ("sales", "old epoch")]


def test_a_choice_for_an_uncontested_field_overrides_nothing() -> None:
    sides = [side("sales", 1, {"email": "s"}), side("mktg", 2, {"phone": "m"})]
    outcome = resolve(sides, {}, MANUAL, {"email": SetValue("x"), "phone": TakeSide("sales")})
    assert outcome.fields == {"email": "s", "phone": "m"}
    assert outcome.contests == {}


def test_losing_lists_exactly_the_values_that_lost() -> None:
    sides = [
        side("sales", 3, {"email": "same"}),
        side("legacy", 1, {"email": "same"}),  # lost as a side, not as a value
        side("mktg", 2, {"email": "other"}),
        side("erp", 4, {"email": "untouched"}, changed=set()),  # did not compete
    ]
    outcome = resolve(sides, {"email": "base"}, PRIORITY)
    assert outcome.fields["email"] == "same"
    assert outcome.contests["email"].candidates == (0, 1, 2)
    assert outcome.contests["email"].losing == (("mktg", "other"),)
    assert outcome.losing == {"email": [("mktg", "other")]}
    # Sides that agree: nothing to decide, nothing lost (under manual: nothing to ask).
    agreeing = [side("sales", 1, {"email": "x"}), side("mktg", 2, {"email": "x"})]
    for rules in (PRIORITY, Rules(policy="manual")):
        outcome = resolve(agreeing, {}, rules)
        assert outcome.fields == {"email": "x"}
        assert outcome.contests == {}
        assert outcome.undecided == ()
        assert outcome.losing == {}


# -- properties of the resolver ----------------------------------------------------------------

NAMES = ["email", "phone", "first_name", "last_name"]
ACTORS = ["sales", "sales@2", "mktg", "legacy", "erp", "hub"]
SETTERS = ["sales", "mktg", "legacy", "erp", OPERATOR]
# No bools and no floats: True == 1 and 1.0 == 1 would make distinct values compare equal.
VALUES = st.one_of(st.none(), st.sampled_from(["x", "y", "z"]), st.integers(0, 2))

rules_strategy = st.builds(
    Rules,
    policy=st.sampled_from(["lww", "priority", "field-merge", "manual"]),
    fallback=st.sampled_from(["lww", "priority", "manual"]),
    priority=st.lists(st.sampled_from(SETTERS), unique=True).map(tuple),
    deletes=st.sampled_from(["update-wins", "delete-wins"]),
    fields=st.dictionaries(st.sampled_from(NAMES), st.sampled_from(["lww", "priority", "manual"])),
)


@st.composite
def conflicts(draw: st.DrawFn, max_sides: int = 4) -> tuple[list[Side], dict[str, Scalar]]:
    """Sides of one conflict and their base.

    A field a side carries but did not change holds an older value: arbitrary where the
    base has the field (the base decides then), the common ancestor's where the base lacks
    it (sides that changed nothing agree on what nobody changed)."""
    base = draw(st.dictionaries(st.sampled_from(NAMES), VALUES))
    ancestor = {name: draw(VALUES) for name in NAMES}
    actors = draw(st.lists(st.sampled_from(ACTORS), min_size=1, max_size=max_sides, unique=True))
    sides = []
    for actor in actors:
        carried = draw(st.sets(st.sampled_from(NAMES)))
        changed = draw(st.none() | st.frozensets(st.sampled_from(NAMES)))
        fields: dict[str, Scalar] = {}
        for name in sorted(carried):
            touched = changed is None or name in changed
            fields[name] = draw(VALUES) if touched or name in base else ancestor[name]
        sources = draw(
            st.dictionaries(st.sampled_from(sorted(carried) or NAMES), st.sampled_from(SETTERS))
        )
        sides.append(
            Side(
                source=actor_name(actor),
                actor=actor,
                occurred_at=at(draw(st.integers(0, 2))),
                fields=fields,
                deleted=draw(st.booleans()),
                changed=changed,
                sources=sources,
            )
        )
    return sides, base


@given(case=conflicts(), rules=rules_strategy)
def test_a_field_one_side_changed_is_taken_from_it_under_every_rule(
    case: tuple[list[Side], dict[str, Scalar]], rules: Rules
) -> None:
    sides, base = case
    outcome = resolve(sides, base, rules)
    names = set(base).union(*(s.fields for s in sides))
    assert set(outcome.fields) == names
    for name in names:
        touching = [i for i, s in enumerate(sides) if s.touched(name)]
        if len(touching) != 1:
            continue
        assert name not in outcome.undecided
        assert name not in outcome.contests
        assert outcome.taken[name] == touching[0]
        assert outcome.fields[name] == sides[touching[0]].fields[name]


def canonical(outcome: Outcome, sides: Sequence[Side]) -> dict[str, Any]:
    """What must not depend on the order of the sides (indexes do)."""

    def actor(index: int | None) -> str | None:
        return None if index is None else sides[index].actor

    return {
        "fields": outcome.fields,
        "deleted": outcome.deleted,
        "undecided": outcome.undecided,
        "contests": {
            name: (
                c.policy,
                actor(c.winner),
                frozenset(actor(i) for i in c.candidates),
                Counter(c.losing),
            )
            for name, c in outcome.contests.items()
        },
    }


order_rules = st.builds(
    Rules,
    policy=st.sampled_from(["lww", "priority", "field-merge"]),
    fallback=st.just("priority"),
    priority=st.permutations(SETTERS).flatmap(
        lambda p: st.integers(0, len(p)).map(lambda n: tuple(p[:n]))
    ),
    deletes=st.sampled_from(["update-wins", "delete-wins"]),
)


@given(case=conflicts(), rules=order_rules, data=st.data())
def test_the_outcome_does_not_depend_on_the_order_of_the_sides(
    case: tuple[list[Side], dict[str, Scalar]], rules: Rules, data: st.DataObject
) -> None:
    sides, base = case
    order = data.draw(st.permutations(range(len(sides))))
    shuffled = [sides[i] for i in order]
    one = canonical(resolve(sides, base, rules), sides)
    other = canonical(resolve(shuffled, base, rules), shuffled)
    assert one == other


@given(case=conflicts(), rules=rules_strategy, data=st.data())
def test_order_independence_holds_for_any_rules_too(
    case: tuple[list[Side], dict[str, Scalar]], rules: Rules, data: st.DataObject
) -> None:
    sides, base = case
    shuffled = data.draw(st.permutations(sides))
    assert canonical(resolve(sides, base, rules), sides) == canonical(
        resolve(shuffled, base, rules), shuffled
    )


# -- three concurrent edits through decide, in every arrival order ------------------------------

STORED_CLOCK = {"legacy": 2, "sales": 1, "mktg": 1}


@st.composite
def edits(draw: st.DrawFn, source: str, base: dict[str, Scalar]) -> ChangeEvent:
    """A full snapshot of the fields ``source`` maps, with some of them changed."""
    mapped = draw(st.sets(st.sampled_from(NAMES), min_size=1))
    changed = draw(st.sets(st.sampled_from(sorted(mapped))))
    fields = {name: draw(VALUES) if name in changed else base[name] for name in sorted(mapped)}
    clock = {**STORED_CLOCK, source: STORED_CLOCK[source] + 1}
    return make_event(
        source, clock, fields, changed=sorted(changed), occurred_at=at(draw(st.integers(0, 3)))
    )


@given(
    data=st.data(),
    base_values=st.lists(VALUES, min_size=len(NAMES), max_size=len(NAMES)),
    priority=st.permutations(["sales", "mktg", "legacy"]).map(tuple),
)
def test_three_way_priority_resolution_does_not_depend_on_arrival_order(
    data: st.DataObject, base_values: list[Scalar], priority: tuple[str, ...]
) -> None:
    base = dict(zip(NAMES, base_values, strict=True))
    stored = make_state(STORED_CLOCK, base, field_sources="legacy")
    rules = Rules(policy="priority", priority=priority)
    events = [data.draw(edits(source, base)) for source in ("sales", "mktg", "legacy")]

    # Expected: each field from the highest-ranked source that changed it.
    expected = dict(base)
    for source in reversed(priority):
        event = next(e for e in events if e.source == source)
        expected.update({name: event.fields[name] for name in event.changed})

    results = {}
    for order in itertools.permutations(events):
        first = decide(order[0], stored, SUBSCRIBERS, "hub", rules)
        assert first.verdict is Verdict.ACCEPTED
        second = decide(order[1], first.state, SUBSCRIBERS, "hub", rules)
        assert second.verdict is Verdict.CONFLICT
        assert second.state is not None
        assert second.state.clock.get("hub") == 1
        third = decide(order[2], second.state, SUBSCRIBERS, "hub", rules)
        assert third.verdict is Verdict.CONFLICT
        assert third.state is not None
        results[tuple(e.source for e in order)] = third.state.fields
    for arrival, fields in results.items():
        assert fields == expected, arrival


def test_a_field_nobody_changed_and_the_base_lacks_does_not_depend_on_side_order() -> None:
    """Two CRMs that newly map a field the router never saw carry different values
    without changing them: the pick must still be the same in every order."""
    early = Side("sales", "sales", at(1), {"fax": "1"}, False, frozenset())
    late = Side("mktg", "mktg", at(2), {"fax": "2"}, False, frozenset())
    assert resolve([early, late], {}).fields == resolve([late, early], {}).fields == {"fax": "2"}


def test_a_living_side_holding_a_deleted_sides_edit_competes_with_it() -> None:
    """update-wins: a delete superseded the side that edited email; the editor's own later
    version still holds that email unchanged. Its edit must contest the other CRM's
    concurrent email edit (here: park under manual), not lose to it silently. Which
    sides hold a live edit is decided from provenance (``sides_of``), not from the
    sides' ``changed`` sets: the holder did not change email in its last version."""
    # The value crm0 wrote at {crm0:1}; crm1's own edit defaults to its clock.
    crm0_edit = {"email": "crm0-edit"}
    written = {"email": {"crm0": 1}}
    deleted = make_version(
        "crm3",
        {"crm0": 1, "crm3": 1},
        crm0_edit,
        event_id="crm3",
        occurred_at=at(5),
        changed={"email"},
        field_clocks=written,
        deleted=True,
    )
    holder = make_version(
        "crm0",
        {"crm0": 2},
        crm0_edit,
        event_id="crm0",
        occurred_at=at(4),
        changed={"last_name"},
        field_clocks=written,
    )
    other = make_version(
        "crm1",
        {"crm1": 1},
        {"email": "crm1-edit"},
        event_id="crm1",
        occurred_at=at(3),
        changed={"email"},
    )
    sides = sides_of([deleted, holder, other], {"email": "old"})
    outcome = resolve(sides, {"email": "old"}, Rules(policy="manual"))
    assert outcome.deleted is False
    assert outcome.undecided == ("email",)
    lww = resolve(sides, {"email": "old"}, Rules())
    assert lww.fields["email"] == "crm0-edit"  # the later of the two living edits
