"""``crmsync status`` shows an adapter whose capture keeps failing as degraded, and how
many rows it skipped (issue 10, item 7): heartbeats through the real broker and router."""

from __future__ import annotations

import asyncio
from typing import Any

from aio_pika.abc import AbstractRobustConnection

from router import control
from router.broker.aio import Connection
from router.broker.rpc import RpcClient
from router.status import gather_status
from tests.integration.support import RunningRouter, register


async def _status_of(connection: AbstractRobustConnection, name: str) -> dict[str, Any]:
    data = await gather_status(Connection(connection), timeout=5.0)
    [adapter] = [a for a in data["adapters"] if a["name"] == name]
    return adapter


async def _beat(connection: AbstractRobustConnection, beat: control.Heartbeat) -> None:
    await RpcClient(Connection(connection)).notify(beat)


async def test_failing_capture_shows_degraded_then_alive_again(
    router: RunningRouter, connection: AbstractRobustConnection
) -> None:
    assert (await register(connection, "legacy"))["ok"] is True
    failing = control.CaptureHealth(failing=5, error="OperationalError", bad_rows=2)
    await _beat(connection, control.Heartbeat(name="legacy", actor="legacy", capture=failing))
    for _ in range(50):
        adapter = await _status_of(connection, "legacy")
        if adapter["state"] == "degraded":
            break
        await asyncio.sleep(0.1)
    assert (adapter["state"], adapter["alive"]) == ("degraded", False)
    assert adapter["capture"]["bad_rows"] == 2
    assert adapter["capture"]["error"] == "OperationalError"

    healthy = control.CaptureHealth(failing=0, last_ok=1.0, bad_rows=2)
    await _beat(connection, control.Heartbeat(name="legacy", actor="legacy", capture=healthy))
    for _ in range(50):
        adapter = await _status_of(connection, "legacy")
        if adapter["state"] == "alive":
            break
        await asyncio.sleep(0.1)
    assert (adapter["state"], adapter["alive"]) == ("alive", True)
    assert adapter["capture"]["bad_rows"] == 2


async def test_an_adapter_sending_no_capture_health_is_alive(
    router: RunningRouter, connection: AbstractRobustConnection
) -> None:
    assert (await register(connection, "legacy"))["ok"] is True
    await _beat(connection, control.Heartbeat(name="legacy", actor="legacy"))
    adapter = await _status_of(connection, "legacy")
    assert (adapter["state"], adapter["alive"], adapter["capture"]) == ("alive", True, None)
