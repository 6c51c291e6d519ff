"""What the router knows of every actor: that it exists, and its highest counter.

A clock entry is a claim that its actor made that many versions. The router issued or
accepted every legitimate one, so it can check the claim: an actor it never issued
(``unknown-actor``), or a counter for an actor other than the event's own above the
highest the router ever issued or accepted for it (``clock-from-the-future``), comes
from a bug or a hostile publisher. Accepting such a clock once poisons the record for
good: ``{"hub": 2**63 - 1}`` made the next resolution overflow and halted all sync.

After the router's state is restored from a backup, the marks of the actors known then
are only lower bounds (``inexact``): their counters are not checked, they only rise; the
hub's new epoch starts exact, and settling a conflict only increments it, so no clock
can overflow it.

The event's own actor may go ahead of the mark (that is what a new edit is), and each
accepted clock raises the marks. Marks are per-batch values: raised while a batch is
decided (:class:`BatchMarks`), persisted in the batch's transaction and taken over
(:meth:`Watermarks.commit`) only once it committed, so a rolled-back batch raises none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from router.clock import make_actor

UNKNOWN_ACTOR = "unknown-actor"
FROM_THE_FUTURE = "clock-from-the-future"

Refusal = tuple[str, str]  # (reason, detail)


def issued_actors(name: str, epoch: int) -> list[str]:
    """Every actor the registry issued to ``name`` up to ``epoch`` (old records carry
    the earlier epochs)."""
    return [make_actor(name, e) for e in range(1, epoch + 1)]


class Watermarks:
    """The committed marks: ``highs`` mirrors what the state store holds."""

    __slots__ = ("highs", "inexact", "known")

    def __init__(
        self, highs: Mapping[str, int], known: Iterable[str] = (), inexact: Iterable[str] = ()
    ) -> None:
        self.highs: dict[str, int] = dict(highs)
        # A removed adapter's actors stay known: they are in ``highs`` once it published.
        self.known: set[str] = set(self.highs) | set(known)
        self.inexact: set[str] = set(inexact)

    def know(self, actors: Iterable[str]) -> None:
        self.known.update(actors)

    def batch(self) -> BatchMarks:
        return BatchMarks(self)

    def commit(self, marks: BatchMarks) -> None:
        """Take over what a committed batch raised."""
        highs = self.highs
        for actor, counter in marks.raised.items():
            if counter > highs.get(actor, 0):
                highs[actor] = counter
        self.known.update(marks.raised)

    def merge_stored(self, stored: Mapping[str, int]) -> None:
        """Marks another router (sharing the state store) committed."""
        for actor, counter in stored.items():
            if counter > self.highs.get(actor, 0):
                self.highs[actor] = counter
        self.known.update(stored)


class BatchMarks:
    """The marks as one batch raises them; ``raised`` is what to persist with it."""

    __slots__ = ("_highs", "_inexact", "_known", "raised")

    def __init__(self, marks: Watermarks) -> None:
        self._highs = marks.highs
        self._known = marks.known
        self._inexact = marks.inexact
        self.raised: dict[str, int] = {}

    def refusal(self, clock: Mapping[str, int], own: str) -> Refusal | None:
        """Why ``clock`` of an event made by ``own`` is refused, or None."""
        known, highs, raised = self._known, self._highs, self.raised
        for actor, counter in clock.items():
            if actor not in known and actor not in raised:
                return UNKNOWN_ACTOR, f"clock names actor {actor!r}, which the router never issued"
            if actor == own or actor in self._inexact:
                continue
            high = max(highs.get(actor, 0), raised.get(actor, 0))
            if counter > high:
                return FROM_THE_FUTURE, (
                    f"clock has {actor}:{counter}, but the highest counter the router "
                    f"issued or accepted for {actor!r} is {high}"
                )
        return None

    def observe(self, clock: Mapping[str, int]) -> None:
        """A clock the batch accepted or made (a resolution increments the hub)."""
        highs, raised = self._highs, self.raised
        for actor, counter in clock.items():
            if counter > highs.get(actor, 0) and counter > raised.get(actor, 0):
                raised[actor] = counter


def highs_of(clocks: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Entry-wise maximum over ``clocks``: the marks of a state made before marks existed."""
    highs: dict[str, int] = {}
    for clock in clocks:
        for actor, counter in clock.items():
            if counter > highs.get(actor, 0):
                highs[actor] = counter
    return highs
