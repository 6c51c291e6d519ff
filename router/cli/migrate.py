"""``crmsync migrate`` and ``crmsync reconcile``: bulk migration and drift repair through
the hub (procedures in :mod:`router.migrate` and :mod:`router.reconcile`)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from router.cli.common import ConfigOpt, JsonOpt, broker_config, err, out, print_json
from router.errors import EXIT_ERROR, CrmsyncError

T = TypeVar("T")
LINE_EVERY = 5.0  # seconds between plain progress lines (logs, pipes)


@contextmanager
def _progress(quiet: bool) -> Iterator[Callable[[str], None]]:
    """A spinner with the latest line on a terminal; otherwise a line every few seconds."""
    if quiet:
        yield lambda _line: None
        return
    if not sys.stderr.isatty():
        last = [0.0]

        def say(line: str) -> None:
            now = time.monotonic()
            if now - last[0] >= LINE_EVERY:
                last[0] = now
                print(line, file=sys.stderr, flush=True)

        yield say
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as shown:
        task = shown.add_task("starting", total=None)
        yield lambda line: shown.update(task, description=line)


def _run(config: Path | None, work: Callable[[Any], Awaitable[T]]) -> T:
    """``work(hub)`` on one connection; Ctrl-C stops it with the checkpoint kept."""
    from router.broker.aio import connect
    from router.broker.rpc import RpcClient
    from router.migrate import Hub

    async def go() -> T:
        connection = await connect(broker_config(config), "crmsync-migrate")
        try:
            return await work(Hub(RpcClient(connection)))
        finally:
            await connection.close()

    try:
        return asyncio.run(go())
    except KeyboardInterrupt:
        err.print("stopped; the checkpoint is kept: run the same command with --resume")
        raise typer.Exit(130) from None


def migrate(
    source: Annotated[str, typer.Option("--from", help="The adapter whose CRM is read.")],
    target: Annotated[str, typer.Option("--to", help="The adapter whose CRM is filled.")],
    entity: Annotated[
        list[str] | None, typer.Option("--entity", help="Only this entity (repeatable).")
    ] = None,
    rate: Annotated[
        float | None, typer.Option(help="Records per second written to the target (N/s).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Records per batch.", min=1, max=5000)] = 500,
    resume: Annotated[bool, typer.Option(help="Continue the unfinished migration.")] = False,
    dry_run: Annotated[
        bool, typer.Option(help="Print the plan; change nothing in either CRM or the hub.")
    ] = False,
    report: Annotated[
        Path | None, typer.Option(help="Write the report with per-record lists here (JSON).")
    ] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Move every record of the source CRM into the target CRM through the hub, then
    verify each one; the live sync goes on from where it ends."""
    from router.migrate import Plan, run

    plan = Plan(source, target, list(entity or []), batch_size, rate, resume)
    if dry_run:
        _dry_run(plan, report, as_json, config)
        return
    with _progress(as_json) as say:
        result = _run(config, lambda hub: run(hub, plan, say))
    _write(report, result.full())
    if as_json:
        print_json(result.summary())
    else:
        from router.cli.render_migrate import render_report

        render_report(out, result, report)
    if not result.clean:
        raise typer.Exit(EXIT_ERROR)


def _dry_run(plan: Any, report: Path | None, as_json: bool, config: Path | None) -> None:
    from router.migrate_dry import dry_run

    if plan.resume:
        raise CrmsyncError("--dry-run plans a whole migration: it takes no --resume")
    with _progress(as_json) as say:
        result = _run(config, lambda hub: dry_run(hub, plan, say, keep_records=report is not None))
    _write(report, result.full())
    if as_json:
        print_json(result.summary())
    else:
        from router.cli.render_migrate import render_plan

        render_plan(out, result, report)
    if not result.clean:
        raise typer.Exit(EXIT_ERROR)


def _write(report: Path | None, data: dict[str, Any]) -> None:
    if report is None:
        return
    try:
        report.write_text(json.dumps(data, indent=2) + "\n")
    except OSError as e:
        raise CrmsyncError(f"cannot write the report to {report}: {e.strerror}") from None


def reconcile(
    a: Annotated[str, typer.Argument(metavar="A", help="One adapter.")],
    b: Annotated[str, typer.Argument(metavar="B", help="The other adapter.")],
    entity: Annotated[
        list[str] | None, typer.Option("--entity", help="Only this entity (repeatable).")
    ] = None,
    repair: Annotated[bool, typer.Option(help="Repair the drift through the hub.")] = False,
    prefer: Annotated[
        str | None, typer.Option(help="With --repair: this side's content wins (A or B's name).")
    ] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Compare two CRMs record by record through the id map; with --repair, make them
    (and every other CRM) equal the hub's version again, then compare again."""
    from router.reconcile import run as run_reconcile

    if prefer is not None and prefer not in (a, b):
        raise CrmsyncError(f"--prefer names {prefer!r}, which is neither {a!r} nor {b!r}")
    if prefer is not None and not repair:
        raise CrmsyncError("--prefer only means something with --repair")
    with _progress(as_json) as say:
        result = _run(
            config, lambda hub: run_reconcile(hub, a, b, list(entity or []), repair, prefer, say)
        )
    if as_json:
        print_json(result.as_dict())
    else:
        from router.cli.render_migrate import render_reconcile

        render_reconcile(out, result)
    if result.drift:
        raise typer.Exit(EXIT_ERROR)
