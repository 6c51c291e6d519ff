"""The router daemon's lifecycle: consume -> judge -> decide+store -> publish -> ack.

Per batch: one state transaction (inbox + records + outbox), one gathered round of
publisher confirms, one multi-ack. Nothing is acked upstream before what it caused is
confirmed downstream; a crash anywhere only causes redelivery, which the inbox and the
clocks make harmless.

Two batches are in flight at most: while the broker confirms batch N, batch N+1 is
decided, committed and published (the router would otherwise idle through every
confirm round trip). Acks stay in delivery order: batch N+1 is acked only after its
own confirms and batch N's ack, so a multiple-ack never covers a message whose effects
are unconfirmed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import prometheus_client as prom
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from router import migration_store, topology, watermark_store
from router.batching import Batcher
from router.broker.aio import connect
from router.broker.base import BrokerConnection, BrokerPublisher
from router.config import BrokerConfig, RouterConfig, parse_duration
from router.daemon import antientropy, leader, migration
from router.daemon.context import RouterContext
from router.daemon.control_server import ControlServer
from router.daemon.housekeeping import housekeeping as run_housekeeping
from router.daemon.inflight import Sending, abandon, raise_failed, stop_taking
from router.daemon.isolation import store_isolating
from router.daemon.operations import Operations
from router.daemon.pipeline import INTERNAL_ERROR, BatchOutcome, Inbound, decide_batch, judge
from router.daemon.stats import BATCH_SECONDS, Stats
from router.errors import BrokerUnavailable, PublishFailed
from router.logs import kv
from router.messages import Delivery
from router.notify import notify
from router.retention import Retention, limits
from router.state import RouterStore

log = logging.getLogger("crmsync.router")

Connect = Callable[[BrokerConfig, str], Awaitable[BrokerConnection]]
# What makes a batch go back to the queue instead of killing the router.
RETRYABLE = (BrokerUnavailable, PublishFailed, ConnectionError, sa.exc.OperationalError)
OUTBOX_CHUNK = 500
QUIET = 0.05  # seconds without a batch before confirmed outbox rows are cleared on their own
IN_FLIGHT = 2  # committed batches awaiting confirms at once (each holds up to batch_size)
GC_GEN0 = 20_000  # allocations between young-generation collections (Python's default: 700)


class Router:
    def __init__(
        self, config: RouterConfig, new_hub_epoch: bool = False, broker: Connect = connect
    ) -> None:
        self.config = config
        self.ctx = RouterContext(config)
        self._new_hub_epoch = new_hub_epoch
        self._connect = broker
        tuning = config.router
        self._batcher: Batcher[Delivery] = Batcher(tuning.batch_size, parse_duration(tuning.linger))
        self._stopping = asyncio.Event()
        self._publisher: BrokerPublisher | None = None
        self._connection: BrokerConnection | None = None
        # Outbox rows whose deliveries the broker confirmed: deleted in the next batch's
        # transaction (one commit per batch), or after a quiet moment.
        self._confirmed: list[str] = []
        self._sweep: asyncio.Task[None] | None = None
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="crmsync-commit")
        self.ready = asyncio.Event()
        self.lost_lead = asyncio.Event()
        self._retention = Retention(limits(config.state))

    @property
    def stats(self) -> Stats:
        return self.ctx.stats

    @property
    def store(self) -> RouterStore:
        return self.ctx.store

    @property
    def publisher(self) -> BrokerPublisher:
        assert self._publisher is not None, "router not started"
        return self._publisher

    def stop(self) -> None:
        """Finish the batches in hand, then return from :meth:`run`."""
        self._stopping.set()
        self._batcher.close()
        notify("STOPPING=1", "STATUS=draining")

    async def run(self) -> None:
        ctx = self.ctx
        lock = leader.lock_for(self.config.state.url)
        try:
            # A standby waits here: it has read no registry and consumes nothing.
            if not await leader.become_active(lock, self._stopping):
                return
            store = await ctx.db(RouterStore, self.config.state.url)
            await ctx.db(leader.announce, store.engine, leader.instance_name())
            highs, inexact = await ctx.db(watermark_store.opened, store)
            ctx.open(store, await ctx.db(store.registrations), highs, inexact)
            rebuilt = await ctx.db(store.sync_match_index)
            if rebuilt:
                log.info("identity match index rebuilt", extra=kv(entities=",".join(rebuilt)))
            if self._new_hub_epoch:
                actor = await ctx.db(store.bump_hub_epoch)
                ctx.know_hub_actor(actor)
                ctx.marks.inexact |= await ctx.db(
                    watermark_store.restored, store, set(ctx.marks.known), actor
                )
                log.warning(
                    "state restored: the hub starts a new actor epoch", extra=kv(actor=actor)
                )
            self._warn_unknown_sources()
            await self._serve(lock)
            if self.lost_lead.is_set():
                raise leader.LeadershipLost(
                    "lost the state store's router lock (its database session ended); "
                    "restart the router: it comes back as a standby or as the active one"
                )
        finally:
            self._committer.shutdown(wait=True)
            await ctx.close()
            lock.release()
            if self.ready.is_set():  # a router that never started has nothing to report
                log.info("router stopped", extra=kv(**dict(self.stats.verdicts)))

    async def _serve(self, lock: leader.Lock) -> None:
        connection = self._connection = await self._connect(self.config.broker, "crmsync-router")
        try:
            await connection.declare()
            await self._declare_sinks()
            self._publisher = await connection.publisher(signed=True)  # sinks trust its user
            await self._flush_outbox()
            server = ControlServer(Operations(self.ctx, connection, self.publisher), self.publisher)
            await connection.consume(topology.ROUTER_CONTROL, server.on_message, prefetch=32)
            await connection.consume(
                topology.INGRESS, self._batcher.add, prefetch=self.config.router.prefetch
            )
            log.info(
                "router started",
                extra=kv(
                    hub_actor=self.store.hub_actor,
                    adapters=",".join(sorted(self.ctx.registry)),
                    instance=leader.instance_name(),
                ),
            )
            self.ready.set()
            notify("READY=1", "STATUS=active: consuming the ingress")
            housekeeping = asyncio.create_task(run_housekeeping(self.ctx, self._retention))
            watching = asyncio.create_task(leader.watch(lock, self.lost_lead))
            watching.add_done_callback(self._on_watch_done)
            entropy = antientropy.start(self.ctx, self.publisher, self._connect)  # None: off
            try:
                await self._batch_loop()
            finally:
                for task in (housekeeping, watching, entropy, self._sweep):
                    if task is not None:
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                await self.ctx.db(self.store.touch_heartbeats, dict(self.ctx.beats))
        finally:
            await connection.close()

    def _on_watch_done(self, _task: asyncio.Task[None]) -> None:
        if self.lost_lead.is_set():
            self.stop()  # another router may be active: stop deciding at once

    def _warn_unknown_sources(self) -> None:
        """A priority list naming a source that never registered ranks nothing: most
        likely a typo (``crmsync policy check`` catches it before deploying), or a CRM
        that has not joined yet."""
        registry = self.ctx.registry
        for entity, conflict in sorted(self.config.conflicts.items()):
            unknown = [name for name in conflict.priority if name not in registry]
            if unknown and registry:
                log.warning(
                    "priority names sources that never registered",
                    extra=kv(entity=entity, sources=",".join(unknown)),
                )

    # -- the batch loop -----------------------------------------------------------------
    async def _batch_loop(self) -> None:
        sending: deque[Sending] = deque()  # committed batches not yet acked, oldest first
        taking: asyncio.Task[list[Delivery]] | None = None
        while True:
            if taking is None:
                if self._stopping.is_set() and self._batcher.idle:
                    break
                taking = asyncio.create_task(self._batcher.take())
            batch: list[Delivery] = []
            try:
                waits: set[asyncio.Future[Any]] = {taking, *(s.task for s in sending)}
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                raise_failed(sending)  # any batch's, not only the oldest's
                while sending and sending[0].task.done():
                    sending.popleft()
                if not taking.done():
                    continue
                batch, taking = taking.result(), None
                if not batch:
                    continue
                if len(sending) >= IN_FLIGHT:
                    await sending[0].task
                    sending.popleft()
                with BATCH_SECONDS.time():
                    outcome = await self._commit(batch)
                after = sending[-1].task if sending else None
                sending.append(
                    Sending(batch, asyncio.create_task(self._send(batch, outcome, after)))
                )
            except RETRYABLE as e:
                taken = await stop_taking(taking)
                taking = None
                held = [
                    *(await abandon(sending)),
                    *batch,
                    *taken,
                    *self._batcher.drain(),
                ]
                sending.clear()
                await self._give_back(held, e)
        try:
            for unacked in sending:
                await unacked.task
        except RETRYABLE as e:
            # Stopping anyway: what was not acked comes back to the queue when the
            # connection closes, and the outbox holds what was committed.
            log.warning("last batches not completed at shutdown", extra=kv(error=str(e)))

    async def _give_back(self, held: Sequence[Delivery], error: Exception) -> None:
        # Owed deliveries of committed batches are in the outbox. Every message we hold
        # goes back to the queue: the inbox makes the committed ones no-ops.
        log.warning("batch not completed, will retry", extra=kv(error=str(error), held=len(held)))
        for message in held:
            await message.nack(requeue=True)
        await self._recover()

    async def _commit(self, batch: list[Delivery]) -> BatchOutcome:
        parts = migration.split(batch)
        if parts.invalid:
            await self.ctx.db(
                self.store.retrying, lambda c: migration_store.record(c, parts.invalid)
            )
        judged = judge(
            parts.deliveries,
            self.ctx.registry,
            self.ctx.principals,
            self.config.router.max_event_bytes,
        )
        judged += [Inbound(d, reason=e.reason, detail=e.detail) for d, e in parts.bad]
        confirmed, self._confirmed = self._confirmed, []
        try:
            out = await store_isolating(judged, confirmed, self._decide_and_store, RETRYABLE)
        except BaseException:
            self._confirmed = confirmed + self._confirmed  # still to be deleted
            raise
        # Counted once the batch committed: a retried batch is not counted twice.
        for verdict, n in out.verdicts.items():
            self.stats.add(verdict, n)
        return out

    async def _decide_and_store(self, judged: list[Inbound], confirmed: list[str]) -> BatchOutcome:
        store = self.store

        marks = self.ctx.marks

        def work(conn: Connection) -> BatchOutcome:
            out = decide_batch(self.ctx, judged, conn)
            out.outbox_ids = store.commit_batch(
                out.processed,
                out.states,
                out.deliveries,
                confirmed,
                conn,
                list(out.conflicts.values()),
                out.identity_writes,
            )
            if out.marks is not None:
                watermark_store.save(conn, out.marks.raised, marks.highs)
            migration.record(conn, out)
            return out

        out = await store.retrying_async(work, self._off_loop)
        if out.marks is not None:
            marks.commit(out.marks)
        return out

    async def _off_loop(self, fn: Callable[[], None]) -> None:
        # One GIL hand-off per batch (not one per row, as a worker doing the whole
        # transaction would): the commit's fsync waits here while the loop works.
        await asyncio.get_running_loop().run_in_executor(self._committer, fn)

    async def _send(
        self, batch: list[Delivery], out: BatchOutcome, after: asyncio.Task[None] | None
    ) -> None:
        """Publish the batch's messages at once; ack it once they are confirmed *and* the
        batch before it was acked (a multiple-ack covers every earlier message)."""
        await self.publisher.publish_many(out.messages())
        if after is not None:
            await after  # its failure is ours: nothing of this batch is acked then
        for refused in out.refused:
            self.stats.add_invalid(refused.reason or "refused")
            ids = kv(
                reason=refused.reason,
                # An exception's text may quote customer values: the header keeps it.
                detail=refused.detail if refused.reason != INTERNAL_ERROR else "",
                message_id=refused.delivery.message_id or "",
            )
            if refused.reason == "clock-reuse" and refused.event is not None:
                log.error(
                    "clock reuse: an adapter reused a counter (lost state without a new epoch?)",
                    extra=kv(
                        event_id=refused.event.event_id,
                        record_id=refused.event.record_id,
                        adapter=refused.event.source,
                    ),
                )
            log.warning("event refused", extra=ids)
        self._confirmed += out.outbox_ids
        self.stats.batch_done()
        await batch[-1].ack(multiple=True)
        if self._batcher.idle and self._sweep is None:
            self._sweep = asyncio.create_task(self._sweep_when_quiet())

    async def _sweep_when_quiet(self) -> None:
        """Quiet: clear the confirmed outbox rows rather than waiting for the next batch,
        so a restart after a quiet spell republishes nothing."""
        try:
            await asyncio.sleep(QUIET)
            if self._batcher.idle and self._confirmed:
                ids, self._confirmed = self._confirmed, []
                try:
                    await self.ctx.db(self.store.delete_outbox, ids)
                except Exception:
                    self._confirmed = ids + self._confirmed
                    raise
        except Exception as e:  # the next batch's transaction deletes them instead
            log.warning("could not clear confirmed outbox rows", extra=kv(error=str(e)))
        finally:
            self._sweep = None

    # -- recovery -----------------------------------------------------------------------
    async def _declare_sinks(self) -> None:
        """Every registered adapter's sink exists, so no delivery is returned as unroutable
        because someone deleted a queue or the broker lost its definitions."""
        assert self._connection is not None
        for name in sorted(self.ctx.registry):
            await self._connection.declare(topology.adapter_queues(name), hub=False)

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
        pending = await self.ctx.db(self.store.pending_outbox)
        if pending:
            log.info("publishing owed deliveries from the outbox", extra=kv(count=len(pending)))
            for start in range(0, len(pending), OUTBOX_CHUNK):
                chunk = pending[start : start + OUTBOX_CHUNK]
                await self.publisher.publish_many([item for _, item in chunk])
                await self.ctx.db(self.store.delete_outbox, [oid for oid, _ in chunk])
        self._confirmed = []  # every row is gone now, confirmed ones included


async def run_router(config: RouterConfig, new_hub_epoch: bool = False) -> None:
    """Run until SIGTERM/SIGINT; the batches in hand are finished first."""
    # Start-up's objects (modules, pydantic schemas, SQLAlchemy's compiled statements)
    # live for the whole process: out of the collector's sight, and a larger first
    # generation, cut the time every batch spends in gc (measured: ~8 % of CPU).
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0, *gc.get_threshold()[1:])
    router = Router(config, new_hub_epoch=new_hub_epoch)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, router.stop)
    if config.metrics.port:
        prom.start_http_server(config.metrics.port, addr="127.0.0.1")
    await router.run()
