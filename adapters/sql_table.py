"""One mapped entity of the SQL adapter: the reflected table and its configured columns,
and how a row of it reads as a :class:`~adapters.base.SourceRow`."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from adapters import sqlclock
from adapters.base import SourceRow
from adapters.mapping import Wired
from adapters.sql_related import Extras
from adapters.transforms import TransformError
from router.adapter_config import EntityMapping
from router.errors import ConfigError, PermanentWriteError


class Table:
    """One mapped entity: the reflected table and its configured columns."""

    def __init__(
        self,
        entity: str,
        mapping: EntityMapping,
        table: sa.Table,
        where: str,
        conn: Connection | None = None,
    ) -> None:
        self.entity = entity
        self.mapping = mapping
        self.table = table
        self.transforms: Wired | None = None
        extra: list[str] = []
        if mapping.transforms or mapping.names is not None or mapping.constants:
            self.transforms = Wired(mapping)
            extra = sorted(self.transforms.columns | set(mapping.constants))
        missing = [
            col
            for col in [mapping.id, mapping.updated_at, *mapping.fields.values(), *extra]
            + list(mapping.filter)
            + ([mapping.created_at] if mapping.created_at else [])
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
        # Columns read and written as they are (every field, when no transform applies).
        self.fields = {name: table.c[col] for name, col in mapping.fields.items()}
        self.field_names = sorted(self.fields)
        self.raw: dict[str, sa.Column[Any]] = {}
        if self.transforms is not None:
            w = self.transforms
            self.fields = {
                n: c
                for n, c in self.fields.items()
                if n not in w.fields and c.name not in w.columns
            }
            self.field_names = sorted(set(self.fields) | w.fields)
            self.raw = {col: table.c[col] for col in sorted(w.read_columns)}
        # Rows of a table shared by several entities: only this entity's (read), and
        # every write marks its row as this entity's.
        self.filter = {table.c[k]: v for k, v in mapping.filter.items()}
        self.where = [col == value for col, value in self.filter.items()]
        self.deleted_value = mapping.deleted_value
        self.created_at = table.c[mapping.created_at] if mapping.created_at else None
        self.extras: Extras | None = None
        self.position: sa.ColumnElement[Any] = self.updated_at
        if mapping.related or mapping.references:
            if conn is None:
                raise ConfigError(f"{where}: entities.{entity}: related fields need a database")
            try:
                self.extras = Extras(entity, mapping, table, self.id, conn)
            except ConfigError as e:
                raise ConfigError(f"{where}: {e}") from None
            self.position = self.extras.position(self.updated_at, conn.dialect.name)
            self.field_names = sorted(set(self.field_names) | self.extras.names)
        self.token = sa.cast(self.position, sa.String).label("crmsync_version")
        self.int_ids = _python_type(self.id) is int
        self.clock_kind = sqlclock.kind_of(self.updated_at)
        self.integer_clock = _python_type(self.updated_at) is int

    def key(self, source_record_id: str) -> Any:
        return int(source_record_id) if self.int_ids else source_record_id

    def select(self) -> sa.Select[Any]:
        cols: list[Any] = [self.id, self.updated_at, self.token, *self.fields.values()]
        cols += self.raw.values()
        if self.deleted is not None:
            cols.append(self.deleted)
        if self.extras is not None:
            cols += [self.position.label("crmsync_position"), *self.extras.columns()]
        return sa.select(*cols).where(*self.where)

    def is_deleted(self, value: Any) -> bool:
        return value is not None and bool(value) == self.deleted_value

    def live(self) -> sa.ColumnElement[bool]:
        """Rows not deleted (a null flag is a live row)."""
        assert self.deleted is not None
        if self.deleted_value:
            return sa.or_(self.deleted.is_(None), self.deleted == sa.false())
        return sa.or_(self.deleted.is_(None), self.deleted == sa.true())

    def row(self, r: sa.Row[Any]) -> SourceRow:
        m = r._mapping
        fields = {name: m[col] for name, col in self.fields.items()}
        if self.transforms is not None:
            fields.update(self.transforms.read({c: m[col] for c, col in self.raw.items()}))
        position = m[self.updated_at]
        if self.extras is not None:
            fields.update(self.extras.read(m))
            position = m["crmsync_position"]
        return SourceRow(
            entity=self.entity,
            source_record_id=str(m[self.id]),
            fields=fields,
            deleted=self.is_deleted(m[self.deleted]) if self.deleted is not None else False,
            version=m["crmsync_version"],
            position=position,
        )

    def values(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Canonical fields -> values keyed by column name (``Column.key``); a value a
        transform cannot write is a :class:`PermanentWriteError` (retrying cannot help)."""
        extra = self.extras.names if self.extras is not None else set()
        fixed = {col.key: v for col, v in self.filter.items()}
        if self.transforms is None:
            return {**{self.fields[n].key: v for n, v in fields.items() if n not in extra}, **fixed}
        plain = {self.fields[n].key: v for n, v in fields.items() if n in self.fields}
        plain.update(fixed)
        try:
            written = self.transforms.write(
                {n: v for n, v in fields.items() if n not in self.fields and n not in extra}
            )
        except TransformError as e:
            raise PermanentWriteError(f"{self.entity}: cannot write {e}") from None
        return {**plain, **{self.table.c[col].key: v for col, v in written.items()}}

    def now(self, dialect: str) -> sa.ColumnElement[Any]:
        """The database's clock as a value for ``updated_at`` (stamped server-side)."""
        return sqlclock.now_expr(dialect, self.clock_kind, self.integer_clock)


def _python_type(column: sa.Column[Any]) -> type | None:
    try:
        return column.type.python_type
    except NotImplementedError:
        return None
