"""What related tables and references cost capture: the SuiteCRM layout vs one table.

    .venv/bin/python bench/related_capture.py                # 20k contacts on MariaDB
    .venv/bin/python bench/related_capture.py --rows 5000    # quick check

One private MariaDB database with SuiteCRM's tables (tests/integration/crm_layouts.py),
filled with N contacts, each with a primary email (email_addresses + email_addr_bean_rel)
and an account (accounts_contacts; N/10 accounts). Two mappings read the same rows, each
with a fresh adapter and links, measured in the same run:

* ``one-table`` (the baseline): the contact's own columns only;
* ``suitecrm``: the shipped config: email through the related tables, company_id
  through the link table resolved to global ids.

Printed per mapping: the initial capture (rows/s) and the cost of an idle incremental
poll (ms; what every poll_interval costs once caught up), and of a poll that finds 100
email changes made in the related tables only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from adapters.engine import SyncEngine  # noqa: E402
from adapters.sql import SqlAdapter  # noqa: E402
from router.adapter_config import AdapterConfig  # noqa: E402
from tests.integration import crm_layouts as crm  # noqa: E402
from tests.integration.test_sql_servers import private_database  # noqa: E402


def fill(engine: sa.Engine, rows: int) -> list[str]:
    # One row per second over the past hours: SuiteCRM's whole-second stamps, as saves
    # spread over a working day would leave them.
    past = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=rows + 60)
    accounts = [crm.new_id() for _ in range(max(1, rows // 10))]
    contacts = [crm.new_id() for _ in range(rows)]
    emails = [crm.new_id() for _ in range(rows)]

    def at(i: int) -> datetime:
        return past + timedelta(seconds=i)

    def stamp(i: int) -> dict[str, Any]:
        return {"date_entered": at(i), "date_modified": at(i), "deleted": 0}

    with engine.begin() as conn:
        meta = sa.MetaData()
        t = {
            n: sa.Table(n, meta, autoload_with=conn)
            for n in (
                "accounts",
                "contacts",
                "email_addresses",
                "email_addr_bean_rel",
                "accounts_contacts",
            )
        }
        conn.execute(
            t["accounts"].insert(),
            [{"id": a, "name": f"Company {i}", **stamp(i)} for i, a in enumerate(accounts)],
        )
        conn.execute(
            t["contacts"].insert(),
            [
                {"id": c, "first_name": f"First{i}", "last_name": f"Last{i}", **stamp(i)}
                for i, c in enumerate(contacts)
            ],
        )
        conn.execute(
            t["email_addresses"].insert(),
            [
                {
                    "id": e,
                    "email_address": f"p{i}@example.com",
                    "email_address_caps": f"P{i}@EXAMPLE.COM",
                    "date_created": at(i),
                    "date_modified": at(i),
                    "deleted": 0,
                }
                for i, e in enumerate(emails)
            ],
        )
        conn.execute(
            t["email_addr_bean_rel"].insert(),
            [
                {
                    "id": crm.new_id(),
                    "email_address_id": e,
                    "bean_id": c,
                    "bean_module": "Contacts",
                    "primary_address": 1,
                    "date_created": at(i),
                    "date_modified": at(i),
                    "deleted": 0,
                }
                for i, (c, e) in enumerate(zip(contacts, emails, strict=True))
            ],
        )
        conn.execute(
            t["accounts_contacts"].insert(),
            [
                {
                    "id": crm.new_id(),
                    "contact_id": c,
                    "account_id": accounts[i % len(accounts)],
                    "date_modified": at(i),
                    "deleted": 0,
                }
                for i, c in enumerate(contacts)
            ],
        )
    return contacts


def config(url: str, state: Path, related: bool) -> AdapterConfig:
    raw: dict[str, Any] = tomllib.loads((ROOT / "config/adapters/suitecrm.toml").read_text())
    raw["database"]["url"] = url
    raw["state"]["path"] = str(state)
    if not related:
        raw["entities"]["contact"].pop("related")
        raw["entities"]["contact"].pop("references")
        raw["entities"].pop("company")
    return AdapterConfig.model_validate(raw)


def measure(
    url: str, user: sa.Engine, workdir: Path, name: str, contacts: list[str]
) -> dict[str, float]:
    related = name != "one-table"
    with user.begin() as conn:  # each mapping starts with no links
        conn.exec_driver_sql("DROP TABLE IF EXISTS crmsync_link")
    adapter = SqlAdapter(config(url, workdir / f"s-{name}.db", related))
    engine = SyncEngine(adapter, "suitecrm", overlap=3.0)
    try:
        started = time.perf_counter()
        first = engine.capture({})
        took = time.perf_counter() - started
        engine.mark_published(engine.pending())
        assert first.invalid == 0
        idle = []
        for _ in range(5):
            t0 = time.perf_counter()
            assert engine.capture(first.positions).changes == 0
            idle.append(time.perf_counter() - t0)
        app = crm.SuiteApp(user)
        for c in contacts[:100]:
            app.set_email(c, f"new-{name}-{c[:8]}@example.com")
        t0 = time.perf_counter()
        changed = engine.capture(first.positions).changes
        changes_ms = (time.perf_counter() - t0) * 1000
        engine.mark_published(engine.pending())
        return {
            "rows_per_s": first.changes / took,
            "captured": first.changes,
            "idle_ms": statistics.median(idle) * 1000,
            "changes_ms": changes_ms,
            "changed": changed,
        }
    finally:
        adapter.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()
    with private_database("mariadb") as url, tempfile.TemporaryDirectory() as tmp:
        user = sa.create_engine(url)
        crm.create(user, crm.SUITECRM_DDL)
        contacts = fill(user, args.rows)
        results = {
            "one-table": measure(url, user, Path(tmp), "one-table", contacts),
            "suitecrm": measure(url, user, Path(tmp), "suitecrm", contacts),
        }
        with user.begin() as conn:  # what docs/real-crms.md advises for large CRMs
            for table in ("email_addr_bean_rel", "email_addresses", "accounts_contacts"):
                conn.exec_driver_sql(f"CREATE INDEX crmsync_dm ON {table} (date_modified)")
        results["suitecrm+idx"] = measure(url, user, Path(tmp), "suitecrm+idx", contacts)
        user.dispose()
    print(f"{args.rows} contacts, {max(1, args.rows // 10)} accounts, MariaDB")
    print(
        f"{'mapping':<12} {'initial rows/s':>15} {'idle poll ms':>13} "
        f"{'100 email changes: poll ms':>27} {'changes seen':>13}"
    )
    for name, r in results.items():
        print(
            f"{name:<12} {r['rows_per_s']:>15,.0f} {r['idle_ms']:>13.1f} "
            f"{r['changes_ms']:>27.1f} {r['changed']:>13.0f}"
        )


if __name__ == "__main__":
    main()
