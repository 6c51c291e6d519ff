"""The ``crmsync`` command. Thin: parse options, load config, call the real code.

Expected errors (bad config, unreachable broker, refused registration) print one line
and exit with the error's code; only bugs print a traceback.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

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
    r = data["router"]
    if r["alive"]:
        verdicts = (
            ", ".join(f"{k} {v}" for k, v in sorted(r["verdicts"].items())) or "no events yet"
        )
        out.print(
            f"[bold green]router up[/] (actor {r['hub_actor']}, {r['store']['records']} records; "
            f"{verdicts})"
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
            "" if age is None else f"[red]{_ago(age)}[/]",
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


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


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
