"""When a batch cannot be stored: find the event(s) that fail, refuse only those.

The fast path stays one transaction per batch. Only when that transaction fails with
an error that retrying the whole batch cannot cure (a value a store rejects, a bug, a
compare-and-set still losing after its retries) is the batch split in halves, each
half stored in its own transaction, down to the single events that still fail. Those
go to the invalid queue as ``internal-error``; the rest of the batch proceeds. Before
this, such a batch went back to the queue and came back forever: one event halted
all sync.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from router.daemon.pipeline import BatchOutcome, Inbound, internal_error
from router.logs import kv

log = logging.getLogger("crmsync.router")

# Decide and store these messages in one transaction, deleting these confirmed outbox
# rows with them; what it returns is committed.
Attempt = Callable[[list[Inbound], list[str]], Awaitable[BatchOutcome]]


async def store_isolating(
    judged: list[Inbound],
    confirmed: list[str],
    attempt: Attempt,
    retryable: tuple[type[BaseException], ...],
) -> BatchOutcome:
    """``attempt(judged)``; on a failure not in ``retryable``, bisect (see module doc).
    A ``retryable`` error anywhere propagates: the caller gives the batch back."""
    try:
        return await attempt(judged, confirmed)
    except retryable:
        raise
    except Exception as e:
        failure = e
    # Messages judge() refused and repeats of an event are no part of any transaction.
    candidates = [i for i in judged if i.reason is None and not i.repeat]
    out = BatchOutcome(refused=[i for i in judged if i.reason is not None])
    log.warning(
        "batch could not be stored; storing it in parts to find the event that fails",
        extra=kv(events=len(candidates), error_type=type(failure).__name__),
    )
    owed = confirmed

    async def store(part: Sequence[Inbound], known_failure: BaseException | None) -> None:
        nonlocal owed
        if known_failure is None:
            try:
                done = await attempt(list(part), owed)
            except retryable:
                raise
            except Exception as e:
                known_failure = e
            else:
                owed = []
                out.absorb(done)
                return
        if len(part) == 1:
            out.refused.append(internal_error(part[0].delivery, part[0].event, known_failure))
            return
        middle = len(part) // 2
        await store(part[:middle], None)
        await store(part[middle:], None)

    if candidates:
        await store(candidates, failure)
    return out
