"""A pure model of crmsync for the convergence simulation (issue 3, item 3).

The router side calls the real decision code (``router.decide.decide``); the adapter
side calls the real rules (``adapters.rules``) and mirrors ``adapters.engine.SyncEngine``
(``_capture_rows``, ``_local_change``, ``_apply``/``_write``/``_on_miss``,
``_record_applied``) over plain dicts instead of SQL, with soft deletes and a
``version`` token per row standing for ``updated_at`` (the conditional-write token).
The network is a multiset of in-flight messages delivered in any order, any number of
times. Every checked property raises :class:`Violation` with the trace so far.

Values typed by users are unique strings, so where a value came from is always known:
``origin[value]`` is the clock of the event that first published it (``None``, the
value of a column nobody has set, has the empty clock). That gives an oracle for
conflicts that does not reuse the router's own field-clock logic: if one side's value
is in the causal past of another side that maps the field (or of the router's stored
state, which has seen everything before its clock), that side overwrote it and it must
not win. The values left are the ones really written concurrently: one of them must
win, and which one depends on the policy (:meth:`Router._check_outcome`). A value's
author is its prefix (``crm1:phone:7``; ``hub:...`` for an operator's value), which is
what ``priority`` ranks.

Policies (``World.rules``): any :class:`router.policies.Rules`. A ``manual`` contest
parks the record: the model's router keeps the conflicts by id, passes the parked one to
``decide``, and an operator step (:meth:`World.operator`) resolves it with
``router.decide.resolve_parked`` (``--take`` a side, or per-field choices).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from adapters.rules import (
    DeliveryAction,
    changed_fields,
    content_hash,
    delivery_action,
    local_clock,
)
from router.clock import EMPTY, Order, VectorClock, compare
from router.conflicts import Conflict, Version
from router.decide import Decision, Verdict, decide, resolve_parked
from router.events import ChangeEvent, Scalar
from router.policies import Choice, Rules, SetValue, TakeSide, lww_key
from router.record import RecordState

ENTITY = "contact"
HUB = "hub"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

# Which canonical fields each CRM maps (the first n are used).
MAPPINGS: tuple[tuple[str, frozenset[str]], ...] = (
    ("crm0", frozenset({"email", "first_name", "last_name", "phone"})),
    ("crm1", frozenset({"email", "first_name", "last_name"})),
    ("crm2", frozenset({"email", "phone"})),
    ("crm3", frozenset({"first_name", "phone"})),
    ("crm4", frozenset({"last_name"})),
)


class Violation(AssertionError):
    pass


def le(a: VectorClock, b: VectorClock) -> bool:
    return compare(a, b) in (Order.BEFORE, Order.EQUAL)


@dataclass
class Row:
    """One row in a CRM table: mapped columns, soft-delete flag, version token."""

    fields: dict[str, Scalar]
    deleted: bool
    version: int
    updated_at: datetime


@dataclass(frozen=True)
class Link:
    record_id: str
    sid: str | None
    clock: VectorClock
    content_hash: str
    fields: dict[str, Scalar]
    version: int | None
    deleted: bool


@dataclass(frozen=True)
class ToRouter:
    event: ChangeEvent


@dataclass(frozen=True)
class ToCrm:
    crm: str
    event: ChangeEvent


Message = ToRouter | ToCrm


@dataclass
class World:
    n_crms: int = 3
    skews: tuple[int, ...] = (0, 0, 0, 0, 0)
    deletes: DeleteRule = "update-wins"
    check_conflicts: bool = True
    trace: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tick = 0
        self.ids = 0
        self.values = 0
        self.router = Router(self)
        self.crms = [
            Crm(self, name, mapped, self.skews[i])
            for i, (name, mapped) in enumerate(MAPPINGS[: self.n_crms])
        ]
        self.by_name = {c.name: c for c in self.crms}
        self.in_flight: list[Message] = []
        # value -> clock of the event that first published it
        self.origin: dict[Scalar, VectorClock] = {}
        # values users typed that no event has carried yet (and no later typing replaced)
        self.unpublished: set[Scalar] = set()

    # -- helpers --------------------------------------------------------------------
    def new_id(self) -> str:
        self.ids += 1
        return str(uuid.UUID(int=self.ids))

    def new_value(self, crm: str, name: str) -> str:
        self.values += 1
        return f"{crm}:{name}:{self.values}"

    def log(self, line: str) -> None:
        self.trace.append(line)

    def fail(self, what: str) -> None:
        raise Violation(what + "\n--- trace ---\n" + "\n".join(self.trace))

    def origin_of(self, value: Scalar) -> VectorClock:
        if value is None:
            return EMPTY
        return self.origin[value]

    def send(self, messages: Iterable[Message]) -> None:
        self.in_flight.extend(messages)

    # -- schedule steps -------------------------------------------------------------
    def step(self, kind: int, a: int, b: int) -> None:
        self.tick += 1
        crm = self.crms[a % len(self.crms)]
        if kind == 0:
            crm.user_create()
        elif kind == 1:
            crm.user_edit(b)
        elif kind == 2:
            crm.user_delete(b)
        elif kind == 3:
            crm.user_touch_unmapped(b)
        elif kind == 4:
            self.send(crm.capture(b))
        elif kind == 5:
            self.deliver(b)
        elif kind == 6:
            self.duplicate(b)
        elif kind == 7:
            self.send(crm.capture(None))

    def deliver(self, pick: int) -> None:
        if not self.in_flight:
            return
        message = self.in_flight.pop(pick % len(self.in_flight))
        if isinstance(message, ToRouter):
            self.send(self.router.process(message.event))
        else:
            self.send(self.by_name[message.crm].apply(message.event))

    def deliver_to(self, target: str, source: str | None = None) -> None:
        """Deliver the oldest in-flight message for ``target`` ("router" or a CRM name),
        optionally only one that ``source`` made (for hand-written schedules)."""
        for i, message in enumerate(self.in_flight):
            to = "router" if isinstance(message, ToRouter) else message.crm
            if to == target and source in (None, message.event.source):
                self.deliver(i)
                return
        raise LookupError(f"nothing in flight for {target} from {source}")

    def duplicate(self, pick: int) -> None:
        if not self.in_flight:
            return
        message = self.in_flight[pick % len(self.in_flight)]
        self.log(f"  duplicate {describe(message)}")
        self.in_flight.append(message)

    def drain(self, pick: int = 0) -> None:
        """Capture everywhere, deliver everything, until quiet."""
        for _ in range(200):
            for crm in self.crms:
                self.send(crm.capture(None))
            if not self.in_flight:
                return
            while self.in_flight:
                self.tick += 1
                pick = pick * 1103515245 + 12345
                self.deliver((pick >> 8) & 0xFFFF)
        self.fail("no quiescence after 200 rounds of capture and delivery")

    # -- final checks ---------------------------------------------------------------
    def check_converged(self) -> None:
        if self.unpublished:
            self.fail(f"user edits never published: {sorted(map(str, self.unpublished))}")
        for record_id, stored in self.router.records.items():
            for crm in self.crms:
                link = crm.links.get(record_id)
                row = crm.rows.get(link.sid) if link and link.sid else None
                if row is None:
                    if not stored.deleted:
                        self.fail(f"{crm.name} has no row for live record {short(record_id)}")
                    continue
                if row.deleted != stored.deleted:
                    self.fail(
                        f"{crm.name} record {short(record_id)}: deleted={row.deleted}, "
                        f"router deleted={stored.deleted}"
                    )
                if stored.deleted:
                    continue
                expected = {n: stored.fields.get(n) for n in crm.mapped}
                if row.fields != expected:
                    self.fail(
                        f"{crm.name} record {short(record_id)} diverged:\n"
                        f"  crm    {sorted(row.fields.items())}\n"
                        f"  router {sorted(expected.items())} clock {dict(stored.clock)}"
                    )
        # Every row captured into a record is known to the router.
        for crm in self.crms:
            for record_id, link in crm.links.items():
                if record_id not in self.router.records:
                    row = crm.rows.get(link.sid) if link.sid else None
                    if row is not None and not row.deleted:
                        self.fail(f"{crm.name} record {short(record_id)} never reached the router")


class Router:
    def __init__(self, world: World) -> None:
        self.world = world
        self.records: dict[str, RecordState] = {}
        self.inbox: set[str] = set()

    def process(self, event: ChangeEvent) -> list[Message]:
        w = self.world
        stored = self.records.get(event.record_id)
        subscribers = [c.name for c in w.crms]
        if event.event_id in self.inbox:
            # Redelivery: the inbox acks it. Even without the inbox the decision must be
            # neutral: nothing stored, nothing sent.
            again = decide(event, stored, subscribers, HUB, Rules(deletes=w.deletes))
            if again.state is not None or again.delivery is not None:
                w.fail(f"redelivered {describe_event(event)} would change state: {again.verdict}")
            w.log(f"  router: redelivery of {describe_event(event)} acked ({again.verdict.value})")
            return []
        self.inbox.add(event.event_id)
        decision = decide(event, stored, subscribers, HUB, Rules(deletes=w.deletes))
        w.log(f"  router: {describe_event(event)} -> {decision.verdict.value}")
        if decision.verdict is Verdict.CLOCK_REUSE:
            w.fail(f"clock reuse for {describe_event(event)} (stored {describe_state(stored)})")
        if decision.state is None:
            if decision.delivery is not None or decision.targets:
                w.fail(f"{decision.verdict} sends something without storing")
            return []
        new = decision.state
        if stored is not None and compare(new.clock, stored.clock) is not Order.AFTER:
            w.fail(f"stored clock did not grow: {dict(stored.clock)} -> {dict(new.clock)}")
        assert decision.delivery is not None
        if decision.verdict is Verdict.ACCEPTED:
            if event.source in decision.targets:
                w.fail(f"accepted {describe_event(event)} is sent back to its origin")
            if stored is not None:
                self._check_accept(event, stored, new)
        elif decision.verdict is Verdict.CONFLICT:
            assert stored is not None
            if not (
                compare(new.clock, event.vclock) is Order.AFTER
                and compare(new.clock, stored.clock) is Order.AFTER
            ):
                w.fail(f"resolution {dict(new.clock)} does not dominate both inputs")
            if decision.delivery.source != HUB or set(decision.targets) != set(subscribers):
                w.fail("a resolution must be a hub version sent to every subscriber")
            if w.check_conflicts:
                self._check_conflict(event, stored, new)
        if decision.delivery.vclock != new.clock or decision.delivery.fields != new.fields:
            w.fail("the delivery is not the stored version")
        self.records[event.record_id] = new
        w.log(f"    stored {describe_state(new)} -> {list(decision.targets)}")
        return [ToCrm(name, decision.delivery) for name in decision.targets]

    def _check_accept(self, event: ChangeEvent, stored: RecordState, new: RecordState) -> None:
        """An event that descends from the stored version must not bring back a value the
        stored side had already replaced."""
        w = self.world
        for name, value in event.fields.items():
            old = stored.fields.get(name)
            if name in stored.fields and value != old and le(w.origin_of(value), stored.clock):
                w.fail(
                    f"accepted {describe_event(event)} reintroduces an old value of {name}: "
                    f"{value!r} (origin {dict(w.origin_of(value))}) over {old!r} "
                    f"(stored clock {dict(stored.clock)})"
                )

    def _check_conflict(self, event: ChangeEvent, stored: RecordState, new: RecordState) -> None:
        w = self.world
        incoming_deleted = event.op == "delete"
        if stored.deleted != incoming_deleted:
            want_deleted = w.deletes == "delete-wins"
        else:
            want_deleted = stored.deleted
        if new.deleted != want_deleted:
            w.fail(f"conflict on {describe_event(event)}: deleted={new.deleted}")
        for name in sorted(stored.fields.keys() | event.fields.keys()):
            got = new.fields.get(name)
            if name not in event.fields:
                want: set[Scalar] = {stored.fields[name]}
                why = "the event's source does not map it"
            elif name not in stored.fields:
                want = {event.fields[name]}
                why = "only the event has it"
            else:
                v, x = stored.fields[name], event.fields[name]
                if v == x:
                    want, why = {v}, "same on both sides"
                elif le(w.origin_of(v), event.vclock):
                    want = {x}
                    why = f"only the event's side changed it (stored {v!r} is in its past)"
                elif le(w.origin_of(x), stored.clock):
                    want = {v}
                    why = f"only the stored side changed it (event {x!r} is in its past)"
                else:
                    want, why = {v, x}, "both sides changed it"
            if got not in want:
                w.fail(
                    f"conflict on {describe_event(event)} vs stored {describe_state(stored)}: "
                    f"field {name} resolved to {got!r}, expected one of {sorted(map(str, want))} "
                    f"({why})"
                )


class Crm:
    def __init__(self, world: World, name: str, mapped: frozenset[str], skew: int) -> None:
        self.world = world
        self.name = name
        self.actor = name
        self.mapped = mapped
        self.skew = skew
        self.rows: dict[str, Row] = {}
        self.links: dict[str, Link] = {}  # record_id -> link
        self.sids = 0

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.world.tick + self.skew)

    def _link_by_sid(self, sid: str) -> Link | None:
        for link in self.links.values():
            if link.sid == sid:
                return link
        return None

    def _live_sids(self) -> list[str]:
        return sorted(sid for sid, row in self.rows.items() if not row.deleted)

    # -- users ------------------------------------------------------------------------
    def user_create(self) -> None:
        if len(self.world.router.records) + sum(len(c.rows) for c in self.world.crms) > 12:
            return self.user_edit(0)  # keep records few so that they collide
        self.sids += 1
        sid = f"{self.name}-{self.sids}"
        fields: dict[str, Scalar] = {
            n: self.world.new_value(self.name, n) for n in sorted(self.mapped)
        }
        self.world.unpublished.update(fields.values())
        self.rows[sid] = Row(fields, False, 1, self.now())
        self.world.log(f"{self.name}: user creates row {sid} {fields}")
        return None

    def user_edit(self, pick: int) -> None:
        live = self._live_sids()
        if not live:
            return
        names = sorted(self.mapped)
        self.user_set(live[pick % len(live)], names[(pick // 7) % len(names)])

    def user_set(self, sid: str, name: str) -> Scalar:
        """A user types a new (unique) value into one mapped column of row ``sid``."""
        row = self.rows[sid]
        self.world.unpublished.discard(row.fields[name])  # the user replaced it
        row.fields[name] = self.world.new_value(self.name, name)
        self.world.unpublished.add(row.fields[name])
        row.version += 1
        row.updated_at = self.now()
        self.world.log(f"{self.name}: user sets {sid}.{name} = {row.fields[name]}")
        return row.fields[name]

    def sid_of(self, record_id: str) -> str:
        link = self.links[record_id]
        assert link.sid is not None
        return link.sid

    def user_delete(self, pick: int) -> None:
        live = self._live_sids()
        if not live:
            return
        sid = live[pick % len(live)]
        row = self.rows[sid]
        row.deleted = True
        row.version += 1
        row.updated_at = self.now()
        self.world.log(f"{self.name}: user deletes {sid}")

    def user_touch_unmapped(self, pick: int) -> None:
        """Someone edits a column crmsync does not map: the version moves, content does not."""
        sids = sorted(self.rows)
        if not sids:
            return
        sid = sids[pick % len(sids)]
        row = self.rows[sid]
        row.version += 1
        row.updated_at = self.now()
        self.world.log(f"{self.name}: user edits an unmapped column of {sid}")

    # -- capture (SyncEngine._capture_rows) -------------------------------------------
    def capture(self, pick: int | None) -> list[Message]:
        """Capture one row (``pick``) or every row (None)."""
        sids = sorted(self.rows)
        if not sids:
            return []
        if pick is not None:
            sids = [sids[pick % len(sids)]]
        out: list[Message] = []
        for sid in sids:
            row = self.rows[sid]
            link = self._link_by_sid(sid)
            digest = content_hash(row.fields, row.deleted)
            if link is not None and link.content_hash == digest:
                if link.version != row.version:
                    self.links[link.record_id] = replace(link, version=row.version)
                continue
            if link is None and row.deleted:
                self.world.unpublished.difference_update(row.fields.values())
                continue
            out.append(self._local_change(sid, link, dict(row.fields), row.deleted, row))
        return out

    def _local_change(
        self, sid: str, link: Link | None, fields: dict[str, Scalar], deleted: bool, row: Row
    ) -> Message:
        w = self.world
        record_id = link.record_id if link else w.new_id()
        clock = local_clock(link.clock if link else None, self.actor)
        event = ChangeEvent(
            event_id=w.new_id(),
            source=self.name,
            actor=self.actor,
            entity=ENTITY,
            record_id=record_id,
            source_record_id=sid,
            op="delete" if deleted else "upsert",
            clock=clock.to_dict(),
            fields=fields,
            changed=changed_fields(link.fields if link else None, fields),
            occurred_at=row.updated_at,
        )
        w.unpublished.difference_update(fields.values())
        for name in event.changed:
            value = fields[name]
            if value is not None:
                w.origin.setdefault(value, clock)
        self.links[record_id] = Link(
            record_id, sid, clock, content_hash(fields, deleted), fields, row.version, deleted
        )
        w.log(f"{self.name}: publishes {describe_event(event)} changed={event.changed}")
        return ToRouter(event)

    # -- deliveries (SyncEngine._apply) -----------------------------------------------
    def apply(self, event: ChangeEvent) -> list[Message]:
        w = self.world
        link = self.links.get(event.record_id)
        action = delivery_action(event.vclock, link.clock if link else None)
        if action is not DeliveryAction.APPLY:
            w.log(f"{self.name}: receives {describe_event(event)} -> {action.value}")
            return []
        if link is not None and link.sid is None and not link.deleted:
            w.fail("model: live link without a row")
        fields = {n: v for n, v in event.fields.items() if n in self.mapped}
        for _ in range(3):
            row = self.rows.get(link.sid) if link and link.sid else None
            tombstone_only = event.op == "delete" and (link is None or link.deleted)
            expected = link.version if link and not tombstone_only else None
            if row is not None and expected is not None and row.version != expected:
                # VersionMismatch -> _on_miss
                assert link is not None and link.sid is not None
                row_sid = link.sid
                current = dict(row.fields)
                if content_hash(current, row.deleted) == link.content_hash:
                    link = replace(link, version=row.version)  # unmapped columns only: retry
                    continue
                w.log(f"{self.name}: receives {describe_event(event)} -> local-change-first")
                return [self._local_change(row_sid, link, current, row.deleted, row)]
            self._write(event, link, fields)
            w.log(f"{self.name}: receives {describe_event(event)} -> applied")
            return []
        w.fail("write kept missing")
        return []

    def _write(self, event: ChangeEvent, link: Link | None, fields: dict[str, Scalar]) -> None:
        """SyncEngine._write + _record_applied, soft deletes."""
        sid = link.sid if link else None
        back: Row | None
        if event.op == "delete":
            if link is None or sid is None or link.deleted:
                back = None  # nothing here to delete: keep a tombstone only
            else:
                row = self.rows[sid]
                row.deleted = True
                row.version += 1
                row.updated_at = self.now()
                back = row
        else:
            if sid is None:
                sid = event.record_id
                self.rows[sid] = Row(dict.fromkeys(sorted(self.mapped)), False, 0, self.now())
            row = self.rows[sid]
            row.fields.update(fields)
            row.deleted = False
            row.version += 1
            row.updated_at = self.now()
            back = row
        if back is not None:
            new_fields, deleted, version = dict(back.fields), back.deleted, back.version
        else:
            new_fields = link.fields if link else {}
            deleted, version = True, None
            sid = link.sid if link else None
        self.links[event.record_id] = Link(
            event.record_id,
            sid,
            event.vclock,
            content_hash(new_fields, deleted),
            new_fields,
            version,
            deleted,
        )


# -- descriptions for traces ----------------------------------------------------------
def short(record_id: str) -> str:
    return "r" + str(uuid.UUID(record_id).int)


def describe_event(event: ChangeEvent) -> str:
    body = "DELETE" if event.op == "delete" else "upsert"
    return (
        f"{event.source}/{short(event.record_id)} {body} {dict(sorted(event.clock.items()))} "
        f"{dict(sorted(event.fields.items()))}"
    )


def describe_state(state: RecordState | None) -> str:
    if state is None:
        return "<none>"
    flag = " DELETED" if state.deleted else ""
    return f"{dict(sorted(state.clock.items()))}{flag} {dict(sorted(state.fields.items()))}"


def describe(message: Message) -> str:
    if isinstance(message, ToRouter):
        return f"event {describe_event(message.event)}"
    return f"delivery to {message.crm}: {describe_event(message.event)}"
