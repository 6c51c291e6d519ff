"""``crmsync identity`` as text: the router's answer as it came (what ``--json`` prints)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from router.dlq_view import age_text


def render_list(found: Sequence[dict[str, Any]], out: Console) -> None:
    """One row per parked event: ids and names only (the key's value is customer data)."""
    if not found:
        out.print("no parked identities")
        return
    now = time.time()
    table = Table("event", "record", "entity", "source", "source id", "reason", "candidates", "age")
    for p in found:
        table.add_row(
            p["event_id"],
            p["record_id"],
            p["entity"],
            p["source"],
            p["source_record_id"],
            p["reason"],
            "\n".join(p["candidates"]),
            age_text(max(0.0, now - float(p["parked_at"]))),
        )
    out.print(table)
    out.print(
        f"{len(found)} parked; decide with: crmsync identity resolve EVENT_ID "
        "--link RECORD_ID | --new | --discard",
        highlight=False,
    )
