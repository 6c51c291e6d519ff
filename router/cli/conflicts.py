"""``crmsync conflicts``: parked conflicts and the record of every resolution, asked of
the router over ``crmsync.control`` (it is the only writer of its state)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from router import control
from router.cli.common import (
    ConfigOpt,
    JsonOpt,
    broker_config,
    delivery_text,
    out,
    print_json,
)
from router.control import R
from router.errors import CrmsyncError

app = typer.Typer(
    help="Conflicts parked for an operator (manual policy), and every resolution's record.",
    no_args_is_help=True,
)

ConflictIdArg = Annotated[
    str, typer.Argument(metavar="ID", help="A conflict id, from 'crmsync conflicts list'.")
]
ASK_TIMEOUT = 10.0  # seconds to wait for the router's answer


def _ask_router(config: Path | None, request: control.Request, expected: type[R]) -> R:
    """One conflicts request; the router's refusal is one line (exit 1)."""
    from router.broker.rpc import call_router

    return call_router(broker_config(config), request, expected, ASK_TIMEOUT)


@app.command("list")
def list_(
    entity: Annotated[str | None, typer.Option(help="Only this entity.")] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Conflicts parked for an operator, oldest first."""
    from router.cli.render_conflicts import render_list

    request = control.request(control.ListConflicts, entity=entity)
    found = _ask_router(config, request, control.Conflicts).conflicts
    if as_json:
        print_json(found, sort_keys=True)
        return
    render_list(found, out)


@app.command("show")
def show(conflict_id: ConflictIdArg, as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Every side of one conflict, field by field, with what each side changed."""
    from router.cli.render_conflicts import render_conflict

    request = control.request(control.ShowConflict, id=conflict_id)
    conflict = _ask_router(config, request, control.ConflictShown).conflict
    if as_json:
        print_json(conflict, sort_keys=True)
        return
    render_conflict(conflict, out)


def _by_source(items: list[str]) -> dict[str, str]:
    by_source: dict[str, str] = {}
    for item in items:
        name, sep, source = item.partition("=")
        if not sep or not name.strip() or not source.strip():
            raise CrmsyncError(f"--field {item!r}: write NAME=SOURCE")
        by_source[name.strip()] = source.strip()
    return by_source


@app.command("resolve")
def resolve(
    conflict_id: ConflictIdArg,
    take: Annotated[
        str | None,
        typer.Option("--take", help="Every contested field from this source's side."),
    ] = None,
    fields: Annotated[
        list[str] | None,
        typer.Option("--field", help="NAME=SOURCE: this field from that source's side."),
    ] = None,
    values: Annotated[
        list[str] | None,
        typer.Option("--value", help="NAME=text, or NAME:=JSON for numbers, true/false, null."),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Decide a parked conflict: the router makes a new version (hub actor) with these
    values, merged with what only one side changed, and sends it to every CRM."""
    import getpass

    from router.dlq import parse_assignments

    by_source = _by_source(fields or [])
    chosen = parse_assignments(values or [], option="--value")
    if take is None and not by_source and not chosen:
        raise CrmsyncError(
            "say what to keep: --take SOURCE, --field NAME=SOURCE or --value NAME=VALUE"
        )
    request = control.request(
        control.ResolveConflict,
        id=conflict_id,
        take=take,
        fields=by_source,
        values=chosen,
        by=getpass.getuser(),
    )
    reply = _ask_router(config, request, control.VersionMade)
    when = delivery_text(reply.pending)
    out.print(f"conflict {conflict_id} resolved: version {reply.event_id} {when}", highlight=False)


@app.command("history")
def history(
    record_id: Annotated[str, typer.Argument(metavar="RECORD_ID")],
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Every conflict of one record: how it was resolved, by whom, and what lost."""
    from router.cli.render_conflicts import render_history

    request = control.request(control.ConflictHistory, record_id=record_id)
    found = _ask_router(config, request, control.Conflicts).conflicts
    if as_json:
        print_json(found, sort_keys=True)
        return
    render_history(record_id, found, out)
