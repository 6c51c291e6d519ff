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


class _Shown:
    """How a long command shows progress: on a terminal a bar per entity with its count,
    rate and time left, the latest line beside it; elsewhere a line every few seconds."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: Any = None
        self._tasks: dict[str, Any] = {}
        self._last = 0.0

    def say(self, line: str) -> None:
        now = time.monotonic()
        first = line.startswith(("starting", "resuming"))
        if self.quiet or (now - self._last < LINE_EVERY and not first):
            return
        self._last = now
        if self.bar is not None:
            self.bar.console.log(line)  # above the bars, which keep their place
        else:
            print(line, file=sys.stderr, flush=True)

    def meter(self, entity: str, done: int, total: int | None) -> None:
        if self.bar is None:
            return
        task = self._tasks.get(entity)
        if task is None:
            task = self._tasks[entity] = self.bar.add_task(entity, total=total)
        self.bar.update(task, completed=done, total=total)


@contextmanager
def _progress(quiet: bool) -> Iterator[_Shown]:
    shown = _Shown(quiet)
    if quiet or not sys.stderr.isatty():
        yield shown
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        shown.bar = _RateBar(bar)
        yield shown


class _RateBar:
    """rich's Progress with a records/s field kept up to date from its own speed."""

    def __init__(self, progress: Any) -> None:
        self._progress = progress
        self.console = progress.console

    def add_task(self, description: str, total: int | None) -> Any:
        return self._progress.add_task(description, total=total, rate="")

    def update(self, task: Any, completed: int, total: int | None) -> None:
        self._progress.update(task, completed=completed, total=total)
        speed = next(t.speed for t in self._progress.tasks if t.id == task)
        self._progress.update(task, rate=f"{speed:,.0f} rec/s" if speed else "")


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
    with _progress(as_json) as shown:
        result = _run(config, lambda hub: run(hub, plan, shown.say, shown.meter))
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
    with _progress(as_json) as shown:
        keep = report is not None
        result = _run(config, lambda hub: dry_run(hub, plan, shown.say, keep, shown.meter))
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
    with _progress(as_json) as shown:
        result = _run(
            config,
            lambda hub: run_reconcile(hub, a, b, list(entity or []), repair, prefer, shown.say),
        )
    if as_json:
        print_json(result.as_dict())
    else:
        from router.cli.render_migrate import render_reconcile

        render_reconcile(out, result)
    if result.drift:
        raise typer.Exit(EXIT_ERROR)
