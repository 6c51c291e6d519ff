"""Queue declarations and channel chores of the asyncio client (:mod:`router.broker.aio`),
kept apart so that module stays readable."""

from __future__ import annotations

import logging

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractQueue, AbstractRobustChannel

from router.broker.errors import aio_errors
from router.errors import TopologyMismatch
from router.logs import kv
from router.topology import QueueSpec, mismatch_fix

log = logging.getLogger("crmsync.broker")


async def _declare_on(channel: AbstractChannel, spec: QueueSpec) -> AbstractQueue:
    """Declare ``spec`` (durable, its arguments) and its bindings on ``channel``."""
    with aio_errors(f"declare queue {spec.name}"):
        try:
            queue = await channel.declare_queue(
                spec.name,
                durable=True,
                arguments=spec.arguments,  # type: ignore[arg-type]
            )
        except aio_pika.exceptions.ChannelPreconditionFailed as e:
            raise TopologyMismatch(
                f"queue {spec.name} already exists with other arguments "
                f"({e.args[0] if e.args else e}); {mismatch_fix(spec.name)}"
            ) from e
    for exchange, key in spec.bindings:
        with aio_errors(f"bind queue {spec.name} to {exchange}"):
            await queue.bind(exchange, key)
    return queue


async def _say_when_cancelled(channel: AbstractRobustChannel, queue: str) -> None:
    """Log the broker cancelling our consumer (its queue was deleted): aio-pika then
    declares the queue again by itself, but what the deleted queue held is gone."""

    def on_cancel(_frame: object) -> None:
        log.error(
            "sink queue was deleted under its consumer; declared it again and resumed; "
            "what it held is lost (docs/operations.md, 'sink queue was deleted')",
            extra=kv(queue=queue),
        )

    async def watch(*_: object) -> None:
        underlay = await channel.get_underlay_channel()
        underlay.on_consumer_cancel_callbacks.add(on_cancel)

    await watch()
    channel.reopen_callbacks.add(watch)


async def _close(channel: AbstractChannel) -> None:
    if not channel.is_closed:
        with aio_errors("close a channel"):
            await channel.close()
