"""Push capture's listener: a LISTEN on the adapter's channel (:mod:`adapters.push_trigger`)
that wakes the capture loop when the CRM's tables change.

A notification is only a hint to look now. Capture reads what changed from the tables as
on every poll, so a notification lost (listener down, connection cut, a change made
while the adapter was stopped) costs latency, never a change: the loop still polls every
``poll_interval``, and every (re)connect wakes it once, for what happened while nobody
listened.

The listener has its own connection (psycopg 3, asyncio, autocommit: a LISTEN inside an
open transaction would hear nothing until it ended), apart from the adapter's worker
thread and its pool. It checks the connection every ``check_every`` seconds with a
``SELECT 1`` so that a silently dead network path is noticed, and reconnects with
exponential back-off.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import sqlalchemy as sa

from adapters import metrics
from router.errors import ConfigError
from router.logs import kv

LIVENESS_TIMEOUT = 10.0  # seconds a SELECT 1 may take before the connection counts as dead


class Wakeup:
    """Many notifications, one wake: a flag the listener sets and the capture loop
    takes. A notification arriving during a capture pass leaves the flag set, so the
    next wait returns at once and the change is not left for the next poll."""

    def __init__(self) -> None:
        self._flag = asyncio.Event()
        self.wakes = 0  # how many waits a notification (not the timeout) ended

    def set(self) -> None:
        self._flag.set()

    def is_set(self) -> bool:
        return self._flag.is_set()

    async def wait(self, timeout: float) -> bool:
        """Until woken or ``timeout`` seconds passed; whether it was woken. Either way
        the flag is taken: what woke it is covered by the pass that follows."""
        try:
            await asyncio.wait_for(self._flag.wait(), timeout)
            woken = True
        except TimeoutError:
            woken = False
        self._flag.clear()
        if woken:
            self.wakes += 1
        return woken


def connect_args(url: str) -> dict[str, Any]:
    """libpq connection parameters of a SQLAlchemy PostgreSQL URL, whichever driver it
    names (host, port, user, password, dbname, and query options such as search_path)."""
    # The psycopg dialect's own reading of the URL: no second parser to drift from it.
    engine = sa.create_engine(sa.engine.make_url(url).set(drivername="postgresql+psycopg"))
    _, kwargs = engine.dialect.create_connect_args(engine.url)
    engine.dispose()
    kwargs.pop("context", None)  # SQLAlchemy's type adapters: not for a bare connection
    return dict(kwargs)


class PushListener:
    """LISTEN on ``channel`` forever (until cancelled), setting ``wakeup`` on every
    notification and once after every (re)connect."""

    def __init__(
        self,
        url: str,
        channel: str,
        wakeup: Wakeup,
        adapter: str,
        *,
        backoff: tuple[float, float] = (0.1, 30.0),
        check_every: float = 30.0,
    ) -> None:
        try:
            import psycopg  # noqa: F401  (optional: the postgres extra)
        except ImportError:
            raise ConfigError(
                "capture.push needs psycopg 3: pip install 'crmsync[postgres]'"
            ) from None
        self._params = connect_args(url)
        # Operators find the session in pg_stat_activity by it.
        self._params.setdefault("application_name", f"crmsync-push-{adapter}"[:63])
        # A black-holed host would hold a connect for the kernel's TCP timeout (minutes).
        self._params.setdefault("connect_timeout", 10)
        self.channel = channel
        self.wakeup = wakeup
        self.adapter = adapter
        self._backoff = backoff
        self._check_every = check_every
        self.log = logging.getLogger(f"crmsync.adapter.{adapter}")
        self.backend_pid: int | None = None  # the listening session's, while connected
        self.connects = 0
        self.notifications = 0
        self._listening = asyncio.Event()

    @property
    def active(self) -> bool:
        """Whether changes wake capture now (else it is polling only)."""
        return self._listening.is_set()

    async def listening(self) -> None:
        """Until the LISTEN is in place."""
        await self._listening.wait()

    async def run(self) -> None:
        first, longest = self._backoff
        delay, seen, warned = first, 0, False
        while True:
            try:
                await self._listen()
            except Exception as e:  # any failure: poll, and try again after a while
                if self.connects != seen:  # it was listening: a new outage
                    seen, delay, warned = self.connects, first, False
                if not warned:
                    self.log.warning(
                        "push capture fell back to polling (every poll_interval) until "
                        "its connection is back",
                        extra=kv(adapter=self.adapter, error=type(e).__name__),
                    )
                    warned = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, longest)

    def _down(self) -> None:
        self._listening.clear()
        self.backend_pid = None
        metrics.PUSH_ACTIVE.labels(self.adapter).set(0)

    async def _listen(self) -> None:
        import psycopg
        from psycopg import sql

        conn = await psycopg.AsyncConnection.connect(**self._params, autocommit=True)
        try:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            self.connects += 1
            self.backend_pid = conn.info.backend_pid
            self._listening.set()
            metrics.PUSH_ACTIVE.labels(self.adapter).set(1)
            # Changes made while nobody listened (the first start included) have sent
            # their notifications to no one: one pass now finds them.
            self.wakeup.set()
            self.log.info(
                "push capture active" if self.connects == 1 else "push capture active again",
                extra=kv(adapter=self.adapter, channel=self.channel, pid=self.backend_pid),
            )
            while True:
                async for _ in conn.notifies(timeout=self._check_every):
                    self.notifications += 1
                    self.wakeup.set()
                # Every check_every seconds: is the connection still there? (psycopg
                # >= 3.2.4 keeps a notification arriving meanwhile for notifies().)
                # Its own timeout, not check_every: a busy server (or a short check_every)
                # must not cancel a healthy check mid-query, which psycopg can hang on.
                await asyncio.wait_for(conn.execute("SELECT 1"), LIVENESS_TIMEOUT)
        finally:
            self._down()
            await conn.close()
