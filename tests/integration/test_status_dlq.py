"""crmsync status shows each DLQ's depth and its oldest failure's age, and looking does
not reorder the queue (issue 4, item 5)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from datetime import UTC, datetime

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

from router import topology
from tests.integration.support import register

pytestmark = pytest.mark.integration


async def _status(amqp: str) -> dict[str, object]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router.cli",
        "status",
        "--json",
        env={**os.environ, "CRMSYNC_AMQP_URL": amqp},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    data: dict[str, object] = json.loads(out)
    # Dead letters need a person: status says so, and exits 1 for monitoring.
    assert proc.returncode == 1, err.decode()
    assert data["attention"] == ["3 dead letter(s) in crmsync.dlq.sales"], data["attention"]
    return data


@pytest.mark.usefixtures("router")
async def test_status_reports_dlq_depth_and_oldest_failure_without_reordering(
    amqp: str, connection: AbstractRobustConnection
) -> None:
    await register(connection, "sales")
    channel = await connection.channel()
    dead = await channel.get_exchange(topology.DEAD, ensure=False)
    now = time.time()
    # a poison entry first: dead-lettered by the broker, only x-death says when
    died = datetime.fromtimestamp(now - 7200, UTC)
    await dead.publish(
        aio_pika.Message(
            b"p0",
            headers={
                "x-death": [
                    {
                        "queue": "crmsync.sink.sales",
                        "reason": "delivery_limit",
                        "count": 1,
                        "time": died,
                        "exchange": "crmsync.deliveries",
                        "routing-keys": ["sales"],
                    }
                ]
            },
        ),
        "sales",
    )
    for i, age in enumerate((600, 60)):
        await dead.publish(
            aio_pika.Message(
                f"m{i}".encode(),
                headers={
                    topology.FIRST_FAILED_HEADER: int((now - age) * 1000),
                    topology.ATTEMPTS_HEADER: 3,
                },
            ),
            "sales",
        )
    data = await _status(amqp)
    queues = {q["name"]: q for q in data["queues"]}  # type: ignore[attr-defined]
    dlq = queues[topology.dlq_queue("sales")]
    assert dlq["messages"] == 3
    assert 7190 <= dlq["oldest_failure_age"] <= 7300  # the head: the poison entry
    assert queues[topology.sink_queue("sales")]["oldest_failure_age"] is None

    await _status(amqp)  # looking twice changes nothing
    q = await channel.declare_queue(topology.dlq_queue("sales"), passive=True)
    bodies = []
    while (m := await q.get(no_ack=True, fail=False)) is not None:
        bodies.append(m.body)
        assert m.headers.get(topology.ATTEMPTS_HEADER, 3) == 3
    assert bodies == [b"p0", b"m0", b"m1"]
