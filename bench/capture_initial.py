"""Initial capture of a large table: rows/s, and how long sink writes wait meanwhile.

    .venv/bin/python bench/capture_initial.py                 # 100k rows, both modes
    .venv/bin/python bench/capture_initial.py --rows 20000    # quick check

Two modes, each in its own process on its own fresh SQLite CRM (the demo ``legacy``
table, rows stamped in the past so the capture limit never holds them back), measured
in the same run:

* ``paged`` — what the adapter runtime does now (:class:`adapters.polling.CapturePass`):
  one page per trip to the adapter's single worker thread, the outbox published
  (here: confirmed at once) and the cursor saved after each page.
* ``one-pass`` — the baseline, the scheduling before issue 10: the whole table in one
  job on the worker thread (``SyncEngine.capture``), then the outbox.

Meanwhile a sink submits one delivery (a new record, inserted) to the same worker every
20 ms, as the runtime's sink loop would, and records the time from submit to done.
Printed per mode: rows/s, sink-write latency p50/p99/max, and the process's peak RSS
growth over the capture (memory must not grow with the table).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from adapters.engine import SyncEngine  # noqa: E402
from adapters.polling import CapturePass  # noqa: E402
from adapters.sql import SqlAdapter  # noqa: E402
from router.adapter_config import load_adapter  # noqa: E402
from router.demo.crms import CRMS, DemoDb  # noqa: E402
from router.events import ChangeEvent, new_event_id  # noqa: E402

SINK_EVERY = 0.02


def _fill(db: DemoDb, rows: int) -> None:
    base = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=1)
    chunk = 5000
    with db.engine.begin() as conn:
        for start in range(0, rows, chunk):
            conn.execute(
                db.table.insert(),
                [
                    {
                        "email_addr": f"user{i}@example.com",
                        "fname": "Ada",
                        "lname": "Lovelace",
                        "phone": f"+1-555-{i:07d}",
                        "updated_at": base + timedelta(milliseconds=i),
                        "is_deleted": False,
                    }
                    for i in range(start, min(rows, start + chunk))
                ],
            )


def _delivery(i: int) -> ChangeEvent:
    return ChangeEvent(
        event_id=new_event_id(),
        source="sales",
        actor="sales",
        entity="contact",
        record_id=str(uuid.uuid4()),
        source_record_id=f"S-{i}",
        op="upsert",
        clock={"sales": 1},
        fields={"email": f"sink{i}@example.com", "first_name": "Sink"},
        changed=["email", "first_name"],
        occurred_at=datetime.now(UTC),
    )


async def _measure(mode: str, rows: int, page_size: int, workdir: Path) -> dict[str, Any]:
    crm = CRMS["legacy"]
    db = DemoDb(crm, workdir / "legacy.db")
    _fill(db, rows)
    toml = workdir / "legacy.toml"
    toml.write_text(crm.adapter_toml(workdir / "legacy.db", workdir / "s.db", "amqp://x:1/"))
    adapter = SqlAdapter(load_adapter(toml), where=str(toml))
    engine = SyncEngine(adapter, "legacy", overlap=2.0, page_size=page_size)
    worker = ThreadPoolExecutor(max_workers=1)
    loop = asyncio.get_running_loop()

    async def on_worker(fn: Any, *args: Any) -> Any:
        return await loop.run_in_executor(worker, fn, *args)

    async def publish() -> None:
        while owed := await on_worker(engine.pending):
            await on_worker(engine.mark_published, owed)

    async def save(_entity: str, _position: Any) -> None:
        return None

    latencies: list[float] = []
    done = asyncio.Event()

    async def sink() -> None:
        i = 0
        while not done.is_set():
            started = time.perf_counter()
            await on_worker(engine.apply, _delivery(i))
            latencies.append(time.perf_counter() - started)
            i += 1
            await asyncio.sleep(SINK_EVERY)

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sink_task = asyncio.create_task(sink())
    started = time.perf_counter()
    if mode == "paged":
        await CapturePass(engine, on_worker, publish, save).run({})
    else:
        await on_worker(engine.capture, {})
        await publish()
    elapsed = time.perf_counter() - started
    done.set()
    await sink_task
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    worker.shutdown()
    adapter.close()
    db.close()
    ordered = sorted(latencies)
    return {
        "mode": mode,
        "rows": rows,
        "seconds": round(elapsed, 2),
        "rows_per_s": round(rows / elapsed),
        "sink_writes": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1 if len(ordered) > 1 else 0] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
        "rss_growth_mb": round((rss_after - rss_before) / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument("--mode", choices=["paged", "one-pass"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:  # one measurement, in a fresh process (clean RSS), as JSON
        with tempfile.TemporaryDirectory(prefix="crmsync-bench-") as tmp:
            result = asyncio.run(_measure(args.mode, args.rows, args.page_size, Path(tmp)))
        print(json.dumps(result))
        return
    results = []
    for mode in ("paged", "one-pass"):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--mode",
                mode,
                "--rows",
                str(args.rows),
                "--page-size",
                str(args.page_size),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    print(
        f"initial capture of {args.rows} rows, page size {args.page_size}, "
        f"a sink write every {SINK_EVERY * 1000:.0f} ms"
    )
    print(
        f"{'mode':<10}{'rows/s':>9}{'s':>8}{'sink writes':>13}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'max ms':>9}{'RSS +MB':>9}"
    )
    for r in results:
        print(
            f"{r['mode']:<10}{r['rows_per_s']:>9}{r['seconds']:>8}{r['sink_writes']:>13}"
            f"{r['p50_ms']:>9}{r['p99_ms']:>9}{r['max_ms']:>9}{r['rss_growth_mb']:>9}"
        )


if __name__ == "__main__":
    main()
