"""The capture cursor's rules (adapters/cursor.py), pure: issue 10 item 3."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from adapters.cursor import Horizon, advance, earlier, limit, since

T0 = datetime(2026, 1, 1, 12, 0, 0)


def test_reads_start_one_overlap_behind_the_cursor() -> None:
    assert since(T0, 2.0) == T0 - timedelta(seconds=2)
    assert since(100.0, 2.0) == 98.0
    assert since(None, 2.0) is None
    # text has no arithmetic: no window to keep, so read everything
    assert since("2026-01-01 12:00:00", 2.0) is None


def test_reads_never_start_after_the_database_clock_less_the_overlap() -> None:
    assert limit(Horizon(T0), 2.0) == T0
    assert since(limit(Horizon(T0), 2.0), 2.0) == T0 - timedelta(seconds=2)
    assert limit(Horizon(None), 2.0) is None


def test_reads_never_start_after_the_oldest_open_transaction() -> None:
    long_ago = T0 - timedelta(seconds=30)
    assert since(limit(Horizon(T0, long_ago), 2.0), 2.0) == long_ago
    # a transaction younger than the overlap does not hold it back further
    assert limit(Horizon(T0, T0 - timedelta(seconds=1)), 2.0) == T0
    aware = T0.replace(tzinfo=UTC)
    nine_ago = aware - timedelta(seconds=9)
    assert since(limit(Horizon(aware, nine_ago), 2.0), 2.0) == nine_ago


def test_a_future_stamp_does_not_take_the_cursor_with_it() -> None:
    bound = T0
    future = T0 + timedelta(seconds=30)
    assert advance(None, future, bound) == bound
    assert advance(bound - timedelta(seconds=5), future, bound) == bound


def test_an_old_cursor_beyond_the_limit_comes_back_to_it() -> None:
    """A cursor a previous version saved while following a future stamp."""
    bound = T0
    frozen = T0 + timedelta(seconds=30)
    assert advance(frozen, bound - timedelta(seconds=1), bound) == bound - timedelta(seconds=1)
    assert advance(frozen, None, bound) == bound


def test_the_cursor_never_moves_backwards_within_the_limit() -> None:
    bound = T0
    old = T0 - timedelta(seconds=1)
    assert advance(old, T0 - timedelta(seconds=3), bound) == old
    assert advance(old, None, bound) == old
    assert advance(old, T0 - timedelta(milliseconds=500), bound) == T0 - timedelta(milliseconds=500)


def test_numeric_and_text_positions() -> None:
    assert advance(None, 150.0, limit(Horizon(100.0), 2.0)) == 100.0
    assert earlier(10, 2.0) == 8
    # text: no cursor is kept, each poll reads the whole table (docs/operations.md)
    assert advance("a", "b", limit(Horizon(None), 2.0)) is None


def test_a_cursor_of_another_type_starts_afresh() -> None:
    assert advance(12.5, T0 - timedelta(seconds=9), T0) == T0 - timedelta(seconds=9)
