"""The kit's CRM driver for ``kind = "sql"``: a user's edits as direct row writes.

Rows are written through the adapter's own view of each table (its columns, transforms
and the database's clock for ``updated_at``), on a connection of the driver's own, so
nothing of the SDK (links, outbox) takes part. Related tables and references are left
alone: the checks exercise the entity's own columns.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from adapters.base import Adapter
from adapters.kit.driver import KitSetupError
from adapters.sql import SqlAdapter
from adapters.sql_table import Table
from router.adapter_config import AdapterConfig
from router.events import Scalar


class SqlDriver:
    def __init__(self, config: AdapterConfig, adapter: Adapter) -> None:
        assert isinstance(adapter, SqlAdapter) and config.database is not None
        self.adapter = adapter
        self.engine = sa.create_engine(config.database.url)

    def _stamped(self, t: Table, values: dict[str, Any]) -> dict[Any, Any]:
        row: dict[Any, Any] = {t.table.c[k]: v for k, v in values.items()}
        row[t.updated_at] = t.now(self.engine.dialect.name)
        return row

    def _related(self, conn: Connection, t: Table, sid: str, fields: dict[str, Scalar]) -> None:
        """Related rows (SuiteCRM's email) as the application writes them."""
        if t.extras is not None:
            refs = set(t.mapping.references)
            mine = {n: v for n, v in fields.items() if n not in refs}
            t.extras.write(conn, t.key(sid), mine, t.now(self.engine.dialect.name))

    def insert(self, entity: str, fields: dict[str, Scalar]) -> str:
        t = self.adapter.tables[entity]
        row = self._stamped(t, t.values(fields))
        if t.created_at is not None:
            row[t.created_at] = row[t.updated_at]
        if t.deleted is not None:
            row[t.deleted] = not t.deleted_value
        if not t.int_ids:
            row[t.id] = f"user-{uuid.uuid4().hex[:12]}"
        with self.engine.begin() as conn:
            result = conn.execute(t.table.insert().values(row))
            if t.int_ids:
                key = result.inserted_primary_key
                assert key is not None
                sid = str(key[0])
            else:
                sid = str(row[t.id])
            self._related(conn, t, sid, fields)
        return sid

    def update(self, entity: str, source_record_id: str, fields: dict[str, Scalar]) -> None:
        t = self.adapter.tables[entity]
        query = t.table.update().where(t.id == t.key(source_record_id))
        with self.engine.begin() as conn:
            conn.execute(query.values(self._stamped(t, t.values(fields))))
            self._related(conn, t, source_record_id, fields)

    def delete(self, entity: str, source_record_id: str) -> None:
        t = self.adapter.tables[entity]
        where = t.id == t.key(source_record_id)
        query: sa.Update | sa.Delete
        if t.deleted is not None:
            values = self._stamped(t, {})
            values[t.deleted] = t.deleted_value
            query = t.table.update().where(where).values(values)
        else:
            query = t.table.delete().where(where)
        with self.engine.begin() as conn:
            conn.execute(query)

    def sample(self, entity: str, fields: dict[str, Scalar]) -> dict[str, Scalar]:
        """The kit's sample with values of the column's type where it is not text."""
        t = self.adapter.tables[entity]
        typed: dict[type, Scalar] = {bool: True, int: 7, float: 7.5}
        out = dict(fields)
        for name, col in t.fields.items():
            kind = _python_type(col)
            if name in out and kind in typed:
                out[name] = typed[kind]
        return out

    def refused(self, entity: str) -> dict[str, Scalar]:
        """A null for a NOT NULL column; on a server (SQLite takes any value) text for a
        typed column, else a value longer than a column holds."""
        t = self.adapter.tables[entity]
        for name, col in t.fields.items():
            if not col.nullable and not col.primary_key:
                return {name: None}
        server = self.engine.dialect.name != "sqlite"
        for name, col in t.fields.items():
            if server and _python_type(col) in (bool, int, float):
                return {name: "not a value of its type"}
        for name, col in t.fields.items():
            length = getattr(col.type, "length", None)
            if server and isinstance(length, int):
                return {name: "x" * (length + 1)}
        raise KitSetupError(
            f"entities.{entity}: no mapped column refuses a value (give one NOT NULL; on "
            "a server a typed column or a length does too)"
        )

    @contextmanager
    def outage(self) -> Iterator[None]:
        """The adapter's database URL swapped for one nobody answers."""
        url = self.engine.url
        if url.get_backend_name() == "sqlite":
            dead = "sqlite:////nonexistent-crmsync-kit/crm.db"
        else:
            dead = url.set(host="127.0.0.1", port=1).render_as_string(hide_password=False)
        live = self.adapter.engine
        self.adapter.engine = sa.create_engine(dead)
        try:
            yield
        finally:
            self.adapter.engine.dispose()
            self.adapter.engine = live

    def close(self) -> None:
        self.engine.dispose()


def _python_type(column: sa.Column[Any]) -> type | None:
    try:
        return column.type.python_type
    except NotImplementedError:
        return None
