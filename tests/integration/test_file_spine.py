"""The file adapter in the running system: a CSV export filled by ``crmsync migrate``,
then kept in sync both ways (router and adapters as real processes)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.integration.migration_rig import Rig, people
from tests.integration.migration_setup import hub_records, poll

pytestmark = pytest.mark.integration

N = 300


def export_as_file(rig: Rig, folder: Path) -> Path:
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


def start_old_first(rig: Rig, n: int) -> None:
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
    path = export_as_file(rig, folder)
    try:
        rig.source.insert(people(N))
        start_old_first(rig, N)
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
