"""Bulk migration through the hub beside a direct copy of the same rows, in one run.

    .venv/bin/python bench/migration.py                  # 100,000 contacts
    .venv/bin/python bench/migration.py --rows 10000     # quick check (and the memory baseline)

The source is a SQLite CRM, the target a PostgreSQL CRM (a schema of its own in the
local ``test`` database). The source adapter's initial capture runs first (the hub then
holds every record, as after the old CRM ran with crmsync for a while); then the target
adapter starts, empty, and ``crmsync migrate --from old --to new`` runs. Its wall time,
from start to a verified report, is the figure. The baseline reads the same rows with
SQLAlchemy and inserts them into another table of the same schema with ``executemany``
(1,000 rows per transaction), no hub. Printed: records/s of both, their ratio, and the
peak RSS of every crmsync process (router, both adapters, the command).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from tests.broker import amqp_url, create_vhost, delete_vhost  # noqa: E402
from tests.integration.migration_rig import Rig, contacts_table, people  # noqa: E402
from tests.integration.test_sql_servers import private_database  # noqa: E402


def _peak_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Peaks:
    """Peak RSS of processes, sampled (VmHWM is gone once a process exits)."""

    def __init__(self) -> None:
        self.pids: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.sample()

    def sample(self) -> None:
        for name, pid in list(self.pids.items()):
            self.peak[name] = max(self.peak.get(name, 0), _peak_kib(pid))

    def stop(self) -> None:
        self.sample()
        self._stop.set()


def _fill(rig: Rig, rows: int) -> None:
    stamp = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=rows + 86400)
    batch = people(rows)
    for i, row in enumerate(batch):
        # Distinct stamps, as an application writes them: capture's cursor moves on.
        row["updated_at"] = stamp + timedelta(seconds=i)
    rig.source.insert(batch)


def _wait_captured(rig: Rig, rows: int) -> float:
    started = time.monotonic()
    rig.wait(
        f"{rows} records captured",
        lambda: rig.status()["router"].get("verdicts", {}).get("accepted", 0) >= rows,
        timeout=3600,
    )
    return time.monotonic() - started


def direct_copy(source_url: str, target_url: str) -> tuple[int, float]:
    meta = sa.MetaData()
    contacts_table(meta)
    copy = contacts_table(sa.MetaData()).to_metadata(sa.MetaData(), name="contacts_copy")
    src, dst = sa.create_engine(source_url), sa.create_engine(target_url)
    copy.create(dst)
    started = time.monotonic()
    n = 0
    with src.connect() as read:
        result = read.execution_options(stream_results=True).execute(
            sa.select(meta.tables["contacts"]).order_by(sa.text("id"))
        )
        for part in result.partitions(1000):
            with dst.begin() as write:
                write.execute(copy.insert(), [dict(r._mapping) for r in part])
            n += len(part)
    took = time.monotonic() - started
    src.dispose()
    dst.dispose()
    return n, took


def run(rows: int, batch_size: int) -> dict[str, Any]:
    vhost = create_vhost()
    workdir = Path(tempfile.mkdtemp(prefix="crmsync-bench-migration-"))
    try:
        with private_database("postgresql") as target_url:
            rig = Rig(workdir, amqp_url(vhost), target_url=target_url)
            peaks = Peaks()
            try:
                _fill(rig, rows)
                rig.start_router()
                rig.start_adapter("old")
                capture = _wait_captured(rig, rows)
                rig.start_adapter("new")
                # What the initial capture (the live path) left as the peak, apart from
                # what the migration adds to it.
                before = {n: _peak_kib(p.pid) for n, p in rig.fleet.procs.items() if n != "new"}
                for name, proc in rig.fleet.procs.items():
                    peaks.pids[name] = proc.pid
                started = time.monotonic()
                command = rig.spawn(
                    "migrate", "--from", "old", "--to", "new", "--json",
                    "--batch-size", str(batch_size), "--report", str(workdir / "report.json"),
                )  # fmt: skip
                peaks.pids["migrate"] = command.pid
                stdout, stderr = command.communicate(timeout=7200)
                took = time.monotonic() - started
                peaks.stop()
                if command.returncode != 0:
                    raise SystemExit(f"migrate exited {command.returncode}: {stderr[-2000:]}")
                report = json.loads(stdout)
                phases = json.loads((workdir / "report.json").read_text())["phase_seconds"]
                in_target = rig.target.count()
            finally:
                rig.stop()
            copied, copy_took = direct_copy(rig.source.url, target_url)
    finally:
        delete_vhost(vhost)
    return {
        "rows": rows,
        "initial_capture_s": round(capture, 1),
        "hub_s": round(took, 1),
        "hub_per_s": round(rows / took),
        "hub_phases_s": phases,
        "direct_s": round(copy_took, 1),
        "direct_per_s": round(copied / copy_took),
        "ratio": round((rows / took) / (copied / copy_took), 3),
        "verified": report["verified"],
        "in_target": in_target,
        "peak_rss_mib": {k: round(v / 1024, 1) for k, v in sorted(peaks.peak.items())},
        "peak_rss_before_migrate_mib": {k: round(v / 1024, 1) for k, v in sorted(before.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    result = run(args.rows, args.batch_size)
    print(json.dumps(result, indent=2))
    print(
        f"\nhub {result['hub_per_s']} records/s vs direct copy {result['direct_per_s']} records/s "
        f"(ratio {result['ratio']}), peak RSS MiB {result['peak_rss_mib']}"
    )


if __name__ == "__main__":
    main()
