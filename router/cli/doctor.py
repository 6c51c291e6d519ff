"""``crmsync doctor``: read-only checks of a deployment, one line each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from router.cli.common import ConfigOpt, JsonOpt, out

DEFAULT_ADAPTERS = Path("config/adapters")


def doctor(
    config: ConfigOpt = None,
    adapters: Annotated[
        Path | None,
        typer.Option(
            "--adapters",
            help="Check every *.toml in this folder (default: config/adapters, if present).",
        ),
    ] = None,
    adapter_config: Annotated[
        list[Path] | None,
        typer.Option("--adapter-config", help="Check this adapter config (repeatable)."),
    ] = None,
    management_url: Annotated[
        str | None,
        typer.Option(
            "--management-url",
            help="RabbitMQ management API (default: the broker's host, port 15672).",
            envvar="CRMSYNC_MANAGEMENT_URL",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check the broker, topology, router, adapters' CRMs, state stores and clocks.

    Read-only: nothing of crmsync's is declared, published or written (a store's writability
    is tested by a probe row rolled back). Exits 1 when any check fails; warnings
    (dead letters, parked conflicts, small clock skew) leave it 0."""
    from router.doctor import verdicts
    from router.doctor.run import adapter_files, run_checks

    folder = adapters
    if folder is None and not adapter_config and DEFAULT_ADAPTERS.is_dir():
        folder = DEFAULT_ADAPTERS
    checks = run_checks(config, adapter_files(folder, adapter_config or []), management_url)
    if as_json:
        print(verdicts.as_json(checks))
    else:
        # Plain print: a line per check, never wrapped, greppable in a pipe or a log.
        for check in checks:
            print(verdicts.line(check), flush=True)
        out.print(verdicts.summary(checks), markup=False, highlight=False)
    raise typer.Exit(verdicts.exit_code(checks))
