"""adapters.push without a database: the Wakeup's coalescing and the URL reading."""

from __future__ import annotations

import asyncio

from adapters.push import Wakeup, connect_args


async def test_many_notifications_make_one_wake() -> None:
    wakeup = Wakeup()
    for _ in range(100):
        wakeup.set()
    assert await wakeup.wait(1.0) is True
    assert await wakeup.wait(0.01) is False  # taken: the pass that follows covers them
    assert wakeup.wakes == 1


async def test_a_notification_during_a_pass_wakes_the_next_wait_at_once() -> None:
    wakeup = Wakeup()
    waiter = asyncio.create_task(wakeup.wait(5.0))
    await asyncio.sleep(0)  # the loop waits ...
    wakeup.set()  # ... and a change commits
    assert await asyncio.wait_for(waiter, 1.0) is True
    wakeup.set()  # during the pass
    assert await asyncio.wait_for(wakeup.wait(5.0), 0.5) is True


async def test_without_a_notification_the_wait_is_the_poll_interval() -> None:
    wakeup = Wakeup()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await wakeup.wait(0.05) is False
    assert loop.time() - started >= 0.04
    assert wakeup.wakes == 0


def test_connect_args_read_the_sqlalchemy_url_whichever_driver() -> None:
    url = "postgresql+psycopg2://crm:s%40cret@db.example:6543/crm?options=-csearch_path%3Dsales"
    assert connect_args(url) == {
        "host": "db.example",
        "port": 6543,
        "user": "crm",
        "password": "s@cret",
        "dbname": "crm",
        "options": "-csearch_path=sales",
    }
