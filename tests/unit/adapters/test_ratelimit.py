"""The write rate limiter (adapters/ratelimit.py), on a fake clock: no real waiting."""

from __future__ import annotations

import asyncio
import time

import pytest

from adapters.ratelimit import WriteLimiter


class FakeTime:
    """A monotonic clock that moves only when the limiter sleeps."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)  # let other waiters run, as a real sleep would

    def limiter(self, max_rate: float | None = None) -> WriteLimiter:
        return WriteLimiter(max_rate, clock=self.clock, sleep=self.sleep)


@pytest.fixture
def t() -> FakeTime:
    return FakeTime()


async def test_without_a_cap_writes_never_wait(t: FakeTime) -> None:
    limiter = t.limiter()
    assert limiter.rate is None
    await limiter.acquire(1_000_000)
    await limiter.acquire(0)
    assert t.sleeps == []


async def test_a_permanent_cap_lets_a_burst_go_then_paces(t: FakeTime) -> None:
    limiter = t.limiter(10)
    await limiter.acquire(10)  # a full bucket: one second's worth at once
    assert t.sleeps == []
    await limiter.acquire(5)
    assert sum(t.sleeps) == pytest.approx(0.5)


async def test_a_batch_larger_than_the_burst_waits_as_its_single_writes_would(
    t: FakeTime,
) -> None:
    limiter = t.limiter(10)
    await limiter.acquire(10)
    await limiter.acquire(25)
    assert sum(t.sleeps) == pytest.approx(2.5)
    # Never a sleep longer than one burst's worth: a changed rate is seen soon.
    assert max(t.sleeps) == pytest.approx(1.0)


async def test_a_rate_below_one_per_second_still_allows_one_write(t: FakeTime) -> None:
    limiter = t.limiter(0.5)
    await limiter.acquire(1)
    assert t.sleeps == []
    await limiter.acquire(1)
    assert sum(t.sleeps) == pytest.approx(2.0)


async def test_an_idle_spell_buys_at_most_one_burst(t: FakeTime) -> None:
    limiter = t.limiter(10)
    await limiter.acquire(10)
    t.now += 3600
    await limiter.acquire(10)
    assert t.sleeps == []
    await limiter.acquire(1)
    assert sum(t.sleeps) == pytest.approx(0.1)


async def test_over_a_long_run_writes_never_exceed_burst_plus_rate_times_time(
    t: FakeTime,
) -> None:
    limiter = t.limiter(7)
    start, written = t.now, 0
    for n in [1, 3, 20, 2, 7, 50, 1, 1, 9] * 5:
        await limiter.acquire(n)
        written += n
        assert written <= 7 + 7 * (t.now - start) + 1e-6
    assert written >= 7 * (t.now - start)  # and it did not wait longer than it had to


def test_the_effective_rate_is_the_lowest_active_cap(t: FakeTime) -> None:
    limiter = t.limiter(100)
    limiter.set_rate(10, until=t.now + 5)
    assert limiter.rate == 10
    limiter.set_rate(500, until=t.now + 5)  # a migration may not raise the CRM's own cap
    assert limiter.rate == 100
    limiter.set_rate(None, None)
    assert limiter.rate == 100


def test_a_temporary_cap_lapses_unless_renewed(t: FakeTime) -> None:
    limiter = t.limiter()
    limiter.set_rate(5, until=t.now + 2)
    t.now += 1.5
    limiter.set_rate(5, until=t.now + 2)  # the next migration batch renews it
    t.now += 1.9
    assert limiter.rate == 5
    t.now += 0.2  # the migration was killed: nothing renews it, and it lapses
    assert limiter.rate is None
    limiter.set_rate(3, until=None)  # no end: until replaced
    t.now += 10**6
    assert limiter.rate == 3


async def test_a_waiter_is_released_when_the_temporary_cap_lapses(t: FakeTime) -> None:
    limiter = t.limiter()
    limiter.set_rate(0.5, until=t.now + 3)
    await limiter.acquire(1)
    await limiter.acquire(100)  # would take 200 s at 0.5/s; the cap ends after 3 s
    assert t.sleeps == pytest.approx([2.0, 1.0])  # woken at the lapse, not a second later


async def test_after_the_lapse_the_permanent_cap_paces_again(t: FakeTime) -> None:
    limiter = t.limiter(10)
    limiter.set_rate(1, until=t.now + 2)
    await limiter.acquire(1)
    await limiter.acquire(10)
    # 2 s at 1/s (2 tokens), then 10/s for the other 8 (0.8 s).
    assert sum(t.sleeps) == pytest.approx(2.8)


async def test_a_lower_temporary_cap_trims_the_tokens_saved_at_the_higher_rate(
    t: FakeTime,
) -> None:
    limiter = t.limiter(100)  # a full bucket of 100
    limiter.set_rate(2, until=t.now + 60)
    await limiter.acquire(2)
    assert t.sleeps == []
    await limiter.acquire(1)
    assert sum(t.sleeps) == pytest.approx(0.5)


async def test_waiters_are_served_in_arrival_order(t: FakeTime) -> None:
    limiter = t.limiter(10)
    await limiter.acquire(10)
    done: list[str] = []

    async def write(name: str, n: int) -> None:
        await limiter.acquire(n)
        done.append(name)

    big = asyncio.create_task(write("batch", 30))
    await asyncio.sleep(0)
    small = asyncio.create_task(write("single", 1))
    await asyncio.gather(big, small)
    assert done == ["batch", "single"]
    assert sum(t.sleeps) == pytest.approx(3.1)


@pytest.mark.parametrize("rate", [0, -1, float("inf"), float("nan")])
def test_a_rate_must_be_a_positive_finite_number(t: FakeTime, rate: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        t.limiter(rate)
    with pytest.raises(ValueError, match="positive"):
        t.limiter().set_rate(rate, until=None)


async def test_a_negative_count_is_refused(t: FakeTime) -> None:
    with pytest.raises(ValueError, match="negative"):
        await t.limiter(1).acquire(-1)


async def test_the_real_clock_and_sleep_pace_too() -> None:
    limiter = WriteLimiter(50)
    started = time.monotonic()
    await limiter.acquire(50)  # the burst
    await limiter.acquire(5)  # 0.1 s at 50/s
    elapsed = time.monotonic() - started
    assert 0.09 <= elapsed < 0.2 + 0.5  # generous upper bound for a busy machine


async def test_the_limit_and_the_time_waited_are_metrics(t: FakeTime) -> None:
    import prometheus_client as prom

    def sample(name: str) -> float | None:
        return prom.REGISTRY.get_sample_value(name, {"adapter": "metered"})

    limiter = WriteLimiter(10, clock=t.clock, sleep=t.sleep, name="metered")
    assert sample("crmsync_adapter_write_rate_limit") == 10.0
    await limiter.acquire(15)  # 10 at once, 5 more after half a second
    assert sample("crmsync_adapter_write_throttled_seconds_total") == pytest.approx(0.5)
    assert sample("crmsync_adapter_write_tokens_total") == 15.0
    limiter.set_rate(2, None)  # a migration's --rate
    assert sample("crmsync_adapter_write_rate_limit") == 2.0
    limiter.set_rate(None, None)
    assert sample("crmsync_adapter_write_rate_limit") == 10.0
