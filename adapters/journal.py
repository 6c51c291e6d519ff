"""The delete journal: an ``AFTER DELETE`` trigger per mapped table writes each deleted
row's id into ``crmsync_deleted``, in the deleting transaction.

Polling ``updated_at`` cannot see a row that is gone, and comparing the table's ids with
the links cannot tell a reused id from the old row: Alice (id 1) deleted and Bob
inserted as id 1 before the comparison looked like an edit of Alice. The journal says
exactly which ids were deleted, so capture publishes the delete and then sees the row
under that id, if any, as a new record (:mod:`adapters.deletes`).

Installed where the adapter may create objects in the CRM's database (it already keeps
``crmsync_link`` there); ``capture.delete_journal = false`` where it may not. Creation
is idempotent. Every identifier is quoted by the dialect (tables and columns may be
named ``order``, "Customer Data", ``numéro``); trigger and function names are derived
from a hash of the entity, table and id column, so they are short and plain.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

journal_metadata = sa.MetaData()

journal_table = sa.Table(
    "crmsync_deleted",
    journal_metadata,
    # BigInteger is a plain INTEGER on SQLite so that it is the autoincrementing rowid.
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("entity", sa.String(64), nullable=False),
    sa.Column("source_record_id", sa.String(255), nullable=False),
    # The database's clock, never the adapter host's (for operators reading the table).
    sa.Column(
        "deleted_at",
        sa.DateTime(timezone=True),
        nullable=False,
        server_default=sa.func.current_timestamp(),
    ),
)
sa.Index("crmsync_deleted_entity", journal_table.c.entity, journal_table.c.seq)
sa.Index("crmsync_deleted_source", journal_table.c.entity, journal_table.c.source_record_id)


@dataclass(frozen=True)
class Deleted:
    seq: int
    source_record_id: str


def trigger_name(entity: str, table: str, id_column: str) -> str:
    digest = hashlib.sha256(f"{entity}\0{table}\0{id_column}".encode()).hexdigest()[:16]
    return f"crmsync_del_{digest}"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _trigger_ddl(
    conn: Connection, entity: str, table: sa.Table, id_column: sa.Column[Any]
) -> list[str]:
    prep = conn.dialect.identifier_preparer
    name = trigger_name(entity, table.name, id_column.name)
    target = prep.format_table(table)
    journal = prep.format_table(journal_table)
    old_id = f"OLD.{prep.quote(id_column.name)}"
    columns = "(entity, source_record_id)"
    dialect = conn.dialect.name
    if dialect == "sqlite":
        return [
            f"CREATE TRIGGER IF NOT EXISTS {name} AFTER DELETE ON {target} FOR EACH ROW "
            f"BEGIN INSERT INTO {journal} {columns} "
            f"VALUES ({_literal(entity)}, CAST({old_id} AS TEXT)); END"
        ]
    if dialect == "postgresql":
        # The function names the journal by schema: a deleting session's search_path
        # need not be the adapter's.
        schema = prep.quote(conn.execute(sa.text("SELECT current_schema()")).scalar_one())
        return [
            f"CREATE OR REPLACE FUNCTION {schema}.{name}() RETURNS trigger "
            f"LANGUAGE plpgsql AS $crmsync$ BEGIN "
            f"INSERT INTO {schema}.{journal} {columns} "
            f"VALUES ({_literal(entity)}, CAST({old_id} AS TEXT)); RETURN NULL; "
            f"END $crmsync$",
            f"CREATE OR REPLACE TRIGGER {name} AFTER DELETE ON {target} "
            f"FOR EACH ROW EXECUTE FUNCTION {schema}.{name}()",
        ]
    if dialect in ("mysql", "mariadb"):
        return [
            f"CREATE TRIGGER IF NOT EXISTS {name} AFTER DELETE ON {target} FOR EACH ROW "
            f"INSERT INTO {journal} {columns} "
            f"VALUES ({_literal(entity)}, CAST({old_id} AS CHAR))"
        ]
    raise NotImplementedError(f"no delete trigger for {dialect}")


def install(conn: Connection, entity: str, table: sa.Table, id_column: sa.Column[Any]) -> None:
    """Create ``crmsync_deleted`` and ``table``'s trigger if missing."""
    journal_metadata.create_all(conn)
    for statement in _trigger_ddl(conn, entity, table, id_column):
        conn.execute(sa.text(statement).execution_options(no_parameters=True))


def supported(dialect: str) -> bool:
    return dialect in ("sqlite", "postgresql", "mysql", "mariadb")


def oldest(conn: Connection, entity: str, limit: int) -> list[Deleted]:
    """The first ``limit`` journaled deletes of ``entity``, oldest first."""
    c = journal_table.c
    rows = conn.execute(
        sa.select(c.seq, c.source_record_id).where(c.entity == entity).order_by(c.seq).limit(limit)
    )
    return [Deleted(int(seq), sid) for seq, sid in rows]


def of_source(conn: Connection, entity: str, source_record_id: str) -> list[Deleted]:
    """The journaled deletes of one id (before an insert reuses it)."""
    c = journal_table.c
    rows = conn.execute(
        sa.select(c.seq, c.source_record_id).where(
            c.entity == entity, c.source_record_id == source_record_id
        )
    )
    return [Deleted(int(seq), sid) for seq, sid in rows]


def of_sources(conn: Connection, entity: str, source_record_ids: Sequence[str]) -> list[Deleted]:
    """:func:`of_source` for many ids at once (a bulk insert's rows)."""
    c = journal_table.c
    found: list[Deleted] = []
    for start in range(0, len(source_record_ids), 500):  # bind-parameter limits
        chunk = list(source_record_ids[start : start + 500])
        rows = conn.execute(
            sa.select(c.seq, c.source_record_id).where(
                c.entity == entity, c.source_record_id.in_(chunk)
            )
        )
        found += [Deleted(int(seq), sid) for seq, sid in rows]
    return found


def forget(conn: Connection, entries: Sequence[Deleted]) -> None:
    """Remove handled entries (in the transaction that recorded their delete events)."""
    seqs = [e.seq for e in entries]
    for start in range(0, len(seqs), 500):  # stay under bind-parameter limits
        conn.execute(
            journal_table.delete().where(journal_table.c.seq.in_(seqs[start : start + 500]))
        )


def count(conn: Connection) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(journal_table)).scalar_one())
