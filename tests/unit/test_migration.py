"""Bulk migration's pure parts and the router's handling of a migration batch over a real
SQLite store: the batch envelope, splitting, routing to the target, outcome records,
the two-stream comparison and the report's verdict."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from router import migration_store
from router.authz import Principals
from router.batches import BATCH_HEADER, MIGRATION, BatchMeta, InvalidRow, pack_batch, unpack_batch
from router.compare import Digest, merge, tally
from router.config import RouterConfig
from router.daemon import migration
from router.daemon.context import RouterContext
from router.daemon.pipeline import BatchOutcome, decide_batch, judge
from router.errors import DecodeError
from router.events import decode, encode_dict
from router.messages import Delivery
from router.migrate import EntityReport, Report
from router.registry import Registration
from router.state import RouterStore
from tests.factories import wire_event

META = BatchMeta(migration_id="m1", entity="contact", source="old", target="new")


def new_id() -> str:
    return str(uuid.uuid4())


# -- the envelope ------------------------------------------------------------------------


def test_a_batch_keeps_each_events_own_bytes() -> None:
    events = [b"\x81\xa1a\x01", b"\x81\xa1b\x02"]
    meta, back = unpack_batch(pack_batch(META, events))
    assert back == events and meta == META


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"\xc1", "batch: "),
        (b"\x90", "not a map with a list of events"),
        (pack_batch(META, []).replace(b"contact", b"CONTACT"), "batch.entity"),
    ],
)
def test_a_broken_batch_is_refused_with_the_reason(raw: bytes, says: str) -> None:
    with pytest.raises(DecodeError) as caught:
        unpack_batch(raw)
    assert says in str(caught.value.detail)


def test_split_gives_one_delivery_per_event_and_collects_invalid_rows() -> None:
    meta = META.model_copy(update={"invalid": [InvalidRow(source_record_id="x9", reason="email")]})
    batch = Delivery(
        pack_batch(meta, [b"e1", b"e2"]),
        "old.contact.migrate",
        _Unsettled(),
        headers={BATCH_HEADER: MIGRATION},
    )
    live = Delivery(b"live", "old.contact.upsert", _Unsettled())
    parts = migration.split([live, batch])
    assert [d.body for d in parts.deliveries] == [b"live", b"e1", b"e2"]
    assert parts.deliveries[1].batch == meta and parts.deliveries[0].batch is None
    assert [(i.source_record_id, i.outcome, i.detail) for i in parts.invalid] == [
        ("x9", "invalid", "email")
    ]


# -- the router: a batch decided and routed -----------------------------------------------


class _Unsettled:
    async def ack(self, multiple: bool = False) -> None:
        raise AssertionError("nothing settles here")

    async def nack(self, multiple: bool = False, requeue: bool = True) -> None:
        raise AssertionError("nothing settles here")


class Hub:
    def __init__(self, tmp_path: Path, adapters: Iterable[str] = ("old", "new", "third")) -> None:
        url = f"sqlite:///{tmp_path / 'router.db'}"
        self.ctx = RouterContext(RouterConfig.model_validate({"state": {"url": url}}))
        self.store = RouterStore(url)
        entities = {"contact": ["email", "first_name"]}
        self.ctx.open(
            self.store, {n: Registration(n, 1, entities, "t", 0.0, 0.0) for n in adapters}
        )

    def run(self, deliveries: list[Delivery]) -> BatchOutcome:
        parts = migration.split(deliveries)
        judged = judge(parts.deliveries, self.ctx.registry, Principals())
        with self.store.transaction() as conn:
            migration_store.record(conn, parts.invalid)
            out = decide_batch(self.ctx, judged, conn)
            self.store.commit_batch(
                out.processed, out.states, out.deliveries, [], conn, [], out.identity_writes
            )
            migration.record(conn, out)
        if out.marks is not None:
            self.ctx.marks.commit(out.marks)
        return out

    def live(self, record_id: str, counter: int, **fields: Any) -> Delivery:
        body = encode_dict(
            wire_event("old", record_id, {"old": counter}, fields, source_record_id=record_id[:8])
        )
        return Delivery(body, "old.contact.upsert", _Unsettled())

    def migrating(self, *events: tuple[str, int, dict[str, Any]]) -> Delivery:
        bodies = [
            encode_dict(
                wire_event("old", rid, {"old": c}, f, source_record_id=rid[:8], origin="migration")
            )
            for rid, c, f in events
        ]
        return Delivery(
            pack_batch(META, bodies),
            "old.contact.migrate",
            _Unsettled(),
            headers={BATCH_HEADER: MIGRATION},
        )


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    h = Hub(tmp_path)
    yield h
    h.store.close()


def _batches_to(out: BatchOutcome, target: str) -> list[list[bytes]]:
    return [
        unpack_batch(d.body)[1]
        for d in out.deliveries
        if d.routing_key == target and d.headers.get(BATCH_HEADER)
    ]


def test_a_record_the_hub_already_holds_is_still_sent_to_the_target_as_its_current_version(
    hub: Hub,
) -> None:
    known, fresh = new_id(), new_id()
    hub.run([hub.live(known, 1, email="a@x.io")])  # synced before the target joined
    out = hub.run([hub.migrating((known, 1, {"email": "a@x.io"}), (fresh, 1, {"email": "b@x.io"}))])
    assert out.verdicts["duplicate"] == 1 and out.verdicts["accepted"] == 1
    (batch,) = _batches_to(out, "new")
    assert sorted(decode(b).record_id for b in batch) == sorted([known, fresh])
    # The other subscriber gets the new record as a live delivery, never the batch.
    others = [
        d for d in out.deliveries if d.routing_key == "third" or "third" in d.headers.get("BCC", ())
    ]
    assert [decode(d.body).record_id for d in others] == [fresh]
    assert all(not d.headers.get(BATCH_HEADER) for d in others)
    with hub.store.transaction() as conn:
        assert migration_store.counts(conn, "m1") == {"contact": {"routed": 2}}


def test_outcomes_are_counted_once_per_source_record_across_repeated_pages(hub: Hub) -> None:
    rid = new_id()
    page = hub.migrating((rid, 1, {"email": "a@x.io"}))
    hub.run([page])
    hub.run([hub.migrating((rid, 1, {"email": "a@x.io"}))])  # the page again, after a kill
    with hub.store.transaction() as conn:
        assert migration_store.counts(conn, "m1") == {"contact": {"routed": 1}}


def test_a_migration_event_needs_no_counter_of_its_own_actor(hub: Hub) -> None:
    """A record the source only received carries others' counters: it re-announces."""
    rid = new_id()
    hub.run([hub.live(rid, 1, email="a@x.io")])
    body = encode_dict(
        wire_event(
            "new",
            rid,
            {"old": 1},
            {"email": "a@x.io"},
            actor="new",
            source_record_id="n1",
            origin="migration",
        )
    )
    meta = META.model_copy(update={"source": "new", "target": "third"})
    out = hub.run(
        [
            Delivery(
                pack_batch(meta, [body]),
                "new.contact.migrate",
                _Unsettled(),
                headers={BATCH_HEADER: MIGRATION},
            )
        ]
    )
    assert out.verdicts["duplicate"] == 1 and not out.refused
    assert len(_batches_to(out, "third")) == 1


def test_invalid_rows_of_a_page_are_recorded_with_their_reason(hub: Hub) -> None:
    meta = META.model_copy(
        update={
            "invalid": [InvalidRow(source_record_id="bad1", reason="email: not an email address")]
        }
    )
    hub.run(
        [
            Delivery(
                pack_batch(meta, []),
                "old.contact.migrate",
                _Unsettled(),
                headers={BATCH_HEADER: MIGRATION},
            )
        ]
    )
    with hub.store.transaction() as conn:
        (item,) = migration_store.listed(conn, "m1", ["invalid"], None, 10)
    assert (item.source_record_id, item.detail) == ("bad1", "email: not an email address")


# -- comparison and the report -----------------------------------------------------------


async def _stream(items: list[Digest]) -> AsyncIterator[Digest]:
    for item in items:
        yield item


def _compare(a: list[Digest], b: list[Digest], **kw: Any) -> Any:
    return asyncio.run(tally(merge(_stream(a), _stream(b), **kw)))


def test_the_merge_finds_every_kind_of_drift() -> None:
    a = [
        Digest("1", "a1", "h1"),
        Digest("2", "a2", "h2"),
        Digest("3", "a3", "h3"),
        Digest("5", "a5", None),
    ]
    b = [
        Digest("1", "b1", "h1"),
        Digest("2", "b2", "XX"),
        Digest("4", "b4", "h4"),
        Digest("5", "b5", None),
    ]
    t = _compare(a, b)
    assert (t.equal, t.different, t.missing_in_b, t.missing_in_a) == (2, 1, 1, 1)
    assert t.ids == {"different": ["2"], "missing_in_b": ["3"], "missing_in_a": ["4"]}
    assert t.compared == 5  # record 5: deleted on both sides, equal


def test_only_a_ignores_what_the_target_had_and_skip_sets_unmigratable_apart() -> None:
    a = [Digest("1", "a1", "h1"), Digest("3", "a3", "h3")]
    b = [Digest("2", "b2", "h2")]
    t = _compare(a, b, only_a=True, skip={"3"})
    assert (t.missing_in_b, t.missing_in_a, t.unmigratable) == (1, 0, 1)


def test_the_report_exits_1_for_anything_unmigratable_even_when_verified() -> None:
    report = Report(
        "m1", "old", "new", False, {"contact": EntityReport(source=10, created=9, invalid=1)}
    )
    assert report.verified and not report.clean
    report.entities["contact"].invalid = 0
    assert report.clean and not report.nothing_to_do
    report.entities["contact"] = EntityReport(source=10, unchanged=10)
    assert report.nothing_to_do
    report.entities["contact"].mismatched = 1
    assert not report.verified
