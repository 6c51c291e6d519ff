"""``crmsync status``: adapters registered and alive, queue depths, router counters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from router import topology
from router.broker.base import BrokerConnection
from router.broker.rpc import RpcClient
from router.control import Status, StatusRequest
from router.dlq import read_entry
from router.errors import RouterUnavailable


@dataclass(frozen=True)
class QueueDepth:
    name: str
    messages: int | None  # None: the queue does not exist
    consumers: int | None
    oldest_failure_age: float | None = None  # DLQs: seconds since the head entry first failed


async def queue_depths(connection: BrokerConnection, names: list[str]) -> list[QueueDepth]:
    depths = []
    for name in names:
        counts = await connection.queue_counts(name)
        if counts is None:
            depths.append(QueueDepth(name, None, None))
            continue
        messages, consumers = counts
        age = None
        if name.startswith("crmsync.dlq.") and messages:
            head = await connection.peek(name)
            # The same reading of the failure headers as `crmsync dlq list` uses.
            first = read_entry(name, 0, *head).first_failed_at if head else None
            age = round(time.time() - first, 1) if first is not None else None
        depths.append(QueueDepth(name, messages, consumers, age))
    return depths


DEGRADED_AFTER = 3  # consecutive failed capture passes that make an adapter degraded


def adapter_state(heartbeat_age: float, limit: float, capture: dict[str, Any] | None) -> str:
    """``alive``, ``degraded`` (heartbeats come, but capture keeps failing: its CRM's
    changes are not going out) or ``down`` (no heartbeat within the router's limit)."""
    if heartbeat_age > limit:
        return "down"
    if capture is not None and int(capture.get("failing") or 0) >= DEGRADED_AFTER:
        return "degraded"
    return "alive"


async def gather_status(connection: BrokerConnection, timeout: float = 3.0) -> dict[str, Any]:
    """Everything ``crmsync status`` shows, as plain data (the ``--json`` output)."""
    router: dict[str, Any] | None
    try:
        reply = await RpcClient(connection).request(StatusRequest(), Status, timeout=timeout)
        router = reply.model_dump(mode="json")
    except RouterUnavailable:
        router = None
    now = time.time()
    adapters = []
    queues = [topology.INGRESS, topology.INVALID, topology.ROUTER_CONTROL]
    if router:
        limit = float(router.get("heartbeat_timeout", 30.0))
        for a in router["adapters"]:
            age = now - a["last_heartbeat"]
            state = adapter_state(age, limit, a.get("capture"))
            adapters.append(
                {**a, "heartbeat_age": round(age, 1), "alive": state == "alive", "state": state}
            )
            queues += [topology.sink_queue(a["name"]), topology.dlq_queue(a["name"])]
            tiers = (a.get("capture") or {}).get("retry_tiers") or []
            queues += [topology.retry_queue(a["name"], label) for label in tiers]
    depths = await queue_depths(connection, queues)
    return {
        "router": {
            "alive": router is not None,
            **(
                {
                    k: router[k]
                    for k in (
                        "hub_actor",
                        "active_router",
                        "uptime",
                        "last_batch_age",
                        "verdicts",
                        "invalid",
                        "store",
                    )
                }
                if router
                else {}
            ),
        },
        "adapters": adapters,
        "queues": [
            {
                "name": d.name,
                "messages": d.messages,
                "consumers": d.consumers,
                "oldest_failure_age": d.oldest_failure_age,
            }
            for d in depths
        ],
        "drained": drained(router, adapters, depths),
    }


def attention(data: dict[str, Any]) -> list[str]:
    """Why ``crmsync status`` exits 1 (empty: healthy): what an operator must look at.
    Traffic in flight is not among them; what waits for a person or is not flowing is."""
    router = data["router"]
    if not router["alive"]:
        return ["router not answering"]
    reasons = []
    store = router.get("store") or {}
    if store.get("conflicts_open"):
        reasons.append(f"{store['conflicts_open']} conflict(s) parked")
    if store.get("identities_parked"):
        reasons.append(f"{store['identities_parked']} record(s) parked by identity matching")
    for a in data["adapters"]:
        state = a.get("state", "alive" if a.get("alive") else "down")
        if state == "down":
            reasons.append(f"adapter {a['name']} down")
        elif state == "degraded":
            reasons.append(f"adapter {a['name']} degraded (its capture keeps failing)")
        bad = (a.get("capture") or {}).get("bad_rows")
        if bad:
            reasons.append(f"adapter {a['name']} skipped {bad} bad row(s)")
    for q in data["queues"]:
        if not q["messages"]:
            continue
        if q["name"].startswith("crmsync.dlq."):
            reasons.append(f"{q['messages']} dead letter(s) in {q['name']}")
        elif q["name"] == topology.INVALID:
            reasons.append(f"{q['messages']} invalid event(s) in {q['name']}")
    return reasons


def drained(
    router: dict[str, Any] | None, adapters: list[dict[str, Any]], depths: list[QueueDepth]
) -> bool:
    """Nothing in flight anywhere: the ingress, every sink and retry tier empty, no
    delivery owed by the router's outbox and no local change in an adapter's outbox.
    (Dead letters and invalid events are not in flight: they wait for an operator.)"""
    if router is None:
        return False
    queues_empty = all(
        (d.messages or 0) == 0
        for d in depths
        if d.name != topology.INVALID and not d.name.startswith("crmsync.dlq.")
    )
    owed = int((router.get("store") or {}).get("outbox", 0))
    outboxes = sum(int((a.get("capture") or {}).get("outbox") or 0) for a in adapters)
    return queues_empty and owed == 0 and outboxes == 0


def run_status(
    connection_factory: Callable[[], Awaitable[BrokerConnection]], timeout: float
) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        connection = await connection_factory()
        try:
            return await gather_status(connection, timeout)
        finally:
            await connection.close()

    return asyncio.run(go())
