"""The doctor's look at each adapter's CRM: the database reachable, every mapped table
and column present (the SQL adapter's own reflection, :class:`adapters.sql_table.Table`)
and of a type that can hold what crmsync puts there; the CRM database's clock; a
HubSpot token file readable; a file adapter's folders writable.

Read-only: tables are reflected, never created (the adapter's own start-up also
creates its link table and triggers; the doctor does neither), and a SQLite file that
does not exist is reported, not created by connecting to it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from router.adapter_config import AdapterConfig, EntityMapping
from router.doctor.judge import Role, clock_skew, column_problem
from router.doctor.verdicts import Check, fail, ok, warn
from router.errors import ConfigError

CONNECT_TIMEOUT = 5


def adapter_checks(cfg: AdapterConfig, where: Path) -> list[Check]:
    """Checks of the adapter configured in ``where`` (the file named in fixes)."""
    if cfg.kind == "sql":
        assert cfg.database is not None  # AdapterConfig: sql needs [database]
        return sql_checks(cfg, cfg.database.url, where)
    if cfg.kind == "hubspot":
        assert cfg.api is not None  # AdapterConfig: hubspot needs [api]
        return [_token_check(cfg.name, cfg.api.token_file)]
    if cfg.kind == "file":
        return [_folder_check(cfg.name, e, m) for e, m in cfg.entities.items()]
    return [warn(f"adapter {cfg.name}", f"kind {cfg.kind!r}: its CRM is not checked")]


def _engine(url: str) -> sa.Engine | str:
    """An engine for ``url``, or why there is none to check (one line)."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return "database.url is not a database URL"
    if parsed.get_backend_name() == "sqlite":
        name = parsed.database or ""
        if name and name != ":memory:" and not Path(name).is_file():
            return f"SQLite file {name} does not exist"
        return sa.create_engine(url, connect_args={"timeout": CONNECT_TIMEOUT})
    args: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT}
    return sa.create_engine(url, connect_args=args, pool_pre_ping=True)


def sql_checks(cfg: AdapterConfig, url: str, where: Path) -> list[Check]:
    what = f"adapter {cfg.name}: database"
    engine = _engine(url)
    if isinstance(engine, str):
        return [fail(what, engine, f"fix database.url in {where}")]
    shown = engine.url.render_as_string(hide_password=True)
    try:
        with engine.connect() as conn:
            checks = [ok(what, f"{shown} answers")]
            checks += [_entity_check(cfg.name, e, m, conn, where) for e, m in cfg.entities.items()]
            checks.append(_db_clock(cfg.name, conn))
            conn.rollback()
    except sa.exc.DBAPIError as e:
        reason = " ".join(str(e.orig).split()) or type(e.orig).__name__
        return [fail(what, f"cannot open {shown} ({reason})", f"check database.url in {where}")]
    finally:
        engine.dispose()
    return checks


def _entity_check(
    adapter: str, entity: str, mapping: EntityMapping, conn: sa.Connection, where: Path
) -> Check:
    from adapters.sql_table import Table

    what = f"adapter {adapter}: entities.{entity} (table {mapping.table})"
    fix = f"rename the column back, or fix entities.{entity} in {where}"
    try:
        table = sa.Table(mapping.table or "", sa.MetaData(), autoload_with=conn)
    except sa.exc.NoSuchTableError:
        return fail(what, f"database has no table {mapping.table!r}", fix)
    try:
        t = Table(entity, mapping, table, str(where), conn)
    except ConfigError as e:
        # The adapter's own message names the table and every missing column.
        return fail(what, str(e).removeprefix(f"{where}: "), fix)
    problems = [p for p in _typed(entity, t) if p is not None]
    failed = [p for p in problems if p[0] == "FAIL"]
    if failed:
        return fail(what, "; ".join(p[1] for p in failed), fix)
    if problems:
        return warn(what, "; ".join(p[1] for p in problems))
    mapped = [t.id, t.updated_at, t.created_at, t.deleted, *t.fields.values(), *t.raw.values()]
    columns = {c.name for c in mapped if c is not None}
    return ok(what, f"{len(columns)} column(s) present and typed")


def _typed(entity: str, t: Any) -> list[tuple[str, str] | None]:
    """Type problems of the mapped columns, each naming table.column."""
    from adapters.canonical import MODELS

    model = MODELS.get(entity)
    text = set(model.model_fields) if model is not None else set()

    def judge(role: Role, column: sa.Column[Any] | None) -> tuple[str, str] | None:
        if column is None:
            return None
        problem = column_problem(role, column.type)
        if problem is None:
            return None
        return problem[0], f"column {column.table.name}.{column.name} {problem[1]}"

    found = [judge("text", c) for n, c in t.fields.items() if n in text]
    found += [judge("clock", t.updated_at), judge("clock", t.created_at)]
    found.append(judge("flag", t.deleted))
    for r in t.extras.related if t.extras is not None else []:
        found += [judge("text", r.value), judge("clock", r.updated_at), judge("flag", r.deleted)]
        found += [judge("clock", r.link.updated_at), judge("flag", r.link.deleted)]
    return found


def _db_clock(adapter: str, conn: sa.Connection) -> Check:
    from adapters import sqlclock

    what = f"clock of adapter {adapter}'s database"
    before = time.time()
    value = conn.execute(sa.select(sqlclock.now_expr(conn.dialect.name, sqlclock.Kind.EPOCH)))
    now = value.scalar()
    after = time.time()
    if now is None:
        return clock_skew(what, None, "the database gave no time")
    return clock_skew(what, float(now) - (before + after) / 2)


def _token_check(adapter: str, token_file: Path) -> Check:
    what = f"adapter {adapter}: api.token_file"
    try:
        token = token_file.read_text().strip()
    except OSError as e:
        return fail(what, f"cannot read {token_file} ({e.strerror})", "check its path and mode")
    if not token:
        return fail(what, f"{token_file} is empty", "put the private-app token in it")
    return ok(what, f"{token_file} readable")


def _folder_check(adapter: str, entity: str, mapping: EntityMapping) -> Check:
    assert mapping.path is not None  # AdapterConfig: file entities name a path
    folder = mapping.path.parent
    what = f"adapter {adapter}: entities.{entity} folder {folder}"
    if not folder.is_dir():
        return fail(what, "does not exist", f"create it (mkdir -p {folder})")
    if not os.access(folder, os.W_OK | os.X_OK):
        return fail(what, "not writable by this user", "fix its owner or mode")
    if mapping.path.exists() and not os.access(mapping.path, os.R_OK | os.W_OK):
        return fail(what, f"{mapping.path.name} not readable and writable", "fix its mode")
    return ok(what, "exists and is writable")
