"""The client-side request budget every HubSpot request passes, capture and writes alike.

HubSpot counts an account's requests in a rolling 10-second window and per day, and
answers 429 past either. Keeping under both here is cheaper than being told: a 429 still
costs a round trip and, past the daily cap, nothing helps until the day turns. The
server is the authority, so its ``X-HubSpot-RateLimit-*-Remaining`` headers lower the
budget when other clients of the same account spend it too.

:class:`Budget` is pure (times in, decisions out); :class:`RequestLimiter` is the thread-
safe shell that sleeps.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from adapters.hubspot import usage
from router.errors import TransientWriteError

WINDOW_S = 10.0
DAY_S = 86400.0


class DailyCapReached(TransientWriteError):
    """No request may go out before the day turns; the retry tiers try again later."""


@dataclass
class Budget:
    """Requests sent in the rolling window and today, and what the server last said."""

    per_window: int
    daily: int
    window_s: float = WINDOW_S
    sent: deque[float] = field(default_factory=deque)  # send times within the window
    day: int = -1
    used_today: int = 0
    # The server's word: nothing more before ``blocked_until`` (a 429, Remaining 0).
    blocked_until: float = 0.0
    server_daily_left: int | None = None

    def _roll(self, now: float) -> None:
        while self.sent and self.sent[0] <= now - self.window_s:
            self.sent.popleft()
        today = int(now // DAY_S)
        if today != self.day:
            self.day, self.used_today, self.server_daily_left = today, 0, None

    def wait(self, now: float) -> float:
        """Seconds until one more request may go (0: now). Raises
        :class:`DailyCapReached` when today's budget is spent."""
        self._roll(now)
        if self.used_today >= self.daily or self.server_daily_left == 0:
            raise DailyCapReached(
                f"HubSpot daily request cap reached ({self.used_today} sent today, "
                "api.daily); requests resume when the day turns"
            )
        waits = [self.blocked_until - now]
        if len(self.sent) >= self.per_window:
            waits.append(self.sent[0] + self.window_s - now)
        return max(0.0, *waits)

    def take(self, now: float) -> None:
        """Count one request sent at ``now``."""
        self._roll(now)
        self.sent.append(now)
        self.used_today += 1
        if self.server_daily_left is not None:
            self.server_daily_left = max(0, self.server_daily_left - 1)

    def observe(self, now: float, headers: Mapping[str, str]) -> None:
        """Believe the server's remaining counts (headers of any answer, 429 included)."""
        remaining = _int(headers.get("x-hubspot-ratelimit-remaining"))
        interval = _int(headers.get("x-hubspot-ratelimit-interval-milliseconds"))
        if remaining is not None and remaining <= 0:
            span = interval / 1000 if interval else self.window_s
            self.blocked_until = max(self.blocked_until, now + span)
        daily_left = _int(headers.get("x-hubspot-ratelimit-daily-remaining"))
        if daily_left is not None:
            self._roll(now)
            self.server_daily_left = daily_left

    def back_off(self, now: float, seconds: float) -> None:
        """The server said wait (Retry-After, a 429): no request before then."""
        self.blocked_until = max(self.blocked_until, now + seconds)


def _int(raw: str | None) -> int | None:
    try:
        return None if raw is None else int(raw)
    except ValueError:
        return None


class RequestLimiter:
    """One per adapter: :meth:`acquire` before every request, :meth:`observe` after."""

    def __init__(
        self,
        per_10s: int,
        daily: int,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        adapter: str = "hubspot",
    ) -> None:
        self.budget = Budget(per_10s, daily)
        self._waited = usage.THROTTLED.labels(adapter)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self.throttled_s = 0.0  # time spent waiting for the budget (a metric)

    def acquire(self) -> None:
        """Block until one request may be sent, and count it."""
        while True:
            with self._lock:
                now = self._clock()
                pause = self.budget.wait(now)
                if pause <= 0:
                    self.budget.take(now)
                    return
            self.throttled_s += pause
            self._waited.inc(pause)
            self._sleep(pause)

    def observe(self, headers: Mapping[str, str]) -> None:
        with self._lock:
            self.budget.observe(self._clock(), headers)

    def back_off(self, seconds: float) -> None:
        with self._lock:
            self.budget.back_off(self._clock(), seconds)

    def day_spent(self) -> None:
        """The server said the day's budget is gone (a 429 DAILY)."""
        with self._lock:
            self.budget.observe(self._clock(), {"x-hubspot-ratelimit-daily-remaining": "0"})
