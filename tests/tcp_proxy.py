"""A local TCP proxy that can go half-open: sockets stay open, nothing is forwarded.

That is what a client sees when the broker's host vanishes without a FIN (power loss, a
NAT or firewall dropping its state): writes succeed into the kernel, nothing ever comes
back. Only AMQP heartbeats (and timeouts on what the client waits for) notice it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class HalfOpenProxy:
    """Forwards to ``upstream``; :meth:`freeze` turns the open connections half-open for
    good (the peer is gone) while new connections flow normally (the network healed)."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._open: set[asyncio.StreamWriter] = set()
        self._frozen: set[asyncio.StreamWriter] = set()
        self._never = asyncio.Event()
        self.port = 0
        self.connections = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def freeze(self) -> int:
        """Stop forwarding on every open connection, keep its sockets open; how many."""
        self._frozen |= self._open
        return len(self._open) // 2

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._open | self._frozen:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        self._open |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                if dst in self._frozen:
                    await self._never.wait()  # swallowed: nothing ever arrives
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if dst not in self._frozen:  # a vanished peer sends no FIN either
                dst.close()
                self._open.discard(dst)


@contextlib.asynccontextmanager
async def half_open_proxy(host: str, port: int) -> AsyncIterator[HalfOpenProxy]:
    proxy = HalfOpenProxy(host, port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
