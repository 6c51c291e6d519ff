"""Batches: linger bounds the first message's wait, a backlog goes at once, nothing lost."""

from __future__ import annotations

import asyncio
import time

from router.batching import Batcher

LINGER = 0.2


async def test_a_lone_message_waits_for_company_at_most_the_linger() -> None:
    batcher: Batcher[int] = Batcher(10, LINGER)
    await batcher.add(1)
    started = time.monotonic()
    assert await batcher.take() == [1]
    assert LINGER * 0.8 <= time.monotonic() - started < LINGER * 3


async def test_messages_that_queued_up_meanwhile_are_taken_without_waiting_again() -> None:
    batcher: Batcher[int] = Batcher(10, LINGER)
    await batcher.add(1)
    await asyncio.sleep(LINGER)  # arrived while the previous batch was being processed
    await batcher.add(2)
    started = time.monotonic()
    assert await batcher.take() == [1, 2]
    assert time.monotonic() - started < LINGER / 4


async def test_a_full_batch_ends_the_wait_and_the_rest_waits_from_its_own_arrival() -> None:
    batcher: Batcher[int] = Batcher(3, LINGER)
    taking = asyncio.create_task(batcher.take())
    arrived = time.monotonic()
    for i in range(5):
        await batcher.add(i)
    assert await asyncio.wait_for(taking, 1) == [0, 1, 2]
    assert time.monotonic() - arrived < LINGER / 4  # full: no lingering
    assert await batcher.take() == [3, 4]
    # Their linger counts from their arrival, not from the second take.
    assert time.monotonic() - arrived < LINGER * 1.5
    assert batcher.idle


async def test_cancelling_a_take_loses_nothing_and_close_hands_over_the_rest() -> None:
    batcher: Batcher[int] = Batcher(10, 10.0)
    await batcher.add(1)
    taking = asyncio.create_task(batcher.take())
    await asyncio.sleep(0.01)
    taking.cancel()
    await asyncio.gather(taking, return_exceptions=True)
    await batcher.add(2)
    batcher.close()
    assert await asyncio.wait_for(batcher.take(), 1) == [1, 2]
    assert await asyncio.wait_for(batcher.take(), 1) == []


async def test_drain_hands_back_everything_buffered() -> None:
    batcher: Batcher[int] = Batcher(10, 10.0)
    for i in range(3):
        await batcher.add(i)
    assert batcher.drain() == [0, 1, 2]
    assert batcher.idle
    waiting = asyncio.create_task(batcher.take())
    await asyncio.sleep(0.01)
    assert not waiting.done()  # nothing buffered: take waits for the next arrival
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
