"""``crmsync policy``: conflict policies, checked against the adapters' mappings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from router.cli.common import JsonOpt, RouterConfigOpt, out

app = typer.Typer(help="Conflict policies.", no_args_is_help=True)


@app.command("check")
def check(
    config: RouterConfigOpt = Path("config/router.toml"),
    adapters: Annotated[
        list[Path] | None,
        typer.Option(
            "--adapters",
            help="Adapter configs (files or folders of *.toml); default: the adapters/ "
            "folder next to the router config.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Who owns each field and what a concurrent change does (a dry run: changes nothing).

    A policy naming a source or field no adapter has is an error (exit 4)."""
    from router.policy_plan import run_check

    run_check(config, adapters, as_json, out)
