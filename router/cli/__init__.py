"""The ``crmsync`` command. Thin: parse options, load config, call the real code.

One module per command group; what they print is in the ``render_*`` modules, and the
procedures they run live beside the domain code (e.g. :mod:`router.dlq_ops`). Modules
that need the broker or the daemon are imported inside the commands, so that ``--help``
and the short commands start quickly.

Expected errors (bad config, unreachable broker, refused registration) print one line
and exit with the error's code; only bugs print a traceback.
"""

from __future__ import annotations

import sys

import typer

from router import logs
from router.cli import (
    conflicts,
    dlq,
    doctor,
    identity,
    kit,
    migrate,
    policy,
    record,
    run,
    status,
    topology,
    users,
)
from router.cli.common import err
from router.errors import CrmsyncError

app = typer.Typer(
    name="crmsync",
    help="Keep the customer records of many CRMs in sync through RabbitMQ.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(run.router)
app.command()(status.status)
app.command()(doctor.doctor)
app.command()(run.demo)
app.command()(migrate.migrate)
app.command()(migrate.reconcile)
app.add_typer(topology.app, name="topology")
app.add_typer(run.adapter_app, name="adapter")
run.adapter_app.command("conformance")(kit.conformance)
app.add_typer(dlq.app, name="dlq")
app.add_typer(conflicts.app, name="conflicts")
app.add_typer(policy.app, name="policy")
app.add_typer(identity.app, name="identity")
app.add_typer(record.app, name="record")
app.add_typer(users.app, name="users")


def main() -> None:
    """Entry point: usage errors are typer's (exit 2); crmsync's own are one line."""
    logs.quiet_libraries()
    try:
        app()
    except CrmsyncError as e:
        err.print(f"crmsync: error: {e}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
