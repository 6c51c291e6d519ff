"""The HubSpot request budget, on an injected clock: the rolling window, the daily cap,
and the server's word (Remaining headers, Retry-After) lowering both."""

from __future__ import annotations

import pytest

from adapters.hubspot.limiter import DAY_S, Budget, DailyCapReached, RequestLimiter


def test_rolling_window_admits_per_window_then_waits_for_the_oldest() -> None:
    b = Budget(per_window=3, daily=100)
    for t in (0.0, 1.0, 2.0):
        assert b.wait(t) == 0
        b.take(t)
    assert b.wait(2.5) == pytest.approx(7.5)  # the request at t=0 leaves the window at 10
    assert b.wait(10.0) == 0
    b.take(10.0)
    assert b.wait(10.5) == pytest.approx(0.5)  # now the one at t=1 is the oldest


def test_daily_cap_refuses_until_the_day_turns() -> None:
    b = Budget(per_window=100, daily=2)
    b.take(5.0)
    b.take(6.0)
    with pytest.raises(DailyCapReached, match=r"api\.daily"):
        b.wait(7.0)
    assert b.wait(DAY_S + 1) == 0


def test_server_remaining_zero_blocks_for_its_interval() -> None:
    b = Budget(per_window=100, daily=1000)
    b.observe(
        50.0,
        {
            "x-hubspot-ratelimit-remaining": "0",
            "x-hubspot-ratelimit-interval-milliseconds": "10000",
        },
    )
    assert b.wait(51.0) == pytest.approx(9.0)
    assert b.wait(60.0) == 0


def test_server_daily_remaining_counts_down_with_our_requests() -> None:
    b = Budget(per_window=100, daily=1000)
    b.observe(1.0, {"x-hubspot-ratelimit-daily-remaining": "1"})
    assert b.wait(1.0) == 0
    b.take(1.0)
    with pytest.raises(DailyCapReached):
        b.wait(2.0)


def test_back_off_and_unparsable_headers() -> None:
    b = Budget(per_window=100, daily=1000)
    b.observe(0.0, {"x-hubspot-ratelimit-remaining": "lots"})  # ignored, not a crash
    assert b.wait(0.0) == 0
    b.back_off(0.0, 3.0)
    assert b.wait(1.0) == pytest.approx(2.0)


def test_limiter_sleeps_instead_of_exceeding_the_window() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RequestLimiter(2, 1000, clock=lambda: now[0], sleep=sleep)
    sent = []
    for _ in range(5):
        limiter.acquire()
        sent.append(now[0])
    # Never more than 2 in any 10 s window.
    assert all(later - earlier >= 10 for earlier, later in zip(sent, sent[2:], strict=False))
    assert limiter.throttled_s == pytest.approx(sum(slept)) and sum(slept) >= 20
