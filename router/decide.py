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

from router.clock import EMPTY, Order, VectorClock, compare, meet, merge
from router.conflicts import Conflict, Settlement, Version, new_conflict_id
from router.events import ChangeEvent, Scalar, new_event_id, utcnow
from router.policies import (
    LWW,
    OPERATOR,
    UNKNOWN,
    Choice,
    Outcome,
    Rules,
    Side,
    TakeSide,
    resolve,
    side_of,
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


def _provenance(
    stored: RecordState | None,
    new: dict[str, Scalar],
    changed: Sequence[str],
    clock: VectorClock,
    source: str,
) -> tuple[dict[str, VectorClock], dict[str, str]]:
    """Field clocks and field sources after ``source`` wrote ``new`` at ``clock``."""
    old = stored.fields if stored else {}
    clocks = dict(stored.field_clocks) if stored else {}
    sources = dict(stored.field_sources) if stored else {}
    for name, value in new.items():
        # A field absent from the record is None: a source that maps a field nobody has
        # set yet and sends None has not changed it (it must not outrank a real edit).
        if name in changed or old.get(name) != value:
            clocks[name] = clock
            sources[name] = source
    return clocks, sources


def accept(event: ChangeEvent, stored: RecordState | None) -> RecordState:
    old_fields = stored.fields if stored else {}
    fields = {**old_fields, **event.fields}
    clock = event.vclock
    field_clocks, field_sources = _provenance(
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


def stored_changed(event: ChangeEvent, stored: RecordState) -> frozenset[str]:
    """Fields the stored side changed since the event's base: their clock is not <= it."""
    base = event.vclock.base(event.actor)
    return frozenset(
        name
        for name, clock in stored.field_clocks.items()
        if compare(clock, base) in (Order.AFTER, Order.CONCURRENT)
    )


def event_changed(event: ChangeEvent, stored: RecordState, rules: Rules = LWW) -> frozenset[str]:
    """Fields the event changed: its ``changed`` list, or, when the router never saw the
    event's parent (its actor's counter jumped by more than one), also every field whose
    value differs from the stored one.

    A differing field the stored side did not touch since the event's base can only have
    been changed by the event's unseen ancestors. One the stored side did change is
    ambiguous: the unseen ancestor may have changed it too (a real concurrent edit), or
    the event may merely carry the value from before the stored edit. No rule can tell
    them apart from a snapshot, so the choice is the one that loses least per policy:

    * under ``lww``, between two living versions, it counts as the stored side's only.
      Counting it as the event's (DESIGN's wording) lets a later timestamp on an old value
      silently revert a real edit, the lost edit the convergence simulation found first;
    * under ``manual`` it counts as the event's too: a person sees both values;
    * under ``priority`` it does when the event's source ranks above the stored value's
      author (what that policy promises), and under ``update-wins`` against a stored
      delete (the living side's values are the record). Counting it as the stored
      side's there silently dropped the unseen ancestor's edit (simulation, tests/unit);
    * an ambiguous None never counts: most likely a value that line never had.

    The ambiguity itself needs a contract change to go away (events carrying, per
    field, the counter of the edit that set it); see the note of issue 3.
    """
    changed = set(event.changed)
    if stored.clock.get(event.actor) < event.vclock.get(event.actor) - 1:
        theirs = stored_changed(event, stored)
        for name, value in event.fields.items():
            if stored.fields.get(name) == value:
                continue
            if name not in theirs or _claim_ambiguous(event, stored, name, value, rules):
                changed.add(name)
    return frozenset(changed)


def _claim_ambiguous(
    event: ChangeEvent, stored: RecordState, name: str, value: Scalar, rules: Rules
) -> bool:
    """Whether an ambiguous field counts as the event's change (see event_changed)."""
    if value is None:  # most likely a value this line of history never had
        return False
    if stored.deleted and event.op != "delete":
        return rules.deletes == "update-wins"  # the living side's values are the record
    policy = rules.for_field(name)
    if policy == "manual":
        return True  # a person sees both values and decides
    if policy == "priority":
        # Only where it changes the outcome in the policy's favour: a source ranked
        # above the stored value's author. Otherwise the stored value stands, as
        # under lww, where a later timestamp on an old value would revert a real edit.
        author = stored.field_sources.get(name, stored.source)
        return rules.rank(event.source) < rules.rank(author)
    return False


def stored_field_clock(stored: RecordState, name: str) -> VectorClock:
    """The clock of the edit that set ``name``'s stored value. A value with no clock is
    a None nobody set (``_provenance``): it is in every version's past."""
    return stored.field_clocks.get(name, EMPTY)


def stored_version(stored: RecordState, changed: frozenset[str]) -> Version:
    """The stored state as one side of a conflict."""
    return Version(
        event_id=stored.event_id,
        source=stored.source,
        actor=stored.actor,
        clock=stored.clock,
        occurred_at=stored.occurred_at,
        fields=stored.fields,
        deleted=stored.deleted,
        changed=changed,
        sources=stored.field_sources,
        field_clocks={name: stored_field_clock(stored, name) for name in stored.fields},
    )


def event_version(
    event: ChangeEvent,
    stored: RecordState,
    supersedes: Sequence[Version] = (),
    rules: Rules = LWW,
) -> Version:
    """``event`` as one side of a conflict on ``stored``, with the provenance of every
    value it holds (``sides_of`` decides contests from it).

    When it supersedes sides of a parked conflict (their clocks are before its clock) it
    inherits what they changed and hold: relative to the other sides, their edits and its
    own are one line of history.

    A value the event only carries was set before it. Equal to the stored value: by
    whoever set that. Otherwise it is an older value the stored side has replaced since
    (``event_changed`` decided it is not the event's): its edit is in the past of both
    the event's parent and the stored version, which is all the router can know of it.
    """
    own = event_changed(event, stored, rules)
    changed = set(own)
    fields: dict[str, Scalar] = {}
    sources: dict[str, str] = {}
    clocks: dict[str, VectorClock] = {}
    seen: dict[str, VectorClock] = {}
    for old in sorted(supersedes, key=lambda v: (v.occurred_at, v.actor)):
        changed |= old.changed
        fields.update(old.fields)
        sources.update({name: old.sources.get(name, old.source) for name in old.fields})
        clocks.update({name: old.field_clock(name) for name in old.fields})
        seen.update({name: old.seen(name) for name in old.fields})
    older = meet(event.vclock.base(event.actor), stored.clock)
    for name, value in event.fields.items():
        seen.pop(name, None)
        if name in own or (name in fields and fields[name] != value):
            # Its own edit; or a value differing from the one its line held before, which
            # only its line can have replaced (nothing is sent for a parked record).
            sources[name], clocks[name] = event.source, event.vclock
        elif name in fields:
            continue  # the superseded side's value, with its author
        elif name in stored.fields and stored.fields[name] == value:
            sources[name] = stored.field_sources.get(name, stored.source)
            clocks[name] = stored_field_clock(stored, name)
        elif value is None and name not in stored.fields:
            sources[name], clocks[name] = UNKNOWN, EMPTY  # a field nobody has set yet
        else:
            sources[name], clocks[name] = UNKNOWN, older
    fields.update(event.fields)
    return Version(
        event_id=event.event_id,
        source=event.source,
        actor=event.actor,
        clock=event.vclock,
        occurred_at=event.occurred_at,
        fields=fields,
        deleted=event.op == "delete",
        changed=frozenset(changed),
        sources=sources,
        field_clocks=clocks,
        field_seen=seen,
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


def sides_of(versions: Sequence[Version], base: Mapping[str, Scalar]) -> list[Side]:
    """The versions as policy sides, each touching exactly the fields where it holds an
    edit that must be decided: decided per field from the provenance of the values.

    A side's edit of a field is *live* when no side holding another value has seen it
    (the value's field clock is not in that side's past): nobody replaced it knowingly.
    The values with a live edit are what a resolution chooses from: one is kept (its
    latest author touches it, so the resolution records who set it, even when it equals
    the base); several are a contest for the field's policy. So a field one line of
    history changed twice, a side carrying an older value, or a delete that superseded
    the side that made an edit never turn into a contest, and the policy sees every
    value that is really concurrent, whichever side carries it and whatever each side's
    ``changed`` set says (those are relative to different bases once later events join a
    parked conflict).

    Where every edit is in another side's past (a resolution kept an older value) there
    is nothing to keep on purpose: the base stands, as ``resolve`` does for an untouched
    field.
    """
    touched: list[set[str]] = [set() for _ in versions]
    for name in sorted(set(base).union(*(v.fields for v in versions))):
        holders = [i for i, v in enumerate(versions) if name in v.fields]
        live = [i for i in holders if not _replaced(versions, holders, name, i)]
        values = {versions[i].fields[name] for i in live}
        if len(values) > 1:
            for i in live:
                touched[i].add(name)
        elif values:
            # One value to keep: its authors touch it (resolve credits the best-ranked),
            # even when it equals the base: the resolution records who set it.
            (value,) = values
            authors = [i for i in live if name in versions[i].changed]
            if not authors and not (name in base and base[name] == value):
                authors = live
            for i in authors:
                touched[i].add(name)
    return [
        replace(version.side(), changed=frozenset(names))
        for version, names in zip(versions, touched, strict=True)
    ]


def _replaced(versions: Sequence[Version], holders: list[int], name: str, i: int) -> bool:
    """Whether a side holding another value of ``name`` has seen side ``i``'s edit of it."""
    value, edit = versions[i].fields[name], versions[i].field_clock(name)
    return any(
        versions[j].fields[name] != value and versions[j].seen(name).dominates(edit)
        for j in holders
    )


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
    field_clocks, field_sources = _provenance(stored, fields, changed, clock, OPERATOR)
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
