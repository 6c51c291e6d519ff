"""In-flight bookkeeping: on a failure every unacked message is given back, none twice,
none forgotten (a forgotten one would be acked unprocessed by the next multiple-ack)."""

from __future__ import annotations

import asyncio

import pytest

from router.daemon.inflight import Sending, abandon, raise_failed, stop_taking
from router.errors import PublishFailed
from router.messages import Delivery


class _Unsettled:
    async def ack(self, multiple: bool = False) -> None: ...

    async def nack(self, multiple: bool = False, requeue: bool = True) -> None: ...


def _batch(*names: str) -> list[Delivery]:
    return [Delivery(name.encode(), "k", _Unsettled()) for name in names]


async def test_a_batch_taken_in_the_same_wait_as_a_failure_is_handed_back() -> None:
    taken = _batch("a", "b")

    async def take() -> list[Delivery]:
        return taken

    taking = asyncio.create_task(take())
    await asyncio.sleep(0)
    assert taking.done()
    assert await stop_taking(taking) == taken


async def test_a_pending_take_is_cancelled_and_holds_nothing() -> None:
    taking: asyncio.Task[list[Delivery]] = asyncio.create_task(asyncio.sleep(10, result=[]))
    assert await stop_taking(taking) == []
    assert taking.cancelled()
    assert await stop_taking(None) == []


async def test_abandon_gives_back_every_batch_but_those_already_acked() -> None:
    async def acked() -> None:
        return None

    async def failed() -> None:
        raise PublishFailed("nacked")

    done, broken = asyncio.create_task(acked()), asyncio.create_task(failed())
    pending = asyncio.create_task(asyncio.sleep(10))
    await asyncio.sleep(0.01)
    sending = [
        Sending(_batch("acked"), done),
        Sending(_batch("failed"), broken),
        Sending(_batch("pending"), pending),
    ]
    with pytest.raises(PublishFailed):
        raise_failed(sending)  # a later batch's failure surfaces, whatever the oldest does
    held = await abandon(sending)
    assert [d.body for d in held] == [b"failed", b"pending"]
    assert pending.cancelled()
