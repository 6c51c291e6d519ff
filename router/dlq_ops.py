"""Operator procedures on the dead-letter queues: replay, edit & retry, count-then-purge.

Each drives the queues as :mod:`router.broker.dlq` holds them (and, for an edit, the
router over ``crmsync.control``) and decides with the pure rules of :mod:`router.dlq`.
None prints: every entry acted on is reported to a callback as it happens (a reader of a
pipe may follow a long replay entry by entry), and the outcome comes back as a value.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from router import control, dlq
from router.broker.dlq import Holding, Snapshot, browse_all, hold_all
from router.broker.rpc import call_router
from router.config import BrokerConfig
from router.errors import CrmsyncError, PublishFailed
from router.events import Scalar

EDIT_TIMEOUT = 10.0  # seconds to wait for the router to make an edited version


@dataclass(frozen=True)
class Selection:
    """The entries a command acts on: those of the queues named (one adapter's DLQ, the
    router's invalid queue, or by default every registered adapter's DLQ), narrowed to
    ``ids`` and ``error_type`` when given."""

    adapter: str | None = None
    invalid: bool = False
    ids: Sequence[str] = ()
    error_type: str | None = None

    def pick(self, holding: Holding) -> list[dlq.Entry]:
        return dlq.select(holding.entries, holding.where, self.ids, self.error_type)


# -- replay -------------------------------------------------------------------------------


class Replay:
    """Entries held and planned for a replay: nothing has changed until :meth:`run`, so a
    dry run is the same plan, not run."""

    def __init__(self, holding: Holding, selection: Selection) -> None:
        self._holding = holding
        self.plan, self.skipped = dlq.plan_replay(selection.pick(holding), bool(selection.ids))

    @property
    def snapshots(self) -> list[Snapshot]:
        return self._holding.snapshots

    def run(self, replayed: Callable[[dlq.Entry, dlq.Republish], None]) -> int:
        """Republish the plan in order; each entry leaves its queue only once the broker
        confirmed its copy, and is then reported to ``replayed``. Returns how many."""
        done = 0
        for entry, message in self.plan:
            try:
                self._holding.of(entry).republish(entry, message)
            except PublishFailed as e:
                raise PublishFailed(f"{e} (entry {entry.id}; {done} replayed before it)") from e
            done += 1
            replayed(entry, message)
        return done


@contextmanager
def replay(broker: BrokerConfig, selection: Selection) -> Iterator[Replay]:
    """Hold the selected entries and plan their replay for the ``with`` block; whatever
    was not replayed goes back in its place when it ends. Entries named by id that cannot
    be replayed are refused here (:class:`dlq.NotReplayable`), before any is touched."""
    with hold_all(broker, selection.adapter, selection.invalid) as holding:
        yield Replay(holding, selection)


# -- edit & retry -------------------------------------------------------------------------


@dataclass(frozen=True)
class Edited:
    entry: dlq.Entry
    version: str | None  # the event id of the router's new version
    pending: bool  # the router stored it but owes it to the CRMs (broker down)


def edit(
    broker: BrokerConfig,
    adapter: str | None,
    invalid: bool,
    entry_id: str,
    changes: Mapping[str, Scalar],
) -> Edited:
    """Ask the router for a new version of the entry's record with ``changes``; only once
    it made one does the entry (every copy of it) leave its queue."""
    with hold_all(broker, adapter, invalid) as holding:
        copies = dlq.find(holding.entries, entry_id, holding.where)
        entry = copies[0]
        request = control.request(control.EditRecord, **dlq.edit_request(entry, changes))
        try:
            reply = call_router(broker, request, control.VersionMade, timeout=EDIT_TIMEOUT)
        except control.Refused as e:
            raise CrmsyncError(
                f"the router did not make the edit: {e}; entry {entry.id} stays in {entry.queue}"
            ) from None
        for copy in copies:
            holding.of(copy).remove(copy)
    return Edited(entry, reply.event_id, reply.pending)


# -- purge --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Count:
    """What a purge is about to remove: the copies of each entry id, and where."""

    copies: Counter[str]
    where: str

    @property
    def total(self) -> int:
        return sum(self.copies.values())


@dataclass(frozen=True)
class Purged:
    removed: int
    snapshots: list[Snapshot]


def count(broker: BrokerConfig, selection: Selection) -> Count:
    """Count the selected entries with nothing held afterwards: an operator asked to
    confirm may take a while, and the queues keep working meanwhile."""
    seen = browse_all(broker, selection.adapter, selection.invalid)
    return Count(Counter(e.id for e in selection.pick(seen)), seen.where)


def purge(
    broker: BrokerConfig,
    selection: Selection,
    counted: Count,
    removed: Callable[[dlq.Entry], None],
) -> Purged:
    """Remove exactly what was ``counted``, each entry reported to ``removed``: entries
    that arrived since the count stay, even when they carry a counted id."""
    left = Counter(counted.copies)
    done = 0
    with hold_all(broker, selection.adapter, selection.invalid) as holding:
        for entry in selection.pick(holding):
            if left[entry.id] > 0:
                left[entry.id] -= 1
                holding.of(entry).remove(entry)
                done += 1
                removed(entry)
        snapshots = holding.snapshots
    return Purged(done, snapshots)
