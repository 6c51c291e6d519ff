"""Finding hard deletes at scale: per-poll time and peak memory, three ways, one run.

    .venv/bin/python bench/hard_deletes.py                  # 1M rows (a few minutes)
    .venv/bin/python bench/hard_deletes.py --rows 100000    # quick check

One SQLite CRM (the demo ``mktg`` table: integer ids, no ``deleted`` column) is filled
with N rows and N links (as if captured), then copied for each mode; each mode runs in a
fresh process (clean peak RSS) on its own copy, with the same K rows hard-deleted by a
user before it starts:

* ``full`` — the baseline, the scan before issue 10 (reimplemented here): every id of
  the table and every live link loaded, compared, every ``hard_delete_scan_every`` polls.
* ``chunk`` — ``capture.delete_journal = false``: one keyset chunk of links
  (``hard_delete_chunk``) compared per poll, a full round of ceil(N / chunk) polls.
* ``journal`` — the default: the trigger journaled the deletes; a capture poll drains
  the journal in its snapshot. Its first poll handles the K deletes, the rest are idle.

Printed per mode: polls, deletes found, time per poll (mean / max), the polls' own time
until every delete was found and after how many polls (at ``poll_interval`` apart in
production), and the process's peak RSS growth over the polls.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import msgpack  # noqa: E402

from adapters import links  # noqa: E402
from adapters.capture import row_gone  # noqa: E402
from adapters.engine import SyncEngine  # noqa: E402
from adapters.rules import content_hash  # noqa: E402
from adapters.sql import SqlAdapter  # noqa: E402
from router.adapter_config import load_adapter  # noqa: E402
from router.demo.crms import CRMS, DemoDb  # noqa: E402

CRM = CRMS["mktg"]
ENTITY = "contact"


def _build(path: Path, rows: int) -> None:
    """N rows and their N links, written straight through sqlite3 (minutes saved)."""
    DemoDb(CRM, path).close()
    toml = path.with_suffix(".toml")
    toml.write_text(CRM.adapter_toml(path, path.with_suffix(".state"), "amqp://x:1/"))
    config = load_adapter(toml)
    capture = config.capture.model_copy(update={"delete_journal": False})
    SqlAdapter(config.model_copy(update={"capture": capture})).close()  # crmsync_link
    base = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=1)
    clock = msgpack.packb({"mktg": 1})
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO leads (lead_id, email, given_name, family_name, updated) "
            "VALUES (?, ?, 'Ada', 'Lovelace', ?)",
            (
                (
                    i,
                    f"user{i}@example.com",
                    (base + timedelta(milliseconds=i)).isoformat(" ", "microseconds"),
                )
                for i in range(1, rows + 1)
            ),
        )
    with conn:
        conn.executemany(
            "INSERT INTO crmsync_link (record_id, entity, source_record_id, clock, "
            "content_hash, fields, version, deleted, published) "
            "VALUES (?, 'contact', ?, ?, ?, ?, NULL, 0, 1)",
            (
                (str(uuid.uuid4()), str(i), clock, content_hash(f, False), msgpack.packb(f))
                for i in range(1, rows + 1)
                for f in ({"email": f"user{i}@example.com", "first_name": "Ada"},)
            ),
        )
    conn.close()


def _engine(path: Path, journal: bool, chunk: int) -> SyncEngine:
    toml = path.with_suffix(".toml")
    toml.write_text(CRM.adapter_toml(path, path.with_suffix(".state"), "amqp://x:1/"))
    config = load_adapter(toml)
    capture = config.capture.model_copy(
        update={"delete_journal": journal, "hard_delete_chunk": chunk}
    )
    adapter = SqlAdapter(config.model_copy(update={"capture": capture}))
    return SyncEngine(adapter, "mktg", overlap=2.0, hard_delete_chunk=chunk)


def _delete_some(path: Path, rows: int, count: int) -> None:
    step = max(1, rows // count)
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "DELETE FROM leads WHERE lead_id = ?", ((i,) for i in range(step // 2, rows, step))
        )
    conn.close()


def full_scan(engine: SyncEngine) -> int:
    """The scan before issue 10: every id and every live link, compared at once."""
    adapter, found = engine.adapter, 0
    with adapter.transaction() as tx:
        present = adapter.list_ids(tx, ENTITY)
        assert present is not None
        live = links.live_source_ids(tx, ENTITY)
        gone = [sid for sid in live if sid not in present]
        known = links.by_source(tx, ENTITY, gone)
        for sid in gone:
            change = row_gone(known[sid], actor=engine.actor)
            engine.outbox.record(tx, ENTITY, sid, change, datetime.now(UTC))
            found += 1
    return found


def _measure(mode: str, path: Path, rows: int, chunk: int, deletes: int) -> dict[str, Any]:
    engine = _engine(path, journal=mode == "journal", chunk=chunk)
    _delete_some(path, rows, deletes)  # after the trigger is installed (journal mode)
    cursor = {ENTITY: datetime.now(UTC).replace(tzinfo=None)}
    polls = {"full": 3, "chunk": math.ceil(rows / chunk) + 1, "journal": 20}[mode]
    times: list[float] = []
    found, all_found_after, all_found_polls = 0, None, None
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(polls):
        started = time.perf_counter()
        if mode == "full":
            new = full_scan(engine)
        elif mode == "chunk":
            new = engine.scan_hard_deletes()
        else:
            before = len(engine.pending())
            engine.capture(cursor)
            new = len(engine.pending()) - before
        times.append(time.perf_counter() - started)
        found += new
        if all_found_after is None and found >= deletes:
            all_found_after, all_found_polls = sum(times), len(times)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    engine.adapter.close()
    return {
        "mode": mode,
        "polls": polls,
        "found": found,
        "mean_ms": round(sum(times) / len(times) * 1000, 1),
        "max_ms": round(max(times) * 1000, 1),
        "all_found_s": round(all_found_after, 2) if all_found_after is not None else None,
        "all_found_polls": all_found_polls,
        "rss_growth_mb": round((rss_after - rss_before) / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--deletes", type=int, default=10)
    parser.add_argument("--mode", choices=["full", "chunk", "journal"], help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:  # one measurement, in a fresh process (clean RSS), as JSON
        print(json.dumps(_measure(args.mode, args.db, args.rows, args.chunk, args.deletes)))
        return
    with tempfile.TemporaryDirectory(prefix="crmsync-bench-") as tmp:
        base = Path(tmp) / "base.db"
        started = time.perf_counter()
        _build(base, args.rows)
        print(f"built {args.rows} rows and links in {time.perf_counter() - started:.0f} s")
        results = []
        for mode in ("full", "chunk", "journal"):
            copy = Path(tmp) / f"{mode}.db"
            shutil.copy(base, copy)
            out = subprocess.run(
                [
                    *(sys.executable, __file__, "--mode", mode, "--db", str(copy)),
                    *("--rows", str(args.rows), "--chunk", str(args.chunk)),
                    *("--deletes", str(args.deletes)),
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
            copy.unlink()
    print(
        f"hard deletes: {args.rows} rows/links, {args.deletes} rows deleted, "
        f"chunk {args.chunk}, SQLite"
    )
    print(
        f"{'mode':<9}{'polls':>7}{'found':>7}{'ms/poll':>9}{'max ms':>9}{'all found s':>13}"
        f"{'after polls':>13}{'RSS +MB':>9}"
    )
    for r in results:
        print(
            f"{r['mode']:<9}{r['polls']:>7}{r['found']:>7}{r['mean_ms']:>9}{r['max_ms']:>9}"
            f"{r['all_found_s']!s:>13}{r['all_found_polls']!s:>13}{r['rss_growth_mb']:>9}"
        )


if __name__ == "__main__":
    main()
