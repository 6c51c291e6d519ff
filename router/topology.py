"""Names and specifications of every exchange and queue crmsync uses, as data.

All durable; queues are quorum queues. Declaring them is the broker seam's job
(:meth:`router.broker.Connection.declare`): idempotent, and an existing queue with other
arguments is a :class:`~router.errors.TopologyMismatch` with the fix in the message,
never a crash loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

CHANGES: Final = "crmsync.changes"
DELIVERIES: Final = "crmsync.deliveries"
DEAD: Final = "crmsync.dead"
CONTROL: Final = "crmsync.control"
# An adapter's own failure paths (its retry tiers, keys NAME.DELAY, and its DLQ, key
# NAME.dead) have an exchange of their own. Through the default exchange or
# crmsync.dead a user allowed to write there could write into any queue, another
# adapter's sink included; RabbitMQ narrows writes by routing key only on a *topic*
# exchange (topic permissions), so this one is a topic exchange bound by exact keys.
RETRY: Final = "crmsync.retry"
INGRESS: Final = "crmsync.router.ingress"
INVALID: Final = "crmsync.router.invalid"
ROUTER_CONTROL: Final = "crmsync.router.control"

RECORD_KEY_HEADER: Final = "x-record-key"
# adapter -> the record id its row was known under, on a delivery of a record it aliases
ALIASES_HEADER: Final = "x-crmsync-aliases"
REASON_HEADER: Final = "x-crmsync-reason"
DETAIL_HEADER: Final = "x-crmsync-detail"

# History of a failed write (DESIGN "Headers on a dead-lettered message"). They travel
# with the message through the retry tiers and into the DLQ.
TARGET_HEADER: Final = "x-crmsync-target"
ATTEMPTS_HEADER: Final = "x-crmsync-attempts"
REPLAYS_HEADER: Final = "x-crmsync-replays"  # how often an operator replayed this write
ERROR_TYPE_HEADER: Final = "x-crmsync-error-type"
ERROR_HEADER: Final = "x-crmsync-error"
TRACEBACK_HEADER: Final = "x-crmsync-traceback"
FIRST_FAILED_HEADER: Final = "x-crmsync-first-failed-at"
LAST_FAILED_HEADER: Final = "x-crmsync-last-failed-at"
TRACEBACK_LIMIT: Final = 4000  # characters kept of a traceback
# The *-failed-at headers are integer epoch milliseconds: aio-pika sends Python floats
# as 32-bit AMQP floats (128-second steps at today's epoch) and pika cannot send floats.
# Retries wait delay * (1 + up to this), never less: the budget is at least the sum.
RETRY_JITTER: Final = 0.2

# The poison-message backstop sits well above any retry budget (see DESIGN "Known traps").
SINK_DELIVERY_LIMIT: Final = 50
# The router judges one event at a time and refuses a bad one itself; this only catches
# a message that kills the router process every time it is held. A healthy message held
# through a crash (up to ``prefetch`` of them per crash) gets one more delivery each time,
# so the limit sits far above any crash loop an operator would let run.
INGRESS_DELIVERY_LIMIT: Final = 200
# Where the broker dead-letters from the ingress: the dead-letter exchange, under a key
# no adapter can have (adapter names have no dots), into the invalid queue.
INVALID_ROUTE: Final = INVALID


def sink_queue(adapter: str) -> str:
    return f"crmsync.sink.{adapter}"


def dlq_queue(adapter: str) -> str:
    return f"crmsync.dlq.{adapter}"


def retry_queue(adapter: str, delay: str) -> str:
    return f"crmsync.retry.{adapter}.{delay}"


def retry_key(adapter: str, delay: str) -> str:
    """The routing key on :data:`RETRY` of ``adapter``'s ``delay`` tier: anchored on the
    adapter's name so a topic permission ``^NAME\\.`` can limit who writes it."""
    return f"{adapter}.{delay}"


def dead_key(adapter: str) -> str:
    """The routing key on :data:`RETRY` of ``adapter``'s DLQ (an adapter dead-letters a
    write itself through it; the broker's own dead-lettering uses crmsync.dead)."""
    return f"{adapter}.dead"


# Reply and request queues are named by the broker user that owns them, so a permission
# can be written for them (server-named amq.gen-* queues cannot be scoped to a user).
REPLY_PREFIX: Final = "crmsync.reply"
REQUESTS_PREFIX: Final = "crmsync.requests"
REPLY_KEY_PREFIX: Final = "reply"


def reply_route(reply_to: str) -> tuple[str, str]:
    """(exchange, routing key) that reaches the reply queue ``reply_to``. crmsync's own
    reply queues are bound on crmsync.control under ``reply.QUEUE`` (write on the
    default exchange would reach every queue); any other name is a queue of an older
    client, reached through the default exchange."""
    if reply_to.startswith(REPLY_PREFIX + "."):
        return CONTROL, f"{REPLY_KEY_PREFIX}.{reply_to}"
    return "", reply_to


def _quorum(**extra: object) -> dict[str, object]:
    return {"x-queue-type": "quorum", **extra}


ExchangeKind = Literal["topic", "direct"]


@dataclass(frozen=True)
class ExchangeSpec:
    name: str
    kind: ExchangeKind


@dataclass(frozen=True)
class QueueSpec:
    name: str
    arguments: dict[str, object]
    bindings: tuple[tuple[str, str], ...] = field(default=())  # (exchange, routing key)


HUB_EXCHANGES: Final = (
    ExchangeSpec(CHANGES, "topic"),
    ExchangeSpec(DELIVERIES, "direct"),
    ExchangeSpec(DEAD, "direct"),
    ExchangeSpec(CONTROL, "topic"),
    ExchangeSpec(RETRY, "topic"),
)


def mismatch_fix(queue: str) -> str:
    """What an operator does about ``queue`` existing with other arguments (one line)."""
    if queue == INGRESS:
        # Made by a crmsync before single-active-consumer: deleting it while adapters
        # publish would drop their events, so it is emptied by the old router first.
        return (
            "it predates the single active router: stop the adapters, let the running "
            "router empty it (crmsync status), stop the router, "
            f"rabbitmqctl delete_queue {INGRESS}, run 'crmsync topology declare', then "
            "start the router and the adapters (docs/operations.md, upgrading the ingress)"
        )
    return (
        f"drain and delete it (rabbitmqctl delete_queue {queue}) then run "
        "'crmsync topology declare' again"
    )


def ingress_arguments() -> dict[str, object]:
    """One active consumer (a second router is a hot standby), and a delivery limit that
    dead-letters at least once into the invalid queue (never into the ingress itself)."""
    return _quorum(
        **{
            "x-single-active-consumer": True,
            "x-delivery-limit": INGRESS_DELIVERY_LIMIT,
            "x-dead-letter-exchange": DEAD,
            "x-dead-letter-routing-key": INVALID_ROUTE,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
    )


def hub_queues() -> list[QueueSpec]:
    # The invalid queue first: the ingress's dead-letter target must exist before it.
    return [
        QueueSpec(INVALID, _quorum(), ((DEAD, INVALID_ROUTE),)),
        QueueSpec(INGRESS, ingress_arguments(), ((CHANGES, "#"),)),
        QueueSpec(
            ROUTER_CONTROL,
            _quorum(),
            ((CONTROL, "register.*"), (CONTROL, "heartbeat.*"), (CONTROL, "op.#")),
        ),
    ]


def sink_spec(adapter: str) -> QueueSpec:
    """An adapter's sink. At-least-once dead-lettering needs the strategy *and*
    reject-publish overflow and an existing dead-letter exchange; otherwise RabbitMQ
    silently falls back to at-most-once."""
    return QueueSpec(
        sink_queue(adapter),
        _quorum(
            **{
                "x-delivery-limit": SINK_DELIVERY_LIMIT,
                "x-dead-letter-exchange": DEAD,
                "x-dead-letter-routing-key": adapter,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            }
        ),
        ((DELIVERIES, adapter),),
    )


def adapter_queues(adapter: str, retry_tiers: Iterable[tuple[str, float]] = ()) -> list[QueueSpec]:
    """The sink, its DLQ and its back-off tiers (``(label, seconds)``)."""
    dlq = QueueSpec(dlq_queue(adapter), _quorum(), ((DEAD, adapter), (RETRY, dead_key(adapter))))
    specs = [dlq, sink_spec(adapter)]
    for label, seconds in retry_tiers:
        # One queue per tier: a per-message TTL only expires at the head of a queue. The
        # queue TTL caps the jittered per-message expiry the adapter sets.
        delay_ms = int(seconds * (1.0 + RETRY_JITTER) * 1000) + 1
        specs.append(
            QueueSpec(
                retry_queue(adapter, label),
                _quorum(
                    **{
                        "x-message-ttl": delay_ms,
                        "x-dead-letter-exchange": DELIVERIES,
                        "x-dead-letter-routing-key": adapter,
                        "x-dead-letter-strategy": "at-least-once",
                        "x-overflow": "reject-publish",
                    }
                ),
                ((RETRY, retry_key(adapter, label)),),
            )
        )
    return specs


def aliases_header(headers: Mapping[str, Any]) -> dict[str, str] | None:
    """A delivery's ``x-crmsync-aliases`` (adapter -> alias record id); None when absent
    or not a map of strings (an adapter ignores what it cannot read)."""
    raw = headers.get(ALIASES_HEADER)
    if not isinstance(raw, Mapping):
        return None
    return {str(k): str(v) for k, v in raw.items() if isinstance(v, str)} or None
