"""One capture pass of the adapter, page by page, and the health it reports.

The adapter has one worker thread for its database: capture and the sink's writes
share it. A pass therefore submits one page at a time, so a sink write queued meanwhile
runs between two pages instead of waiting behind a whole table (an initial capture of
100k rows once held the sink for a minute). After each page the outbox is published and
only then the entity's cursor saved: a crash mid-way resumes from the last saved page,
and the cursor never passes a change the broker has not confirmed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from adapters import cursor
from adapters.engine import SyncEngine
from router.control import CaptureHealth

# Run ``fn(*args)`` on the adapter's worker thread.
OnWorker = Callable[..., Awaitable[Any]]
PublishOwed = Callable[[], Awaitable[None]]
SaveCursor = Callable[[str, Any], Awaitable[None]]
# capture.push's listener: "active", "polling" (it is down), None (push is off).
PushState = Literal["active", "polling"] | None


@dataclass
class PassResult:
    pages: int = 0
    rows: int = 0
    changes: int = 0
    invalid: int = 0


class CapturePass:
    """Capture every mapped entity once, one page per trip to the worker thread."""

    def __init__(
        self, engine: SyncEngine, on_worker: OnWorker, publish: PublishOwed, save: SaveCursor
    ) -> None:
        self.engine = engine
        self._on_worker = on_worker
        self._publish = publish
        self._save = save

    async def run(self, cursors: dict[str, Any]) -> PassResult:
        """Advance ``cursors`` (entity -> position, updated in place, saved per page)."""
        result = PassResult()
        engine = self.engine
        for entity in engine.mapped:
            bound = await self._on_worker(engine.limit, entity)
            start = cursor.since(cursors.get(entity), engine.overlap)
            after: tuple[Any, str] | None = None
            while True:
                page = await self._on_worker(engine.capture_page, entity, start, after)
                result.pages += 1
                result.rows += page.rows
                result.changes += page.changes
                result.invalid += page.invalid
                bound = cursor.hold(bound, page.held)
                # Everything owed, this page's and any earlier failure's, before the
                # cursor moves past it.
                await self._publish()
                if page.after is not None:
                    after = page.after
                moved = cursor.advance(cursors.get(entity), page.newest, bound)
                if moved != cursors.get(entity):
                    cursors[entity] = moved
                    await self._save(entity, moved)
                if page.rows < engine.page_size and not page.more:
                    break
        return result


@dataclass
class HealthTracker:
    """Capture's health as the heartbeat carries it: consecutive failed passes, the last
    good one, the last error's type (never its text: it may quote values)."""

    failing: int = 0
    last_ok: float | None = None
    error: str | None = None

    def ok(self) -> None:
        self.failing, self.error, self.last_ok = 0, None, time.time()

    def failed(self, err: BaseException) -> None:
        self.failing += 1
        self.error = type(err).__name__

    def report(
        self,
        bad_rows: int,
        push: PushState = None,
        outbox: int = 0,
        retry_tiers: list[str] | None = None,
    ) -> CaptureHealth:
        return CaptureHealth(
            failing=self.failing,
            last_ok=self.last_ok,
            error=self.error,
            bad_rows=bad_rows,
            push=push,
            outbox=outbox,
            retry_tiers=retry_tiers or [],
        )
