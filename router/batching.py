"""Turn a stream of deliveries into batches: one commit, one round of confirms, one ack.

The consumer callback only appends; the worker takes up to ``size`` messages. ``linger``
bounds how long the *first* message of a batch waits for company, counted from its
arrival: messages that queued up while the previous batch was being processed are taken
at once (waiting again for them would only add latency), and a burst that fills a batch
ends the wait early. Batches are taken in delivery order, so acking the last message
with ``multiple=True`` acks exactly the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Generic, TypeVar

T = TypeVar("T")


class Batcher(Generic[T]):
    def __init__(self, size: int, linger: float) -> None:
        self.size = size
        self.linger = linger
        self._buffer: list[T] = []
        self._arrived = asyncio.Event()
        self._full = asyncio.Event()
        self._first_at = 0.0  # when the oldest buffered message arrived
        self._closed = False

    async def add(self, message: T) -> None:
        """The consumer callback (async: aio-pika runs plain callbacks ~20x slower)."""
        if not self._buffer:
            self._first_at = time.monotonic()
        self._buffer.append(message)
        self._arrived.set()
        if len(self._buffer) >= self.size:
            self._full.set()

    def close(self) -> None:
        """Wake the worker; :meth:`take` then returns what is buffered, or nothing."""
        self._closed = True
        self._arrived.set()
        self._full.set()

    def drain(self) -> list[T]:
        """Hand back everything buffered, to be settled by the caller.

        Never just forget a message: on a channel that is still open, an unsettled
        message would be swept up by the next ``ack(multiple=True)`` unprocessed.
        """
        drained, self._buffer = self._buffer, []
        self._settle_events()
        return drained

    @property
    def idle(self) -> bool:
        return not self._buffer

    async def take(self) -> list[T]:
        """The next batch; cancelling the wait loses nothing (nothing is taken until then)."""
        await self._arrived.wait()
        remaining = self._first_at + self.linger - time.monotonic()
        if not self._closed and len(self._buffer) < self.size and remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), remaining)
        batch = self._buffer[: self.size]
        del self._buffer[: len(batch)]
        # What is left arrived before this batch was taken: its wait has begun already,
        # so ``_first_at`` stays (the next take does not linger again for it).
        self._settle_events()
        return batch

    def _settle_events(self) -> None:
        if self._closed:
            return
        if not self._buffer:
            self._arrived.clear()
        if len(self._buffer) < self.size:
            self._full.clear()
