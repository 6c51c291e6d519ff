"""``crmsync identity list/resolve`` over the control plane, on the in-memory broker:
the same Router as in production (tests/integration/test_spine_identity.py runs it with
real adapters)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from router import control, topology
from router.broker.memory import MemoryBroker
from router.broker.rpc import RpcClient
from router.config import RouterConfig
from router.control import Refused
from router.daemon import Router
from router.events import decode, encode_dict
from router.messages import Outgoing
from tests.integration.support import event, eventually

ENTITIES = {"contact": ["email", "first_name"]}


@dataclass
class Hub:
    broker: MemoryBroker
    rpc: RpcClient
    router: Router
    counters: dict[str, int]

    async def publish(self, source: str, record_id: str, sid: str, email: str) -> dict[str, Any]:
        counter = self.counters[source] = self.counters.get(source, 0) + 1
        payload = event(source, record_id, {source: counter}, {"email": email})
        payload["source_record_id"] = sid
        publisher = await (await self.broker.connect()).publisher()
        key = f"{source}.contact.upsert"
        await publisher.publish(Outgoing(topology.CHANGES, key, encode_dict(payload), sid))
        return payload

    def delivered(self, target: str) -> list[Outgoing]:
        return self.broker.messages(topology.sink_queue(target))

    async def parked(self) -> list[dict[str, Any]]:
        reply = await self.rpc.request(control.ListIdentities(), control.Identities, timeout=5)
        return reply.identities

    async def resolve(self, **decision: Any) -> control.IdentityResolved:
        request = control.request(control.ResolveIdentity, **decision)
        return await self.rpc.request(request, control.IdentityResolved, timeout=5)


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    broker = MemoryBroker()
    config = RouterConfig.model_validate(
        {
            "state": {"url": f"sqlite:///{tmp_path / 'router.db'}"},
            "router": {"linger": "1ms"},
            "entities": {"contact": {"match": ["email"]}},
        }
    )
    router = Router(config, broker=broker.connect)
    task = asyncio.create_task(router.run())
    await asyncio.wait_for(router.ready.wait(), 10)
    rpc = RpcClient(await broker.connect())
    for name in ("legacy", "sales", "mktg"):
        await rpc.request(control.Register(name=name, entities=ENTITIES), control.Registered)
    try:
        yield Hub(broker, rpc, router, {})
    finally:
        router.stop()
        await asyncio.wait_for(task, 10)


async def test_an_ambiguous_event_is_listed_then_linked_and_delivered(hub: Hub) -> None:
    one, two, newcomer = (str(uuid.uuid4()) for _ in range(3))
    await hub.publish("legacy", one, "L-1", "a@x.io")
    await hub.publish("mktg", two, "M-1", "A@X.IO")  # mktg's own customer: no legacy row
    await eventually(lambda: hub.router.stats.verdicts["linked"] == 1, what="linked")
    # Two records now hold the key only if linking did not happen: make a second by --new.
    await hub.publish("legacy", str(uuid.uuid4()), "L-2", "a@x.io")
    await eventually(lambda: hub.router.stats.verdicts["duplicate-in-source"] == 1, what="dup")
    [dup] = await hub.parked()
    assert dup["reason"] == "duplicate" and dup["candidates"] == [one]
    made = await hub.resolve(event_id=dup["event_id"], new=True)
    assert (made.decision, made.record_id, made.verdict) == ("new", dup["record_id"], "accepted")
    assert await hub.parked() == []
    before = len(hub.delivered("sales"))
    payload = await hub.publish("sales", newcomer, "S-1", " a@x.io")
    await eventually(lambda: hub.router.stats.verdicts["ambiguous"] == 1, what="ambiguous")
    [parked] = await hub.parked()
    assert parked["event_id"] == payload["event_id"] and parked["reason"] == "ambiguous"
    assert sorted(parked["candidates"]) == sorted([one, dup["record_id"]])
    assert len(hub.delivered("sales")) == before  # nothing sent while it waits
    assert hub.router.store.counts()["identities_parked"] == 1

    with pytest.raises(Refused, match="no live record"):
        await hub.resolve(event_id=parked["event_id"], link=str(uuid.uuid4()))
    with pytest.raises(Refused, match="no parked event"):
        await hub.resolve(event_id=str(uuid.uuid4()), discard=True)
    assert len(await hub.parked()) == 1  # a refused decision changed nothing

    linked = await hub.resolve(event_id=parked["event_id"], link=one)
    assert (linked.decision, linked.record_id, linked.verdict) == ("link", one, "conflict")
    await eventually(lambda: len(hub.delivered("sales")) == before + 1, what="delivered")
    sent = hub.delivered("sales")[-1]
    assert decode(sent.body).record_id == one
    assert sent.headers[topology.ALIASES_HEADER] == {"mktg": two, "sales": newcomer}
    assert await hub.parked() == []
    # A version the hub makes (an edit, a conflict's resolution) names them too: a CRM
    # that never applied a delivery of the record must not write it as a second row.
    edit = control.EditRecord(record_id=one, set={"first_name": "Zed"})
    await hub.rpc.request(edit, control.VersionMade, timeout=5)
    await eventually(lambda: len(hub.delivered("sales")) == before + 2, what="edit sent")
    sent = hub.delivered("sales")[-1]
    assert sent.headers[topology.ALIASES_HEADER] == {"mktg": two, "sales": newcomer}


async def test_discard_drops_the_parked_event(hub: Hub) -> None:
    first = str(uuid.uuid4())
    await hub.publish("legacy", first, "L-1", "a@x.io")
    await hub.publish("legacy", str(uuid.uuid4()), "L-2", "a@x.io")
    await eventually(lambda: hub.router.stats.verdicts["duplicate-in-source"] == 1, what="dup")
    [dup] = await hub.parked()
    done = await hub.resolve(event_id=dup["event_id"], discard=True)
    assert (done.decision, done.record_id) == ("discard", None)
    assert await hub.parked() == []
    assert hub.router.store.get(dup["record_id"]) is None
