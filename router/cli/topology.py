"""``crmsync topology``: exchanges and queues."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from router.adapter_config import load_adapter
from router.cli.common import ConfigOpt, broker_config, connect, out

app = typer.Typer(help="Exchanges and queues.", no_args_is_help=True)


@app.command("declare")
def declare(
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
        connection = await connect(broker_config(config), "crmsync-cli")
        try:
            await connection.declare(specs)
        finally:
            await connection.close()

    asyncio.run(go())
    out.print(f"topology declared ({len(topology.hub_queues()) + len(specs)} queues)")
