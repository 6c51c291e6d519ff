"""HubSpot capture's keyset, pure: no query is paged (the 10,000 cap never applies), and
records sharing a millisecond are neither missed nor repeated, even when search returns
ties in no particular order."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from adapters.hubspot import search
from adapters.hubspot.client import Answer
from tests.fakes import hubspot_ops as ops
from tests.fakes.hubspot_store import Store


class Searcher:
    """search.Poster over the fake's store, shuffling records that share a stamp (HubSpot
    promises one sort only) and recording every body sent."""

    def __init__(self, store: Store, seed: int = 7) -> None:
        self.store = store
        self.bodies: list[dict[str, Any]] = []
        self.rng = random.Random(seed)

    def post(self, path: str, body: Any, *, conflict_ok: bool = False) -> Answer:
        self.bodies.append(body)
        hits: list[dict[str, Any]] = []
        while True:  # every hit, then HubSpot's freedom: ties in any order, then the cut
            status, out = ops.search(self.store, {**body, "limit": 200, "after": len(hits)})
            assert out is not None
            hits += out["results"]
            if "paging" not in out:
                break
        if body["sorts"][0]["propertyName"] == search.LMD:
            hits.sort(key=lambda r: (search.key_of(r)[0], self.rng.random()))
        return Answer(status, {"total": len(hits), "results": hits[: body["limit"]]})


def _store(stamps: list[int]) -> Store:
    store = Store(clock=lambda: 2_000_000_000.0)
    for ms in stamps:
        c = store.create({"email": f"c{store.next_id}@example.test"}, at_ms=ms)
        store.index[c.id] = [(0.0, c.copy())]
    return store


def _drain(poster: Searcher, limit: int, since: datetime | None = None) -> list[search.Anchor]:
    """Page as SyncEngine.capture does: keyset of the last row until a short page."""
    seen: list[search.Anchor] = []
    after = None
    while True:
        page = search.read_changes(poster, "/search", ["email"], since, after, limit)
        seen += [search.key_of(r) for r in page]
        if len(page) < limit:
            return seen
        after = seen[-1]


def test_same_millisecond_clusters_larger_than_a_page_are_read_exactly() -> None:
    base = 1_700_000_000_000
    stamps = [base] * 450 + [base + 1] * 3 + [base + 2] * 201 + [base + 5 + i for i in range(300)]
    random.Random(1).shuffle(stamps)  # ids no longer follow stamps
    poster = Searcher(_store(stamps))
    seen = _drain(poster, limit=500)
    assert len(seen) == len(stamps) == len(set(seen))
    assert seen == sorted(seen)
    assert all("after" not in b for b in poster.bodies)  # never paged: no 10k cap
    assert all(b["limit"] <= search.PAGE_MAX for b in poster.bodies)


def test_since_filters_and_limit_truncates_on_a_keyset_boundary() -> None:
    base = 1_700_000_000_000
    poster = Searcher(_store([base + i // 3 for i in range(900)]))
    since = search.from_ms(base + 100)
    seen = _drain(poster, limit=137, since=since)
    assert seen == sorted(seen) and len(seen) == len(set(seen))
    assert [ms for ms, _ in seen] == sorted(base + i // 3 for i in range(900) if i // 3 >= 100)


def test_bodies_and_stamps() -> None:
    body = search.keyset_body(None, (5, 1001), ["email"], 500)
    assert body["limit"] == 200
    assert body["filterGroups"] == [
        {
            "filters": [
                {"propertyName": "lastmodifieddate", "operator": "EQ", "value": "5"},
                {"propertyName": "hs_object_id", "operator": "GT", "value": "1001"},
            ]
        },
        {"filters": [{"propertyName": "lastmodifieddate", "operator": "GT", "value": "5"}]},
    ]
    stamp = search.parse_stamp("2026-12-03T06:27:03.123Z")
    assert stamp == datetime(2026, 12, 3, 6, 27, 3, 123000, tzinfo=UTC)
    assert search.from_ms(search.to_ms(stamp)) == stamp
    assert search.to_ms(stamp.replace(tzinfo=None)) == search.to_ms(stamp)


def test_complete_prefix_keeps_whole_milliseconds_only() -> None:
    def r(i: int, ms: int) -> dict[str, Any]:
        return {"id": str(i), "properties": {"lastmodifieddate": search.from_ms(ms).isoformat()}}

    page, stuck = search.complete_prefix([r(3, 2), r(1, 1), r(2, 2)], full=True)
    assert [p["id"] for p in page] == ["1"] and stuck is None
    page, stuck = search.complete_prefix([r(3, 2), r(2, 2)], full=True)
    assert page == [] and stuck == 2
    page, stuck = search.complete_prefix([r(3, 2), r(2, 2)], full=False)
    assert [p["id"] for p in page] == ["2", "3"] and stuck is None
