"""``kind = "sql"``: any database SQLAlchemy reaches (SQLite, PostgreSQL, MariaDB, ...).

Capture polls the ``updated_at`` column, its cursor bounded by the database's own clock
(:mod:`adapters.sqlclock`); writes stamp ``updated_at`` from that clock too, never the
adapter host's. Writes are conditional on the version last seen (``WHERE updated_at =
<token>``); the SDK first reads the row locked (``SELECT ... FOR UPDATE``) and compares
its mapped content as well, because a second-precision token does not move for an edit
in the same second. The version token is the column cast to text on the server, so it
compares exactly whatever the column's type and the driver's conversions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from adapters import journal, links, push_trigger, sql_related, sqlclock
from adapters.base import SourceRow, VersionMismatch
from adapters.cleansing import Cleansing
from adapters.cursor import Horizon
from adapters.linkstore import LinkStoreAdapter, db_error
from adapters.sql_table import Table as _Table
from router.adapter_config import AdapterConfig
from router.errors import ConfigError, PermanentWriteError, TransientWriteError
from router.events import Scalar


def multirow_is_slow(tx: Connection) -> bool:
    """psycopg 3 parses each long multi-row statement anew (~40% slower here than its
    own pipelined executemany); every other driver is faster with multi-row VALUES."""
    return tx.dialect.name == "postgresql" and tx.dialect.driver == "psycopg"


def _is_int(text: str) -> bool:
    """An id an integer key can have (any other cannot name a row of that table)."""
    try:
        int(text)
    except ValueError:
        return False
    return True


def _classify(err: sa.exc.DBAPIError) -> Exception:
    """Library errors become write errors the SDK can route (retry vs dead-letter)."""
    if isinstance(err, (sa.exc.IntegrityError, sa.exc.DataError, sa.exc.ProgrammingError)):
        return db_error(PermanentWriteError, err)
    return db_error(TransientWriteError, err)


class SqlAdapter(LinkStoreAdapter):
    classify = staticmethod(_classify)

    def __init__(self, config: AdapterConfig, where: str = "adapter config") -> None:
        super().__init__(config.links_url, where)
        self.name = config.name
        self.config = config
        self.cleansing = Cleansing.from_config(config.canonical)
        meta = sa.MetaData()
        self.tables: dict[str, _Table] = {}
        try:
            with self.engine.begin() as conn:
                for entity, mapping in config.entities.items():
                    assert mapping.table is not None  # AdapterConfig: sql entities name one
                    try:
                        table = sa.Table(mapping.table, meta, autoload_with=conn)
                    except sa.exc.NoSuchTableError:
                        raise ConfigError(
                            f"{where}: database has no table {mapping.table!r} "
                            f"(entities.{entity}.table)"
                        ) from None
                    self.tables[entity] = _Table(entity, mapping, table, where, conn)
                links.create(conn)
        except sa.exc.OperationalError as e:
            raise ConfigError(f"{where}: cannot open database.url: {e.orig}") from e
        self.journal = config.capture.delete_journal
        if self.journal:
            self._install_journal(where)
        if config.capture.push:
            try:
                watched = push_trigger.watched(self.tables.values())
                push_trigger.install(self.engine, self.name, watched, where)
            except ConfigError:
                self.close()  # the caller never gets the adapter to close
                raise
        else:
            push_trigger.uninstall(self.engine, self.name)

    def _install_journal(self, where: str) -> None:
        dialect = self.engine.dialect.name
        if not journal.supported(dialect):
            raise ConfigError(
                f"{where}: no delete journal for {dialect}: set capture.delete_journal = false"
            )
        try:
            with self.engine.begin() as conn:
                for entity, t in self.tables.items():
                    journal.install(conn, entity, t.table, t.id)
        except sa.exc.DBAPIError as e:
            raise ConfigError(
                f"{where}: cannot install the delete journal ({type(e.orig).__name__}: "
                f"{e.orig}); grant the right to create triggers, or set "
                "capture.delete_journal = false"
            ) from e

    def entities(self) -> dict[str, list[str]]:
        return {entity: self.tables[entity].field_names for entity in self._in_reference_order()}

    def _in_reference_order(self) -> list[str]:
        """Referenced entities first: capture then shares a company before the contacts
        that refer to it, so a contact's pass seldom has to wait for its company."""
        order: list[str] = []

        def visit(entity: str, path: tuple[str, ...]) -> None:
            if entity in order or entity in path:
                return  # placed already, or a cycle: config order decides
            for ref in self.config.entities[entity].references.values():
                visit(ref.entity, (*path, entity))
            order.append(entity)

        for entity in self.tables:
            visit(entity, ())
        return order

    def _finish(self, tx: Connection, rows: list[SourceRow]) -> list[SourceRow]:
        """Resolve the CRM ids of references into global record ids."""
        if rows and self.tables[rows[0].entity].extras is not None:
            sql_related.resolve(tx, [row.fields for row in rows])
        return rows

    def read_changes(
        self, tx: Connection, entity: str, since: Any, after: tuple[Any, str] | None, limit: int
    ) -> list[SourceRow]:
        t = self.tables[entity]
        query = t.select()
        if since is not None:
            changed = t.updated_at >= since
            # The row's own stamp, or one of its link/related rows' (then its position,
            # the newest of them, is at or after since as well).
            own = sa.select(t.id).where(changed)
            ids = t.extras.changed_since(since, own) if t.extras is not None else None
            if ids is None:
                query = query.where(changed)
            else:
                # The few changed ids first, then their rows: MySQL/MariaDB must be told.
                query = query.join_from(ids, t.table, t.id == ids.c[0])
                query = query.prefix_with("STRAIGHT_JOIN", dialect="mysql")
        if after is not None:
            position, sid = after
            key = t.key(sid)
            query = query.where(
                sa.or_(t.position > position, sa.and_(t.position == position, t.id > key))
            )
        query = query.order_by(t.position, t.id).limit(limit)
        return self._finish(tx, [t.row(r) for r in tx.execute(query)])

    def horizon(self, tx: Connection, entity: str) -> Horizon:
        t = self.tables[entity]
        if t.clock_kind is sqlclock.Kind.TEXT:
            return Horizon(None)
        dialect = tx.dialect.name
        raw = tx.execute(sa.select(sqlclock.now_expr(dialect, t.clock_kind))).scalar_one()
        now = sqlclock.as_position(raw, t.clock_kind)
        oldest = None
        query = sqlclock.oldest_open_transaction(dialect)
        if query is not None:
            started = tx.execute(query).scalar()
            oldest = sqlclock.bound_for(started, t.clock_kind) if started is not None else None
        return Horizon(now, oldest)

    def read_record(
        self, tx: Connection, entity: str, source_record_id: str, for_update: bool = False
    ) -> SourceRow | None:
        t = self.tables[entity]
        query = t.select().where(t.id == t.key(source_record_id))
        if for_update:
            # PostgreSQL and MariaDB lock the row; SQLite has no row locks, and its write
            # lock is taken by the UPDATE that follows (a stale snapshot fails it instead).
            query = query.with_for_update()
        r = tx.execute(query).first()
        return self._finish(tx, [t.row(r)])[0] if r else None

    def write_record(
        self,
        tx: Connection,
        entity: str,
        source_record_id: str | None,
        record_id: str,
        fields: dict[str, Scalar],
        expected_version: str | None,
    ) -> SourceRow:
        t = self.tables[entity]
        # Keyed by Column, never by name: any legal identifier is a column name (``fn``,
        # ``key``, ``order``, "First Name"), and SQLAlchemy quotes what needs quoting.
        values: dict[sa.Column[Any], Any] = {t.table.c[k]: v for k, v in t.values(fields).items()}
        now = t.now(tx.dialect.name)
        values[t.updated_at] = now
        if t.extras is not None:
            values.update(t.extras.foreign_keys(tx, fields))
        if t.deleted is not None:
            values[t.deleted] = not t.deleted_value
        if source_record_id is None:
            if t.created_at is not None:
                values[t.created_at] = now
            if not t.int_ids:
                values[t.id] = record_id  # a text id: the global id keeps inserts idempotent
            result = self._execute(tx, t.table.insert().values(values))
            key = result.inserted_primary_key[0] if result.inserted_primary_key else record_id
            source_record_id = str(key)
        else:
            query = t.table.update().where(t.id == t.key(source_record_id)).values(values)
            if expected_version is not None:
                query = query.where(t.token == expected_version)
            if self._execute(tx, query).rowcount != 1:
                raise VersionMismatch(self.read_record(tx, entity, source_record_id))
        if t.extras is not None:
            try:
                t.extras.write(tx, t.key(source_record_id), fields, now)
            except sa.exc.DBAPIError as e:
                raise _classify(e) from e
        back = self.read_record(tx, entity, source_record_id)
        if back is None:
            raise TransientWriteError(f"row {source_record_id} vanished right after the write")
        return back

    def insert_many(
        self, tx: Connection, entity: str, items: Sequence[tuple[str, dict[str, Scalar]]]
    ) -> list[SourceRow]:
        """One ``executemany`` INSERT for the batch and one read-back per 500 rows. The
        stamp and the id are what :meth:`write_record` gives one row; generated integer
        ids come back in input order through ``RETURNING ... sort_by_parameter_order``,
        or one INSERT per row where the dialect cannot promise that order."""
        if not items:
            return []
        t = self.tables[entity]
        if t.extras is not None:
            # Related rows and references are written one record at a time.
            return super().insert_many(tx, entity, items)
        fixed: dict[sa.Column[Any], Any] = {t.updated_at: t.now(tx.dialect.name)}
        if t.created_at is not None:
            fixed[t.created_at] = fixed[t.updated_at]
        if t.deleted is not None:
            fixed[t.deleted] = not t.deleted_value
        query = t.table.insert().values(fixed)
        # executemany parameters are keyed by column key (the reflected name), not passed
        # as keyword arguments, so any identifier works here too.
        params = [t.values(fields) for _, fields in items]
        if not t.int_ids:
            for (record_id, _), row in zip(items, params, strict=True):
                row[t.id.key] = record_id  # a text id: the global id, as write_record does
        # One executemany needs one set of columns: rows that carry other fields (a column
        # left out keeps its default, never a null) go in a statement of their own.
        groups: dict[frozenset[str], list[int]] = {}
        for i, row in enumerate(params):
            groups.setdefault(frozenset(row), []).append(i)
        keys = [record_id for record_id, _ in items]
        for positions in groups.values():
            batch = [params[i] for i in positions]
            for i, key in zip(positions, self._insert(tx, t, query, batch), strict=True):
                keys[i] = key
        back = self.read_records(tx, entity, keys)
        missing = [key for key in keys if key not in back]
        if missing:
            raise TransientWriteError(f"{len(missing)} row(s) vanished right after the insert")
        return [back[key] for key in keys]

    def _insert(
        self, tx: Connection, t: _Table, query: sa.Insert, rows: list[dict[str, Any]]
    ) -> list[str]:
        """Insert ``rows`` (one set of columns); their ids in input order."""
        if not t.int_ids:
            if multirow_is_slow(tx):
                self._execute(tx, query, rows)
            else:
                # RETURNING makes SQLAlchemy send multi-row INSERT ... VALUES statements
                # ("insertmanyvalues"): 2x the driver's executemany on SQLite, 1.3x on
                # MariaDB here.
                self._execute(tx, query.returning(t.id), rows).all()
            return [str(row[t.id.key]) for row in rows]
        if tx.dialect.insert_executemany_returning_sort_by_parameter_order:
            returning = query.returning(t.id, sort_by_parameter_order=True)
            return [str(r[0]) for r in self._execute(tx, returning, rows)]
        keys = []
        for row in rows:
            key = self._execute(tx, query, row).inserted_primary_key
            assert key is not None  # an INSERT of one row always reports its key
            keys.append(str(key[0]))
        return keys

    def read_records(
        self, tx: Connection, entity: str, source_record_ids: Sequence[str]
    ) -> dict[str, SourceRow]:
        t = self.tables[entity]
        found: dict[str, SourceRow] = {}
        ids = [sid for sid in source_record_ids if not t.int_ids or _is_int(sid)]
        for start in range(0, len(ids), 500):  # bind-parameter limits
            keys = [t.key(sid) for sid in ids[start : start + 500]]
            page = [t.row(r) for r in tx.execute(t.select().where(t.id.in_(keys)))]
            for row in self._finish(tx, page):
                found[row.source_record_id] = row
        return {sid: found[sid] for sid in source_record_ids if sid in found}

    def delete_record(
        self, tx: Connection, entity: str, source_record_id: str, expected_version: str | None
    ) -> SourceRow | None:
        t = self.tables[entity]
        where = [t.id == t.key(source_record_id), *t.where]
        if expected_version is not None:
            where.append(t.token == expected_version)
        query: sa.Update | sa.Delete
        if t.deleted is not None:
            query = (
                t.table.update()
                .where(*where)
                .values({t.deleted: t.deleted_value, t.updated_at: t.now(tx.dialect.name)})
            )
        else:
            query = t.table.delete().where(*where)
        if self._execute(tx, query).rowcount != 1:
            current = self.read_record(tx, entity, source_record_id)
            if current is None:
                return None  # already gone: the delete is done
            raise VersionMismatch(current)
        return self.read_record(tx, entity, source_record_id) if t.deleted is not None else None

    def soft_deletes(self, entity: str) -> bool:
        return self.tables[entity].deleted is not None

    def list_ids(self, tx: Connection, entity: str) -> set[str] | None:
        t = self.tables[entity]
        if t.deleted is not None:
            return None
        return {str(r[0]) for r in tx.execute(sa.select(t.id).where(*t.where))}

    def existing_ids(
        self, tx: Connection, entity: str, source_record_ids: Sequence[str]
    ) -> set[str] | None:
        t = self.tables[entity]
        if t.deleted is not None:
            return None
        found: set[str] = set()
        for start in range(0, len(source_record_ids), 500):  # bind-parameter limits
            keys = [t.key(sid) for sid in source_record_ids[start : start + 500]]
            query = sa.select(t.id).where(t.id.in_(keys), *t.where)
            found.update(str(r[0]) for r in tx.execute(query))
        return found

    def journals_deletes(self, entity: str) -> bool:
        return self.journal

    def list_all(self, tx: Connection, entity: str) -> Iterator[SourceRow]:
        t = self.tables[entity]
        for r in tx.execute(t.select().order_by(t.id)):
            yield self._finish(tx, [t.row(r)])[0]

    def count_rows(self, tx: Connection, entity: str) -> int | None:
        t = self.tables[entity]
        query = sa.select(sa.func.count()).select_from(t.table).where(*t.where)
        if t.deleted is not None:
            query = query.where(t.live())
        return int(tx.execute(query).scalar_one())

    def read_page(
        self, tx: Connection, entity: str, after: str | None, limit: int
    ) -> list[SourceRow]:
        t = self.tables[entity]
        query = t.select()
        if after is not None:
            query = query.where(t.id > t.key(after))
        return self._finish(tx, [t.row(r) for r in tx.execute(query.order_by(t.id).limit(limit))])

    @staticmethod
    def _execute(tx: Connection, query: sa.Executable, params: Any = None) -> sa.CursorResult[Any]:
        try:
            return tx.execute(query, params)
        except sa.exc.DBAPIError as e:
            raise _classify(e) from e
        except sa.exc.StatementError as e:
            # Refused before it reached the database: a value the column's type cannot
            # bind (text for a Boolean). The same value fails every retry.
            name = type(e.orig).__name__  # its text quotes the value: not for logs
            raise PermanentWriteError(f"{name}: {e.orig}", log_text=name) from e
