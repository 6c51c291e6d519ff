"""The doctor's look at the state stores: the router's ``state.url`` and each adapter's
``state.path``, readable and writable.

Writable is tested the only way that proves it without changing anything: one probe
row is inserted into the store's own key/value table inside a transaction that is then
rolled back. A SQLite file that does not exist yet is not created (the daemon creates
it at its first start); its folder is checked instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa

from router.doctor.verdicts import Check, fail, ok, warn

PROBE_KEY = "crmsync-doctor-probe"
BUSY_TIMEOUT = 10  # seconds: a running daemon holds SQLite's write lock only briefly

# (table, key column, value column) of each store's key/value table.
ROUTER_META = ("crmsync_meta", "key", "value")
ADAPTER_META = ("crmsync_adapter_state", "key", "value")


def router_state_check(url: str) -> Check:
    return store_check("router state store (state.url)", url, ROUTER_META, "")


def adapter_state_check(adapter: str, path: Path) -> Check:
    return store_check(
        f"adapter {adapter}: state store (state.path)", f"sqlite:///{path}", ADAPTER_META, b""
    )


def store_check(what: str, url: str, meta: tuple[str, str, str], value: object) -> Check:
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return fail(what, "not a database URL")
    shown = parsed.render_as_string(hide_password=True)
    sqlite = parsed.get_backend_name() == "sqlite"
    if sqlite and parsed.database and parsed.database != ":memory:":
        missing = _missing_file(what, Path(parsed.database))
        if missing is not None:
            return missing
    args = {"timeout": BUSY_TIMEOUT} if sqlite else {}
    engine = sa.create_engine(url, connect_args=args)
    table, key, column = meta
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(table):
                return warn(what, f"{shown} has no {table} yet", "the daemon creates it at start")
            # A table clause, not SQL text: it quotes ``key`` (reserved on MariaDB).
            kv = sa.table(table, sa.column(key), sa.column(column))
            conn.execute(sa.select(sa.func.count()).select_from(kv)).scalar()
            conn.execute(sa.insert(kv).values({key: PROBE_KEY, column: value}))
            conn.rollback()
    except sa.exc.DBAPIError as e:
        reason = " ".join(str(e.orig).split()) or type(e.orig).__name__
        return fail(
            what, f"{shown}: {reason}", "check the file's owner and mode / the role's grants"
        )
    finally:
        engine.dispose()
    return ok(what, f"{shown} readable and writable")


def _missing_file(what: str, path: Path) -> Check | None:
    """None when ``path`` exists and this user may read and write it (and its folder,
    where SQLite keeps its journal)."""
    folder = path.parent
    if not path.exists():
        if folder.is_dir() and os.access(folder, os.W_OK | os.X_OK):
            return warn(what, f"{path} does not exist yet", "it is created at the first start")
        return fail(what, f"{path} does not exist and {folder} is not a writable folder")
    if not os.access(path, os.R_OK | os.W_OK) or not os.access(folder, os.W_OK | os.X_OK):
        return fail(what, f"{path} (or its folder) is not readable and writable by this user")
    return None
