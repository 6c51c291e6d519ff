"""The shipped SuiteCRM and Odoo configs on tables laid out as those CRMs lay them out
(tests/integration/crm_layouts.py), driven through the SDK's engine: related-table
emails, the contact -> company reference as global ids, soft, hard and archive deletes,
and Odoo's company-address fan-out as one change per changed row."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from adapters.engine import SyncEngine
from adapters.sql import SqlAdapter
from router.adapter_config import AdapterConfig
from router.errors import TransientWriteError
from router.events import ChangeEvent, decode, new_event_id
from tests.integration import crm_layouts as crm
from tests.integration.test_sql_servers import capture, private_database

pytestmark = pytest.mark.integration

CONFIG = Path(__file__).resolve().parents[2] / "config" / "adapters"


@contextmanager
def shipped(name: str, backend: str, ddl: list[str], tmp_path: Path) -> Iterator[Any]:
    """The shipped config ``name`` on a private database with the CRM's tables: yields
    (engine, user engine)."""
    with private_database(backend) as url:
        user = sa.create_engine(url)
        crm.create(user, ddl)
        raw = tomllib.loads((CONFIG / f"{name}.toml").read_text())
        raw["database"]["url"] = url
        raw["state"]["path"] = str(tmp_path / f"{name}.state.db")
        adapter = SqlAdapter(AdapterConfig.model_validate(raw), where=f"{name}.toml")
        try:
            yield SyncEngine(adapter, name, overlap=3.0), user
        finally:
            adapter.close()
            user.dispose()


def events(engine: SyncEngine, cursors: dict[str, Any] | None = None) -> list[ChangeEvent]:
    owed = capture(engine, cursors if cursors is not None else {})
    assert owed.invalid == 0
    engine.mark_published(owed.pending)
    # The outbox is no queue in capture order: companies first, to read the pairs.
    found = [decode(e.body) for e in owed.pending]
    return sorted(found, key=lambda e: (e.entity != "company", e.source_record_id))


def delivery(
    entity: str, record_id: str, fields: dict[str, Any], op: str = "upsert", counter: int = 1
) -> ChangeEvent:
    return ChangeEvent(
        event_id=new_event_id(),
        source="other",
        actor="other",
        entity=entity,
        record_id=record_id,
        source_record_id="X-1",
        op=op,  # type: ignore[arg-type]
        clock={"other": counter},
        fields=fields,
        changed=sorted(fields),
        occurred_at=datetime.now(UTC),
    )


# -- SuiteCRM on MariaDB ------------------------------------------------------------------


@pytest.fixture
def suite(tmp_path: Path) -> Iterator[tuple[SyncEngine, crm.SuiteApp]]:
    with shipped("suitecrm", "mariadb", crm.SUITECRM_DDL, tmp_path) as (engine, user):
        yield engine, crm.SuiteApp(user)


def test_suitecrm_capture_reads_email_and_account_as_global_ids(
    suite: tuple[SyncEngine, crm.SuiteApp],
) -> None:
    engine, app = suite
    account = app.add_account("Analytical Engines", website="ae.example")
    contact = app.add_contact(
        "Ada", "Lovelace", email="Ada@Example.com", account=account, phone_work="+44 20 1"
    )
    company_event, contact_event = events(engine)
    assert (company_event.entity, company_event.source_record_id) == ("company", account)
    assert contact_event.source_record_id == contact
    assert contact_event.fields["email"] == "ada@example.com"  # cleansed on capture
    assert contact_event.fields["company_id"] == company_event.record_id
    assert events(engine) == []  # re-read: nothing new


def test_suitecrm_email_change_in_related_tables_is_a_change_of_the_contact(
    suite: tuple[SyncEngine, crm.SuiteApp],
) -> None:
    engine, app = suite
    contact = app.add_contact("Ada", "Lovelace", email="ada@example.com")
    [first] = events(engine)
    cursors = capture(engine, {}).positions
    app.set_email(contact, "countess@example.com")  # contacts.date_modified untouched
    [change] = events(engine, cursors)
    assert change.record_id == first.record_id
    assert change.fields["email"] == "countess@example.com"
    assert change.changed == ["email"]


def test_suitecrm_writes_related_rows_and_account_link(
    suite: tuple[SyncEngine, crm.SuiteApp],
) -> None:
    engine, app = suite
    company, person = crm.new_id(), crm.new_id()
    assert (
        engine.apply(delivery("company", company, {"name": "Analytical Engines"})).action
        == "applied"
    )
    fields = {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": "ada@example.com",
        "company_id": company,
    }
    assert engine.apply(delivery("contact", person, fields)).action == "applied"
    [account] = app.rows("SELECT id, date_entered FROM accounts WHERE deleted = 0")
    assert account["date_entered"] is not None
    [row] = app.rows("SELECT id FROM contacts WHERE deleted = 0")
    assert app.email_of(row["id"]) == "ada@example.com"
    [address] = app.rows("SELECT email_address_caps FROM email_addresses")
    assert address["email_address_caps"] == "ADA@EXAMPLE.COM"
    assert app.account_of(row["id"]) == account["id"]  # SuiteCRM's own account id
    assert events(engine) == []  # our own writes are no local change

    # A new address replaces the primary one; the old relation row is kept, deleted.
    change = {**fields, "email": "countess@example.com"}
    assert engine.apply(delivery("contact", person, change, counter=2)).action == "applied"
    assert app.email_of(row["id"]) == "countess@example.com"
    rels = app.rows("SELECT deleted FROM email_addr_bean_rel ORDER BY deleted")
    assert [r["deleted"] for r in rels] == [0, 1]
    # Unlinking the company removes the live account link.
    assert (
        engine.apply(delivery("contact", person, {**change, "company_id": None}, counter=3)).action
        == "applied"
    )
    assert app.account_of(row["id"]) is None
    assert events(engine) == []


def test_suitecrm_reference_to_an_unknown_company_waits_and_writes_nothing(
    suite: tuple[SyncEngine, crm.SuiteApp],
) -> None:
    engine, app = suite
    fields = {"first_name": "Ada", "last_name": "L", "company_id": crm.new_id()}
    with pytest.raises(TransientWriteError, match="not in this CRM yet"):
        engine.apply(delivery("contact", crm.new_id(), fields))
    assert app.rows("SELECT id FROM contacts") == []
    assert app.rows("SELECT id FROM accounts_contacts") == []


def test_suitecrm_contact_waits_for_its_uncaptured_account(
    suite: tuple[SyncEngine, crm.SuiteApp],
) -> None:
    engine, app = suite
    account = app.add_account("Analytical Engines")
    app.add_contact("Ada", "Lovelace", account=account)
    page = engine.capture_page("contact", None, None)  # before the company's pass
    assert (page.changes, page.held is not None) == (0, True)
    company_event, contact_event = events(engine)
    assert contact_event.fields["company_id"] == company_event.record_id


def test_suitecrm_soft_delete_is_a_delete(suite: tuple[SyncEngine, crm.SuiteApp]) -> None:
    engine, app = suite
    contact = app.add_contact("Ada", "Lovelace", email="ada@example.com")
    [made] = events(engine)
    app.delete("contacts", contact)
    [gone] = events(engine)
    assert (gone.op, gone.record_id) == ("delete", made.record_id)


# -- Odoo on PostgreSQL -------------------------------------------------------------------


@pytest.fixture
def odoo(tmp_path: Path) -> Iterator[tuple[SyncEngine, crm.OdooApp]]:
    with shipped("odoo", "postgresql", crm.ODOO_DDL, tmp_path) as (engine, user):
        yield engine, crm.OdooApp(user)


def test_odoo_partners_split_into_companies_and_contacts(
    odoo: tuple[SyncEngine, crm.OdooApp],
) -> None:
    engine, app = odoo
    company = app.add("Analytical Engines", company=True, website="ae.example")
    person = app.add("Ada King Lovelace", parent=company, email="ada@example.com")
    company_event, contact_event = events(engine)
    assert company_event.entity == "company" and company_event.source_record_id == str(company)
    assert contact_event.source_record_id == str(person)
    assert (contact_event.fields["first_name"], contact_event.fields["last_name"]) == (
        "Ada King",
        "Lovelace",
    )
    assert contact_event.fields["company_id"] == company_event.record_id
    assert contact_event.fields["active"] is True


def test_odoo_archive_is_no_delete_and_unlink_is(odoo: tuple[SyncEngine, crm.OdooApp]) -> None:
    engine, app = odoo
    person = app.add("Ada Lovelace", email="ada@example.com")
    [made] = events(engine)
    app.write(person, active=False)
    [archived] = events(engine)
    assert (archived.op, archived.fields["active"]) == ("upsert", False)
    app.unlink(person)
    [gone] = events(engine)
    assert (gone.op, gone.record_id) == ("delete", made.record_id)


def test_odoo_company_address_fan_out_is_one_change_per_row(
    odoo: tuple[SyncEngine, crm.OdooApp],
) -> None:
    engine, app = odoo
    company = app.add("Analytical Engines", company=True)
    for i in range(5):
        app.add(f"Person {i}", parent=company)
    assert len(events(engine)) == 6
    children = app.write_company_address(company, "12 St James's Square", "London")
    changes = events(engine)
    assert sorted(e.source_record_id for e in changes) == sorted(
        str(p) for p in [company, *children]
    )
    assert all(e.changed == ["city", "street"] for e in changes)
    assert events(engine) == []


def test_odoo_writes_parent_id_and_is_company(odoo: tuple[SyncEngine, crm.OdooApp]) -> None:
    engine, app = odoo
    company, person = crm.new_id(), crm.new_id()
    engine.apply(delivery("company", company, {"name": "Analytical Engines"}))
    fields = {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "company_id": company,
        "email": "ada@example.com",
    }
    assert engine.apply(delivery("contact", person, fields)).action == "applied"
    [org] = app.find(is_company=True)
    [ada] = app.find(is_company=False)
    assert (ada["name"], ada["parent_id"], ada["create_date"] is not None) == (
        "Ada Lovelace",
        org["id"],
        True,
    )
    assert events(engine) == []
