"""Acceptance (issue 12, item 6): HubSpot contacts captured through SyncEngine across
search's 10,000-results-per-query cap, without a miss or a duplicate.

In every run: the fake's cap lowered to 500 and 2,000 contacts, 1,200 of them sharing
one millisecond (one bulk import's stamp), more than the cap on its own: the same
re-anchoring, a tenth of the records. With the soak tests (`pytest -m slow`), on
HubSpot's own 10,000: 11,000 contacts (10,200 in one millisecond) and the issue's
25,000 (12,000 in one millisecond). The fake answers 400 to any query paged past its
cap, so a capture that paged one query that far fails here. Its per-10 s limit
is 100,000 so the (unthrottled) run measures capture itself. Where the time goes (25,000
on this 2-core box: ~24 s of capture): the fake's search scans every contact per request
(~5.5 s), and the SDK writes one link per new record (links.save, an UPDATE then an
INSERT, ~0.75 ms each: ~75 % of the rest).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.hubspot_rig import drain, rig

pytestmark = pytest.mark.integration


def _capture_across_the_cap(tmp_path: Path, bulk: int, spread: int, cap: int = 10_000) -> None:
    limits = {"per_10s": 100_000, "search_cap": cap}
    with rig(tmp_path, page_size=2000, fake_args=limits) as (fake, _, engine):
        now_ms = int(time.time() * 1000)
        ids = fake.seed(bulk, start_ms=now_ms - 600_000, step_ms=0)
        ids += fake.seed(spread, start_ms=now_ms - 300_000, step_ms=1)
        started = time.monotonic()
        result = engine.capture({})
        elapsed = time.monotonic() - started
        events = drain(engine)
        sids = [e.source_record_id for e in events]
        assert len(sids) == len(set(sids)) == bulk + spread  # no duplicate, no miss
        assert set(sids) == set(ids)
        searches = fake.requests["POST /crm/v3/objects/contacts/search"]
        # ~199 new records per request (200 within a millisecond read alone).
        assert searches <= (bulk + spread) // 199 + 30, searches
        # The next poll re-reads only its overlap and finds nothing new; an edit is found.
        fake.edit(ids[bulk + 5], firstname="Edited")
        engine.capture(result.positions)
        [edited] = drain(engine)
        assert edited.source_record_id == ids[bulk + 5]
        print(f"captured {len(sids)} contacts in {elapsed:.1f}s with {searches} searches")


def test_contacts_across_a_search_cap_without_a_miss(tmp_path: Path) -> None:
    _capture_across_the_cap(tmp_path, bulk=1_200, spread=800, cap=500)


@pytest.mark.slow
def test_11000_contacts_across_the_search_cap(tmp_path: Path) -> None:
    _capture_across_the_cap(tmp_path, bulk=10_200, spread=800)


@pytest.mark.slow
def test_25000_contacts_across_the_search_cap(tmp_path: Path) -> None:
    _capture_across_the_cap(tmp_path, bulk=12_000, spread=13_000)
