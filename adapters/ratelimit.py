"""How fast records may be written into one CRM: a token bucket shared by every writer.

A production CRM has an API quota: the live sync and a migration together must not
exceed it. Two caps combine, and the lower one that is active applies:

* the permanent cap from the adapter config (``[sink] max_rate``, records per second);
* a temporary cap (a running migration's ``--rate N/s``), which each migration batch
  renews and which lapses at ``until`` on its own, so a migration killed with ``kill -9``
  does not throttle the CRM for ever.

No active cap: writes go at once. The bucket holds at most ``max(1, rate)`` tokens (one
second's worth, and at least one write), so a quiet spell buys at most a second's burst.
The clock and the sleep are injected, so tests run on a fake clock.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Final

from adapters import metrics

# Tokens are floats: a wait computed from a rate earns its tokens up to rounding.
_EPSILON: Final = 1e-9


class WriteLimiter:
    def __init__(
        self,
        max_rate: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        name: str | None = None,
    ) -> None:
        _check_rate(max_rate)
        self._name = name  # the adapter's, for its metrics (None: not reported)
        self._permanent = max_rate
        self._temporary: float | None = None
        self._until: float | None = None  # when the temporary cap lapses (None: never)
        self._clock = clock
        self._sleep = sleep
        self._stamp = clock()
        self._tokens = self._burst(self.rate_at(self._stamp))
        # Waiters are served one at a time, in arrival order: a large batch waiting for
        # its tokens is not overtaken for ever by a stream of single writes.
        self._lock = asyncio.Lock()
        self._report()

    def _report(self, waited: float = 0.0, admitted: int = 0) -> None:
        if self._name is None:
            return
        rate = self.rate_at(self._clock())
        metrics.WRITE_RATE.labels(self._name).set(rate or 0.0)
        if waited:
            metrics.WRITE_WAIT.labels(self._name).inc(waited)
        if admitted:
            metrics.WRITES.labels(self._name).inc(admitted)

    def set_rate(self, rate: float | None, until: float | None) -> None:
        """A temporary cap of ``rate`` records per second until ``until`` (monotonic
        seconds, the clock's; None: until replaced). ``rate`` None lifts it."""
        _check_rate(rate)
        self._refill(self._clock())
        self._temporary = rate
        self._until = until if rate is not None else None
        self._tokens = min(self._tokens, self._burst(self.rate_at(self._stamp)))
        self._report()

    def rate_at(self, now: float) -> float | None:
        """The effective cap at ``now`` (records per second; None: unlimited)."""
        caps = [self._permanent]
        if self._temporary is not None and (self._until is None or now < self._until):
            caps.append(self._temporary)
        active = [cap for cap in caps if cap is not None]
        return min(active) if active else None

    @property
    def rate(self) -> float | None:
        """The effective cap now."""
        return self.rate_at(self._clock())

    async def acquire(self, n: int) -> None:
        """Wait until ``n`` writes may go. A batch larger than the burst waits for its
        tokens piece by piece, as ``n`` single writes would, then goes at once."""
        if n < 0:
            raise ValueError("cannot acquire a negative number of writes")
        need = float(n)
        started = self._clock()
        async with self._lock:
            try:
                await self._take(need)
            finally:
                self._report(self._clock() - started, n)

    async def _take(self, need: float) -> None:
        while need > _EPSILON:
            now = self._clock()
            self._refill(now)
            rate = self.rate_at(now)
            if rate is None:
                return
            take = min(need, self._tokens)
            self._tokens -= take
            need -= take
            if need <= _EPSILON:
                return
            # Sleep until the next piece is there, but not past the temporary cap's
            # end (the rate changes then); a set_rate meanwhile is seen on waking.
            wait = min(need, self._burst(rate)) / rate
            if self._temporary is not None and self._until is not None and self._until > now:
                wait = min(wait, self._until - now)
            await self._sleep(wait)

    def _refill(self, now: float) -> None:
        """Add the tokens earned since the last stamp, at the rate in force meanwhile
        (the temporary cap's until it lapsed, then the one after)."""
        start = self._stamp
        if now <= start:
            return
        pieces = [(start, now)]
        if self._until is not None and start < self._until < now:
            pieces = [(start, self._until), (self._until, now)]
        for begin, end in pieces:
            rate = self.rate_at(begin)
            if rate is None:
                self._tokens = math.inf  # unlimited: capped below once a cap applies
            else:
                self._tokens = min(self._burst(rate), self._tokens + (end - begin) * rate)
        self._stamp = now

    @staticmethod
    def _burst(rate: float | None) -> float:
        return math.inf if rate is None else max(1.0, rate)


def _check_rate(rate: float | None) -> None:
    if rate is not None and not (rate > 0 and math.isfinite(rate)):
        raise ValueError("a write rate must be a positive number of records per second")
