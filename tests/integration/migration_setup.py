"""The start every migration and reconcile test shares: the rig's two CRMs (the target
on this test's own PostgreSQL schema), the source filled, the router and both adapters up.

The target adapter starts only once the hub holds every valid source row (the source's
initial capture), so nothing reaches the target before ``crmsync migrate`` does: the
migration's counts are then exact, not a race with the live sync.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.integration.migration_rig import Rig, people
from tests.integration.test_sql_servers import private_database


def hub_records(rig: Rig) -> int:
    return int(rig.status()["router"]["store"]["records"])


@contextmanager
def pg_rig(
    workdir: Path,
    url: str,
    rows: list[dict[str, Any]] | int,
    start_target: bool = True,
    valid: int | None = None,
    match: list[str] | None = None,
    router_extra: str = "",
) -> Iterator[Rig]:
    """A rig whose source holds ``rows`` (or that many people), target on PostgreSQL.

    ``valid``: how many of the rows the hub accepts from the source's initial capture
    (all of them, unless some break the canonical model or share a ``match`` key);
    ``router_extra``: TOML appended to the router's config (e.g. a ``[reconcile]`` table)."""
    batch = people(rows) if isinstance(rows, int) else rows
    with private_database("postgresql") as target_url:
        rig = Rig(workdir, url, target_url=target_url, match=match, router_extra=router_extra)
        try:
            rig.source.insert(batch)
            rig.start_router()
            rig.start_adapter("old")
            expected = len(batch) if valid is None else valid
            rig.wait(f"{expected} records in the hub", lambda: hub_records(rig) >= expected)
            if start_target:
                rig.start_adapter("new")
            yield rig
        finally:
            rig.stop()


def poll(what: str, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def one_line(stderr: str) -> str:
    """The command's error: exactly one line, crmsync's own (no traceback)."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got: {stderr!r}"
    assert lines[0].startswith("crmsync: error: "), lines[0]
    assert "Traceback" not in stderr
    return lines[0]


def emails(rows: list[dict[str, Any]]) -> list[str]:
    return [str(r["email"]) for r in rows]


def content(rows: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """Rows by email: what a person sees in each CRM (ids differ between CRMs)."""
    return {str(r["email"]): (r["first_name"], r["last_name"]) for r in rows}


def report_of(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data
