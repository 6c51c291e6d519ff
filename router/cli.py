"""The ``crmsync`` command. Thin: parse options, load config, call the real code.

Expected errors (bad config, unreachable broker, refused registration) print one line
and exit with the error's code; only bugs print a traceback.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from router import logs
from router.config import BrokerConfig, load_adapter, load_router
from router.errors import CrmsyncError

app = typer.Typer(
    name="crmsync",
    help="Keep the customer records of many CRMs in sync through RabbitMQ.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
topology_app = typer.Typer(help="Exchanges and queues.", no_args_is_help=True)
adapter_app = typer.Typer(help="Run an adapter, or manage registered adapters.")
app.add_typer(topology_app, name="topology")
app.add_typer(adapter_app, name="adapter")
dlq_app = typer.Typer(
    help="Dead-letter queues: failed writes, and events the router refused.",
    no_args_is_help=True,
)
app.add_typer(dlq_app, name="dlq")
conflicts_app = typer.Typer(
    help="Conflicts parked for an operator (manual policy), and every resolution's record.",
    no_args_is_help=True,
)
app.add_typer(conflicts_app, name="conflicts")
policy_app = typer.Typer(help="Conflict policies.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")

err = Console(stderr=True)
out = Console()

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="router.toml (for the broker URL).", envvar="CRMSYNC_CONFIG"
    ),
]
LogLevel = Annotated[str, typer.Option("--log-level", envvar="CRMSYNC_LOG_LEVEL")]


def _broker(config: Path | None) -> BrokerConfig:
    return load_router(config).broker if config else BrokerConfig()


async def _connect(broker: BrokerConfig, name: str) -> Any:
    from router.transport import connect

    return await connect(broker, name)


@app.command()
def router(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Router config (TOML).", envvar="CRMSYNC_CONFIG")
    ] = Path("config/router.toml"),
    new_hub_epoch: Annotated[
        bool,
        typer.Option(
            "--new-hub-epoch",
            help="After restoring the state store from a backup: start a new epoch of the "
            "hub actor so its counters are never reused.",
        ),
    ] = False,
    log_level: LogLevel = "INFO",
) -> None:
    """Run the router daemon (SIGTERM: finish the batch in hand, exit 0)."""
    from router.daemon import run_router

    logs.configure(log_level)
    asyncio.run(run_router(load_router(config), new_hub_epoch=new_hub_epoch))


@adapter_app.callback(invoke_without_command=True)
def adapter(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Adapter config (TOML).")
    ] = None,
    log_level: LogLevel = "INFO",
) -> None:
    """Run one adapter: capture its CRM's changes and write what the hub delivers."""
    if ctx.invoked_subcommand is not None:
        return
    if config is None:
        raise typer.BadParameter("give --config config/adapters/NAME.toml", param_hint="--config")
    from adapters.runtime import run_adapter
    from adapters.sql import SqlAdapter

    logs.configure(log_level)
    cfg = load_adapter(config)
    asyncio.run(run_adapter(cfg, SqlAdapter(cfg, where=str(config))))


@adapter_app.command("remove")
def adapter_remove(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Unregister an adapter: it receives no deliveries from then on."""
    from router.control import RpcClient

    _confirm(
        f"Unregister adapter {name!r}? Deliveries stop; crmsync.sink.{name} keeps what it holds "
        "until you delete it.",
        yes,
    )

    async def go() -> dict[str, Any]:
        connection = await _connect(_broker(config), "crmsync-cli")
        try:
            reply: dict[str, Any] = await RpcClient(connection).call(
                "op.adapter-remove", {"name": name}
            )
            return reply
        finally:
            await connection.close()

    reply = asyncio.run(go())
    if not reply.get("ok"):
        raise CrmsyncError(str(reply.get("error")))
    out.print(f"adapter {name} removed; its queue {reply['queue']} was left in place")


@topology_app.command("declare")
def topology_declare(
    config: ConfigOpt = None,
    adapter_config: Annotated[
        list[Path] | None,
        typer.Option("--adapter-config", help="Also declare these adapters' queues."),
    ] = None,
) -> None:
    """Declare exchanges and queues (idempotent)."""
    from router import topology

    specs = []
    for path in adapter_config or []:
        cfg = load_adapter(path)
        specs += topology.adapter_queues(cfg.name, cfg.retry.tiers())

    async def go() -> None:
        connection = await _connect(_broker(config), "crmsync-cli")
        try:
            await topology.declare(connection, specs)
        finally:
            await connection.close()

    asyncio.run(go())
    out.print(f"topology declared ({len(topology.hub_queues()) + len(specs)} queues)")


@app.command()
def status(
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the router.")] = 3.0,
) -> None:
    """Adapters registered and alive, queue depths, router counters.

    Exits 1 when the router does not answer (usable as a health probe)."""
    from router.status import run_status

    broker = _broker(config)
    data = run_status(lambda: _connect(broker, "crmsync-cli"), timeout)
    if as_json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        _print_status(data)
    if not data["router"]["alive"]:
        raise typer.Exit(1)


def _print_status(data: dict[str, Any]) -> None:
    from router import dlq

    r = data["router"]
    if r["alive"]:
        verdicts = (
            ", ".join(f"{k} {v}" for k, v in sorted(r["verdicts"].items())) or "no events yet"
        )
        out.print(
            f"[bold green]router up[/] (actor {r['hub_actor']}, {r['store']['records']} records; "
            f"{verdicts})"
        )
        parked = r["store"].get("conflicts_open", 0)
        if parked:
            out.print(
                f"[bold red]{parked} conflict(s) parked for an operator[/]: crmsync conflicts list"
            )
    else:
        out.print("[bold red]router not answering[/] (is 'crmsync router' running?)")
    table = Table("adapter", "actor", "entities", "alive", "last heartbeat")
    for a in data["adapters"]:
        table.add_row(
            a["name"],
            a["actor"],
            ",".join(a["entities"]),
            "[green]yes[/]" if a["alive"] else "[red]no[/]",
            f"{a['heartbeat_age']:.0f}s ago",
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
            "" if age is None else f"[red]{dlq.age_text(age)} ago[/]",
        )
    out.print(queues)


@app.command()
def demo(
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Where the demo CRMs live (default: a temp folder)."),
    ] = None,
    records: Annotated[int, typer.Option(help="Contacts to seed.")] = 200,
    keep_running: Annotated[
        bool, typer.Option("--keep-running", help="Leave the system up until Ctrl-C.")
    ] = False,
) -> None:
    """The whole system on this machine: router, three adapters, three demo CRMs on SQLite."""
    from router.demo import run_demo

    raise typer.Exit(run_demo(directory, records, keep_running, out))


# -- crmsync dlq ----------------------------------------------------------------------------

DlqAdapterOpt = Annotated[
    str | None,
    typer.Option(
        "--adapter", "-a", help="Only this adapter's DLQ (crmsync.dlq.NAME); 'router': --invalid."
    ),
]
DlqInvalidOpt = Annotated[
    bool, typer.Option("--invalid", help="The router's crmsync.router.invalid queue instead.")
]
DlqIdsArg = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="[ID]...", help="Entry ids: event_id, h-HASH, or its first 8+ characters."
    ),
]
DlqErrorTypeOpt = Annotated[
    str | None,
    typer.Option("--error-type", "-t", help="permanent, transient, poison, undecodable, ..."),
]
DlqAllOpt = Annotated[bool, typer.Option("--all", help="Every entry of the queues selected.")]
DlqJsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _dlq_selection(
    ids: list[str] | None, error_type: str | None, everything: bool, verb: str
) -> None:
    if not ids and error_type is None and not everything:
        raise CrmsyncError(f"say which entries to {verb}: ids, --error-type TYPE or --all")


def _dlq_entries(n: int) -> str:
    return f"{n} entry" if n == 1 else f"{n} entries"


def _dlq_progress(items: list[Any], label: str) -> Any:
    """A progress bar on a terminal; nothing otherwise (the caller prints plain lines)."""
    if not sys.stdout.isatty():
        yield from items
        return
    from rich.progress import Progress

    with Progress(console=out, transient=True) as progress:
        task = progress.add_task(label, total=len(items))
        for item in items:
            yield item
            progress.advance(task)


def _dlq_partial(snapshots: list[Any]) -> None:
    """Say so when a queue was deeper than what one command can hold."""
    for s in snapshots:
        if not s.complete:
            err.print(
                f"note: only the first {_dlq_entries(len(s.entries))} of {s.depth} in {s.queue} "
                "were looked at; run the command again for the rest",
                highlight=False,
            )


def _dlq_say(line: str) -> None:
    """One plain line per entry when no one watches a progress bar (logs, pipes)."""
    if not sys.stdout.isatty():
        print(line, flush=True)


@dlq_app.command("list")
def dlq_list(
    adapter: DlqAdapterOpt = None,
    invalid: DlqInvalidOpt = False,
    group_by: Annotated[
        Literal["error", "entity", "adapter"], typer.Option("--group-by", "-g")
    ] = "error",
    as_json: DlqJsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Entries grouped (by error: type and message) with counts, in queue order.

    Changes nothing. Without --adapter: the DLQ of every adapter the router knows."""
    import time

    from router import dlq
    from router.dlq_broker import browse_all

    holding = browse_all(_broker(config), adapter, invalid)
    now = time.time()
    groups = dlq.group(holding.entries, group_by)
    snapshots = holding.snapshots
    if as_json:
        data = {
            "queues": [
                {"queue": s.queue, "messages": s.depth, "browsed": len(s.entries)}
                for s in snapshots
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
            "entries": [dlq.summary(e) for e in holding.entries],
        }
        print(json.dumps(data, indent=2))
        return
    if not snapshots:
        out.print("no dead-letter queues: the router knows no adapters")
    for s in snapshots:
        more = "" if s.complete else f" (showing the first {len(s.entries)})"
        out.print(f"{s.queue}: {_dlq_entries(s.depth)}{more}", highlight=False)
    for g in groups:
        # Ids are what an operator copies: never cut; the error gives way instead. The
        # record id is shortened (like a git hash); 'show' and --json have it whole.
        rows = [
            (
                e.id,
                e.adapter,
                e.entity or "-",
                f"{e.record_id[:8]}…" if e.record_id else "-",
                "-" if e.attempts is None else str(e.attempts),
                dlq.age_text(e.age(now)),
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
        room = out.width - sum(widths) - 2 * len(widths)
        table.add_column("error", no_wrap=True, overflow="ellipsis", max_width=max(room, 12))
        for row, e in zip(rows, g.entries, strict=True):
            table.add_row(*row, e.error)
        out.print(
            f"\n[bold]{len(g.entries)} x {g.key}[/] (oldest {dlq.age_text(g.oldest_age(now))})",
            highlight=False,
        )
        out.print(table)


@dlq_app.command("show")
def dlq_show(
    entry_id: Annotated[str, typer.Argument(metavar="ID")],
    adapter: DlqAdapterOpt = None,
    invalid: DlqInvalidOpt = False,
    as_json: DlqJsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """One entry: error, traceback, headers and the decoded event with its values."""
    import time

    from router import dlq
    from router.dlq_broker import browse_all

    holding = browse_all(_broker(config), adapter, invalid)
    copies = dlq.find(holding.entries, entry_id, holding.where)
    entry, now = copies[0], time.time()
    data = dlq.detail(entry)
    if as_json:
        print(json.dumps({**data, "copies": len(copies)}, indent=2))
        return
    rows = [
        ("queue", f"{entry.queue} (position {entry.position + 1})"),
        ("adapter", entry.adapter),
        ("error type", entry.error_type),
        ("error", entry.error),
        ("attempts", "-" if entry.attempts is None else str(entry.attempts)),
        ("age", dlq.age_text(entry.age(now))),
    ]
    if len(copies) > 1:
        rows.append(("copies", f"{len(copies)} messages in the queue carry this id"))
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
    for key, value in sorted(data["headers"].items()):
        if key != "x-crmsync-traceback":
            out.print(f"  {key}: {json.dumps(value)}", highlight=False, markup=False)
    if entry.traceback:
        out.print("[bold]traceback[/]")
        out.print(entry.traceback, highlight=False, markup=False)


@dlq_app.command("replay")
def dlq_replay(
    ids: DlqIdsArg = None,
    adapter: DlqAdapterOpt = None,
    invalid: DlqInvalidOpt = False,
    error_type: DlqErrorTypeOpt = None,
    everything: DlqAllOpt = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would happen.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Republish entries to their adapter (origin=replay); each leaves the DLQ only once
    the broker confirmed its copy. Superseded versions are skipped by the adapters."""
    from router import dlq
    from router.dlq_broker import hold_all
    from router.errors import PublishFailed

    _dlq_selection(ids, error_type, everything, "replay")
    with hold_all(_broker(config), adapter, invalid) as holding:
        chosen = dlq.select(holding.entries, holding.where, ids or (), error_type)
        plan: list[tuple[dlq.Entry, dlq.Republish]] = []
        skipped: list[tuple[dlq.Entry, str]] = []
        for entry in chosen:
            try:
                plan.append((entry, dlq.replay_of(entry)))
            except dlq.NotReplayable as e:
                if ids:  # named on purpose: refuse before changing anything
                    raise
                skipped.append((entry, str(e)))
        for entry, reason in skipped:
            out.print(f"skip {entry.id}: {reason}", highlight=False, markup=False)
        if dry_run:
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
            return
        done = 0
        for entry, message in _dlq_progress(plan, "replaying"):
            try:
                holding.of(entry).republish(entry, message)
            except PublishFailed as e:
                raise PublishFailed(f"{e} (entry {entry.id}; {done} replayed before it)") from e
            done += 1
            _dlq_say(f"replayed {entry.id} -> {message.routing_key}")
        _dlq_partial(holding.snapshots)
    out.print(f"replayed {done}, skipped {len(skipped)}", highlight=False)


@dlq_app.command("edit")
def dlq_edit(
    entry_id: Annotated[str, typer.Argument(metavar="ID")],
    assignments: Annotated[
        list[str],
        typer.Option("--set", help="field=text, or field:=JSON for numbers, true/false, null."),
    ],
    adapter: DlqAdapterOpt = None,
    invalid: DlqInvalidOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Edit & retry: the router makes a new version of the record (hub actor) with these
    values and sends it to every CRM; then the entry leaves the DLQ."""
    from router import dlq
    from router.control import call_router
    from router.dlq_broker import hold_all

    changes = dlq.parse_assignments(assignments)
    broker = _broker(config)
    with hold_all(broker, adapter, invalid) as holding:
        copies = dlq.find(holding.entries, entry_id, holding.where)
        entry = copies[0]
        reply = call_router(broker, "op.edit", dlq.edit_request(entry, changes), timeout=10.0)
        if not reply.get("ok"):
            raise CrmsyncError(
                f"the router did not make the edit: {reply.get('error')}; "
                f"entry {entry.id} stays in {entry.queue}"
            )
        for copy in copies:
            holding.of(copy).remove(copy)
    when = (
        "is owed to every CRM (sent when the broker is back)"
        if reply.get("pending")
        else ("goes to every CRM")
    )
    out.print(
        f"record {entry.record_id} edited: version {reply.get('event_id')} {when}; "
        f"entry {entry.id} removed from {entry.queue}",
        highlight=False,
    )


@dlq_app.command("purge")
def dlq_purge(
    ids: DlqIdsArg = None,
    adapter: DlqAdapterOpt = None,
    invalid: DlqInvalidOpt = False,
    error_type: DlqErrorTypeOpt = None,
    everything: DlqAllOpt = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Remove entries for good (asks first; without a terminal only with --yes)."""
    from collections import Counter

    from router import dlq
    from router.dlq_broker import browse_all, hold_all

    _dlq_selection(ids, error_type, everything, "purge")
    broker = _broker(config)
    # Ask with nothing held (an operator may take a while), then remove exactly what was
    # counted: entries that arrived meanwhile stay.
    seen = browse_all(broker, adapter, invalid)
    counted = Counter(e.id for e in dlq.select(seen.entries, seen.where, ids or (), error_type))
    if not counted:
        out.print("nothing to purge")
        return
    total = sum(counted.values())
    _confirm(f"Remove {_dlq_entries(total)} from {seen.where} for good?", yes)
    removed = 0
    with hold_all(broker, adapter, invalid) as holding:
        for entry in dlq.select(holding.entries, holding.where, ids or (), error_type):
            if counted[entry.id] > 0:
                counted[entry.id] -= 1
                holding.of(entry).remove(entry)
                removed += 1
                _dlq_say(f"removed {entry.id}")
        _dlq_partial(holding.snapshots)
    out.print(f"purged {_dlq_entries(removed)}", highlight=False)


@dlq_app.command("export")
def dlq_export(
    ids: DlqIdsArg = None,
    fmt: Annotated[
        Literal["jsonl"], typer.Option("--format", help="jsonl: one JSON object a line.")
    ] = "jsonl",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
    adapter: DlqAdapterOpt = None,
    invalid: DlqInvalidOpt = False,
    error_type: DlqErrorTypeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Every entry (headers, event, or the raw body in base64) for tickets and audits.
    Changes nothing."""

    from router import dlq
    from router.dlq_broker import browse_all

    holding = browse_all(_broker(config), adapter, invalid)
    chosen = dlq.select(holding.entries, holding.where, ids or (), error_type)
    _dlq_partial(holding.snapshots)
    lines = (json.dumps(dlq.detail(e), sort_keys=True) + "\n" for e in chosen)
    if output is None:
        sys.stdout.writelines(lines)
        return
    with output.open("w", encoding="utf-8") as sink:
        for line in _dlq_progress(list(lines), "exporting"):
            sink.write(line)
    err.print(f"exported {_dlq_entries(len(chosen))} ({fmt}) to {output}", highlight=False)


# -- conflicts ------------------------------------------------------------------------

ConflictIdArg = Annotated[
    str, typer.Argument(metavar="ID", help="A conflict id, from 'crmsync conflicts list'.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _ask_router(config: Path | None, verb: str, payload: dict[str, Any]) -> dict[str, Any]:
    """One conflicts request; the router's refusal is one line (exit 1)."""
    from router.control import call_router

    reply = call_router(_broker(config), f"op.conflicts.{verb}", payload, timeout=10.0)
    if not reply.get("ok"):
        raise CrmsyncError(str(reply.get("error")))
    return reply


def _value(value: Any) -> str:
    return "(none)" if value is None else json.dumps(value, ensure_ascii=False)


@conflicts_app.command("list")
def conflicts_list(
    entity: Annotated[str | None, typer.Option(help="Only this entity.")] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Conflicts parked for an operator, oldest first."""
    from router.dlq import age_text

    found = _ask_router(config, "list", {"entity": entity})["conflicts"]
    if as_json:
        print(json.dumps(found, indent=2, sort_keys=True))
        return
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


@conflicts_app.command("show")
def conflicts_show(
    conflict_id: ConflictIdArg, as_json: JsonOpt = False, config: ConfigOpt = None
) -> None:
    """Every side of one conflict, field by field, with what each side changed."""
    conflict = _ask_router(config, "show", {"id": conflict_id})["conflict"]
    if as_json:
        print(json.dumps(conflict, indent=2, sort_keys=True))
        return
    _print_conflict(conflict)


def _print_conflict(c: dict[str, Any]) -> None:
    from rich.markup import escape

    from router.dlq import age_text

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
            text = escape(_value(f["values"][label]))
            if label in f["changed_by"]:
                author = f["set_by"].get(label, label)
                text = f"[bold yellow]{text} *[/]" + (f" ({author})" if author != label else "")
            cells.append(text)
        how = "[bold red]you (manual)[/]" if f["undecided"] else f["policy"]
        table.add_row(f["name"], escape(_value(f["base"])), *cells, how)
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


@conflicts_app.command("resolve")
def conflicts_resolve(
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

    by_source: dict[str, str] = {}
    for item in fields or []:
        name, sep, source = item.partition("=")
        if not sep or not name.strip() or not source.strip():
            raise CrmsyncError(f"--field {item!r}: write NAME=SOURCE")
        by_source[name.strip()] = source.strip()
    chosen = parse_assignments(values or [], option="--value")
    if take is None and not by_source and not chosen:
        raise CrmsyncError(
            "say what to keep: --take SOURCE, --field NAME=SOURCE or --value NAME=VALUE"
        )
    reply = _ask_router(
        config,
        "resolve",
        {
            "id": conflict_id,
            "take": take,
            "fields": by_source,
            "values": chosen,
            "by": getpass.getuser(),
        },
    )
    when = (
        "is owed to every CRM (sent when the broker is back)"
        if reply.get("pending")
        else "goes to every CRM"
    )
    out.print(
        f"conflict {conflict_id} resolved: version {reply['event_id']} {when}", highlight=False
    )


@conflicts_app.command("history")
def conflicts_history(
    record_id: Annotated[str, typer.Argument(metavar="RECORD_ID")],
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Every conflict of one record: how it was resolved, by whom, and what lost."""
    found = _ask_router(config, "history", {"record_id": record_id})["conflicts"]
    if as_json:
        print(json.dumps(found, indent=2, sort_keys=True))
        return
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
            lost = "; ".join(f"{s} {_value(v)}" for s, v in how["losing"]) or "nothing"
            out.print(
                f"    {name}: {how['policy']} kept {_value(how['value'])} ({how['source']}), "
                f"lost: {lost}",
                highlight=False,
                markup=False,
            )


@policy_app.command("check")
def policy_check(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Router config (TOML).", envvar="CRMSYNC_CONFIG")
    ] = Path("config/router.toml"),
    adapters: Annotated[
        list[Path] | None,
        typer.Option(
            "--adapters",
            help="Adapter configs (files or folders of *.toml); default: the adapters/ "
            "folder next to the router config.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Who owns each field and what a concurrent change does (a dry run: changes nothing).

    A policy naming a source or field no adapter has is an error (exit 4)."""
    from router.policy_plan import run_check

    run_check(config, adapters, as_json, out)


def _confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise CrmsyncError("refusing without a terminal to confirm; add --yes")
    if not typer.confirm(question):
        raise typer.Exit(1)


def main() -> None:
    """Entry point: usage errors are typer's (exit 2); crmsync's own are one line."""
    logs.quiet_libraries()
    try:
        app()
    except CrmsyncError as e:
        err.print(f"crmsync: error: {e}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
