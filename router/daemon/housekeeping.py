"""The router's background chores: heartbeats to the store, the open-conflicts gauge,
and a bounded slice of pruning (:mod:`router.retention`) every few seconds.

Kept off the batch path: a chore that fails is logged and tried again next round; it
never holds a batch back.
"""

from __future__ import annotations

import asyncio
import logging

from router.daemon.context import RouterContext
from router.daemon.stats import OPEN_CONFLICTS
from router.logs import kv
from router.retention import Retention

log = logging.getLogger("crmsync.router")

HOUSEKEEPING_EVERY = 5.0  # seconds
PRUNE_EVERY_ROUNDS = 60  # prune old conflicts every 5 minutes (the rest: every round)


async def housekeeping(ctx: RouterContext, retention: Retention) -> None:
    """Runs until cancelled."""
    rounds = 0
    written: dict[str, float] = {}
    while True:
        await asyncio.sleep(HOUSEKEEPING_EVERY)
        beats = {k: v for k, v in ctx.beats.items() if written.get(k) != v}
        full = rounds % PRUNE_EVERY_ROUNDS == 0
        rounds += 1
        try:
            await ctx.db(_touch, ctx, beats)
            written.update(beats)
            pruned = await retention.round(ctx.db, ctx.store, full)
            if any(pruned.values()):
                log.info("pruned what the router no longer needs", extra=kv(**pruned))
        except Exception:
            log.exception("housekeeping failed")


def _touch(ctx: RouterContext, beats: dict[str, float]) -> None:
    ctx.store.touch_heartbeats(beats)
    OPEN_CONFLICTS.set(ctx.store.open_conflict_count())
