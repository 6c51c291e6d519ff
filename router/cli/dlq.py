"""``crmsync dlq``: inspect and act on the dead-letter queues, working on the queues
directly (the procedures are :mod:`router.dlq_ops`, the output :mod:`router.cli.render_dlq`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from router.cli.common import (
    ConfigOpt,
    JsonOpt,
    YesOpt,
    broker_config,
    confirm,
    delivery_text,
    err,
    out,
    print_json,
    progress,
)
from router.errors import CrmsyncError

app = typer.Typer(
    help="Dead-letter queues: failed writes, and events the router refused.",
    no_args_is_help=True,
)

AdapterOpt = Annotated[
    str | None,
    typer.Option(
        "--adapter", "-a", help="Only this adapter's DLQ (crmsync.dlq.NAME); 'router': --invalid."
    ),
]
InvalidOpt = Annotated[
    bool, typer.Option("--invalid", help="The router's crmsync.router.invalid queue instead.")
]
IdsArg = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="[ID]...", help="Entry ids: event_id, h-HASH, or its first 8+ characters."
    ),
]
ErrorTypeOpt = Annotated[
    str | None,
    typer.Option("--error-type", "-t", help="permanent, transient, poison, undecodable, ..."),
]
AllOpt = Annotated[bool, typer.Option("--all", help="Every entry of the queues selected.")]


def _require_selection(
    ids: list[str] | None, error_type: str | None, everything: bool, verb: str
) -> None:
    # A command that changes queues never defaults to everything: --all says so.
    if not ids and error_type is None and not everything:
        raise CrmsyncError(f"say which entries to {verb}: ids, --error-type TYPE or --all")


@app.command("list")
def list_(
    adapter: AdapterOpt = None,
    invalid: InvalidOpt = False,
    group_by: Annotated[
        Literal["error", "entity", "adapter"], typer.Option("--group-by", "-g")
    ] = "error",
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Entries grouped (by error: type and message) with counts, in queue order.

    Changes nothing. Without --adapter: the DLQ of every adapter the router knows."""
    import time

    from router import dlq_view
    from router.broker.dlq import browse_all
    from router.cli import render_dlq

    holding = browse_all(broker_config(config), adapter, invalid)
    now = time.time()
    groups = dlq_view.group(holding.entries, group_by)
    if as_json:
        print_json(render_dlq.list_json(holding.snapshots, group_by, groups, holding.entries))
        return
    render_dlq.render_list(holding.snapshots, groups, now, out)


@app.command("show")
def show(
    entry_id: Annotated[str, typer.Argument(metavar="ID")],
    adapter: AdapterOpt = None,
    invalid: InvalidOpt = False,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """One entry: error, traceback, headers and the decoded event with its values."""
    import time

    from router import dlq, dlq_view
    from router.broker.dlq import browse_all
    from router.cli import render_dlq

    holding = browse_all(broker_config(config), adapter, invalid)
    copies = dlq.find(holding.entries, entry_id, holding.where)
    entry, now = copies[0], time.time()
    data = dlq_view.detail(entry)
    if as_json:
        print_json({**data, "copies": len(copies)})
        return
    render_dlq.render_entry(entry, len(copies), data["headers"], now, out)


@app.command("replay")
def replay(
    ids: IdsArg = None,
    adapter: AdapterOpt = None,
    invalid: InvalidOpt = False,
    error_type: ErrorTypeOpt = None,
    everything: AllOpt = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would happen.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Republish entries to their adapter (origin=replay); each leaves the DLQ only once
    the broker confirmed its copy. Superseded versions are skipped by the adapters."""
    from router import dlq_ops
    from router.cli import render_dlq

    _require_selection(ids, error_type, everything, "replay")
    selection = dlq_ops.Selection(adapter, invalid, ids or (), error_type)
    with dlq_ops.replay(broker_config(config), selection) as planned:
        render_dlq.render_skipped(planned.skipped, out)
        if dry_run:
            render_dlq.render_dry_run(planned.plan, planned.skipped, out)
            return
        with progress("replaying", len(planned.plan)) as step:
            done = planned.run(lambda e, m: step(f"replayed {e.id} -> {m.routing_key}"))
        render_dlq.render_partial(planned.snapshots, err)
    out.print(f"replayed {done}, skipped {len(planned.skipped)}", highlight=False)


@app.command("edit")
def edit(
    entry_id: Annotated[str, typer.Argument(metavar="ID")],
    assignments: Annotated[
        list[str],
        typer.Option("--set", help="field=text, or field:=JSON for numbers, true/false, null."),
    ],
    adapter: AdapterOpt = None,
    invalid: InvalidOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Edit & retry: the router makes a new version of the record (hub actor) with these
    values and sends it to every CRM; then the entry leaves the DLQ."""
    from router import dlq, dlq_ops

    changes = dlq.parse_assignments(assignments)
    edited = dlq_ops.edit(broker_config(config), adapter, invalid, entry_id, changes)
    entry = edited.entry
    out.print(
        f"record {entry.record_id} edited: version {edited.version} "
        f"{delivery_text(edited.pending)}; "
        f"entry {entry.id} removed from {entry.queue}",
        highlight=False,
    )


@app.command("purge")
def purge(
    ids: IdsArg = None,
    adapter: AdapterOpt = None,
    invalid: InvalidOpt = False,
    error_type: ErrorTypeOpt = None,
    everything: AllOpt = False,
    yes: YesOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Remove entries for good (asks first; without a terminal only with --yes)."""
    from router import dlq_ops
    from router.cli.render_dlq import entries_text, render_partial

    _require_selection(ids, error_type, everything, "purge")
    broker = broker_config(config)
    selection = dlq_ops.Selection(adapter, invalid, ids or (), error_type)
    counted = dlq_ops.count(broker, selection)
    if not counted.total:
        out.print("nothing to purge")
        return
    confirm(f"Remove {entries_text(counted.total)} from {counted.where} for good?", yes)
    with progress("purging", counted.total, bar=False) as step:
        purged = dlq_ops.purge(broker, selection, counted, lambda e: step(f"removed {e.id}"))
    render_partial(purged.snapshots, err)
    out.print(f"purged {entries_text(purged.removed)}", highlight=False)


@app.command("export")
def export(
    ids: IdsArg = None,
    fmt: Annotated[
        Literal["jsonl"], typer.Option("--format", help="jsonl: one JSON object a line.")
    ] = "jsonl",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
    adapter: AdapterOpt = None,
    invalid: InvalidOpt = False,
    error_type: ErrorTypeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Every entry (headers, event, or the raw body in base64) for tickets and audits.
    Changes nothing."""
    from router import dlq, dlq_view
    from router.broker.dlq import browse_all
    from router.cli.render_dlq import entries_text, render_partial

    holding = browse_all(broker_config(config), adapter, invalid)
    chosen = dlq.select(holding.entries, holding.where, ids or (), error_type)
    render_partial(holding.snapshots, err)
    lines = [json.dumps(dlq_view.detail(e), sort_keys=True) + "\n" for e in chosen]
    if output is None:
        sys.stdout.writelines(lines)
        return
    # The entries go to the file: stdout may show a bar, but gets no line per entry.
    with (
        output.open("w", encoding="utf-8") as sink,
        progress("exporting", len(lines), lines=False) as step,
    ):
        for line in lines:
            sink.write(line)
            step(line)
    err.print(f"exported {entries_text(len(chosen))} ({fmt}) to {output}", highlight=False)
