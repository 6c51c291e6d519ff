"""Migrations in the router's state store: each run's checkpoint and per-record outcome.

``crmsync migrate`` keeps its checkpoint here, not in a file beside the command: a
``--resume`` from another host, or after the command's host died, finds it, and the
router (the only writer of its state) records it over the control plane. Per source
record, the router records what it decided for the migration (routed to the target,
linked, ambiguous, a duplicate in the source, invalid, parked, refused) in the same
transaction as the record states, so the counts survive any crash and a re-judged
record (a page exported again after a kill) is counted once: the row is keyed by the
source record, and the latest judgement replaces the earlier one.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection

from router.database import Blob, Timestamp
from router.schema import metadata, pack, unpack

migrations = sa.Table(
    "crmsync_migrations",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("target", sa.String(64), nullable=False),
    sa.Column("entities", Blob, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # running | finished
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("finished_at", Timestamp),
    # msgpack {entity: {"after": source id | None, "exported": n, "done": bool}}
    sa.Column("cursors", Blob, nullable=False),
)
items = sa.Table(
    "crmsync_migration_items",
    metadata,
    sa.Column("migration_id", sa.String(32), primary_key=True),
    sa.Column("entity", sa.String(64), primary_key=True),
    sa.Column("source_record_id", sa.String(255), primary_key=True),
    sa.Column("record_id", sa.String(36)),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("detail", sa.String(500), nullable=False, default=""),
)
sa.Index("crmsync_migration_items_outcome", items.c.migration_id, items.c.outcome)

# What the router decides for a migrated record; the target adds created / updated /
# unchanged / failed for the records routed to it.
ROUTED = "routed"
LINKED = "linked"
OUTCOMES = (ROUTED, LINKED, "ambiguous", "duplicates", "invalid", "parked", "refused")


@dataclass(frozen=True)
class Item:
    migration_id: str
    entity: str
    source_record_id: str
    record_id: str | None
    outcome: str
    detail: str = ""

    def row(self) -> dict[str, Any]:
        return {
            "migration_id": self.migration_id,
            "entity": self.entity,
            "source_record_id": self.source_record_id,
            "record_id": self.record_id,
            "outcome": self.outcome,
            "detail": self.detail[:500],
        }


@dataclass(frozen=True)
class Migration:
    id: str
    source: str
    target: str
    entities: list[str]
    status: str
    started_at: float
    finished_at: float | None
    cursors: dict[str, dict[str, Any]]


def _upsert(conn: Connection, rows: list[dict[str, Any]]) -> None:
    name = conn.dialect.name
    replaced = {"record_id", "outcome", "detail"}
    if name in ("sqlite", "postgresql"):
        # The two dialects spell INSERT ... ON CONFLICT DO UPDATE alike.
        s = (sqlite if name == "sqlite" else postgresql).insert(items)
        conn.execute(
            s.on_conflict_do_update(
                index_elements=[items.c.migration_id, items.c.entity, items.c.source_record_id],
                set_={c: s.excluded[c] for c in replaced},
            ),
            rows,
        )
    elif name in ("mysql", "mariadb"):
        m = mysql.insert(items)
        conn.execute(m.on_duplicate_key_update({c: m.inserted[c] for c in replaced}), rows)
    else:  # any other database: one row at a time, still idempotent
        for row in rows:
            key = [items.c[k] == row[k] for k in ("migration_id", "entity", "source_record_id")]
            done = conn.execute(items.update().where(*key).values(**row)).rowcount
            if not done:
                conn.execute(items.insert().values(**row))


def record(conn: Connection, recorded: Sequence[Item]) -> None:
    """Upsert ``recorded`` (the latest judgement of a source record wins)."""
    if recorded:
        # One row per key in one statement: a page exported twice in one ingress batch.
        unique = {(i.migration_id, i.entity, i.source_record_id): i.row() for i in recorded}
        _upsert(conn, list(unique.values()))


def _migration(row: sa.Row[Any]) -> Migration:
    return Migration(
        id=row.id,
        source=row.source,
        target=row.target,
        entities=list(unpack(row.entities)),
        status=row.status,
        started_at=float(row.started_at),
        finished_at=float(row.finished_at) if row.finished_at is not None else None,
        cursors=dict(unpack(row.cursors)),
    )


def latest(conn: Connection, source: str, target: str) -> Migration | None:
    query = (
        sa.select(migrations)
        .where(migrations.c.source == source, migrations.c.target == target)
        .order_by(migrations.c.started_at.desc())
        .limit(1)
    )
    row = conn.execute(query).first()
    return _migration(row) if row else None


def get(conn: Connection, migration_id: str) -> Migration | None:
    row = conn.execute(sa.select(migrations).where(migrations.c.id == migration_id)).first()
    return _migration(row) if row else None


def start(conn: Connection, source: str, target: str, entities: Sequence[str]) -> Migration:
    now = time.time()
    cursors = {e: {"after": None, "exported": 0, "done": False} for e in entities}
    migration_id = time.strftime("%Y%m%d%H%M%S", time.gmtime(now)) + "-" + secrets.token_hex(4)
    conn.execute(
        migrations.insert().values(
            id=migration_id,
            source=source,
            target=target,
            entities=pack(list(entities)),
            status="running",
            started_at=now,
            cursors=pack(cursors),
        )
    )
    return Migration(migration_id, source, target, list(entities), "running", now, None, cursors)


def save_cursor(conn: Connection, migration_id: str, entity: str, cursor: dict[str, Any]) -> None:
    current = get(conn, migration_id)
    if current is None:
        raise KeyError(migration_id)
    cursors = {**current.cursors, entity: cursor}
    conn.execute(
        migrations.update().where(migrations.c.id == migration_id).values(cursors=pack(cursors))
    )


def finish(conn: Connection, migration_id: str) -> None:
    conn.execute(
        migrations.update()
        .where(migrations.c.id == migration_id)
        .values(status="finished", finished_at=time.time())
    )


def counts(conn: Connection, migration_id: str) -> dict[str, dict[str, int]]:
    """entity -> outcome -> how many source records."""
    query = (
        sa.select(items.c.entity, items.c.outcome, sa.func.count())
        .where(items.c.migration_id == migration_id)
        .group_by(items.c.entity, items.c.outcome)
    )
    out: dict[str, dict[str, int]] = {}
    for entity, outcome, n in conn.execute(query):
        out.setdefault(entity, {})[outcome] = int(n)
    return out


def listed(
    conn: Connection,
    migration_id: str,
    outcomes: Sequence[str],
    after: tuple[str, str] | None,
    limit: int,
) -> list[Item]:
    """Items with one of ``outcomes``, in (entity, source id) order after ``after``."""
    query = sa.select(items).where(
        items.c.migration_id == migration_id, items.c.outcome.in_(list(outcomes))
    )
    if after is not None:
        entity, sid = after
        query = query.where(
            sa.or_(
                items.c.entity > entity,
                sa.and_(items.c.entity == entity, items.c.source_record_id > sid),
            )
        )
    query = query.order_by(items.c.entity, items.c.source_record_id).limit(limit)
    return [
        Item(r.migration_id, r.entity, r.source_record_id, r.record_id, r.outcome, r.detail)
        for r in conn.execute(query)
    ]
