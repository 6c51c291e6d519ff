"""Fixtures shared by the integration tests (the broker fixtures are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

from tests.integration.spine import Spine
from tests.integration.support import RunningRouter, running_router


@pytest.fixture
async def connection(amqp: str) -> AsyncIterator[AbstractRobustConnection]:
    """A robust connection to this test's own vhost."""
    conn = await aio_pika.connect_robust(amqp)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def router(amqp: str, tmp_path: Path) -> AsyncIterator[RunningRouter]:
    """A router running in-process on this test's own vhost, its state in
    ``tmp_path/router.db``: ready when the test starts, stopped after it (unless the test
    stopped it to look at what it left behind)."""
    async with running_router(amqp, tmp_path / "router.db") as running:
        yield running


@pytest.fixture
def spine(amqp: str, tmp_path: Path) -> Iterator[Spine]:
    """Router and adapters as real processes; every one must stop cleanly (exit 0)."""
    s = Spine(tmp_path, amqp)
    try:
        yield s
    finally:
        codes = s.stop()
    assert all(code == 0 for code in codes.values()), f"unclean exits: {codes}"
