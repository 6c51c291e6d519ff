"""The processes: ``crmsync router``, ``crmsync adapter`` (and ``adapter remove``), the demo."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from router import logs
from router.adapter_config import load_adapter
from router.cli.common import (
    CONFIG_ENV,
    ConfigOpt,
    LogLevel,
    RouterConfigOpt,
    YesOpt,
    broker_config,
    confirm,
    out,
)
from router.config import load_router

adapter_app = typer.Typer(help="Run an adapter, or manage registered adapters.")


def router(
    config: RouterConfigOpt = Path("config/router.toml"),
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
        Path | None,
        typer.Option("--config", "-c", help="Adapter config (TOML).", envvar=CONFIG_ENV),
    ] = None,
    log_level: LogLevel = "INFO",
) -> None:
    """Run one adapter: capture its CRM's changes and write what the hub delivers."""
    if ctx.invoked_subcommand is not None:
        return
    if config is None:
        raise typer.BadParameter("give --config config/adapters/NAME.toml", param_hint="--config")
    from adapters.factory import make_adapter
    from adapters.runtime import run_adapter

    logs.configure(log_level)
    cfg = load_adapter(config)
    asyncio.run(run_adapter(cfg, make_adapter(cfg, where=str(config))))


@adapter_app.command("resync")
def adapter_resync(
    name: str,
    entity: Annotated[str | None, typer.Option(help="Only this entity.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Capture an adapter's CRM again from scratch (after a restore, a bulk edit made
    around crmsync, a doubt). Echo-safe: only rows that differ from what it last recorded
    are published."""
    from router import adapter_control as ac
    from router.broker.rpc import call_adapter

    request = ac.Resync(name=name, entity=entity)
    reply = call_adapter(broker_config(config), request, ac.Resyncing, name, 10.0)
    out.print(f"adapter {name} captures {', '.join(reply.entities)} again from the beginning")


@adapter_app.command("remove")
def adapter_remove(name: str, yes: YesOpt = False, config: ConfigOpt = None) -> None:
    """Unregister an adapter: it receives no deliveries from then on."""
    from router import control
    from router.broker.rpc import call_router

    confirm(
        f"Unregister adapter {name!r}? Deliveries stop; crmsync.sink.{name} keeps what it holds "
        "until you delete it.",
        yes,
    )

    request = control.request(control.RemoveAdapter, name=name)
    reply = call_router(broker_config(config), request, control.Removed, timeout=10.0)
    out.print(f"adapter {name} removed; its queue {reply.queue} was left in place")


def demo(
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Where the demo CRMs live (default: a temp folder)."),
    ] = None,
    records: Annotated[int, typer.Option(help="Contacts to seed.")] = 200,
    keep_running: Annotated[
        bool, typer.Option("--keep-running", help="Leave the system up until Ctrl-C.")
    ] = False,
    prepare_only: Annotated[
        bool,
        typer.Option(
            "--prepare-only",
            help="Only create the demo CRMs' databases in --dir where missing (for "
            "config/supervisord.conf), then exit.",
        ),
    ] = False,
) -> None:
    """The whole system on this machine: router, three adapters, three demo CRMs on SQLite."""
    from router.demo import run_demo
    from router.demo.crms import prepare

    if prepare_only:
        where = directory or Path("demo-data")
        made = prepare(where, records)
        out.print(f"demo CRMs ready in {where} (created: {', '.join(made) or 'none'})")
        raise typer.Exit(0)
    raise typer.Exit(run_demo(directory, records, keep_running, out))
