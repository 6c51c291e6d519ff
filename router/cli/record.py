"""``crmsync record show RECORD_ID``: one record, as the hub and each CRM hold it."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from router.cli.common import ConfigOpt, JsonOpt, broker_config, out, print_json

app = typer.Typer(help="Look at one record across the hub and the CRMs.", no_args_is_help=True)


@app.command("show")
def show(
    record_id: Annotated[str, typer.Argument(metavar="RECORD_ID", help="The global record id.")],
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each answer.")] = 5.0,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """The router's state (values, each one's clock and author, tombstone, open
    conflict) and, asked of each adapter, what its CRM holds now. Shows customer values:
    an operator's command (it needs an operator's broker user where [security] is set)."""
    from router import record_view

    data = record_view.show(broker_config(config), record_id, timeout)
    if as_json:
        print_json(data, sort_keys=True)
        return
    hub = data["hub"]
    state = "deleted (tombstone)" if hub["deleted"] else "live"
    out.print(f"[bold]{hub['entity']} {hub['record_id']}[/]: {state}, clock {hub['clock']}")
    if hub["parked"]:
        out.print(f"[bold red]parked in conflict {hub['parked']}[/]: crmsync conflicts show")
    fields = Table("field", "hub's value", "set by", "at clock")
    for name, f in hub["fields"].items():
        fields.add_row(name, str(f["value"]), f["source"], str(f["clock"]))
    out.print(fields)
    crms = Table("crm", "holds", "its values where they differ from the hub's")
    for name, crm in data["crms"].items():
        mine = crm.get("fields") or {}
        diff = {k: v for k, v in mine.items() if hub["fields"].get(k, {}).get("value") != v}
        crms.add_row(
            name, record_view.summary(hub, crm), ", ".join(f"{k}={v}" for k, v in diff.items())
        )
    out.print(crms)
