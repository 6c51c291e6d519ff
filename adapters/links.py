"""Per-record links: what this adapter knows of each record it shares with the hub.

A link holds the record's global id, its id inside the CRM, the clock last applied or
emitted, the content hash and fields of that version, the CRM's version token
(``updated_at`` as stored), a tombstone flag, per field the counter of our edit that set
the value (``field_versions``, what events carry), and — while a local change waits for its
broker confirm — the encoded event with its id and routing key (the adapter outbox), so
publishing it needs no decoding. Links live in the same database as the data
(``crmsync_link``) so a data write and its bookkeeping commit in one transaction; a
crash can never separate them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import msgpack
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from adapters.rules import FieldVersions
from router.clock import VectorClock
from router.database import Blob
from router.events import Scalar, decode

link_metadata = sa.MetaData()

link_table = sa.Table(
    "crmsync_link",
    link_metadata,
    sa.Column("record_id", sa.String(36), primary_key=True),
    sa.Column("entity", sa.String(64), nullable=False),
    sa.Column("source_record_id", sa.String(255), nullable=True),
    sa.Column("clock", Blob, nullable=False),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("fields", Blob, nullable=False),
    sa.Column("version", sa.String(64), nullable=True),
    sa.Column("deleted", sa.Boolean, nullable=False),
    sa.Column("published", sa.Boolean, nullable=False),
    sa.Column("pending_event", Blob, nullable=True),
    # Added after the first release: create() adds them to older tables, where the rows
    # already pending have them NULL (pending() decodes those).
    sa.Column("pending_event_id", sa.String(36), nullable=True),
    sa.Column("pending_routing_key", sa.String(255), nullable=True),
    # msgpack [actor, {field: counter}]; NULL: unknown (rows of an older version)
    sa.Column("field_versions", Blob, nullable=True),
    sa.UniqueConstraint("entity", "source_record_id", name="crmsync_link_source"),
)
sa.Index("crmsync_link_pending", link_table.c.published)
# What this adapter did, as a migration's target, with each record it was sent: written
# in the transaction of the write itself, so the counts `crmsync migrate` reports are
# exact across any crash. The first outcome of a record stays (a redelivered batch
# would otherwise turn "created" into "unchanged").
migration_log = sa.Table(
    "crmsync_migration_log",
    link_metadata,
    sa.Column("migration_id", sa.String(32), primary_key=True),
    sa.Column("record_id", sa.String(36), primary_key=True),
    sa.Column("entity", sa.String(64), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("detail", sa.String(500), nullable=False),
)


@dataclass(frozen=True)
class Link:
    record_id: str
    entity: str
    source_record_id: str | None
    clock: VectorClock
    content_hash: str
    fields: dict[str, Scalar]
    version: str | None
    deleted: bool
    published: bool = True
    pending_event: bytes | None = None  # the encoded local change awaiting its confirm
    pending_event_id: str | None = None  # ... its event id
    pending_routing_key: str | None = None  # ... and its routing key
    field_versions: FieldVersions | None = None  # who set each value (None: unknown)

    def evolve(self, **changes: Any) -> Link:
        return replace(self, **changes)


@dataclass(frozen=True)
class OutboxEntry:
    """A local change owed to the broker: what publishing it needs, without decoding."""

    record_id: str
    event_id: str
    routing_key: str
    body: bytes  # the encoded event


def _pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def _row_to_link(row: sa.Row[Any]) -> Link:
    return Link(
        record_id=row.record_id,
        entity=row.entity,
        source_record_id=row.source_record_id,
        clock=VectorClock(msgpack.unpackb(row.clock, raw=False)),
        content_hash=row.content_hash,
        fields=msgpack.unpackb(row.fields, raw=False),
        version=row.version,
        deleted=bool(row.deleted),
        published=bool(row.published),
        pending_event=row.pending_event,
        pending_event_id=row.pending_event_id,
        pending_routing_key=row.pending_routing_key,
        field_versions=_unpack_versions(row.field_versions),
    )


def _pack_versions(versions: FieldVersions | None) -> bytes | None:
    if versions is None:
        return None
    return _pack([versions.actor, dict(versions.counters)])


def _unpack_versions(raw: bytes | None) -> FieldVersions | None:
    if raw is None:
        return None
    actor, counters = msgpack.unpackb(raw, raw=False)
    return FieldVersions(actor, counters)


def _values(link: Link) -> dict[str, Any]:
    return {
        "entity": link.entity,
        "source_record_id": link.source_record_id,
        "clock": _pack(link.clock.to_dict()),
        "content_hash": link.content_hash,
        "fields": _pack(link.fields),
        "version": link.version,
        "deleted": link.deleted,
        "published": link.published,
        "pending_event": link.pending_event,
        "pending_event_id": link.pending_event_id,
        "pending_routing_key": link.pending_routing_key,
        "field_versions": _pack_versions(link.field_versions),
    }


def create(conn: Connection) -> None:
    """Create ``crmsync_link`` if missing; add the columns a newer version introduced to
    a table an older one made (ALTER TABLE … ADD COLUMN, on every supported database)."""
    link_metadata.create_all(conn)
    present = {column["name"] for column in sa.inspect(conn).get_columns(link_table.name)}
    table = conn.dialect.identifier_preparer.format_table(link_table)
    for column in link_table.columns:
        if column.name in present:
            continue
        if not column.nullable:  # existing rows would have no value for it
            raise RuntimeError(f"cannot add NOT NULL column {column.name} to {table}")
        spec = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
        conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {spec}"))


def by_record(conn: Connection, record_id: str) -> Link | None:
    row = conn.execute(sa.select(link_table).where(link_table.c.record_id == record_id)).first()
    return _row_to_link(row) if row else None


def by_source(conn: Connection, entity: str, source_record_ids: list[str]) -> dict[str, Link]:
    if not source_record_ids:
        return {}
    found: dict[str, Link] = {}
    for start in range(0, len(source_record_ids), 500):  # stay under bind-parameter limits
        chunk = source_record_ids[start : start + 500]
        rows = conn.execute(
            sa.select(link_table).where(
                link_table.c.entity == entity, link_table.c.source_record_id.in_(chunk)
            )
        )
        for row in rows:
            found[row.source_record_id] = _row_to_link(row)
    return found


def live_source_ids(conn: Connection, entity: str) -> dict[str, str]:
    """source_record_id -> record_id of every link not deleted (for hard-delete detection)."""
    rows = conn.execute(
        sa.select(link_table.c.source_record_id, link_table.c.record_id).where(
            link_table.c.entity == entity, link_table.c.deleted.is_(False)
        )
    )
    return {r.source_record_id: r.record_id for r in rows if r.source_record_id is not None}


def live_chunk(conn: Connection, entity: str, after: str | None, limit: int) -> list[str]:
    """The next ``limit`` source ids of live links after ``after`` (None: from the first),
    in id order: one step of the incremental hard-delete scan (keyset on the
    ``(entity, source_record_id)`` unique index, so each step costs the same)."""
    c = link_table.c
    query = sa.select(c.source_record_id).where(
        c.entity == entity, c.deleted.is_(False), c.source_record_id.is_not(None)
    )
    if after is not None:
        query = query.where(c.source_record_id > after)
    rows = conn.execute(query.order_by(c.source_record_id).limit(limit))
    return [sid for (sid,) in rows]


def by_records(conn: Connection, record_ids: Sequence[str]) -> dict[str, Link]:
    found: dict[str, Link] = {}
    for start in range(0, len(record_ids), 500):  # stay under bind-parameter limits
        chunk = list(record_ids[start : start + 500])
        rows = conn.execute(sa.select(link_table).where(link_table.c.record_id.in_(chunk)))
        found.update((r.record_id, _row_to_link(r)) for r in rows)
    return found


def insert_many(conn: Connection, new: Sequence[Link]) -> None:
    """Links of records this adapter never knew (a bulk insert's), in one executemany."""
    if not new:
        return
    rows = [{"record_id": n.record_id, **_values(n)} for n in new]
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        conn.execute(link_table.insert(), rows)  # see adapters.sql.multirow_is_slow
    else:
        # RETURNING: multi-row VALUES statements instead of one per row (sql.insert_many)
        conn.execute(link_table.insert().returning(link_table.c.record_id), rows).all()


def save(conn: Connection, link: Link) -> None:
    values = _values(link)
    updated = conn.execute(
        link_table.update().where(link_table.c.record_id == link.record_id).values(**values)
    )
    if updated.rowcount == 0:
        conn.execute(link_table.insert().values(record_id=link.record_id, **values))


def follow_alias(conn: Connection, alias: str, record_id: str) -> Link | None:
    """The router linked the record our row was published under (``alias``) to
    ``record_id`` (identity matching, docs/identity.md): the link of ``alias`` becomes
    ``record_id``'s, everything else it holds kept, in the caller's transaction, so the
    delivery updates that row instead of writing the customer a second time. None: no
    link of ``alias`` here."""
    c = link_table.c
    moved = conn.execute(
        link_table.update().where(c.record_id == alias).values(record_id=record_id)
    )
    return by_record(conn, record_id) if moved.rowcount else None


def pending(conn: Connection, limit: int = 1000) -> list[OutboxEntry]:
    """Local changes not yet confirmed by the broker."""
    c = link_table.c
    rows = conn.execute(
        sa.select(c.record_id, c.pending_event, c.pending_event_id, c.pending_routing_key)
        .where(c.published.is_(False))
        .limit(limit)
    )
    return [
        _entry(record_id, body, event_id, routing_key)
        for record_id, body, event_id, routing_key in rows
        if body is not None
    ]


def pending_count(conn: Connection) -> int:
    """How many local changes wait for the broker's confirm (the outbox's depth)."""
    query = sa.select(sa.func.count()).where(link_table.c.published.is_(False))
    return int(conn.execute(query).scalar_one())


def _entry(
    record_id: str, body: bytes, event_id: str | None, routing_key: str | None
) -> OutboxEntry:
    if event_id is None or routing_key is None:
        # Recorded by a version that stored only the body: read them from the event.
        event = decode(body)
        event_id, routing_key = event.event_id, event.routing_key
    return OutboxEntry(record_id, event_id, routing_key, body)


def mark_published(conn: Connection, confirmed: Sequence[OutboxEntry]) -> None:
    """Clear the outbox entries that were confirmed, unless a newer change replaced them."""
    c = link_table.c
    for entry in confirmed:
        conn.execute(
            link_table.update()
            .where(c.record_id == entry.record_id, c.pending_event == entry.body)
            .values(
                published=True, pending_event=None, pending_event_id=None, pending_routing_key=None
            )
        )


def count(conn: Connection) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(link_table)).scalar_one())


def highest_counter(conn: Connection, actor: str) -> int:
    """The highest counter of ``actor`` in any link (0: none), which the adapter reports
    when it registers: links behind what the router accepted mean the database was
    restored, and counting on from them would reuse counters. Read once per start."""
    query = sa.select(link_table.c.clock).execution_options(yield_per=2000)
    highest = 0
    for row in conn.execute(query):
        counter = msgpack.unpackb(row.clock, raw=False).get(actor, 0)
        if counter > highest:
            highest = counter
    return highest
