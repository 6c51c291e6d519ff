"""Push capture's triggers (``capture.push``, PostgreSQL only): every statement that
changes a mapped table NOTIFYs the adapter, so capture runs at once instead of at the
next poll.

One ``AFTER INSERT OR UPDATE OR DELETE ... FOR EACH STATEMENT`` trigger per table the
adapter reads: the entities' own tables and the related and link tables of
:mod:`adapters.sql_related` (a changed email row is a change of its contact). Statement
level, because one ``UPDATE`` of 10,000 rows needs one wake, not 10,000 queued
notifications. The payload is the table's name only, never a value of the row: the
notification says "look again", capture reads what changed. PostgreSQL folds identical
notifications of one transaction into one.

Names are derived from the adapter's name so that they are short, plain identifiers
whatever the name (``crmsync_`` + the first 16 hex digits of its SHA-256): the channel
is ``crmsync_<hash>``, the function and the trigger on every table
``crmsync_push_<hash>``. Installing is idempotent (``CREATE OR REPLACE``), and drops the
adapter's triggers on tables it no longer maps. Like the delete journal's function
(:mod:`adapters.journal`), the function lives in the adapter's schema
(``current_schema()``) and is called by that name, whatever a writer's search_path.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from adapters.sql_table import Table
from router.errors import ConfigError
from router.logs import kv


def _log(adapter: str) -> logging.Logger:
    return logging.getLogger(f"crmsync.adapter.{adapter}")


def _digest(adapter: str) -> str:
    return hashlib.sha256(adapter.encode()).hexdigest()[:16]


def channel(adapter: str) -> str:
    """The LISTEN/NOTIFY channel of one adapter (a valid unquoted identifier)."""
    return f"crmsync_{_digest(adapter)}"


def trigger_name(adapter: str) -> str:
    """The name of the adapter's trigger function and of its trigger on every table."""
    return f"crmsync_push_{_digest(adapter)}"


def watched(tables: Iterable[Table]) -> list[sa.Table]:
    """Every table whose change is a change of a mapped record, each once (Odoo's
    contacts and companies share ``res_partner``; SuiteCRM's references share links)."""
    found: dict[tuple[str | None, str], sa.Table] = {}
    for t in tables:
        parts = [t.table]
        if t.extras is not None:
            for rel in t.extras.related:
                parts += [rel.table, rel.link.table]
            parts += [ref.link.table for ref in t.extras.refs if ref.link is not None]
        for table in parts:
            found.setdefault((table.schema, table.name), table)
    return list(found.values())


def _ddl(conn: Connection, adapter: str, tables: list[sa.Table]) -> list[str]:
    prep = conn.dialect.identifier_preparer
    name = trigger_name(adapter)
    schema = prep.quote(conn.execute(sa.text("SELECT current_schema()")).scalar_one())
    # The channel is a literal made of [a-z0-9_] only: nothing to escape.
    statements = [
        f"CREATE OR REPLACE FUNCTION {schema}.{name}() RETURNS trigger "
        f"LANGUAGE plpgsql AS $crmsync$ BEGIN "
        f"PERFORM pg_notify('{channel(adapter)}', TG_TABLE_NAME); RETURN NULL; "
        f"END $crmsync$"
    ]
    statements += [
        f"CREATE OR REPLACE TRIGGER {name} AFTER INSERT OR UPDATE OR DELETE "
        f"ON {prep.format_table(table)} FOR EACH STATEMENT EXECUTE FUNCTION {schema}.{name}()"
        for table in tables
    ]
    return statements


def installed_on(conn: Connection, adapter: str) -> set[str]:
    """The tables (as ``regclass`` text) carrying this adapter's push trigger."""
    query = sa.text(
        "SELECT tgrelid::regclass::text FROM pg_trigger WHERE tgname = :name AND NOT tgisinternal"
    )
    return set(conn.execute(query, {"name": trigger_name(adapter)}).scalars())


def _regclass(conn: Connection, table: sa.Table) -> str:
    qualified = conn.dialect.identifier_preparer.format_table(table)
    query = sa.text("SELECT CAST(:t AS regclass)::text")
    return str(conn.execute(query, {"t": qualified}).scalar_one())


def install(engine: sa.Engine, adapter: str, tables: list[sa.Table], where: str) -> None:
    """Create or refresh the adapter's trigger on ``tables``; a ConfigError naming
    ``capture.push`` where the database is not PostgreSQL or refuses the DDL."""
    dialect = engine.dialect.name
    if dialect != "postgresql":
        raise ConfigError(
            f"{where}: capture.push needs PostgreSQL (LISTEN/NOTIFY), not {dialect}: "
            "set capture.push = false (polling alone captures every change)"
        )
    try:
        with engine.begin() as conn:
            wanted = {_regclass(conn, table) for table in tables}
            for stale in sorted(installed_on(conn, adapter) - wanted):
                # A table the mapping no longer reads: its wake-ups would be for nothing.
                drop = f"DROP TRIGGER IF EXISTS {trigger_name(adapter)} ON {stale}"
                conn.execute(sa.text(drop).execution_options(no_parameters=True))
            for statement in _ddl(conn, adapter, tables):
                conn.execute(sa.text(statement).execution_options(no_parameters=True))
    except sa.exc.DBAPIError as e:
        raise ConfigError(
            f"{where}: cannot install the push triggers of capture.push "
            f"({type(e.orig).__name__}: {e.orig}); the database user needs CREATE on its "
            "schema and the TRIGGER privilege on the mapped tables (or to own them), or "
            "set capture.push = false"
        ) from e
    _log(adapter).info(
        "push triggers installed",
        extra=kv(adapter=adapter, channel=channel(adapter), tables=len(tables)),
    )


def uninstall(engine: sa.Engine, adapter: str) -> bool:
    """Drop the adapter's function and with it every trigger calling it, if there is
    one (``capture.push`` turned off). Whether anything was dropped."""
    if engine.dialect.name != "postgresql":
        return False
    # Looked up first: a DROP needs rights an adapter that never pushed may not have.
    query = sa.text(
        "SELECT count(*) FROM pg_proc WHERE proname = :name "
        "AND pronamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())"
    )
    try:
        with engine.begin() as conn:
            if not conn.execute(query, {"name": trigger_name(adapter)}).scalar_one():
                return False
            schema = conn.dialect.identifier_preparer.quote(
                conn.execute(sa.text("SELECT current_schema()")).scalar_one()
            )
            conn.execute(
                sa.text(f"DROP FUNCTION IF EXISTS {schema}.{trigger_name(adapter)}() CASCADE")
            )
    except sa.exc.DBAPIError as e:
        # Left behind, the triggers only wake nobody: not worth refusing to start.
        _log(adapter).warning(
            "cannot remove the push triggers (capture.push = false); drop them by hand",
            extra=kv(adapter=adapter, function=trigger_name(adapter), error=type(e.orig).__name__),
        )
        return False
    _log(adapter).info("push triggers removed", extra=kv(adapter=adapter, channel=channel(adapter)))
    return True
