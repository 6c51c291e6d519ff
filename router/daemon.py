"""The router daemon: consume -> decode -> decide -> store -> publish -> ack, in batches.

The rules live in :mod:`router.decide`; this module is the I/O shell around them. Per
batch: one state transaction (inbox + records + outbox), one gathered round of
publisher confirms, one multi-ack. Nothing is acked upstream before what it caused is
confirmed downstream; a crash anywhere only causes redelivery, which the inbox and the
clocks make harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import prometheus_client as prom
import sqlalchemy as sa
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from sqlalchemy.engine import Connection

from router import control, topology
from router.batching import Batcher
from router.config import RouterConfig, parse_duration
from router.conflicts import Conflict, summary
from router.conflicts import detail as conflict_detail
from router.decide import Verdict, decide, edit_version, resolve_parked, sides_of
from router.errors import (
    BrokerUnavailable,
    CrmsyncError,
    DecodeError,
    PublishFailed,
)
from router.events import ChangeEvent, decode, encode, utcnow
from router.logs import kv
from router.policies import Choice, Rules, SetValue, TakeSide
from router.record import RecordState
from router.registry import register, subscribers
from router.state import Registration, RouterStore, VersionConflict
from router.transport import Outgoing, Publisher, connect

log = logging.getLogger("crmsync.router")
T = TypeVar("T")

EVENTS = prom.Counter("crmsync_router_events", "Events judged by the router", ["verdict"])
INVALID = prom.Counter("crmsync_router_invalid", "Events refused to the invalid queue", ["reason"])
BATCH_SECONDS = prom.Histogram("crmsync_router_batch_seconds", "Time to process one batch")
OPEN_CONFLICTS = prom.Gauge(
    "crmsync_router_conflicts_open", "Conflicts parked for an operator (manual policy)"
)


@dataclass
class Stats:
    """Counters the router reports over ``op.status``."""

    verdicts: Counter[str] = field(default_factory=Counter)
    invalid: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    started_at: float = field(default_factory=time.time)
    last_batch_at: float = 0.0

    def add(self, verdict: str, n: int = 1) -> None:
        self.verdicts[verdict] += n
        EVENTS.labels(verdict).inc(n)

    def add_invalid(self, reason: str) -> None:
        self.invalid[reason] += 1
        INVALID.labels(reason).inc()


@dataclass
class BatchOutcome:
    """What one batch decided: to store, to send, to refuse, and the verdict counts."""

    processed: list[str] = field(default_factory=list)
    states: list[RecordState] = field(default_factory=list)
    deliveries: list[Outgoing] = field(default_factory=list)
    reused: list[tuple[ChangeEvent, str]] = field(default_factory=list)
    verdicts: Counter[str] = field(default_factory=Counter)
    outbox_ids: list[str] = field(default_factory=list)
    conflicts: dict[str, Conflict] = field(default_factory=dict)  # opened, joined, settled


@dataclass(frozen=True)
class Refused:
    message: AbstractIncomingMessage
    reason: str
    detail: str


class Router:
    def __init__(self, config: RouterConfig, new_hub_epoch: bool = False) -> None:
        self.config = config
        self._rules: dict[str, Rules] = {}
        self._new_hub_epoch = new_hub_epoch
        self.stats = Stats()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crmsync-state")
        self._store: RouterStore | None = None
        self._registry: dict[str, Registration] = {}
        self._subscriber_cache: dict[str, list[str]] = {}
        self._beats: dict[str, float] = {}
        self._batcher = Batcher(config.router.batch_size, parse_duration(config.router.linger))
        self._stopping = asyncio.Event()
        self._confirmed_outbox: list[str] = []
        self._connection: AbstractRobustConnection | None = None
        self._publisher: Publisher | None = None
        self._retention = parse_duration(config.state.inbox_retention)
        self._conflict_retention = parse_duration(config.state.conflict_retention)
        self.ready = asyncio.Event()

    # -- plumbing -----------------------------------------------------------------------
    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        """Every store call runs on one worker thread: serialised, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @property
    def store(self) -> RouterStore:
        assert self._store is not None, "router not started"
        return self._store

    def stop(self) -> None:
        """Finish the batch in hand, then return from :meth:`run`."""
        self._stopping.set()
        self._batcher.close()

    async def run(self) -> None:
        self._store = await self._db(RouterStore, self.config.state.url)
        if self._new_hub_epoch:
            actor = await self._db(self._store.bump_hub_epoch)
            log.warning("state restored: the hub starts a new actor epoch", extra=kv(actor=actor))
        self._registry = await self._db(self.store.registrations)
        self._warn_unknown_sources()
        self._connection = await connect(self.config.broker, "crmsync-router")
        try:
            await topology.declare(self._connection)
            await self._declare_sinks()
            self._publisher = await Publisher.open(self._connection)
            await self._flush_outbox()
            ingress_channel = await self._connection.channel()
            await ingress_channel.set_qos(prefetch_count=self.config.router.prefetch)
            ingress = await ingress_channel.declare_queue(topology.INGRESS, passive=True)
            control_channel = await self._connection.channel()
            await control_channel.set_qos(prefetch_count=32)
            ctl = await control_channel.declare_queue(topology.ROUTER_CONTROL, passive=True)
            await ctl.consume(self._on_control)
            await ingress.consume(self._batcher.add)
            log.info(
                "router started",
                extra=kv(hub_actor=self.store.hub_actor, adapters=",".join(sorted(self._registry))),
            )
            self.ready.set()
            housekeeping = asyncio.create_task(self._housekeeping())
            try:
                await self._batch_loop()
            finally:
                housekeeping.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await housekeeping
                await self._db(self.store.touch_heartbeats, dict(self._beats))
        finally:
            with contextlib.suppress(Exception):
                await self._connection.close()
            if self._store is not None:
                await self._db(self._store.close)
            self._executor.shutdown(wait=True)
            log.info("router stopped", extra=kv(**dict(self.stats.verdicts)))

    def _warn_unknown_sources(self) -> None:
        """A priority list naming a source that never registered ranks nothing: most
        likely a typo (``crmsync policy check`` catches it before deploying), or a CRM
        that has not joined yet."""
        for entity, conflict in sorted(self.config.conflicts.items()):
            unknown = [name for name in conflict.priority if name not in self._registry]
            if unknown and self._registry:
                log.warning(
                    "priority names sources that never registered",
                    extra=kv(entity=entity, sources=",".join(unknown)),
                )

    async def _batch_loop(self) -> None:
        while not self._stopping.is_set():
            batch = await self._batcher.take()
            if not batch:
                continue
            try:
                with BATCH_SECONDS.time():
                    await self._process(batch)
            except (
                BrokerUnavailable,
                PublishFailed,
                ConnectionError,
                sa.exc.OperationalError,
            ) as e:
                # Owed deliveries of a committed batch are in the outbox. Every message we
                # hold goes back to the queue: the inbox makes the committed ones no-ops.
                held = [*batch, *self._batcher.drain()]
                log.warning(
                    "batch not completed, will retry", extra=kv(error=str(e), held=len(held))
                )
                for message in held:
                    with contextlib.suppress(Exception):  # a dead channel redelivers anyway
                        await message.nack(requeue=True)
                await self._recover()

    async def _declare_sinks(self) -> None:
        """Every registered adapter's sink exists, so no delivery is returned as unroutable
        because someone deleted a queue or the broker lost its definitions."""
        assert self._connection is not None
        for name in sorted(self._registry):
            await topology.declare(self._connection, topology.adapter_queues(name), hub=False)

    async def _recover(self) -> None:
        while not self._stopping.is_set():
            await asyncio.sleep(1.0)
            try:
                await self._declare_sinks()
                await self._flush_outbox()
                return
            except Exception as e:  # anything: keep trying until the broker is back
                log.warning("still cannot publish owed deliveries", extra=kv(error=str(e)))

    async def _flush_outbox(self) -> None:
        assert self._publisher is not None
        pending = await self._db(self.store.pending_outbox)
        if pending:
            log.info("publishing owed deliveries from the outbox", extra=kv(count=len(pending)))
            for start in range(0, len(pending), 500):
                chunk = pending[start : start + 500]
                await self._publisher.publish_many([item for _, item in chunk])
                await self._db(self.store.delete_outbox, [oid for oid, _ in chunk])
        self._confirmed_outbox = []

    # -- the batch --------------------------------------------------------------------
    def _judge(
        self, messages: list[AbstractIncomingMessage]
    ) -> tuple[list[ChangeEvent], list[Refused], dict[str, AbstractIncomingMessage]]:
        events: list[ChangeEvent] = []
        origin: dict[str, AbstractIncomingMessage] = {}
        refused: list[Refused] = []
        seen_ids: set[str] = set()
        for message in messages:
            try:
                event = decode(message.body)
            except DecodeError as e:
                refused.append(Refused(message, e.reason, e.detail))
                continue
            expected_user = self.config.security.adapter_users.get(event.source)
            if expected_user is not None and message.user_id != expected_user:
                refused.append(
                    Refused(
                        message,
                        "spoofed-source",
                        f"source {event.source!r} must be published by user {expected_user!r}, "
                        f"not {message.user_id or '(no user_id)'!r}",
                    )
                )
                continue
            if event.source not in self._registry:
                refused.append(
                    Refused(
                        message, "unregistered-source", f"source {event.source!r} never registered"
                    )
                )
                continue
            if event.event_id in seen_ids:
                continue  # the same event twice in one batch (a redelivery overtook its ack)
            seen_ids.add(event.event_id)
            origin[event.event_id] = message
            events.append(event)
        return events, refused, origin

    def _apply(
        self,
        events: list[ChangeEvent],
        bodies: dict[str, bytes],
        redelivered: set[str],
        conn: Connection,
    ) -> BatchOutcome:
        """Runs on the store thread, inside the batch's transaction: dedup and decide."""
        store = self.store
        out = BatchOutcome()
        # Only a message the broker marks redelivered can repeat an event this router
        # processed (its ack was lost). A first delivery that duplicates an earlier
        # publish (an adapter republishing after a crash) carries an equal or older
        # clock and is dropped by the clock comparison below: no second effect either way.
        already = store.seen([e.event_id for e in events if e.event_id in redelivered], conn)
        fresh = [e for e in events if e.event_id not in already]
        if len(events) > len(fresh):
            out.verdicts["duplicate"] += len(events) - len(fresh)
        states = store.load((e.record_id for e in fresh), conn)
        parked = store.load_conflicts((s.parked for s in states.values() if s.parked), conn)
        changed: dict[str, RecordState] = {}
        for event in fresh:
            stored = states.get(event.record_id)
            decision = decide(
                event,
                stored,
                self._subscribers(event.entity),
                store.hub_actor,
                self._rules_for(event.entity),
                parked.get(stored.parked) if stored and stored.parked else None,
            )
            out.verdicts[decision.verdict.value] += 1
            if decision.conflict is not None:
                out.conflicts[decision.conflict.id] = parked[decision.conflict.id] = (
                    decision.conflict
                )
                _log_conflict(event, decision.verdict, decision.conflict)
            if decision.verdict is Verdict.CLOCK_REUSE:
                out.reused.append(
                    (event, f"clock {event.clock} equals the stored clock, content differs")
                )
                continue
            if decision.state is not None:
                # The inbox remembers events that had an effect. Such an event cannot be
                # there already (a second copy's clock is then <= the stored one), and a
                # stale or duplicate one is judged the same way again when redelivered.
                out.processed.append(event.event_id)
                states[event.record_id] = changed[event.record_id] = decision.state
            if decision.delivery is not None and decision.targets:
                body = None
                if decision.delivery is event:
                    # Nothing overlaid: the producer's own (validated) bytes are this version.
                    body = bodies.get(event.event_id)
                out.deliveries.append(_delivery(decision.delivery, decision.targets, body))
        out.states = list(changed.values())
        return out

    def _rules_for(self, entity: str) -> Rules:
        rules = self._rules.get(entity)
        if rules is None:
            rules = self._rules[entity] = self.config.rules(entity)
        return rules

    def _subscribers(self, entity: str) -> list[str]:
        cached = self._subscriber_cache.get(entity)
        if cached is None:
            cached = self._subscriber_cache[entity] = subscribers(self._registry, entity)
        return cached

    def _apply_and_commit(
        self,
        events: list[ChangeEvent],
        bodies: dict[str, bytes],
        redelivered: set[str],
        published: list[str],
    ) -> BatchOutcome:
        def work(conn: Connection) -> BatchOutcome:
            out = self._apply(events, bodies, redelivered, conn)
            out.outbox_ids = self.store.commit_batch(
                out.processed,
                out.states,
                out.deliveries,
                published,
                conn,
                list(out.conflicts.values()),
            )
            return out

        out = self.store.retrying(work)
        # Counted once the batch committed: a retried batch is not counted twice.
        for verdict, n in out.verdicts.items():
            self.stats.add(verdict, n)
        return out

    async def _process(self, batch: list[AbstractIncomingMessage]) -> None:
        assert self._publisher is not None
        events, refused, origin = self._judge(batch)
        bodies = {event_id: message.body for event_id, message in origin.items()}
        redelivered = {event_id for event_id, message in origin.items() if message.redelivered}
        out = await self._db(
            self._apply_and_commit, events, bodies, redelivered, self._confirmed_outbox
        )
        self._confirmed_outbox = []
        deliveries, outbox_ids = out.deliveries, out.outbox_ids
        for event, detail in out.reused:
            refused.append(Refused(origin[event.event_id], "clock-reuse", detail))
            log.error(
                "clock reuse: an adapter reused a counter (lost state without a new epoch?)",
                extra=kv(event_id=event.event_id, record_id=event.record_id, adapter=event.source),
            )
        await self._publisher.publish_many([*deliveries, *(_refusal(r) for r in refused)])
        for r in refused:
            self.stats.add_invalid(r.reason)
            log.warning(
                "event refused",
                extra=kv(reason=r.reason, detail=r.detail, message_id=r.message.message_id or ""),
            )
        self._confirmed_outbox = outbox_ids
        if self._batcher.idle:
            # Quiet: clear the confirmed rows now rather than waiting for the next batch,
            # so a restart after a quiet spell republishes nothing.
            await self._db(self.store.delete_outbox, self._confirmed_outbox)
            self._confirmed_outbox = []
        self.stats.batches += 1
        self.stats.last_batch_at = time.time()
        with contextlib.suppress(Exception):
            # A closed channel means these come back; the inbox turns them into no-ops.
            await batch[-1].ack(multiple=True)

    # -- control plane ----------------------------------------------------------------
    async def _on_control(self, message: AbstractIncomingMessage) -> None:
        async with message.process(ignore_processed=True):
            key = message.routing_key or ""
            try:
                body = control.unpack(message.body)
                if not isinstance(body, dict):
                    raise ValueError("control body must be a map")
                if key.startswith("heartbeat."):
                    self._beats[key.split(".", 1)[1]] = time.time()
                    return
                if key.startswith("register."):
                    reply = await self._register(key.split(".", 1)[1], body)
                elif key == "op.status":
                    reply = await self._status()
                elif key == "op.edit":
                    reply = await self._edit(body)
                elif key == "op.adapter-remove":
                    reply = await self._remove(str(body.get("name", "")))
                elif key.startswith("op.conflicts."):
                    reply = await self._conflicts_op(key.removeprefix("op.conflicts."), body)
                else:
                    reply = {"ok": False, "error": f"unknown control request {key!r}"}
            except (CrmsyncError, ValueError, TypeError, KeyError) as e:
                reply = {"ok": False, "error": str(e)}
            if message.reply_to and self._connection is not None:
                await self._reply(message, reply)

    async def _reply(self, request: AbstractIncomingMessage, reply: dict[str, Any]) -> None:
        assert self._publisher is not None
        with contextlib.suppress(PublishFailed):  # the caller gave up and its queue is gone
            await self._publisher.publish(
                Outgoing(
                    "",
                    request.reply_to or "",
                    control.pack(reply),
                    correlation_id=request.correlation_id,
                )
            )

    async def _register(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        entities = {str(k): [str(f) for f in v] for k, v in dict(body.get("entities", {})).items()}
        reg = register(
            self._registry.get(name),
            name,
            body.get("actor"),
            entities,
            str(body.get("version", "")),
            time.time(),
        )
        assert self._connection is not None
        # The adapter declared its sink already; declaring it here too means a delivery is
        # never returned as unroutable because of the order processes started in.
        await topology.declare(self._connection, topology.adapter_queues(name), hub=False)
        await self._db(self.store.save_registration, reg)
        self._registry[name] = reg
        self._subscriber_cache.clear()
        self._beats[name] = reg.last_heartbeat
        log.info(
            "adapter registered",
            extra=kv(adapter=name, actor=reg.actor, entities=",".join(sorted(entities))),
        )
        return {"ok": True, "actor": reg.actor, "epoch": reg.epoch}

    async def _edit(self, body: dict[str, Any]) -> dict[str, Any]:
        """Edit & retry: the edited record becomes a new hub version for every CRM."""
        record_id = str(body.get("record_id") or "")
        changes = body.get("set")
        if not record_id or not isinstance(changes, dict) or not changes:
            return {"ok": False, "error": "op.edit needs record_id and a non-empty 'set'"}
        bad = [k for k, v in changes.items() if not _scalar(v)]
        if bad:
            return {"ok": False, "error": f"values of {', '.join(map(str, bad))} are not scalars"}
        entity = body.get("entity")

        def build(stored: RecordState, conn: Connection) -> _Version:
            if entity and stored.entity != entity:
                raise CrmsyncError(f"record {record_id} is a {stored.entity}, not {entity}")
            if stored.deleted:
                raise CrmsyncError(f"record {record_id} is deleted; nothing to edit")
            if stored.parked:
                raise CrmsyncError(
                    f"record {record_id} is parked in conflict {stored.parked}; "
                    f"resolve it first (crmsync conflicts show {stored.parked})"
                )
            mapped = {
                f for reg in self._registry.values() for f in reg.entities.get(stored.entity, [])
            }
            unknown = sorted(set(changes) - mapped - set(stored.fields))
            if unknown:
                raise CrmsyncError(f"no adapter maps {', '.join(unknown)} for {stored.entity}")
            state, event = edit_version(stored, changes, self.store.hub_actor, utcnow())
            return state, event, None

        reply = await self._hub_version(record_id, build)
        if reply["ok"]:
            self.stats.add("edited")
        return reply

    async def _hub_version(
        self, record_id: str, build: Callable[[RecordState, Connection], _Version]
    ) -> dict[str, Any]:
        """Store a version the hub makes of ``record_id`` (an edit, a resolution) with its
        outbox row, then send it to every subscriber."""
        assert self._publisher is not None
        event, delivery, outbox_id = await self._db(self._commit_version, record_id, build)
        try:
            await self._publisher.publish(delivery)
        except CrmsyncError as e:
            # Committed with its outbox row: it will be sent. Saying "not ok" here would
            # make the operator act again and create a second version.
            log.warning(
                "hub version not sent yet; it stays owed in the outbox",
                extra=kv(event_id=event.event_id, record_id=record_id, error=str(e)),
            )
            return {"ok": True, "event_id": event.event_id, "clock": event.clock, "pending": True}
        await self._db(self.store.delete_outbox, [outbox_id])
        log.info(
            "hub version sent",
            extra=kv(event_id=event.event_id, record_id=record_id, fields=",".join(event.changed)),
        )
        return {"ok": True, "event_id": event.event_id, "clock": event.clock}

    def _commit_version(
        self, record_id: str, build: Callable[[RecordState, Connection], _Version]
    ) -> tuple[ChangeEvent, Outgoing, str]:
        store = self.store

        def work(conn: Connection) -> tuple[ChangeEvent, Outgoing, str]:
            stored = store.load([record_id], conn).get(record_id)
            if stored is None:
                raise CrmsyncError(f"no record {record_id} in the router's state")
            state, event, conflict = build(stored, conn)
            targets = tuple(self._subscribers(stored.entity))
            if not targets:
                raise CrmsyncError(f"no adapter subscribes to {stored.entity}")
            delivery = _delivery(event, targets)
            [outbox_id] = store.commit_batch(
                [], [state], [delivery], [], conn, [conflict] if conflict else []
            )
            return event, delivery, outbox_id

        try:
            return store.retrying(work)
        except VersionConflict:
            raise CrmsyncError(f"record {record_id} kept changing; try again") from None

    # -- conflicts ----------------------------------------------------------------------
    async def _conflicts_op(self, verb: str, body: dict[str, Any]) -> dict[str, Any]:
        now = utcnow()
        if verb == "list":
            entity = body.get("entity")
            found = await self._db(self.store.open_conflicts, str(entity) if entity else None)
            return {"ok": True, "conflicts": [summary(c, now) for c in found]}
        if verb == "show":
            conflict = await self._conflict(str(body.get("id") or ""))
            return {"ok": True, "conflict": _detail(conflict, now)}
        if verb == "history":
            record_id = str(body.get("record_id") or "")
            found = await self._db(self.store.conflict_history, record_id)
            if not found and not await self._db(self.store.get, record_id):
                return {"ok": False, "error": f"no record {record_id} in the router's state"}
            return {"ok": True, "conflicts": [_detail(c, now) for c in found]}
        if verb == "resolve":
            return await self._resolve(body)
        return {"ok": False, "error": f"unknown conflicts request {verb!r}"}

    async def _conflict(self, conflict_id: str) -> Conflict:
        found = await self._db(self.store.load_conflicts, [conflict_id])
        if conflict_id not in found:
            raise CrmsyncError(f"no conflict {conflict_id!r} (see crmsync conflicts list)")
        return found[conflict_id]

    async def _resolve(self, body: dict[str, Any]) -> dict[str, Any]:
        """An operator's decision on a parked conflict: a hub version for every CRM."""
        conflict_id = str(body.get("id") or "")
        take = body.get("take")
        choices: dict[str, Choice] = {}
        for name, source in dict(body.get("fields") or {}).items():
            choices[str(name)] = TakeSide(str(source))
        for name, value in dict(body.get("values") or {}).items():
            if not _scalar(value):
                return {"ok": False, "error": f"the value of {name} is not a scalar"}
            if name in choices:
                return {"ok": False, "error": f"{name} is chosen twice (--field and --value)"}
            choices[str(name)] = SetValue(value)
        if take is None and not choices:
            return {"ok": False, "error": "say what to keep: --take SOURCE, --field or --value"}
        who = f"operator:{body.get('by') or 'unknown'}"
        record_id = (await self._conflict(conflict_id)).record_id

        def build(stored: RecordState, conn: Connection) -> _Version:
            conflict = self.store.load_conflicts([conflict_id], conn).get(conflict_id)
            if conflict is None:
                raise CrmsyncError(f"no conflict {conflict_id!r}")
            try:
                return resolve_parked(
                    stored,
                    conflict,
                    self._rules_for(stored.entity),
                    self.store.hub_actor,
                    who,
                    str(take) if take is not None else None,
                    choices,
                )
            except ValueError as e:
                raise CrmsyncError(str(e)) from None

        reply = await self._hub_version(record_id, build)
        if reply["ok"]:
            self.stats.add("resolved-by-operator")
            log.info(
                "parked conflict resolved",
                extra=kv(conflict_id=conflict_id, record_id=record_id, by=who),
            )
            reply["conflict"] = conflict_id
        return reply

    async def _remove(self, name: str) -> dict[str, Any]:
        removed = await self._db(self.store.remove_registration, name)
        self._registry.pop(name, None)
        self._subscriber_cache.clear()
        self._beats.pop(name, None)
        if not removed:
            return {"ok": False, "error": f"no adapter named {name!r} is registered"}
        log.info("adapter removed", extra=kv(adapter=name))
        return {"ok": True, "queue": topology.sink_queue(name)}

    async def _status(self) -> dict[str, Any]:
        counts = await self._db(self.store.counts)
        now = time.time()
        return {
            "ok": True,
            "hub_actor": self.store.hub_actor,
            "heartbeat_timeout": parse_duration(self.config.router.heartbeat_timeout),
            "uptime": now - self.stats.started_at,
            "last_batch_age": now - self.stats.last_batch_at if self.stats.last_batch_at else None,
            "verdicts": dict(self.stats.verdicts),
            "invalid": dict(self.stats.invalid),
            "store": counts,
            "adapters": [
                {
                    "name": r.name,
                    "actor": r.actor,
                    "entities": sorted(r.entities),
                    "version": r.sw_version,
                    "last_heartbeat": self._beats.get(r.name, r.last_heartbeat),
                }
                for r in sorted(self._registry.values(), key=lambda r: r.name)
            ],
        }

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            try:
                await self._db(self.store.touch_heartbeats, dict(self._beats))
                pruned = await self._db(self.store.prune_inbox, time.time() - self._retention)
                if pruned:
                    log.info("pruned processed event ids", extra=kv(count=pruned))
                OPEN_CONFLICTS.set(await self._db(self.store.open_conflict_count))
                forgotten = await self._db(
                    self.store.prune_conflicts, time.time() - self._conflict_retention
                )
                if forgotten:
                    log.info("pruned old conflict records", extra=kv(count=forgotten))
            except Exception:
                log.exception("housekeeping failed")


# A hub version to store and send, with the conflict it settles (if any).
_Version = tuple[RecordState, ChangeEvent, Conflict | None]


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, type(None)))


def _detail(conflict: Conflict, now: datetime) -> dict[str, Any]:
    """``conflicts show``: which sides' edits are in play, as the resolver decides it."""
    return conflict_detail(conflict, now, sides_of(conflict.sides, conflict.base))


def _log_conflict(event: ChangeEvent, verdict: Verdict, conflict: Conflict) -> None:
    """One line per conflict event; field names and sources, never values (customer data)."""
    common: dict[str, Any] = {
        "event_id": event.event_id,
        "record_id": event.record_id,
        "adapter": event.source,
        "conflict_id": conflict.id,
        "fields": ",".join(sorted(conflict.policies)),
        "sources": ",".join(conflict.sources),
    }
    if verdict is Verdict.PARKED:
        log.warning("conflict parked for an operator", extra=kv(**common))
    elif verdict is Verdict.HELD:
        log.info("event held behind a parked conflict", extra=kv(**common))
    elif conflict.settlement is not None:
        policies = ",".join(sorted(set(conflict.policies.values()))) or "merge"
        log.info(
            "conflict resolved",
            extra=kv(**common, policy=policies, resolution=conflict.settlement.event_id),
        )


def _delivery(event: ChangeEvent, targets: tuple[str, ...], body: bytes | None = None) -> Outgoing:
    """One publish per event; the other targets ride in ``BCC`` (sender-selected distribution)."""
    first, *rest = targets
    headers: dict[str, Any] = {topology.RECORD_KEY_HEADER: event.record_id}
    if rest:
        headers["BCC"] = rest
    return Outgoing(topology.DELIVERIES, first, body or encode(event), event.event_id, headers)


def _refusal(refused: Refused) -> Outgoing:
    headers: dict[str, Any] = {
        topology.REASON_HEADER: refused.reason,
        topology.DETAIL_HEADER: refused.detail[:1000],
    }
    return Outgoing("", topology.INVALID, refused.message.body, refused.message.message_id, headers)


async def run_router(config: RouterConfig, new_hub_epoch: bool = False) -> None:
    """Run until SIGTERM/SIGINT; the batch in hand is finished first."""
    router = Router(config, new_hub_epoch=new_hub_epoch)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, router.stop)
    if config.metrics.port:
        prom.start_http_server(config.metrics.port, addr="127.0.0.1")
    await router.run()
