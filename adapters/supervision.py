"""How an adapter's concurrent loops (capture, heartbeat, sink) live and die together."""

from __future__ import annotations

import asyncio
import logging

from router.logs import kv


class AdapterLoopEnded(RuntimeError):
    """A bug: one of the adapter's loops returned or was cancelled while not stopping."""


async def until_one_ends(
    tasks: list[asyncio.Task[None]], stopping: asyncio.Event, log: logging.Logger, name: str
) -> None:
    """Return once stopped, the last task (the sink loop) having finished its batch in
    hand; raise when a loop ends otherwise.

    A loop that ends by itself leaves a half-working adapter (heartbeats going on,
    nothing captured: how a half-open broker connection once left them): better to exit
    non-zero and be restarted by the supervisor."""
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        if not task.cancelled() and (error := task.exception()) is not None:
            raise error
    if not stopping.is_set():
        names = ",".join(sorted(t.get_name() for t in done))
        log.error(
            "a loop of the adapter ended by itself; exiting to be restarted",
            extra=kv(adapter=name, loop=names),
        )
        raise AdapterLoopEnded(f"the adapter's {names} loop ended by itself")
    await tasks[-1]
