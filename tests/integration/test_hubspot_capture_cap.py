"""Acceptance (issue 12, item 6): 25,000 HubSpot contacts captured through SyncEngine
across search's 10,000-results-per-query cap, without a miss or a duplicate.

12,000 of them share one millisecond (one bulk import's stamp), more than the cap on
its own; the other 13,000 are a millisecond apart. The fake answers 400 to any query
paged past 10,000, so a capture that paged one query that far fails here. Its per-10 s
limit is set to 100,000 so the (then unthrottled) run measures capture itself: the
fake's search scans every contact per request and the SDK writes one link per new
record, which is where the time goes.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.hubspot_rig import drain, rig

pytestmark = pytest.mark.integration

BULK, SPREAD = 12_000, 13_000


def test_25000_contacts_across_the_search_cap(tmp_path: Path) -> None:
    with rig(tmp_path, page_size=2000, fake_args={"per_10s": 100_000}) as (fake, _, engine):
        now_ms = int(time.time() * 1000)
        ids = fake.seed(BULK, start_ms=now_ms - 600_000, step_ms=0)
        ids += fake.seed(SPREAD, start_ms=now_ms - 300_000, step_ms=1)
        started = time.monotonic()
        result = engine.capture({})
        elapsed = time.monotonic() - started
        events = drain(engine)
        sids = [e.source_record_id for e in events]
        assert len(sids) == len(set(sids)) == BULK + SPREAD  # no duplicate, no miss
        assert set(sids) == set(ids)
        searches = fake.requests["POST /crm/v3/objects/contacts/search"]
        # ~199 new records per request (200 with a full page of one millisecond).
        assert searches <= (BULK + SPREAD) // 199 + 30, searches
        # The next poll re-reads only its overlap and finds nothing new; an edit is found.
        fake.edit(ids[BULK + 5], firstname="Edited")
        engine.capture(result.positions)
        [edited] = drain(engine)
        assert edited.source_record_id == ids[BULK + 5]
        print(f"captured {len(sids)} contacts in {elapsed:.1f}s with {searches} searches")
