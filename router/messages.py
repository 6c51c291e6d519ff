"""Messages as plain values, on both sides of the broker seam.

:class:`Outgoing` is what crmsync asks the broker to publish; :class:`Delivery` is what
the broker handed to a consumer. Neither knows about aio-pika or pika: the state store
keeps ``Outgoing`` rows in its outbox, the router's pipeline judges ``Delivery`` values,
and unit tests build both by hand or get them from :mod:`router.broker.memory`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


# Not frozen: these are made per message on the router's hot path, and a frozen
# dataclass costs five times as much to construct. Nothing mutates them.
@dataclass(slots=True)
class Outgoing:
    """One message to publish. ``exchange=""`` is the default exchange (to a queue by name)."""

    exchange: str
    routing_key: str
    body: bytes
    message_id: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    reply_to: str | None = None
    correlation_id: str | None = None
    # RabbitMQ checks a user_id against the connection's user: it proves who published.
    user_id: str | None = None
    expiration: float | None = None  # seconds (per-message TTL, for retry tiers)
    # Unroutable publishes are confirmed silently: every publish that must reach a queue
    # is mandatory, and a return is an error. Requests to a router that may not be there
    # are not (the caller's timeout says so).
    mandatory: bool = True


class Settle(Protocol):
    """How a consumer tells the broker what became of a delivery (the seam implements it;
    the shape is aio-pika's, so its messages serve as they are)."""

    async def ack(self, multiple: bool = False) -> None: ...

    async def nack(self, multiple: bool = False, requeue: bool = True) -> None: ...


@dataclass(slots=True)
class Delivery:
    """One message handed to a consumer, with the facts the broker vouches for.

    ``user_id`` is checked by RabbitMQ against the publishing connection's user, so it
    proves who published; ``redelivered`` says the broker handed it out before.
    """

    body: bytes
    routing_key: str
    settle: Settle
    message_id: str | None = None
    user_id: str | None = None
    redelivered: bool = False
    headers: Mapping[str, Any] = field(default_factory=dict)
    reply_to: str | None = None
    correlation_id: str | None = None
    # The migration batch this event was split from (a router.batches.BatchMeta).
    batch: Any = None

    async def ack(self, multiple: bool = False) -> None:
        """Never raises: on a channel that died meanwhile the broker redelivers anyway."""
        try:
            await self.settle.ack(multiple=multiple)
        except Exception:  # see the docstring: the outcome is the same
            return

    async def nack(self, requeue: bool = True) -> None:
        try:
            await self.settle.nack(requeue=requeue)
        except Exception:
            return
