"""The router's decision for one event against one record's stored state.

``decide`` takes values and returns values: what to store and what to send. The daemon
does the I/O around it. The rules (DESIGN "Vector clocks and the router's decision"):

* event clock before the stored clock: stale; equal with the same content: a
  duplicate; either way send nothing;
  equal with other content is a reused counter (``clock-reuse``), refused loudly;
* after: accept, overlay the event's fields onto the stored ones, send to every
  subscriber but the source;
* concurrent: resolve, the result gets ``merge(both) + hub`` and goes to every subscriber.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from router.clock import Order, VectorClock, compare, merge
from router.events import ChangeEvent, Scalar, new_event_id
from router.policies import DeleteRule, Side, resolve_lww
from router.record import RecordState


class Verdict(enum.Enum):
    ACCEPTED = "accepted"
    STALE = "stale"  # an older version
    DUPLICATE = "duplicate"  # the stored version itself, again
    CONFLICT = "conflict"
    CLOCK_REUSE = "clock-reuse"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    state: RecordState | None = None  # the new state to store, when it changed
    delivery: ChangeEvent | None = None  # what to fan out
    targets: tuple[str, ...] = ()


def _same_content(event: ChangeEvent, state: RecordState) -> bool:
    if (event.op == "delete") != state.deleted:
        return False
    return all(state.fields.get(name) == value for name, value in event.fields.items())


def _field_clocks(
    base: dict[str, VectorClock],
    old: dict[str, Scalar],
    new: dict[str, Scalar],
    changed: Sequence[str],
    clock: VectorClock,
) -> dict[str, VectorClock]:
    clocks = dict(base)
    for name, value in new.items():
        # A field absent from the record is None: a source that maps a field nobody has
        # set yet and sends None has not changed it (it must not outrank a real edit).
        if name in changed or old.get(name) != value:
            clocks[name] = clock
    return clocks


def accept(event: ChangeEvent, stored: RecordState | None) -> RecordState:
    old_fields = stored.fields if stored else {}
    fields = {**old_fields, **event.fields}
    clock = event.vclock
    return RecordState(
        record_id=event.record_id,
        entity=event.entity,
        clock=clock,
        fields=fields,
        field_clocks=_field_clocks(
            stored.field_clocks if stored else {}, old_fields, event.fields, event.changed, clock
        ),
        deleted=event.op == "delete",
        source=event.source,
        actor=event.actor,
        event_id=event.event_id,
        occurred_at=event.occurred_at,
        version=stored.version if stored else 0,
    )


def stored_changed(event: ChangeEvent, stored: RecordState) -> frozenset[str]:
    """Fields the stored side changed since the event's base: their clock is not <= it."""
    base = event.vclock.base(event.actor)
    return frozenset(
        name
        for name, clock in stored.field_clocks.items()
        if compare(clock, base) in (Order.AFTER, Order.CONCURRENT)
    )


def event_changed(event: ChangeEvent, stored: RecordState) -> frozenset[str]:
    """Fields the event changed: its ``changed`` list, or, when the router never saw the
    event's parent (its actor's counter jumped by more than one), every field whose
    value differs from the stored one *and that the stored side has not changed since
    the event's base*.

    That last condition refines DESIGN's rule. A differing field the stored side did not
    touch can only have been changed by the event's unseen ancestors. One the stored side
    did change is ambiguous: counting it as the event's (DESIGN's wording) silently
    reverts a real edit whenever the event merely carries an old value, while counting it
    as the stored side's can only matter when both sides truly changed it, a conflict
    either value resolves. Found by the convergence simulation (tests/unit)."""
    changed = set(event.changed)
    if stored.clock.get(event.actor) < event.vclock.get(event.actor) - 1:
        theirs = stored_changed(event, stored)
        changed |= {
            n for n, v in event.fields.items() if stored.fields.get(n) != v and n not in theirs
        }
    return frozenset(changed)


def resolve_conflict(
    event: ChangeEvent,
    stored: RecordState,
    hub_actor: str,
    deletes: DeleteRule = "update-wins",
) -> tuple[RecordState, ChangeEvent]:
    incoming = Side(
        event.actor,
        event.occurred_at,
        dict(event.fields),
        event.op == "delete",
        event_changed(event, stored),
    )
    current = Side(
        stored.actor,
        stored.occurred_at,
        stored.fields,
        stored.deleted,
        stored_changed(event, stored),
    )
    outcome = resolve_lww(current, incoming, deletes)
    clock = merge(event.vclock, stored.clock).increment(hub_actor)
    changed = sorted(
        name
        for name, value in outcome.fields.items()
        if stored.fields.get(name) != value or event.fields.get(name, value) != value
    )
    # The winner's time, so a later conflict compares against when the data was written.
    state, resolution = hub_version(
        stored,
        outcome.fields,
        outcome.deleted,
        changed,
        clock,
        hub_actor,
        outcome.winner.occurred_at,
    )
    # A field keeps the clock of the version that set its value (DESIGN "Field-level
    # decisions"): the incoming event for values taken from it, the stored clock for
    # values kept. Stamping kept values with the resolution's clock made the next edit of
    # such a field by its own author look concurrent with it, and lose.
    field_clocks = dict(stored.field_clocks)
    for name in outcome.from_incoming:
        # ...but only a value the event really set: a None it carries for a field the
        # record never had was set by nobody.
        if incoming.touched(name) or stored.fields.get(name) != outcome.fields[name]:
            field_clocks[name] = event.vclock
    return replace(state, field_clocks=field_clocks), resolution


def decide(
    event: ChangeEvent,
    stored: RecordState | None,
    subscribers: Sequence[str],
    hub_actor: str,
    deletes: DeleteRule = "update-wins",
) -> Decision:
    """What to do with ``event`` given the record's ``stored`` state (None: never seen)."""
    order = compare(event.vclock, stored.clock) if stored else Order.AFTER
    if stored is None or order is Order.AFTER:
        state = accept(event, stored)
        overlaid = state.fields != event.fields
        delivery = event.model_copy(update={"fields": state.fields}) if overlaid else event
        targets = tuple(name for name in subscribers if name != event.source)
        return Decision(Verdict.ACCEPTED, state, delivery, targets)
    if order is Order.EQUAL:
        if _same_content(event, stored):
            return Decision(Verdict.DUPLICATE)
        return Decision(Verdict.CLOCK_REUSE)
    if order is Order.BEFORE:
        return Decision(Verdict.STALE)
    state, resolution = resolve_conflict(event, stored, hub_actor, deletes)
    return Decision(Verdict.CONFLICT, state, resolution, tuple(subscribers))


def edit_version(
    stored: RecordState, changes: dict[str, Scalar], hub_actor: str, now: datetime
) -> tuple[RecordState, ChangeEvent]:
    """An operator's edit as a new version made by the hub: it descends from the stored
    one, so every CRM, the edit's source included, applies it (DESIGN "Failed writes":
    never replay an edited copy under the old clock, that would fork one CRM)."""
    fields = {**stored.fields, **changes}
    changed = sorted(name for name in changes if stored.fields.get(name) != changes[name])
    clock = stored.clock.increment(hub_actor)
    return hub_version(stored, fields, False, changed, clock, hub_actor, now)


def hub_version(
    stored: RecordState,
    fields: dict[str, Scalar],
    deleted: bool,
    changed: list[str],
    clock: VectorClock,
    hub_actor: str,
    occurred_at: datetime,
) -> tuple[RecordState, ChangeEvent]:
    """A version of ``stored`` made by the hub (a resolution or an edit): the state to
    store and the event that carries it to every subscriber."""
    state = RecordState(
        record_id=stored.record_id,
        entity=stored.entity,
        clock=clock,
        fields=fields,
        field_clocks=_field_clocks(stored.field_clocks, stored.fields, fields, changed, clock),
        deleted=deleted,
        source="hub",
        actor=hub_actor,
        event_id=new_event_id(),
        occurred_at=occurred_at,
        version=stored.version,
    )
    event = ChangeEvent(
        event_id=state.event_id,
        source="hub",
        actor=hub_actor,
        entity=stored.entity,
        record_id=stored.record_id,
        op="delete" if deleted else "upsert",
        clock=clock.to_dict(),
        fields=fields,
        changed=changed,
        occurred_at=occurred_at,
    )
    return state, event
