"""``crmsync reconcile`` (issue 11): drift that capture cannot see, found and repaired.

After a migration SQLite -> PostgreSQL, the target's database is changed behind the
hub's back: a value changed without touching ``updated_at`` and a row deleted with the
triggers off (``session_replication_role = replica``, so the delete journal never hears
of it). Reconcile must find both by record id, and ``--repair`` must make the CRMs equal
again through the hub.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.integration.migration_rig import Rig
from tests.integration.migration_setup import content, pg_rig, poll

pytestmark = pytest.mark.integration

N = 200


def reconcile(rig: Rig, *extra: str) -> tuple[int, dict[str, Any], str]:
    done = rig.command("reconcile", "old", "new", "--json", *extra)
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else {}, done.stderr


def migrated(rig: Rig) -> None:
    """Migrated, and the target's capture moved past the migrated rows.

    Capture re-reads the rows stamped within its overlap (1s in the rig) of the newest
    ``updated_at`` it saw, so a change made without touching ``updated_at`` to one of
    the newest rows is still seen and synced live: that is not drift. A later edit (a
    user's, synced to the source) moves that window past every migrated row; only
    reconcile can find a silent change to them then."""
    code, report, stderr = rig.migrate()
    assert code == 0 and report["verified"], stderr
    time.sleep(1.5)
    last = f"p{N - 1:07d}"
    rig.target.update(target_id(rig, f"person{N - 1}@example.com"), last_name="Later")
    poll("a later edit in the source", lambda: source_row(rig, last)["last_name"] == "Later")


def source_row(rig: Rig, row_id: str) -> dict[str, Any]:
    return next(r for r in rig.source.rows() if r["id"] == row_id)


def target_id(rig: Rig, email: str) -> str:
    found = [r["id"] for r in rig.target.rows() if r["email"] == email]
    assert len(found) == 1, found
    return str(found[0])


def record_id(rig: Rig, target_row: str) -> str:
    """The hub's record id of a target row (through the target adapter's id map)."""
    with rig.target.engine.connect() as conn:
        found = conn.execute(
            sa.text("SELECT record_id FROM crmsync_link WHERE source_record_id = :sid"),
            {"sid": target_row},
        ).scalar_one()
    return str(found)


def delete_behind_the_hub(rig: Rig, row_id: str) -> None:
    """A DELETE no trigger sees (a restore, a bulk tool): capture cannot know of it."""
    with rig.target.engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        conn.execute(rig.target.table.delete().where(rig.target.table.c.id == row_id))


def test_reconcile_finds_a_silent_change_and_a_silent_delete_and_repairs_both(
    amqp: str, tmp_path: Path
) -> None:
    with pg_rig(tmp_path, amqp, N) as rig:
        migrated(rig)
        changed = target_id(rig, "person5@example.com")
        deleted = target_id(rig, "person9@example.com")
        changed_rid, deleted_rid = record_id(rig, changed), record_id(rig, deleted)
        rig.target.update(changed, touch=False, first_name="X")
        delete_behind_the_hub(rig, deleted)
        assert rig.target.count() == N - 1

        code, found, stderr = reconcile(rig)
        assert code == 1, stderr
        assert found["equal"] is False
        counts = found["entities"]["contact"]
        assert (counts["different"], counts["missing_in_b"], counts["missing_in_a"]) == (1, 1, 0)
        assert counts["ids"]["different"] == [changed_rid]
        assert counts["ids"]["missing_in_b"] == [deleted_rid]

        code, repaired, stderr = reconcile(rig, "--repair")
        assert code == 0, stderr
        assert repaired["equal"] is True
        assert repaired["entities"]["contact"]["repaired"] >= 2

        code, again, stderr = reconcile(rig)
        assert code == 0, stderr
        assert again["equal"] is True
        assert again["entities"]["contact"]["compared"] == N
        target, source = rig.target.rows(), rig.source.rows()
        assert len(target) == len(source) == N
        assert content(target) == content(source)
        # The hub's version won: the out-of-band value is gone from both CRMs.
        assert source_row(rig, "p0000005")["first_name"] == "First5"


def test_repair_prefer_new_makes_the_targets_value_win_everywhere(
    amqp: str, tmp_path: Path
) -> None:
    with pg_rig(tmp_path, amqp, N) as rig:
        migrated(rig)
        changed = target_id(rig, "person4@example.com")
        rig.target.update(changed, touch=False, first_name="Preferred")
        code, found, stderr = reconcile(rig)
        assert code == 1, stderr
        assert found["entities"]["contact"]["ids"] == {"different": [record_id(rig, changed)]}

        code, repaired, stderr = reconcile(rig, "--repair", "--prefer", "new")
        assert code == 0, stderr
        assert repaired["equal"] is True

        poll(
            "the target's value in the source",
            lambda: source_row(rig, "p0000004")["first_name"] == "Preferred",
        )
        mine = next(r for r in rig.target.rows() if r["id"] == changed)
        assert mine["first_name"] == "Preferred"

        code, _again, stderr = reconcile(rig)
        assert code == 0, stderr
        assert content(rig.target.rows()) == content(rig.source.rows())
