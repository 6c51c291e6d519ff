"""Identity matching end to end (issue 11, item 2; docs/identity.md): the router and
three SQL CRMs as real processes on RabbitMQ, the operator's commands as a subprocess.

legacy and mktg sync first; sales joins later holding customers the hub already has
(the "CRM that joins with existing data" case: it publishes its rows, it is not
backfilled), so which CRM saw what is certain, not a race.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from router.demo.crms import DemoDb
from tests.integration.cli_runner import run_cli
from tests.integration.spine import Spine

pytestmark = pytest.mark.integration

MATCH = '[entities.contact]\nmatch = ["email"]\n'


def add(db: DemoDb, email: str, first_name: str, sid: str) -> None:
    f, crm = db.crm.fields, db.crm
    row: dict[str, Any] = {
        f["email"]: email,
        f["first_name"]: first_name,
        f["last_name"]: "Lovelace",
        crm.updated_at: datetime.now(UTC).replace(tzinfo=None),
    }
    if not crm.int_ids:
        row[crm.id] = sid
    if crm.deleted:
        row[crm.deleted] = False
    with db.engine.begin() as conn:
        conn.execute(db.table.insert().values(row))


def rows(db: DemoDb, email: str) -> list[dict[str, Any]]:
    """The live rows whose email is ``email`` trimmed and case-insensitive."""
    column = db.c[db.crm.fields["email"]]
    query = sa.select(db.table).where(sa.func.lower(sa.func.trim(column)) == email.lower())
    if db.crm.deleted:
        query = query.where(db.c[db.crm.deleted].is_(False))
    with db.engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def link_ids(db: DemoDb, email: str) -> set[str]:
    """The record ids the adapter's links give the rows of ``email``."""
    sids = {str(r[db.crm.id]) for r in rows(db, email)}
    with db.engine.connect() as conn:
        found = conn.execute(sa.text("SELECT record_id, source_record_id FROM crmsync_link"))
        return {record_id for record_id, sid in found if sid in sids}


def parked(spine: Spine) -> list[dict[str, Any]]:
    result = run_cli("identity", "list", "--json", amqp=spine.url)
    assert result.code == 0, result
    found: list[dict[str, Any]] = result.json()
    return found


def verdict(spine: Spine, name: str) -> int:
    return int(spine.status()["router"].get("verdicts", {}).get(name, 0))


def test_one_customer_in_two_crms_is_linked_and_ambiguous_and_duplicates_wait(
    spine: Spine,
) -> None:
    spine.set_conflicts(MATCH)
    legacy, sales, mktg = spine.dbs["legacy"], spine.dbs["sales"], spine.dbs["mktg"]
    add(legacy, "Ann@Example.com ", "Ann", "L-ann")
    add(legacy, "bo@x.io", "Bo", "L-bo")
    add(legacy, "cy@x.io", "Cy", "L-cy")
    spine.start(adapters=("mktg",))  # registered before legacy publishes: it gets all
    spine.start_adapter("legacy")
    spine.wait("mktg seeded", lambda: mktg.count() == 3)
    # cy's email becomes bo's: two records hold that key now (an update is never matched).
    legacy.update_by_email("cy@x.io", email="BO@x.io")
    spine.wait("the email edit synced", lambda: len(rows(mktg, "bo@x.io")) == 2)

    add(sales, "ann@example.com", "Annie", "S-ann")
    add(sales, "bo@x.io", "Bob", "S-bo")
    spine.start_adapter("sales")
    spine.wait_registered(["legacy", "mktg", "sales"])
    spine.wait(
        "sales' rows judged", lambda: verdict(spine, "linked") + verdict(spine, "ambiguous") >= 2
    )
    spine.wait_quiet()

    # Ann: one row in every CRM, and every link names the same record.
    for db in (legacy, sales, mktg):
        assert len(rows(db, "ann@example.com")) == 1, db.crm.name
    [ann] = link_ids(legacy, "ann@example.com")
    assert link_ids(sales, "ann@example.com") == link_ids(mktg, "ann@example.com") == {ann}

    # bo: ambiguous, parked, written nowhere; listed for an operator.
    [item] = parked(spine)
    assert (item["reason"], item["source"], item["source_record_id"]) == (
        "ambiguous",
        "sales",
        "S-bo",
    )
    candidates = set(item["candidates"])
    assert candidates == link_ids(legacy, "bo@x.io") and len(candidates) == 2
    assert len(rows(legacy, "bo@x.io")) == len(rows(mktg, "bo@x.io")) == 2
    assert {r["given_name"] for r in rows(mktg, "bo@x.io")} == {"Bo", "Cy"}
    text = run_cli("identity", "list", amqp=spine.url)
    assert item["event_id"] in text.stdout and "ambiguous" in text.stdout
    assert "1 record(s) parked by identity matching" in run_cli("status", amqp=spine.url).stdout

    legacy_bo = record_of(legacy, "bo@x.io", "Bo")
    done = run_cli("identity", "resolve", item["event_id"], "--link", legacy_bo, amqp=spine.url)
    assert done.code == 0, done
    assert f"linked to {legacy_bo}" in done.stdout
    spine.wait("sales' bo linked", lambda: link_ids(sales, "bo@x.io") == {legacy_bo})
    assert len(rows(sales, "bo@x.io")) == 1
    assert len(rows(legacy, "bo@x.io")) == len(rows(mktg, "bo@x.io")) == 2
    assert parked(spine) == []

    # A second row for Ann inside legacy: a duplicate in that source, written nowhere.
    add(legacy, "ANN@example.com", "Ann2", "L-ann2")
    spine.wait("the duplicate parked", lambda: verdict(spine, "duplicate-in-source") == 1)
    spine.wait_quiet()
    [dup] = parked(spine)
    assert (dup["reason"], dup["candidates"]) == ("duplicate", [ann])
    assert len(rows(sales, "ann@example.com")) == len(rows(mktg, "ann@example.com")) == 1

    # Logs name ids and keys, never the customers' values.
    for log in (spine.workdir / "logs").glob("*.log"):
        assert "ann@example.com" not in log.read_text().lower(), log.name


def record_of(db: DemoDb, email: str, first_name: str) -> str:
    """The record id of the row of ``email`` with ``first_name``."""
    [row] = [r for r in rows(db, email) if r[db.crm.fields["first_name"]] == first_name]
    with db.engine.connect() as conn:
        query = sa.text("SELECT record_id FROM crmsync_link WHERE source_record_id = :sid")
        return str(conn.execute(query, {"sid": str(row[db.crm.id])}).scalar_one())
