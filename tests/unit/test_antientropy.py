"""Anti-entropy (issue 11, item 8): the ``[reconcile]`` config, the adapter-vs-hub
comparison (router/antientropy.py) and one adapter's round over fakes
(router/daemon/antientropy.py): a real state store, a fake adapter, a fake publisher."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import cast

import pytest

from router import antientropy as ae
from router import topology
from router.batches import REPAIR_HEADER
from router.broker.base import BrokerConnection, BrokerPublisher
from router.compare import INVALID, Digest
from router.config import RouterConfig, load_router
from router.control import Refused
from router.daemon.antientropy import (
    AntiEntropy,
    Pacer,
    first_delay,
    last_round,
    save_last_round,
)
from router.daemon.context import RouterContext
from router.daemon.stats import AE_COMPARED, AE_DRIFT, AE_REPAIRED
from router.errors import ConfigError, RouterUnavailable
from router.events import Scalar, decode
from router.hashing import content_hash
from router.identity import Alias, IdentityWrites
from router.messages import Outgoing
from router.migrate import Hub
from router.record import RecordState
from router.registry import Registration
from router.state import RouterStore
from tests.factories import make_state

FIELDS = ["email", "first_name"]


# -- config ---------------------------------------------------------------------------
def test_anti_entropy_is_off_by_default_and_validated(tmp_path: Path) -> None:
    assert RouterConfig().reconcile.interval() is None
    on = RouterConfig.model_validate({"reconcile": {"every": "1h", "rate": 500}})
    assert (on.reconcile.interval(), on.reconcile.rate, on.reconcile.repair) == (3600, 500, True)
    for bad, says in (
        ('every = "soon"', "reconcile.every': Value error, not a duration"),
        ('every = "500ms"', "at least 1s"),
        ('every = "1h"\nrate = 0', "reconcile.rate'"),
        ('every = "1h"\nrepiar = false', "unknown key 'reconcile.repiar'"),
    ):
        path = tmp_path / "router.toml"
        path.write_text(f"[reconcile]\n{bad}\n")
        with pytest.raises(ConfigError, match=r"router\.toml") as info:
            load_router(path)
        assert says in str(info.value)


def test_the_example_config_documents_the_section() -> None:
    text = (Path(__file__).resolve().parents[2] / "config" / "router.toml").read_text()
    assert "# [reconcile]" in text and '# every = "1h"' in text


# -- the comparison -------------------------------------------------------------------
def hub(record_id: str, fields: Mapping[str, Scalar], **kw: object) -> ae.HubDigest:
    state = make_state({"a": 1}, fields, record_id=record_id, **kw)  # type: ignore[arg-type]
    return ae.hub_digest(state, FIELDS)


def theirs(record_id: str, fields: Mapping[str, Scalar] | None) -> Digest:
    return Digest(
        record_id, "s" + record_id, None if fields is None else content_hash(fields, False)
    )


async def stream(items: Sequence[ae.HubDigest | Digest]) -> AsyncIterator[ae.HubDigest | Digest]:
    for item in items:
        yield item


async def found(
    adapter: Sequence[Digest], hub_side: Sequence[ae.HubDigest]
) -> list[ae.Found | None]:
    pairs = ae.merge(stream(adapter), stream(hub_side))  # type: ignore[arg-type]
    return [f async for f in pairs]


def test_the_hub_hashes_only_the_adapters_fields_and_a_missing_one_as_null() -> None:
    state = make_state({"a": 1}, {"email": "a@x.io", "phone": "+49301234"})
    mine = ae.hub_digest(state, FIELDS)
    assert mine.hash == content_hash({"email": "a@x.io", "first_name": None}, False)
    assert ae.hub_digest(make_state({"a": 1}, {}, deleted=True), FIELDS).hash is None


async def test_each_kind_of_drift_and_what_is_not_compared() -> None:
    same = {"email": "a@x.io", "first_name": "Ann"}
    got = await found(
        [
            theirs("r1", same),  # equal
            theirs("r2", {**same, "first_name": "Silent"}),  # different
            theirs("r3", None),  # row gone behind the hub's back
            theirs("r5", same),  # deleted in the hub
            Digest("r6", "s6", INVALID),
            theirs("r7", same),  # only the adapter knows it (its change is on the way)
            theirs("r8", None),  # deleted on both sides
            theirs("r9", {**same, "first_name": "Other"}),  # parked in the hub
        ],
        [
            hub("r1", same),
            hub("r2", same),
            hub("r3", same),
            hub("r4", same),  # never linked by the adapter (joined late): missing
            hub("r5", {}, deleted=True),
            hub("r6", same),
            hub("r8", {}, deleted=True),
            hub("r9", same, parked="c1"),
        ],
    )
    kinds = [(f.kind, f.record_id) if f else None for f in got]
    assert kinds == [
        None,
        ("different", "r2"),
        ("missing", "r3"),
        ("missing", "r4"),
        ("deleted", "r5"),
        ("invalid", "r6"),
        None,
    ]


def test_drift_is_confirmed_only_when_seen_the_same_way_twice() -> None:
    s = ae.Suspects()
    first = ae.Found("different", "r1", "h1", 3)
    assert not s.confirm(first)
    s.round_done()
    assert s.confirm(first)
    assert not s.confirm(ae.Found("different", "r2", "h1", 3))  # new: not yet
    s.round_done()
    assert not s.confirm(ae.Found("different", "r1", "h2", 3))  # the adapter's row moved on
    s.round_done()
    assert not s.confirm(ae.Found("different", "r1", "h2", 4))  # the hub has a new version


# -- one round over fakes -------------------------------------------------------------
class FakeAdapter:
    """Stands in for :meth:`Hub.digests`: the adapter's rows by record id."""

    def __init__(self, rows: dict[str, dict[str, str | None] | None]) -> None:
        self.rows = rows
        self.down = False
        self.refuses = False
        self.asked = 0

    async def digests(
        self, adapter: str, entity: str, fields: list[str], page: int = 2000
    ) -> AsyncIterator[Digest]:
        self.asked += 1
        if self.down:
            raise RouterUnavailable(f"adapter {adapter!r} did not answer within 30s")
        if self.refuses:
            raise Refused("unknown entity 'contact'")
        for record_id in sorted(self.rows):
            picked = self.rows[record_id]
            yield theirs(record_id, None if picked is None else {f: picked.get(f) for f in fields})


class FakePublisher:
    def __init__(self) -> None:
        self.sent: list[Outgoing] = []

    async def publish_many(self, items: Sequence[Outgoing]) -> None:
        self.sent += items

    async def publish(self, item: Outgoing) -> None:
        self.sent.append(item)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RouterStore]:
    s = RouterStore(f"sqlite:///{tmp_path / 'router.db'}")
    yield s
    s.close()


def rid(i: int) -> str:
    """Record ids are uuids; these sort as their numbers do."""
    return f"00000000-0000-4000-8000-{i:012d}"


def person(i: int) -> dict[str, str | None]:
    return {"email": f"p{i}@x.io", "first_name": f"P{i}"}


def rig(
    store: RouterStore, n: int, rate: float = 1000, repair: bool = True
) -> tuple[AntiEntropy, FakeAdapter, FakePublisher, Clock]:
    states: list[RecordState] = [
        make_state({"crm": 1}, person(i), actor="crm", record_id=rid(i), version=0)
        for i in range(n)
    ]
    store.commit_batch([], states, [], [])
    config = RouterConfig.model_validate(
        {"reconcile": {"every": "1h", "rate": rate, "repair": repair}}
    )
    ctx = RouterContext(config)
    reg = Registration("crm", 1, {"contact": FIELDS}, "test", 0.0, 1e12)
    ctx.open(store, {"crm": reg})
    fake = FakeAdapter({rid(i): person(i) for i in range(n)})
    publisher, clock = FakePublisher(), Clock()
    task = AntiEntropy(ctx, cast(BrokerPublisher, publisher), _no_broker, clock.sleep, clock)
    task._hub = cast(Hub, fake)
    return task, fake, publisher, clock


async def _no_broker(*_args: object) -> BrokerConnection:
    raise AssertionError("the test hands the task its hub")


def value(metric: object, *labels: str) -> float:
    return float(metric.labels(*labels)._value.get())  # type: ignore[attr-defined]


async def test_confirmed_drift_is_repaired_through_the_repair_path(store: RouterStore) -> None:
    task, fake, publisher, _ = rig(store, 20)
    fake.rows[rid(3)] = {"email": "p3@x.io", "first_name": "Silent"}
    fake.rows[rid(5)] = None  # deleted behind the hub's back
    del fake.rows[rid(7)]  # never linked: the adapter joined late
    before = {k: value(AE_DRIFT, "crm", k) for k in ("different", "missing")}
    repaired, compared = value(AE_REPAIRED, "crm"), value(AE_COMPARED, "crm")

    first = (await task.round())["crm"]["contact"]
    assert (first.compared, first.suspected, first.drift, first.repaired) == (20, 3, {}, 0)
    assert publisher.sent == []  # seen once: perhaps a change capture has not read yet

    second = (await task.round())["crm"]["contact"]
    assert second.drift == {"different": 1, "missing": 2}
    assert second.repaired == 3
    sent = {decode(m.body).record_id: m for m in publisher.sent}
    assert sorted(sent) == [rid(3), rid(5), rid(7)]
    for message in sent.values():
        assert message.exchange == topology.DELIVERIES and message.routing_key == "crm"
        assert message.headers[REPAIR_HEADER] is True and "BCC" not in message.headers
    assert decode(sent[rid(3)].body).fields == person(3)  # the hub's version
    assert value(AE_DRIFT, "crm", "different") == before["different"] + 1
    assert value(AE_DRIFT, "crm", "missing") == before["missing"] + 2
    assert value(AE_REPAIRED, "crm") == repaired + 3
    assert value(AE_COMPARED, "crm") == compared + 40

    # Not written yet by the next round: suspected afresh, not counted or sent twice.
    third = (await task.round())["crm"]["contact"]
    assert (third.suspected, third.drift, len(publisher.sent)) == (3, {}, 3)
    fake.rows.update({rid(i): person(i) for i in (3, 5, 7)})  # the repairs landed
    fourth = (await task.round())["crm"]["contact"]
    assert (fourth.suspected, fourth.drift, len(publisher.sent)) == (0, {}, 3)


async def test_a_hub_record_that_changed_since_it_was_compared_is_not_repaired(
    store: RouterStore,
) -> None:
    task, fake, publisher, _ = rig(store, 3)
    fake.rows[rid(1)] = {"email": "p1@x.io", "first_name": "Silent"}
    await task.round()
    state = store.get(rid(1))
    assert state is not None
    newer = make_state({"crm": 2}, person(1), actor="crm", record_id=rid(1), version=state.version)
    store.commit_batch([], [newer], [], [])  # a new version, on its way to the adapter
    tally = (await task.round())["crm"]["contact"]
    assert tally.drift == {} and tally.suspected == 1 and publisher.sent == []


async def test_report_only_counts_and_logs_and_sends_nothing(
    store: RouterStore, caplog: pytest.LogCaptureFixture
) -> None:
    task, fake, publisher, _ = rig(store, 3, repair=False)
    fake.rows[rid(2)] = {"email": "p2@x.io", "first_name": "Secret value"}
    caplog.set_level(logging.INFO, logger="crmsync.router")
    await task.round()
    tally = (await task.round())["crm"]["contact"]
    assert tally.drift == {"different": 1} and tally.repaired == 0 and publisher.sent == []
    [line] = [r for r in caplog.records if r.getMessage() == "drift found"]
    assert line.__dict__["kv"] == {  # logged as extra=kv(...)
        "adapter": "crm",
        "entity": "contact",
        "record_id": rid(2),
        "kind": "different",
    }
    assert "Secret" not in caplog.text


async def test_the_comparison_holds_the_rate(store: RouterStore) -> None:
    task, _fake, _publisher, clock = rig(store, 50, rate=10)
    assert task.page == 10
    await task.round()
    assert clock.slept == pytest.approx(5.0)  # 50 records at 10/s


async def test_a_silent_adapter_is_skipped_and_logged_once(
    store: RouterStore, caplog: pytest.LogCaptureFixture
) -> None:
    task, fake, _publisher, _ = rig(store, 3)
    fake.down = True
    caplog.set_level(logging.WARNING, logger="crmsync.router")
    assert await task.round() == {}
    assert await task.round() == {}
    skipped = [r for r in caplog.records if r.getMessage().startswith("anti-entropy skips")]
    assert len(skipped) == 1 and "did not answer" in skipped[0].getMessage()
    fake.down = False
    assert (await task.round())["crm"]["contact"].compared == 3
    fake.down = True
    await task.round()  # answered in between: its silence is news again
    assert len([r for r in caplog.records if r.getMessage().startswith("anti-entropy skips")]) == 2


async def test_pacer_sleeps_only_when_ahead_of_the_rate() -> None:
    clock = Clock()
    pacer = Pacer(100, clock.sleep, clock)
    clock.now = 2.0  # slower than the rate already: no sleep
    await pacer.done(100)
    assert clock.slept == 0
    await pacer.done(300)
    assert clock.slept == pytest.approx(2.0)


async def test_an_adapter_that_refuses_is_logged_and_the_round_goes_on(
    store: RouterStore, caplog: pytest.LogCaptureFixture
) -> None:
    task, fake, _publisher, _ = rig(store, 3)
    fake.refuses = True
    caplog.set_level(logging.WARNING, logger="crmsync.router")
    assert await task.round() == {}
    [line] = [
        r for r in caplog.records if r.getMessage() == "anti-entropy could not compare adapter"
    ]
    assert line.__dict__["kv"] == {"adapter": "crm", "error": "unknown entity 'contact'"}


async def test_a_repair_names_the_records_aliases(store: RouterStore) -> None:
    """A CRM whose row is still linked under the id identity matching aliased must
    re-key it (adapters.migration.MigrationWork.repair), not get the customer twice."""
    task, fake, publisher, _ = rig(store, 3)
    alias = Alias("00000000-0000-4000-8000-00000000a11a", rid(1), "contact", "crm", "s1", 0.0)
    store.commit_batch([], [], [], [], identity=IdentityWrites(aliases=[alias]))
    del fake.rows[rid(1)]  # the adapter knows the row as the alias only
    await task.round()
    await task.round()
    [message] = publisher.sent
    assert decode(message.body).record_id == rid(1)
    assert message.headers[topology.ALIASES_HEADER] == {"crm": alias.alias_id}


def test_the_last_round_is_kept_so_restarts_do_not_starve_rounds(store: RouterStore) -> None:
    assert last_round(store) is None
    save_last_round(store, 1000.5)
    save_last_round(store, 2000.25)
    assert last_round(store) == 2000.25
    hour = 3600.0
    assert first_delay(hour, None, 5000) == hour  # never ran: a full interval first
    assert first_delay(hour, 5000 - 600, 5000) == hour - 600  # due in 50 minutes
    assert first_delay(hour, 5000 - 7200, 5000) == 30  # overdue: once the router settled
    assert first_delay(2.0, 0.0, 5000) == 2.0  # short intervals: never before one interval


async def test_run_waits_as_the_store_says_and_records_each_round(store: RouterStore) -> None:
    task, _fake, _publisher, _clock = rig(store, 2)
    save_last_round(store, time.time() - 3590)  # due in ~10 s: after the 30 s settle
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) == 2:
            raise asyncio.CancelledError

    task._sleep = sleep
    before = last_round(store)
    with pytest.raises(asyncio.CancelledError):
        await task.run(3600.0)
    assert delays[0] == pytest.approx(30.0) and delays[1] == pytest.approx(3600.0)
    after = last_round(store)
    assert before is not None and after is not None and after > before


async def test_a_failing_round_is_logged_and_the_next_one_comes_on_time(
    store: RouterStore, caplog: pytest.LogCaptureFixture
) -> None:
    task, _fake, _publisher, _clock = rig(store, 2)
    delays: list[float] = []

    async def broken(*_args: object) -> None:
        raise RuntimeError("state store on fire")

    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) == 3:
            raise asyncio.CancelledError

    task._sleep = sleep
    task.round = broken  # type: ignore[method-assign,assignment]
    caplog.set_level(logging.ERROR, logger="crmsync.router")
    with pytest.raises(asyncio.CancelledError):
        await task.run(60.0)
    assert delays == [60.0, 60.0, 60.0]  # never ran: a full interval first
    failed = [r for r in caplog.records if r.getMessage() == "anti-entropy round failed"]
    assert len(failed) == 2 and last_round(store) is None
