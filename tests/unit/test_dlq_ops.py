"""Operator procedures on DLQs (router/dlq_ops.py) over a stand-in for the held queues:
purge removes what was counted and no more, replay reports each entry and stops at the
first refusal, an edit removes the entry only once the router made the new version."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from router import control, dlq, dlq_ops
from router.config import BrokerConfig
from router.errors import CrmsyncError, PublishFailed
from tests.unit.test_dlq_plan import GARBAGE, SALES_DLQ, entry

BROKER = BrokerConfig()
SNAPSHOT: Any = ("snapshot", SALES_DLQ)  # passed through to the caller untouched


@dataclass
class FakeHeld:
    """One queue's entries as held: what was removed or republished is recorded."""

    entries: list[dlq.Entry]
    queue: str = SALES_DLQ
    fail_at: int | None = None  # republishing the entry at this position is nacked
    removed: list[dlq.Entry] = field(default_factory=list)
    published: list[dlq.Republish] = field(default_factory=list)

    def remove(self, entry: dlq.Entry) -> None:
        self.removed.append(entry)

    def republish(self, entry: dlq.Entry, message: dlq.Republish) -> None:
        if entry.position == self.fail_at:
            raise PublishFailed("the broker refused the replay (nack)")
        self.published.append(message)
        self.remove(entry)


@dataclass
class FakeHolding:
    held: FakeHeld

    @property
    def entries(self) -> list[dlq.Entry]:
        return self.held.entries

    @property
    def where(self) -> str:
        return self.held.queue

    @property
    def snapshots(self) -> list[Any]:
        return [SNAPSHOT]

    def of(self, entry: dlq.Entry) -> FakeHeld:
        assert entry.queue == self.held.queue
        return self.held


@pytest.fixture
def queue(monkeypatch: pytest.MonkeyPatch) -> list[FakeHeld]:
    """The queue's contents at each look (browse or hold), in order; the last repeats."""
    looks: list[FakeHeld] = []

    def look(_broker: BrokerConfig, adapter: str | None, invalid: bool) -> FakeHolding:
        assert (adapter, invalid) == ("sales", False)
        return FakeHolding(looks.pop(0) if len(looks) > 1 else looks[0])

    @contextmanager
    def hold(broker: BrokerConfig, adapter: str | None, invalid: bool) -> Iterator[FakeHolding]:
        yield look(broker, adapter, invalid)

    monkeypatch.setattr(dlq_ops, "browse_all", look)
    monkeypatch.setattr(dlq_ops, "hold_all", hold)
    return looks


SALES = dlq_ops.Selection("sales", False)


# -- purge --------------------------------------------------------------------------------


def test_purge_removes_what_was_counted_and_not_what_arrived_since(queue: list[FakeHeld]) -> None:
    a, b = entry(0), entry(1)
    again = dlq.read_entry(SALES_DLQ, 2, a.body, a.headers)  # a second copy of a, arrived late
    late = entry(3)
    queue += [FakeHeld([a, b]), FakeHeld([a, b, again, late])]
    counted = dlq_ops.count(BROKER, SALES)
    assert (counted.total, counted.where) == (2, SALES_DLQ)
    said: list[str] = []
    purged = dlq_ops.purge(BROKER, SALES, counted, lambda e: said.append(e.id))
    assert queue[0].removed == [a, b]
    assert said == [a.id, b.id]
    assert purged.removed == 2
    assert purged.snapshots == [SNAPSHOT]


def test_purge_by_id_counts_only_the_named_entry(queue: list[FakeHeld]) -> None:
    a, b = entry(0), entry(1)
    queue.append(FakeHeld([a, b]))
    named = dlq_ops.Selection("sales", False, ids=[b.id])
    counted = dlq_ops.count(BROKER, named)
    assert counted.copies == {b.id: 1}
    dlq_ops.purge(BROKER, named, counted, lambda e: None)
    assert queue[0].removed == [b]


# -- replay -------------------------------------------------------------------------------


def test_replay_plans_before_running_and_reports_each_entry(queue: list[FakeHeld]) -> None:
    entries = [entry(0), entry(1, GARBAGE), entry(2)]
    queue.append(FakeHeld(entries))
    said: list[tuple[str, str]] = []
    with dlq_ops.replay(BROKER, SALES) as planned:
        assert [e for e, _ in planned.plan] == [entries[0], entries[2]]
        assert [e for e, _ in planned.skipped] == [entries[1]]
        assert queue[0].published == []  # a dry run stops here: nothing changed
        done = planned.run(lambda e, m: said.append((e.id, m.routing_key)))
    assert done == 2
    assert said == [(entries[0].id, "sales"), (entries[2].id, "sales")]
    assert queue[0].removed == [entries[0], entries[2]]


def test_replay_of_a_named_undecodable_entry_changes_nothing(queue: list[FakeHeld]) -> None:
    entries = [entry(0), entry(1, GARBAGE)]
    queue.append(FakeHeld(entries))
    named = dlq_ops.Selection("sales", False, ids=[e.id for e in entries])
    with pytest.raises(dlq.NotReplayable), dlq_ops.replay(BROKER, named):
        pass
    assert queue[0].removed == [] and queue[0].published == []


def test_a_refused_replay_says_how_many_went_before_it(queue: list[FakeHeld]) -> None:
    entries = [entry(0), entry(1), entry(2)]
    queue.append(FakeHeld(entries, fail_at=1))
    with (
        pytest.raises(PublishFailed, match=rf"\(entry {entries[1].id}; 1 replayed before it\)"),
        dlq_ops.replay(BROKER, SALES) as planned,
    ):
        planned.run(lambda e, m: None)
    assert queue[0].removed == [entries[0]]


# -- edit ---------------------------------------------------------------------------------


def _router(monkeypatch: pytest.MonkeyPatch, reply: dict[str, Any]) -> list[dict[str, Any]]:
    asked: list[dict[str, Any]] = []

    def call_router(
        _broker: BrokerConfig, request: control.Request, expected: type[Any], timeout: float
    ) -> Any:
        assert request.routing_key == "op.edit"
        asked.append(request.model_dump())
        return control.parse_reply(reply, expected, request.routing_key)

    monkeypatch.setattr(dlq_ops, "call_router", call_router)
    return asked


def test_edit_removes_every_copy_once_the_router_made_the_version(
    queue: list[FakeHeld], monkeypatch: pytest.MonkeyPatch
) -> None:
    a = entry(0)
    copy = dlq.read_entry(SALES_DLQ, 1, a.body, a.headers)
    queue.append(FakeHeld([a, entry(2), copy]))
    reply = {"ok": True, "event_id": "v2", "clock": {"hub": 1}, "pending": True}
    asked = _router(monkeypatch, reply)
    edited = dlq_ops.edit(BROKER, "sales", False, a.id, {"email": "bob@example.com"})
    assert asked == [dlq.edit_request(a, {"email": "bob@example.com"})]
    assert queue[0].removed == [a, copy]
    assert (edited.entry, edited.version, edited.pending) == (a, "v2", True)


def test_an_edit_the_router_refuses_keeps_the_entry(
    queue: list[FakeHeld], monkeypatch: pytest.MonkeyPatch
) -> None:
    a = entry(0)
    queue.append(FakeHeld([a]))
    _router(monkeypatch, {"ok": False, "error": "unknown field 'emial'"})
    with pytest.raises(CrmsyncError, match=rf"unknown field 'emial'; entry {a.id} stays in"):
        dlq_ops.edit(BROKER, "sales", False, a.id, {"emial": "x"})
    assert queue[0].removed == []
