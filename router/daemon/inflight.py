"""Bookkeeping of the batches the router has in flight (see :mod:`.service`).

A batch is *in flight* from its commit until its ack: its deliveries are being
published and confirmed. When anything fails, every message not yet acked must be given
back to the broker exactly once, and none may be forgotten: a forgotten message would
be acked unprocessed by the next ``ack(multiple=True)``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass

from router.messages import Delivery


@dataclass
class Sending:
    """A committed batch whose deliveries are being published, then acked."""

    batch: list[Delivery]
    task: asyncio.Task[None]


async def abandon(sending: Iterable[Sending]) -> list[Delivery]:
    """Stop publishing these batches; their messages, except those already acked."""
    held: list[Delivery] = []
    for item in sending:
        task = item.task
        if task.done() and not task.cancelled() and task.exception() is None:
            continue  # acked: settling them again would close the channel
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        held += item.batch
    return held


async def stop_taking(taking: asyncio.Task[list[Delivery]] | None) -> list[Delivery]:
    """Stop waiting for a batch; what it took already, if it finished meanwhile (a batch
    nobody settles would be acked unprocessed by the next multiple-ack)."""
    if taking is None:
        return []
    if not taking.done():
        taking.cancel()  # take() keeps what it has not handed out
        with contextlib.suppress(asyncio.CancelledError):
            await taking
        return []
    return [] if taking.cancelled() else taking.result()


def raise_failed(sending: Iterable[Sending]) -> None:
    """Re-raise the failure of any batch whose publishing failed."""
    for item in sending:
        task = item.task
        if task.done() and not task.cancelled() and task.exception() is not None:
            task.result()
