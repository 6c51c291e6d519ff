"""``crmsync status``: the health probe (exit 1 when the router does not answer)."""

from __future__ import annotations

from typing import Annotated

import typer

from router.cli.common import ConfigOpt, JsonOpt, broker_config, connect, out, print_json


def status(
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    timeout: Annotated[
        float,
        typer.Option(help="Seconds to wait for the router.", envvar="CRMSYNC_STATUS_TIMEOUT"),
    ] = 3.0,
) -> None:
    """Adapters registered and alive, queue depths, router counters.

    Exits 0 when healthy, 1 when something needs attention (the router does not answer,
    an adapter is down or degraded, dead letters, invalid events, parked conflicts or
    records, skipped rows), with the reasons; usable as a monitoring probe."""
    from router.cli.render_status import render_status
    from router.status import attention, run_status

    broker = broker_config(config)
    data = run_status(lambda: connect(broker, "crmsync-cli"), timeout)
    reasons = attention(data)
    data["attention"] = reasons
    if as_json:
        print_json(data, sort_keys=True)
    else:
        render_status(data, out)
        if reasons:
            out.print("[bold red]needs attention:[/] " + "; ".join(reasons))
    if reasons:
        raise typer.Exit(1)
