"""Anti-entropy (issue 11, item 8): with ``[reconcile] every = "2s"`` the router finds
and repairs drift on its own, without any command.

The target CRM (PostgreSQL) joins after the hub already holds every source record: the
router backfills it (``missing``). Then its database is changed behind the hub's back (a
value changed without touching ``updated_at``, a row deleted with the triggers off), and
within a few rounds both are repaired; the metrics and the router's log say so, with ids
and never the out-of-band value.
"""

from __future__ import annotations

import re
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.migration_rig import Rig
from tests.integration.migration_setup import content, pg_rig, poll
from tests.integration.test_reconcile import delete_behind_the_hub, record_id, target_id

pytestmark = pytest.mark.integration

N = 60
SILENT = "Silent-Out-Of-Band"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metrics(port: int) -> dict[str, float]:
    """``name{labels}`` -> value, the anti-entropy lines of the router's endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith("crmsync_antientropy_"):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


def repairs_logged(rig: Rig) -> list[str]:
    log = (rig.workdir / "logs" / "router.log").read_text()
    return [line for line in log.splitlines() if 'event="repair sent"' in line]


def test_the_router_backfills_a_late_crm_and_repairs_silent_drift_on_its_own(
    amqp: str, tmp_path: Path
) -> None:
    port = free_port()
    extra = f'[metrics]\nport = {port}\n[reconcile]\nevery = "2s"\nrate = 2000\n'
    started = time.monotonic()
    with pg_rig(tmp_path, amqp, N, router_extra=extra) as rig:
        # The target joined late and holds nothing: anti-entropy's backfill.
        poll("the late CRM backfilled", lambda: rig.target.count() == N, timeout=20)
        poll(
            "the backfill written", lambda: content(rig.target.rows()) == content(rig.source.rows())
        )
        # Move the target's capture window past the backfilled rows (test_reconcile's
        # migrated(): a silent change inside it would be captured as a live edit).
        time.sleep(1.5)
        later = target_id(rig, f"person{N - 1}@example.com")
        rig.target.update(later, last_name="Later")
        poll(
            "a later edit in the source",
            lambda: any(r["last_name"] == "Later" for r in rig.source.rows()),
        )

        changed = target_id(rig, "person5@example.com")
        deleted = target_id(rig, "person9@example.com")
        changed_rid, deleted_rid = record_id(rig, changed), record_id(rig, deleted)
        rig.target.update(changed, touch=False, first_name=SILENT)
        delete_behind_the_hub(rig, deleted)
        assert rig.target.count() == N - 1

        def repaired() -> bool:
            rows = rig.target.rows()
            return len(rows) == N and content(rows) == content(rig.source.rows())

        poll("both drifts repaired with no command", repaired, timeout=20)
        assert (
            next(r for r in rig.source.rows() if r["email"] == "person5@example.com")["first_name"]
            == "First5"
        )  # the hub's version won; the out-of-band value reached no one

        lines = repairs_logged(rig)
        mine = [line for line in lines if "cause=antientropy" in line and "targets=new" in line]
        assert any(f"record_id={changed_rid}" in line and "kind=different" in line for line in mine)
        assert any(f"record_id={deleted_rid}" in line and "kind=missing" in line for line in mine)
        assert len([line for line in mine if "kind=missing" in line]) >= N + 1  # backfill too
        assert SILENT not in (rig.workdir / "logs" / "router.log").read_text()

        seen = metrics(port)
        assert seen['crmsync_antientropy_drift_total{adapter="new",kind="different"}'] >= 1
        assert seen['crmsync_antientropy_drift_total{adapter="new",kind="missing"}'] >= N + 1
        assert seen['crmsync_antientropy_repaired_total{adapter="new"}'] >= N + 2
        assert seen['crmsync_antientropy_compared_total{adapter="old"}'] >= N
        assert not any(re.search(r'adapter="old",kind=', name) for name in seen)  # no drift
        assert seen["crmsync_antientropy_last_round_timestamp_seconds"] > time.time() - 10
    assert time.monotonic() - started < 40
