"""The router state store's identity tables: aliases, members, the match index, and the
events identity matching parked (docs/identity.md).

A mixin of :class:`router.state.RouterStore`: the tables live in the same database and
are written in the batch's transaction, so an alias, the record state it led to and the
deliveries it caused are committed together. Only entities with match keys
(``match_keys``) are indexed.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from router.database import Blob, Timestamp, insert_many
from router.identity import Alias, IdentityWrites, Member, ParkedIdentity, key_values
from router.record import RecordState
from router.schema import meta, metadata, pack, record_state, records, unpack

T = TypeVar("T")
CHUNK = 500  # ids per IN (...): under every driver's bind-parameter limit
INDEX_META = "match_index"  # crmsync_meta: a digest of the keys the index was built for

aliases = sa.Table(
    "crmsync_alias",
    metadata,
    sa.Column("alias_id", sa.String(36), primary_key=True),
    sa.Column("record_id", sa.String(36), nullable=False, index=True),
    sa.Column("entity", sa.String(64), nullable=False),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("source_record_id", sa.String(255), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("migration", sa.String(64), nullable=True),
)
members = sa.Table(
    "crmsync_members",
    metadata,
    sa.Column("record_id", sa.String(36), primary_key=True),
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("source_record_id", sa.String(255), primary_key=True),
)
match_index = sa.Table(
    "crmsync_match",
    metadata,
    sa.Column("entity", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(300), primary_key=True),
    sa.Column("record_id", sa.String(36), primary_key=True),
    sa.Index("crmsync_match_record", "record_id"),
)
parked = sa.Table(
    "crmsync_identity_parked",
    metadata,
    sa.Column("event_id", sa.String(36), primary_key=True),
    sa.Column("record_id", sa.String(36), nullable=False, unique=True),
    sa.Column("entity", sa.String(64), nullable=False, index=True),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("source_record_id", sa.String(255), nullable=False),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("candidates", Blob, nullable=False),
    sa.Column("body", Blob, nullable=False),
    sa.Column("parked_at", Timestamp, nullable=False, index=True),
)


def _chunks(items: Iterable[T]) -> Iterator[list[T]]:
    values = list(dict.fromkeys(items))
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def _alias(row: sa.Row[Any]) -> Alias:
    return Alias(
        row.alias_id,
        row.record_id,
        row.entity,
        row.source,
        row.source_record_id,
        row.created_at,
        row.migration,
    )


def _parked(row: sa.Row[Any]) -> ParkedIdentity:
    return ParkedIdentity(
        event_id=row.event_id,
        record_id=row.record_id,
        entity=row.entity,
        source=row.source,
        source_record_id=row.source_record_id,
        reason=row.reason,
        candidates=tuple(unpack(row.candidates)),
        body=row.body,
        parked_at=row.parked_at,
    )


class IdentityStore:
    """Identity reads and writes of the router's store (see the module doc)."""

    engine: Engine
    # entity -> its match keys in order; set from the router config when it opens.
    match_keys: Mapping[str, tuple[str, ...]] = MappingProxyType({})

    def load_aliases(self, alias_ids: Iterable[str], conn: Connection) -> dict[str, Alias]:
        """The aliases among ``alias_ids``: alias id -> the alias."""
        found: dict[str, Alias] = {}
        for chunk in _chunks(alias_ids):
            rows = conn.execute(sa.select(aliases).where(aliases.c.alias_id.in_(chunk)))
            found.update((r.alias_id, _alias(r)) for r in rows)
        return found

    def aliases_of(
        self, record_ids: Iterable[str], conn: Connection | None = None
    ) -> dict[str, list[Alias]]:
        """Per record id, the aliases that point at it (oldest first)."""
        found: dict[str, list[Alias]] = {}
        with self._conn(conn) as c:
            for chunk in _chunks(record_ids):
                query = sa.select(aliases).where(aliases.c.record_id.in_(chunk))
                for row in c.execute(query.order_by(aliases.c.created_at, aliases.c.alias_id)):
                    found.setdefault(row.record_id, []).append(_alias(row))
        return found

    def members_of(self, record_ids: Iterable[str], conn: Connection) -> dict[str, list[Member]]:
        found: dict[str, list[Member]] = {}
        for chunk in _chunks(record_ids):
            rows = conn.execute(sa.select(members).where(members.c.record_id.in_(chunk)))
            for r in rows:
                found.setdefault(r.record_id, []).append(
                    Member(r.record_id, r.source, r.source_record_id)
                )
        return found

    def match_candidates(
        self, wanted: Iterable[tuple[str, str, str]], conn: Connection
    ) -> dict[tuple[str, str, str], set[str]]:
        """(entity, key, indexed value) -> the records the index holds it for."""
        wanted = set(wanted)
        found: dict[tuple[str, str, str], set[str]] = {}
        c = match_index.c
        for chunk in _chunks(sorted({value for _, _, value in wanted})):
            for row in conn.execute(sa.select(match_index).where(c.value.in_(chunk))):
                triple = (row.entity, row.key, row.value)
                if triple in wanted:  # the same value under another key or entity is not
                    found.setdefault(triple, set()).add(row.record_id)
        return found

    def parked_by_record(
        self, record_ids: Iterable[str], conn: Connection
    ) -> dict[str, ParkedIdentity]:
        found: dict[str, ParkedIdentity] = {}
        for chunk in _chunks(record_ids):
            rows = conn.execute(sa.select(parked).where(parked.c.record_id.in_(chunk)))
            found.update((r.record_id, _parked(r)) for r in rows)
        return found

    def parked_identity(
        self, event_id: str, conn: Connection | None = None
    ) -> ParkedIdentity | None:
        with self._conn(conn) as c:
            row = c.execute(sa.select(parked).where(parked.c.event_id == event_id)).first()
            return _parked(row) if row else None

    def parked_identities(
        self, entity: str | None = None, limit: int = 1000
    ) -> list[ParkedIdentity]:
        """Events identity matching parked for an operator, oldest first."""
        query = sa.select(parked)
        if entity:
            query = query.where(parked.c.entity == entity)
        query = query.order_by(parked.c.parked_at, parked.c.event_id).limit(limit)
        with self.engine.connect() as conn:
            return [_parked(r) for r in conn.execute(query)]

    def parked_identity_count(self) -> int:
        with self.engine.connect() as conn:
            query = sa.select(sa.func.count()).select_from(parked)
            return int(conn.execute(query).scalar_one())

    def sync_match_index(self, page: int = 1000) -> list[str]:
        """Index the records stored before their entity's match keys were configured (or
        changed): when the keys differ from those the index was built for, rebuild it
        for the entities concerned, one page of records at a time (bounded memory).
        Returns the entities rebuilt. Cheap when nothing changed: one read."""
        wanted = {entity: list(keys) for entity, keys in sorted(self.match_keys.items())}
        digest = hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(meta.c.value).where(meta.c.key == INDEX_META)).first()
            if row is not None and row.value == digest:
                return []
            rebuilt = sorted(wanted)
            conn.execute(match_index.delete())
            for entity in rebuilt:
                after = ""
                while True:
                    query = (
                        sa.select(records)
                        .where(records.c.entity == entity, records.c.record_id > after)
                        .order_by(records.c.record_id)
                        .limit(page)
                    )
                    states = [record_state(r) for r in conn.execute(query)]
                    if not states:
                        break
                    self._write_identity(conn, states, None)
                    after = states[-1].record_id
            conn.execute(meta.delete().where(meta.c.key == INDEX_META))
            conn.execute(meta.insert().values(key=INDEX_META, value=digest))
        return rebuilt

    @contextmanager
    def _conn(self, conn: Connection | None) -> Iterator[Connection]:
        """The caller's transaction, or a short one of our own."""
        if conn is not None:
            yield conn
        else:
            with self.engine.begin() as own:
                yield own

    def _write_identity(
        self, conn: Connection, states: Sequence[RecordState], writes: IdentityWrites | None
    ) -> None:
        """The match index follows every stored state of an entity with match keys (a
        key changed, a record deleted); then what the batch's matching decided."""
        keyed = [s for s in states if s.entity in self.match_keys]
        if keyed:
            for chunk in _chunks(s.record_id for s in keyed):
                conn.execute(match_index.delete().where(match_index.c.record_id.in_(chunk)))
            rows = {
                (s.entity, key, value, s.record_id)
                for s in keyed
                if not s.deleted
                for key, value in key_values(s.fields, self.match_keys[s.entity])
            }
            if rows:
                insert_many(
                    conn,
                    match_index,
                    [
                        {"entity": e, "key": k, "value": v, "record_id": r}
                        for e, k, v, r in sorted(rows)
                    ],
                )
        if writes:
            self._write_matches(conn, writes)

    def _write_matches(self, conn: Connection, writes: IdentityWrites) -> None:
        if writes.aliases:
            insert_many(
                conn,
                aliases,
                [
                    {
                        "alias_id": a.alias_id,
                        "record_id": a.record_id,
                        "entity": a.entity,
                        "source": a.source,
                        "source_record_id": a.source_record_id,
                        "created_at": a.created_at,
                        "migration": a.migration,
                    }
                    for a in writes.aliases
                ],
            )
        if writes.members:
            rows = {(m.record_id, m.source, m.source_record_id) for m in writes.members}
            insert_many(
                conn,
                members,
                [
                    {"record_id": r, "source": s, "source_record_id": sid}
                    for r, s, sid in sorted(rows)
                ],
            )
        gone = [*writes.unparked, *(p.event_id for p in writes.parked)]
        replaced = [p.record_id for p in writes.parked]
        for chunk in _chunks(gone):
            conn.execute(parked.delete().where(parked.c.event_id.in_(chunk)))
        for chunk in _chunks(replaced):  # a newer version of a parked record replaces it
            conn.execute(parked.delete().where(parked.c.record_id.in_(chunk)))
        if writes.parked:
            now = time.time()
            insert_many(
                conn,
                parked,
                [
                    {
                        "event_id": p.event_id,
                        "record_id": p.record_id,
                        "entity": p.entity,
                        "source": p.source,
                        "source_record_id": p.source_record_id,
                        "reason": p.reason,
                        "candidates": pack(list(p.candidates)),
                        "body": p.body,
                        "parked_at": p.parked_at or now,
                    }
                    for p in writes.parked
                ],
            )
