"""Acceptance: SuiteCRM (MariaDB) joins a running Odoo (PostgreSQL) installation by one
TOML file, takes the existing records with `crmsync migrate`, then syncs live both
ways: emails through SuiteCRM's related tables, the contact -> company relation as each
CRM's own ids, hard deletes, archiving that is no delete, and Odoo's company-address
fan-out as one change per changed row, with no ping-pong.

Router and adapters run as real processes from the shipped configs (only URLs, paths
and poll intervals replaced), on this test's own vhost, schema and database."""

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
import sqlalchemy as sa

from router.demo import Fleet
from tests.integration import crm_layouts as crm
from tests.integration.spine import hub_status, wait_for
from tests.integration.test_sql_servers import private_database

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _deploy(shipped: str, workdir: Path, url: str, db_url: str) -> Path:
    """The shipped config with this test's database, state and faster polling."""
    text = (ROOT / "config" / "adapters" / f"{shipped}.toml").read_text()
    text = re.sub(r'(?m)^url = ".*"$', f'url = "{db_url}"', text, count=1)
    text = re.sub(r'(?m)^path = ".*"$', f'path = "{workdir / (shipped + ".state.db")}"', text)
    text = re.sub(r"(?m)^poll_interval = .*$", "poll_interval = 0.2", text)
    text = text.replace('kind = "sql"\n', 'kind = "sql"\nheartbeat_interval = 1.0\n')
    text += '\n[retry]\ndelays = ["1s", "2s"]\n'
    path = workdir / f"{shipped}.toml"
    path.write_text(text)
    return path


class Installation:
    def __init__(self, workdir: Path, url: str, odoo_url: str, suite_url: str) -> None:
        self.workdir, self.url = workdir, url
        self.fleet = Fleet(workdir, url)
        self.odoo_db, self.suite_db = sa.create_engine(odoo_url), sa.create_engine(suite_url)
        crm.create(self.odoo_db, crm.ODOO_DDL)
        crm.create(self.suite_db, crm.SUITECRM_DDL)
        self.odoo, self.suite = crm.OdooApp(self.odoo_db), crm.SuiteApp(self.suite_db)
        _deploy("odoo", workdir, url, odoo_url)
        _deploy("suitecrm", workdir, url, suite_url)
        (workdir / "router.toml").write_text(
            f'[broker]\nurl = "{url}"\n[state]\nurl = "sqlite:///{workdir / "router.db"}"\n'
            '[router]\nheartbeat_timeout = "5s"\n'
        )

    def status(self) -> dict[str, Any]:
        return hub_status(self.url)

    def wait(self, what: str, predicate: Any, timeout: float = 60.0) -> None:
        wait_for(what, predicate, self.fleet, timeout)

    def start(self, name: str) -> None:
        if name == "router":
            self.fleet.start("router", "router", "--config", "router.toml")
            self.wait("the router", lambda: bool(self.status()["router"]["alive"]))
            return
        self.fleet.start(name, "adapter", "--config", f"{name}.toml")
        self.wait(
            f"adapter {name}",
            lambda: any(a["name"] == name and a["alive"] for a in self.status()["adapters"]),
        )

    def migrate(self) -> tuple[int, dict[str, Any], str]:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "router.cli",
                "migrate",
                "--from",
                "odoo",
                "--to",
                "suitecrm",
                "--json",
            ],
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=120,
            env={**self.fleet.env, "PYTHONPATH": str(ROOT)},
        )
        return done.returncode, json.loads(done.stdout or "{}"), done.stderr

    def verdicts(self) -> int:
        return sum(self.status()["router"]["verdicts"].values())

    def close(self) -> None:
        self.fleet.stop()
        self.odoo_db.dispose()
        self.suite_db.dispose()


@pytest.fixture
def installation(amqp: str, tmp_path: Path) -> Iterator[Installation]:
    with private_database("postgresql") as odoo_url, private_database("mariadb") as suite_url:
        inst = Installation(tmp_path, amqp, odoo_url, suite_url)
        try:
            yield inst
        finally:
            inst.close()


def settled(inst: Installation, quiet: float = 2.0) -> int:
    """The router's verdict count once it has not moved for ``quiet`` seconds (several
    capture polls of both adapters: an echo would have shown by then)."""
    last, since = inst.verdicts(), time.monotonic()
    while time.monotonic() - since < quiet:
        time.sleep(0.2)
        now = inst.verdicts()
        if now != last:
            last, since = now, time.monotonic()
    return last


def suite_contact(inst: Installation, last: str) -> dict[str, Any]:
    [row] = inst.suite.rows("SELECT * FROM contacts WHERE last_name = :l", l=last)
    return row


def test_suitecrm_joins_odoo_migrates_then_syncs_both_ways(installation: Installation) -> None:
    inst = installation
    odoo = inst.odoo
    engines = odoo.add("Analytical Engines", company=True, website="ae.example")
    looms = odoo.add("Jacquard Looms", company=True)
    ada = odoo.add("Ada Lovelace", parent=engines, email="ada@example.com")
    charles = odoo.add("Charles Babbage", parent=engines, email="charles@example.com")
    joseph = odoo.add("Joseph Jacquard", parent=looms, email="joseph@example.com")
    inst.start("router")
    inst.start("odoo")
    inst.wait(
        "Odoo's 5 records in the hub", lambda: inst.status()["router"]["store"]["records"] >= 5
    )

    inst.start("suitecrm")  # one TOML file, a running system with data
    code, report, err = inst.migrate()
    assert code == 0, (report, err)
    assert {e: r["created"] for e, r in report["entities"].items()} == {"company": 2, "contact": 3}

    accounts = {r["name"]: r["id"] for r in inst.suite.rows("SELECT id, name FROM accounts")}
    assert set(accounts) == {"Analytical Engines", "Jacquard Looms"}
    suite_ada = suite_contact(inst, "Lovelace")
    assert inst.suite.email_of(suite_ada["id"]) == "ada@example.com"
    assert inst.suite.account_of(suite_ada["id"]) == accounts["Analytical Engines"]
    assert (
        inst.suite.account_of(suite_contact(inst, "Jacquard")["id"]) == accounts["Jacquard Looms"]
    )

    # Live, SuiteCRM -> Odoo: a new primary email (related tables only).
    inst.suite.set_email(suite_ada["id"], "countess@example.com")
    inst.wait(
        "the new email in Odoo",
        lambda: (odoo.get(ada) or {}).get("email") == "countess@example.com",
    )
    # Live, SuiteCRM -> Odoo: Charles moves to the looms; Odoo gets its own company id.
    inst.suite._run(
        "UPDATE accounts_contacts SET account_id = :a, date_modified = UTC_TIMESTAMP() "
        "WHERE contact_id = :c",
        a=accounts["Jacquard Looms"],
        c=suite_contact(inst, "Babbage")["id"],
    )
    inst.wait(
        "Charles under the looms in Odoo",
        lambda: (odoo.get(charles) or {}).get("parent_id") == looms,
    )

    # Odoo -> SuiteCRM: archiving is no delete; the record stays live there.
    odoo.write(joseph, active=False, phone="+33 1 23")
    inst.wait(
        "Joseph's phone in SuiteCRM",
        lambda: suite_contact(inst, "Jacquard")["phone_work"] == "+33 1 23",
    )
    assert suite_contact(inst, "Jacquard")["deleted"] == 0

    # The company address fan-out: one change per changed row, and nothing comes back.
    before = settled(inst)
    children = odoo.write_company_address(looms, "Rue de la Charité", "Lyon")
    assert sorted(children) == sorted([charles, joseph])
    inst.wait(
        "the looms' address on both contacts in SuiteCRM",
        lambda: all(
            suite_contact(inst, last)["primary_address_city"] == "Lyon"
            for last in ("Babbage", "Jacquard")
        ),
    )
    # Odoo's 3 rows (the company and its 2 contacts) were judged once each; SuiteCRM's
    # writes were not captured as changes (no echo, no ping-pong).
    assert settled(inst) - before == 3

    # Odoo -> SuiteCRM: a hard delete is a delete (SuiteCRM flags it, as it deletes).
    odoo.unlink(ada)
    inst.wait("Ada deleted in SuiteCRM", lambda: suite_contact(inst, "Lovelace")["deleted"] == 1)
    assert inst.suite.email_of(suite_ada["id"]) == "countess@example.com"  # rows kept
