"""The adapter's async side of migration and reconcile: its request queue and its
handling of migration batches in the sink.

Requests (``adapter.<name>.<verb>`` on ``crmsync.control``, :mod:`router.adapter_control`)
come from ``crmsync migrate`` / ``crmsync reconcile``; an export is answered only once
the broker confirmed the page's batch, so the command's checkpoint never runs ahead of
what the hub holds. A batch in the sink is applied in one transaction; when that fails,
each event is applied (and, failing, parked in the retry tiers or the DLQ) on its own,
as its own message with its migration id in a header, so a failed record never holds
back the others and a later success or failure is still logged for the migration.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from adapters import migration_plan
from adapters.inspect import where_is
from adapters.migration import MigrationWork, summary
from router import adapter_control as ac
from router import control, topology
from router.batches import (
    BATCH_HEADER,
    MIGRATION,
    MIGRATION_HEADER,
    BatchMeta,
    pack_batch,
    unpack_batch,
)
from router.errors import CrmsyncError, DecodeError, PublishFailed, TransientWriteError
from router.events import ChangeEvent, decode
from router.logs import kv
from router.messages import Delivery, Outgoing

if TYPE_CHECKING:
    from adapters.runtime import AdapterRuntime

RATE_LEASE = 60.0  # seconds a migration's --rate holds after its last batch


class _Held:
    """Settles a per-event copy of a batch message: only a requeue is passed on (the
    batch message itself is acked once every event is settled)."""

    def __init__(self) -> None:
        self.requeue = False

    async def ack(self, multiple: bool = False) -> None:
        return None

    async def nack(self, multiple: bool = False, requeue: bool = True) -> None:
        self.requeue = self.requeue or requeue


class MigrationSide:
    def __init__(self, runtime: AdapterRuntime) -> None:
        self.runtime = runtime
        self.name = runtime.name
        self.log = logging.getLogger(f"crmsync.adapter.{self.name}")
        self._work: MigrationWork | None = None

    @property
    def work(self) -> MigrationWork:
        if self._work is None:
            self._work = MigrationWork(self.runtime.engine)
        return self._work

    async def serve(self) -> None:
        connection = self.runtime.connection
        key = f"{ac.PREFIX}.{self.name}.*"
        await connection.serve([(topology.CONTROL, key)], self._on_request)

    # -- requests -------------------------------------------------------------------------
    async def _on_request(self, message: Delivery) -> None:
        verb = message.routing_key.rsplit(".", 1)[-1]
        reply: control.Reply
        try:
            model = ac.REQUESTS.get(verb)
            if model is None:
                raise control.BadRequest(f"unknown adapter request {message.routing_key!r}")
            body = control.unpack(message.body)
            if not isinstance(body, dict):
                raise control.BadRequest(f"{message.routing_key}: the body must be a map")
            try:
                request = model.model_validate({**body, "name": self.name})
            except ValidationError as e:
                first = e.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise control.BadRequest(
                    f"{message.routing_key}: {where}: {first['msg']}"
                ) from None
            reply = await self._act(request)
        except CrmsyncError as e:
            reply = control.Failure(error=str(e))
        except Exception as e:  # a bug must not take the request queue down
            self.log.exception("adapter request failed", extra=kv(key=message.routing_key))
            reply = control.Failure(error=f"adapter {self.name} failed on {verb}: {e}")
        if message.reply_to:
            exchange, key = topology.reply_route(message.reply_to)
            answer = Outgoing(
                exchange,
                key,
                reply.body(),
                correlation_id=message.correlation_id,
                mandatory=False,
            )
            with contextlib.suppress(PublishFailed):  # the caller gave up
                await self.runtime.publisher.publish(answer)

    async def _act(self, request: ac.AdapterRequest) -> control.Reply:
        db, work = self.runtime.db, self.work
        if isinstance(request, ac.Export):
            return await self._export(request)
        if isinstance(request, ac.Digest):
            items, last = await db(
                work.digest, request.entity, request.fields, request.after, request.limit
            )
            return ac.Digested(items=items, last=last, done=len(items) < request.limit)
        if isinstance(request, ac.MigrationLog):
            counts, failed = await db(self._summary, request)
            return ac.MigrationLogged(counts=counts, failed=failed)
        if isinstance(request, ac.Limit):
            limiter = self.runtime.sink.limiter
            until = time.monotonic() + request.seconds if request.rate is not None else None
            limiter.set_rate(request.rate, until)
            return ac.Limited(rate=limiter.rate)
        if isinstance(request, ac.Count):
            return ac.Counted(rows=await db(self._count, request.entity))
        if isinstance(request, ac.Republish):
            published, missing = await db(work.republish, request.entity, request.record_ids)
            await self.runtime.publish_pending()
            return ac.Republished(published=published, missing=missing)
        if isinstance(request, ac.PlanRows | ac.Hashes):
            return await self._plan(request)
        if isinstance(request, ac.WhereIs):
            return await db(where_is, self.runtime.engine, request.record_id)
        if isinstance(request, ac.Resync):
            mapped = list(self.runtime.engine.mapped)
            if request.entity is not None and request.entity not in mapped:
                raise control.BadRequest(f"adapter {self.name} does not map {request.entity}")
            chosen = [request.entity] if request.entity else mapped
            self.runtime.resync(chosen)
            return ac.Resyncing(entities=chosen)
        raise control.BadRequest(f"no action for {request.KEY}")

    async def _plan(self, req: ac.PlanRows | ac.Hashes) -> control.Reply:
        """The dry run's reads: nothing captured, written or published."""
        if req.entity not in self.runtime.engine.mapped:
            raise control.BadRequest(f"adapter {self.name} does not map {req.entity}")
        adapter, db = self.runtime.adapter, self.runtime.db
        if isinstance(req, ac.Hashes):
            found = await db(migration_plan.hashes, adapter, req.entity, req.fields, req.record_ids)
            return ac.Hashed(hashes=found)
        rows, last, read = await db(
            migration_plan.plan_rows,
            adapter,
            req.entity,
            req.fields,
            req.keys,
            req.after,
            req.limit,
        )
        return ac.PlannedRows(rows=rows, last=last, done=read < req.limit)

    def _count(self, entity: str) -> int | None:
        if entity not in self.runtime.engine.mapped:
            raise control.BadRequest(f"adapter {self.name} does not map {entity}")
        with self.runtime.adapter.transaction() as tx:
            return self.runtime.adapter.count_rows(tx, entity)

    def _summary(self, request: ac.MigrationLog) -> Any:
        with self.runtime.adapter.transaction() as tx:
            return summary(tx, request.migration_id, request.after, request.limit)

    async def _export(self, req: ac.Export) -> ac.Exported:
        if req.entity not in self.runtime.engine.mapped:
            raise control.BadRequest(f"adapter {self.name} does not map {req.entity}")
        db, work = self.runtime.db, self.work
        page = await db(work.capture_page, req.entity, req.after, req.limit)
        # The page's live changes go first, so every valid row is announced from a link
        # the broker confirmed.
        events = page.events
        if events is None:
            await self.runtime.publish_pending()
            events = await db(work.announce, req.entity, page.valid)
        if events or page.invalid:
            meta = BatchMeta(
                migration_id=req.migration_id,
                entity=req.entity,
                source=self.name,
                target=req.target,
                rate=req.rate,
                invalid=page.invalid,
            )
            await self.runtime.publisher.publish(
                Outgoing(
                    topology.CHANGES,
                    f"{self.name}.{req.entity}.migrate",
                    pack_batch(meta, events),
                    str(uuid.uuid4()),
                    {BATCH_HEADER: MIGRATION, topology.RECORD_KEY_HEADER: req.migration_id},
                    user_id=self.runtime.user,
                )
            )
        return ac.Exported(
            rows=page.rows,
            published=len(events),
            invalid=page.invalid,
            last=page.last,
            done=page.rows < req.limit,
        )

    # -- the sink ---------------------------------------------------------------------------
    async def apply_batch_message(self, message: Delivery) -> None:
        runtime = self.runtime
        try:
            meta, bodies = unpack_batch(message.body)
        except DecodeError as e:
            await runtime.sink.fail(message, None, e, kind="undecodable")
            return
        held = _Held()
        events: list[tuple[Delivery, ChangeEvent]] = []
        for body in bodies:
            copy = self._copy(message, body, meta.migration_id, held)
            try:
                event = decode(body)
                copy.message_id = event.event_id
                events.append((copy, event))
            except DecodeError as e:
                await runtime.sink.fail(copy, None, e, kind="undecodable")
        if meta.rate is not None:
            runtime.sink.limiter.set_rate(meta.rate, time.monotonic() + RATE_LEASE)
        await runtime.sink.limiter.acquire(len(events))
        linked = set(meta.linked)
        try:
            outcomes = await runtime.db(
                self.work.apply, [e for _, e in events], meta.migration_id, linked
            )
            runtime.sink.count(outcomes)
        except TransientWriteError as e:
            for copy, event in events:
                await self._fail(copy, event, e, meta.migration_id)
        except Exception:
            for copy, event in events:
                await self._apply_alone(copy, event, meta.migration_id)
        if held.requeue:
            await message.nack(requeue=True)  # a failed write could not be parked
        else:
            await message.ack()
        await runtime.sink.after_writes()

    async def _one(self, message: Delivery) -> ChangeEvent | None:
        """A single delivery's event once the write budget allows it (None: undecodable,
        sent to the DLQ)."""
        try:
            event = decode(message.body)
        except DecodeError as e:
            await self.runtime.sink.fail(message, None, e, kind="undecodable")
            return None
        await self.runtime.sink.limiter.acquire(1)
        return event

    async def apply_single_message(self, message: Delivery) -> None:
        """A migration event back from a retry tier (or a DLQ replay)."""
        event = await self._one(message)
        if event is not None:
            migration_id = str(message.headers.get(MIGRATION_HEADER))
            await self._apply_alone(message, event, migration_id)
            await self.runtime.sink.after_writes()

    async def apply_repair(self, message: Delivery) -> None:
        """A reconcile repair: the hub's version written over drift."""
        event = await self._one(message)
        if event is None:
            return
        try:
            named = topology.aliases_header(message.headers)
            outcome = await self.runtime.db(self.work.repair, event, named)
        except Exception as e:
            await self.runtime.sink.fail(message, event, e)
            return
        self.log.info(
            "drift repaired",
            extra=kv(adapter=self.name, record_id=event.record_id, outcome=outcome),
        )
        await message.ack()
        await self.runtime.sink.after_writes()

    async def _apply_alone(self, message: Delivery, event: ChangeEvent, migration_id: str) -> None:
        try:
            outcome = await self.runtime.db(self.work.apply_single, event, migration_id)
        except Exception as e:
            await self._fail(message, event, e, migration_id)
            return
        self.runtime.sink.count([outcome])
        await message.ack()

    async def _fail(
        self, message: Delivery, event: ChangeEvent, err: Exception, migration_id: str
    ) -> None:
        dead = await self.runtime.sink.fail(message, event, err)
        if dead:
            reason = f"{type(err).__name__}; see crmsync dlq show {self.name} {event.event_id}"
            await self.runtime.db(self.work.failed, event, migration_id, reason)

    @staticmethod
    def _copy(message: Delivery, body: bytes, migration_id: str, held: _Held) -> Delivery:
        return Delivery(
            body=body,
            routing_key=message.routing_key,
            settle=held,
            message_id=None,
            user_id=message.user_id,
            redelivered=message.redelivered,
            headers={MIGRATION_HEADER: migration_id},
        )
