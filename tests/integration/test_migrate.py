"""``crmsync migrate`` end to end (issue 11): a SQLite CRM into a PostgreSQL CRM through
the hub, with the router and both adapters as real processes on the test's own vhost.

Every test checks the target database itself, not only the command's report: a report
that says "verified" over a target missing rows is the failure these tests exist for.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.integration.migration_rig import people
from tests.integration.migration_setup import content, emails, pg_rig, report_of

pytestmark = pytest.mark.integration

N = 600


def test_migrate_sqlite_to_postgresql_then_again_changes_nothing(
    amqp: str, tmp_path: Path
) -> None:
    with pg_rig(tmp_path, amqp, N) as rig:
        code, report, stderr = rig.migrate("--batch-size", "200")
        assert code == 0, stderr
        assert report["verified"] is True
        assert report["entities"]["contact"] == {
            "source": N,
            "created": N,
            "linked": 0,
            "updated": 0,
            "unchanged": 0,
            "invalid": 0,
            "duplicates": 0,
            "ambiguous": 0,
            "failed": 0,
            "mismatched": 0,
        }
        target = rig.target.rows()
        assert len(target) == N
        assert content(target) == content(rig.source.rows())
        assert not [e for e, n in Counter(emails(target)).items() if n > 1]

        code, again, stderr = rig.migrate()
        assert code == 0, stderr
        assert again["verified"] is True
        assert again["migration_id"] != report["migration_id"]
        counts = again["entities"]["contact"]
        assert counts["created"] == counts["updated"] == counts["linked"] == 0
        assert counts["unchanged"] == counts["source"] == N
        assert rig.target.count() == N

        human = rig.command("migrate", "--from", "old", "--to", "new")
        assert human.returncode == 0, human.stderr
        assert "nothing to migrate" in human.stdout
        assert rig.target.count() == N


def test_invalid_source_rows_are_reported_by_id_and_reason_and_never_written(
    amqp: str, tmp_path: Path
) -> None:
    rows = people(300)
    bad = {r["id"]: f"john.smith{n}@@acme" for n, r in enumerate(rows[10:250:60])}
    for r in rows:
        if r["id"] in bad:
            r["email"] = bad[r["id"]]
    written = tmp_path / "report.json"
    with pg_rig(tmp_path, amqp, rows, valid=len(rows) - len(bad)) as rig:
        code, report, stderr = rig.migrate("--batch-size", "100", "--report", str(written))
        assert code == 1, stderr
        counts = report["entities"]["contact"]
        assert counts["invalid"] == len(bad)
        assert counts["source"] == len(rows)
        assert counts["created"] == len(rows) - len(bad)
        assert counts["failed"] == counts["mismatched"] == 0
        assert report["verified"] is True

        full = report_of(written)
        listed = {i["source_record_id"]: i for i in full["records"]["invalid"]}
        assert set(listed) == set(bad)
        for sid, item in listed.items():
            assert item["reason"], item
            assert "email" in item["reason"], item
            # the reason names the field, never the customer's value
            assert bad[sid] not in item["reason"]
            assert "john.smith" not in item["reason"]
        assert bad[next(iter(bad))] not in written.read_text()

        target = rig.target.rows()
        assert len(target) == len(rows) - len(bad)
        good = [r for r in rows if r["id"] not in bad]
        assert content(target) == content(good)
        assert not [e for e in emails(target) if "@@" in e]
