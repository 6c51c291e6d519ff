"""``kill -9`` of the file adapter in the middle of ``crmsync migrate`` into a CSV export:
the run finishes, every record created once, no torn or doubled line (router and
adapters as real processes)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.migration_rig import Rig, people
from tests.integration.migration_setup import poll
from tests.integration.test_file_spine import export_as_file, start_old_first

pytestmark = pytest.mark.integration


KILLED = 600
SLOW = ("--batch-size", "50", "--rate", "250")  # ~2.4 s of writes: time to kill mid-way


def test_kill_9_of_the_file_adapter_mid_migration_leaves_no_torn_or_double_record(
    amqp: str, tmp_path: Path
) -> None:
    rig = Rig(tmp_path, amqp)
    folder = tmp_path / "export"
    folder.mkdir()
    path = export_as_file(rig, folder)
    try:
        rig.source.insert(people(KILLED))
        start_old_first(rig, KILLED)
        proc = rig.spawn("migrate", "--from", "old", "--to", "new", "--json", *SLOW)

        def some() -> bool:
            assert proc.poll() is None, f"migrate ended before the kill: {proc.communicate()}"
            return path.exists() and path.read_bytes().count(b"\n") > 100

        poll("the first records in the export", some)
        rig.fleet.kill("new")  # kill -9, wherever its writes are
        assert path.read_bytes().count(b"\n") < KILLED - 200, "too fast to kill mid-way"
        rig.start_adapter("new")
        out, errs = proc.communicate(timeout=120)
        assert proc.returncode == 0, errs
        report = json.loads(out)
        assert report["verified"] is True
        assert report["entities"]["contact"]["created"] == KILLED
        lines = path.read_text().splitlines()
        assert lines[0] == "id,email,first,last"
        assert all(line.count(",") == 3 for line in lines)  # no torn record anywhere
        emails = [line.split(",")[1] for line in lines[1:]]
        assert len(emails) == KILLED and not [e for e, n in Counter(emails).items() if n > 1]
    finally:
        rig.stop()
