"""``crmsync conflicts`` as text. Each function takes the router's answer as it came
(what ``--json`` prints) and a console."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from router.dlq_view import age_text


def value_text(value: Any) -> str:
    return "(none)" if value is None else json.dumps(value, ensure_ascii=False)


def render_list(found: Sequence[dict[str, Any]], out: Console) -> None:
    """The parked conflicts, one row each."""
    if not found:
        out.print("no parked conflicts")
        return
    table = Table("id", "record", "entity", "sources", "fields", "held", "age")
    for c in found:
        table.add_row(
            c["id"],
            c["record_id"],
            c["entity"],
            ", ".join(c["sources"]),
            ", ".join(c["fields"]),
            str(c["held"]),
            age_text(c["age_seconds"]),
        )
    out.print(table)
    out.print(f"{len(found)} parked; see one with: crmsync conflicts show ID", highlight=False)


def render_conflict(c: dict[str, Any], out: Console) -> None:
    """One conflict: its sides, then field by field what each side holds and changed."""
    state = (
        f"[bold red]open[/] for {age_text(c['age_seconds'])}, {c['held']} held event(s)"
        if c["status"] == "open"
        else f"resolved by {c['resolved_by']} at {c['resolved_at']}"
    )
    out.print(f"conflict {c['id']}: {c['entity']} {c['record_id']}, {state}", highlight=False)
    for side in c["sides"]:
        kind = "deleted" if side["deleted"] else "edited"
        when = side["occurred_at"][:19].replace("T", " ")
        clock = ", ".join(f"{k} {v}" for k, v in sorted(side["clock"].items()))
        out.print(
            f"  {side['label']}: {kind} at {when} UTC by {side['actor']} (clock {clock})",
            highlight=False,
        )
    labels = [side["label"] for side in c["sides"]]
    table = Table("field", "stored", *labels, "decided by")
    for f in c["field_values"]:
        cells = []
        for label in labels:
            if label not in f["values"]:
                cells.append("[dim]-[/]")
                continue
            # CRM values are data, not markup: a '[b]' in a name must print as typed.
            text = escape(value_text(f["values"][label]))
            if label in f["changed_by"]:
                author = f["set_by"].get(label, label)
                text = f"[bold yellow]{text} *[/]" + (f" ({author})" if author != label else "")
            cells.append(text)
        how = "[bold red]you (manual)[/]" if f["undecided"] else f["policy"]
        table.add_row(f["name"], escape(value_text(f["base"])), *cells, how)
    out.print(table)
    out.print(
        "* = an edit in play: made on that side, or carried there from the CRM in "
        "brackets, and replaced by no other side",
        highlight=False,
    )
    if c["status"] == "open":
        out.print(
            f"decide with: crmsync conflicts resolve {c['id']} --take SOURCE "
            "(or --field NAME=SOURCE, --value NAME=VALUE)",
            highlight=False,
        )


def render_history(record_id: str, found: Sequence[dict[str, Any]], out: Console) -> None:
    """Every conflict of one record: who settled it, what each field kept and lost."""
    if not found:
        out.print(f"record {record_id} never had a conflict", highlight=False)
        return
    for c in found:
        settled = c["settlement"]
        head = f"{c['opened_at']}  {c['id']}  {', '.join(c['sources'])}: " + (
            f"resolved by {settled['by']}" if settled else "[bold red]open[/] (parked)"
        )
        out.print(head, highlight=False)
        for name, how in sorted((settled or {}).get("fields", {}).items()):
            lost = "; ".join(f"{s} {value_text(v)}" for s, v in how["losing"]) or "nothing"
            out.print(
                f"    {name}: {how['policy']} kept {value_text(how['value'])} ({how['source']}), "
                f"lost: {lost}",
                highlight=False,
                markup=False,
            )
