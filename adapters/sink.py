"""The adapter's sink: what the hub delivers, written into the CRM, then acked.

Deliveries are applied in batches, one transaction each; a batch that fails is applied
one delivery at a time so one bad write never holds back the others; a failed write
goes to its next retry tier or to the DLQ (acked only once the broker confirmed the
copy). Migration batches and migration events back from a retry tier are handed to
:mod:`adapters.migration_runtime`, which logs each record's outcome for the migration.
Every write waits for the CRM's write budget (:class:`Limiter`): a cap shared by the
live sync and any migration.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from adapters import metrics
from adapters.delivery import ApplyResult
from adapters.failures import next_hop
from router import topology
from router.batches import MIGRATION_HEADER, REPAIR_HEADER, is_batch
from router.batching import Batcher
from router.errors import (
    BrokerUnavailable,
    DecodeError,
    PermanentWriteError,
    PublishFailed,
    TransientWriteError,
    WriteError,
)
from router.events import ChangeEvent, decode
from router.logs import error_text, kv
from router.messages import Delivery, Outgoing

if TYPE_CHECKING:
    from adapters.runtime import AdapterRuntime

SINK_BATCH = 128
SINK_LINGER = 0.005


class Limiter(Protocol):
    async def acquire(self, n: int) -> None: ...

    def set_rate(self, rate: float | None, until: float | None) -> None: ...

    @property
    def rate(self) -> float | None: ...


class Sink:
    def __init__(
        self, runtime: AdapterRuntime, tiers: list[tuple[str, float]], limiter: Limiter
    ) -> None:
        self.runtime = runtime
        self.name = runtime.name
        self.log = logging.getLogger(f"crmsync.adapter.{self.name}")
        self.batcher: Batcher[Delivery] = Batcher(SINK_BATCH, SINK_LINGER)
        self.limiter = limiter
        self._tiers = tiers

    async def loop(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            batch = await self.batcher.take()
            if batch:
                await self.apply_batch(batch)

    def trusts(self, message: Delivery) -> bool:
        """Whether ``message`` was published by a user the router named at registration
        (itself, the operators) or came back from this adapter's own retry tier."""
        accept = self.runtime.accept_from
        if not accept:
            return True
        user = message.user_id
        return user is not None and (user in accept or user == self.runtime.user)

    async def refuse(self, message: Delivery) -> None:
        """A delivery nobody trusted published: to the DLQ unwritten (kept for an operator
        to see who wrote into this sink; dropping it would hide that)."""
        who = repr(message.user_id) if message.user_id else "a message without user_id"
        self.log.warning(
            "delivery refused: not published by the router or an operator",
            extra=kv(
                adapter=self.name, event_id=message.message_id or "", user=message.user_id or ""
            ),
        )
        metrics.DELIVERIES_REFUSED.labels(self.name).inc()
        err = PermanentWriteError(f"published by {who}, not by the router or an operator")
        await self.fail(message, None, err, kind="untrusted-sender")

    async def apply_batch(self, batch: list[Delivery]) -> None:
        live: list[Delivery] = []
        for message in batch:
            # Settled one by one before the live messages' multiple-ack covers them.
            if not self.trusts(message):
                await self.refuse(message)
            elif is_batch(message.headers):
                await self.runtime.migration.apply_batch_message(message)
            elif REPAIR_HEADER in message.headers:
                await self.runtime.migration.apply_repair(message)
            elif MIGRATION_HEADER in message.headers:
                await self.runtime.migration.apply_single_message(message)
            else:
                live.append(message)
        if live:
            await self._apply_live(live)

    async def _apply_live(self, batch: list[Delivery]) -> None:
        runtime = self.runtime
        events: list[tuple[Delivery, ChangeEvent]] = []
        for message in batch:
            try:
                events.append((message, decode(message.body)))
            except DecodeError as e:
                # Retrying cannot make bytes decode: straight to the DLQ, byte for byte.
                await self.fail(message, None, e, kind="undecodable")
        if not events:
            return
        await self.limiter.acquire(len(events))
        try:
            named = [topology.aliases_header(m.headers) for m, _ in events]
            with metrics.WRITE_SECONDS.labels(self.name).time():
                results = await runtime.db(runtime.engine.apply_many, [e for _, e in events], named)
        except TransientWriteError as e:
            # The database is away (locked, down, timing out): every write of the batch
            # would wait for the same thing. Park them all in the retry tier at once.
            for message, event in events:
                await self.fail(message, event, e)
            return
        except Exception:
            # One bad write must not hold back the others: the batch rolled back as a
            # whole, so apply one at a time and settle each on its own.
            for message, event in events:
                await self._apply_one(message, event)
            return
        await self._after_apply(results)
        await events[-1][0].ack(multiple=True)

    async def _apply_one(self, message: Delivery, event: ChangeEvent) -> None:
        runtime = self.runtime
        try:
            aliases = topology.aliases_header(message.headers)
            with metrics.WRITE_SECONDS.labels(self.name).time():
                result = await runtime.db(runtime.engine.apply, event, aliases)
        except Exception as e:
            # Unknown errors count as transient until the retry tiers are used up.
            await self.fail(message, event, e)
            return
        await self._after_apply([result])
        await message.ack()

    async def fail(
        self,
        message: Delivery,
        event: ChangeEvent | None,
        err: BaseException,
        kind: str | None = None,
    ) -> bool:
        """Send a failed delivery to its next retry tier or to the DLQ, then ack it;
        True when it went to the DLQ.

        The original is acked only after the broker confirmed the copy; if that publish
        fails, the original goes back to the sink unchanged (its attempt count with it).
        """
        hop = next_hop(self.name, message.headers, err, self._tiers, kind)
        ids = kv(
            adapter=self.name,
            event_id=event.event_id if event else (message.message_id or ""),
            record_id=event.record_id if event else "",
            attempts=hop.headers[topology.ATTEMPTS_HEADER],
            # Never the header's text: a CRM's error may quote the record's values.
            error=err.log_text if isinstance(err, WriteError) else type(err).__name__,
        )
        if hop.dead:
            self.log.error("write failed, dead-lettered", extra=ids)
        elif isinstance(err, (TransientWriteError, PermanentWriteError)):
            self.log.warning("write failed, will retry", extra=ids)
        else:
            # No traceback in the log (its message may hold values): the DLQ copy's
            # x-crmsync-traceback header has it, with the record.
            self.log.error("write failed unexpectedly, will retry", extra=ids)
        copy = Outgoing(
            hop.exchange,
            hop.routing_key,
            message.body,
            message.message_id,
            hop.headers,
            # Signed: back from the retry tier, the sink knows it as its own copy.
            user_id=self.runtime.user,
            expiration=hop.expiration,
        )
        try:
            await self.runtime.publisher.publish(copy)
        except Exception as e:
            self.log.warning(
                "could not park the failed delivery; it stays in the sink",
                extra=kv(adapter=self.name, error=error_text(e)),
            )
            await asyncio.sleep(1.0)
            await message.nack(requeue=True)
            return False
        self.runtime.count("dead-lettered" if hop.dead else "retried")
        await message.ack()
        return hop.dead

    def count(self, outcomes: Sequence[str]) -> None:
        """Migration outcomes, in the adapter's applied/skipped counters."""
        for outcome in outcomes:
            changed = outcome in ("created", "updated", "linked")
            self.runtime.count("applied" if changed else "skipped")

    async def _after_apply(self, results: list[ApplyResult]) -> None:
        for result in results:
            self.runtime.count("applied" if result.action == "applied" else "skipped")
        if any(r.pending for r in results):
            await self.after_writes()

    async def after_writes(self) -> None:
        """Publish what writes left in the outbox (a local change that went first)."""
        try:
            await self.runtime.publish_pending()
        except (BrokerUnavailable, PublishFailed) as e:
            # The change is in the outbox; the capture loop publishes it when it can.
            self.log.warning(
                "local change not published yet", extra=kv(adapter=self.name, error=error_text(e))
            )
