"""Issue 4 acceptance, end to end: writes a CRM refused wait in its DLQ; once the cause
is fixed, one replay delivers each exactly once, and a replayed version that has been
superseded meanwhile leaves the newer one in place."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from router import topology
from tests.broker import queue_depth
from tests.integration.spine import Spine

pytestmark = pytest.mark.integration

BLOCKED = "@blocked.example"
COLUMNS = (
    "person_id VARCHAR(64) PRIMARY KEY, mail VARCHAR(255), first VARCHAR(255), "
    "last VARCHAR(255), mobile VARCHAR(255), modified DATETIME NOT NULL, notes VARCHAR(255), "
    "deleted_flag BOOLEAN NOT NULL"
)


def _crmsync(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router.cli", *args],
        env={**os.environ, "CRMSYNC_AMQP_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_replay_after_the_fix_delivers_each_parked_write_once(
    amqp: str, vhost: str, tmp_path: Path
) -> None:
    with sqlite3.connect(tmp_path / "sales.db") as db:
        db.execute(
            f"CREATE TABLE people ({COLUMNS}, "
            f"CONSTRAINT mail_not_blocked CHECK (mail NOT LIKE '%{BLOCKED}'))"
        )
    spine = Spine(tmp_path, amqp)
    try:
        spine.start()
        spine.dbs["legacy"].insert_contacts(20)
        spine.wait("seeded", lambda: spine.dbs["sales"].count() == 20)

        for i in range(5):
            spine.dbs["legacy"].update_by_email(f"user{i}@example.com", email=f"user{i}{BLOCKED}")
        spine.wait("5 parked writes", lambda: queue_depth(vhost, topology.dlq_queue("sales")) == 5)

        # user0 is edited again meanwhile, to an address sales accepts: its parked version
        # is now superseded
        spine.dbs["legacy"].update_by_email(
            f"user0{BLOCKED}", email="user0@example.com", first_name="Newer"
        )
        spine.wait(
            "the newer version in sales",
            lambda: (
                spine.dbs["sales"].contacts().get("user0@example.com", {}).get("first_name")
                == "Newer"
            ),
        )

        listed = _crmsync(amqp, "dlq", "list", "--adapter", "sales", "--json")
        assert listed.returncode == 0, listed.stderr
        assert _crmsync(amqp, "dlq", "list", "--adapter", "sales", "--json").stdout == listed.stdout

        # the fix: sales drops the constraint (SQLite rebuilds the table to do that)
        with sqlite3.connect(tmp_path / "sales.db", isolation_level=None) as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute(f"CREATE TABLE people_new ({COLUMNS})")
            db.execute("INSERT INTO people_new SELECT * FROM people")
            db.execute("DROP TABLE people")
            db.execute("ALTER TABLE people_new RENAME TO people")
            db.execute("COMMIT")

        replay = _crmsync(amqp, "dlq", "replay", "--adapter", "sales", "--all")
        assert replay.returncode == 0, replay.stdout + replay.stderr
        spine.wait("the DLQ emptied", lambda: queue_depth(vhost, topology.dlq_queue("sales")) == 0)
        spine.wait(
            "the replayed writes in sales",
            lambda: sum(e.endswith(BLOCKED) for e in spine.dbs["sales"].contacts()) == 4,
        )
        spine.wait_quiet()

        sales = spine.dbs["sales"].contacts()
        assert {e for e in sales if e.endswith(BLOCKED)} == {
            f"user{i}{BLOCKED}" for i in (1, 2, 3, 4)
        }
        # the superseded version did not overwrite the newer one
        assert sales["user0@example.com"]["first_name"] == "Newer"
        assert f"user0{BLOCKED}" not in sales
        with spine.dbs["sales"].engine.connect() as conn:
            assert len(conn.execute(spine.dbs["sales"].table.select()).all()) == 20  # once each
        assert queue_depth(vhost, topology.dlq_queue("sales")) == 0
    finally:
        codes = spine.stop()
    assert all(c == 0 for c in codes.values()), codes
