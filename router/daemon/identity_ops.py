"""``crmsync identity``: the events identity matching parked, and an operator's decision
on one (docs/identity.md).

A decision re-judges the parked event through the batch pipeline itself
(:func:`router.daemon.pipeline.decide_batch`) in one transaction with the decision:
``--link R`` stores the alias first, so the event is decided against R as any alias
is; ``--new`` tells the pipeline not to match its record id; ``--discard`` only drops
it. What the decision causes is stored with its outbox rows, then published.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from router import control, watermark_store
from router.authz import Principals
from router.broker.base import BrokerPublisher
from router.daemon.context import RouterContext
from router.daemon.pipeline import BatchOutcome, decide_batch, judge
from router.errors import CrmsyncError
from router.identity import Alias, IdentityWrites, ParkedIdentity
from router.logs import kv
from router.messages import Delivery, Outgoing
from router.state import VersionConflict

log = logging.getLogger("crmsync.router")


class _Settled:
    """A parked event is no broker delivery: there is nothing to ack."""

    async def ack(self, multiple: bool = False) -> None:
        return None

    async def nack(self, multiple: bool = False, requeue: bool = True) -> None:
        return None


@dataclass(frozen=True)
class _Done:
    decision: str
    record_id: str | None
    verdict: str | None
    messages: list[Outgoing]
    outbox_ids: list[str]


class IdentityOps:
    def __init__(self, ctx: RouterContext, publisher: BrokerPublisher) -> None:
        self.ctx = ctx
        self._publisher = publisher

    async def list(self, req: control.ListIdentities) -> control.Identities:
        found = await self.ctx.db(self.ctx.store.parked_identities, req.entity or None, req.limit)
        return control.Identities(identities=[p.summary() for p in found])

    async def resolve(self, req: control.ResolveIdentity) -> control.IdentityResolved:
        done = await self.ctx.db(self._commit, req)
        pending = False
        if done.messages:
            try:
                await self._publisher.publish_many(done.messages)
            except CrmsyncError as e:
                # Committed with its outbox rows: they will be sent. "Not ok" would make
                # the operator decide again.
                log.warning("identity decision not sent yet", extra=kv(error=str(e)))
                pending = True
            else:
                await self.ctx.db(self.ctx.store.delete_outbox, done.outbox_ids)
        log.info(
            "parked identity resolved",
            extra=kv(
                event_id=req.event_id,
                decision=done.decision,
                record_id=done.record_id or "",
                by=f"operator:{req.by or 'unknown'}",
            ),
        )
        self.ctx.stats.add(f"identity-{done.decision}")
        return control.IdentityResolved(
            event_id=req.event_id,
            decision=done.decision,
            record_id=done.record_id,
            verdict=done.verdict,
            pending=pending,
        )

    def _commit(self, req: control.ResolveIdentity) -> _Done:
        store, marks = self.ctx.store, self.ctx.marks
        outcomes: list[BatchOutcome] = []

        def work(conn: Connection) -> _Done:
            outcomes.clear()
            item = store.parked_identity(req.event_id, conn)
            if item is None:
                raise CrmsyncError(f"no parked event {req.event_id!r} (see crmsync identity list)")
            unparked = IdentityWrites(unparked=[item.event_id])
            if req.discard:
                store.commit_batch([], [], [], [], conn, identity=unparked)
                return _Done("discard", None, None, [], [])
            if req.link is not None:
                self._link(item, req.link, conn)
            out = self._rejudge(
                item, conn, frozenset() if req.link else frozenset({item.record_id})
            )
            outcomes.append(out)
            out.identity_writes.absorb(unparked)
            ids = store.commit_batch(
                out.processed,
                out.states,
                out.deliveries,
                [],
                conn,
                list(out.conflicts.values()),
                out.identity_writes,
            )
            if out.marks is not None:
                watermark_store.save(conn, out.marks.raised, marks.highs)
            verdict = Counter(out.verdicts).most_common(1)[0][0] if out.verdicts else None
            record_id = req.link or item.record_id
            return _Done("link" if req.link else "new", record_id, verdict, out.deliveries, ids)

        try:
            done = store.retrying(work)
        except VersionConflict:
            raise CrmsyncError(f"the records of {req.event_id} kept changing; try again") from None
        for out in outcomes:
            if out.marks is not None:
                marks.commit(out.marks)
            for verdict, n in out.verdicts.items():
                self.ctx.stats.add(verdict, n)
        return done

    def _link(self, item: ParkedIdentity, record_id: str, conn: Connection) -> None:
        store = self.ctx.store
        if record_id == item.record_id:
            raise CrmsyncError(f"{record_id} is the parked record itself; use --new")
        target = store.load([record_id], conn).get(record_id)
        if target is None or target.deleted:
            raise CrmsyncError(f"no live record {record_id} in the router's state")
        if target.entity != item.entity:
            raise CrmsyncError(f"record {record_id} is a {target.entity}, not a {item.entity}")
        alias = Alias(
            item.record_id,
            record_id,
            item.entity,
            item.source,
            item.source_record_id,
            time.time(),
        )
        # Stored before the event is judged again: the pipeline then rewrites it as it
        # rewrites every event of an alias.
        store.commit_batch([], [], [], [], conn, identity=IdentityWrites(aliases=[alias]))

    def _rejudge(
        self, item: ParkedIdentity, conn: Connection, unmatched: frozenset[str]
    ) -> BatchOutcome:
        key = f"{item.source}.{item.entity}.upsert"
        delivery = Delivery(item.body, key, _Settled(), message_id=item.event_id)
        # Who published it was checked when it arrived; only its source must still be
        # registered (a removed adapter's event is refused below, the decision undone).
        judged = judge([delivery], self.ctx.registry, Principals(), max_bytes=len(item.body) + 1)
        out = decide_batch(self.ctx, judged, conn, unmatched)
        if out.refused:
            refused = out.refused[0]
            raise CrmsyncError(
                f"the router refuses parked event {item.event_id}: {refused.reason}"
                + (
                    f" ({refused.detail})"
                    if refused.detail and refused.reason != "internal-error"
                    else ""
                )
            )
        return out
