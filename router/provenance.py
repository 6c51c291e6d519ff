"""Who changed what: the provenance of every value a version holds.

The router stores, per field, the clock and author of the version that set it; these
functions read that provenance to say which fields each side of a concurrent change
really changed (DESIGN "Vector clocks and the router's decision": field-level
decisions), and which values are *in play* when a conflict is decided (``sides_of``).
Events that carry ``field_versions`` say which edit set every value they hold, and the
router attributes exactly; for older events it bounds (``_bounded_changes``).
Pure: values in, values out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from router.clock import EMPTY, Order, VectorClock, compare, meet
from router.conflicts import Version
from router.events import ChangeEvent, Scalar
from router.policies import LWW, UNKNOWN, Rules, Side
from router.record import RecordState


def field_provenance(
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


def stored_changed(event: ChangeEvent, stored: RecordState) -> frozenset[str]:
    """Fields the stored side changed since the event's base: their clock is not <= it."""
    base = event.vclock.base(event.actor)
    return frozenset(
        name
        for name, clock in stored.field_clocks.items()
        if compare(clock, base) in (Order.AFTER, Order.CONCURRENT)
    )


def event_changed(event: ChangeEvent, stored: RecordState, rules: Rules = LWW) -> frozenset[str]:
    """Fields the event changed: its ``changed`` list, and the fields its line of history
    changed in versions the router never saw (its actor's counter jumped by more than
    one, or its parent became a side of a parked conflict the stored state lacks).

    With ``field_versions`` (DESIGN "Exact attribution under reordering") that is exact:
    a value set by an edit of the event's actor that the stored version has not seen
    (its counter above the stored clock's entry for the actor). Without them, an older
    producer's event, the router bounds (:func:`_bounded_changes`).
    """
    if event.field_versions is not None:
        return frozenset(event.changed) | _unseen_edits(event, stored)
    return _bounded_changes(event, stored, rules)


def _unseen_edits(event: ChangeEvent, stored: RecordState) -> frozenset[str]:
    """Fields holding a value the stored side has not seen, set by an edit of the event's
    actor (exact: from ``field_versions``). A value equal to the stored one contests
    nothing."""
    versions = event.field_versions or {}
    seen = stored.clock.get(event.actor)
    return frozenset(
        name
        for name, counter in versions.items()
        if counter > seen and name in event.fields and stored.fields.get(name) != event.fields[name]
    )


def _bounded_changes(event: ChangeEvent, stored: RecordState, rules: Rules) -> frozenset[str]:
    """``event_changed`` for an event without ``field_versions``: its ``changed`` list,
    or, when the router never saw the event's parent (its actor's counter jumped by more
    than one), also every field whose value differs from the stored one.

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

    Events with ``field_versions`` have no such ambiguity.
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

    A value the event only carries was set before it. With ``field_versions`` the router
    knows by which edit: one of the event's actor (its counter), or, for a field without
    a counter, a value the actor received from the hub, in the stored version's past.
    Without them: equal to the stored value, by whoever set that; otherwise an older
    value the stored side has replaced since (``event_changed`` decided it is not the
    event's): its edit is in the past of both the event's parent and the stored
    version, which is all the router can know of it.
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
    versions = event.field_versions
    for name, value in event.fields.items():
        seen.pop(name, None)
        counter = versions.get(name) if versions is not None else None
        if counter is not None and (name in own or name not in fields or fields[name] != value):
            # Exact: the edit of the event's actor with that counter set it. Its clock has
            # that counter for the actor; every other entry of it is in the past of
            # whatever has seen that edit, so comparisons against it are exact.
            sources[name], clocks[name] = event.source, _edit_clock(event, counter)
            if name not in own and stored.fields.get(name) == value:
                # ...unless the stored value is the same: keep its (full) provenance.
                sources[name] = stored.field_sources.get(name, stored.source)
                clocks[name] = stored_field_clock(stored, name)
        elif versions is not None and name in fields and fields[name] != value:
            # A value received from the hub, so in the past of the stored state.
            sources[name], clocks[name] = UNKNOWN, older
        elif name in own or (name in fields and fields[name] != value):
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


def _edit_clock(event: ChangeEvent, counter: int) -> VectorClock:
    """The clock of the event actor's edit ``counter``, as far as comparisons need: the
    event's own clock for its own edit; for an earlier one, only its actor's entry. The
    edits of one actor on one record form a chain, so a version has seen edit ``counter``
    exactly when its entry for the actor reaches it: that entry decides every question
    the router asks of a value's clock (is it in another version's past?)."""
    if counter == event.vclock.get(event.actor):
        return event.vclock
    return VectorClock({event.actor: counter})


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
