"""Any legal identifier works as a table or column name (issue 10, item 1).

A CRM whose first-name column was ``fn`` once failed every insert: the SQL adapter
passed column names as keyword arguments. Each case here maps every configured column
(id, updated_at, deleted flag, fields) and the table itself to awkward names, then
runs capture, an insert, an update and a delete through the real engine, on SQLite,
PostgreSQL and MariaDB.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from adapters.engine import SyncEngine
from adapters.sql import SqlAdapter
from router.adapter_config import AdapterConfig
from router.events import decode
from tests.integration.test_sql_servers import Server, delivery, server  # noqa: F401 - fixture

UPDATED_AT = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

# (table, id, updated_at, deleted, {canonical field: column})
NAMES = {
    "keywords": ("order", "key", "user", "select", {"email": "fn", "first_name": "from"}),
    "spaces-and-case": (
        "Customer Data",
        "Cust ID",
        "Last Changed",
        "Is Gone",
        {"email": "E-Mail", "first_name": "First Name"},
    ),
    "non-ascii": (
        "clients",
        "numéro",
        "modifié",
        "supprimé",
        {"email": "courriel", "first_name": "prénom"},
    ),
}


def _table(meta: sa.MetaData, prefix: str, names: tuple[Any, ...]) -> sa.Table:
    table, id_, updated_at, deleted, fields = names
    return sa.Table(
        f"{prefix} {table}"[:60],
        meta,
        sa.Column(id_, sa.Integer, primary_key=True, autoincrement=True),
        *(sa.Column(col, sa.String(255)) for col in fields.values()),
        sa.Column(updated_at, UPDATED_AT, nullable=False),
        sa.Column(deleted, sa.Boolean, nullable=False, default=False),
    )


def _round_trip(url: str, user: sa.Engine, names: tuple[Any, ...]) -> None:
    table = _table(sa.MetaData(), f"t{uuid.uuid4().hex[:6]}", names)
    table.create(user)
    _, id_, updated_at, deleted, fields = names
    config = AdapterConfig.model_validate(
        {
            "name": "legacy",
            "database": {"url": url},
            "entities": {
                "contact": {
                    "table": table.name,
                    "id": id_,
                    "updated_at": updated_at,
                    "deleted": deleted,
                    "fields": fields,
                }
            },
        }
    )
    adapter = SqlAdapter(config, where="identifier test")
    try:
        engine = SyncEngine(adapter, "legacy", overlap=2.0)
        # Capture a row a user inserted.
        with user.begin() as conn:
            conn.execute(
                table.insert().values(
                    {
                        table.c[fields["email"]]: "ada@example.com",
                        table.c[fields["first_name"]]: "Ada",
                        table.c[updated_at]: datetime.now(UTC).replace(tzinfo=None),
                        table.c[deleted]: False,
                    }
                )
            )
        assert engine.capture({}).changes == 1
        [owed] = engine.pending()
        assert decode(owed.body).fields == {"email": "ada@example.com", "first_name": "Ada"}
        engine.mark_published([owed])

        # A delivery for a record this CRM has never seen: an insert.
        record_id = str(uuid.uuid4())
        fresh = {"email": "bob@example.com", "first_name": "Bob"}
        assert engine.apply(delivery(record_id, {"sales": 1}, fresh)).action == "applied"
        # Then an update and a delete of it.
        renamed = {**fresh, "first_name": "Robert"}
        assert engine.apply(delivery(record_id, {"sales": 2}, renamed)).action == "applied"
        with user.connect() as conn:
            rows = {r[fields["email"]]: r for r in conn.execute(sa.select(table)).mappings()}
        assert rows["bob@example.com"][fields["first_name"]] == "Robert"
        gone = delivery(record_id, {"sales": 3}, renamed, op="delete")
        assert engine.apply(gone).action == "applied"
        with user.connect() as conn:
            flag = conn.execute(
                sa.select(table.c[deleted]).where(table.c[fields["email"]] == "bob@example.com")
            ).scalar_one()
        assert flag is True or flag == 1
    finally:
        adapter.close()


@pytest.fixture
def sqlite_crm(tmp_path: Path) -> Iterator[tuple[str, sa.Engine]]:
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    user = sa.create_engine(url)
    try:
        yield url, user
    finally:
        user.dispose()


@pytest.mark.parametrize("case", sorted(NAMES))
def test_awkward_names_on_sqlite(case: str, sqlite_crm: tuple[str, sa.Engine]) -> None:
    _round_trip(*sqlite_crm, NAMES[case])


@pytest.mark.parametrize("case", sorted(NAMES))
def test_awkward_names_on_servers(case: str, server: Server) -> None:  # noqa: F811
    _round_trip(server.url, server.user, NAMES[case])
