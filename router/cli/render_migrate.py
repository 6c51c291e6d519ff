"""What ``crmsync migrate`` and ``crmsync reconcile`` print for a person."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from router.migrate import Report
    from router.migrate_dry import DryRunReport
    from router.reconcile import Result

COLUMNS = (
    "source",
    "created",
    "linked",
    "updated",
    "unchanged",
    "invalid",
    "duplicates",
    "ambiguous",
    "failed",
    "mismatched",
)


def render_report(console: Console, report: Report, written: Path | None) -> None:
    table = Table(title=f"migration {report.migration_id}: {report.source} -> {report.target}")
    table.add_column("entity")
    for name in COLUMNS:
        table.add_column(name, justify="right")
    for entity, counts in report.entities.items():
        values = counts.as_dict()
        table.add_row(entity, *(str(values[name]) for name in COLUMNS))
    console.print(table)
    if report.nothing_to_do and report.verified:
        console.print("nothing to migrate: every record was already in the target, identical")
    if report.verified:
        console.print(f"verified: every migrated record is identical in {report.target}")
    else:
        console.print(f"NOT verified: some records are missing or different in {report.target}")
    problems = {k: len(v) for k, v in report.records.items() if v}
    if problems:
        listed = ", ".join(f"{n} {k}" for k, n in sorted(problems.items()))
        where = f"see {written}" if written else "add --report FILE for the per-record lists"
        console.print(f"to look at: {listed} ({where})")
    console.print(f"took {report.elapsed:.1f}s")


def render_plan(console: Console, plan: DryRunReport, written: Path | None) -> None:
    from router.migrate_plan import OUTCOMES

    table = Table(title=f"dry run: {plan.source} -> {plan.target} (nothing was changed)")
    table.add_column("entity")
    for name in ("source", *OUTCOMES):
        table.add_column(name, justify="right")
    for entity, counts in plan.entities.items():
        table.add_row(entity, *(str(counts[name]) for name in ("source", *OUTCOMES)))
    console.print(table)
    problems = {
        k: sum(c[k] for c in plan.entities.values()) for k in ("invalid", "ambiguous", "duplicates")
    }
    listed = ", ".join(f"{n} {k}" for k, n in problems.items() if n)
    if listed:
        where = f"see {written}" if written else "add --report FILE for the per-record lists"
        console.print(f"would not migrate: {listed} ({where})")
    elif not any(c["create"] or c["link"] or c["update"] for c in plan.entities.values()):
        console.print("nothing to migrate: every record is already in the target, identical")


def render_reconcile(console: Console, result: Result) -> None:
    table = Table(title=f"reconcile {result.a} <-> {result.b}")
    for name in ("entity", "compared", "equal", "missing_in_a", "missing_in_b", "different"):
        table.add_column(name, justify="left" if name == "entity" else "right")
    table.add_column("repaired", justify="right")
    for entity, t in result.entities.items():
        table.add_row(
            entity,
            str(t.compared),
            str(t.equal),
            str(t.missing_in_a),
            str(t.missing_in_b),
            str(t.different),
            str(result.repaired.get(entity, 0)),
        )
    console.print(table)
    console.print("no drift" if not result.drift else f"{result.drift} records drifted")
