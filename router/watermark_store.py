"""The actors' high-water marks in the state store (the rules are in router.watermarks).

Written in the batch's own transaction, once per batch and only for the actors whose
mark the batch raised: a few rows, never one statement per event. A state made before
marks existed gets them once, from the clocks of its records and conflicts, so an
upgrade refuses no legitimate event.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from router import schema
from router.schema import actor_counters, conflicts, records
from router.state import RouterStore, VersionConflict
from router.watermarks import highs_of

log = logging.getLogger("crmsync.router")

SCAN_CHUNK = 2000  # records read at a time while the marks are first made


def load(conn: Connection) -> dict[str, int]:
    rows = conn.execute(sa.select(actor_counters.c.actor, actor_counters.c.counter))
    return {r.actor: int(r.counter) for r in rows}


def inexact(conn: Connection) -> set[str]:
    query = sa.select(actor_counters.c.actor).where(actor_counters.c.exact.is_(False))
    return set(conn.execute(query).scalars())


def restored(store: RouterStore, actors: Iterable[str], hub_actor: str) -> set[str]:
    """The state was restored from a backup: every actor known then (but the hub's new
    epoch) may have counted further than the restored marks say. Returns those actors."""
    doubtful = set(actors) - {hub_actor}
    with store.transaction() as conn:
        stored = load(conn)
        conn.execute(actor_counters.update().values(exact=False))
        missing = sorted(doubtful - set(stored))
        if missing:
            conn.execute(
                actor_counters.insert(),
                [{"actor": a, "counter": 0, "exact": False} for a in missing],
            )
    return doubtful | set(stored) - {hub_actor}


def opened(store: RouterStore) -> tuple[dict[str, int], set[str]]:
    """The marks a starting router begins with, and which of them are inexact."""
    with store.transaction() as conn:
        return load_or_initialise(conn), inexact(conn)


def load_or_initialise(conn: Connection) -> dict[str, int]:
    """The stored marks; on first use, made from every clock the state holds."""
    highs = load(conn)
    if highs:
        return highs
    highs = highs_of(_stored_clocks(conn))
    if highs:
        insert = actor_counters.insert()
        conn.execute(insert, [{"actor": a, "counter": c} for a, c in sorted(highs.items())])
        log.info("actor counters taken from the stored records", extra={"actors": len(highs)})
    return highs


def _stored_clocks(conn: Connection) -> Iterator[Mapping[str, int]]:
    # Record clocks hold every accepted version and hub resolution; parked sides hold
    # the accepted events a conflict keeps out of the record's clock.
    # On the statement: a connection's execution options would outlive this query.
    query = sa.select(records.c.doc).execution_options(yield_per=SCAN_CHUNK)
    for row in conn.execute(query):
        doc = schema.unpack(row.doc)
        yield doc["clock"]
        yield from doc.get("field_clocks", {}).values()
    for row in conn.execute(sa.select(conflicts).where(conflicts.c.status == "open")):
        for side in schema.conflict_of(row).sides:
            yield side.clock


def save(conn: Connection, raised: Mapping[str, int], stored: Mapping[str, int]) -> None:
    """Persist the marks a batch raised; ``stored`` are those already in the table."""
    if not raised:
        return
    new = [a for a in raised if a not in stored]
    if new:  # rare (an actor's first accepted event): another router may have stored it
        query = sa.select(actor_counters.c.actor).where(actor_counters.c.actor.in_(new))
        elsewhere = set(conn.execute(query).scalars())
        new = [a for a in new if a not in elsewhere]
    fresh = [{"actor": a, "counter": raised[a]} for a in new]
    known = [{"b_actor": a, "b_counter": c} for a, c in raised.items() if a not in new]
    if known:
        # Never lowered: another router sharing the store may have gone further.
        conn.execute(
            actor_counters.update()
            .where(
                actor_counters.c.actor == sa.bindparam("b_actor"),
                actor_counters.c.counter < sa.bindparam("b_counter"),
            )
            .values(counter=sa.bindparam("b_counter")),
            known,
        )
    if fresh:
        try:
            conn.execute(actor_counters.insert(), fresh)
        except sa.exc.IntegrityError as e:
            raise VersionConflict("another router stored an actor's first counter") from e
