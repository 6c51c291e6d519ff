"""``crmsync migrate --dry-run`` end to end (issue 11, item 5): the plan of every outcome
over real processes, nothing changed in either CRM or the hub, then the real run's
counts agree with the plan."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.integration.migration_rig import Crm, Rig, people
from tests.integration.migration_setup import emails, one_line, pg_rig, poll, report_of

pytestmark = pytest.mark.integration

N = 120
LONG_AGO = datetime(2001, 1, 1)  # before capture's cursor: rows it has not linked yet
ROUTER_TABLES = (
    "crmsync_records",
    "crmsync_migrations",
    "crmsync_migration_items",
    "crmsync_alias",
    "crmsync_members",
    "crmsync_match",
    "crmsync_identity_parked",
    "crmsync_outbox",
)


def links(crm: Crm) -> dict[str, tuple[Any, ...]]:
    """The adapter's links in its CRM: source id -> the whole link row."""
    with crm.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM crmsync_link ORDER BY source_record_id"))
        return {str(r.source_record_id): tuple(r) for r in rows}


def router_state(rig: Rig) -> dict[str, int]:
    engine = sa.create_engine(f"sqlite:///{rig.workdir / 'router.db'}")
    try:
        with engine.connect() as conn:
            return {
                t: int(conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one())
                for t in ROUTER_TABLES
            }
    finally:
        engine.dispose()


def everything(rig: Rig) -> dict[str, Any]:
    return {
        "target": sorted(map(repr, rig.target.rows())),
        "source": sorted(map(repr, rig.source.rows())),
        "target_links": links(rig.target),
        "source_links": links(rig.source),
        "router": router_state(rig),
    }


def _set_up(rig: Rig, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Pre-existing target rows, rows synced live (some drifted), uncaptured rows."""
    # Ten customers the target already holds under its own ids, emails otherwise cased:
    # its initial capture links them to the source's records.
    theirs = [
        {**rows[i], "id": f"t{i}", "email": str(rows[i]["email"]).upper()} for i in range(20, 30)
    ]
    rig.target.insert(theirs)
    rig.start_adapter("new")
    source_ids = {sid: link[0] for sid, link in links(rig.source).items()}
    wanted = {source_ids[str(rows[i]["id"])] for i in range(20, 30)}

    def linked() -> bool:
        return wanted <= {link[0] for link in links(rig.target).values()}

    poll("the target's rows linked to the source's records", linked)
    # Twenty rows made after the target joined reach it live: held identically...
    rig.source.insert(people(20, start=N))
    poll("the live rows in the target", lambda: rig.target.count() == 30)
    # ...but for four changed in the target behind capture's back (stamped long ago, as
    # a restore or a direct fix-up may leave them): drift.
    for row in rig.target.rows():
        if row["email"] in {f"person{i}@example.com" for i in range(N, N + 4)}:
            rig.target.update(row["id"], touch=False, last_name="Drifted", updated_at=LONG_AGO)
    # Three rows capture has not linked: the plan asks identity matching about them.
    rig.source.insert({**r, "updated_at": LONG_AGO} for r in people(3, start=N + 20))
    time.sleep(1.5)  # several capture polls of both adapters
    assert "Drifted" not in {r["last_name"] for r in rig.source.rows()}, "capture saw the drift"
    unlinked = {f"p{i:07d}" for i in range(N + 20, N + 23)}
    assert not unlinked & set(links(rig.source)), "capture linked the old rows: no unseen rows"
    return {
        "source": N + 23,
        "create": N - 2 - 1 - 10 + 3,
        "link": 10,
        "update": 4,
        "unchanged": 16,
        "invalid": 2,
        "ambiguous": 0,
        "duplicates": 1,
    }


def test_dry_run_plans_every_outcome_changes_nothing_and_the_run_agrees(
    amqp: str, tmp_path: Path
) -> None:
    rows = people(N)
    for r in rows[5:7]:
        r["email"] = f"broken.{r['id']}@@acme"
    rows[11]["email"] = str(rows[10]["email"]).upper()  # one customer twice in the source
    with pg_rig(tmp_path, amqp, rows, start_target=False, valid=N - 3, match=["email"]) as rig:
        expected = _set_up(rig, rows)
        before = everything(rig)

        written = tmp_path / "plan.json"
        done = rig.command(
            "migrate", "--from", "old", "--to", "new", "--dry-run", "--json",
            "--report", str(written),
        )  # fmt: skip
        assert done.returncode == 1, done.stderr  # invalid and duplicates: as the run would
        plan = json.loads(done.stdout)
        assert plan == {
            "dry_run": True,
            "from": "old",
            "to": "new",
            "entities": {"contact": expected},
        }
        full = report_of(written)
        invalid = {i["source_record_id"]: i["reason"] for i in full["records"]["invalid"]}
        assert set(invalid) == {"p0000005", "p0000006"}
        assert all("email" in why and "broken" not in why for why in invalid.values())
        assert "@@" not in written.read_text()
        assert [i["source_record_id"] for i in full["records"]["duplicates"]] == ["p0000011"]
        assert len(full["records"]["link"]) == 10
        assert len(full["records"]["update"]) == 4
        drifted = {i["source_record_id"] for i in full["records"]["update"]}
        assert drifted == {f"p{i:07d}" for i in range(N, N + 4)}

        human = rig.command("migrate", "--from", "old", "--to", "new", "--dry-run")
        assert human.returncode == 1, human.stderr
        assert "nothing was changed" in human.stdout
        assert "would not migrate: 2 invalid, 1 duplicates" in human.stdout

        refused = rig.command("migrate", "--from", "old", "--to", "new", "--dry-run", "--resume")
        assert refused.returncode != 0
        assert "takes no --resume" in one_line(refused.stderr)

        assert everything(rig) == before  # both CRMs, both adapters' links, the hub
        assert before["router"]["crmsync_migrations"] == 0

        code, report, stderr = rig.migrate("--batch-size", "50")
        assert code == 1, stderr
        counts = report["entities"]["contact"]
        assert counts["source"] == expected["source"]
        assert counts["linked"] == expected["link"]
        moved = counts["created"] + counts["updated"] + counts["unchanged"]
        assert moved == expected["create"] + expected["update"] + expected["unchanged"]
        for name in ("invalid", "duplicates", "ambiguous"):
            assert counts[name] == expected[name], name
        # Drift is what capture never saw: the run leaves it to reconcile, and says so.
        assert counts["mismatched"] == expected["update"]
        assert counts["failed"] == 0
        target = rig.target.rows()
        assert len(target) == N + 23 - 3
        assert not [e for e, n in Counter(e.lower() for e in emails(target)).items() if n > 1]
