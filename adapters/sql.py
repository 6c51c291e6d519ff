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
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from adapters import journal, links, sqlclock
from adapters.base import Adapter, SourceRow, VersionMismatch
from adapters.cursor import Horizon
from router.config import AdapterConfig, EntityMapping
from router.database import make_engine
from router.errors import ConfigError, PermanentWriteError, TransientWriteError
from router.events import Scalar


class _Table:
    """One mapped entity: the reflected table and its configured columns."""

    def __init__(self, entity: str, mapping: EntityMapping, table: sa.Table, where: str) -> None:
        self.entity = entity
        self.mapping = mapping
        self.table = table
        missing = [
            col
            for col in [mapping.id, mapping.updated_at, *mapping.fields.values()]
            + ([mapping.deleted] if mapping.deleted else [])
            if col not in table.c
        ]
        if missing:
            raise ConfigError(
                f"{where}: table {mapping.table!r} has no column(s) {', '.join(missing)} "
                f"(entities.{entity})"
            )
        self.id = table.c[mapping.id]
        self.updated_at = table.c[mapping.updated_at]
        self.deleted = table.c[mapping.deleted] if mapping.deleted else None
        self.fields = {name: table.c[col] for name, col in mapping.fields.items()}
        self.token = sa.cast(self.updated_at, sa.String).label("crmsync_version")
        self.int_ids = _python_type(self.id) is int
        self.clock_kind = sqlclock.kind_of(self.updated_at)
        self.integer_clock = _python_type(self.updated_at) is int

    def key(self, source_record_id: str) -> Any:
        return int(source_record_id) if self.int_ids else source_record_id

    def select(self) -> sa.Select[Any]:
        cols = [self.id, self.updated_at, self.token, *self.fields.values()]
        if self.deleted is not None:
            cols.append(self.deleted)
        return sa.select(*cols)

    def row(self, r: sa.Row[Any]) -> SourceRow:
        m = r._mapping
        return SourceRow(
            entity=self.entity,
            source_record_id=str(m[self.id]),
            fields={name: m[col] for name, col in self.fields.items()},
            deleted=bool(m[self.deleted]) if self.deleted is not None else False,
            version=m["crmsync_version"],
            position=m[self.updated_at],
        )

    def now(self, dialect: str) -> sa.ColumnElement[Any]:
        """The database's clock as a value for ``updated_at`` (stamped server-side)."""
        return sqlclock.now_expr(dialect, self.clock_kind, self.integer_clock)


def _lenient_text(dbapi_connection: Any, _record: Any) -> None:
    # SQLite does not check that TEXT is UTF-8; the driver's default decoding raises while
    # fetching, which failed the whole page on every poll. Undecodable bytes come through
    # as surrogates instead, and capture skips that one row when it cannot encode it.
    dbapi_connection.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")


def _python_type(column: sa.Column[Any]) -> type | None:
    try:
        return column.type.python_type
    except NotImplementedError:
        return None


def _classify(err: sa.exc.DBAPIError) -> Exception:
    """Library errors become write errors the SDK can route (retry vs dead-letter)."""
    if isinstance(err, (sa.exc.IntegrityError, sa.exc.DataError, sa.exc.ProgrammingError)):
        return PermanentWriteError(f"{type(err.orig).__name__}: {err.orig}")
    return TransientWriteError(f"{type(err.orig).__name__}: {err.orig}")


class SqlAdapter(Adapter):
    def __init__(self, config: AdapterConfig, where: str = "adapter config") -> None:
        self.name = config.name
        self.config = config
        self.engine = make_engine(config.database.url)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _lenient_text)
        meta = sa.MetaData()
        self.tables: dict[str, _Table] = {}
        try:
            with self.engine.begin() as conn:
                for entity, mapping in config.entities.items():
                    try:
                        table = sa.Table(mapping.table, meta, autoload_with=conn)
                    except sa.exc.NoSuchTableError:
                        raise ConfigError(
                            f"{where}: database has no table {mapping.table!r} "
                            f"(entities.{entity}.table)"
                        ) from None
                    self.tables[entity] = _Table(entity, mapping, table, where)
                links.create(conn)
        except sa.exc.OperationalError as e:
            raise ConfigError(f"{where}: cannot open database.url: {e.orig}") from e
        self.journal = config.capture.delete_journal
        if self.journal:
            self._install_journal(where)

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
        return {entity: sorted(t.fields) for entity, t in self.tables.items()}

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except sa.exc.DBAPIError as e:
            raise _classify(e) from e

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                if conn.dialect.name == "sqlite":
                    # pysqlite begins only before a write: its reads would each see the
                    # latest commit. IMMEDIATE takes the write lock now, so the page's
                    # link writes cannot fail on a snapshot a user's commit made stale.
                    with conn.begin():
                        conn.exec_driver_sql("BEGIN IMMEDIATE")
                        yield conn
                    return
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    yield conn
        except sa.exc.DBAPIError as e:
            raise _classify(e) from e

    def read_changes(
        self, tx: Connection, entity: str, since: Any, after: tuple[Any, str] | None, limit: int
    ) -> list[SourceRow]:
        t = self.tables[entity]
        query = t.select()
        if since is not None:
            query = query.where(t.updated_at >= since)
        if after is not None:
            position, sid = after
            key = t.key(sid)
            query = query.where(
                sa.or_(t.updated_at > position, sa.and_(t.updated_at == position, t.id > key))
            )
        query = query.order_by(t.updated_at, t.id).limit(limit)
        return [t.row(r) for r in tx.execute(query)]

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
        return t.row(r) if r else None

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
        values: dict[sa.Column[Any], Any] = {t.fields[n]: value for n, value in fields.items()}
        values[t.updated_at] = t.now(tx.dialect.name)
        if t.deleted is not None:
            values[t.deleted] = False
        if source_record_id is None:
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
        back = self.read_record(tx, entity, source_record_id)
        if back is None:
            raise TransientWriteError(f"row {source_record_id} vanished right after the write")
        return back

    def insert_many(
        self, tx: Connection, entity: str, items: Sequence[tuple[str, dict[str, Scalar]]]
    ) -> list[SourceRow]:
        """One INSERT for the lot (``executemany``, which SQLAlchemy sends as multi-row
        VALUES where the driver allows), the database stamping ``updated_at``; then one
        SELECT per 500 rows to read them back, in the order given."""
        if not items:
            return []
        t = self.tables[entity]
        fixed: dict[sa.Column[Any], Any] = {t.updated_at: t.now(tx.dialect.name)}
        if t.deleted is not None:
            fixed[t.deleted] = False
        params = []
        for record_id, fields in items:
            row = {t.fields[n].key: value for n, value in fields.items()}
            if not t.int_ids:
                row[t.id.key] = record_id  # as write_record: a retried insert finds its row
            params.append(row)
        query = t.table.insert().values(fixed)
        if t.int_ids:
            # Ids handed out by the database, matched to their rows by parameter order.
            query = query.returning(t.id, sort_by_parameter_order=True)
            result = self._execute_many(tx, query, params)
            ids = [str(r[0]) for r in result]
        else:
            self._execute_many(tx, query, params)
            ids = [record_id for record_id, _ in items]
        back = self.read_records(tx, entity, ids)
        missing = [sid for sid in ids if sid not in back]
        if missing:
            raise TransientWriteError(f"{len(missing)} rows vanished right after a bulk insert")
        return [back[sid] for sid in ids]

    def read_records(
        self, tx: Connection, entity: str, source_record_ids: Sequence[str]
    ) -> dict[str, SourceRow]:
        t = self.tables[entity]
        found: dict[str, SourceRow] = {}
        for start in range(0, len(source_record_ids), 500):  # bind-parameter limits
            keys = [t.key(sid) for sid in source_record_ids[start : start + 500]]
            for r in tx.execute(t.select().where(t.id.in_(keys))):
                row = t.row(r)
                found[row.source_record_id] = row
        return found

    def delete_record(
        self, tx: Connection, entity: str, source_record_id: str, expected_version: str | None
    ) -> SourceRow | None:
        t = self.tables[entity]
        where = [t.id == t.key(source_record_id)]
        if expected_version is not None:
            where.append(t.token == expected_version)
        query: sa.Update | sa.Delete
        if t.deleted is not None:
            query = (
                t.table.update()
                .where(*where)
                .values({t.deleted: True, t.updated_at: t.now(tx.dialect.name)})
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
        return {str(r[0]) for r in tx.execute(sa.select(t.id))}

    def existing_ids(
        self, tx: Connection, entity: str, source_record_ids: Sequence[str]
    ) -> set[str] | None:
        t = self.tables[entity]
        if t.deleted is not None:
            return None
        found: set[str] = set()
        for start in range(0, len(source_record_ids), 500):  # bind-parameter limits
            keys = [t.key(sid) for sid in source_record_ids[start : start + 500]]
            found.update(str(r[0]) for r in tx.execute(sa.select(t.id).where(t.id.in_(keys))))
        return found

    def journals_deletes(self, entity: str) -> bool:
        return self.journal

    def list_all(self, tx: Connection, entity: str) -> Iterator[SourceRow]:
        t = self.tables[entity]
        for r in tx.execute(t.select().order_by(t.id)):
            yield t.row(r)

    def read_page(
        self, tx: Connection, entity: str, after: str | None, limit: int
    ) -> list[SourceRow]:
        t = self.tables[entity]
        query = t.select()
        if after is not None:
            query = query.where(t.id > t.key(after))
        return [t.row(r) for r in tx.execute(query.order_by(t.id).limit(limit))]

    @staticmethod
    def _execute_many(
        tx: Connection, query: sa.Executable, params: list[dict[str, Any]]
    ) -> sa.CursorResult[Any]:
        try:
            return tx.execute(query, params)
        except sa.exc.DBAPIError as e:
            raise _classify(e) from e

    @staticmethod
    def _execute(tx: Connection, query: sa.Executable) -> sa.CursorResult[Any]:
        try:
            return tx.execute(query)
        except sa.exc.DBAPIError as e:
            raise _classify(e) from e

    def close(self) -> None:
        self.engine.dispose()
