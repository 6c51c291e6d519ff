"""``crmsync status`` as text: a verdict line, the adapters, the queues."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from router.dlq_view import age_text

_STATE = {"alive": "[green]yes[/]", "degraded": "[yellow]degraded[/]", "down": "[red]no[/]"}


def _capture_text(capture: dict[str, Any] | None) -> str:
    """The capture column: failing passes (with the error's type) and skipped rows."""
    if not capture:
        return ""
    parts = []
    if capture.get("failing"):
        parts.append(f"[red]failing x{capture['failing']}[/] ({capture.get('error') or '?'})")
    if capture.get("bad_rows"):
        parts.append(f"{capture['bad_rows']} bad row(s) skipped (see its log)")
    parts = parts or ["ok"]
    if capture.get("push") == "active":
        parts.append("push")
    elif capture.get("push") == "polling":
        parts.append("[yellow]push down, polling[/]")
    return "; ".join(parts)


def render_status(data: dict[str, Any], out: Console) -> None:
    """``data`` is :func:`router.status.run_status`'s answer (what ``--json`` prints)."""
    r = data["router"]
    if r["alive"]:
        verdicts = (
            ", ".join(f"{k} {v}" for k, v in sorted(r["verdicts"].items())) or "no events yet"
        )
        out.print(
            f"[bold green]router up[/] (actor {r['hub_actor']}, {r['store']['records']} records; "
            f"{verdicts})"
        )
        if r.get("active_router"):
            out.print(f"active router: {r['active_router']}")
        parked = r["store"].get("conflicts_open", 0)
        if parked:
            out.print(
                f"[bold red]{parked} conflict(s) parked for an operator[/]: crmsync conflicts list"
            )
        identities = r["store"].get("identities_parked", 0)
        if identities:
            out.print(
                f"[bold red]{identities} record(s) parked by identity matching[/]: "
                "crmsync identity list"
            )
    else:
        out.print("[bold red]router not answering[/] (is 'crmsync router' running?)")
    table = Table("adapter", "actor", "entities", "alive", "last heartbeat", "capture")
    for a in data["adapters"]:
        table.add_row(
            a["name"],
            a["actor"],
            ",".join(a["entities"]),
            _STATE.get(a.get("state", ""), "[green]yes[/]" if a["alive"] else "[red]no[/]"),
            f"{a['heartbeat_age']:.0f}s ago",
            _capture_text(a.get("capture")),
        )
    if data["adapters"]:
        out.print(table)
    queues = Table("queue", "messages", "consumers", "oldest failure")
    for q in data["queues"]:
        age = q.get("oldest_failure_age")
        queues.add_row(
            q["name"],
            "-" if q["messages"] is None else str(q["messages"]),
            "-" if q["consumers"] is None else str(q["consumers"]),
            "" if age is None else f"[red]{age_text(age)} ago[/]",
        )
    out.print(queues)
