"""The router's batch pipeline over plain values: judge -> decide -> what to store and send.

No broker here: deliveries come in as :class:`~router.messages.Delivery` values and what
must be published goes out as :class:`~router.messages.Outgoing` values, so the whole
path is testable with :mod:`router.broker.memory` or with hand-made values. The rules
live in :mod:`router.decide`; this module only applies them to a batch.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from router import topology, watermark_store
from router.authz import Principals
from router.conflicts import Conflict
from router.daemon import migration
from router.daemon.context import RouterContext
from router.daemon.identity_step import IdentityStep
from router.decide import Decision, Verdict, decide
from router.errors import DecodeError
from router.events import ChangeEvent, decode, encode
from router.identity import IdentityOutcome, IdentityWrites
from router.logs import kv
from router.messages import Delivery, Outgoing
from router.migration_store import Item
from router.record import RecordState
from router.tracebacks import bounded, one_line
from router.watermarks import BatchMarks

log = logging.getLogger("crmsync.router")


@dataclass(slots=True)  # one per message: not frozen (see router.messages.Outgoing)
class Inbound:
    """One message of a batch as judged before any state is read: an event to decide,
    a refusal for the invalid queue, or a second copy of an event already in the batch."""

    delivery: Delivery
    event: ChangeEvent | None = None
    reason: str | None = None  # why it is refused
    detail: str = ""
    repeat: bool = False  # the same event earlier in this batch (a redelivery overtook its ack)
    traceback: str = ""  # of an internal error (x-crmsync-traceback)


INTERNAL_ERROR = "internal-error"
TOO_LARGE = "too-large"


def internal_error(delivery: Delivery, event: ChangeEvent | None, err: BaseException) -> Inbound:
    """A refusal for one message the router failed on: it goes to the invalid queue
    (bytes unchanged) instead of halting every other event behind it."""
    log.error(
        "internal error on one event; refused to the invalid queue",
        extra=kv(
            message_id=delivery.message_id or "",
            event_id=event.event_id if event else "",
            record_id=event.record_id if event else "",
            error_type=type(err).__name__,
        ),
    )
    return Inbound(delivery, event, INTERNAL_ERROR, one_line(err), traceback=bounded(err))


def judge(
    deliveries: Sequence[Delivery],
    registered: Container[str],
    principals: Principals,
    max_bytes: int = 1 << 20,
) -> list[Inbound]:
    """Decode and check who published each message; one :class:`Inbound` per message."""
    judged: list[Inbound] = []
    seen: set[str] = set()
    for delivery in deliveries:
        size = len(delivery.body)
        if size > max_bytes:  # before decoding: its cost grows with the size
            detail = f"{size} bytes, over router.max_event_bytes = {max_bytes}"
            judged.append(Inbound(delivery, reason=TOO_LARGE, detail=detail))
            continue
        try:
            event = decode(delivery.body)
        except DecodeError as e:
            judged.append(Inbound(delivery, reason=e.reason, detail=e.detail))
            continue
        except Exception as e:  # a bug in decoding must not halt the batch
            judged.append(internal_error(delivery, None, e))
            continue
        spoofed = principals.event_refusal(event.source, delivery.routing_key, delivery.user_id)
        if spoofed is not None:
            judged.append(Inbound(delivery, reason="spoofed-source", detail=spoofed))
        elif event.source not in registered:
            detail = f"source {event.source!r} never registered"
            judged.append(Inbound(delivery, reason="unregistered-source", detail=detail))
        elif event.event_id in seen:
            judged.append(Inbound(delivery, event, repeat=True))
        else:
            seen.add(event.event_id)
            judged.append(Inbound(delivery, event))
    return judged


@dataclass
class BatchOutcome:
    """What one batch decided: to store, to send, to refuse, and the verdict counts."""

    processed: list[str] = field(default_factory=list)  # event ids that had an effect
    states: list[RecordState] = field(default_factory=list)
    deliveries: list[Outgoing] = field(default_factory=list)
    refused: list[Inbound] = field(default_factory=list)
    verdicts: Counter[str] = field(default_factory=Counter)
    conflicts: dict[str, Conflict] = field(default_factory=dict)  # opened, joined, settled
    outbox_ids: list[str] = field(default_factory=list)  # of ``deliveries``, once committed
    marks: BatchMarks | None = None  # the actors' counters this batch raised
    migration_items: list[Item] = field(default_factory=list)  # outcomes of migrated records
    # By the event's original id: what identity matching did (router.identity).
    identity: dict[str, IdentityOutcome] = field(default_factory=dict)
    identity_writes: IdentityWrites = field(default_factory=IdentityWrites)

    def absorb(self, other: BatchOutcome) -> None:
        """Add a part of the batch committed on its own (see router.daemon.isolation)."""
        self.processed += other.processed
        self.states += other.states
        self.deliveries += other.deliveries
        self.refused += other.refused
        self.verdicts.update(other.verdicts)
        self.conflicts.update(other.conflicts)
        self.outbox_ids += other.outbox_ids
        self.migration_items += other.migration_items
        self.identity.update(other.identity)
        self.identity_writes.absorb(other.identity_writes)

    def messages(self) -> list[Outgoing]:
        """Everything to publish: the deliveries, then each refusal to the invalid queue."""
        return [*self.deliveries, *(refusal(r) for r in self.refused)]


def decide_batch(
    ctx: RouterContext,
    judged: Sequence[Inbound],
    conn: Connection,
    unmatched: Container[str] = frozenset(),
) -> BatchOutcome:
    """Runs inside the batch's transaction: dedup, identity matching, decide.
    ``unmatched``: record ids an operator declared new (never matched)."""
    store = ctx.store
    out = BatchOutcome(refused=[i for i in judged if i.reason is not None])
    inbound = [i for i in judged if i.event is not None and not i.repeat]
    # Only a message the broker marks redelivered can repeat an event this router
    # processed (its ack was lost). A first delivery that duplicates an earlier
    # publish (an adapter republishing after a crash) carries an equal or older
    # clock and is dropped by the clock comparison below: no second effect either way.
    again = [i.event.event_id for i in inbound if i.event and i.delivery.redelivered]
    already = store.seen(again, conn) if again else set()
    if already:
        out.verdicts["duplicate"] += len(already)
    fresh = [i for i in inbound if i.event and i.event.event_id not in already]
    events = [i.event for i in fresh if i.event]
    step = IdentityStep.prepare(store, events, conn, unmatched)
    ids = step.record_ids(events) if step else {e.record_id for e in events}
    states = store.load(ids, conn)
    if step is not None:
        step.look_up(events, states, conn)
    parked = store.load_conflicts((s.parked for s in states.values() if s.parked), conn)
    changed: dict[str, RecordState] = {}
    migrating: list[tuple[Inbound, Decision, Outgoing | None, ChangeEvent]] = []
    marks = out.marks = ctx.marks.batch()
    reread = False
    for item in fresh:
        event = item.event
        assert event is not None
        refused = marks.refusal(event.clock, event.actor)
        if refused is not None and not reread:
            # Another router sharing the store may have accepted what this one has not
            # seen yet: its marks are read once per batch, only when a clock looks wrong.
            reread = True
            ctx.marks.merge_stored(watermark_store.load(conn))
            refused = marks.refusal(event.clock, event.actor)
        if refused is not None:
            out.refused.append(Inbound(item.delivery, event, *refused))
            continue
        if step is not None:
            routed = step.route(event, item.delivery.body, states)
            if routed.outcome is not None:
                out.identity[event.event_id] = routed.outcome
            if routed.event is None:
                out.verdicts[routed.verdict or "parked"] += 1
                if item.delivery.batch is not None:
                    migration.parked_identity(out, item, routed.outcome)
                continue
            if routed.outcome is not None:
                out.verdicts["linked"] += 1
            event = routed.event
        stored = states.get(event.record_id)
        try:
            decision = decide(
                event,
                stored,
                ctx.subscribers(event.entity),
                store.hub_actor,
                ctx.rules_for(event.entity),
                parked.get(stored.parked) if stored and stored.parked else None,
            )
            outgoing = None
            if decision.delivery is not None and decision.targets:
                # Nothing overlaid: the producer's own (validated) bytes are this version.
                own = decision.delivery is event and event is item.event
                body = item.delivery.body if own else None
                outgoing = delivery(decision.delivery, decision.targets, body)
        except Exception as e:  # judging one event failed: only that event is refused
            out.refused.append(internal_error(item.delivery, event, e))
            continue
        out.verdicts[decision.verdict.value] += 1
        if item.delivery.batch is not None:
            migrating.append((item, decision, outgoing, event))
        if decision.conflict is not None:
            out.conflicts[decision.conflict.id] = parked[decision.conflict.id] = decision.conflict
            _log_conflict(event, decision.verdict, decision.conflict)
        # A migration event is the version the source holds, not a new one: where its
        # CRM normalised a delivered value, the content differs under the same clock.
        if decision.verdict is Verdict.CLOCK_REUSE and item.delivery.batch is None:
            detail = f"clock {event.clock} equals the stored clock, content differs"
            out.refused.append(Inbound(item.delivery, event, "clock-reuse", detail))
            continue
        if decision.state is not None:
            # The inbox remembers events that had an effect. Such an event cannot be
            # there already (a second copy's clock is then <= the stored one), and a
            # stale or duplicate one is judged the same way again when redelivered.
            out.processed.append(event.event_id)
            states[event.record_id] = changed[event.record_id] = decision.state
            # Both: a parked record's clock does not hold the event's own counter yet,
            # and a resolution's holds the hub's next one.
            marks.observe(event.clock)
            marks.observe(decision.state.clock)
            if step is not None:
                step.stored(event, decision.state)
        if outgoing is not None:
            out.deliveries.append(outgoing)
    out.states = list(changed.values())
    if migrating:
        migration.route(out, migrating, states, ctx.subscribers, conn)
    if step is not None:
        step.add_headers(out.deliveries, conn)
        out.identity_writes = step.writes
    return out


def delivery(event: ChangeEvent, targets: Sequence[str], body: bytes | None = None) -> Outgoing:
    """One publish per event; the other targets ride in ``BCC`` (sender-selected distribution)."""
    first, *rest = targets
    headers: dict[str, Any] = {topology.RECORD_KEY_HEADER: event.record_id}
    if rest:
        headers["BCC"] = rest
    return Outgoing(topology.DELIVERIES, first, body or encode(event), event.event_id, headers)


def refusal(item: Inbound) -> Outgoing:
    """The refused message, byte for byte, to the invalid queue with the reason."""
    headers: dict[str, Any] = {
        topology.REASON_HEADER: item.reason or "refused",
        topology.DETAIL_HEADER: item.detail[:1000],
    }
    if item.traceback:
        headers[topology.TRACEBACK_HEADER] = item.traceback
    return Outgoing("", topology.INVALID, item.delivery.body, item.delivery.message_id, headers)


def _log_conflict(event: ChangeEvent, verdict: Verdict, conflict: Conflict) -> None:
    """One line per conflict event; field names and sources, never values (customer data)."""
    common: dict[str, Any] = {
        "event_id": event.event_id,
        "record_id": event.record_id,
        "adapter": event.source,
        "conflict_id": conflict.id,
        "fields": ",".join(sorted(conflict.policies)),
        "sources": ",".join(conflict.sources),
    }
    if verdict is Verdict.PARKED:
        log.warning("conflict parked for an operator", extra=kv(**common))
    elif verdict is Verdict.HELD:
        log.info("event held behind a parked conflict", extra=kv(**common))
    elif conflict.settlement is not None:
        policies = ",".join(sorted(set(conflict.policies.values()))) or "merge"
        log.info(
            "conflict resolved",
            extra=kv(**common, policy=policies, resolution=conflict.settlement.event_id),
        )
