"""The router's state store: records, inbox, outbox, adapter registry, conflicts.

One transaction per batch holds the inbox entries (processed ``event_id``s), the new
record states (compare-and-set on ``version``) and the outbox rows of the deliveries
they cause, so a crash can never separate "state stored" from "deliveries owed".
Outbox rows are deleted in the *next* batch's transaction after their confirms: one
commit per batch, and a crash in between only republishes (harmless, adapters apply by
clock). SQLite (WAL, ``synchronous=FULL``) by default; any SQLAlchemy URL works, and
PostgreSQL is the one for several routers.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from router import migration_store, schema  # noqa: F401 - migration_store adds its tables
from router.clock import HUB, actor_epoch, make_actor
from router.conflicts import Conflict
from router.database import insert_many, make_engine
from router.errors import StateError
from router.identity import IdentityWrites
from router.identity_store import IdentityStore
from router.messages import Outgoing
from router.record import RecordState
from router.registry import Registration
from router.schema import conflicts, inbox, meta, metadata, outbox, records, registry

log = logging.getLogger("crmsync.router")
T = TypeVar("T")


class VersionConflict(StateError):
    """Another router changed a record between our read and our write; retry the batch."""


class RouterStore(IdentityStore):
    """Synchronous store; the daemon calls it from its event loop, one call at a time."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self._nonce = secrets.token_hex(3)
        self._last_ns = 0
        try:
            metadata.create_all(self.engine)
        except sa.exc.OperationalError as e:
            self.engine.dispose()
            shown = sa.engine.make_url(url).render_as_string(hide_password=True)
            raise StateError(f"cannot open state store {shown}: {e.orig}") from e
        self._hub_actor = self._init_hub_actor()

    def close(self) -> None:
        self.engine.dispose()

    # -- identity -----------------------------------------------------------------
    def _init_hub_actor(self) -> str:
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(meta.c.value).where(meta.c.key == "hub_actor")).first()
            if row:
                return str(row.value)
            conn.execute(meta.insert().values(key="hub_actor", value=HUB))
            return HUB

    @property
    def hub_actor(self) -> str:
        return self._hub_actor

    def bump_hub_epoch(self) -> str:
        """After restoring from a backup: a new hub actor, so its counters are never reused."""
        new = make_actor(HUB, actor_epoch(self._hub_actor) + 1)
        with self.engine.begin() as conn:
            conn.execute(meta.update().where(meta.c.key == "hub_actor").values(value=new))
        self._hub_actor = new
        return new

    # -- records and inbox ----------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction for a whole batch: dedup, load, decide and commit share it."""
        with self.engine.begin() as conn:
            yield conn

    def retrying(self, work: Callable[[Connection], T], attempts: int = 5) -> T:
        """Run ``work`` in one transaction; when another router changed what it read
        (:class:`VersionConflict`), start again from fresh reads. Re-raises after the
        last attempt."""
        for attempt in range(attempts):
            try:
                with self.transaction() as conn:
                    return work(conn)
            except VersionConflict:
                if attempt == attempts - 1:
                    raise
                log.info("another router changed what this transaction read; retrying")
        raise AssertionError("unreachable")

    async def retrying_async(
        self,
        work: Callable[[Connection], T],
        commit: Callable[[Callable[[], None]], Awaitable[None]],
        attempts: int = 5,
    ) -> T:
        """:meth:`retrying`, with the COMMIT handed to ``commit`` (the router runs it on a
        thread: it is the transaction's fsync, and the event loop has confirms to read
        meanwhile). ``work`` runs here, in the caller's thread."""
        for attempt in range(attempts):
            with self.engine.connect() as conn:
                trans = conn.begin()
                try:
                    result = work(conn)
                except VersionConflict:
                    trans.rollback()
                    if attempt == attempts - 1:
                        raise
                    log.info("another router changed what this transaction read; retrying")
                    continue
                except BaseException:
                    trans.rollback()
                    raise
                await commit(trans.commit)
                return result
        raise AssertionError("unreachable")

    def seen(self, event_ids: Sequence[str], conn: Connection | None = None) -> set[str]:
        if not event_ids:
            return set()
        with self._conn(conn) as c:
            rows = c.execute(sa.select(inbox.c.event_id).where(inbox.c.event_id.in_(event_ids)))
            return {r.event_id for r in rows}

    def load(
        self, record_ids: Iterable[str], conn: Connection | None = None
    ) -> dict[str, RecordState]:
        ids = list(set(record_ids))
        if not ids:
            return {}
        with self._conn(conn) as c:
            rows = c.execute(sa.select(records).where(records.c.record_id.in_(ids)))
            return {r.record_id: schema.record_state(r) for r in rows}

    def get(self, record_id: str) -> RecordState | None:
        return self.load([record_id]).get(record_id)

    def commit_batch(
        self,
        processed: Sequence[str],
        states: Sequence[RecordState],
        deliveries: Sequence[Outgoing],
        published: Sequence[str],
        conn: Connection | None = None,
        changed_conflicts: Sequence[Conflict] = (),
        identity: IdentityWrites | None = None,
    ) -> list[str]:
        """Store one batch atomically; returns the outbox ids of ``deliveries``.

        ``published`` are outbox ids confirmed by the broker since the last batch;
        ``changed_conflicts`` are conflicts opened, joined or settled by the batch;
        ``identity`` what its identity matching decided (the match index follows ``states``).
        Raises :class:`VersionConflict` when another router got there first (a record
        changed or created, or an event processed, since we read); the caller retries.
        """
        now = time.time()
        with self._conn(conn) as c:
            try:
                if processed:
                    insert_many(c, inbox, [{"event_id": e, "processed_at": now} for e in processed])
                self._write_states(c, states, now)
                self._write_conflicts(c, changed_conflicts)
                self._write_identity(c, states, identity)
            except sa.exc.IntegrityError as e:
                raise VersionConflict("another router stored part of this batch first") from e
            if published:
                c.execute(outbox.delete().where(outbox.c.id.in_(list(published))))
            return self._insert_outbox(c, deliveries)

    def _insert_outbox(self, conn: Connection, deliveries: Sequence[Outgoing]) -> list[str]:
        if not deliveries:
            return []
        ids = self._outbox_ids(len(deliveries))
        insert_many(
            conn,
            outbox,
            [
                {
                    "id": oid,
                    "exchange": item.exchange,
                    "routing_key": item.routing_key,
                    "message_id": item.message_id,
                    "headers": schema.pack(item.headers),
                    "body": item.body,
                }
                for oid, item in zip(ids, deliveries, strict=True)
            ],
        )
        return ids

    def _outbox_ids(self, count: int) -> list[str]:
        """Ids that sort in the order they were made (``pending_outbox`` replays in order)."""
        now = max(time.time_ns(), self._last_ns + 1)
        self._last_ns = now
        return [f"{now:020d}{self._nonce}{i:06d}" for i in range(count)]

    def _write_states(self, conn: Connection, states: Sequence[RecordState], now: float) -> None:
        new = [s for s in states if s.version == 0]
        old = [s for s in states if s.version > 0]
        if new:
            insert_many(
                conn,
                records,
                [
                    {
                        "record_id": s.record_id,
                        "entity": s.entity,
                        "version": 1,
                        "deleted": s.deleted,
                        "updated_at": now,
                        "doc": schema.record_doc(s),
                    }
                    for s in new
                ],
            )
        if not old:
            return
        params = [
            {
                "b_id": s.record_id,
                "b_version": s.version,
                "b_next": s.version + 1,
                "b_deleted": s.deleted,
                "b_now": now,
                "b_doc": schema.record_doc(s),
            }
            for s in old
        ]
        cas = (
            records.update()
            .where(
                records.c.record_id == sa.bindparam("b_id"),
                records.c.version == sa.bindparam("b_version"),
            )
            .values(
                version=sa.bindparam("b_next"),
                deleted=sa.bindparam("b_deleted"),
                updated_at=sa.bindparam("b_now"),
                doc=sa.bindparam("b_doc"),
            )
        )
        if conn.dialect.supports_sane_multi_rowcount:
            if conn.execute(cas, params).rowcount != len(params):
                raise VersionConflict("a record of this batch changed under us")
            return
        for p in params:
            if conn.execute(cas, p).rowcount != 1:
                raise VersionConflict(f"record {p['b_id']} changed under us")

    def _write_conflicts(self, conn: Connection, items: Sequence[Conflict]) -> None:
        # Rare (a conflict per concurrent edit), so row by row: update, else insert. The
        # records' compare-and-set in the same transaction already serialises routers.
        for conflict in items:
            values = {
                "record_id": conflict.record_id,
                "entity": conflict.entity,
                "status": conflict.status,
                "opened_at": conflict.opened_at.timestamp(),
                "resolved_at": (
                    conflict.settlement.at.timestamp() if conflict.settlement else None
                ),
                "doc": schema.pack(conflict.to_doc()),
            }
            updated = conn.execute(
                conflicts.update().where(conflicts.c.id == conflict.id).values(**values)
            )
            if updated.rowcount == 0:
                conn.execute(conflicts.insert().values(id=conflict.id, **values))

    def load_conflicts(
        self, conflict_ids: Iterable[str], conn: Connection | None = None
    ) -> dict[str, Conflict]:
        ids = list(set(conflict_ids))
        if not ids:
            return {}
        with self._conn(conn) as c:
            rows = c.execute(sa.select(conflicts).where(conflicts.c.id.in_(ids)))
            return {r.id: schema.conflict_of(r) for r in rows}

    def open_conflicts(self, entity: str | None = None) -> list[Conflict]:
        query = sa.select(conflicts).where(conflicts.c.status == "open")
        if entity:
            query = query.where(conflicts.c.entity == entity)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(conflicts.c.opened_at))
            return [schema.conflict_of(r) for r in rows]

    def open_conflict_count(self) -> int:
        with self.engine.connect() as conn:
            query = sa.select(sa.func.count()).select_from(conflicts)
            return int(conn.execute(query.where(conflicts.c.status == "open")).scalar_one())

    def conflict_history(self, record_id: str) -> list[Conflict]:
        query = (
            sa.select(conflicts)
            .where(conflicts.c.record_id == record_id)
            .order_by(conflicts.c.opened_at, conflicts.c.id)
        )
        with self.engine.connect() as conn:
            return [schema.conflict_of(r) for r in conn.execute(query)]

    def prune_conflicts(self, older_than: float) -> int:
        """Drop the audit records of conflicts resolved before ``older_than``."""
        with self.engine.begin() as conn:
            result = conn.execute(conflicts.delete().where(conflicts.c.resolved_at < older_than))
            return int(result.rowcount)

    def pending_outbox(self) -> list[tuple[str, Outgoing]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(outbox).order_by(outbox.c.id))
            return [
                (
                    r.id,
                    Outgoing(
                        r.exchange, r.routing_key, r.body, r.message_id, schema.unpack(r.headers)
                    ),
                )
                for r in rows
            ]

    def delete_outbox(self, ids: Sequence[str]) -> None:
        if ids:
            with self.engine.begin() as conn:
                conn.execute(outbox.delete().where(outbox.c.id.in_(list(ids))))

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {
                "records": conn.execute(
                    sa.select(sa.func.count()).select_from(records)
                ).scalar_one(),
                "inbox": conn.execute(sa.select(sa.func.count()).select_from(inbox)).scalar_one(),
                "outbox": conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar_one(),
            } | {
                "conflicts_open": self.open_conflict_count(),
                "identities_parked": self.parked_identity_count(),
            }

    # -- registry -------------------------------------------------------------------
    def registrations(self) -> dict[str, Registration]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(registry))
            return {
                r.name: Registration(
                    r.name,
                    r.epoch,
                    schema.unpack(r.entities),
                    r.sw_version,
                    r.registered_at,
                    r.last_heartbeat,
                )
                for r in rows
            }

    def save_registration(self, reg: Registration) -> None:
        values = {
            "epoch": reg.epoch,
            "entities": schema.pack(reg.entities),
            "sw_version": reg.sw_version,
            "registered_at": reg.registered_at,
            "last_heartbeat": reg.last_heartbeat,
        }
        with self.engine.begin() as conn:
            updated = conn.execute(
                registry.update().where(registry.c.name == reg.name).values(**values)
            )
            if updated.rowcount == 0:
                conn.execute(registry.insert().values(name=reg.name, **values))

    def touch_heartbeats(self, beats: dict[str, float]) -> None:
        if beats:
            with self.engine.begin() as conn:
                for name, at in beats.items():
                    conn.execute(
                        registry.update().where(registry.c.name == name).values(last_heartbeat=at)
                    )

    def remove_registration(self, name: str) -> bool:
        with self.engine.begin() as conn:
            return bool(conn.execute(registry.delete().where(registry.c.name == name)).rowcount)
