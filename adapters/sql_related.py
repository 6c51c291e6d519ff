"""Fields the SQL adapter keeps outside the entity's own row (``related``, ``references``).

Real CRM schemas spread one record over several tables. SuiteCRM keeps a contact's
primary email in ``email_addresses``, reached through ``email_addr_bean_rel``, and its
company through ``accounts_contacts``. Reading is one correlated subquery per field in
the row's own SELECT, so a page is still one query; writing updates or inserts the
related and link rows in the write's transaction. A change of a link or related row is
a change of the record: its stamp takes part in the record's position and version (see
:meth:`Extras.position`).

A reference's canonical value is the referenced record's *global* id. The CRM's own id
is read raw here and resolved through the links (:func:`resolve`), because only the links
know which global id a CRM id stands for.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from adapters import links
from router.adapter_config import EntityMapping, LinkTable, Reference, RelatedField
from router.errors import ConfigError, TransientWriteError

Now = sa.ColumnElement[Any]


@dataclass(frozen=True)
class Deferred:
    """A value capture cannot give yet: a reference to a record this CRM has not shared
    (it was created after its entity's pass). Capture leaves the row for a later pass
    and keeps the cursor before it; a row is never published with the reference lost."""

    entity: str
    source_record_id: str


def _reflect(
    meta: sa.MetaData, conn: Connection, name: str, key: str, columns: list[str]
) -> sa.Table:
    try:
        table = sa.Table(name, meta, autoload_with=conn)
    except sa.exc.NoSuchTableError:
        raise ConfigError(f"database has no table {name!r} ({key}.table)") from None
    missing = [c for c in columns if c not in table.c]
    if missing:
        raise ConfigError(f"table {name!r} has no column(s) {', '.join(missing)} ({key})")
    return table


def _live(column: sa.Column[Any] | None) -> list[sa.ColumnElement[bool]]:
    return [] if column is None else [sa.or_(column.is_(None), column == False)]  # noqa: E712


class _Link:
    """A reflected link table: which rows join this record to others."""

    def __init__(self, cfg: LinkTable, meta: sa.MetaData, conn: Connection, key: str) -> None:
        wanted = [cfg.record, cfg.other, *cfg.where]
        wanted += [c for c in (cfg.id, cfg.deleted, cfg.updated_at, cfg.created_at) if c]
        self.cfg = cfg
        self.table = _reflect(meta, conn, cfg.table, f"{key}.link", wanted)
        c = self.table.c
        self.record, self.other = c[cfg.record], c[cfg.other]
        self.deleted = c[cfg.deleted] if cfg.deleted else None
        self.updated_at = c[cfg.updated_at] if cfg.updated_at else None
        self.where = [c[k] == v for k, v in cfg.where.items()]

    def of(self, record_id: Any) -> list[sa.ColumnElement[bool]]:
        """The live link rows of one record (or of the outer query's row)."""
        return [self.record == record_id, *self.where, *_live(self.deleted)]

    def stamps(self, main_id: sa.Column[Any]) -> list[sa.ScalarSelect[Any]]:
        if self.updated_at is None:
            return []
        # Removed links included: unlinking is a change of the record too.
        query = sa.select(sa.func.max(self.updated_at)).where(self.record == main_id, *self.where)
        return [query.scalar_subquery()]

    def changed_since(self, since: Any) -> sa.Select[Any] | None:
        if self.updated_at is None:
            return None
        return sa.select(self.record).where(self.updated_at >= since, *self.where)

    def point(self, tx: Connection, record_id: Any, other: Any | None, now: Now) -> None:
        """Make the record's live link point at ``other`` (None: unlink it)."""
        current = tx.execute(sa.select(self.other).where(*self.of(record_id))).scalars().all()
        if other is not None and len(current) == 1 and str(current[0]) == str(other):
            return
        stamp = {self.updated_at: now} if self.updated_at is not None else {}
        if current:
            if self.deleted is not None:
                gone = sa.update(self.table).where(*self.of(record_id))
                tx.execute(gone.values({self.deleted: True, **stamp}))
            else:
                tx.execute(sa.delete(self.table).where(*self.of(record_id)))
        if other is None:
            return
        row: dict[Any, Any] = {self.record: record_id, self.other: other, **stamp}
        row.update({self.table.c[k]: v for k, v in self.cfg.where.items()})
        if self.deleted is not None:
            row[self.deleted] = False
        if self.cfg.created_at:
            row[self.table.c[self.cfg.created_at]] = now
        if self.cfg.id and _python_type(self.table.c[self.cfg.id]) is not int:
            row[self.table.c[self.cfg.id]] = str(uuid.uuid4())
        tx.execute(sa.insert(self.table).values(row))


class _Related:
    """One ``related`` field: its value lives in another table, through a link."""

    def __init__(
        self, name: str, cfg: RelatedField, meta: sa.MetaData, conn: Connection, key: str
    ) -> None:
        wanted = [cfg.id, cfg.column, *cfg.derived]
        wanted += [c for c in (cfg.deleted, cfg.updated_at, cfg.created_at) if c]
        self.name, self.cfg = name, cfg
        self.table = _reflect(meta, conn, cfg.table, key, wanted)
        self.link = _Link(cfg.link, meta, conn, key)
        c = self.table.c
        self.id, self.value = c[cfg.id], c[cfg.column]
        self.deleted = c[cfg.deleted] if cfg.deleted else None
        self.updated_at = c[cfg.updated_at] if cfg.updated_at else None

    def _joined(self, record_id: Any) -> sa.Select[Any]:
        link = self.link
        query = sa.select(self.value).join_from(self.table, link.table, link.other == self.id)
        query = query.where(*link.of(record_id), *_live(self.deleted))
        order = link.updated_at if link.updated_at is not None else link.other
        return query.order_by(order.desc()).limit(1)

    def read(self, main: sa.Table, main_id: sa.Column[Any]) -> sa.ColumnElement[Any]:
        label = f"crmsync_related_{self.name}"
        return self._joined(main_id).correlate(main).scalar_subquery().label(label)

    def stamps(self, main_id: sa.Column[Any]) -> list[sa.ScalarSelect[Any]]:
        found = self.link.stamps(main_id)
        if self.updated_at is not None:
            link = self.link
            query = sa.select(sa.func.max(self.updated_at)).join_from(
                self.table, link.table, link.other == self.id
            )
            found.append(query.where(link.record == main_id, *link.where).scalar_subquery())
        return found

    def changed_since(self, since: Any) -> list[sa.Select[Any]]:
        found = [q for q in [self.link.changed_since(since)] if q is not None]
        if self.updated_at is not None:
            link = self.link
            query = sa.select(link.record).join_from(self.table, link.table, link.other == self.id)
            found.append(query.where(self.updated_at >= since, *link.where))
        return found

    def _forms(self, value: Any) -> dict[str, Any]:
        text = str(value)
        forms: dict[str, Any] = {self.cfg.column: value}
        for col, how in self.cfg.derived.items():
            forms[col] = text.upper() if how == "upper" else text.lower()
        return forms

    def write(self, tx: Connection, record_id: Any, value: Any, now: Now) -> None:
        if value is None:
            self.link.point(tx, record_id, None, now)
            return
        if tx.execute(self._joined(record_id)).scalar() == value:
            return
        forms = self._forms(value)
        stamp = {self.updated_at: now} if self.updated_at is not None else {}
        target = None
        if self.cfg.match is not None:
            match = self.table.c[self.cfg.match] == forms[self.cfg.match]
            query = sa.select(self.id, self.value).where(match, *_live(self.deleted)).limit(1)
            found = tx.execute(query).first()
            if found is not None:
                target = found[0]
                if found[1] != value:  # same address, other spelling: the CRM shows ours
                    values = {self.table.c[k]: v for k, v in forms.items()}
                    tx.execute(sa.update(self.table).where(self.id == target).values(values))
        if target is None:
            row: dict[Any, Any] = {self.table.c[k]: v for k, v in forms.items()}
            row.update(stamp)
            if self.deleted is not None:
                row[self.deleted] = False
            if self.cfg.created_at:
                row[self.table.c[self.cfg.created_at]] = now
            if _python_type(self.id) is not int:
                target = row[self.id] = str(uuid.uuid4())
                tx.execute(sa.insert(self.table).values(row))
            else:
                key = tx.execute(sa.insert(self.table).values(row)).inserted_primary_key
                assert key is not None
                target = key[0]
        self.link.point(tx, record_id, target, now)


class _Ref:
    """One reference: the other record's CRM id, in a column or a link table."""

    def __init__(
        self,
        name: str,
        cfg: Reference,
        main: sa.Table,
        meta: sa.MetaData,
        conn: Connection,
        key: str,
    ) -> None:
        self.name, self.cfg = name, cfg
        self.column = None
        self.link = None
        if cfg.column is not None:
            if cfg.column not in main.c:
                raise ConfigError(f"table {main.name!r} has no column {cfg.column} ({key}.column)")
            self.column = main.c[cfg.column]
        else:
            assert cfg.link is not None  # Reference checks one of the two is set
            self.link = _Link(cfg.link, meta, conn, key)

    def read(self, main: sa.Table, main_id: sa.Column[Any]) -> sa.ColumnElement[Any]:
        label = f"crmsync_ref_{self.name}"
        if self.column is not None:
            return self.column.label(label)
        assert self.link is not None
        link = self.link
        order = link.updated_at if link.updated_at is not None else link.other
        query = sa.select(link.other).where(*link.of(main_id)).order_by(order.desc()).limit(1)
        return query.correlate(main).scalar_subquery().label(label)

    def stamps(self, main_id: sa.Column[Any]) -> list[sa.ScalarSelect[Any]]:
        return self.link.stamps(main_id) if self.link is not None else []

    def changed_since(self, since: Any) -> list[sa.Select[Any]]:
        query = self.link.changed_since(since) if self.link is not None else None
        return [query] if query is not None else []

    def crm_id(self, tx: Connection, record_id: str | None) -> Any:
        """The CRM's id of the referenced record; TransientWriteError while it has none
        (its own delivery has not arrived yet: the retry tiers wait for it)."""
        if record_id is None:
            return None
        link = links.by_record(tx, str(record_id))
        if link is None or link.entity != self.cfg.entity or link.source_record_id is None:
            raise TransientWriteError(
                f"{self.name} refers to {self.cfg.entity} {record_id}, not in this CRM yet"
            )
        column = self.column if self.column is not None else self.link.other if self.link else None
        if column is not None and _python_type(column) is int:
            return int(link.source_record_id)
        return link.source_record_id

    def write(self, tx: Connection, record_id: Any, crm_id: Any, now: Now) -> None:
        if self.link is not None:
            self.link.point(tx, record_id, crm_id, now)


class Extras:
    """The related fields and references of one entity."""

    def __init__(
        self,
        entity: str,
        mapping: EntityMapping,
        main: sa.Table,
        main_id: sa.Column[Any],
        conn: Connection,
    ) -> None:
        meta = main.metadata
        key = f"entities.{entity}"
        self.main, self.main_id = main, main_id
        self.related = [
            _Related(n, cfg, meta, conn, f"{key}.related.{n}") for n, cfg in mapping.related.items()
        ]
        self.refs = [
            _Ref(n, cfg, main, meta, conn, f"{key}.references.{n}")
            for n, cfg in mapping.references.items()
        ]

    def __bool__(self) -> bool:
        return bool(self.related or self.refs)

    @property
    def names(self) -> set[str]:
        return {r.name for r in self.related} | {r.name for r in self.refs}

    def columns(self) -> list[sa.ColumnElement[Any]]:
        parts: list[_Related | _Ref] = [*self.related, *self.refs]
        return [r.read(self.main, self.main_id) for r in parts]

    def position(self, updated_at: sa.Column[Any], dialect: str) -> sa.ColumnElement[Any]:
        """The record's capture position: the newest stamp of its row, its link rows and
        its related rows (a missing one counts as the row's own)."""
        parts: list[_Related | _Ref] = [*self.related, *self.refs]
        stamps = [s for r in parts for s in r.stamps(self.main_id)]
        if not stamps:
            return updated_at
        # SQLite's multi-argument max() is its GREATEST; NULLs poison both in MariaDB
        # and SQLite, hence the coalesce.
        greatest = sa.func.max if dialect == "sqlite" else sa.func.greatest
        return greatest(updated_at, *(sa.func.coalesce(s, updated_at) for s in stamps))

    def changed_since(self, since: Any, own: sa.Select[Any]) -> sa.Subquery | None:
        """The ids changed at or after ``since``: ``own`` (those whose row's stamp says so)
        and those whose link or related rows changed, as a derived table to join first.

        Not ``own OR id IN (...)``, nor a bare ``IN (... UNION ...)``: with either, MariaDB
        computed every row's position (its correlated subqueries) to sort the whole table
        before filtering, at every poll (100 ms at 5,000 contacts, idle)."""
        parts: list[_Related | _Ref] = [*self.related, *self.refs]
        queries = [q for r in parts for q in r.changed_since(since)]
        if not queries:
            return None
        return sa.union(own, *queries).subquery("crmsync_changed")

    def read(self, mapping: sa.RowMapping) -> dict[str, Any]:
        """The raw values (references still CRM ids: see :func:`resolve`)."""
        found = {r.name: mapping[f"crmsync_related_{r.name}"] for r in self.related}
        for ref in self.refs:
            raw = mapping[f"crmsync_ref_{ref.name}"]
            found[ref.name] = None if raw is None else _Raw(ref.cfg.entity, str(raw))
        return found

    def foreign_keys(self, tx: Connection, fields: dict[str, Any]) -> dict[sa.Column[Any], Any]:
        """The FK column values of the references among ``fields``."""
        return {
            ref.column: ref.crm_id(tx, fields[ref.name])
            for ref in self.refs
            if ref.column is not None and ref.name in fields
        }

    def write(self, tx: Connection, record_id: Any, fields: dict[str, Any], now: Now) -> None:
        """Write the related rows and link-table references of one record."""
        for rel in self.related:
            if rel.name in fields:
                rel.write(tx, record_id, fields[rel.name], now)
        for ref in self.refs:
            if ref.link is not None and ref.name in fields:
                ref.write(tx, record_id, ref.crm_id(tx, fields[ref.name]), now)


@dataclass(frozen=True)
class _Raw:
    """A reference as the CRM holds it, before :func:`resolve`."""

    entity: str
    source_record_id: str


def resolve(tx: Connection, fields_of: list[dict[str, Any]]) -> None:
    """Turn every raw reference in these rows' fields into the global record id, in one
    link lookup per entity; one without a link becomes :class:`Deferred`."""
    wanted: dict[str, set[str]] = {}
    for fields in fields_of:
        for value in fields.values():
            if isinstance(value, _Raw):
                wanted.setdefault(value.entity, set()).add(value.source_record_id)
    known = {e: links.by_source(tx, e, sorted(ids)) for e, ids in wanted.items()}
    for fields in fields_of:
        for name, value in fields.items():
            if isinstance(value, _Raw):
                link = known[value.entity].get(value.source_record_id)
                fields[name] = link.record_id if link is not None else Deferred(*_astuple(value))


def _astuple(raw: _Raw) -> tuple[str, str]:
    return raw.entity, raw.source_record_id


def _python_type(column: sa.Column[Any]) -> type | None:
    try:
        return column.type.python_type
    except NotImplementedError:
        return None
