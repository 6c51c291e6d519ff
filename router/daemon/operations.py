"""What operators and adapters ask of the router: register, edit, resolve, remove, look.

Each action takes a typed request of :mod:`router.control` and returns a typed reply;
an expected refusal is a :class:`~router.errors.CrmsyncError` whose text becomes the
reply's one-line ``error`` (the control server does that).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.engine import Connection

from router import control, topology, watermark_store
from router.broker.base import BrokerConnection, BrokerPublisher
from router.config import parse_duration
from router.conflicts import Conflict, summary
from router.conflicts import detail as conflict_detail
from router.daemon import leader
from router.daemon.context import RouterContext
from router.daemon.identity_step import name_aliases
from router.daemon.pipeline import delivery
from router.decide import edit_version, resolve_parked
from router.errors import CrmsyncError
from router.events import ChangeEvent, utcnow
from router.logs import kv
from router.messages import Outgoing
from router.policies import Choice, SetValue, TakeSide
from router.provenance import sides_of
from router.record import RecordState
from router.registry import register, rewound
from router.state import VersionConflict
from router.watermarks import BatchMarks

log = logging.getLogger("crmsync.router")

# A hub version to store and send, with the conflict it settles (if any).
Version = tuple[RecordState, ChangeEvent, Conflict | None]
Build = Callable[[RecordState, Connection], Version]


class Operations:
    def __init__(
        self, ctx: RouterContext, connection: BrokerConnection, publisher: BrokerPublisher
    ) -> None:
        self.ctx = ctx
        self._connection = connection
        self._publisher = publisher

    # -- adapters -----------------------------------------------------------------------
    async def register(self, req: control.Register) -> control.Registered:
        existing, highs = self.ctx.registry.get(req.name), self.ctx.marks.highs
        behind = rewound(existing, req.actor, req.highest, highs) if req.actor else None
        reg = register(
            existing,
            req.name,
            req.actor,
            {entity: list(fields) for entity, fields in req.entities.items()},
            req.version,
            time.time(),
            req.highest,
            highs,
        )
        # The adapter's queues are the router's to declare (a least-privilege adapter user
        # may not: a queue's dead-letter exchange needs write on it); declaring them here
        # also means a delivery is never unroutable because of the order processes start.
        await self._connection.declare(
            topology.adapter_queues(req.name, _tiers(req.retry_tiers)), hub=False
        )
        await self.ctx.db(self.ctx.store.save_registration, reg)
        self.ctx.registered(reg)
        log.info(
            "adapter registered",
            extra=kv(adapter=req.name, actor=reg.actor, entities=",".join(sorted(req.entities))),
        )
        if behind:
            log.warning(
                "adapter state behind what it published: issued a new epoch",
                extra=kv(adapter=req.name, claimed=req.actor or "", actor=reg.actor),
            )
        return control.Registered(
            actor=reg.actor, epoch=reg.epoch, rewound=behind or "", accept_from=self._senders()
        )

    def _senders(self) -> list[str]:
        """Who may publish into a sink (item 4 of issue 13): this router's user (what it
        signs its deliveries with) and the operators' (DLQ replays); nothing when
        ``[security]`` is not set."""
        principals = self.ctx.principals
        if not principals.enforced:
            return []
        mine = [u for u in (self._connection.user, principals.router_user) if u]
        return sorted({*mine, *principals.operators})

    async def heartbeat(self, req: control.Heartbeat) -> None:
        self.ctx.beats[req.name] = time.time()
        if req.capture is not None:
            self.ctx.capture_health[req.name] = req.capture

    async def remove(self, req: control.RemoveAdapter) -> control.Removed:
        removed = await self.ctx.db(self.ctx.store.remove_registration, req.name)
        self.ctx.removed(req.name)
        if not removed:
            raise CrmsyncError(f"no adapter named {req.name!r} is registered")
        log.info("adapter removed", extra=kv(adapter=req.name))
        return control.Removed(queue=topology.sink_queue(req.name))

    async def status(self, _req: control.StatusRequest) -> control.Status:
        ctx = self.ctx
        counts = await ctx.db(ctx.store.counts)
        now = time.time()
        stats = ctx.stats
        return control.Status(
            hub_actor=ctx.store.hub_actor,
            heartbeat_timeout=parse_duration(ctx.config.router.heartbeat_timeout),
            uptime=now - stats.started_at,
            last_batch_age=now - stats.last_batch_at if stats.last_batch_at else None,
            verdicts=dict(stats.verdicts),
            invalid=dict(stats.invalid),
            store=counts,
            active_router=await ctx.db(leader.active, ctx.store.engine),
            adapters=[
                control.AdapterStatus(
                    name=r.name,
                    actor=r.actor,
                    entities=sorted(r.entities),
                    version=r.sw_version,
                    last_heartbeat=ctx.beats.get(r.name, r.last_heartbeat),
                    capture=ctx.capture_health.get(r.name),
                )
                for r in sorted(ctx.registry.values(), key=lambda r: r.name)
            ],
        )

    # -- edit & retry -------------------------------------------------------------------
    async def edit(self, req: control.EditRecord) -> control.VersionMade:
        """Edit & retry: the edited record becomes a new hub version for every CRM."""
        record_id, changes = req.record_id, req.set

        def build(stored: RecordState, _conn: Connection) -> Version:
            if req.entity and stored.entity != req.entity:
                raise CrmsyncError(f"record {record_id} is a {stored.entity}, not {req.entity}")
            if stored.deleted:
                raise CrmsyncError(f"record {record_id} is deleted; nothing to edit")
            if stored.parked:
                raise CrmsyncError(
                    f"record {record_id} is parked in conflict {stored.parked}; "
                    f"resolve it first (crmsync conflicts show {stored.parked})"
                )
            mapped = {
                f for reg in self.ctx.registry.values() for f in reg.entities.get(stored.entity, [])
            }
            unknown = sorted(set(changes) - mapped - set(stored.fields))
            if unknown:
                raise CrmsyncError(f"no adapter maps {', '.join(unknown)} for {stored.entity}")
            state, event = edit_version(stored, dict(changes), self.ctx.store.hub_actor, utcnow())
            return state, event, None

        reply = await self._hub_version(record_id, build)
        self.ctx.stats.add("edited")
        return reply

    async def _hub_version(self, record_id: str, build: Build) -> control.VersionMade:
        """Store a version the hub makes of ``record_id`` (an edit, a resolution) with its
        outbox row, then send it to every subscriber."""
        event, message, outbox_id = await self.ctx.db(self._commit_version, record_id, build)
        try:
            await self._publisher.publish(message)
        except CrmsyncError as e:
            # Committed with its outbox row: it will be sent. Saying "not ok" here would
            # make the operator act again and create a second version.
            log.warning(
                "hub version not sent yet; it stays owed in the outbox",
                extra=kv(event_id=event.event_id, record_id=record_id, error=str(e)),
            )
            return control.VersionMade(event_id=event.event_id, clock=event.clock, pending=True)
        await self.ctx.db(self.ctx.store.delete_outbox, [outbox_id])
        log.info(
            "hub version sent",
            extra=kv(event_id=event.event_id, record_id=record_id, fields=",".join(event.changed)),
        )
        return control.VersionMade(event_id=event.event_id, clock=event.clock)

    def _commit_version(self, record_id: str, build: Build) -> tuple[ChangeEvent, Outgoing, str]:
        store, marks = self.ctx.store, self.ctx.marks
        made: list[BatchMarks] = []

        def work(conn: Connection) -> tuple[ChangeEvent, Outgoing, str]:
            made.clear()
            stored = store.load([record_id], conn).get(record_id)
            if stored is None:
                raise CrmsyncError(f"no record {record_id} in the router's state")
            state, event, conflict = build(stored, conn)
            targets = tuple(self.ctx.subscribers(stored.entity))
            if not targets:
                raise CrmsyncError(f"no adapter subscribes to {stored.entity}")
            message = delivery(event, targets)
            if stored.entity in store.match_keys:  # a CRM may know the record by an alias
                name_aliases(message, store.aliases_of([record_id], conn).get(record_id))
            [outbox_id] = store.commit_batch(
                [], [state], [message], [], conn, [conflict] if conflict else []
            )
            # The hub's counter went up: adapters will publish clocks that carry it.
            made.append(marks.batch())
            made[0].observe(state.clock)
            watermark_store.save(conn, made[0].raised, marks.highs)
            return event, message, outbox_id

        try:
            result = store.retrying(work)
            marks.commit(made[0])
            return result
        except VersionConflict:
            raise CrmsyncError(f"record {record_id} kept changing; try again") from None

    # -- conflicts ----------------------------------------------------------------------
    async def list_conflicts(self, req: control.ListConflicts) -> control.Conflicts:
        found = await self.ctx.db(self.ctx.store.open_conflicts, req.entity or None)
        now = utcnow()
        return control.Conflicts(conflicts=[summary(c, now) for c in found])

    async def show_conflict(self, req: control.ShowConflict) -> control.ConflictShown:
        return control.ConflictShown(conflict=_detail(await self._conflict(req.id), utcnow()))

    async def conflict_history(self, req: control.ConflictHistory) -> control.Conflicts:
        found = await self.ctx.db(self.ctx.store.conflict_history, req.record_id)
        if not found and not await self.ctx.db(self.ctx.store.get, req.record_id):
            raise CrmsyncError(f"no record {req.record_id} in the router's state")
        now = utcnow()
        return control.Conflicts(conflicts=[_detail(c, now) for c in found])

    async def _conflict(self, conflict_id: str) -> Conflict:
        found = await self.ctx.db(self.ctx.store.load_conflicts, [conflict_id])
        if conflict_id not in found:
            raise CrmsyncError(f"no conflict {conflict_id!r} (see crmsync conflicts list)")
        return found[conflict_id]

    async def resolve(self, req: control.ResolveConflict) -> control.VersionMade:
        """An operator's decision on a parked conflict: a hub version for every CRM."""
        choices: dict[str, Choice] = {name: TakeSide(src) for name, src in req.fields.items()}
        for name, value in req.values.items():
            if name in choices:
                raise CrmsyncError(f"{name} is chosen twice (--field and --value)")
            choices[name] = SetValue(value)
        if req.take is None and not choices:
            raise CrmsyncError("say what to keep: --take SOURCE, --field or --value")
        who = f"operator:{req.by or 'unknown'}"
        record_id = (await self._conflict(req.id)).record_id

        def build(stored: RecordState, conn: Connection) -> Version:
            store = self.ctx.store
            conflict = store.load_conflicts([req.id], conn).get(req.id)
            if conflict is None:
                raise CrmsyncError(f"no conflict {req.id!r}")
            rules = self.ctx.rules_for(stored.entity)
            try:
                return resolve_parked(
                    stored, conflict, rules, store.hub_actor, who, req.take, choices
                )
            except ValueError as e:
                raise CrmsyncError(str(e)) from None

        reply = await self._hub_version(record_id, build)
        self.ctx.stats.add("resolved-by-operator")
        log.info(
            "parked conflict resolved", extra=kv(conflict_id=req.id, record_id=record_id, by=who)
        )
        return reply.model_copy(update={"conflict": req.id})


def _detail(conflict: Conflict, now: datetime) -> dict[str, object]:
    """``conflicts show``: which sides' edits are in play, as the resolver decides it."""
    return conflict_detail(conflict, now, sides_of(conflict.sides, conflict.base))


def _tiers(labels: list[str]) -> list[tuple[str, float]]:
    """(label, seconds) of the retry tiers an adapter registered with (its retry.delays)."""
    try:
        return [(label, parse_duration(label)) for label in labels]
    except ValueError as e:
        raise control.BadRequest(f"register: retry_tiers: {e}") from None
