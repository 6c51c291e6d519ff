"""What the router forgets, and when: processed event ids, tombstones, old conflicts.

* **Inbox.** The clocks already make a redelivered event harmless (its clock is at or
  before the stored one: stale, no effect). The inbox only spares that judgement, and
  covers the one case the clocks cannot: a redelivery after its record's tombstone was
  pruned. A message is redelivered when the router that held it died or lost its
  connection, i.e. minutes after its first delivery, so a day of ids is plenty; the size
  bound keeps a burst from growing the table without limit (~250 bytes per id).
* **Tombstones.** A deleted record is kept so a stale upsert cannot resurrect it. After
  ``state.tombstone_retention`` it goes, but only once its delete was confirmed to every
  subscriber (no outbox row as old as it is left). The trade-off is Cassandra's
  ``gc_grace``: an upsert older than the retention, arriving after it, resurrects the
  record.

Every pass is chunked, a bounded number of rows per statement, so a batch waiting for
the store never waits behind a long delete. The store's engine comes in; nothing here
runs on its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from router.config import RouterStateConfig, parse_duration
from router.schema import inbox, outbox, records
from router.state import RouterStore

Db = Callable[..., Awaitable[Any]]

CHUNK = 2000  # rows per statement
INBOX_CHUNKS_PER_ROUND = 25  # 50k ids per housekeeping round at most
# An outbox row is made in the same transaction as the state it delivers, a few ms after
# the state's updated_at: a tombstone newer than the oldest owed delivery minus this
# margin may still be owed to a subscriber.
OUTBOX_MARGIN = 3600.0


@dataclass(frozen=True)
class Limits:
    inbox_age: float  # seconds
    inbox_entries: int
    tombstone_age: float  # seconds
    conflict_age: float  # seconds


def limits(state: RouterStateConfig) -> Limits:
    return Limits(
        inbox_age=parse_duration(state.inbox_retention),
        inbox_entries=state.inbox_max_entries,
        tombstone_age=parse_duration(state.tombstone_retention),
        conflict_age=parse_duration(state.conflict_retention),
    )


def inbox_cutoff(engine: Engine, now: float, limits: Limits) -> float:
    """Ids processed before this go: older than the retention, or beyond the size bound."""
    cutoff = now - limits.inbox_age
    query = (
        sa.select(inbox.c.processed_at)
        .order_by(inbox.c.processed_at.desc())
        .offset(limits.inbox_entries)
        .limit(1)
    )
    with engine.connect() as conn:
        boundary = conn.execute(query).scalar()
    if boundary is not None:
        # Ids of one batch share a time: keeping the boundary's batch whole errs by at
        # most one batch over the bound.
        cutoff = max(cutoff, float(boundary))
    return cutoff


def prune_inbox_chunk(engine: Engine, cutoff: float) -> int:
    """Delete up to :data:`CHUNK` ids processed before ``cutoff``; how many went."""
    with engine.begin() as conn:
        ids = list(
            conn.execute(
                sa.select(inbox.c.event_id)
                .where(inbox.c.processed_at < cutoff)
                .order_by(inbox.c.processed_at)
                .limit(CHUNK)
            ).scalars()
        )
        if ids:
            conn.execute(inbox.delete().where(inbox.c.event_id.in_(ids)))
        return len(ids)


def _oldest_owed(conn: sa.Connection) -> float | None:
    """When the oldest delivery still in the outbox was made (ids start with epoch ns)."""
    first = conn.execute(sa.select(sa.func.min(outbox.c.id))).scalar()
    if first is None:
        return None
    return int(str(first)[:20]) / 1e9


def prune_tombstones_chunk(engine: Engine, older_than: float, after: str) -> tuple[int, str]:
    """Look at the next :data:`CHUNK` records (by id, after ``after``) and delete the
    tombstones among them that are past the retention and owed to nobody.

    Returns (deleted, where the next chunk starts; '' once the table was walked). A
    walk by primary key costs no index on the hot path's writes.
    """
    with engine.begin() as conn:
        rows = conn.execute(
            sa.select(
                records.c.record_id, records.c.version, records.c.deleted, records.c.updated_at
            )
            .where(records.c.record_id > after)
            .order_by(records.c.record_id)
            .limit(CHUNK)
        ).all()
        if not rows:
            return 0, ""
        cutoff = older_than
        owed = _oldest_owed(conn)
        if owed is not None:
            cutoff = min(cutoff, owed - OUTBOX_MARGIN)
        doomed = [r for r in rows if r.deleted and r.updated_at < cutoff]
        deleted = 0
        for r in doomed:
            # The version check: a batch that changed the record since we read it wins.
            result = conn.execute(
                records.delete().where(
                    records.c.record_id == r.record_id,
                    records.c.version == r.version,
                    records.c.deleted.is_(True),
                )
            )
            deleted += int(result.rowcount)
        return deleted, str(rows[-1].record_id) if len(rows) == CHUNK else ""


class Retention:
    """The housekeeping side: one :meth:`round` every few seconds, each bounded."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._tombstones_after = ""
        # Finding the size bound walks up to inbox_entries index entries: done on the
        # rare full rounds, the age bound (cheap) on every round.
        self._size_cutoff = 0.0

    async def round(self, db: Db, store: RouterStore, full: bool) -> dict[str, int]:
        """Prune what is due; ``full`` also finds the inbox's size bound and prunes old
        conflicts (both rarely needed).

        ``db`` runs each chunk (the router's store calls run on its event loop, so batches
        interleave between chunks)."""
        now, engine = time.time(), store.engine
        pruned = {"inbox": 0, "tombstones": 0, "conflicts": 0}
        if full:
            self._size_cutoff = await db(inbox_cutoff, engine, now, self.limits)
        cutoff = max(now - self.limits.inbox_age, self._size_cutoff)
        for _ in range(INBOX_CHUNKS_PER_ROUND):
            n = await db(prune_inbox_chunk, engine, cutoff)
            pruned["inbox"] += n
            if n < CHUNK:
                break
            await asyncio.sleep(0)  # let a waiting batch have the store between chunks
        deleted, self._tombstones_after = await db(
            prune_tombstones_chunk,
            engine,
            now - self.limits.tombstone_age,
            self._tombstones_after,
        )
        pruned["tombstones"] = deleted
        if full:
            pruned["conflicts"] = await db(store.prune_conflicts, now - self.limits.conflict_age)
        return pruned
