"""The blocking client (pika) for ``crmsync dlq``: browse, take and republish entries.

A ``BlockingConnection``: these are short operator commands (DESIGN "Known traps").
pika's exceptions become crmsync's in :func:`router.broker.errors.pika_errors`; this
module only says what they mean for the entries.

Browsing without changing anything
----------------------------------
A dead-letter queue is read by consuming every ready message with manual acks and
acking none; closing the channel hands them all back. Measured on RabbitMQ 3.10.8
quorum queues (100 to 5,000 messages; ``tests/integration/test_cli_dlq.py`` keeps
checking the order):

* Closing the channel returns every unacked message to its old place, in order, also
  when some in the middle were acked (replayed or purged) -- but asynchronously:
  close-ok arrives before the queue has them back. A consumer that starts at once (the
  next browse on the same connection, or a fast second command) then gets the later
  messages first, and the order is lost for good. So a browse waits until the queue's
  ready count is back before it returns. That wait is the whole trick: without it,
  ``basic.nack(multiple=True, requeue=True)`` loses the order just the same.
* A nack (single or multiple) with the consumer still subscribed hands the messages
  straight back to that consumer, out of order; after ``basic.cancel`` a nack keeps the
  order but gains nothing over a plain close. pika's ``BlockingChannel.cancel()`` nacks
  what it buffered; it is not used either.
* With prefetch 0 ("unlimited") a quorum queue delivers at most 2,000 messages to a
  consumer that acks nothing. The prefetch is set to the queue's depth instead (AMQP
  caps it at 65,535; a deeper queue is browsed up to there and says so).
* Each browse raises the broker's ``x-delivery-count`` of every entry (crmsync's own
  ``x-crmsync-attempts`` is never touched): never give a DLQ a delivery limit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Final

import pika
import pika.data
import pika.exceptions

from router import dlq
from router.broker.errors import describe, pika_errors
from router.broker.refusals import connect_failure
from router.broker.rpc import call_router
from router.broker.settings import CONNECT_TIMEOUT, redact, ssl_context
from router.config import BrokerConfig
from router.control import Status, StatusRequest
from router.errors import (
    AccessRefused,
    BrokerUnavailable,
    CrmsyncError,
    EntityMissing,
    PublishFailed,
    RouterUnavailable,
    Unroutable,
)

MAX_PREFETCH: Final = 65535  # AMQP's basic.qos limit
DELIVERY_WAIT: Final = 5.0  # seconds without a delivery before a browse stops waiting
RETURN_WAIT: Final = 10.0  # seconds to wait for the queue to take browsed messages back
ROUTER_TIMEOUT: Final = 3.0  # seconds to wait for the router's answer to op.status


@dataclass(frozen=True)
class Snapshot:
    """A queue as browsed: its entries in order, and whether that is all of them."""

    queue: str
    entries: list[dlq.Entry]
    depth: int

    @property
    def complete(self) -> bool:
        return len(self.entries) >= self.depth


class QueueBusy(CrmsyncError):
    """Another consumer (another ``crmsync dlq`` command?) holds the queue's entries."""

    def __init__(self, queue: str) -> None:
        super().__init__(
            f"{queue} is being read by another consumer (another 'crmsync dlq' command?); "
            "nothing was changed, try again when it is done"
        )


class Held:
    """Entries of one queue taken out (unacked) until released: remove or republish some,
    and every other one goes back in its place."""

    def __init__(self, broker: DlqBroker, channel: Any, queue: str, depth: int) -> None:
        self._broker = broker
        self._channel = channel
        self.queue = queue
        self.depth = depth
        self.entries: list[dlq.Entry] = []
        self._tags: list[int] = []
        self.removed = 0

    def _fill(self) -> None:
        if self.depth == 0:
            return
        want = min(self.depth, MAX_PREFETCH)
        got: list[tuple[int, bytes, dict[str, Any]]] = []

        def on_message(_ch: Any, method: Any, properties: Any, body: bytes) -> None:
            got.append((method.delivery_tag, body, dict(properties.headers or {})))

        self._channel.basic_qos(prefetch_count=want)
        # Exclusive: a second dlq command on this queue fails at once instead of
        # splitting the entries between two consumers.
        self._channel.basic_consume(self.queue, on_message, auto_ack=False, exclusive=True)
        last = time.monotonic()
        while len(got) < want:
            before = len(got)
            self._broker.connection.process_data_events(time_limit=0.05)
            if len(got) > before:
                last = time.monotonic()
            elif time.monotonic() - last > DELIVERY_WAIT:
                break  # some are held by another consumer, or were consumed meanwhile
        for position, (tag, body, headers) in enumerate(got[:want]):
            self._tags.append(tag)
            self.entries.append(dlq.read_entry(self.queue, position, body, headers))

    def snapshot(self) -> Snapshot:
        return Snapshot(self.queue, list(self.entries), self.depth)

    def remove(self, entry: dlq.Entry) -> None:
        """Ack: the entry leaves the queue for good."""
        with self._broker.seam(self.queue):
            self._channel.basic_ack(self._tags[entry.position])
        self.removed += 1

    def republish(self, entry: dlq.Entry, message: dlq.Republish) -> None:
        """Publish (confirmed, mandatory), and only once the broker confirmed, remove the
        entry. A crash in between leaves it in both places, never in neither."""
        self._broker.publish(message)
        self.remove(entry)

    def _release(self) -> None:
        """Close the channel (everything unacked goes back, in order) and wait until the
        queue has it back, so that the next browse sees the same order."""
        expected = self.depth - self.removed
        # Nothing to report here: whatever the broker still holds unacked, it gives back.
        with suppress(CrmsyncError), pika_errors(f"release {self.queue}"):
            if self._channel.is_open:
                self._channel.close()
            if not self.entries:
                return
            deadline = time.monotonic() + RETURN_WAIT
            while self._broker.depth(self.queue) < expected and time.monotonic() < deadline:
                time.sleep(0.01)


class DlqBroker:
    """One blocking connection for one command."""

    def __init__(self, cfg: BrokerConfig, client_name: str = "crmsync-cli-dlq") -> None:
        # pika logs connection failures with tracebacks; the command reports them itself.
        logging.getLogger("pika").setLevel(logging.CRITICAL + 1)
        self._url = cfg.effective_url()
        params = pika.URLParameters(self._url)
        context = ssl_context(cfg, self._url)
        if context is not None:
            params.ssl_options = pika.SSLOptions(context, params.host)
        params.connection_attempts = 1
        params.socket_timeout = CONNECT_TIMEOUT
        params.blocked_connection_timeout = 30
        params.client_properties = {"connection_name": client_name}
        try:
            self.connection = pika.BlockingConnection(params)
        except (pika.exceptions.AMQPError, OSError) as e:
            raise connect_failure(e, self._url, cfg) from e
        self._publisher: Any = None
        self._probe: Any = None

    def __enter__(self) -> DlqBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with suppress(CrmsyncError), pika_errors("close"):
            if self.connection.is_open:
                self.connection.close()

    @contextmanager
    def seam(self, queue: str | None = None) -> Iterator[None]:
        """pika's errors, as crmsync's, worded for what they mean to the entries."""
        try:
            with pika_errors(f"the DLQ command on {queue or 'the broker'}"):
                yield
        except Unroutable as e:
            raise PublishFailed(
                "the broker could not route the replay (no queue bound for its target: "
                "adapter removed, or topology not declared?); the entry stays in its queue"
            ) from e
        except PublishFailed as e:
            raise PublishFailed(
                "the broker refused the replay (nack); the entry stays in its queue"
            ) from e
        except EntityMissing as e:
            if not queue:
                raise
            raise dlq.UnknownQueue(
                f"no queue {queue} on this broker/vhost (is "
                f"'{dlq.adapter_of(queue)}' an adapter? see 'crmsync status')"
            ) from e
        except AccessRefused as e:
            if not queue:
                raise
            raise QueueBusy(queue) from e  # our exclusive consume lost a race
        except BrokerUnavailable as e:
            cause = e.__cause__ or e
            raise BrokerUnavailable(
                f"lost the connection to RabbitMQ at {redact(self._url)} ({describe(cause)}); "
                "entries not yet confirmed are still in their queue"
            ) from e

    def _declare(self, queue: str) -> tuple[int, int]:
        """(ready messages, consumers); :class:`dlq.UnknownQueue` if there is no such queue."""
        if self._probe is None or not self._probe.is_open:
            with self.seam(queue):
                self._probe = self.connection.channel()
        with self.seam(queue):
            method = self._probe.queue_declare(queue, passive=True).method
        return int(method.message_count), int(method.consumer_count)

    def depth(self, queue: str) -> int:
        """Ready messages in ``queue`` (not those another consumer holds)."""
        return self._declare(queue)[0]

    def exists(self, queue: str) -> bool:
        try:
            self.depth(queue)
        except dlq.UnknownQueue:
            return False
        return True

    @contextmanager
    def hold(self, queue: str) -> Iterator[Held]:
        """Take every ready entry of ``queue`` (unacked) for the ``with`` block."""
        depth, consumers = self._declare(queue)
        if consumers:
            # Nothing consumes a DLQ but these commands: what another one holds is not
            # ready, so we would see too little (and an empty queue is a wrong answer).
            raise QueueBusy(queue)
        with self.seam(queue):
            channel = self.connection.channel()
        held = Held(self, channel, queue, depth)
        try:
            with self.seam(queue):
                held._fill()
            yield held
        finally:
            held._release()

    def browse(self, queue: str) -> Snapshot:
        """The entries of ``queue`` in order; the queue is left as it was."""
        with self.hold(queue) as held:
            return held.snapshot()

    def publish(self, message: dlq.Republish) -> None:
        """Publish with a confirm and ``mandatory``: returns only once the broker has it."""
        with self.seam():
            if self._publisher is None or not self._publisher.is_open:
                self._publisher = self.connection.channel()
                self._publisher.confirm_delivery()
            self._publisher.basic_publish(
                message.exchange,
                message.routing_key,
                message.body,
                pika.BasicProperties(
                    content_type=message.content_type,
                    delivery_mode=pika.DeliveryMode.Persistent,
                    message_id=message.message_id,
                    headers=message.headers,
                    # The replaying operator's user, verified by the broker: the router
                    # judges a replayed event by the operator's rights ([security]).
                    user_id=pika.URLParameters(self._url).credentials.username or None,
                ),
                mandatory=True,
            )


# -- the router (request/reply over crmsync.control, through aio-pika) ----------------------


def registered_adapters(cfg: BrokerConfig, timeout: float = ROUTER_TIMEOUT) -> list[str]:
    """The adapters the router's registry knows (whose DLQs ``dlq`` looks at by default)."""
    try:
        reply = call_router(cfg, StatusRequest(), Status, timeout)
    except RouterUnavailable as e:
        raise RouterUnavailable(
            f"{e}; without the router's registry, name the queue: --adapter NAME (or --invalid)"
        ) from e
    return sorted(a.name for a in reply.adapters)


# -- the queues one command works on -------------------------------------------------------


def queues_to_read(cfg: BrokerConfig, adapter: str | None, invalid: bool) -> tuple[list[str], bool]:
    """(queue names, named explicitly?): the invalid queue, one adapter's DLQ, or the DLQ
    of every adapter in the router's registry."""
    from router.topology import INVALID, dlq_queue

    if invalid or adapter == dlq.ROUTER:
        return [INVALID], True
    if adapter:
        return [dlq.queue_for(adapter)], True
    return [dlq_queue(name) for name in registered_adapters(cfg)], False


@dataclass(frozen=True)
class Holding:
    """Entries of several queues, held together for one command."""

    held: list[Held]

    @property
    def entries(self) -> list[dlq.Entry]:
        return [e for h in self.held for e in h.entries]

    @property
    def where(self) -> str:
        return ", ".join(h.queue for h in self.held) or "any DLQ (the router knows no adapters)"

    @property
    def snapshots(self) -> list[Snapshot]:
        return [h.snapshot() for h in self.held]

    def of(self, entry: dlq.Entry) -> Held:
        return next(h for h in self.held if h.queue == entry.queue)


@contextmanager
def hold_all(cfg: BrokerConfig, adapter: str | None, invalid: bool) -> Iterator[Holding]:
    """Hold every entry of the queues the options name; all go back on exit except those
    removed. A registered adapter whose DLQ does not exist (yet) has none."""
    names, explicit = queues_to_read(cfg, adapter, invalid)
    with DlqBroker(cfg) as broker, ExitStack() as stack:
        held = [
            stack.enter_context(broker.hold(name))
            for name in names
            if explicit or broker.exists(name)
        ]
        yield Holding(held)


def browse_all(cfg: BrokerConfig, adapter: str | None, invalid: bool) -> Holding:
    """Like :func:`hold_all`, but everything is back in place when it returns."""
    with hold_all(cfg, adapter, invalid) as holding:
        return holding
