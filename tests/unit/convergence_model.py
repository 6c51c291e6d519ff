"""A pure model of crmsync for the convergence simulation (issue 3, item 3).

The router side calls the real decision code (``router.decide.decide``); the adapter
side calls the real rules: the capture rule and the missed-write rule
(``adapters.capture.capture_row``, ``write_missed``), the delivery rule
(``adapters.rules.delivery_action``) and the real links (``adapters.links.Link``). Around
them it plays the shell ``adapters.engine.SyncEngine`` is (keep links, write rows, mint
ids) over plain dicts instead of SQL, with soft deletes and a ``version`` token per row
standing for ``updated_at`` (the conditional-write token).
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

Where the oracle is deliberately weaker than exact (each still checks convergence and
that every stored value was written by a user or an operator, never invented): under
``lww`` any of the concurrent values may win (it does not recompute last-writer-wins
from the sides' times); so may it under ``manual`` when the record ends deleted (the
router then decides by lww) and under ``priority`` when one of them is an unset None;
a value a side inherited from a side it superseded counts as known at that side's
clock only if the side's CRM maps the field; and where every value is in another's
past (possible only through earlier resolutions) any of them may win.

The adapters send ``field_versions`` (the counter of the edit that set each value, kept
in their links), so the router attributes every value exactly, and the model checks it
does (:meth:`Router._misattributed`). With ``World(field_versions=False)`` they are an
older version that sends none: where the router then attributes a field of an event
whose parent it never saw wrongly (what a snapshot cannot tell; about 3 % of
schedules), that field of that record is not judged afterwards, in that mode only.

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

from adapters.capture import Content, NewVersion, Publish, Skip, capture_row, write_missed
from adapters.links import Link
from adapters.rules import (
    DeliveryAction,
    content_hash,
    delivery_action,
    versions_after_delivery,
)
from router.clock import EMPTY, Order, VectorClock, compare
from router.conflicts import Conflict, Version
from router.decide import Decision, Verdict, decide, resolve_parked
from router.events import ChangeEvent, Scalar
from router.policies import Choice, Rules, SetValue, TakeSide, side_of
from router.provenance import event_changed, sides_of
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


MAPPED: dict[str, frozenset[str]] = dict(MAPPINGS)
OPERATOR_BY = "operator:sim"


class Violation(AssertionError):
    pass


def le(a: VectorClock, b: VectorClock) -> bool:
    return compare(a, b) in (Order.BEFORE, Order.EQUAL)


def author(value: Scalar) -> str | None:
    """Who typed ``value``: users' and operators' values read ``<source>:<field>:<n>``."""
    return value.split(":", 1)[0] if isinstance(value, str) else None


def taken(conflict: Conflict, source: str, name: str) -> Version | None:
    """The side whose value of ``name`` an operator's ``TakeSide(source)`` means (DESIGN
    ``conflicts resolve``: the value follows its author): a side carrying ``source``'s
    change of it (it may have superseded ``source``'s own side), else ``source``'s own
    side, the latest one if several; only edits in play count (a value some side has
    replaced is not one to take); None when no side offers one."""
    # The router's own reading (policies.side_of over sides_of): the model checks what
    # it yields against the value's true author (Router.resolve_with), not a copy of it.
    index = side_of(sides_of(conflict.sides, conflict.base), source, name)
    return None if index is None else conflict.sides[index]


@dataclass
class Row:
    """One row in a CRM table: mapped columns, soft-delete flag, version token."""

    fields: dict[str, Scalar]
    deleted: bool
    version: int
    updated_at: datetime
    dirty: bool = False  # a user changed it since capture last published it

    @property
    def token(self) -> str:
        """The version as the adapter sees it (SQL: ``updated_at`` cast to text)."""
        return str(self.version)

    def content(self) -> Content:
        return Content(dict(self.fields), self.deleted, self.token)


@dataclass(frozen=True)
class ToRouter:
    event: ChangeEvent


@dataclass(frozen=True)
class ToCrm:
    crm: str
    event: ChangeEvent


Message = ToRouter | ToCrm


@dataclass(frozen=True)
class Holder:
    """A version that holds values in a conflict, for the oracle: a side, or the stored
    state a side superseded. ``knows`` are the fields whose value it holds with the
    knowledge of its whole clock (None: all of them, the router's stored state); a side
    that inherited a field from a side it superseded does not know it at its own clock."""

    label: str
    clock: VectorClock
    fields: Mapping[str, Scalar]
    deleted: bool
    knows: frozenset[str] | None
    side: bool

    def overwrote(self, name: str, origin: VectorClock) -> bool:
        return (self.knows is None or name in self.knows) and le(origin, self.clock)


@dataclass
class World:
    n_crms: int = 3
    skews: tuple[int, ...] = (0, 0, 0, 0, 0)
    rules: Rules = field(default_factory=Rules)
    check_conflicts: bool = True
    seed: int = 0  # the operator's choices
    # False: the adapters are an older version that sends no field_versions (the router
    # bounds attribution then, and the oracle exempts what it cannot attribute)
    field_versions: bool = True
    trace: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tick = 0
        self.ids = 0
        self.values = 0
        self.rng = random.Random(self.seed)
        self.router = Router(self)
        self.crms = [
            Crm(self, name, mapped, self.skews[i])
            for i, (name, mapped) in enumerate(MAPPINGS[: self.n_crms])
        ]
        self.by_name = {c.name: c for c in self.crms}
        self.in_flight: list[Message] = []
        # value -> clock of the event that first published it (or of the resolution an
        # operator typed it in)
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

    def now(self) -> datetime:
        """The hub's wall clock (no skew): when an operator decides."""
        return T0 + timedelta(seconds=self.tick)

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
        elif kind == 8:
            self.operator(b)

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

    def operator(self, pick: int) -> None:
        """An operator resolves one parked conflict (nothing happens when none is)."""
        parked = self.router.parked()
        if parked:
            self.send(self.router.resolve(parked[pick % len(parked)]))

    def choose(self, conflict: Conflict) -> tuple[str | None, dict[str, Choice]]:
        """An operator's random but valid decision: ``--take`` a side's source (with
        ``--field``/``--value`` for undecided fields that side does not hold), or a
        choice per field (every undecided one, and some the policy already decided)."""
        rng = self.rng
        take: str | None = None
        if rng.random() < 0.5:
            take = rng.choice(conflict.sources)
            names = [n for n in conflict.undecided if taken(conflict, take, n) is None]
        else:
            names = [
                n
                for n in sorted(conflict.policies)
                if n in conflict.undecided or rng.random() < 0.3
            ]
        choices: dict[str, Choice] = {}
        for name in names:
            holders = [s for s in conflict.sources if taken(conflict, s, name) is not None]
            if holders and rng.random() < 0.75:
                choices[name] = TakeSide(rng.choice(holders))
            else:
                choices[name] = SetValue(self.new_value(HUB, name))
        return take, choices

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

    def finish(self, rounds: int = 20) -> None:
        """The end of a schedule: drain; an operator resolves whatever is parked (later
        deliveries may park again); until quiet with nothing parked. Then check."""
        for _ in range(rounds):
            self.drain()
            parked = self.router.parked()
            if not parked:
                break
            self.log("-- end of schedule: the operator resolves what is parked")
            for record_id in parked:
                self.tick += 1
                self.send(self.router.resolve(record_id))
        else:
            self.fail(f"still parking conflicts after {rounds} rounds of resolving")
        self.check_converged()

    # -- final checks ---------------------------------------------------------------
    def check_converged(self) -> None:
        if self.unpublished:
            self.fail(f"user edits never published: {sorted(map(str, self.unpublished))}")
        parked = self.router.parked()
        still = [self.router.label(c) for c in self.router.conflicts.values() if not c.settlement]
        if parked or still:
            self.fail(f"parked at the end: records {parked}, open conflicts {still}")
        for record_id, stored in self.router.records.items():
            for crm in self.crms:
                link = crm.links.get(record_id)
                row = crm.row_of(link)
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
                    row = crm.row_of(link)
                    if row is not None and not row.deleted:
                        self.fail(f"{crm.name} record {short(record_id)} never reached the router")
        # Echoes are neutral: capturing what the deliveries wrote publishes nothing.
        for crm in self.crms:
            echoes = crm.capture(None)
            if echoes:
                self.fail(f"{crm.name} publishes after quiescence: {describe(echoes[0])}")


class Router:
    def __init__(self, world: World) -> None:
        self.world = world
        self.records: dict[str, RecordState] = {}
        self.conflicts: dict[str, Conflict] = {}  # by id: parked, and settled (audit)
        self.inbox: set[str] = set()
        # record_id -> the maximal clocks of the events the router took in for it
        self.frontier: dict[str, list[VectorClock]] = {}
        self.labels: dict[str, str] = {}  # conflict id -> c1, c2, ... (ids are random)
        # (record_id, field) an event without field_versions could not attribute (legacy
        # mode, see _misattributed): from then on the lost-edit oracle cannot say which
        # value the router should keep there. Always empty with field_versions.
        self.tainted: set[tuple[str, str]] = set()

    def label(self, conflict: Conflict) -> str:
        return self.labels.setdefault(conflict.id, f"c{len(self.labels) + 1}")

    def parked(self) -> list[str]:
        return sorted(rid for rid, s in self.records.items() if s.parked is not None)

    def parked_in(self, stored: RecordState | None) -> Conflict | None:
        if stored is None or stored.parked is None:
            return None
        return self.conflicts[stored.parked]

    def process(self, event: ChangeEvent) -> list[Message]:
        w = self.world
        stored = self.records.get(event.record_id)
        subscribers = [c.name for c in w.crms]
        parked = self.parked_in(stored)
        if event.event_id in self.inbox:
            # Redelivery: the inbox acks it. Even without the inbox the decision must be
            # neutral: nothing stored, nothing sent.
            again = decide(event, stored, subscribers, HUB, w.rules, parked)
            if again.state is not None or again.delivery is not None or again.conflict:
                w.fail(f"redelivered {describe_event(event)} would change state: {again.verdict}")
            w.log(f"  router: redelivery of {describe_event(event)} acked ({again.verdict.value})")
            return []
        self.inbox.add(event.event_id)
        if stored is not None:
            wrong = self._misattributed(stored, event)
            if wrong and event.field_versions is not None:
                w.fail(f"router misattributes {wrong} of {describe_event(event)}")
            # Only an older producer's event (no field_versions) can be misattributed.
            self.tainted.update((event.record_id, name) for name in wrong)
        decision = decide(event, stored, subscribers, HUB, w.rules, parked)
        verdict = decision.verdict
        about = f" {self.label(decision.conflict)}" if decision.conflict else ""
        w.log(f"  router: {describe_event(event)} -> {verdict.value}{about}")
        if verdict is Verdict.CLOCK_REUSE:
            w.fail(f"clock reuse for {describe_event(event)} (stored {describe_state(stored)})")
        self._note(event.record_id, event.vclock)
        if decision.state is None:
            if decision.delivery is not None or decision.targets or decision.conflict:
                w.fail(f"{verdict} sends or parks something without storing")
            return []
        new = decision.state
        if stored is not None:
            grown = compare(new.clock, stored.clock)
            want = Order.EQUAL if verdict in (Verdict.PARKED, Verdict.HELD) else Order.AFTER
            if grown is not want:
                w.fail(
                    f"{verdict.value}: stored clock {dict(stored.clock)} -> {dict(new.clock)} "
                    f"is {grown.value}, expected {want.value}"
                )
        self._check_values(new)
        if verdict in (Verdict.PARKED, Verdict.HELD):
            self._check_parked(event, stored, decision)
            assert decision.conflict is not None
            self._store(new, decision.conflict)
            return []
        if decision.delivery is None:
            w.fail(f"{verdict} stores a new version but sends nothing")
        assert decision.delivery is not None
        if verdict is Verdict.ACCEPTED:
            if stored is not None and stored.parked is not None:
                w.fail(f"accepted {describe_event(event)} while the record is parked")
            if decision.conflict is not None:
                w.fail("an accepted event comes with a conflict")
            if event.source in decision.targets:
                w.fail(f"accepted {describe_event(event)} is sent back to its origin")
            if stored is not None:
                self._check_accept(event, stored, new)
        elif verdict is Verdict.CONFLICT:
            settled = decision.conflict
            if stored is None or settled is None or settled.settlement is None:
                w.fail("a conflict without a stored side or a settled conflict record")
            assert stored is not None and settled is not None
            if stored.parked is not None and settled.id != stored.parked:
                w.fail(f"{describe_event(event)} settled another conflict than the parked one")
            if decision.delivery.source != HUB or set(decision.targets) != set(subscribers):
                w.fail("a resolution must be a hub version sent to every subscriber")
            if compare(new.clock, event.vclock) is not Order.AFTER:
                w.fail(f"resolution {dict(new.clock)} does not dominate the event")
            self._check_settled(stored, settled, new, decision.delivery, None)
        else:
            w.fail(f"unexpected verdict {verdict} with a new state")
        if decision.delivery.vclock != new.clock or decision.delivery.fields != new.fields:
            w.fail("the delivery is not the stored version")
        self._store(new, decision.conflict)
        w.log(f"    stored {describe_state(new)} -> {list(decision.targets)}")
        return [ToCrm(name, decision.delivery) for name in decision.targets]

    def resolve(self, record_id: str) -> list[Message]:
        """An operator resolves the conflict ``record_id`` is parked in, at random."""
        conflict = self.parked_in(self.records[record_id])
        assert conflict is not None
        take, choices = self.world.choose(conflict)
        return self.resolve_with(record_id, take, choices)

    def resolve_with(
        self,
        record_id: str,
        take: str | None = None,
        choices: Mapping[str, Choice] | None = None,
    ) -> list[Message]:
        """An operator resolves the conflict ``record_id`` is parked in: ``--take`` and
        per-field ``choices``. Returns the resolution for every CRM."""
        w = self.world
        stored = self.records[record_id]
        conflict = self.parked_in(stored)
        assert conflict is not None
        choices = dict(choices or {})
        picked = {n: c.source if isinstance(c, TakeSide) else c.value for n, c in choices.items()}
        w.log(f"operator: resolves {self.label(conflict)} take={take} choices={picked}")
        state, event, settled = resolve_parked(
            stored, conflict, w.rules, HUB, OPERATOR_BY, take=take, choices=choices, now=w.now()
        )
        # What the operator decided, field by field: explicit choices, then --take for
        # every contested field the taken side holds.
        decided: dict[str, Scalar] = {}
        wanted = dict(choices)
        if take is not None:
            for name in conflict.policies:
                wanted.setdefault(name, TakeSide(take))
        for name, choice in wanted.items():
            if isinstance(choice, SetValue):
                w.origin.setdefault(choice.value, state.clock)
                decided[name] = choice.value
                continue
            side = taken(conflict, choice.source, name)
            if side is None:
                continue  # --take: a field that source has no value of is not its to decide
            decided[name] = value = side.fields[name]
            if (record_id, name) in self.tainted:
                continue  # legacy mode: its author may be misattributed (_misattributed)
            if side.source != choice.source and author(value) != choice.source:
                w.fail(
                    f"operator: took {choice.source}'s {name} but {side.source}'s side holds "
                    f"{value!r}, which {choice.source} did not write"
                )
        if compare(state.clock, stored.clock) is not Order.AFTER:
            w.fail(f"operator: stored clock {dict(stored.clock)} -> {dict(state.clock)}")
        if settled.id != conflict.id or settled.settlement is None:
            w.fail("operator: the conflict is not settled")
        assert settled.settlement is not None
        if settled.settlement.by != OPERATOR_BY:
            w.fail(f"operator: settled by {settled.settlement.by}")
        if event.source != HUB or event.vclock != state.clock or event.fields != state.fields:
            w.fail("operator: the resolution sent is not the stored hub version")
        if (event.op == "delete") != state.deleted:
            w.fail("operator: the resolution's op does not match the stored state")
        self._check_values(state)
        self._check_settled(stored, settled, state, event, decided)
        self._store(state, settled)
        w.log(f"    stored {describe_state(state)} -> every CRM")
        return [ToCrm(c.name, event) for c in w.crms]

    def _store(self, new: RecordState, conflict: Conflict | None) -> None:
        self.records[new.record_id] = new
        if conflict is not None:
            self.conflicts[conflict.id] = conflict
        self._check_covered(new.record_id)

    # -- invariants ---------------------------------------------------------------------
    def _note(self, record_id: str, clock: VectorClock) -> None:
        frontier = self.frontier.setdefault(record_id, [])
        if any(le(clock, c) for c in frontier):
            return
        frontier[:] = [c for c in frontier if not le(c, clock)]
        frontier.append(clock)

    def _check_covered(self, record_id: str) -> None:
        """Every update the router took in is covered by the stored clock or is (in the
        past of) a side of the conflict the record is parked in: nothing is dropped."""
        stored = self.records[record_id]
        covers = [stored.clock]
        conflict = self.parked_in(stored)
        if conflict is not None:
            covers += [v.clock for v in conflict.sides]
        for clock in self.frontier.get(record_id, ()):
            if not any(le(clock, c) for c in covers):
                self.world.fail(
                    f"update {dict(clock)} of {short(record_id)} is neither covered by the "
                    f"stored clock {dict(stored.clock)} nor a side of a parked conflict"
                )

    def _check_values(self, state: RecordState) -> None:
        """A stored value was written by someone (a user or an operator), never invented."""
        for name, value in state.fields.items():
            if value is not None and value not in self.world.origin:
                self.world.fail(f"{short(state.record_id)}.{name} = {value!r}: nobody wrote it")

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

    def _check_parked(
        self, event: ChangeEvent, stored: RecordState | None, decision: Decision
    ) -> None:
        """PARKED opens a conflict, HELD joins the parked one; either way nothing is sent,
        the record is unchanged but for the marker, and only a field several sides
        really changed waits for an operator."""
        w = self.world
        conflict, verdict = decision.conflict, decision.verdict
        if stored is None or conflict is None:
            w.fail(f"{verdict} without a stored record or a conflict")
        assert stored is not None and conflict is not None
        sides = conflict.sides
        w.log(
            f"    {self.label(conflict)} waits for an operator on {list(conflict.undecided)}; "
            + "; ".join(f"{v.source} {dict(v.clock)} changed={sorted(v.changed)}" for v in sides)
        )
        if verdict is Verdict.PARKED and stored.parked is not None:
            w.fail("a parked record parked again in a new conflict")
        if verdict is Verdict.HELD and conflict.id != stored.parked:
            w.fail("a held event joined another conflict than the parked one")
        if conflict.settlement is not None or not conflict.undecided:
            w.fail(f"{verdict}: the conflict is settled or has nothing undecided")
        if decision.delivery is not None or decision.targets:
            w.fail(f"{verdict} sends something")
        if decision.state != replace(stored, parked=conflict.id):
            w.fail(f"{verdict} changed the record beyond its parked marker")
        if event.event_id not in {v.event_id for v in sides}:
            w.fail(f"{verdict}: {describe_event(event)} is not a side of its conflict")
        for i, a in enumerate(sides):
            for b in sides[i + 1 :]:
                if compare(a.clock, b.clock) is not Order.CONCURRENT:
                    w.fail(f"sides {dict(a.clock)} and {dict(b.clock)} are not concurrent")
        for name in conflict.undecided:
            # Which sides' edits contest is the router's to decide from provenance
            # (sides_of; the oracle below judges it): a side may carry another's edit.
            values = {v.fields[name] for v in sides if name in v.fields}
            if w.rules.for_field(name) != "manual" or name not in conflict.policies:
                w.fail(f"{name} waits for an operator but its policy is not manual")
            if len(values) < 2:
                w.fail(f"{name} parked with one value among the sides ({values})")
        if not w.check_conflicts:
            return
        deleted = self._deleted(sides)
        if deleted:
            w.fail(f"{verdict}: a deleted outcome waits for an operator")
        holders = self._holders(stored, sides)
        for name in sorted(set(stored.fields).union(*(v.fields for v in sides))):
            surviving, why, exact = self._survivors(name, holders, deleted)
            if not exact or (stored.record_id, name) in self.tainted:
                continue  # legacy mode only (see _misattributed)
            contested = len(surviving) > 1
            if name in conflict.undecided and not contested:
                w.fail(f"{name} waits for an operator but only one side changed it: {why}")
            if contested and w.rules.for_field(name) == "manual" and name not in conflict.undecided:
                w.fail(f"{name} is contested under manual but does not wait: {why}")

    def _check_settled(
        self,
        stored: RecordState,
        settled: Conflict,
        new: RecordState,
        delivery: ChangeEvent,
        decided: dict[str, Scalar] | None,
    ) -> None:
        """A resolution (by policy, or by the operator's ``decided`` values) dominates all
        its inputs and is recorded; with the oracle on, it keeps every edit it must."""
        w = self.world
        assert settled.settlement is not None
        if new.parked is not None:
            w.fail("a resolution leaves the record parked")
        if settled.settlement.clock != new.clock or settled.settlement.event_id != (
            delivery.event_id
        ):
            w.fail("the settlement does not record the resolution sent")
        for clock in (stored.clock, *(v.clock for v in settled.sides)):
            if compare(new.clock, clock) is not Order.AFTER:
                w.fail(f"resolution {dict(new.clock)} does not dominate input {dict(clock)}")
        if w.check_conflicts:
            self._check_outcome(stored, settled.sides, new, decided)

    # -- the oracle -------------------------------------------------------------------------
    def _deleted(self, sides: Iterable[Version]) -> bool:
        flags = {v.deleted for v in sides}
        if len(flags) == 2:
            return self.world.rules.deletes == "delete-wins"
        return flags == {True}

    def _holders(self, stored: RecordState, sides: Iterable[Version]) -> list[Holder]:
        sides = list(sides)
        out: list[Holder] = []
        if stored.event_id not in {v.event_id for v in sides}:
            out.append(Holder("stored", stored.clock, stored.fields, stored.deleted, None, False))
        for v in sides:
            full = v.event_id == stored.event_id or v.source == HUB
            out.append(
                Holder(
                    v.source, v.clock, v.fields, v.deleted, None if full else MAPPED[v.source], True
                )
            )
        return out

    def _survivors(
        self, name: str, holders: list[Holder], deleted: bool
    ) -> tuple[set[Scalar], str, bool]:
        """The values of ``name`` nobody overwrote knowingly: the ones one of which a
        resolution must keep (a field's policy chooses when there are several). False
        as the third item when the oracle cannot tell (every value is in another's past)."""
        w = self.world
        values: dict[Scalar, list[Holder]] = {}
        for h in holders:
            if name in h.fields:
                values.setdefault(h.fields[name], []).append(h)
        overwritten: dict[Scalar, str] = {}
        for value in values:
            origin = w.origin_of(value)
            for other, hs in values.items():
                by = next((h for h in hs if other != value and h.overwrote(name, origin)), None)
                if by is not None:
                    overwritten[value] = f"{value!r} in the past of {by.label} {dict(by.clock)}"
                    break
        surviving = set(values) - set(overwritten)
        why = "; ".join(overwritten.values()) or "nothing overwritten"
        if not surviving:
            return set(values), why, False
        if not deleted and any(h.side and h.deleted for h in holders):
            # update-wins: a side that deleted the record competes only where no side that
            # kept it changed the field
            alive = {v for v in surviving if any(h.side and not h.deleted for h in values[v])}
            if alive:
                surviving = alive
        return surviving, why, True

    def _misattributed(self, stored: RecordState, event: ChangeEvent) -> list[str]:
        """Fields whose value the router attributes to the wrong line of history: it says
        the event's line set it in a version the stored side has not seen
        (``router.provenance.event_changed``) and that is false, or the other way round.
        The model knows the truth: ``origin`` is the clock of the event that first
        published each value.

        With ``field_versions`` the attribution is exact: any field here is a violation.
        Without them (an older producer: ``World.field_versions`` off) the router bounds,
        and a snapshot cannot attribute one case: an event whose parent the router never
        saw (its actor's counter jumped) carries a value differing from the stored one
        for a field the stored side also changed since the event's base; its unseen
        parent may have edited the field too (a real contest), or the event may only
        carry the value from before the stored edit. ``event_changed`` then picks per
        policy; where it is wrong, the oracle does not judge that field of that record
        afterwards in that legacy mode only (a wrong attribution carries into later
        resolutions); convergence and every other check still hold there."""
        actor = event.actor
        exact = event.field_versions is not None
        jumped = stored.clock.get(actor) < event.vclock.get(actor) - 1
        if (not exact and not jumped) or le(event.vclock, stored.clock):
            return []  # nothing to attribute: the legacy rule is exact, or the event is stale
        base = event.vclock.base(actor)
        claimed = event_changed(event, stored, self.world.rules)
        out = []
        for name, value in event.fields.items():
            if stored.fields.get(name) == value:
                continue
            clock = stored.field_clocks.get(name)
            ambiguous = clock is not None and compare(clock, base) in (
                Order.AFTER,
                Order.CONCURRENT,
            )
            if not exact and not ambiguous:
                continue
            # The truth, which the model knows: did this line of history write the value
            # in a version the stored side has not seen?
            truly = self.world.origin_of(value).get(actor) > stored.clock.get(actor)
            if truly != (name in claimed):
                out.append(name)
        return out

    def _check_outcome(
        self,
        stored: RecordState,
        sides: tuple[Version, ...],
        new: RecordState,
        decided: dict[str, Scalar] | None,
    ) -> None:
        """The lost-edit oracle for one resolution of ``sides`` over ``stored``.

        * the delete rule decides delete against update;
        * an operator's choice is kept;
        * a value nobody overwrote knowingly, when it is the only one, is kept (one-sided
          edits survive under every policy: that is field-merge);
        * several such values are a real contest: under ``priority`` one by the
          highest-ranked author survives; under ``manual`` only an operator may decide
          (unless the record ends deleted: then lww decides); under ``lww`` any of them
          (the oracle does not recompute last-writer-wins: weaker, still no lost or
          invented value)."""
        w = self.world
        want_deleted = self._deleted(sides)
        where = f"{short(stored.record_id)} (stored {describe_state(stored)})"
        if new.deleted != want_deleted:
            w.fail(f"resolution of {where}: deleted={new.deleted}, rule {w.rules.deletes}")
        holders = self._holders(stored, sides)
        for name in sorted(set(stored.fields).union(*(v.fields for v in sides))):
            got = new.fields.get(name)
            if decided is not None and name in decided:
                want, why = {decided[name]}, "the operator's choice"
            elif (stored.record_id, name) in self.tainted:
                continue  # legacy mode only: events without field_versions (_misattributed)
            else:
                want, why, exact = self._survivors(name, holders, want_deleted)
                policy = w.rules.for_field(name)
                # Not exact: every value is in another's past, any of them may win (see
                # the module docstring), so there is no contest an operator must decide.
                if exact and len(want) > 1 and policy == "manual" and not want_deleted:
                    w.fail(
                        f"resolution of {where}: {name} is contested under manual "
                        f"({sorted(map(str, want))}) but no operator decided it"
                    )
                if exact and len(want) > 1 and policy == "priority" and None not in want:
                    ranks = {v: w.rules.rank(str(author(v))) for v in want}
                    best = min(ranks.values())
                    want = {v for v, rank in ranks.items() if rank == best}
                    why += f"; priority {list(w.rules.priority)} over the authors"
            if got not in want:
                w.fail(
                    f"resolution of {where}: field {name} = {got!r}, expected one of "
                    f"{sorted(map(str, want))} ({why}); sides: "
                    + "; ".join(
                        f"{v.source} {dict(v.clock)} {'DELETED ' if v.deleted else ''}"
                        f"changed={sorted(v.changed)} {dict(sorted(v.fields.items()))}"
                        for v in sides
                    )
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
            if link.source_record_id == sid:
                return link
        return None

    def row_of(self, link: Link | None) -> Row | None:
        sid = link.source_record_id if link is not None else None
        return self.rows.get(sid) if sid is not None else None

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
        self.rows[sid] = Row(fields, False, 1, self.now(), dirty=True)
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
        row.dirty = True
        row.updated_at = self.now()
        self.world.log(f"{self.name}: user sets {sid}.{name} = {row.fields[name]}")
        return row.fields[name]

    def sid_of(self, record_id: str) -> str:
        link = self.links[record_id]
        assert link.source_record_id is not None
        return link.source_record_id

    def user_delete(self, pick: int) -> None:
        live = self._live_sids()
        if not live:
            return
        sid = live[pick % len(live)]
        row = self.rows[sid]
        row.deleted = True
        row.version += 1
        row.updated_at = self.now()
        row.dirty = True
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
            decision = capture_row(row.content(), link, actor=self.actor, soft_deletes=True)
            if isinstance(decision, NewVersion):
                assert link is not None
                self.links[link.record_id] = link.evolve(version=decision.version)
            elif decision is Skip.UNSHARED:
                # Deleted before anyone saw it: its values are not owed to anyone.
                self.world.unpublished.difference_update(row.fields.values())
                row.dirty = False
            elif isinstance(decision, Publish):
                out.append(self._local_change(sid, decision, row))
            elif decision is not Skip.ECHO:
                self.world.fail(f"{self.name}: soft deletes, yet capture says {decision}")
        return out

    def _local_change(self, sid: str, change: Publish, row: Row) -> Message:
        """adapters.outbox.Outbox.record: publish ``change`` and keep it as the link."""
        w = self.world
        if not row.dirty:
            # Echoes are neutral: content only a delivery wrote is never published again.
            w.fail(f"{self.name}: publishes {sid}, which no user changed since it was written")
        row.dirty = False
        record_id = change.record_id or w.new_id()
        event = change.event(
            event_id=w.new_id(),
            record_id=record_id,
            source=self.name,
            actor=self.actor,
            entity=ENTITY,
            source_record_id=sid,
            occurred_at=row.updated_at,
        )
        if not w.field_versions:
            event = event.model_copy(update={"field_versions": None})
        elif event.field_versions is None:
            w.fail(f"{self.name}: an event without field_versions from a link that knows them")
        w.unpublished.difference_update(event.fields.values())
        for name in event.changed:
            value = event.fields[name]
            if value is not None:
                w.origin.setdefault(value, change.clock)
        self.links[record_id] = Link(
            record_id=record_id,
            entity=ENTITY,
            source_record_id=sid,
            clock=change.clock,
            content_hash=change.content_hash,
            fields=dict(change.content.fields),
            version=change.content.version,
            deleted=change.content.deleted,
            field_versions=change.field_versions,
        )
        w.log(f"{self.name}: publishes {describe_event(event)} changed={event.changed}")
        return ToRouter(event)

    # -- deliveries (SyncEngine._apply) -----------------------------------------------
    def apply(self, event: ChangeEvent) -> list[Message]:
        w = self.world
        if event.source == self.name:
            w.fail(f"{self.name} receives its own {describe_event(event)} back")
        link = self.links.get(event.record_id)
        action = delivery_action(event.vclock, link.clock if link else None)
        if action is not DeliveryAction.APPLY:
            w.log(f"{self.name}: receives {describe_event(event)} -> {action.value}")
            return []
        if link is not None and link.source_record_id is None and not link.deleted:
            w.fail("model: live link without a row")
        fields = {n: v for n, v in event.fields.items() if n in self.mapped}
        for _ in range(3):
            row = self.row_of(link)
            tombstone_only = event.op == "delete" and (link is None or link.deleted)
            expected = link.version if link and not tombstone_only else None
            if row is not None and expected is not None and row.token != expected:
                # VersionMismatch -> _on_miss
                assert link is not None and link.source_record_id is not None
                outcome = write_missed(link, row.content(), actor=self.actor)
                if isinstance(outcome, NewVersion):
                    link = link.evolve(version=outcome.version)  # unmapped columns only: retry
                    continue
                w.log(f"{self.name}: receives {describe_event(event)} -> local-change-first")
                return [self._local_change(link.source_record_id, outcome, row)]
            self._write(event, link, fields)
            w.log(f"{self.name}: receives {describe_event(event)} -> applied")
            return []
        w.fail("write kept missing")
        return []

    def _write(self, event: ChangeEvent, link: Link | None, fields: dict[str, Scalar]) -> None:
        """SyncEngine._write + _record_applied, soft deletes."""
        sid = link.source_record_id if link else None
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
        version: str | None
        if back is not None:
            new_fields, deleted, version = dict(back.fields), back.deleted, back.token
        else:
            new_fields = link.fields if link else {}
            deleted, version = True, None
            sid = link.source_record_id if link else None
        self.links[event.record_id] = Link(
            record_id=event.record_id,
            entity=ENTITY,
            source_record_id=sid,
            clock=event.vclock,
            content_hash=content_hash(new_fields, deleted),
            fields=new_fields,
            version=version,
            deleted=deleted,
            field_versions=versions_after_delivery(
                link.field_versions if link else None,
                link.fields if link else {},
                new_fields,
                self.actor,
            ),
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
