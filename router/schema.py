"""The router state store's tables, and how records and conflicts are kept in them.

A record is one row per ``record_id`` with a compare-and-set ``version`` and a msgpack
document (clock, fields, per-field clocks and sources); the inbox, outbox, registry,
conflicts and meta tables sit beside it (:mod:`router.state` reads and writes them).
"""

from __future__ import annotations

from typing import Any

import msgpack
import sqlalchemy as sa

from router.clock import VectorClock
from router.conflicts import Conflict
from router.database import Blob, Timestamp
from router.record import RecordState

metadata = sa.MetaData()

records = sa.Table(
    "crmsync_records",
    metadata,
    sa.Column("record_id", sa.String(36), primary_key=True),
    sa.Column("entity", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("deleted", sa.Boolean, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Column("doc", Blob, nullable=False),
)
inbox = sa.Table(
    "crmsync_inbox",
    metadata,
    sa.Column("event_id", sa.String(36), primary_key=True),
    sa.Column("processed_at", Timestamp, nullable=False, index=True),
)
outbox = sa.Table(
    "crmsync_outbox",
    metadata,
    # Ids made by the router (time-ordered, with a per-process nonce): a batch's rows then
    # go in as one executemany. Database-made ids need INSERT ... RETURNING, which SQLite
    # can only do row by row when the order of the ids must match the rows.
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("exchange", sa.String(255), nullable=False),
    sa.Column("routing_key", sa.String(255), nullable=False),
    sa.Column("message_id", sa.String(64)),
    sa.Column("headers", Blob, nullable=False),
    sa.Column("body", Blob, nullable=False),
)
registry = sa.Table(
    "crmsync_registry",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("epoch", sa.Integer, nullable=False),
    sa.Column("entities", Blob, nullable=False),
    sa.Column("sw_version", sa.String(64), nullable=False),
    sa.Column("registered_at", Timestamp, nullable=False),
    sa.Column("last_heartbeat", Timestamp, nullable=False),
)
# Parked conflicts (status "open") and the audit record of every resolution.
conflicts = sa.Table(
    "crmsync_conflicts",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("record_id", sa.String(36), nullable=False, index=True),
    sa.Column("entity", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("opened_at", Timestamp, nullable=False),
    sa.Column("resolved_at", Timestamp, index=True),
    sa.Column("doc", Blob, nullable=False),
)
# Per actor, the highest counter the router issued or accepted (router.watermarks).
actor_counters = sa.Table(
    "crmsync_actor_counters",
    metadata,
    sa.Column("actor", sa.String(80), primary_key=True),
    sa.Column("counter", sa.BigInteger, nullable=False),
    # False once the state was restored from a backup: the counter may be behind.
    sa.Column("exact", sa.Boolean, nullable=False, default=True),
)
meta = sa.Table(
    "crmsync_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
)


def pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, datetime=True, use_bin_type=True)
    return packed


def unpack(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False, timestamp=3)


def record_doc(state: RecordState) -> bytes:
    # Most fields share one clock object (the version that set them): convert it once.
    as_dict: dict[int, dict[str, int]] = {}
    field_clocks = {}
    for name, clock in state.field_clocks.items():
        converted = as_dict.get(id(clock))
        if converted is None:
            converted = as_dict[id(clock)] = clock.to_dict()
        field_clocks[name] = converted
    doc = {
        "clock": state.clock.to_dict(),
        "fields": state.fields,
        "field_clocks": field_clocks,
        "field_sources": state.field_sources,
        "source": state.source,
        "actor": state.actor,
        "event_id": state.event_id,
        "occurred_at": state.occurred_at,
    }
    if state.parked is not None:
        doc["parked"] = state.parked
    return pack(doc)


def record_state(row: sa.Row[Any]) -> RecordState:
    doc = unpack(row.doc)
    return RecordState(
        record_id=row.record_id,
        entity=row.entity,
        clock=VectorClock(doc["clock"]),
        fields=doc["fields"],
        field_clocks={k: VectorClock(v) for k, v in doc["field_clocks"].items()},
        deleted=bool(row.deleted),
        source=doc["source"],
        actor=doc["actor"],
        event_id=doc["event_id"],
        occurred_at=doc["occurred_at"],
        version=row.version,
        field_sources=doc.get("field_sources", {}),
        parked=doc.get("parked"),
    )


def conflict_of(row: sa.Row[Any]) -> Conflict:
    return Conflict.from_doc(row.id, row.record_id, row.entity, unpack(row.doc))
