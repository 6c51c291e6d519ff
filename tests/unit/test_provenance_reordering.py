"""Exact attribution under reordering (issue 10, DESIGN "Exact attribution under
reordering"): hand-written schedules of the convergence model in which an event reaches
the router before its parent. Without ``field_versions`` the router cannot tell an old
value the event only carries from its unseen parent's edit, and these lost an edit; with
them the model's adapters say which of their edits set every value, and nothing is lost.

Zero clock skew; ``world.tick`` is the wall clock in seconds (occurred_at of an edit).
"""

from __future__ import annotations

import pytest

from router.policies import Rules
from tests.unit.convergence_model import ToRouter, World
from tests.unit.test_convergence import (
    deliver_newest_to_router,
    everywhere,
    old_value_overtakes_its_parent,
    parent_phone_edit_overtaken,
    quiet,
)


def _in_flight_event(world: World, source: str) -> ToRouter:
    return max(
        (m for m in world.in_flight if isinstance(m, ToRouter) and m.event.source == source),
        key=lambda m: m.event.vclock.get(source),
    )


def test_a_received_old_value_never_outranks_the_edit_that_replaced_it() -> None:
    """Under ``priority`` with crm0 first, Y's old phone (which crm0 only received) used
    to count as crm0's change, because crm0 outranks crm2: it won the contest and
    reverted crm2's newer phone everywhere. Y's field_versions name no counter for
    phone (a received value, in the router's past), so the stored phone stands."""
    w = World(n_crms=3, rules=Rules(policy="priority", priority=("crm0",)))
    rid, phone = old_value_overtakes_its_parent(w)[:2]
    y = _in_flight_event(w, "crm0").event
    assert y.field_versions is not None and "phone" not in y.field_versions
    deliver_newest_to_router(w, "crm0")  # Y overtakes X: conflict, phone is not in play
    quiet(w)  # X arrives stale
    assert everywhere(w, rid, "phone") == dict.fromkeys(["router", "crm0", "crm2"], phone)
    assert not w.router.tainted


def test_without_field_versions_the_same_schedule_cannot_be_attributed() -> None:
    """The same schedule from adapters of an older version (no field_versions): the
    router bounds, guesses per policy, and the model records the field it attributed
    wrongly (the legacy mode's exemption)."""
    w = World(n_crms=3, rules=Rules(policy="priority", priority=("crm0",)), field_versions=False)
    rid, _ = old_value_overtakes_its_parent(w)[:2]
    assert _in_flight_event(w, "crm0").event.field_versions is None
    deliver_newest_to_router(w, "crm0")
    quiet(w)
    assert w.router.tainted == {(rid, "phone")}


def test_an_unseen_parents_later_edit_wins_under_lww() -> None:
    """crm0's first event (its phone edit, the latest write) is overtaken by its second
    (an email edit carrying that phone), while crm2 changed phone earlier. Bounding
    counted the phone as crm2's only (under lww an old value must not revert a newer
    one), so last-writer-wins never saw crm0's later phone and dropped it. The counter
    in field_versions says crm0's unseen edit set it: a contest, and the later wins."""
    w = World(n_crms=3, rules=Rules(policy="lww"))
    rid, phone = parent_phone_edit_overtaken(w)  # A2 carries the phone set by crm0:2
    a2 = _in_flight_event(w, "crm0").event
    assert a2.field_versions is not None and a2.field_versions["phone"] == 2
    deliver_newest_to_router(w, "crm0")  # A2 overtakes A1: phone contested, lww -> t=3
    quiet(w)  # A1 arrives stale
    assert everywhere(w, rid, "phone") == dict.fromkeys(["router", "crm0", "crm2"], phone)


@pytest.mark.parametrize("policy", ["manual", "priority", "lww"])
def test_a_carried_old_value_never_parks_or_wins(policy: str) -> None:
    """Y carries an old phone the stored side replaced: under ``manual`` bounding asked
    an operator about it (a person could pick the replaced value back); exactly, phone
    is no contest under any policy and only email, which nobody else changed, moves."""
    w = World(n_crms=3, rules=Rules(policy=policy, priority=("crm0",)))  # type: ignore[arg-type]
    rid, phone = old_value_overtakes_its_parent(w)[:2]
    deliver_newest_to_router(w, "crm0")
    assert w.router.records[rid].parked is None, "nothing is contested"
    quiet(w)
    assert everywhere(w, rid, "phone") == dict.fromkeys(["router", "crm0", "crm2"], phone)
