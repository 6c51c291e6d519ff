"""One event the router fails on is refused as internal-error; the rest of its batch
proceeds (router/daemon/pipeline.py, router/daemon/isolation.py). In-memory broker; the
real one is in tests/integration/test_router_guard.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from router import control, topology
from router.broker.memory import MemoryBroker
from router.broker.rpc import RpcClient
from router.config import RouterConfig
from router.daemon import Router, pipeline
from router.events import INT_MAX, encode_dict
from router.messages import Outgoing
from router.record import RecordState
from router.state import RouterStore, VersionConflict
from tests.factories import make_state
from tests.integration.support import event, eventually

ENTITIES = {"contact": ["email", "first_name"]}


@dataclass
class Hub:
    broker: MemoryBroker
    router: Router

    async def publish(self, payload: dict[str, Any]) -> bytes:
        body = encode_dict(payload)
        publisher = await (await self.broker.connect()).publisher()
        key = f"{payload['source']}.contact.upsert"
        await publisher.publish(Outgoing(topology.CHANGES, key, body, payload["event_id"]))
        return body

    def refused(self) -> list[Outgoing]:
        return self.broker.messages(topology.INVALID)

    def delivered(self, target: str) -> list[Outgoing]:
        return self.broker.messages(topology.sink_queue(target))


@pytest.fixture
def seed() -> list[RecordState]:
    return []


@pytest.fixture
async def hub(tmp_path: Path, seed: list[RecordState]) -> AsyncIterator[Hub]:
    url = f"sqlite:///{tmp_path / 'router.db'}"
    if seed:  # a state made before this router (e.g. poisoned before clocks were checked)
        store = RouterStore(url)
        store.commit_batch([], seed, [], [])
        store.close()
    broker = MemoryBroker()
    # A long linger: the test's events share one batch.
    config = RouterConfig.model_validate({"state": {"url": url}, "router": {"linger": "300ms"}})
    router = Router(config, broker=broker.connect)
    task = asyncio.create_task(router.run())
    await asyncio.wait_for(router.ready.wait(), 10)
    rpc = RpcClient(await broker.connect())
    for name in ("legacy", "sales"):
        await rpc.request(control.Register(name=name, entities=ENTITIES), control.Registered)
    try:
        yield Hub(broker, router)
    finally:
        router.stop()
        await asyncio.wait_for(task, 10)


def new_id() -> str:
    return str(uuid.uuid4())


async def three_events(hub: Hub) -> tuple[str, list[bytes]]:
    """Three first versions from legacy in one batch; returns the middle one's record."""
    ids = [new_id() for _ in range(3)]
    bodies = [
        await hub.publish(event("legacy", rid, {"legacy": 1}, {"email": f"{i}@x.io"}))
        for i, rid in enumerate(ids)
    ]
    return ids[1], bodies


async def assert_only_the_middle_refused(hub: Hub, bodies: list[bytes]) -> Outgoing:
    await eventually(lambda: hub.router.stats.verdicts["accepted"] == 2, what="the others")
    await eventually(lambda: len(hub.refused()) == 1, what="one refusal")
    [refused] = hub.refused()
    assert refused.body == bodies[1], "refused byte for byte"
    assert refused.headers[topology.REASON_HEADER] == "internal-error"
    tb = str(refused.headers[topology.TRACEBACK_HEADER])
    assert tb.startswith("Traceback") and len(tb) <= topology.TRACEBACK_LIMIT
    assert {m.body for m in hub.delivered("sales")} == {bodies[0], bodies[2]}
    assert hub.router.stats.invalid["internal-error"] == 1
    return refused


def failing_for(record_id: str, error: Callable[[], Exception], real: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        states = args[1] if len(args) > 1 else kwargs.get("states", ())
        if any(s.record_id == record_id for s in states):
            raise error()
        return real(*args, **kwargs)

    return wrapper


async def test_an_exception_in_decide_refuses_only_that_event(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = ""
    real = pipeline.decide

    def decide(ev: Any, *args: Any) -> Any:
        if ev.record_id == bad:
            raise RuntimeError("a bug in one decision")
        return real(ev, *args)

    monkeypatch.setattr(pipeline, "decide", decide)
    ids = [new_id() for _ in range(3)]
    bad = ids[1]
    bodies = [
        await hub.publish(event("legacy", rid, {"legacy": 1}, {"email": f"{i}@x.io"}))
        for i, rid in enumerate(ids)
    ]
    refused = await assert_only_the_middle_refused(hub, bodies)
    assert "RuntimeError: a bug in one decision" in str(refused.headers[topology.DETAIL_HEADER])
    assert hub.router.store.get(bad) is None


@pytest.mark.parametrize(
    "error",
    [
        lambda: sa.exc.DataError("INSERT", {}, Exception("value too long")),
        lambda: VersionConflict("another router keeps winning"),
    ],
    ids=["store-rejects-a-value", "version-conflict-after-retries"],
)
async def test_a_commit_failing_for_one_event_stores_the_rest_of_the_batch(
    hub: Hub, monkeypatch: pytest.MonkeyPatch, error: Callable[[], Exception]
) -> None:
    ids = [new_id() for _ in range(3)]
    store = hub.router.store
    monkeypatch.setattr(store, "commit_batch", failing_for(ids[1], error, store.commit_batch))
    bodies = [
        await hub.publish(event("legacy", rid, {"legacy": 1}, {"email": f"{i}@x.io"}))
        for i, rid in enumerate(ids)
    ]
    await assert_only_the_middle_refused(hub, bodies)
    assert store.get(ids[0]) is not None and store.get(ids[2]) is not None
    assert store.get(ids[1]) is None
    # Nothing is left for redelivery: the batch was acked.
    assert hub.broker.messages(topology.INGRESS) == []


POISONED = new_id()


@pytest.mark.parametrize(
    "seed",
    [
        [
            make_state(
                {"legacy": 1, "hub": INT_MAX}, {"email": "a@x.io"}, record_id=POISONED, version=0
            )
        ]
    ],
)
async def test_a_resolution_that_cannot_be_built_refuses_only_that_event(hub: Hub) -> None:
    # A record poisoned before clocks were checked: resolving a concurrent edit would
    # increment the hub past signed 64 bits, and building that event fails validation.
    others = [new_id(), new_id()]
    bodies = [
        await hub.publish(event("legacy", others[0], {"legacy": 1}, {"email": "0@x.io"})),
        await hub.publish(event("sales", POISONED, {"legacy": 1, "sales": 1}, {"email": "b@x.io"})),
        await hub.publish(event("legacy", others[1], {"legacy": 1}, {"email": "2@x.io"})),
    ]
    refused = await assert_only_the_middle_refused(hub, bodies)
    assert "ValidationError" in str(refused.headers[topology.DETAIL_HEADER])
    assert hub.router.store.get(POISONED).clock.get("hub") == INT_MAX  # type: ignore[union-attr]
