"""The file adapter in the running system: a CSV export filled by ``crmsync migrate``,
then kept in sync both ways (router and adapters as real processes)."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.migration_rig import Rig, people
from tests.integration.migration_setup import hub_records, poll

pytestmark = pytest.mark.integration

N = 300


def _export(rig: Rig, folder: Path) -> Path:
    """Make adapter "new" a CSV file (an export) instead of a database."""
    path = folder / "contacts.csv"
    (rig.workdir / "new.toml").write_text(
        f'name = "new"\nkind = "file"\nheartbeat_interval = 1.0\n[broker]\nurl = "{rig.url}"\n'
        f'[state]\npath = "{rig.workdir / "new.state.db"}"\n'
        '[capture]\npoll_interval = 0.2\noverlap = "1s"\n'
        '[retry]\ndelays = ["1s", "2s"]\n'
        f'[entities.contact]\npath = "{path}"\n'
        "[entities.contact.fields]\n"
        'email = "email"\nfirst_name = "first"\nlast_name = "last"\n'
    )
    return path


def _start(rig: Rig, n: int) -> None:
    """The old CRM's records in the hub first, then the export: the migration then
    writes them all (live sync would otherwise deliver some before it, as it should)."""
    rig.start_router()
    rig.start_adapter("old")
    rig.wait(f"{n} records in the hub", lambda: hub_records(rig) >= n)
    rig.start_adapter("new")


def _records(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as f:
        return {row["email"]: row for row in csv.DictReader(f)}


def test_an_export_is_migrated_then_synced_both_ways(amqp: str, tmp_path: Path) -> None:
    rig = Rig(tmp_path, amqp)
    folder = tmp_path / "export"
    folder.mkdir()
    path = _export(rig, folder)
    try:
        rig.source.insert(people(N))
        _start(rig, N)
        code, report, stderr = rig.migrate("--batch-size", "100")
        assert code == 0, stderr
        assert report["verified"] is True
        assert report["entities"]["contact"]["created"] == N
        exported = _records(path)
        assert len(exported) == N and path.read_text().count("\n") == N + 1  # + header
        assert exported["person7@example.com"]["last"] == "Last7"

        rig.source.update("p0000007", last_name="Changed")  # a user of the old CRM
        poll(
            "the edit in the export",
            lambda: _records(path)["person7@example.com"]["last"] == "Changed",
        )

        # An export job replaces the file with one record edited: the old CRM gets it.
        rows = path.read_text().replace(",First9,Last9\n", ",First9,FromFile\n")
        (folder / "next.csv").write_text(rows)
        (folder / "next.csv").replace(path)

        def in_source() -> bool:
            return any(r["last_name"] == "FromFile" for r in rig.source.rows())

        poll("the file's edit in the old CRM", in_source)
        assert len(_records(path)) == N  # no duplicate, nothing lost
    finally:
        rig.stop()


KILLED = 600
SLOW = ("--batch-size", "50", "--rate", "250")  # ~2.4 s of writes: time to kill mid-way


def test_kill_9_of_the_file_adapter_mid_migration_leaves_no_torn_or_double_record(
    amqp: str, tmp_path: Path
) -> None:
    rig = Rig(tmp_path, amqp)
    folder = tmp_path / "export"
    folder.mkdir()
    path = _export(rig, folder)
    try:
        rig.source.insert(people(KILLED))
        _start(rig, KILLED)
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
