"""A related field or reference that names a table or column the database lacks is a
ConfigError naming the key (adapters/sql_related.py), before anything is read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from adapters.sql import SqlAdapter
from router.adapter_config import AdapterConfig
from router.errors import ConfigError


def _adapter(tmp_path: Path, **contact: Any) -> None:
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT, updated_at TIMESTAMP)"
        )
        conn.exec_driver_sql("CREATE TABLE emails (id TEXT PRIMARY KEY, address TEXT)")
        conn.exec_driver_sql("CREATE TABLE rel (id TEXT PRIMARY KEY, bean TEXT, email TEXT)")
    engine.dispose()
    config = AdapterConfig.model_validate(
        {
            "name": "crm",
            "database": {"url": url},
            "state": {"path": str(tmp_path / "s.db")},
            "entities": {"contact": {"table": "contacts", "fields": {"name": "name"}, **contact}},
        }
    )
    SqlAdapter(config, where="crm.toml").close()


LINK = {"table": "rel", "record": "bean", "other": "email"}


def test_a_well_formed_related_field_opens(tmp_path: Path) -> None:
    _adapter(tmp_path, related={"email": {"table": "emails", "column": "address", "link": LINK}})


@pytest.mark.parametrize(
    ("related", "message"),
    [
        (
            {"table": "mails", "column": "address", "link": LINK},
            r"crm.toml: database has no table 'mails' \(entities.contact.related.email.table\)",
        ),
        (
            {"table": "emails", "column": "addr", "link": LINK},
            r"table 'emails' has no column\(s\) addr \(entities.contact.related.email\)",
        ),
        (
            {"table": "emails", "column": "address", "link": {**LINK, "record": "bean_id"}},
            r"table 'rel' has no column\(s\) bean_id \(entities.contact.related.email.link\)",
        ),
    ],
)
def test_missing_tables_and_columns_name_the_key(
    tmp_path: Path, related: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        _adapter(tmp_path, related={"email": related})


def test_sqlite_reads_a_related_field_and_sees_its_change(tmp_path: Path) -> None:
    """SQLite has no GREATEST: the record's position is its multi-argument max()."""
    from adapters.engine import SyncEngine
    from router.events import decode

    url = f"sqlite:///{tmp_path / 'crm.db'}"
    user = sa.create_engine(url)
    with user.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT, updated_at TIMESTAMP)"
        )
        conn.exec_driver_sql("CREATE TABLE emails (id TEXT PRIMARY KEY, address TEXT)")
        conn.exec_driver_sql(
            "CREATE TABLE rel (id TEXT PRIMARY KEY, bean TEXT, email TEXT, stamp TIMESTAMP)"
        )
        conn.exec_driver_sql("INSERT INTO contacts VALUES ('c1', 'Ada', '2026-01-01 10:00:00')")
        conn.exec_driver_sql("INSERT INTO emails VALUES ('e1', 'ada@example.com')")
        conn.exec_driver_sql("INSERT INTO emails VALUES ('e2', 'countess@example.com')")
        conn.exec_driver_sql("INSERT INTO rel VALUES ('r1', 'c1', 'e1', '2026-01-01 10:00:00')")
    config = AdapterConfig.model_validate(
        {
            "name": "crm",
            "database": {"url": url},
            "state": {"path": str(tmp_path / "s.db")},
            "entities": {
                "contact": {
                    "table": "contacts",
                    "fields": {"name": "name"},
                    "related": {
                        "email": {
                            "table": "emails",
                            "column": "address",
                            "link": {**LINK, "updated_at": "stamp"},
                        }
                    },
                }
            },
        }
    )
    adapter = SqlAdapter(config, where="crm.toml")
    try:
        engine = SyncEngine(adapter, "crm", overlap=1.0)
        first = engine.capture({})
        [made] = [decode(e.body) for e in engine.pending()]
        engine.mark_published(engine.pending())
        assert made.fields == {"name": "Ada", "email": "ada@example.com"}
        with user.begin() as conn:  # only the link row changes, a day later
            conn.exec_driver_sql("UPDATE rel SET email = 'e2', stamp = '2026-01-02 10:00:00'")
        engine.capture(first.positions)
        [change] = [decode(e.body) for e in engine.pending()]
        assert (change.record_id, change.fields["email"]) == (
            made.record_id,
            "countess@example.com",
        )
    finally:
        adapter.close()
        user.dispose()
