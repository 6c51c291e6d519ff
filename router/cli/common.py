"""What every command group shares: the consoles, option types, the broker settings,
confirmation of destructive commands and progress reporting."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from router.broker.base import BrokerConnection
from router.config import BrokerConfig, load_router
from router.errors import CrmsyncError

err = Console(stderr=True)
out = Console()

CONFIG_ENV = "CRMSYNC_CONFIG"

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="router.toml (for the broker URL).", envvar=CONFIG_ENV),
]
RouterConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="Router config (TOML).", envvar=CONFIG_ENV)
]
LogLevel = Annotated[str, typer.Option("--log-level", envvar="CRMSYNC_LOG_LEVEL")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]

Step = Callable[[str], None]
"""One step of a long command done, said in one line."""


def broker_config(config: Path | None) -> BrokerConfig:
    """The broker settings of ``config``; without one, the defaults (and CRMSYNC_AMQP_URL)."""
    return load_router(config).broker if config else BrokerConfig()


async def connect(broker: BrokerConfig, name: str) -> BrokerConnection:
    # Imported here: it loads aio-pika, which commands that never connect should not pay for.
    from router.broker.aio import connect

    return await connect(broker, name)


def print_json(data: Any, *, sort_keys: bool = False) -> None:
    # Plain stdout, not rich: a script reads it, so no colour or wrapping.
    print(json.dumps(data, indent=2, sort_keys=sort_keys))


def delivery_text(pending: bool) -> str:
    """How the router's new version reaches the CRMs: now, or once the broker is back."""
    return "is owed to every CRM (sent when the broker is back)" if pending else "goes to every CRM"


def confirm(question: str, yes: bool) -> None:
    """Ask on a terminal; without one, refuse unless ``--yes`` was given (DESIGN "Commands")."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise CrmsyncError("refusing without a terminal to confirm; add --yes")
    if not typer.confirm(question):
        raise typer.Exit(1)


@contextmanager
def progress(label: str, total: int, *, bar: bool = True, lines: bool = True) -> Iterator[Step]:
    """A :data:`Step` callback: it advances a progress bar on a terminal (``bar``), and
    otherwise prints its line (``lines``), flushed, for logs and pipes where no one
    watches a bar but a reader may follow entry by entry."""
    if not sys.stdout.isatty():

        def say(line: str) -> None:
            if lines:
                print(line, flush=True)

        yield say
        return
    if not bar:
        yield lambda _line: None
        return
    from rich.progress import Progress

    with Progress(console=out, transient=True) as shown:
        task = shown.add_task(label, total=total)
        yield lambda _line: shown.advance(task)
