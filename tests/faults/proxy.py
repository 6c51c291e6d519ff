"""A TCP proxy between the daemons and the broker that can go half-open.

``half_open()`` stops forwarding bytes in both directions but keeps every socket open
and keeps accepting new ones: what a dead NAT entry, a pulled cable or a stuck firewall
looks like to both ends (no FIN, no RST, just silence). Only a heartbeat can tell. The
proxy notes when a client gives up on a silenced connection (it closes its end), which
is the detection time the scenario reports. ``heal()`` forwards again.

It runs its own event loop on a thread, so synchronous test code can drive it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field


@dataclass
class _Link:
    opened: float
    closed_by_client: float | None = None
    writers: list[asyncio.StreamWriter] = field(default_factory=list)


class Proxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.target_port = target_port
        self.port = 0
        self.links: list[_Link] = []
        self.silenced_at: float | None = None
        self._open = threading.Event()
        self._open.set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> Proxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/"

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        link = _Link(time.monotonic(), writers=[client_w])
        self.links.append(link)
        try:
            server_r, server_w = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            client_w.close()
            return
        link.writers.append(server_w)
        await asyncio.gather(
            self._pump(client_r, server_w, link, from_client=True),
            self._pump(server_r, client_w, link, from_client=False),
        )

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        link: _Link,
        from_client: bool,
    ) -> None:
        try:
            while data := await reader.read(65536):
                # Silenced: swallow what arrives (a real black hole) and forward nothing.
                if self._open.is_set():
                    writer.write(data)
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        if from_client and link.closed_by_client is None:
            link.closed_by_client = time.monotonic()
        # The broker gave up on a silenced connection: its FIN must not reach the client
        # either (that would tell it what only a heartbeat should).
        while not from_client and not self._open.is_set() and link.closed_by_client is None:
            await asyncio.sleep(0.1)
        for w in link.writers:
            w.close()

    def half_open(self) -> None:
        self.silenced_at = time.monotonic()
        self._open.clear()

    def heal(self) -> None:
        self._open.set()

    def detections(self) -> list[float]:
        """Seconds from ``half_open()`` until each connection open then was given up by
        its client; connections never given up are missing from the list."""
        if self.silenced_at is None:
            return []
        at = self.silenced_at
        return sorted(
            link.closed_by_client - at
            for link in self.links
            if link.opened < at
            and link.closed_by_client is not None
            and link.closed_by_client >= at
        )

    def open_before_silence(self) -> int:
        at = self.silenced_at
        return sum(
            1
            for link in self.links
            if at is not None
            and link.opened < at
            and (link.closed_by_client is None or link.closed_by_client >= at)
        )

    def close(self) -> None:
        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            for link in self.links:
                for w in link.writers:
                    w.close()
            pumps = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            if self._server is not None:
                await self._server.wait_closed()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shut(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._loop.is_closed():
            self._loop.close()
