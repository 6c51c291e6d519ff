"""End to end: a SQLite CRM (the demo's ``legacy``) and HubSpot (the fake, in this test
process) synced through the real router and RabbitMQ, both directions: the initial
records of each reach the other, edits, deletes (HubSpot: archive), and nothing
ping-pongs. The router and both adapters run as processes, the HubSpot one from the
shipped config/adapters/hubspot.toml (only URLs, paths and intervals replaced)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from router.demo import Fleet
from router.demo.crms import CRMS, DemoDb
from tests.fakes.hubspot import FakeHubSpot, hubspot_server
from tests.fakes.hubspot_store import Contact
from tests.integration.spine import hub_status, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "pat-na1-e2e-secret-token"


def _deploy_hubspot(workdir: Path, fake: FakeHubSpot) -> None:
    token = workdir / "hubspot.token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    text = (ROOT / "config" / "adapters" / "hubspot.toml").read_text()
    replace = {
        r'(?m)^# base_url = ".*$': f'base_url = "{fake.base_url}"',
        r"(?m)^token_file = .*$": f'token_file = "{token}"',
        r"(?m)^search_lag = .*$": 'search_lag = "1s"',
        r"(?m)^poll_interval = .*$": "poll_interval = 0.2",
        r"(?m)^hard_delete_scan_every = .*$": "hard_delete_scan_every = 1",
        r'(?m)^path = ".*"$': f'path = "{workdir / "hubspot.state.db"}"',
        r"(?m)^delays = .*$": 'delays = ["1s", "2s"]',
    }
    for pattern, value in replace.items():
        text, n = re.subn(pattern, value, text, count=1)
        assert n == 1, pattern
    text = text.replace('kind = "hubspot"\n', 'kind = "hubspot"\nheartbeat_interval = 1.0\n')
    (workdir / "hubspot.toml").write_text(text)


class Rig:
    def __init__(self, workdir: Path, url: str, fake: FakeHubSpot) -> None:
        self.url, self.fake = url, fake
        self.fleet = Fleet(workdir, url)
        crm = CRMS["legacy"]
        self.legacy = DemoDb(crm, workdir / "legacy.db")
        (workdir / "legacy.toml").write_text(
            crm.adapter_toml(workdir / "legacy.db", workdir / "legacy.state.db", url)
        )
        _deploy_hubspot(workdir, fake)
        (workdir / "router.toml").write_text(
            f'[broker]\nurl = "{url}"\n[state]\nurl = "sqlite:///{workdir / "router.db"}"\n'
            '[router]\nheartbeat_timeout = "5s"\n'
        )

    def status(self) -> dict[str, Any]:
        return hub_status(self.url)

    def wait(self, what: str, predicate: Any, timeout: float = 60.0) -> None:
        wait_for(what, predicate, self.fleet, timeout)

    def start(self, adapters: tuple[str, ...] = ("legacy", "hubspot")) -> None:
        if "router" not in self.fleet.procs:
            self.fleet.start("router", "router", "--config", "router.toml")
            self.wait("the router", lambda: bool(self.status()["router"]["alive"]))
        for name in adapters:
            self.fleet.start(name, "adapter", "--config", f"{name}.toml")
        self.wait(
            f"adapters {adapters} registered",
            lambda: set(adapters) <= {a["name"] for a in self.status()["adapters"] if a["alive"]},
        )

    def migrate(self, source: str, target: str) -> dict[str, Any]:
        command = ["migrate", "--from", source, "--to", target, "--json"]
        done = subprocess.run(
            [sys.executable, "-m", "router.cli", *command],
            cwd=self.fleet.workdir,
            capture_output=True,
            text=True,
            timeout=120,
            env={**self.fleet.env, "PYTHONPATH": str(ROOT)},
        )
        assert done.returncode == 0, done.stderr
        report: dict[str, Any] = json.loads(done.stdout)
        return report

    def in_hubspot(self, email: str) -> Contact | None:
        with self.fake.lock:
            c = self.fake.store.by_email(email)
            return None if c is None else c.copy()

    def verdicts(self) -> int:
        return sum(self.status()["router"]["verdicts"].values())


@pytest.fixture
def rig(amqp: str, tmp_path: Path) -> Iterator[Rig]:
    with hubspot_server(token=TOKEN, lag=0.5) as fake:
        r = Rig(tmp_path, amqp, fake)
        try:
            yield r
        finally:
            codes = r.fleet.stop()
            r.legacy.close()
        assert all(code == 0 for code in codes.values()), codes


def _settled(rig: Rig, quiet: float = 3.0) -> tuple[int, int]:
    """(router verdicts, HubSpot write requests) once neither moved for ``quiet`` s:
    several polls of both adapters, where an echo or a ping-pong would show."""

    def now() -> tuple[int, int]:
        writes = sum(n for k, n in rig.fake.requests.items() if "/batch/" in k and "read" not in k)
        return rig.verdicts(), writes

    last, since = now(), time.monotonic()
    while time.monotonic() - since < quiet:
        time.sleep(0.3)
        seen = now()
        if seen != last:
            last, since = seen, time.monotonic()
    return last


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
        lambda: (
            (rig.in_hubspot(emails[0]) or Contact("", {}, 0, 0)).properties.get("firstname")
            == "Zed"
        ),
    )
    # Deletes: an archive in HubSpot deletes in SQLite; a delete in SQLite archives.
    rig.fake.delete(seeded[1])
    archived = f"seed{seeded[1]}@example.test"
    rig.wait("the archive in SQLite", lambda: archived not in rig.legacy.contacts())
    rig.legacy.delete_by_email(emails[1])
    rig.wait("the delete in HubSpot", lambda: rig.in_hubspot(emails[1]) is None)
    assert rig.fake.live_count() == 3 and len(rig.legacy.contacts()) == 3

    # No ping-pong: once settled, a new edit costs one verdict and one HubSpot write.
    verdicts, writes = _settled(rig)
    rig.legacy.update_by_email(emails[0], last_name="Once")
    rig.wait(
        "the second SQLite edit in HubSpot",
        lambda: (
            (rig.in_hubspot(emails[0]) or Contact("", {}, 0, 0)).properties.get("lastname")
            == "Once"
        ),
    )
    assert _settled(rig) == (verdicts + 1, writes + 1)
    logs = "".join(p.read_text() for p in (rig.fleet.workdir / "logs").glob("*.log"))
    assert TOKEN not in logs


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
        lambda: (
            (rig.in_hubspot(emails[42]) or Contact("", {}, 0, 0)).properties.get("firstname")
            == "Migrated"
        ),
    )
    contact = rig.in_hubspot(emails[7])
    assert contact is not None
    rig.fake.edit(contact.id, lastname="FromHubSpot")
    rig.wait(
        "the HubSpot edit in SQLite",
        lambda: rig.legacy.contacts()[emails[7]]["last_name"] == "FromHubSpot",
    )
    assert rig.fake.live_count() == 150 and len(rig.legacy.contacts()) == 150
