"""Periodic anti-entropy (``[reconcile] every``): every adapter compared with the hub,
rate-limited, and what drifted repaired (:mod:`router.antientropy` decides what drifted).

Runs beside the batch loop on the active router only (a standby never reaches
:meth:`Router._serve`). It never holds a batch back: the adapter's digests are async
requests on a connection of its own, the hub's records are read in small pages, and it
sleeps between pages to hold ``rate`` records per second per adapter. An adapter that
does not answer is skipped for the round (logged once, until it answers again); any
other failure ends the round with a log line, and the next round starts on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import sqlalchemy as sa

from router import antientropy as ae
from router.broker.base import BrokerConnection, BrokerPublisher
from router.broker.rpc import RpcClient
from router.config import BrokerConfig, parse_duration
from router.daemon.context import RouterContext
from router.daemon.repairs import send_repairs, sendable
from router.daemon.stats import (
    AE_COMPARED,
    AE_DRIFT,
    AE_LAST_ROUND,
    AE_REPAIRED,
    AE_ROUND_SECONDS,
)
from router.errors import (
    BrokerUnavailable,
    CrmsyncError,
    PublishFailed,
    RouterUnavailable,
    StateError,
)
from router.logs import kv
from router.migrate import Hub
from router.record import RecordState
from router.schema import meta, record_state, records
from router.state import RouterStore

log = logging.getLogger("crmsync.router")

Connect = Callable[[BrokerConfig, str], Awaitable[BrokerConnection]]
Sleep = Callable[[float], Awaitable[None]]
MAX_PAGE = 1000  # records per digest request and per store read
REPAIR_CHUNK = 200  # confirmed drift repaired at once
ASK_TIMEOUT = 30.0  # seconds an adapter has to answer one digest page
SETTLE = 30.0  # seconds after start before a round that is already due
LAST_ROUND_KEY = "antientropy_last_round"  # crmsync_meta


def hub_page(store: RouterStore, entity: str, after: str | None, limit: int) -> list[RecordState]:
    """One page of the hub's records of ``entity``, in record-id order."""
    query = sa.select(records).where(records.c.entity == entity)
    if after is not None:
        query = query.where(records.c.record_id > after)
    with store.engine.connect() as conn:
        rows = conn.execute(query.order_by(records.c.record_id).limit(limit))
        return [record_state(r) for r in rows]


def last_round(store: RouterStore) -> float | None:
    """When the last round ended (kept in the store: a router restarted more often than
    ``every`` must still run rounds, and a standby that takes over knows it too)."""
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(meta.c.value).where(meta.c.key == LAST_ROUND_KEY)).first()
    return float(row.value) if row is not None else None


def save_last_round(store: RouterStore, when: float) -> None:
    with store.engine.begin() as conn:
        conn.execute(meta.delete().where(meta.c.key == LAST_ROUND_KEY))
        conn.execute(meta.insert().values(key=LAST_ROUND_KEY, value=repr(when)))


def first_delay(interval: float, last: float | None, now: float) -> float:
    """Seconds to the first round: when the last one says the next is due, but never
    at once (a router that just started has its backlog to catch up on first)."""
    due = interval if last is None else last + interval - now
    return min(interval, max(due, min(interval, SETTLE)))


class Pacer:
    """Sleeps so that ``count`` records take at least ``count / rate`` seconds."""

    def __init__(self, rate: float, sleep: Sleep, clock: Callable[[], float]) -> None:
        self.rate, self._sleep, self._clock = rate, sleep, clock
        self._started = clock()
        self.count = 0

    async def done(self, n: int) -> None:
        self.count += n
        ahead = self.count / self.rate - (self._clock() - self._started)
        if ahead > 0:
            await self._sleep(ahead)


class AntiEntropy:
    def __init__(
        self,
        ctx: RouterContext,
        publisher: BrokerPublisher,
        connect: Connect,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ctx = ctx
        self.config = ctx.config.reconcile
        self._publisher = publisher
        self._connect = connect
        self._sleep = sleep
        self._clock = clock
        self._connection: BrokerConnection | None = None
        self._hub: Hub | None = None
        self._suspects: dict[tuple[str, str], ae.Suspects] = {}
        self._silent: set[str] = set()  # adapters already logged as not answering
        self.page = max(1, min(MAX_PAGE, int(self.config.rate)))

    async def run(self, interval: float) -> None:
        """Rounds until cancelled, ``interval`` apart from start to start; the first
        when the last round (any router's) says so (:func:`first_delay`)."""
        store = self.ctx.store
        try:
            last = await self.ctx.db(last_round, store)
        except Exception as e:  # the store is away: count from now
            log.warning("anti-entropy cannot read its last round", extra=kv(error=str(e)))
            last = None
        delay = first_delay(interval, last, time.time())
        try:
            while True:
                await self._sleep(delay)
                started = self._clock()
                delay = interval
                try:
                    await self.round()
                    took = self._clock() - started
                    ended = time.time()
                    AE_ROUND_SECONDS.set(took)
                    AE_LAST_ROUND.set(ended)
                    await self.ctx.db(save_last_round, store, ended)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("anti-entropy round failed")
                    await self._drop_connection()
                    continue
                # ``every`` is from start to start; a longer round: the next one at once.
                delay = max(0.0, interval - took)
        finally:
            await self._drop_connection()

    async def _ensure_hub(self) -> Hub:
        if self._hub is None:
            self._connection = await self._connect(
                self.ctx.config.broker, "crmsync-router-antientropy"
            )
            self._hub = Hub(RpcClient(self._connection), timeout=ASK_TIMEOUT)
        return self._hub

    async def _drop_connection(self) -> None:
        connection, self._connection, self._hub = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    def _alive(self, name: str) -> bool:
        reg = self.ctx.registry.get(name)
        if reg is None:
            return False
        last = self.ctx.beats.get(name, reg.last_heartbeat)
        return time.time() - last <= parse_duration(self.ctx.config.router.heartbeat_timeout)

    async def round(self) -> dict[str, dict[str, ae.Tally]]:
        """One comparison of every registered adapter with the hub; the tallies."""
        hub = await self._ensure_hub()
        out: dict[str, dict[str, ae.Tally]] = {}
        for name, reg in sorted(self.ctx.registry.items()):
            if not self._alive(name):
                self._say_silent(name, "not running (no recent heartbeat)")
                continue
            try:
                for entity, fields in sorted(reg.entities.items()):
                    tally = await self.compare(hub, name, entity, sorted(fields))
                    out.setdefault(name, {})[entity] = tally
                    log.info(
                        "anti-entropy compared",
                        extra=kv(
                            adapter=name,
                            entity=entity,
                            compared=tally.compared,
                            suspected=tally.suspected,
                            repaired=tally.repaired,
                            **{k: tally.drift.get(k, 0) for k in ae.KINDS},
                        ),
                    )
            except RouterUnavailable:
                self._say_silent(name, "did not answer")
                continue
            except (BrokerUnavailable, PublishFailed, StateError):
                raise  # not this adapter's: the round ends
            except CrmsyncError as e:  # its refusal (one line): the other adapters go on
                log.warning(
                    "anti-entropy could not compare adapter", extra=kv(adapter=name, error=str(e))
                )
                continue
            self._silent.discard(name)
        return out

    def _say_silent(self, name: str, why: str) -> None:
        if name not in self._silent:
            self._silent.add(name)
            log.warning(f"anti-entropy skips adapter: {why}", extra=kv(adapter=name))

    async def _hub_digests(self, entity: str, fields: Sequence[str]) -> AsyncIterator[ae.HubDigest]:
        after: str | None = None
        while True:
            page = await self.ctx.db(hub_page, self.ctx.store, entity, after, self.page)
            for state in page:
                yield ae.hub_digest(state, fields)
            if len(page) < self.page:
                return
            after = page[-1].record_id

    async def compare(self, hub: Hub, adapter: str, entity: str, fields: list[str]) -> ae.Tally:
        """One adapter's entity against the hub; confirmed drift repaired (or logged)."""
        suspects = self._suspects.setdefault((adapter, entity), ae.Suspects())
        pacer = Pacer(self.config.rate, self._sleep, self._clock)
        tally = ae.Tally()
        pending: list[ae.Found] = []
        theirs = hub.digests(adapter, entity, fields, page=self.page)
        try:
            async for found in ae.merge(theirs, self._hub_digests(entity, fields)):
                tally.compared += 1
                if tally.compared % self.page == 0:
                    AE_COMPARED.labels(adapter).inc(self.page)
                    await pacer.done(self.page)
                if found is None:
                    continue
                if not suspects.confirm(found):
                    tally.suspected += 1
                    continue
                tally.add(found.kind)
                AE_DRIFT.labels(adapter, found.kind).inc()
                if self.config.repair and found.kind in ae.REPAIRABLE:
                    pending.append(found)
                    if len(pending) >= REPAIR_CHUNK:
                        tally.repaired += await self._repair(adapter, entity, pending, suspects)
                        pending = []
                else:
                    log.warning(
                        "drift found",
                        extra=kv(
                            adapter=adapter,
                            entity=entity,
                            record_id=found.record_id,
                            kind=found.kind,
                        ),
                    )
            tally.repaired += await self._repair(adapter, entity, pending, suspects)
        finally:
            suspects.round_done()
            AE_COMPARED.labels(adapter).inc(tally.compared % self.page)
        return tally

    async def _repair(
        self, adapter: str, entity: str, found: list[ae.Found], suspects: ae.Suspects
    ) -> int:
        """Send the hub's current version of each; a record the hub changed since it was
        compared is left alone (that new version is on its way to the adapter anyway)."""
        if not found:
            return 0
        states = await self.ctx.db(self.ctx.store.load, [f.record_id for f in found])
        by_kind: dict[str, list[RecordState]] = {}
        for f in found:
            state = states.get(f.record_id)
            if state is not None and state.version == f.hub_version:
                by_kind.setdefault(f.kind, []).append(state)
                suspects.forget(f.record_id)
        named = await self.ctx.db(self.ctx.store.aliases_of, [f.record_id for f in found])
        sent = 0
        for kind, group in sorted(by_kind.items()):
            ready = sendable(group, entity)
            sent += await send_repairs(
                self._publisher,
                ready,
                [adapter],
                named,
                cause="antientropy",
                entity=entity,
                kind=kind,
            )
        AE_REPAIRED.labels(adapter).inc(sent)
        return sent


def start(
    ctx: RouterContext, publisher: BrokerPublisher, connect: Connect
) -> asyncio.Task[Any] | None:
    """The anti-entropy task, or None when ``[reconcile] every`` is not set."""
    interval = ctx.config.reconcile.interval()
    if interval is None:
        return None
    log.info(
        "anti-entropy on",
        extra=kv(
            every=ctx.config.reconcile.every,
            rate=ctx.config.reconcile.rate,
            repair=ctx.config.reconcile.repair,
        ),
    )
    return asyncio.create_task(AntiEntropy(ctx, publisher, connect).run(interval))
