"""The router's decision for one event against one record's stored state.

``decide`` takes values and returns values: what to store and what to send. The daemon
does the I/O around it. The rules (DESIGN "Vector clocks and the router's decision"):

* event clock before the stored clock: stale; equal with the same content: a
  duplicate; either way send nothing;
  equal with other content is a reused counter (``clock-reuse``), refused loudly;
* after: accept, overlay the event's fields onto the stored ones, send to every
  subscriber but the source;
* concurrent: resolve by the entity's policy; the result gets ``merge(both) + hub`` and
  goes to every subscriber; or, when a contested field's policy is ``manual``, park the
  conflict (:mod:`router.conflicts`) and send nothing;
* any event for a parked record joins its conflict instead (or is stale/duplicate
  against one of its sides).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from router.clock import Order, VectorClock, compare, merge
from router.conflicts import Conflict, Settlement, new_conflict_id
from router.events import ChangeEvent, Scalar, new_event_id, utcnow
from router.policies import (
    LWW,
    OPERATOR,
    UNKNOWN,
    Choice,
    Outcome,
    Rules,
    TakeSide,
    resolve,
    side_of,
)
from router.provenance import (
    event_version,
    field_provenance,
    sides_of,
    stored_changed,
    stored_version,
)
from router.record import RecordState


class Verdict(enum.Enum):
    ACCEPTED = "accepted"
    STALE = "stale"  # an older version
    DUPLICATE = "duplicate"  # the stored version itself, again
    CONFLICT = "conflict"  # concurrent, resolved by policy
    PARKED = "parked"  # concurrent, waiting for an operator
    HELD = "held"  # joined a parked conflict
    CLOCK_REUSE = "clock-reuse"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    state: RecordState | None = None  # the new state to store, when it changed
    delivery: ChangeEvent | None = None  # what to fan out
    targets: tuple[str, ...] = ()
    conflict: Conflict | None = None  # opened, joined or settled: to store for the audit


def _same_content(event: ChangeEvent, fields: Mapping[str, Scalar], deleted: bool) -> bool:
    if (event.op == "delete") != deleted:
        return False
    return all(fields.get(name) == value for name, value in event.fields.items())


def accept(event: ChangeEvent, stored: RecordState | None) -> RecordState:
    old_fields = stored.fields if stored else {}
    fields = {**old_fields, **event.fields}
    clock = event.vclock
    field_clocks, field_sources = field_provenance(
        stored, event.fields, event.changed, clock, event.source
    )
    return RecordState(
        record_id=event.record_id,
        entity=event.entity,
        clock=clock,
        fields=fields,
        field_clocks=field_clocks,
        deleted=event.op == "delete",
        source=event.source,
        actor=event.actor,
        event_id=event.event_id,
        occurred_at=event.occurred_at,
        version=stored.version if stored else 0,
        field_sources=field_sources,
    )


def decide(
    event: ChangeEvent,
    stored: RecordState | None,
    subscribers: Sequence[str],
    hub_actor: str,
    rules: Rules = LWW,
    parked: Conflict | None = None,
) -> Decision:
    """What to do with ``event`` given the record's ``stored`` state (None: never seen)
    and, when the record is parked, the conflict it is parked in."""
    order = compare(event.vclock, stored.clock) if stored else Order.AFTER
    if stored is not None and order is Order.EQUAL:
        if _same_content(event, stored.fields, stored.deleted):
            return Decision(Verdict.DUPLICATE)
        return Decision(Verdict.CLOCK_REUSE)
    if stored is not None and order is Order.BEFORE:
        return Decision(Verdict.STALE)
    if stored is not None and stored.parked is not None:
        if parked is None or parked.id != stored.parked:
            raise ValueError(f"record {stored.record_id} is parked in {stored.parked}, not given")
        return _join(event, stored, parked, subscribers, hub_actor, rules)
    if stored is None or order is Order.AFTER:
        state = accept(event, stored)
        overlaid = state.fields != event.fields
        delivery = event.model_copy(update={"fields": state.fields}) if overlaid else event
        targets = tuple(name for name in subscribers if name != event.source)
        return Decision(Verdict.ACCEPTED, state, delivery, targets)
    sides = (
        stored_version(stored, stored_changed(event, stored)),
        event_version(event, stored, rules=rules),
    )
    opened = Conflict(
        id=new_conflict_id(),
        record_id=stored.record_id,
        entity=stored.entity,
        opened_at=utcnow(),
        sides=sides,
        base=stored.fields,
        policies={},
    )
    return _settle_or_park(stored, opened, subscribers, hub_actor, rules, Verdict.PARKED)


def _join(
    event: ChangeEvent,
    stored: RecordState,
    conflict: Conflict,
    subscribers: Sequence[str],
    hub_actor: str,
    rules: Rules,
) -> Decision:
    """An event for a parked record: a duplicate or stale copy of a side, a newer version
    of sides (it replaces them), or one more concurrent side."""
    for side in conflict.sides:
        order = compare(event.vclock, side.clock)
        if order is Order.EQUAL:
            if _same_content(event, side.fields, side.deleted):
                return Decision(Verdict.DUPLICATE)
            return Decision(Verdict.CLOCK_REUSE)
        if order is Order.BEFORE:
            return Decision(Verdict.STALE)
    superseded = [s for s in conflict.sides if compare(s.clock, event.vclock) is Order.BEFORE]
    kept = []
    for side in conflict.sides:
        if side in superseded:
            continue
        if side.event_id == stored.event_id:
            # What the stored side changed is relative to each other side's base: the
            # newcomer may have started from an older one.
            side = replace(side, changed=side.changed | stored_changed(event, stored))
        kept.append(side)
    joined = replace(
        conflict,
        sides=(*kept, event_version(event, stored, superseded, rules)),
        held=conflict.held + 1,
    )
    return _settle_or_park(stored, joined, subscribers, hub_actor, rules, Verdict.HELD)


def _settle_or_park(
    stored: RecordState,
    conflict: Conflict,
    subscribers: Sequence[str],
    hub_actor: str,
    rules: Rules,
    waiting: Verdict,
) -> Decision:
    outcome = resolve(sides_of(conflict.sides, stored.fields), stored.fields, rules)
    policies = {name: c.policy for name, c in outcome.contests.items()}
    if outcome.undecided:
        parked = replace(conflict, policies=policies, undecided=outcome.undecided)
        # The record row is written too (unchanged but for the marker): its
        # compare-and-set is what serialises routers that share the store.
        return Decision(waiting, replace(stored, parked=parked.id), None, (), parked)
    by = "superseded" if len(conflict.sides) == 1 else "policy"
    state, resolution, settled = settle(
        stored, replace(conflict, policies=policies), outcome, hub_actor, by
    )
    return Decision(Verdict.CONFLICT, state, resolution, tuple(subscribers), settled)


def settle(
    stored: RecordState,
    conflict: Conflict,
    outcome: Outcome,
    hub_actor: str,
    by: str,
    now: datetime | None = None,
) -> tuple[RecordState, ChangeEvent, Conflict]:
    """The resolution of ``conflict`` as a new hub version for every subscriber, and the
    conflict settled with its audit record.

    A field keeps the clock and source of the version that set its value (DESIGN
    "Field-level decisions"): stamping kept values with the resolution's clock made the
    next edit of such a field by its own author look concurrent with it, and lose."""
    sides = conflict.sides
    clock = merge(stored.clock, *(v.clock for v in sides)).increment(hub_actor)
    fields = outcome.fields
    changed = sorted(
        name
        for name, value in fields.items()
        if stored.fields.get(name) != value
        or any(v.fields.get(name, value) != value for v in sides)
    )
    competing = [v for v in sides if outcome.deleted or not v.deleted] or list(sides)
    # An operator decides now; a policy's result carries the latest competing edit's
    # time, so a later conflict compares against when the data was written.
    occurred_at = now or max(v.occurred_at for v in competing)
    state, resolution = hub_version(
        stored, fields, outcome.deleted, changed, clock, hub_actor, occurred_at
    )
    field_clocks = dict(stored.field_clocks)
    field_sources = dict(stored.field_sources)
    for name, index in outcome.taken.items():
        if index is None:
            if name in outcome.contests:  # an operator's value
                field_clocks[name], field_sources[name] = clock, OPERATOR
            continue
        side = sides[index]
        # ...but only a value the side really set: a None it carries for a field the
        # record never had was set by nobody.
        touched = side.side().touched(name)
        if touched or stored.fields.get(name) != fields[name]:
            # The clock of the edit that set the value (event_version records one for
            # every value). A side stored before it did lacks clocks for values it only
            # carried: those were set within its base (its clock less its own edit), not
            # by the side itself; its own clock would make a CRM that had seen the value
            # look concurrent with it.
            known = touched or name in side.field_clocks
            field_clocks[name] = side.field_clock(name) if known else side.clock.base(side.actor)
            # A value it only carries (changed by nobody, new to the record) was written by
            # someone the side cannot name: credit no one (UNKNOWN ranks last, matches no
            # --take) rather than the carrier, whose edit it is not.
            if touched or name in side.sources:
                field_sources[name] = side.sources.get(name, side.source)
            else:
                field_sources[name] = UNKNOWN
    state = replace(state, field_clocks=field_clocks, field_sources=field_sources, parked=None)
    audit = {
        name: {
            "policy": contest.policy,
            "value": fields[name],
            "source": field_sources.get(name, state.source),
            "losing": [list(pair) for pair in contest.losing],
        }
        for name, contest in outcome.contests.items()
    }
    settled = conflict.settle(
        Settlement(
            at=now or utcnow(),
            by=by,
            event_id=resolution.event_id,
            clock=clock,
            deleted=outcome.deleted,
            fields=audit,
        )
    )
    return state, resolution, settled


def resolve_parked(
    stored: RecordState,
    conflict: Conflict,
    rules: Rules,
    hub_actor: str,
    by: str,
    take: str | None = None,
    choices: Mapping[str, Choice] | None = None,
    now: datetime | None = None,
) -> tuple[RecordState, ChangeEvent, Conflict]:
    """An operator's resolution of a parked conflict. Raises ValueError (one line, for
    the operator) on a choice that does not fit the conflict; nothing is changed then."""
    if conflict.settlement is not None:
        raise ValueError(f"conflict {conflict.id} was already resolved ({conflict.settlement.by})")
    if stored.parked != conflict.id:
        raise ValueError(f"record {stored.record_id} is not parked in conflict {conflict.id}")
    sources = conflict.sources
    chosen = dict(choices or {})
    for name, choice in chosen.items():
        if name not in conflict.policies:
            contested = ", ".join(sorted(conflict.policies)) or "none"
            raise ValueError(
                f"field {name!r} is not contested in conflict {conflict.id} "
                f"(contested: {contested})"
            )
        if isinstance(choice, TakeSide) and choice.source not in sources:
            raise ValueError(_no_side(conflict, choice.source))
    sides = sides_of(conflict.sides, stored.fields)
    if take is not None:
        if take not in sources:
            raise ValueError(_no_side(conflict, take))
        for name in conflict.policies:
            # The same reading of "SOURCE's value" as an explicit --field NAME=SOURCE.
            if side_of(sides, take, name) is not None:
                chosen.setdefault(name, TakeSide(take))
    outcome = resolve(sides, stored.fields, rules, chosen)
    if outcome.undecided:
        names = ", ".join(outcome.undecided)
        raise ValueError(
            f"still undecided: {names}; add --field NAME=SOURCE or --value NAME=VALUE for each"
        )
    policies = {name: c.policy for name, c in outcome.contests.items()}
    return settle(
        stored, replace(conflict, policies=policies), outcome, hub_actor, by, now or utcnow()
    )


def _no_side(conflict: Conflict, source: str) -> str:
    return (
        f"no side of conflict {conflict.id} comes from {source!r} "
        f"(sides: {', '.join(conflict.sources)})"
    )


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
    field_clocks, field_sources = field_provenance(stored, fields, changed, clock, OPERATOR)
    state = RecordState(
        record_id=stored.record_id,
        entity=stored.entity,
        clock=clock,
        fields=fields,
        field_clocks=field_clocks,
        deleted=deleted,
        source="hub",
        actor=hub_actor,
        event_id=new_event_id(),
        occurred_at=occurred_at,
        version=stored.version,
        field_sources=field_sources,
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
