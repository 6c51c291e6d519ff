"""Convergence simulation (issue 3, item 3): random schedules through the real router
decision (``router.decide.decide``) and the real adapter rules (``adapters.rules``),
with concurrent edits, deletes, user edits racing deliveries, unmapped-column edits,
clock skew, and reordered and duplicated messages.

The model lives in ``tests/unit/convergence_model.py``. A schedule is a list of steps
``(kind, crm, pick)``; hypothesis shrinks a failing one and the failure message carries
the readable trace. CI runs 1,500 derandomized schedules per property (a few seconds);
``HYPOTHESIS_PROFILE=thorough`` runs 30,000 random ones and shrinks failures.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from router.events import Scalar
from tests.unit.convergence_model import World

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
PROFILE = settings.get_profile(
    "thorough" if os.environ.get("HYPOTHESIS_PROFILE") == "thorough" else "convergence-ci"
)

# kind: 0 create, 1 edit, 2 delete, 3 unmapped-column edit, 4 capture one row,
# 5 deliver one in-flight message (any of them: reordering), 6 duplicate one in-flight
# message (redelivery), 7 capture everything. Weighted towards edits and deliveries.
KINDS = (0, 1, 1, 1, 2, 3, 4, 4, 5, 5, 5, 5, 5, 6, 7)


@st.composite
def schedules(draw: st.DrawFn) -> list[tuple[int, int, int]]:
    n = draw(st.integers(0, 70))
    return [
        (
            KINDS[draw(st.integers(0, len(KINDS) - 1))],
            draw(st.integers(0, 4)),
            draw(st.integers(0, 1000)),
        )
        for _ in range(n)
    ]


def run(
    n_crms: int,
    skews: tuple[int, ...],
    deletes: str,
    schedule: list[tuple[int, int, int]],
    *,
    check_conflicts: bool,
) -> World:
    world = World(
        n_crms=n_crms,
        skews=skews,
        deletes=deletes,  # type: ignore[arg-type]
        check_conflicts=check_conflicts,
    )
    # Each CRM starts with one row, so conflicts happen without waiting for creates.
    for i in range(n_crms):
        world.step(0, i, 0)
    for kind, crm, pick in schedule:
        world.step(kind, crm, pick)
    world.drain()
    world.check_converged()
    return world


WORLDS = {
    "n_crms": st.integers(3, 5),
    "skews": st.tuples(*[st.integers(-2, 2)] * 5),
    "deletes": st.sampled_from(["update-wins", "delete-wins"]),
    "schedule": schedules(),
}


@PROFILE
@given(**WORLDS)
def test_random_schedules_converge(
    n_crms: int, skews: tuple[int, ...], deletes: str, schedule: list[tuple[int, int, int]]
) -> None:
    """Once quiet every CRM holds the router's state (projected on what it maps);
    redeliveries change and send nothing; stored clocks only grow; a resolution dominates
    both inputs and goes to everyone; an accepted event is never sent back to its source
    and never brings back a value the router had replaced; no clock is reused."""
    run(n_crms, skews, deletes, schedule, check_conflicts=False)


@PROFILE
@given(**WORLDS)
def test_random_schedules_lose_no_edit(
    n_crms: int, skews: tuple[int, ...], deletes: str, schedule: list[tuple[int, int, int]]
) -> None:
    """Every conflict keeps the value of the side that really changed a field: when one
    side's value is in the other side's causal past, the other side's value wins (only
    fields both sides changed are left to last-writer-wins)."""
    run(n_crms, skews, deletes, schedule, check_conflicts=True)


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


def test_event_whose_parent_is_unseen_reverts_a_newer_stored_edit() -> None:
    """An event reaches the router before its parent (reordering). Its counter jumped, so
    every field whose value differs from the stored one counts as its change — including
    a field the stored side changed and the event only carries an old value of."""
    w = World(n_crms=3, check_conflicts=False)
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
    w.send(crm0.capture(None))  # Y = {crm0:2,crm2:1}, changed=[email], old phone
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
