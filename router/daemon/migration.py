"""Migration batches in the router: split them, then route what they decided to the target.

A batch from the source is split into one delivery per event (each with its own bytes
and the batch's :class:`~router.batches.BatchMeta`), and those are judged and decided
exactly like live events (:func:`router.daemon.pipeline.decide_batch`). What differs is
the target: a migration exists to make the target hold every record, so the target gets
the record's current version even when the event changed nothing in the hub (a record
synced before the target joined is a duplicate for the hub, but new to the target). The
target's copies of one batch travel as one batch message; other subscribers get the
usual per-event deliveries. Each source record's outcome is recorded
(:mod:`router.migration_store`) in the batch's transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from router import identity_store, migration_store, topology
from router.batches import BATCH_HEADER, MIGRATION, BatchMeta, is_batch, pack_batch, unpack_batch
from router.errors import DecodeError
from router.events import ChangeEvent, encode
from router.identity import IdentityOutcome
from router.logs import kv
from router.messages import Delivery, Outgoing
from router.migration_store import LINKED, ROUTED, Item
from router.record import RecordState

if TYPE_CHECKING:
    from router.daemon.pipeline import BatchOutcome, Inbound
    from router.decide import Decision

log = logging.getLogger("crmsync.router")


@dataclass
class Split:
    """An ingress batch with its migration batches split into per-event deliveries."""

    deliveries: list[Delivery] = field(default_factory=list)
    bad: list[tuple[Delivery, DecodeError]] = field(default_factory=list)
    invalid: list[Item] = field(default_factory=list)  # source rows that cannot migrate


def split(batch: Sequence[Delivery]) -> Split:
    out = Split()
    for delivery in batch:
        if not is_batch(delivery.headers):
            out.deliveries.append(delivery)
            continue
        try:
            meta, events = unpack_batch(delivery.body)
        except DecodeError as e:
            out.bad.append((delivery, e))
            continue
        for row in meta.invalid:
            out.invalid.append(
                Item(
                    meta.migration_id,
                    meta.entity,
                    row.source_record_id,
                    None,
                    "invalid",
                    row.reason,
                )
            )
        for body in events:
            out.deliveries.append(
                Delivery(
                    body=body,
                    routing_key=delivery.routing_key,
                    settle=delivery.settle,  # never settled per event: the batch is acked whole
                    message_id=None,
                    user_id=delivery.user_id,
                    redelivered=delivery.redelivered,
                    headers={},
                    batch=meta,
                )
            )
    return out


def state_event(state: RecordState) -> ChangeEvent:
    """The record's current version as an event (what the target must hold)."""
    return ChangeEvent(
        event_id=state.event_id,
        source=state.source,
        actor=state.actor,
        entity=state.entity,
        record_id=state.record_id,
        op="delete" if state.deleted else "upsert",
        clock=state.clock.to_dict(),
        fields=state.fields,
        changed=[],
        occurred_at=state.occurred_at,
        origin="migration",
    )


def _without(item: Outgoing, target: str) -> Outgoing | None:
    """``item`` no longer addressed to ``target`` (None: it had no one else)."""
    targets = [item.routing_key, *item.headers.get("BCC", ())]
    if target not in targets:
        return item
    rest = [t for t in targets if t != target]
    if not rest:
        return None
    headers = {k: v for k, v in item.headers.items() if k != "BCC"}
    if len(rest) > 1:
        headers["BCC"] = rest[1:]
    return Outgoing(item.exchange, rest[0], item.body, item.message_id, headers)


@dataclass
class _ToTarget:
    meta: BatchMeta
    events: list[bytes] = field(default_factory=list)
    linked: list[str] = field(default_factory=list)


def route(
    out: BatchOutcome,
    decided: Sequence[tuple[Inbound, Decision, Outgoing | None, ChangeEvent]],
    states: Mapping[str, RecordState],
    subscribers: Any,
    conn: Connection,
) -> None:
    """Address each migration event's record to its target, and record its outcome.

    ``decided``: every migration event that reached a decision, with the delivery it
    caused and the event as decided (identity matching may have moved it to the record
    its key matched). A record is *linked* when identity matching joined the source's
    record and one the target published (now, or before this migration counted it).
    """
    linked = _linked(out, decided, conn)
    replaced: dict[int, Outgoing | None] = {}
    batches: dict[tuple[str, str, str], _ToTarget] = {}
    for item, decision, outgoing, event in decided:
        meta = item.delivery.batch
        if not isinstance(meta, BatchMeta):
            continue
        state = decision.state or states.get(event.record_id)
        record_id = state.record_id if state else event.record_id
        sid = event.source_record_id
        if state is None or state.parked is not None:
            detail = f"conflict {state.parked} parked for an operator" if state else ""
            out.migration_items.append(
                Item(meta.migration_id, meta.entity, sid, record_id, "parked", detail)
            )
            continue
        if meta.target not in subscribers(meta.entity):
            detail = f"{meta.target} does not map {meta.entity}"
            out.migration_items.append(
                Item(meta.migration_id, meta.entity, sid, record_id, "refused", detail)
            )
            continue
        body: bytes | None = None
        if outgoing is not None and outgoing.message_id == state.event_id:
            targets = [outgoing.routing_key, *outgoing.headers.get("BCC", ())]
            if meta.target in targets:
                body = outgoing.body
                replaced[id(outgoing)] = _without(outgoing, meta.target)
        if body is None:
            body = encode(state_event(state))
        key = (meta.migration_id, meta.target, meta.entity)
        group = batches.get(key)
        if group is None:
            group = batches[key] = _ToTarget(meta)
        group.events.append(body)
        outcome = ROUTED
        if record_id in linked:
            outcome = LINKED
            group.linked.append(record_id)
        out.migration_items.append(Item(meta.migration_id, meta.entity, sid, record_id, outcome))
    if replaced:
        kept: list[Outgoing] = []
        for d in out.deliveries:
            if id(d) in replaced:
                changed = replaced[id(d)]
                if changed is not None:
                    kept.append(changed)
            else:
                kept.append(d)
        out.deliveries = kept
    for (migration_id, target, _), group in batches.items():
        meta = group.meta.model_copy(update={"invalid": [], "linked": group.linked})
        out.deliveries.append(
            Outgoing(
                topology.DELIVERIES,
                target,
                pack_batch(meta, group.events),
                None,
                {BATCH_HEADER: MIGRATION},
            )
        )
        log.debug(
            "migration batch routed",
            extra=kv(migration_id=migration_id, target=target, records=len(group.events)),
        )


def _linked(
    out: BatchOutcome,
    decided: Sequence[tuple[Inbound, Decision, Outgoing | None, ChangeEvent]],
    conn: Connection,
) -> set[str]:
    """Records of these migration events that identity matching joined (see route)."""
    now = {o.record_id for o in out.identity.values() if o.kind == "linked" and o.record_id}
    pairs: dict[tuple[str, str, str], set[str]] = {}
    for item, _, _, event in decided:
        meta = item.delivery.batch
        if isinstance(meta, BatchMeta):
            pairs.setdefault((meta.migration_id, meta.source, meta.target), set()).add(
                event.record_id
            )
    found: set[str] = set()
    a = identity_store.aliases
    for (migration_id, source, target), record_ids in pairs.items():
        ids = list(record_ids)
        for start in range(0, len(ids), 500):
            query = sa.select(a.c.record_id).where(
                a.c.record_id.in_(ids[start : start + 500]),
                a.c.source.in_([source, target]),
                sa.or_(a.c.migration.is_(None), a.c.migration == migration_id),
            )
            found.update(r[0] for r in conn.execute(query))
    return found | now


def parked_identity(out: BatchOutcome, item: Inbound, outcome: IdentityOutcome | None) -> None:
    """A migration event identity matching parked: ambiguous, or a duplicate in the source."""
    meta, event = item.delivery.batch, item.event
    if not isinstance(meta, BatchMeta) or event is None:
        return
    kind = "duplicates" if outcome is not None and outcome.kind == "duplicate" else "ambiguous"
    if outcome is not None and outcome.kind == "duplicate":
        detail = f"same {outcome.key or 'match key'} as record {outcome.record_id}"
    elif outcome is not None:
        detail = f"{outcome.key or 'match key'} matches {len(outcome.candidates)} records"
    else:
        detail = "parked by identity matching"
    out.migration_items.append(
        Item(meta.migration_id, meta.entity, event.source_record_id, event.record_id, kind, detail)
    )


def refused_items(refused: Sequence[Inbound]) -> list[Item]:
    """Migration events the router refused, as outcomes (reason, never values)."""
    found: list[Item] = []
    for item in refused:
        meta = item.delivery.batch
        if isinstance(meta, BatchMeta) and item.event is not None:
            detail = f"{item.reason}: {item.detail}"[:500]
            found.append(
                Item(
                    meta.migration_id,
                    meta.entity,
                    item.event.source_record_id,
                    item.event.record_id,
                    "refused",
                    detail,
                )
            )
    return found


def record(conn: Connection, out: BatchOutcome) -> None:
    """Store the batch's migration outcomes; aliases counted as linked are marked with
    their migration, so a later migration counts them unchanged."""
    migration_store.record(conn, [*out.migration_items, *refused_items(out.refused)])
    linked: dict[str, list[str]] = {}
    for item in out.migration_items:
        if item.outcome == LINKED and item.record_id:
            linked.setdefault(item.migration_id, []).append(item.record_id)
    a = identity_store.aliases
    for migration_id, ids in linked.items():
        for start in range(0, len(ids), 500):
            conn.execute(
                a.update()
                .where(a.c.record_id.in_(ids[start : start + 500]), a.c.migration.is_(None))
                .values(migration=migration_id)
            )
