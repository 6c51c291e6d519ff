"""``op.record.show``: the router's state of one record, for ``crmsync record show``."""

from __future__ import annotations

from typing import Any

from router import control
from router.daemon.context import RouterContext
from router.errors import CrmsyncError
from router.record import RecordState


def describe(state: RecordState) -> dict[str, Any]:
    """The state as plain data: each field with the clock and author of its value."""
    return {
        "record_id": state.record_id,
        "entity": state.entity,
        "clock": dict(state.clock),
        "deleted": state.deleted,
        "parked": state.parked,
        "last": {
            "source": state.source,
            "actor": state.actor,
            "event_id": state.event_id,
            "occurred_at": state.occurred_at.isoformat(),
        },
        "fields": {
            name: {
                "value": value,
                "clock": dict(state.field_clocks.get(name, state.clock)),
                "source": state.field_sources.get(name, state.source),
            }
            for name, value in sorted(state.fields.items())
        },
    }


class RecordOps:
    def __init__(self, ctx: RouterContext) -> None:
        self.ctx = ctx

    async def show(self, req: control.ShowRecord) -> control.RecordShown:
        state = await self.ctx.db(self.ctx.store.get, req.record_id)
        if state is None:
            raise CrmsyncError(
                f"no record {req.record_id} in the router's state (an id from crmsync "
                "conflicts list, a DLQ entry or an adapter's crmsync_link table)"
            )
        adapters = sorted(
            name for name, reg in self.ctx.registry.items() if state.entity in reg.entities
        )
        return control.RecordShown(record=describe(state), adapters=adapters)
