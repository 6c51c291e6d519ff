"""End to end: a SQLite CRM and HubSpot (the fake) synced through the real router and
RabbitMQ, both directions: each side's new records reach the other, edits, deletes
(HubSpot: archive), and nothing ping-pongs (tests/integration/hubspot_e2e_rig.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.hubspot_e2e_rig import NOBODY, TOKEN, Rig, running, settled

pytestmark = pytest.mark.integration


@pytest.fixture
def rig(amqp: str, tmp_path: Path) -> Iterator[Rig]:
    with running(amqp, tmp_path) as r:
        yield r


def test_sqlite_and_hubspot_sync_both_ways_through_the_router(rig: Rig) -> None:
    rig.start()
    # Records that exist before an adapter registers reach it by `crmsync migrate`
    # (test_crm_join.py); these are created once both are running.
    seeded = rig.fake.seed(3)
    emails = rig.legacy.insert_contacts(2)
    rig.wait(
        "each side's records on the other",
        lambda: len(rig.legacy.contacts()) == 5 and rig.fake.live_count() == 5,
    )
    seed_email = f"seed{seeded[0]}@example.test"
    assert rig.legacy.contacts()[seed_email]["first_name"] == f"F{seeded[0]}"
    mirrored = rig.in_hubspot(emails[0])
    assert mirrored is not None
    assert mirrored.properties["phone"] == rig.legacy.contacts()[emails[0]]["phone"]

    # HubSpot -> SQLite: a user's edit in HubSpot (found by search, up to its lag late).
    rig.fake.edit(seeded[0], firstname="Edited", lastname="In HubSpot")
    rig.wait(
        "the HubSpot edit in SQLite",
        lambda: rig.legacy.contacts()[seed_email]["last_name"] == "In HubSpot",
    )
    # SQLite -> HubSpot.
    rig.legacy.update_by_email(emails[0], first_name="Zed")
    rig.wait(
        "the SQLite edit in HubSpot",
        lambda: (rig.in_hubspot(emails[0]) or NOBODY).properties.get("firstname") == "Zed",
    )
    # Deletes: an archive in HubSpot deletes in SQLite; a delete in SQLite archives.
    rig.fake.delete(seeded[1])
    archived = f"seed{seeded[1]}@example.test"
    rig.wait("the archive in SQLite", lambda: archived not in rig.legacy.contacts())
    rig.legacy.delete_by_email(emails[1])
    rig.wait("the delete in HubSpot", lambda: rig.in_hubspot(emails[1]) is None)
    assert rig.fake.live_count() == 3 and len(rig.legacy.contacts()) == 3

    # No ping-pong: once settled, a new edit costs one verdict and one HubSpot write.
    verdicts, writes = settled(rig)
    rig.legacy.update_by_email(emails[0], last_name="Once")
    rig.wait(
        "the second SQLite edit in HubSpot",
        lambda: (rig.in_hubspot(emails[0]) or NOBODY).properties.get("lastname") == "Once",
    )
    assert settled(rig) == (verdicts + 1, writes + 1)
    logs = "".join(p.read_text() for p in (rig.fleet.workdir / "logs").glob("*.log"))
    assert TOKEN not in logs
