"""Per-record links: what this adapter knows of each record it shares with the hub.

A link holds the record's global id, its id inside the CRM, the clock last applied or
emitted, the content hash and fields of that version, the CRM's version token
(``updated_at`` as stored), a tombstone flag, and — while a local change waits for its
broker confirm — the encoded event (the adapter outbox). Links live in the same
database as the data (``crmsync_link``) so a data write and its bookkeeping commit in
one transaction; a crash can never separate them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import msgpack
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from router.clock import VectorClock
from router.events import Scalar
from router.sqltypes import Blob

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
    sa.UniqueConstraint("entity", "source_record_id", name="crmsync_link_source"),
)
sa.Index("crmsync_link_pending", link_table.c.published)


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
    pending_event: bytes | None = None

    def evolve(self, **changes: Any) -> Link:
        return replace(self, **changes)


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
    )


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
    }


def create(conn: Connection) -> None:
    link_metadata.create_all(conn)


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


def save(conn: Connection, link: Link) -> None:
    values = _values(link)
    updated = conn.execute(
        link_table.update().where(link_table.c.record_id == link.record_id).values(**values)
    )
    if updated.rowcount == 0:
        conn.execute(link_table.insert().values(record_id=link.record_id, **values))


def pending(conn: Connection, limit: int = 1000) -> list[tuple[str, bytes]]:
    """(record_id, encoded event) of local changes not yet confirmed by the broker."""
    rows = conn.execute(
        sa.select(link_table.c.record_id, link_table.c.pending_event)
        .where(link_table.c.published.is_(False))
        .limit(limit)
    )
    return [(r.record_id, r.pending_event) for r in rows if r.pending_event is not None]


def mark_published(conn: Connection, confirmed: list[tuple[str, bytes]]) -> None:
    """Clear the outbox entries that were confirmed, unless a newer change replaced them."""
    for record_id, event in confirmed:
        conn.execute(
            link_table.update()
            .where(link_table.c.record_id == record_id, link_table.c.pending_event == event)
            .values(published=True, pending_event=None)
        )


def count(conn: Connection) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(link_table)).scalar_one())
