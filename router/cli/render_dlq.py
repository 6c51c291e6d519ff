"""``crmsync dlq`` as text and JSON: queue counts, groups of entries, one entry in full."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from router import dlq, dlq_view

if TYPE_CHECKING:
    from router.broker.dlq import Snapshot


def entries_text(n: int) -> str:
    return f"{n} entry" if n == 1 else f"{n} entries"


def render_partial(snapshots: Sequence[Snapshot], err: Console) -> None:
    """Say so when a queue was deeper than what one command can hold."""
    for s in snapshots:
        if not s.complete:
            err.print(
                f"note: only the first {entries_text(len(s.entries))} of {s.depth} in {s.queue} "
                "were looked at; run the command again for the rest",
                highlight=False,
            )


def list_json(
    snapshots: Sequence[Snapshot],
    group_by: dlq.GroupBy,
    groups: Sequence[dlq_view.Group],
    entries: Sequence[dlq.Entry],
) -> dict[str, Any]:
    """``dlq list --json``: times absolute, so that listing twice gives the same bytes."""
    return {
        "queues": [
            {"queue": s.queue, "messages": s.depth, "browsed": len(s.entries)} for s in snapshots
        ],
        "group_by": group_by,
        "groups": [
            {
                "key": g.key,
                "count": len(g.entries),
                "oldest_failed_at": g.oldest_failed_at,
                "ids": [e.id for e in g.entries],
            }
            for g in groups
        ],
        "entries": [dlq_view.summary(e) for e in entries],
    }


def render_list(
    snapshots: Sequence[Snapshot], groups: Sequence[dlq_view.Group], now: float, out: Console
) -> None:
    """Each queue's depth, then each group with a table of its entries."""
    if not snapshots:
        out.print("no dead-letter queues: the router knows no adapters")
    for s in snapshots:
        more = "" if s.complete else f" (showing the first {len(s.entries)})"
        out.print(f"{s.queue}: {entries_text(s.depth)}{more}", highlight=False)
    for g in groups:
        out.print(
            f"\n[bold]{len(g.entries)} x {g.key}[/] "
            f"(oldest {dlq_view.age_text(g.oldest_age(now))})",
            highlight=False,
        )
        out.print(_group_table(g, now, out.width))


def _group_table(g: dlq_view.Group, now: float, width: int) -> Table:
    # Ids are what an operator copies: never cut; the error gives way instead. The
    # record id is shortened (like a git hash); 'show' and --json have it whole.
    rows = [
        (
            e.id,
            e.adapter,
            e.entity or "-",
            f"{e.record_id[:8]}…" if e.record_id else "-",
            "-" if e.attempts is None else str(e.attempts),
            dlq_view.age_text(e.age(now)),
        )
        for e in g.entries
    ]
    table = Table(box=None, pad_edge=False)
    widths = []
    for i, name in enumerate(("id", "adapter", "entity", "record", "attempts", "age")):
        widths.append(max(len(name), *(len(row[i]) for row in rows)))
        table.add_column(
            name,
            no_wrap=True,
            min_width=widths[-1] if i == 0 else None,
            justify="right" if i > 3 else "left",
        )
    room = width - sum(widths) - 2 * len(widths)
    table.add_column("error", no_wrap=True, overflow="ellipsis", max_width=max(room, 12))
    for row, e in zip(rows, g.entries, strict=True):
        table.add_row(*row, e.error)
    return table


def render_entry(
    entry: dlq.Entry, copies: int, headers: dict[str, Any], now: float, out: Console
) -> None:
    """``dlq show``: the facts, the decoded event (or why not), headers, traceback.
    ``headers`` are the entry's as JSON values (:func:`dlq_view.jsonable`)."""
    rows = [
        ("queue", f"{entry.queue} (position {entry.position + 1})"),
        ("adapter", entry.adapter),
        ("error type", entry.error_type),
        ("error", entry.error),
        ("attempts", "-" if entry.attempts is None else str(entry.attempts)),
        ("age", dlq_view.age_text(entry.age(now))),
    ]
    if copies > 1:
        rows.append(("copies", f"{copies} messages in the queue carry this id"))
    event = entry.event
    if event is not None:
        rows += [
            ("event", f"{event.op} {event.entity} {event.record_id} from {event.source}"),
            ("clock", json.dumps(event.clock)),
            ("occurred", event.occurred_at.isoformat()),
            ("origin", event.origin),
            ("changed", ", ".join(event.changed) or "-"),
        ]
        rows += [(f"  {k}", json.dumps(v)) for k, v in sorted(event.fields.items())]
    else:
        rows += [
            ("body", f"does not decode: {entry.decode_error}"),
            ("raw", repr(entry.body[:200])),
        ]
    table = Table(show_header=False, box=None, title=f"entry {entry.id}")
    for name, value in rows:
        table.add_row(name, value)
    out.print(table, highlight=False)
    out.print("[bold]headers[/]")
    for key, value in sorted(headers.items()):
        if key != "x-crmsync-traceback":  # shown whole below, not as one JSON string
            out.print(f"  {key}: {json.dumps(value)}", highlight=False, markup=False)
    if entry.traceback:
        out.print("[bold]traceback[/]")
        out.print(entry.traceback, highlight=False, markup=False)


def render_skipped(skipped: Sequence[dlq.Skipped], out: Console) -> None:
    for entry, reason in skipped:
        out.print(f"skip {entry.id}: {reason}", highlight=False, markup=False)


def render_dry_run(
    plan: Sequence[dlq.Planned], skipped: Sequence[dlq.Skipped], out: Console
) -> None:
    for entry, message in plan:
        out.print(
            f"would replay {entry.id} ({entry.entity} {entry.record_id}) -> "
            f"{message.exchange} {message.routing_key}",
            highlight=False,
        )
    out.print(
        f"dry run: would replay {len(plan)}, skip {len(skipped)}; nothing changed",
        highlight=False,
    )
