"""The file adapter at N records (default 100,000): what indexing, paging, appending and
rewriting cost. No broker: the adapter's methods are called as the SDK calls them.

    .venv/bin/python bench/file_adapter.py [--records N] [--format csv|jsonl]

Prints seconds and records/s per phase, and the Python heap's peak while indexing
(tracemalloc) beside the file's size: indexing streams, so the peak stays flat.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

from adapters.file import FileAdapter
from router.adapter_config import AdapterConfig
from router.events import Scalar

FIELDS = {"email": "email", "first_name": "first", "last_name": "last", "phone": "phone"}


def _config(folder: Path, name: str, fmt: str) -> AdapterConfig:
    return AdapterConfig.model_validate(
        {
            "name": name,
            "kind": "file",
            "state": {"path": str(folder / f"{name}.state.db")},
            "entities": {"contact": {"path": str(folder / f"{name}.{fmt}"), "fields": FIELDS}},
        }
    )


def _fields(i: int) -> dict[str, Scalar]:
    return {"email": f"p{i}@example.org", "first_name": "Pat", "last_name": f"N{i}", "phone": None}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    args = parser.parse_args()
    n, fmt = args.records, args.format
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        target = FileAdapter(_config(folder, "target", fmt))
        started = time.perf_counter()
        for start in range(0, n, 500):  # a migration's batches into an empty export
            with target.transaction() as tx:
                items = [(f"r{i:08d}", _fields(i)) for i in range(start, min(n, start + 500))]
                target.insert_many(tx, "contact", items)
        append = time.perf_counter() - started
        path = folder / f"target.{fmt}"
        print(f"append {n} records in batches of 500: {append:.2f}s ({n / append:,.0f}/s)")

        started = time.perf_counter()
        with target.transaction() as tx:
            target.write_record(tx, "contact", "r00000007", "r00000007", {"last_name": "X"}, None)
        print(
            f"one update (an atomic rewrite of {path.stat().st_size / 1e6:.1f} MB): "
            f"{time.perf_counter() - started:.2f}s"
        )

        size = path.stat().st_size / 1e6
        for name in ("traced", "source"):  # the second, untraced, is timed and paged
            (folder / f"{name}.{fmt}").write_bytes(path.read_bytes())
            traced = name == "traced"
            if traced:
                tracemalloc.start()
            started = time.perf_counter()
            source = FileAdapter(_config(folder, name, fmt))  # it indexes the file
            index = time.perf_counter() - started
            if traced:
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
                print(f"indexing: Python heap peak {peak / 1e6:.1f} MB for a {size:.1f} MB file")
                source.close()
        print(f"index {n} records: {index:.2f}s ({n / index:,.0f}/s)")
        started, seen, after = time.perf_counter(), 0, None
        with source.transaction() as tx:
            while page := source.read_page(tx, "contact", after, 500):
                seen += len(page)
                after = page[-1].source_record_id
        pages = time.perf_counter() - started
        print(f"read_page through {seen} records by 500: {pages:.2f}s ({seen / pages:,.0f}/s)")

        started = time.perf_counter()
        with source.transaction() as tx:
            quiet = source.read_changes(tx, "contact", source.horizon(tx, "contact").now, None, 500)
        print(
            f"a poll of the unchanged file: {len(quiet)} records read, "
            f"{(time.perf_counter() - started) * 1000:.1f} ms"
        )
        target.close()
        source.close()


if __name__ == "__main__":
    main()
