"""Send the hub's current version of records to adapters as *repairs*.

A repair delivery carries ``x-crmsync-repair``: the adapter writes it over whatever its
row holds where that differs from what it last applied, even under a clock it already
has (drift is a change capture never saw, so the usual clock check would call the
delivery a duplicate). Shared by ``crmsync reconcile --repair`` (``op.redeliver``) and
the periodic anti-entropy, so both repair exactly the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

from router import topology
from router.batches import REPAIR_HEADER
from router.broker.base import BrokerPublisher
from router.daemon.identity_step import name_aliases
from router.daemon.migration import state_event
from router.events import encode
from router.identity import Alias
from router.logs import kv
from router.messages import Outgoing
from router.record import RecordState

log = logging.getLogger("crmsync.router")


def sendable(states: Iterable[RecordState], entity: str) -> list[RecordState]:
    """The states a repair may send: of ``entity`` and not parked (a parked record waits
    for an operator; sending it would decide the conflict behind their back)."""
    return [s for s in states if s.parked is None and s.entity == entity]


def repair_message(
    state: RecordState, targets: Sequence[str], aliases: Sequence[Alias] | None = None
) -> Outgoing:
    """``aliases``: the record's, named as on a live delivery, so a CRM whose row is
    still linked under the id identity matching aliased re-keys it instead of writing
    the customer a second time."""
    event = state_event(state).model_copy(update={"origin": "replay"})
    first, *rest = targets
    headers: dict[str, object] = {topology.RECORD_KEY_HEADER: state.record_id, REPAIR_HEADER: True}
    if rest:
        headers["BCC"] = rest
    item = Outgoing(topology.DELIVERIES, first, encode(event), event.event_id, headers)
    name_aliases(item, aliases)
    return item


async def send_repairs(
    publisher: BrokerPublisher,
    states: Sequence[RecordState],
    targets: Sequence[str],
    aliases: Mapping[str, Sequence[Alias]],
    **context: str,
) -> int:
    """Publish one repair per state to ``targets`` (confirmed by the broker on return)
    and log one line per record: ids only, ``context`` names who asked and why.
    ``aliases``: per record id, its aliases (:meth:`RouterStore.aliases_of`)."""
    if not states or not targets:
        return 0
    items = [repair_message(s, targets, aliases.get(s.record_id)) for s in states]
    await publisher.publish_many(items)
    for state in states:
        log.info(
            "repair sent",
            extra=kv(record_id=state.record_id, targets=",".join(targets), **context),
        )
    return len(states)
