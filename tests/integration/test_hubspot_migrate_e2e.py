"""End to end: HubSpot (the fake) joins a running system whose SQLite CRM holds records,
takes them with `crmsync migrate` (batch creates), then syncs live both ways, also across
a restart of its adapter (tests/integration/hubspot_e2e_rig.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.hubspot_e2e_rig import NOBODY, Rig, running, settled

pytestmark = pytest.mark.integration


@pytest.fixture
def rig(amqp: str, tmp_path: Path) -> Iterator[Rig]:
    with running(amqp, tmp_path) as r:
        yield r


def test_hubspot_joins_with_crmsync_migrate_then_syncs(rig: Rig) -> None:
    emails = rig.legacy.insert_contacts(150)
    rig.start(("legacy",))
    rig.wait(
        "the SQLite CRM's records in the hub",
        lambda: rig.status()["router"]["store"]["records"] >= 150,
    )
    rig.start(("hubspot",))  # joins a running system with data
    report = rig.migrate("legacy", "hubspot")
    assert report["verified"] is True
    counts = report["entities"]["contact"]
    assert (counts["created"], counts["failed"]) == (150, 0)
    assert rig.fake.live_count() == 150
    # Batches of up to 100 inputs, not one request per record.
    assert rig.fake.requests["POST /crm/v3/objects/contacts/batch/create"] <= 4
    # Live sync on the migrated links, both ways.
    rig.legacy.update_by_email(emails[42], first_name="Migrated")
    rig.wait(
        "the SQLite edit in HubSpot",
        lambda: (rig.in_hubspot(emails[42]) or NOBODY).properties.get("firstname") == "Migrated",
    )
    contact = rig.in_hubspot(emails[7])
    assert contact is not None
    rig.fake.edit(contact.id, lastname="FromHubSpot")
    rig.wait(
        "the HubSpot edit in SQLite",
        lambda: rig.legacy.contacts()[emails[7]]["last_name"] == "FromHubSpot",
    )
    assert rig.fake.live_count() == 150 and len(rig.legacy.contacts()) == 150

    # A restart resumes from the saved cursor: an edit made while the adapter was down
    # arrives, and nothing else is published again.
    verdicts, _ = settled(rig)
    assert rig.fleet.stop_one("hubspot") == 0
    down = rig.in_hubspot(emails[9])
    assert down is not None
    rig.fake.edit(down.id, firstname="WhileDown")
    rig.start(("hubspot",))
    rig.wait(
        "the edit made while the adapter was down, in SQLite",
        lambda: rig.legacy.contacts()[emails[9]]["first_name"] == "WhileDown",
    )
    assert settled(rig)[0] == verdicts + 1
