"""Clock validation against what the router issued (router/watermarks.py)."""

from __future__ import annotations

from router.events import INT_MAX
from router.watermarks import (
    FROM_THE_FUTURE,
    UNKNOWN_ACTOR,
    Watermarks,
    highs_of,
    issued_actors,
)

KNOWN = [*issued_actors("legacy", 2), *issued_actors("sales", 1), "hub"]


def marks(**highs: int) -> Watermarks:
    return Watermarks(highs, KNOWN)


def test_the_issues_clock_is_from_the_future() -> None:
    batch = marks(legacy=1, hub=3).batch()
    refused = batch.refusal({"legacy": 1, "hub": INT_MAX}, "legacy")
    assert refused is not None
    reason, detail = refused
    assert reason == FROM_THE_FUTURE
    assert "hub" in detail and str(INT_MAX) in detail and "3" in detail


def test_the_events_own_actor_may_go_ahead() -> None:
    # A new edit is exactly that: its own counter above anything seen.
    assert marks(legacy=4).batch().refusal({"legacy": 5}, "legacy") is None
    assert marks().batch().refusal({"sales": 1}, "sales") is None


def test_foreign_counters_up_to_the_mark_pass_one_above_does_not() -> None:
    batch = marks(legacy=7, sales=2).batch()
    assert batch.refusal({"legacy": 7, "sales": 3}, "sales") is None
    refused = batch.refusal({"legacy": 8, "sales": 3}, "sales")
    assert refused is not None and refused[0] == FROM_THE_FUTURE


def test_a_known_actor_never_seen_has_mark_zero() -> None:
    refused = marks().batch().refusal({"legacy": 1, "sales": 1}, "sales")
    assert refused is not None and refused[0] == FROM_THE_FUTURE


def test_an_actor_never_issued_is_unknown_own_or_foreign() -> None:
    batch = marks(legacy=3).batch()
    for clock, own in (({"ghost": 1, "legacy": 1}, "legacy"), ({"legacy@3": 1}, "legacy@3")):
        refused = batch.refusal(clock, own)
        assert refused is not None
        assert refused[0] == UNKNOWN_ACTOR
        assert "never issued" in refused[1]


def test_earlier_epochs_and_removed_adapters_stay_known() -> None:
    # legacy@2 is registered, so legacy (epoch 1) is known; "mktg" was removed but its
    # counters are in the marks (old records carry them).
    batch = Watermarks({"mktg": 4, "legacy": 9}, KNOWN).batch()
    assert batch.refusal({"legacy@2": 1, "legacy": 9, "mktg": 4}, "legacy@2") is None


def test_what_a_batch_accepts_counts_for_the_rest_of_it_and_only_after_commit() -> None:
    committed = marks(legacy=1)
    batch = committed.batch()
    batch.observe({"legacy": 2})
    # sales applied legacy:2 earlier in the same batch's fan-out... (same batch, order kept)
    assert batch.refusal({"legacy": 2, "sales": 1}, "sales") is None
    assert committed.highs == {"legacy": 1}, "a batch not committed raises no mark"
    assert batch.raised == {"legacy": 2}
    committed.commit(batch)
    assert committed.highs == {"legacy": 2}
    again = committed.batch()
    again.observe({"legacy": 2, "sales": 1})
    assert again.raised == {"sales": 1}, "only what went up is written"


def test_marks_never_go_down() -> None:
    committed = marks(legacy=5)
    committed.merge_stored({"legacy": 3, "sales": 2})
    assert committed.highs == {"legacy": 5, "sales": 2}


def test_marks_of_an_existing_state_are_the_entrywise_maximum() -> None:
    assert highs_of([{"a": 1, "b": 5}, {"a": 3}, {}]) == {"a": 3, "b": 5}
    assert issued_actors("legacy", 3) == ["legacy", "legacy@2", "legacy@3"]
