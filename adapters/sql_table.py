"""One mapped entity of the SQL adapter: the reflected table and its configured columns,
and how a row of it reads as a :class:`~adapters.base.SourceRow`."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from adapters import sqlclock
from adapters.base import SourceRow
from router.config import EntityMapping
from router.errors import ConfigError


class Table:
    """One mapped entity: the reflected table and its configured columns."""

    def __init__(self, entity: str, mapping: EntityMapping, table: sa.Table, where: str) -> None:
        self.entity = entity
        self.mapping = mapping
        self.table = table
        if mapping.transforms or mapping.names is not None or mapping.constants:
            # Accepted by the config model, not applied here yet: refusing beats syncing
            # CRM values as if they were canonical.
            raise ConfigError(
                f"{where}: entities.{entity}: transforms, names and constants are not "
                'applied by kind = "sql" yet'
            )
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


def _python_type(column: sa.Column[Any]) -> type | None:
    try:
        return column.type.python_type
    except NotImplementedError:
        return None
