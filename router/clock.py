"""Vector clocks: the partial order that tells new, stale and concurrent versions apart.

A clock is an immutable sparse map ``actor -> counter``. A missing actor is 0 and zero
entries are dropped on construction, so equality, hashing and comparison agree. Clocks
deliberately have no ``<``/``>``: a partial order is not a sort key, and ``sorted()``
over clocks would silently produce nonsense. Use :func:`compare`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from typing import Final

HUB: Final = "hub"


class Order(enum.Enum):
    """How clock ``a`` relates to clock ``b`` in ``compare(a, b)``."""

    BEFORE = "before"  # a happened before b (a < b)
    AFTER = "after"  # a descends from b (a > b)
    EQUAL = "equal"
    CONCURRENT = "concurrent"


class VectorClock(Mapping[str, int]):
    __slots__ = ("_entries", "_hash")

    def __init__(self, entries: Mapping[str, int] | None = None) -> None:
        clean: dict[str, int] = {}
        for actor, counter in (entries or {}).items():
            if not isinstance(actor, str) or not actor:
                raise ValueError(f"clock actor must be a non-empty string, got {actor!r}")
            if isinstance(counter, bool) or not isinstance(counter, int) or counter < 0:
                raise ValueError(f"clock counter for {actor!r} must be an int >= 0")
            if counter:
                clean[actor] = counter
        self._entries = clean
        self._hash = hash(frozenset(self._entries.items()))

    def __getitem__(self, actor: str) -> int:
        return self._entries[actor]

    def get(self, actor: str, default: int = 0) -> int:  # type: ignore[override]
        return self._entries.get(actor, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, VectorClock):
            return self._entries == other._entries
        return NotImplemented

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"VectorClock({dict(sorted(self._entries.items()))!r})"

    def to_dict(self) -> dict[str, int]:
        return dict(self._entries)

    def increment(self, actor: str) -> VectorClock:
        """The clock of the next version made by ``actor``."""
        entries = dict(self._entries)
        entries[actor] = entries.get(actor, 0) + 1
        return VectorClock(entries)

    def base(self, actor: str) -> VectorClock:
        """The clock of this version's parent as ``actor`` saw it: its counter minus one."""
        entries = dict(self._entries)
        if entries.get(actor, 0) > 0:
            entries[actor] -= 1
        return VectorClock(entries)

    def dominates(self, other: VectorClock) -> bool:
        """True when ``self >= other`` (after or equal)."""
        return compare(self, other) in (Order.AFTER, Order.EQUAL)


EMPTY: Final = VectorClock()


def compare(a: VectorClock, b: VectorClock) -> Order:
    a_bigger = b_bigger = False
    for actor in a.keys() | b.keys():
        x, y = a.get(actor), b.get(actor)
        if x > y:
            a_bigger = True
        elif y > x:
            b_bigger = True
        if a_bigger and b_bigger:
            return Order.CONCURRENT
    if a_bigger:
        return Order.AFTER
    if b_bigger:
        return Order.BEFORE
    return Order.EQUAL


def merge(*clocks: VectorClock) -> VectorClock:
    """Least upper bound: the entry-wise maximum."""
    entries: dict[str, int] = {}
    for clock in clocks:
        for actor, counter in clock.items():
            if counter > entries.get(actor, 0):
                entries[actor] = counter
    return VectorClock(entries)


def meet(first: VectorClock, *rest: VectorClock) -> VectorClock:
    """Greatest lower bound: the entry-wise minimum (a clock every input descends from)."""
    entries = dict(first.items())
    for clock in rest:
        entries = {a: min(c, clock.get(a)) for a, c in entries.items() if clock.get(a) > 0}
    return VectorClock(entries)


def actor_name(actor: str) -> str:
    """The source name of an actor: ``legacy@2`` -> ``legacy``."""
    return actor.split("@", 1)[0]


def actor_epoch(actor: str) -> int:
    """The epoch of an actor: ``legacy`` -> 1, ``legacy@2`` -> 2."""
    _, sep, epoch = actor.partition("@")
    return int(epoch) if sep else 1


def make_actor(name: str, epoch: int) -> str:
    return name if epoch <= 1 else f"{name}@{epoch}"
