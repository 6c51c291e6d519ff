"""Convergence simulation (issue 3, item 3): random schedules through the real router
decision (``router.decide.decide``, ``resolve_parked``) and the real adapter rules
(``adapters.capture``, ``adapters.rules``), with concurrent edits, deletes, user edits
racing deliveries, unmapped-column edits, clock skew, reordered and duplicated messages,
and every conflict policy: lww, priority (a random order of the CRMs), field-merge
(fallback lww or priority), manual, field-merge with one field manual; under both delete
rules.
Manual contests park; an operator resolves them at random moments (``--take`` a side,
or per-field choices and values) and, at the end of a schedule, resolves whatever is
still parked.

The model lives in ``tests/unit/convergence_model.py``. A schedule is a list of steps
``(kind, crm, pick)``; hypothesis shrinks a failing one and the failure message carries
the readable trace. CI runs 1,500 derandomized schedules per property (500 for the
legacy mode without ``field_versions``; about a minute for the file);
``HYPOTHESIS_PROFILE=thorough`` runs 30,000 random ones (10,000) and shrinks failures.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from router.events import Scalar
from router.policies import Rules, TakeSide
from tests.unit.convergence_model import MAPPINGS, ToRouter, World

settings.register_profile(
    "convergence-ci",
    max_examples=1500,
    deadline=None,
    derandomize=True,
    # No shrinking in CI: a failure reports its first schedule (with its trace) at once;
    # the thorough profile shrinks.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=30_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"
PROFILE = settings.get_profile("thorough" if THOROUGH else "convergence-ci")

T = TypeVar("T", bound=Callable[..., None])


def budget(test: T) -> T:
    """The thorough profile runs for many minutes: no per-test timeout (pyproject's 180 s
    is for CI) then."""
    return pytest.mark.timeout(0)(test) if THOROUGH else test


# kind: 0 create, 1 edit, 2 delete, 3 unmapped-column edit, 4 capture one row,
# 5 deliver one in-flight message (any of them: reordering), 6 duplicate one in-flight
# message (redelivery), 7 capture everything, 8 an operator resolves a parked conflict
# (nothing when none is). Weighted towards edits and deliveries.
KINDS = (0, 1, 1, 1, 2, 3, 4, 4, 5, 5, 5, 5, 5, 6, 7, 8, 8)

NAMES = tuple(name for name, _ in MAPPINGS)
FIELDS = sorted(set().union(*(mapped for _, mapped in MAPPINGS)))


POLICY_KINDS = (
    "lww",
    "priority",
    "merge-lww",
    "merge-priority",
    "manual",
    "manual",
    "merge-manual-field",
    "merge-manual-field",
)


@st.composite
def rules(draw: st.DrawFn) -> Rules:
    """One entity's conflict configuration: every policy, both delete rules; priority
    lists a random order of the CRMs (sometimes not all: the rest rank last, tied)."""
    deletes = draw(st.sampled_from(["update-wins", "delete-wins"]))
    order = draw(st.permutations(NAMES))
    priority = tuple(order[: draw(st.integers(1, len(order)))])
    # manual twice as likely: parking, held events and operators have the most states
    kind = draw(st.sampled_from(POLICY_KINDS))
    if kind in ("lww", "priority", "manual"):
        return Rules(policy=kind, priority=priority, deletes=deletes)  # type: ignore[arg-type]
    fallback = (
        "priority" if kind == "merge-priority" else draw(st.sampled_from(["lww", "priority"]))
    )
    fields = {draw(st.sampled_from(FIELDS)): "manual"} if kind == "merge-manual-field" else {}
    return Rules(
        policy="field-merge",
        fallback=fallback,  # type: ignore[arg-type]
        priority=priority,
        deletes=deletes,  # type: ignore[arg-type]
        fields=fields,  # type: ignore[arg-type]
    )


PICKS = 1001  # a step's third number: which row, message or field (taken modulo)


def step(code: int) -> tuple[int, int, int]:
    """One drawn integer as a step ``(kind, crm, pick)``: one draw per step instead of
    three keeps hypothesis' generation, half the CI budget before, off the clock.
    Shrinking towards 0 shrinks towards creates by crm0 with pick 0."""
    kind, rest = divmod(code, 5 * PICKS)
    crm, pick = divmod(rest, PICKS)
    return KINDS[kind], crm, pick


@st.composite
def schedules(draw: st.DrawFn) -> list[tuple[int, int, int]]:
    n = draw(st.integers(0, 100))  # uniform lengths: st.lists would favour short ones
    codes = draw(st.lists(st.integers(0, len(KINDS) * 5 * PICKS - 1), min_size=n, max_size=n))
    return [step(code) for code in codes]


def run(
    n_crms: int,
    skews: tuple[int, ...],
    rules: Rules,
    seed: int,
    shared: bool,
    schedule: list[tuple[int, int, int]],
    *,
    check_conflicts: bool,
    field_versions: bool = True,
) -> World:
    world = World(
        n_crms=n_crms,
        skews=skews,
        rules=rules,
        check_conflicts=check_conflicts,
        seed=seed,
        field_versions=field_versions,
    )
    world.log(f"rules: {rules}")
    # Each CRM starts with one row, so conflicts happen without waiting for creates;
    # ``shared``: synced everywhere before the schedule, so that every edit lands on a
    # record all CRMs hold (many more conflicts, and parked ones).
    for i in range(n_crms):
        world.step(0, i, 0)
    if shared:
        world.drain()
    for kind, crm, pick in schedule:
        world.step(kind, crm, pick)
    world.finish()
    return world


WORLDS = {
    "n_crms": st.integers(3, 5),
    "skews": st.tuples(*[st.integers(-2, 2)] * 5),
    "rules": rules(),
    "seed": st.integers(0, 2**16),
    "shared": st.booleans(),
    "schedule": schedules(),
}


@budget
@PROFILE
@given(**WORLDS)
def test_random_schedules_converge(
    n_crms: int,
    skews: tuple[int, ...],
    rules: Rules,
    seed: int,
    shared: bool,
    schedule: list[tuple[int, int, int]],
) -> None:
    """Once quiet, with whatever was parked resolved by an operator, every CRM holds the
    router's state (projected on what it maps) and nothing is parked; redeliveries change
    and send nothing; stored clocks only grow (a parked or held event keeps it); every
    update the router took in is covered by the stored clock or is a side of the parked
    conflict; a resolution dominates all its inputs and goes to everyone; nothing is sent
    back to its source; an accepted event never brings back a value the router had
    replaced; only fields the sides hold different values of park (exactly which: the
    lost-edit property); echoes are never published; no stored value is invented; no
    clock is reused."""
    run(n_crms, skews, rules, seed, shared, schedule, check_conflicts=False)


@budget
@PROFILE
@given(**WORLDS)
def test_random_schedules_lose_no_edit(
    n_crms: int,
    skews: tuple[int, ...],
    rules: Rules,
    seed: int,
    shared: bool,
    schedule: list[tuple[int, int, int]],
) -> None:
    """Every resolution keeps the edits it must (the oracle in ``Router._check_outcome``):
    a value in the causal past of another side that maps the field never wins; a value
    only one side wrote survives (field-merge); of values written concurrently, under
    ``priority`` the highest-ranked author's survives, under ``manual`` the operator's
    choice, under ``lww`` any of them. And a field parks exactly when it is contested
    under ``manual``."""
    run(n_crms, skews, rules, seed, shared, schedule, check_conflicts=True)


@budget
@settings(PROFILE, max_examples=PROFILE.max_examples // 3)
@given(**WORLDS)
def test_random_schedules_without_field_versions(
    n_crms: int,
    skews: tuple[int, ...],
    rules: Rules,
    seed: int,
    shared: bool,
    schedule: list[tuple[int, int, int]],
) -> None:
    """Adapters of an older version send no ``field_versions``: the router bounds the
    provenance of what their events carry (``router.provenance._bounded_changes``) and
    everything still converges and holds, with the lost-edit oracle on, except for the
    fields of records the router could not attribute (``Router._misattributed``, this
    mode only). A third of the budget: the rule is the one of before this change."""
    run(
        n_crms,
        skews,
        rules,
        seed,
        shared,
        schedule,
        check_conflicts=True,
        field_versions=False,
    )


# -- minimal schedules of the lost edits found by the simulation -----------------------
# Zero clock skew; ``world.tick`` is the wall clock in seconds (occurred_at of an edit).
# Each runs with the conflict oracle off, drains, checks convergence (which holds) and
# then asserts that the user's edit survived (which it does not).


def quiet(world: World) -> None:
    world.drain()
    world.check_converged()


def everywhere(world: World, record_id: str, name: str) -> dict[str, Scalar]:
    out: dict[str, Scalar] = {"router": world.router.records[record_id].fields.get(name)}
    for crm in world.crms:
        if name in crm.mapped:
            out[crm.name] = crm.rows[crm.sid_of(record_id)].fields[name]
    return out


def test_unset_mapped_field_beats_a_real_concurrent_edit() -> None:
    """A CRM that maps a field nobody has set yet publishes it as None; the router stamps
    that None with the event's clock (accept: ``name not in old``), so a later conflict
    counts it as a stored-side change and last-writer-wins can drop a real edit."""
    w = World(n_crms=3, check_conflicts=False)
    crm0, crm1, crm2 = w.crms  # crm1 maps no phone; crm0 and crm2 do
    w.tick = 1
    crm1.user_create()
    w.send(crm1.capture(None))
    w.deliver_to("router", "crm1")  # accepted {crm1:1}; stored has no phone
    w.deliver_to("crm0")
    w.deliver_to("crm2")  # both insert the row with phone=None
    rid = next(iter(w.router.records))
    w.tick = 2
    phone = crm2.user_set(crm2.sid_of(rid), "phone")  # the only real phone edit
    w.tick = 3
    crm0.user_set(crm0.sid_of(rid), "email")
    w.send(crm0.capture(None))
    w.deliver_to("router", "crm0")  # accepted {crm0:1,crm1:1}, carries phone=None
    w.send(crm2.capture(None))
    w.deliver_to("router", "crm2")  # conflict: phone "changed" on both sides, LWW -> None
    quiet(w)
    assert everywhere(w, rid, "phone") == dict.fromkeys(["router", "crm0", "crm2"], phone)


def parent_phone_edit_overtaken(w: World) -> tuple[str, str]:
    """crm0 creates a record; crm2 changes its phone (t=2); crm0, concurrently and later,
    changes the phone (A1, t=3) and then the email (A2, carrying that phone). Both stay in
    flight. Returns (record id, crm0's phone)."""
    crm0, _, crm2 = w.crms
    w.tick = 1
    crm0.user_create()
    w.send(crm0.capture(None))
    w.deliver_to("router", "crm0")  # accepted {crm0:1}
    w.deliver_to("crm2")
    rid = next(iter(w.router.records))
    w.tick = 2
    crm2.user_set(crm2.sid_of(rid), "phone")
    w.send(crm2.capture(None))
    w.deliver_to("router", "crm2")  # accepted {crm0:1,crm2:1}: crm2's phone
    w.tick = 3
    phone = crm0.user_set(crm0.sid_of(rid), "phone")
    w.send(crm0.capture(None))  # A1 = {crm0:2}, changed=[phone]
    w.tick = 4
    crm0.user_set(crm0.sid_of(rid), "email")
    w.send(crm0.capture(None))  # A2 = {crm0:3}, changed=[email], carries crm0's phone
    return rid, phone


def old_value_overtakes_its_parent(w: World) -> tuple[str, str, str]:
    """crm2 creates a record and later edits its phone; crm0 edits email twice, and its
    second event (carrying the phone it received before crm2's edit) reaches the router
    before its first. Returns (record id, crm2's newest phone, crm0's newest email)."""
    crm0, _, crm2 = w.crms
    w.tick = 1
    crm2.user_create()
    w.send(crm2.capture(None))
    w.deliver_to("router", "crm2")  # accepted {crm2:1}
    w.deliver_to("crm0")
    rid = next(iter(w.router.records))
    w.tick = 2
    crm0.user_set(crm0.sid_of(rid), "email")
    w.send(crm0.capture(None))  # X = {crm0:1,crm2:1}, stays in flight
    w.tick = 3
    phone = crm2.user_set(crm2.sid_of(rid), "phone")
    w.send(crm2.capture(None))
    w.deliver_to("router", "crm2")  # accepted {crm2:2}: the new phone
    w.tick = 4
    email = crm0.user_set(crm0.sid_of(rid), "email")
    w.send(crm0.capture(None))  # Y = {crm0:2,crm2:1}, changed=[email], the old phone
    return rid, phone, email


def test_event_whose_parent_is_unseen_reverts_a_newer_stored_edit() -> None:
    """An event reaches the router before its parent (reordering). Its counter jumped, so
    every field whose value differs from the stored one counts as its change — including
    a field the stored side changed and the event only carries an old value of."""
    w = World(n_crms=3, check_conflicts=False)
    rid, phone, email = old_value_overtakes_its_parent(w)
    w.in_flight.reverse()  # Y overtakes X
    w.deliver_to("router", "crm0")  # conflict: phone counted as crm0's change, LWW -> old
    quiet(w)
    assert everywhere(w, rid, "email")["router"] == email
    assert everywhere(w, rid, "phone") == dict.fromkeys(["router", "crm0", "crm2"], phone)


def test_resolution_stamps_kept_fields_with_the_hub_clock() -> None:
    """A resolution gives every field the two sides disagreed on the resolution's clock,
    even a field whose value one side set. That side's next edit of the field, made
    before it received the resolution, then looks concurrent with it and last-writer-wins
    (the resolution carries the other side's later time) reverts it to its own older
    value."""
    w = World(n_crms=3, check_conflicts=False)
    crm0, crm1, _ = w.crms
    w.tick = 1
    crm0.user_create()
    w.send(crm0.capture(None))
    w.deliver_to("router", "crm0")  # accepted {crm0:1}
    w.deliver_to("crm1")
    rid = next(iter(w.router.records))
    sid = crm0.sid_of(rid)
    w.tick = 2
    crm0.user_set(sid, "first_name")
    w.send(crm0.capture(None))  # X = {crm0:2}
    w.tick = 3
    first = crm0.user_set(sid, "first_name")  # not captured yet
    w.tick = 10
    crm1.user_set(crm1.sid_of(rid), "email")
    w.send(crm1.capture(None))
    w.deliver_to("router", "crm1")  # accepted {crm0:1,crm1:1}
    w.deliver_to("router", "crm0")  # X: conflict, resolution keeps X's first_name, t=10
    w.send(crm0.capture(None))  # Y = {crm0:3}, changed=[first_name], t=3
    w.deliver_to("router", "crm0")  # conflict: first_name "both changed", LWW -> X's
    quiet(w)
    assert everywhere(w, rid, "first_name") == dict.fromkeys(["router", "crm0", "crm1"], first)


# -- minimal schedules of failures found once the simulation covered every policy ----------
# They fail against the router as of this writing (router/decide.py): see the docstrings.


def deliver_newest_to_router(world: World, source: str) -> None:
    """Deliver the newest in-flight event of ``source`` to the router (reordering)."""
    world.deliver(
        max(
            i
            for i, m in enumerate(world.in_flight)
            if isinstance(m, ToRouter) and m.event.source == source
        )
    )


def test_a_join_contests_a_field_one_line_changed() -> None:
    """A side that joins a parked conflict widens the stored side's ``changed`` set to
    what the stored side changed since the newcomer's base. A field another side already
    changed knowingly on top of the stored value (its own earlier edit) then counts as
    changed by two sides: it is contested although one line of history changed it. Under
    ``manual`` it waits for an operator; here (field-merge, lww for phone, email manual)
    last-writer-wins picks the stored side's older value and crm0's newest phone is lost
    when the operator resolves email."""
    rules = Rules(policy="field-merge", fallback="lww", fields={"email": "manual"})
    w = World(n_crms=3, skews=(0, 10, 0, 0, 0), rules=rules, check_conflicts=False)
    crm0, crm1, crm2 = w.crms
    w.tick = 1
    crm0.user_create()
    w.send(crm0.capture(None))
    w.deliver_to("router", "crm0")  # accepted {crm0:1}
    w.deliver_to("crm1")
    w.deliver_to("crm2")
    rid = next(iter(w.router.records))
    w.tick = 2
    crm1.user_set(crm1.sid_of(rid), "first_name")
    w.send(crm1.capture(None))  # C = {crm0:1,crm1:1}, occurred at 12 (skew)
    w.tick = 3
    crm2.user_set(crm2.sid_of(rid), "email")
    w.send(crm2.capture(None))  # D = {crm0:1,crm2:1}, changed=[email]
    w.tick = 4
    crm0.user_set(crm0.sid_of(rid), "email")
    crm0.user_set(crm0.sid_of(rid), "phone")
    w.send(crm0.capture(None))  # A = {crm0:2}, changed=[email, phone]
    w.deliver_to("router", "crm0")  # accepted {crm0:2}
    w.deliver_to("router", "crm1")  # conflict, nothing contested: hub H, t=12
    w.deliver_to("router", "crm2")  # parked: email contested (crm0 and crm2), real
    w.tick = 7
    phone = crm0.user_set(crm0.sid_of(rid), "phone")  # crm0 has not applied H yet
    w.send(crm0.capture(None))  # B = {crm0:3}, changed=[phone]
    w.deliver_to("router", "crm0")  # held: phone now "changed" by H's side and B
    conflict = w.router.conflicts[w.router.records[rid].parked or ""]
    assert "phone" not in conflict.policies, "phone is contested; only crm0 changed it"
    w.send(w.router.resolve_with(rid, choices={"email": TakeSide("crm2")}))
    quiet(w)
    assert everywhere(w, rid, "phone") == dict.fromkeys(["router", "crm0", "crm2"], phone)


def test_an_unseen_parents_edit_loses_to_a_lower_priority_edit() -> None:
    """An event whose parent the router never saw carries its parent's edit of phone
    with a value that differs from the stored one, which a lower-ranked CRM changed
    concurrently. ``event_changed`` leaves such a field to the stored side ("a conflict
    either value resolves"), true under lww but not under ``priority`` (the higher-ranked
    crm0's edit is dropped) nor under ``manual`` (nobody is asked)."""
    rules = Rules(policy="priority", priority=("crm0",))
    w = World(n_crms=3, rules=rules, check_conflicts=False)
    rid, phone = parent_phone_edit_overtaken(w)
    deliver_newest_to_router(w, "crm0")  # A2 overtakes A1: conflict, phone kept as crm2's
    quiet(w)  # A1 arrives stale
    assert everywhere(w, rid, "phone") == dict.fromkeys(["router", "crm0", "crm2"], phone)
