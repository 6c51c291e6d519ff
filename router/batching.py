"""Turn a stream of deliveries into batches: one commit, one round of confirms, one ack.

The consumer callback only appends; the worker takes up to ``size`` messages, waiting
at most ``linger`` seconds for a burst to fill a batch. Batches are taken in delivery
order, so acking the last message with ``multiple=True`` acks exactly the batch.
"""

from __future__ import annotations

import asyncio
import time

from aio_pika.abc import AbstractIncomingMessage


class Batcher:
    def __init__(self, size: int, linger: float) -> None:
        self.size = size
        self.linger = linger
        self._buffer: list[AbstractIncomingMessage] = []
        self._arrived = asyncio.Event()
        self._closed = False

    async def add(self, message: AbstractIncomingMessage) -> None:
        """The consumer callback (async: aio-pika runs plain callbacks ~20x slower)."""
        self._buffer.append(message)
        self._arrived.set()

    def close(self) -> None:
        """Wake the worker; :meth:`take` then returns what is buffered, or nothing."""
        self._closed = True
        self._arrived.set()

    def drain(self) -> list[AbstractIncomingMessage]:
        """Hand back everything buffered, to be settled by the caller.

        Never just forget a message: on a channel that is still open, an unsettled
        message would be swept up by the next ``ack(multiple=True)`` unprocessed.
        """
        drained, self._buffer = self._buffer, []
        if not self._closed:
            self._arrived.clear()
        return drained

    @property
    def idle(self) -> bool:
        return not self._buffer

    async def take(self) -> list[AbstractIncomingMessage]:
        await self._arrived.wait()
        if not self._closed and len(self._buffer) < self.size:
            deadline = time.monotonic() + self.linger
            while len(self._buffer) < self.size and time.monotonic() < deadline:
                await asyncio.sleep(self.linger / 5)
        batch = self._buffer[: self.size]
        del self._buffer[: len(batch)]
        if not self._buffer and not self._closed:
            self._arrived.clear()
        return batch
