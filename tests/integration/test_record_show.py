"""``crmsync record show`` (issue 13, item 12): one record as the hub holds it (values,
each one's author and clock) and as every CRM holds it now, asked of the adapters; an
adapter that is down is shown as not answering; an unknown id is one line."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from tests.integration.cli_runner import run_cli
from tests.integration.spine import Spine

pytestmark = pytest.mark.integration


def _record_id(spine: Spine, email: str) -> str:
    db = spine.dbs["legacy"]
    with db.engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT l.record_id FROM crmsync_link l JOIN contacts c "
                "ON l.source_record_id = CAST(c.id AS TEXT) WHERE c.email_addr = :e"
            ),
            {"e": email},
        ).one()
    return str(row.record_id)


def test_a_record_across_the_hub_and_every_crm(spine: Spine) -> None:
    spine.start()
    spine.dbs["legacy"].insert_contacts(3)
    spine.wait("in every CRM", lambda: spine.dbs["mktg"].count() == 3)
    spine.dbs["sales"].update_by_email("user1@example.com", first_name="FromSales")
    spine.wait(
        "the edit everywhere",
        lambda: spine.dbs["mktg"].contacts()["user1@example.com"]["first_name"] == "FromSales",
    )
    spine.wait_quiet()
    record_id = _record_id(spine, "user1@example.com")

    shown = run_cli("record", "show", record_id, "--json", amqp=spine.url)
    assert shown.code == 0, shown
    data = json.loads(shown.stdout)
    hub = data["hub"]
    assert hub["record_id"] == record_id and hub["deleted"] is False
    assert hub["fields"]["first_name"]["value"] == "FromSales"
    assert hub["fields"]["first_name"]["source"] == "sales"  # its author
    assert hub["fields"]["email"]["source"] == "legacy"
    assert set(data["crms"]) == {"legacy", "sales", "mktg"}
    for name, crm in data["crms"].items():
        assert crm["answered"] and crm["linked"] and crm["in_crm"], (name, crm)
        assert crm["fields"]["first_name"] == "FromSales" and not crm["differs"], (name, crm)
        assert crm["source_record_id"]

    human = run_cli("record", "show", record_id, amqp=spine.url)
    assert human.code == 0 and "FromSales" in human.stdout and "set by" in human.stdout

    assert spine.fleet.stop_one("mktg") == 0
    down = json.loads(
        run_cli("record", "show", record_id, "--json", "--timeout", "2", amqp=spine.url).stdout
    )
    assert down["crms"]["mktg"]["answered"] is False
    assert "mktg" in down["crms"]["mktg"]["error"]
    assert down["crms"]["legacy"]["answered"] is True


def test_an_unknown_record_is_one_line(spine: Spine) -> None:
    spine.start(("legacy",))
    missing = run_cli("record", "show", "00000000-0000-4000-8000-000000000000", amqp=spine.url)
    assert missing.code != 0
    lines = [line for line in missing.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no record 00000000" in lines[0], missing
