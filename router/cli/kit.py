"""``crmsync adapter conformance``: the adapter kit's suite on one adapter config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from router.cli.common import out
from router.errors import CrmsyncError


def conformance(
    config: Annotated[Path, typer.Argument(help="The adapter config (TOML) to check.")],
    driver: Annotated[
        str | None,
        typer.Option("--driver", help="The CRM driver, module:factory (default: the kind's)."),
    ] = None,
    entity: Annotated[
        str | None, typer.Option("--entity", help="The entity to check (default: the first).")
    ] = None,
    patience: Annotated[
        float,
        typer.Option(help="Seconds capture may take to see a change (a lagging change feed)."),
    ] = 10.0,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="A line for each passed check too.")
    ] = False,
) -> None:
    """Check an adapter against the SDK contract (writes test records into its CRM):
    one line per failed check (-v: per check); exit 1 when one fails."""
    try:
        from adapters.kit.runner import run
    except ModuleNotFoundError as e:  # the kit runs its checks as a pytest module
        raise CrmsyncError(
            f"the conformance kit needs {e.name}: pip install 'crmsync[test]'"
        ) from e

    outcomes = run(config, driver, entity, patience)
    for o in outcomes:
        if not o.passed or verbose:
            mark = "ok  " if o.passed else "FAIL"
            out.print(
                f"{mark} {o.check}: {o.detail}", markup=False, highlight=False, soft_wrap=True
            )
    passed = sum(o.passed for o in outcomes)
    out.print(
        f"{passed} of {len(outcomes)} checks passed", markup=False, highlight=False, soft_wrap=True
    )
    if passed < len(outcomes) or not outcomes:
        raise typer.Exit(1)
