"""A migration's bulk insert (SqlAdapter.insert_many) on SQLite, PostgreSQL and MariaDB:
text ids take the record id, database ids come back matched to their rows, and a
refused row refuses the whole statement with nothing written."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from adapters.sql import SqlAdapter
from router.config import AdapterConfig
from router.errors import PermanentWriteError
from tests.integration.test_sql_servers import private_database

UPDATED_AT = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def _adapter(url: str, int_ids: bool) -> SqlAdapter:
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    key = (
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True)
        if int_ids
        else sa.Column("id", sa.String(64), primary_key=True)
    )
    sa.Table(
        "people",
        meta,
        key,
        sa.Column("mail", sa.String(255)),
        sa.Column("first name", sa.String(255)),
        sa.Column("updated_at", UPDATED_AT, nullable=False),
    )
    meta.create_all(engine)
    engine.dispose()
    config = AdapterConfig.model_validate(
        {
            "name": "bulk",
            "database": {"url": url},
            "capture": {"delete_journal": False},
            "entities": {
                "contact": {
                    "table": "people",
                    "fields": {"email": "mail", "first_name": "first name"},
                }
            },
        }
    )
    return SqlAdapter(config)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
@pytest.mark.parametrize("int_ids", [False, True], ids=["text-ids", "database-ids"])
def test_rows_come_back_in_the_order_given(backend: str, int_ids: bool, tmp_path: Path) -> None:
    with private_database(backend, tmp_path) as url:
        adapter = _adapter(url, int_ids)
        try:
            items = [
                (str(uuid.uuid4()), {"email": f"p{i}@x.io", "first_name": f"F{i}"})
                for i in range(1200)  # more than one read-back chunk
            ]
            with adapter.transaction() as tx:
                rows = adapter.insert_many(tx, "contact", items)
            assert [r.fields["email"] for r in rows] == [f["email"] for _, f in items]
            if not int_ids:
                assert [r.source_record_id for r in rows] == [rid for rid, _ in items]
            assert all(r.version for r in rows)  # stamped by the database
            with adapter.transaction() as tx:
                again = adapter.read_records(tx, "contact", [r.source_record_id for r in rows])
            assert {sid: r.fields for sid, r in again.items()} == {
                r.source_record_id: r.fields for r in rows
            }
        finally:
            adapter.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_one_refused_row_writes_nothing(backend: str, tmp_path: Path) -> None:
    with private_database(backend, tmp_path) as url:
        adapter = _adapter(url, int_ids=False)
        try:
            taken = str(uuid.uuid4())
            with adapter.transaction() as tx:
                adapter.insert_many(tx, "contact", [(taken, {"email": "a@x.io"})])
            with pytest.raises(PermanentWriteError), adapter.transaction() as tx:
                adapter.insert_many(
                    tx,
                    "contact",
                    [(str(uuid.uuid4()), {"email": "b@x.io"}), (taken, {"email": "c@x.io"})],
                )
            with adapter.transaction() as tx:
                count = tx.execute(sa.text("SELECT count(*) FROM people")).scalar_one()
            assert count == 1
        finally:
            adapter.close()
