"""``crmsync identity``: events identity matching parked (an ambiguous key, a duplicate
inside one CRM) and an operator's decision on each, asked of the router over
``crmsync.control`` (docs/identity.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from router import control
from router.cli.common import ConfigOpt, JsonOpt, broker_config, delivery_text, out, print_json
from router.errors import CrmsyncError

app = typer.Typer(
    help="Records identity matching could not place ([entities.E] match keys).",
    no_args_is_help=True,
)
ASK_TIMEOUT = 10.0  # seconds to wait for the router's answer


@app.command("list")
def list_(
    entity: Annotated[str | None, typer.Option(help="Only this entity.")] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Parked events, oldest first: why, and the records they could be."""
    from router.broker.rpc import call_router
    from router.cli.render_identity import render_list

    request = control.request(control.ListIdentities, entity=entity)
    reply = call_router(broker_config(config), request, control.Identities, ASK_TIMEOUT)
    if as_json:
        print_json(reply.identities, sort_keys=True)
        return
    render_list(reply.identities, out)


@app.command("resolve")
def resolve(
    event_id: Annotated[
        str, typer.Argument(metavar="EVENT_ID", help="From 'crmsync identity list'.")
    ],
    link: Annotated[
        str | None,
        typer.Option("--link", metavar="RECORD_ID", help="It is this record: link it (an alias)."),
    ] = None,
    new: Annotated[
        bool, typer.Option("--new", help="A customer of its own: a new record.")
    ] = False,
    discard: Annotated[bool, typer.Option("--discard", help="Drop the parked event.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Decide one parked event; the router judges it again as that decision says."""
    import getpass

    from router.broker.rpc import call_router

    if (link is not None) + new + discard != 1:
        raise CrmsyncError("say exactly one of --link RECORD_ID, --new, --discard")
    request = control.request(
        control.ResolveIdentity,
        event_id=event_id,
        link=link,
        new=new,
        discard=discard,
        by=getpass.getuser(),
    )
    reply = call_router(broker_config(config), request, control.IdentityResolved, ASK_TIMEOUT)
    if reply.decision == "discard":
        out.print(f"parked event {event_id} discarded", highlight=False)
        return
    how = "linked to" if reply.decision == "link" else "a new record"
    when = delivery_text(reply.pending)
    out.print(
        f"parked event {event_id} {how} {reply.record_id}: {reply.verdict or 'no change'}, {when}",
        highlight=False,
    )
