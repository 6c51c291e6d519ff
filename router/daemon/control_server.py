"""The router's side of ``crmsync.control``: typed requests in, typed replies out.

A dispatch table maps each request model to its action. Whatever a message holds —
garbage, an unknown operation, a missing field, an action that fails — the sender gets
a :class:`~router.control.Failure` naming what is wrong (when it asked for a reply), the
router logs it, and the server keeps running.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from router import control, topology
from router import control_migration as cm
from router.authz import ADAPTER_REQUESTS
from router.broker.base import BrokerPublisher
from router.daemon.identity_ops import IdentityOps
from router.daemon.migration_ops import MigrationOps
from router.daemon.operations import Operations
from router.daemon.plan_ops import PlanOps
from router.daemon.record_ops import RecordOps
from router.daemon.stats import CONTROL_DENIED
from router.errors import CrmsyncError, PublishFailed
from router.logs import kv
from router.messages import Delivery, Outgoing

log = logging.getLogger("crmsync.router")

Action = Callable[[Any], Awaitable[control.Reply | None]]


class ControlServer:
    def __init__(self, operations: Operations, publisher: BrokerPublisher) -> None:
        self._publisher = publisher
        self._principals = operations.ctx.principals
        migrations = MigrationOps(operations.ctx, publisher)
        identity = IdentityOps(operations.ctx, publisher)
        self._actions: dict[type[control.Request], Action] = {
            control.Register: operations.register,
            control.Heartbeat: operations.heartbeat,
            control.StatusRequest: operations.status,
            control.EditRecord: operations.edit,
            control.RemoveAdapter: operations.remove,
            control.ListConflicts: operations.list_conflicts,
            control.ShowConflict: operations.show_conflict,
            control.ConflictHistory: operations.conflict_history,
            control.ResolveConflict: operations.resolve,
            cm.OpenMigration: migrations.open,
            cm.Checkpoint: migrations.checkpoint,
            cm.MigrationProgress: migrations.progress,
            cm.FinishMigration: migrations.finish,
            cm.Redeliver: migrations.redeliver,
            cm.DescribePair: migrations.pair,
            cm.PlanMatch: PlanOps(operations.ctx).match,
            control.ListIdentities: identity.list,
            control.ResolveIdentity: identity.resolve,
            control.ShowRecord: RecordOps(operations.ctx).show,
        }
        missing = set(control.REQUESTS.values()) - set(self._actions)
        assert not missing, f"control requests without an action: {missing}"

    async def on_message(self, message: Delivery) -> None:
        """The consumer callback: answer, then ack (a crash before the ack redelivers)."""
        try:
            reply = await self.handle(message.routing_key, message.body, message.user_id)
            if reply is not None and message.reply_to:
                await self._reply(message, reply)
        finally:
            await message.ack()

    async def handle(
        self, routing_key: str, body: bytes, user_id: str | None = None
    ) -> control.Reply | None:
        """The reply to one request (None for notifications such as heartbeats).
        ``user_id``: the broker-verified sender, checked against ``[security]``."""
        denied = self._principals.request_refusal(routing_key, user_id)
        if denied is not None:
            head = routing_key.split(".", 1)[0]
            kind = head if head in ADAPTER_REQUESTS else routing_key
            # Known requests only: a label per made-up key would let anyone grow the series.
            CONTROL_DENIED.labels(kind if kind in control.REQUESTS else "unknown").inc()
            log.warning("control request denied", extra=kv(key=routing_key, user=user_id or ""))
            return control.Failure(error=f"denied: {denied}")
        try:
            request = control.parse_request(routing_key, body)
            return await self._actions[type(request)](request)
        except CrmsyncError as e:
            log.warning("control request refused", extra=kv(key=routing_key, error=str(e)))
            return control.Failure(error=str(e))
        except Exception as e:  # a bug must not take the control plane down
            log.exception("control request failed", extra=kv(key=routing_key))
            return control.Failure(error=f"the router failed on {routing_key}: {e}")

    async def _reply(self, request: Delivery, reply: control.Reply) -> None:
        exchange, key = topology.reply_route(request.reply_to or "")
        with_id = Outgoing(exchange, key, reply.body(), correlation_id=request.correlation_id)
        try:
            await self._publisher.publish(with_id)
        except PublishFailed:
            pass  # the caller gave up and its reply queue is gone
        except CrmsyncError as e:
            log.warning("could not answer a control request", extra=kv(error=str(e)))
