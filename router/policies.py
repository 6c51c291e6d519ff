"""Conflict resolution: given two concurrent versions, which values survive.

Pure functions over values. The sync spine ships last-writer-wins with the delete rule;
the other policies of the design plug in here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from router.events import Scalar

DeleteRule = Literal["update-wins", "delete-wins"]


@dataclass(frozen=True)
class Side:
    """One side of a conflict.

    ``changed`` is what this side changed since the two sides' common ancestor (None:
    every field it carries). A field only one side changed is that side's edit, never a
    contest: keeping it is what makes the outcome independent of arrival order when the
    sources map different fields.
    """

    actor: str
    occurred_at: datetime
    fields: dict[str, Scalar]
    deleted: bool
    changed: frozenset[str] | None = None

    def touched(self, name: str) -> bool:
        return name in self.fields and (self.changed is None or name in self.changed)


@dataclass(frozen=True)
class Resolution:
    fields: dict[str, Scalar]
    deleted: bool
    winner: Side
    loser: Side
    # Fields whose value came from the incoming side: the version that set them is the
    # incoming event, which is what their field clocks must say.
    from_incoming: frozenset[str] = frozenset()


def lww_key(side: Side) -> tuple[datetime, str]:
    """Latest ``occurred_at`` wins; the actor name breaks ties so every router agrees."""
    return (side.occurred_at, side.actor)


def resolve_lww(stored: Side, incoming: Side, deletes: DeleteRule = "update-wins") -> Resolution:
    """Last writer wins on every field both sides changed; a field one side changed is
    kept from that side; a field neither changed keeps the stored value. A source that
    does not map a field can never erase it."""
    if lww_key(incoming) > lww_key(stored):
        winner, loser = incoming, stored
    else:
        winner, loser = stored, incoming
    if stored.deleted != incoming.deleted:
        # Delete against a concurrent update is decided by the entity's delete rule,
        # not by timestamps: a late edit must not be eaten by an early delete (update-wins).
        deleted = deletes == "delete-wins"
        if not deleted:
            winner, loser = (incoming, stored) if stored.deleted else (stored, incoming)
    else:
        deleted = winner.deleted
    fields: dict[str, Scalar] = {}
    taken: set[str] = set()
    for name in sorted(stored.fields.keys() | incoming.fields.keys()):
        if winner.touched(name):
            side = winner
        elif loser.touched(name):
            side = loser
        elif name in stored.fields:
            side = stored
        else:
            side = incoming
        fields[name] = side.fields[name]
        if side is incoming:
            taken.add(name)
    return Resolution(fields, deleted, winner, loser, frozenset(taken))
