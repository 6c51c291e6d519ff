"""An adapter whose loop dies must exit, not limp on with heartbeats (issue 10)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from adapters.supervision import AdapterLoopEnded, until_one_ends

log = logging.getLogger("test")


async def _forever() -> None:
    await asyncio.Event().wait()


async def _sink(stopping: asyncio.Event, applied: list[str]) -> None:
    await stopping.wait()
    await asyncio.sleep(0.01)  # the batch in hand
    applied.append("batch")


async def test_a_loop_that_returns_while_running_is_an_error() -> None:
    stopping = asyncio.Event()

    async def capture() -> None:
        return

    tasks = [asyncio.create_task(capture(), name="capture"), asyncio.create_task(_forever())]
    with pytest.raises(AdapterLoopEnded, match="capture loop ended by itself"):
        await until_one_ends(tasks, stopping, log, "legacy")
    tasks[1].cancel()


async def test_a_loop_cancelled_from_inside_is_an_error() -> None:
    """What a stuck connection's CancelledError used to do to the capture loop."""
    stopping = asyncio.Event()

    async def capture() -> None:
        raise asyncio.CancelledError

    tasks = [asyncio.create_task(capture(), name="capture"), asyncio.create_task(_forever())]
    with pytest.raises(AdapterLoopEnded):
        await until_one_ends(tasks, stopping, log, "legacy")
    tasks[1].cancel()


async def test_a_loop_that_fails_raises_its_error() -> None:
    async def capture() -> None:
        raise ValueError("boom")

    tasks = [asyncio.create_task(capture()), asyncio.create_task(_forever())]
    with pytest.raises(ValueError, match="boom"):
        await until_one_ends(tasks, asyncio.Event(), log, "legacy")
    tasks[1].cancel()


async def test_on_stop_the_sink_finishes_its_batch() -> None:
    stopping = asyncio.Event()
    applied: list[str] = []

    async def capture() -> None:
        await stopping.wait()

    tasks = [asyncio.create_task(capture()), asyncio.create_task(_sink(stopping, applied))]
    asyncio.get_running_loop().call_later(0.01, stopping.set)
    await until_one_ends(tasks, stopping, log, "legacy")
    assert applied == ["batch"]
