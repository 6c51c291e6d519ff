"""Bulk writes and reads of the SQL adapter (issue 11): ``insert_many`` and ``read_records``.

A migration writes its batches with one ``executemany`` INSERT and reads them back in
one SELECT, on SQLite, PostgreSQL and MariaDB alike (each test on a database of its own).
What comes back must be in input order whatever ids the database generates, and a batch
the database refuses must leave nothing behind.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from adapters.base import Adapter
from adapters.sql import SqlAdapter
from router.errors import PermanentWriteError
from router.events import Scalar
from tests.integration.test_sql_servers import Server, all_rows, private_server

pytestmark = pytest.mark.integration

Items = list[tuple[str, dict[str, Scalar]]]


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    with private_server(Server, request.param, tmp_path) as srv:
        yield srv


def _adapter(srv: Server, text_ids: bool) -> tuple[SqlAdapter, sa.Table]:
    table = srv.contacts_table(text_ids=text_ids)
    adapter = srv.engine_for(table).adapter
    assert isinstance(adapter, SqlAdapter)
    return adapter, table


def _items(n: int, tag: str = "") -> Items:
    # Record ids in no sorted order, so input order is not the database's order.
    return [
        (
            f"{uuid.uuid4()}",
            {"email": f"user{i}{tag}@example.com", "first_name": f"F{i}", "phone": None},
        )
        for i in reversed(range(n))
    ]


@pytest.mark.parametrize("text_ids", [True, False], ids=["text-ids", "integer-ids"])
def test_insert_many_returns_the_rows_read_back_in_input_order(
    backend: Server, text_ids: bool
) -> None:
    adapter, table = _adapter(backend, text_ids)
    # More rows than one page of SQLAlchemy's multi-row VALUES (1000), so a batch split
    # into several statements must still come back in input order.
    items = _items(1100)
    with adapter.transaction() as tx:
        rows = adapter.insert_many(tx, "contact", items)
    assert [r.fields["email"] for r in rows] == [f["email"] for _, f in items]
    assert [r.fields["first_name"] for r in rows] == [f["first_name"] for _, f in items]
    assert all(r.version is not None and not r.deleted for r in rows)
    if text_ids:
        assert [r.source_record_id for r in rows] == [rid for rid, _ in items]
    else:
        assert len({r.source_record_id for r in rows}) == len(items)
    stored = {str(r["id"]): r for r in all_rows(backend, table)}
    assert len(stored) == len(items)
    for row in rows:  # each returned id names the row holding that item's values
        assert stored[row.source_record_id]["email_addr"] == row.fields["email"]
        assert stored[row.source_record_id]["updated_at"] is not None
    # And the rows are what a single read gives (same version token and position).
    with adapter.transaction() as tx:
        assert adapter.read_record(tx, "contact", rows[0].source_record_id) == rows[0]


@pytest.mark.parametrize("text_ids", [True, False], ids=["text-ids", "integer-ids"])
def test_insert_many_of_nothing_writes_nothing(backend: Server, text_ids: bool) -> None:
    adapter, table = _adapter(backend, text_ids)
    with adapter.transaction() as tx:
        assert adapter.insert_many(tx, "contact", []) == []
    assert all_rows(backend, table) == []


def test_a_batch_with_a_taken_id_is_a_permanent_error_and_inserts_nothing(
    backend: Server,
) -> None:
    adapter, table = _adapter(backend, text_ids=True)
    [(taken, fields)] = _items(1, "-first")
    with adapter.transaction() as tx:
        adapter.insert_many(tx, "contact", [(taken, fields)])
    before = all_rows(backend, table)
    # The clash comes last, in a statement of its own (other columns): the rows the
    # statement before it inserted must not stay either.
    batch = [*_items(5), (taken, {"email": "other@example.com"})]
    with pytest.raises(PermanentWriteError), adapter.transaction() as tx:
        adapter.insert_many(tx, "contact", batch)
    assert all_rows(backend, table) == before


def test_a_batch_repeating_one_id_is_a_permanent_error_and_inserts_nothing(
    backend: Server,
) -> None:
    adapter, table = _adapter(backend, text_ids=True)
    items = _items(3)
    with pytest.raises(PermanentWriteError), adapter.transaction() as tx:
        adapter.insert_many(tx, "contact", [*items, items[0]])
    assert all_rows(backend, table) == []


@pytest.mark.parametrize("text_ids", [True, False], ids=["text-ids", "integer-ids"])
def test_the_default_insert_many_gives_what_the_bulk_one_gives(
    backend: Server, text_ids: bool
) -> None:
    adapter, _ = _adapter(backend, text_ids)
    with adapter.transaction() as tx:
        bulk = adapter.insert_many(tx, "contact", _items(3, "-bulk"))
        one_by_one = Adapter.insert_many(adapter, tx, "contact", _items(3, "-loop"))
    assert [r.fields["email"] for r in one_by_one] == [
        f"user{i}-loop@example.com" for i in (2, 1, 0)
    ]
    assert [sorted(r.fields) for r in bulk] == [sorted(r.fields) for r in one_by_one]


@pytest.mark.parametrize("text_ids", [True, False], ids=["text-ids", "integer-ids"])
def test_read_records_finds_the_ids_that_exist_across_chunks(
    backend: Server, text_ids: bool
) -> None:
    adapter, _ = _adapter(backend, text_ids)
    with adapter.transaction() as tx:
        written = adapter.insert_many(tx, "contact", _items(700))
    ids = [r.source_record_id for r in written]
    absent = ["no-such-id", "999999999"]  # not a key of an integer table, and no row
    wanted = [*ids[::-1], *absent]  # 702 ids: two queries of at most 500
    with adapter.transaction() as tx:
        found = adapter.read_records(tx, "contact", wanted)
        one_by_one = Adapter.read_records(adapter, tx, "contact", ids[:5])
    assert list(found) == ids[::-1]
    assert found == {r.source_record_id: r for r in written}
    assert one_by_one == {sid: found[sid] for sid in ids[:5]}


def test_integer_ids_without_ordered_returning_are_inserted_row_by_row(
    backend: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A dialect that cannot promise RETURNING in parameter order (older servers): the
    # ids must still come back in input order, one INSERT per row.
    adapter, table = _adapter(backend, text_ids=False)
    monkeypatch.setattr(
        adapter.engine.dialect, "insert_executemany_returning_sort_by_parameter_order", False
    )
    items = _items(4)
    with adapter.transaction() as tx:
        rows = adapter.insert_many(tx, "contact", items)
    assert [r.fields["email"] for r in rows] == [f["email"] for _, f in items]
    stored = {str(r["id"]): r["email_addr"] for r in all_rows(backend, table)}
    assert {r.source_record_id: r.fields["email"] for r in rows} == stored
