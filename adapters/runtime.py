"""The adapter process: register, then capture -> publish and consume -> write -> ack.

Order of start-up matters: the sink queue is declared (so deliveries wait whenever the
adapter is down) and the adapter registered before it publishes anything; owed local
changes from the outbox go out first. A local change is marked published, and the
capture cursor advances past it, only after the broker confirmed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from adapters import metrics
from adapters.base import Adapter
from adapters.engine import SyncEngine
from adapters.links import OutboxEntry, highest_counter, pending_count
from adapters.migration_runtime import MigrationSide
from adapters.polling import CapturePass, HealthTracker, PushState
from adapters.push import PushListener, Wakeup
from adapters.ratelimit import WriteLimiter
from adapters.sink import Sink
from adapters.statefile import StateFile
from adapters.supervision import until_one_ends
from router import __version__, control, topology
from router.adapter_config import AdapterConfig
from router.broker.aio import Connection, Publisher, connect
from router.broker.rpc import RpcClient
from router.config import parse_duration
from router.errors import (
    AccessRefused,
    BrokerUnavailable,
    PublishFailed,
    RegistrationRefused,
    RouterUnavailable,
    TransientWriteError,
)
from router.logs import error_text, kv
from router.messages import Outgoing
from router.notify import notify

T = TypeVar("T")

SINK_PREFETCH = 256


def _outgoing(entry: OutboxEntry, user: str | None) -> Outgoing:
    return Outgoing(
        topology.CHANGES,
        entry.routing_key,
        entry.body,
        entry.event_id,
        {topology.RECORD_KEY_HEADER: entry.record_id},
        user_id=user,
    )


class AdapterRuntime:
    def __init__(self, config: AdapterConfig, adapter: Adapter) -> None:
        self.config = config
        self.adapter = adapter
        self.name = config.name
        self.log = logging.getLogger(f"crmsync.adapter.{self.name}")
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"crmsync-{self.name}"
        )
        self._stopping = asyncio.Event()
        self._publisher: Publisher | None = None
        self._engine: SyncEngine | None = None
        self._state: StateFile | None = None
        self._connection: Connection | None = None
        self.actor: str | None = None
        self._rpc: RpcClient | None = None
        self.user = unquote(urlsplit(config.broker.effective_url()).username or "") or None
        # Whose deliveries the sink accepts (told at registration; empty: anyone's).
        self.accept_from: frozenset[str] = frozenset()
        self._publish_lock = asyncio.Lock()
        self.ready = asyncio.Event()
        self.stats: dict[str, int] = dict.fromkeys(metrics.OUTCOMES, 0)
        for outcome in metrics.OUTCOMES:  # every series exists from the start, at 0
            metrics.EVENTS.labels(self.name, outcome)
        metrics.CAPTURED.labels(self.name)
        metrics.CAPTURE_FAILURES.labels(self.name)
        self.health = HealthTracker()
        started = time.time()
        metrics.CAPTURE_LAG.labels(self.name).set_function(
            lambda: time.time() - (self.health.last_ok or started)
        )
        self.sink = Sink(
            self, config.retry.tiers(), WriteLimiter(config.write_rate(), name=config.name)
        )
        self.migration = MigrationSide(self)
        # Capture waits on it between passes: the poll interval, or less when pushed.
        self.wakeup = Wakeup()
        self._resync: set[str] = set()
        self.push: PushListener | None = None
        if config.capture.push:
            from adapters import push_trigger

            assert config.database is not None  # AdapterConfig: push is for kind = "sql"
            channel = push_trigger.channel(self.name)
            self.push = PushListener(config.database.url, channel, self.wakeup, self.name)

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def resync(self, entities: list[str]) -> None:
        """Capture ``entities`` again from the beginning at the next pass (``crmsync
        adapter resync``). Echo-safe: a row whose content its link already holds is no
        change, so only what really differs is published."""
        self._resync.update(entities)
        self.wakeup.set()

    def resync_requested(self, cursors: dict[str, Any]) -> list[str]:
        """The entities a resync asked for since the last pass, their cursors reset."""
        chosen, self._resync = sorted(self._resync), set()
        for entity in chosen:
            cursors[entity] = None
        if chosen:
            self.log.info(
                "resync: capturing again from the beginning",
                extra=kv(adapter=self.name, entities=",".join(chosen)),
            )
        return chosen

    def count(self, outcome: str, n: int = 1) -> None:
        """One more ``outcome`` (metrics.OUTCOMES): the goodbye line's and Prometheus'."""
        self.stats[outcome] += n
        metrics.EVENTS.labels(self.name, outcome).inc(n)

    def stop(self) -> None:
        self._stopping.set()
        self.sink.batcher.close()
        notify("STOPPING=1", "STATUS=draining")

    @property
    def engine(self) -> SyncEngine:
        assert self._engine is not None
        return self._engine

    @property
    def connection(self) -> Connection:
        assert self._connection is not None
        return self._connection

    @property
    def publisher(self) -> Publisher:
        assert self._publisher is not None
        return self._publisher

    async def run(self) -> None:
        self._state = await self.db(StateFile, self.config.state.path)
        self._connection = await connect(self.config.broker, f"crmsync-adapter-{self.name}")
        try:
            own_queues = await self._declare_own_queues()
            self.actor = await self._register()
            self._engine = SyncEngine(
                self.adapter,
                self.actor,
                parse_duration(self.config.capture.overlap),
                self.config.capture.batch_size,
                self.config.capture.hard_delete_chunk,
            )
            self._publisher = await self._connection.publisher()
            await self.publish_pending()
            # By its spec: a sink deleted under us is declared again at once, not waited for;
            # a least-privilege user consumes the sink the router declared at registration.
            sink = topology.sink_spec(self.name) if own_queues else topology.sink_queue(self.name)
            await self._connection.consume(sink, self.sink.batcher.add, prefetch=SINK_PREFETCH)
            await self.migration.serve()
            capture = "push" if self.push is not None else "polling"
            self.log.info(
                "adapter started", extra=kv(adapter=self.name, actor=self.actor, capture=capture)
            )
            self.ready.set()
            notify("READY=1", f"STATUS=registered as {self.actor}")
            tasks = [
                asyncio.create_task(self._capture_loop(), name="capture"),
                asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            ]
            if self.push is not None:
                tasks.append(asyncio.create_task(self.push.run(), name="push"))
            # Last: until_one_ends lets the sink finish its batch in hand.
            tasks.append(asyncio.create_task(self.sink.loop(self._stopping), name="sink"))
            try:
                await until_one_ends(tasks, self._stopping, self.log, self.name)
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        finally:
            await self._connection.close()
            await self.db(self.adapter.close)
            if self._state is not None:
                await self.db(self._state.close)
            self._executor.shutdown(wait=True)
            self.log.info("adapter stopped", extra=kv(adapter=self.name, **self.stats))

    # -- registration -------------------------------------------------------------------
    async def _declare_own_queues(self) -> bool:
        """Check the hub's exchanges (passively: they are the router's) and declare this
        adapter's sink, DLQ and retry tiers. False when the broker user may not (a
        least-privilege adapter user has no write on the dead-letter exchanges a queue
        declaration names): the router declares them when the adapter registers."""
        assert self._connection is not None
        await self._connection.declare(hub=False, check_exchanges=True)
        try:
            await self._connection.declare(
                topology.adapter_queues(self.name, self.config.retry.tiers()),
                hub=False,
                check_exchanges=True,
            )
        except AccessRefused:
            self.log.info(
                "adapter queues left to the router (this broker user may not declare them)",
                extra=kv(adapter=self.name, user=self._connection.user or ""),
            )
            return False
        return True

    async def _register(self) -> str:
        assert self._connection is not None and self._state is not None
        rpc = RpcClient(self._connection)
        claimed = await self.db(self._state.get, "actor")

        def highest() -> int | None:
            if claimed is None:
                return None
            with self.adapter.transaction() as tx:
                return highest_counter(tx, claimed)

        request = control.Register(
            name=self.name,
            actor=claimed,
            highest=await self.db(highest),
            entities=self.adapter.entities(),
            version=__version__,
            retry_tiers=[label for label, _ in self.config.retry.tiers()],
        )
        waited = False
        while True:
            try:
                raw = await rpc.call_raw(request.routing_key, request.body(), timeout=5.0)
                break
            except RouterUnavailable:
                if self._stopping.is_set():
                    raise
                if not waited:
                    self.log.warning(
                        "waiting for the router to answer the registration",
                        extra=kv(adapter=self.name),
                    )
                    waited = True
        if not isinstance(raw, dict) or not raw.get("ok"):
            error = raw.get("error") if isinstance(raw, dict) else "its answer is not a map"
            raise RegistrationRefused(f"router refused adapter {self.name!r}: {error}")
        reply = control.parse_reply(raw, control.Registered, request.routing_key)
        self.accept_from = frozenset(reply.accept_from)
        actor = reply.actor
        if actor != claimed:
            await self.db(self._state.set, "actor", actor)
            if reply.rewound:
                self.log.warning(
                    "this adapter's state is behind what it already published, so it "
                    "continues as a new actor epoch: edits made in the CRM since the backup "
                    "are published again as new versions; edits undone by the restore stay "
                    "undone here until the hub delivers them again",
                    extra=kv(adapter=self.name, claimed=claimed or "", actor=actor),
                )
            elif claimed is not None or actor != self.name:
                self.log.warning(
                    "adapter starts a new actor epoch", extra=kv(adapter=self.name, actor=actor)
                )
        self._rpc = rpc
        return actor

    async def _heartbeat_loop(self) -> None:
        assert self._rpc is not None
        while True:
            with contextlib.suppress(Exception):
                bad_rows = self._engine.invalid_rows if self._engine else 0
                push: PushState = None
                if self.push is not None:
                    push = "active" if self.push.active else "polling"
                outbox = await self.db(self._outbox_depth)
                metrics.OUTBOX.labels(self.name).set(outbox)
                metrics.BAD_ROWS.labels(self.name).set(bad_rows)
                tiers = [label for label, _ in self.config.retry.tiers()]
                await self._rpc.notify(
                    control.Heartbeat(
                        name=self.name,
                        actor=self.actor,
                        at=time.time(),
                        capture=self.health.report(bad_rows, push, outbox, tiers),
                    )
                )
            await asyncio.sleep(self.config.heartbeat_interval)

    def _outbox_depth(self) -> int:
        with self.adapter.transaction() as tx:
            return pending_count(tx)

    async def _skip_initial(self, cursors: dict[str, Any], save: Any) -> None:
        """``[capture] initial = "none"``: a first start begins its cursor at the CRM's
        clock now, so the rows it already holds are not published."""
        for entity, position in cursors.items():
            if position is not None:
                continue
            now = await self.db(self.engine.limit, entity)
            if now is None:
                self.log.warning(
                    'capture.initial = "none" needs a typed updated_at column; this entity '
                    "is captured from its first row",
                    extra=kv(adapter=self.name, entity=entity),
                )
                continue
            cursors[entity] = now
            await save(entity, now)

    # -- capture ------------------------------------------------------------------------
    async def publish_pending(self) -> None:
        # Capture and the sink both owe publishes; one at a time so none goes out twice.
        async with self._publish_lock:
            while True:
                pending = await self.db(self.engine.pending)
                if not pending:
                    return
                await self.publisher.publish_many([_outgoing(p, self.user) for p in pending])
                await self.db(self.engine.mark_published, pending)
                self.count("published", len(pending))

    async def _capture_loop(self) -> None:
        assert self._state is not None
        state = self._state
        cursors: dict[str, Any] = {
            entity: await self.db(state.get, f"cursor.{entity}") for entity in self.engine.mapped
        }

        async def save(entity: str, position: Any) -> None:
            await self.db(state.set, f"cursor.{entity}", position)

        if self.config.capture.initial == "none":
            await self._skip_initial(cursors, save)

        capture = CapturePass(self.engine, self.db, self.publish_pending, save)
        polls = 0
        every = self.config.capture.hard_delete_scan_every
        while True:
            try:
                for entity in self.resync_requested(cursors):
                    await save(entity, None)
                done = await capture.run(cursors)
                metrics.CAPTURED.labels(self.name).inc(done.changes)
                if polls % every == every - 1:
                    await self.db(self.engine.scan_hard_deletes)
                    await self.publish_pending()
                polls += 1
                self.health.ok()
            except (BrokerUnavailable, PublishFailed, TransientWriteError) as e:
                self.health.failed(e)
                metrics.CAPTURE_FAILURES.labels(self.name).inc()
                self.log.warning(
                    "capture cycle failed, retrying",
                    extra=kv(adapter=self.name, error=error_text(e)),
                )
            except Exception as e:
                # Never let capture die quietly while the sink keeps the process looking
                # alive: the heartbeat reports it, and `crmsync status` shows it degraded.
                self.health.failed(e)
                metrics.CAPTURE_FAILURES.labels(self.name).inc()
                self.log.exception(
                    "capture cycle failed unexpectedly, retrying", extra=kv(adapter=self.name)
                )
            # A push notification ends the wait early; polling stays the catch-up path.
            await self.wakeup.wait(self.config.capture.poll_interval)


async def run_adapter(config: AdapterConfig, adapter: Adapter) -> None:
    runtime = AdapterRuntime(config, adapter)
    metrics.serve(config.metrics.port)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runtime.stop)
    await runtime.run()
