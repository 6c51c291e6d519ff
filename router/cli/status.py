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

    Exits 1 when the router does not answer (usable as a health probe)."""
    from router.cli.render_status import render_status
    from router.status import run_status

    broker = broker_config(config)
    data = run_status(lambda: connect(broker, "crmsync-cli"), timeout)
    if as_json:
        print_json(data, sort_keys=True)
    else:
        render_status(data, out)
    if not data["router"]["alive"]:
        raise typer.Exit(1)
