"""The conformance checks: what every adapter must do, driven through the SDK's engine.

Each check makes its own records (a CRM user's through the driver, or the hub's as
deliveries), so the checks run in any order on one adapter. A check returns what it
measured, in words, or raises :class:`CheckFailed` saying what went wrong.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable
from typing import Final

from adapters.kit.subject import Subject
from adapters.ratelimit import WriteLimiter
from router.errors import PermanentWriteError, TransientWriteError
from router.events import ChangeEvent, Scalar

# Measured rates may exceed the cap by this much (timer resolution, rounding).
RATE_TOLERANCE: Final = 1.05
RATE_WINDOW: Final = 0.5  # seconds of writes the rate check measures
RATE_MAX_WRITES: Final = 300


class CheckFailed(AssertionError):
    """The adapter does not do what the contract says (the message says what)."""


def _require(ok: bool, reason: str) -> None:
    if not ok:
        raise CheckFailed(reason)


def _of(events: list[ChangeEvent], sid: str) -> list[ChangeEvent]:
    return [e for e in events if e.source_record_id == sid]


def _one(events: list[ChangeEvent], sid: str, what: str) -> ChangeEvent:
    mine = _of(events, sid)
    _require(len(mine) == 1, f"{what}: capture reported {len(mine)} events for it, not 1")
    return mine[0]


def _same(s: Subject, got: dict[str, Scalar], sent: dict[str, Scalar], what: str) -> None:
    want = s.readable(sent)
    wrong = sorted(n for n in want if got.get(n) != want[n])
    _require(not wrong, f"{what}: field(s) {', '.join(wrong)} differ from what was stored")


def _captured_insert(s: Subject) -> tuple[str, ChangeEvent]:
    fields = s.sample()
    sid = s.driver.insert(s.entity, fields)
    event = _one(s.capture_for(sid), sid, "a record inserted in the CRM")
    _require(event.op == "upsert", f"an insert was captured as a {event.op}")
    _same(s, event.fields, fields, "the captured insert")
    return sid, event


def capture_insert(s: Subject) -> str:
    _captured_insert(s)
    return "an insert made in the CRM is captured with its fields"


def capture_update(s: Subject) -> str:
    sid, first = _captured_insert(s)
    changed = {k: v for k, v in s.sample().items() if k in first.fields}
    _require(bool(changed), "no mapped field can be both written and read")
    s.driver.update(s.entity, sid, changed)
    event = _one(s.capture_for(sid), sid, "a record updated in the CRM")
    _require(event.record_id == first.record_id, "the update came as another record")
    _require(event.op == "upsert", f"an update was captured as a {event.op}")
    _same(s, event.fields, changed, "the captured update")
    return "an update made in the CRM is captured as the same record"


def capture_delete(s: Subject) -> str:
    sid, first = _captured_insert(s)
    s.driver.delete(s.entity, sid)
    event = _one(s.capture_for(sid), sid, "a record deleted in the CRM")
    _require(event.record_id == first.record_id, "the delete came as another record")
    _require(event.op == "delete", f"a delete was captured as a {event.op}")
    return "a delete made in the CRM is captured as a delete of the record"


def _delivered(s: Subject, counter: int = 1) -> tuple[str, dict[str, Scalar], str]:
    record_id, fields = str(uuid.uuid4()), s.sample()
    result = s.apply(s.delivery(record_id, counter, fields))
    _require(result.action == "applied", f"a new record's delivery was {result.action}")
    link = s.engine_link(record_id)
    _require(link is not None and link.source_record_id is not None, "no link after a write")
    assert link is not None and link.source_record_id is not None
    return record_id, fields, link.source_record_id


def idempotent_writes(s: Subject) -> str:
    before = s.count()
    record_id, fields = str(uuid.uuid4()), s.sample()
    event = s.delivery(record_id, 1, fields)
    first = s.apply(event)
    _require(first.action == "applied", f"the first delivery was {first.action}")
    sid = s.sid_of(record_id)
    row = s.read(sid)
    again = s.apply(event)
    _require(again.action != "applied", "the same event applied twice wrote twice")
    after = s.read(sid)
    _require(
        row is not None and after is not None and after.version == row.version,
        "the second delivery of an event changed the record",
    )
    if before is not None:
        now = s.count()
        _require(now == before + 1, f"one new record, but the count went {before} -> {now}")
    gone = s.delivery(record_id, 2, fields, op="delete")
    _require(s.apply(gone).action == "applied", "a delete delivery was not applied")
    _require(s.apply(gone).action != "applied", "the same delete applied twice wrote twice")
    left = s.read(sid)
    _require(left is None or left.deleted, "a delivered delete left the record live")
    return "an event (upsert, delete) delivered twice is written once"


def honest_read_back(s: Subject) -> str:
    record_id, fields, sid = _delivered(s)
    for counter, what in ((1, "an insert"), (2, "an update")):
        if counter == 2:
            fields = s.sample()
            result = s.apply(s.delivery(record_id, counter, fields))
            _require(result.action == "applied", f"an update delivery was {result.action}")
        link = s.engine_link(record_id)
        row = s.read(sid)
        _require(link is not None and row is not None, f"{what} left no record to read")
        assert link is not None and row is not None
        _require(
            row.version == link.version,
            f"{what}: the version read later differs from the one the write returned",
        )
        stored = s.readable(row.fields)
        _require(
            stored == link.fields,
            f"{what}: what read_record returns differs from what write_record returned",
        )
        _same(s, stored, fields, what)
    return "what a write returns is what a later read returns"


def echo_suppressed(s: Subject) -> str:
    record_id, _, sid = _delivered(s)
    result = s.apply(s.delivery(record_id, 2, s.sample()))
    _require(result.action == "applied", f"an update delivery was {result.action}")
    for _ in range(2):  # and again: a re-read through the overlap window is no change
        echoed = _of(s.capture(), sid)
        _require(not echoed, f"capture reported the SDK's own write ({len(echoed)} events)")
    return "the SDK's own writes are not captured back"


def refused_is_permanent(s: Subject) -> str:
    fields = {**s.sample(), **s.driver.refused(s.entity)}
    record_id = str(uuid.uuid4())
    try:
        result = s.apply(s.delivery(record_id, 1, fields))
    except PermanentWriteError:
        _require(s.engine_link(record_id) is None, "a refused write left a link behind")
        return "a value the CRM refuses is a PermanentWriteError (dead-lettered)"
    except TransientWriteError as e:
        raise CheckFailed(f"a refused value raised TransientWriteError ({e})") from None
    raise CheckFailed(f"a value the CRM refuses was {result.action}, not refused")


def outage_is_transient(s: Subject) -> str:
    event = s.delivery(str(uuid.uuid4()), 1, s.sample())
    with s.driver.outage():
        try:
            result = s.apply(event)
        except TransientWriteError:
            pass
        except PermanentWriteError as e:
            raise CheckFailed(f"an unreachable CRM raised PermanentWriteError ({e})") from None
        else:
            raise CheckFailed(f"a write to an unreachable CRM was {result.action}")
    result = s.apply(event)
    _require(result.action == "applied", f"after the outage the write was {result.action}")
    return "an unreachable CRM is a TransientWriteError (retried), and the retry lands"


def migration_paging(s: Subject) -> str:
    """``read_page`` / ``list_all`` / ``count_rows`` agree (a migration source's calls)."""
    made = {s.driver.insert(s.entity, s.sample()) for _ in range(3)}
    with s.adapter.transaction() as tx:
        try:
            paged: list[str] = []
            after: str | None = None
            while page := s.adapter.read_page(tx, s.entity, after, 2):
                _require(len(page) <= 2, f"read_page returned {len(page)} rows for a limit of 2")
                paged += [row.source_record_id for row in page]
                after = page[-1].source_record_id
        except NotImplementedError:
            return "no read_page: this adapter cannot be a migration source"
        every = list(s.adapter.list_all(tx, s.entity))
        count = s.adapter.count_rows(tx, s.entity)
    _require(len(paged) == len(set(paged)), "read_page returned a record on two pages")
    _require(made <= set(paged), "read_page did not reach every record")
    _require(
        {row.source_record_id for row in every} == set(paged),
        "list_all and read_page list different records",
    )
    live = sum(1 for row in every if not row.deleted)
    _require(count is None or count == live, f"count_rows says {count}, list_all has {live}")
    return f"{len(paged)} records paged 2 at a time, as list_all and count_rows say"


def rate_limit(s: Subject) -> str:
    rate = s.config.write_rate()
    if rate is None:
        return "no [write] rate or [sink] max_rate configured: nothing to hold"
    burst = max(1.0, rate)
    n = int(min(RATE_MAX_WRITES, math.ceil(burst + rate * RATE_WINDOW)))
    limiter = WriteLimiter(rate)

    async def writes() -> float:
        started = time.monotonic()
        for _ in range(n):
            # As the sink does: the budget first, then the write.
            await limiter.acquire(1)
            result = s.apply(s.delivery(str(uuid.uuid4()), 1, s.sample()))
            _require(result.action == "applied", f"a write under the limit was {result.action}")
        return time.monotonic() - started

    elapsed = asyncio.run(writes())
    # The bucket starts full: the first `burst` writes may go at once.
    measured = (n - burst) / elapsed if elapsed > 0 else math.inf
    _require(
        measured <= rate * RATE_TOLERANCE,
        f"{measured:.1f} writes/s measured, above the cap of {rate:g}/s",
    )
    return f"{n} writes in {elapsed:.2f}s: {measured:.1f}/s beyond the burst, cap {rate:g}/s"


CHECKS: Final[dict[str, Callable[[Subject], str]]] = {
    "capture_insert": capture_insert,
    "capture_update": capture_update,
    "capture_delete": capture_delete,
    "idempotent_writes": idempotent_writes,
    "honest_read_back": honest_read_back,
    "echo_suppressed": echo_suppressed,
    "refused_is_permanent": refused_is_permanent,
    "outage_is_transient": outage_is_transient,
    "migration_paging": migration_paging,
    "rate_limit": rate_limit,
}
