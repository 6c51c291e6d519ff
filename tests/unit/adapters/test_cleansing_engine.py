"""Cleansing in the SyncEngine with ``[canonical]`` configured (legacy demo CRM, SQLite).

Capture publishes the cleansed values; a delivery is written as sent and its read-back
is cleansed the same way, so its echo is recognised; a row that cannot be cleansed is
skipped and reported without its value, and a delivery that cannot is refused whole.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.engine import SyncEngine
from adapters.sql import SqlAdapter
from router.adapter_config import load_adapter
from router.clock import VectorClock
from router.demo.crms import CRMS, DemoDb
from router.errors import PermanentWriteError
from router.logs import LogfmtFormatter
from tests.unit.adapters.test_sql_engine_sqlite import Crm, decode_all, delivery


@pytest.fixture
def legacy_de(tmp_path: Path) -> Iterator[Crm]:
    crm = CRMS["legacy"]
    db = DemoDb(crm, tmp_path / "legacy.db")
    toml = tmp_path / "legacy.toml"
    text = crm.adapter_toml(tmp_path / "legacy.db", tmp_path / "state.db", "amqp://127.0.0.1:1/")
    toml.write_text(text + '\n[canonical]\ndefault_country = "DE"\n')
    adapter = SqlAdapter(load_adapter(toml), where=str(toml))
    try:
        yield Crm("legacy", db, adapter, SyncEngine(adapter, "legacy", overlap=2.0))
    finally:
        adapter.close()
        db.close()


def test_capture_publishes_cleansed_values(legacy_de: Crm) -> None:
    [email] = legacy_de.db.insert_contacts(1)
    legacy_de.db.update_by_email(
        email, email=" Ada@Example.COM ", phone="030 12345678", first_name="  Ada "
    )
    [event] = decode_all(legacy_de.capture({}).pending)
    assert event.fields["email"] == "ada@example.com"
    assert event.fields["phone"] == "+493012345678"
    assert event.fields["first_name"] == "Ada"


def test_a_delivery_is_written_as_sent_and_its_echo_is_not_captured(legacy_de: Crm) -> None:
    record_id = str(uuid.uuid4())
    sent = {"email": "Bob@Example.com", "first_name": "Bob", "last_name": "", "phone": "030 901820"}
    assert legacy_de.apply(delivery(record_id, VectorClock({"sales": 1}), sent)).action == (
        "applied"
    )
    row = legacy_de.row_by_email("Bob@Example.com")
    assert row is not None and row["phone"] == "030 901820"  # the CRM holds what it was sent
    link = legacy_de.link(record_id)
    assert link is not None
    assert link.fields == {
        "email": "bob@example.com",
        "first_name": "Bob",
        "last_name": None,
        "phone": "+4930901820",
    }
    # Capture reads the row back, cleanses it the same way: the echo is ours.
    captured = legacy_de.capture({})
    assert captured.pending == [] and captured.invalid == 0


def test_a_row_whose_phone_is_not_valid_is_skipped_and_reported_without_it(
    legacy_de: Crm, caplog: pytest.LogCaptureFixture
) -> None:
    [good, bad] = legacy_de.db.insert_contacts(2)
    legacy_de.db.update_by_email(good, phone="+49 30 12345678")
    legacy_de.db.update_by_email(bad, phone="0301")
    with caplog.at_level(logging.WARNING):
        captured = legacy_de.capture({})
    assert captured.invalid == 1
    assert [e.fields["email"] for e in decode_all(captured.pending)] == [good]
    [record] = [r for r in caplog.records if r.getMessage() == "source row skipped, not published"]
    fields = record.__dict__["kv"]
    assert fields["reason"] == "phone: not a valid phone number for region DE"
    assert "0301" not in LogfmtFormatter().format(record)


def test_a_delivery_that_cannot_be_cleansed_is_refused_and_nothing_is_written(
    legacy_de: Crm,
) -> None:
    sent = {"email": "eve@example.com", "first_name": "Eve", "phone": "12"}
    record_id = str(uuid.uuid4())
    with pytest.raises(PermanentWriteError) as caught:
        legacy_de.apply(delivery(record_id, VectorClock({"sales": 1}), sent))
    assert str(caught.value) == (
        f"record {record_id} would hold an invalid value: "
        "phone: not a valid phone number for region DE"
    )
    assert legacy_de.row_by_email("eve@example.com") is None
