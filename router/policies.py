"""Conflict resolution: given concurrent versions of one record, which values survive.

Pure functions over values (DESIGN "Conflict policies"). The rules every policy shares:

* a field only one side changed is that side's edit, never a contest; keeping it is what
  makes the outcome independent of arrival order when the sources map different fields;
* a field several sides changed is *contested* and goes to its policy: ``lww`` (latest
  ``occurred_at``, ties by actor name), ``priority`` (the side whose value was set by the
  highest-ranked source), or ``manual`` (an operator decides; until then the conflict is
  parked);
* delete against a concurrent update is decided by the entity's delete rule, never by
  timestamps or by an operator.

``resolve`` works on any number of sides: two for a conflict the router resolves as it
happens, more for a parked conflict that later events joined.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from router.events import Scalar

DeleteRule = Literal["update-wins", "delete-wins"]
PolicyName = Literal["lww", "priority", "field-merge", "manual"]
FieldPolicy = Literal["lww", "priority", "manual"]

#: The source of values an operator set (``conflicts resolve --value``, ``dlq edit``):
#: a person decided them on purpose, so under ``priority`` they outrank every CRM.
OPERATOR = "hub"
#: The source of a value whose author the router cannot name (it ranks last).
UNKNOWN = ""


@dataclass(frozen=True)
class Side:
    """One side of a conflict.

    ``changed`` is what this side changed since the sides' common ancestor (None: every
    field it carries). ``sources`` says which source set each value this side holds
    (missing: ``source``); ``priority`` ranks by it, so a value that reached this side
    through an earlier resolution keeps the rank of the CRM that wrote it.
    """

    source: str
    actor: str
    occurred_at: datetime
    fields: Mapping[str, Scalar]
    deleted: bool
    changed: frozenset[str] | None = None
    sources: Mapping[str, str] = field(default_factory=dict)

    def touched(self, name: str) -> bool:
        return name in self.fields and (self.changed is None or name in self.changed)

    def setter(self, name: str) -> str:
        return self.sources.get(name, self.source)


@dataclass(frozen=True)
class Rules:
    """One entity's conflict configuration (``[conflicts.<entity>]``)."""

    policy: PolicyName = "lww"
    fallback: FieldPolicy = "lww"
    priority: tuple[str, ...] = ()
    deletes: DeleteRule = "update-wins"
    fields: Mapping[str, FieldPolicy] = field(default_factory=dict)

    def for_field(self, name: str) -> FieldPolicy:
        """The policy that decides ``name`` when several sides changed it."""
        override = self.fields.get(name)
        if override is not None:
            return override
        if self.policy == "field-merge":
            return self.fallback
        return self.policy

    def rank(self, source: str) -> int:
        """Lower is stronger: the operator, then the listed sources in order, then the rest."""
        if source == OPERATOR:
            return -1
        try:
            return self.priority.index(source)
        except ValueError:
            return len(self.priority)

    @property
    def may_park(self) -> bool:
        return self.policy == "manual" or "manual" in (self.fallback, *self.fields.values())


LWW = Rules()


@dataclass(frozen=True)
class TakeSide:
    """An operator's choice: this field's value from the side of ``source``."""

    source: str


@dataclass(frozen=True)
class SetValue:
    """An operator's choice: this value."""

    value: Scalar


Choice = TakeSide | SetValue


@dataclass(frozen=True)
class Contest:
    """How one contested field was decided."""

    policy: str  # lww | priority | manual | operator
    candidates: tuple[int, ...]  # indexes of the sides that changed the field
    winner: int | None  # side index; None: an operator's value, or undecided
    losing: tuple[tuple[str, Scalar], ...]  # (source, value) of each value that lost


@dataclass(frozen=True)
class Outcome:
    fields: dict[str, Scalar]
    deleted: bool
    # Where each value came from: a side index, or None for the base (nobody changed it)
    # and for an operator's value.
    taken: dict[str, int | None]
    contests: dict[str, Contest]
    # Contested fields under ``manual`` with no operator choice yet: the caller parks.
    undecided: tuple[str, ...] = ()

    @property
    def losing(self) -> dict[str, list[tuple[str, Scalar]]]:
        return {name: list(c.losing) for name, c in self.contests.items() if c.losing}


def lww_key(side: Side) -> tuple[datetime, str]:
    """Latest ``occurred_at`` wins; the actor name breaks ties so every router agrees."""
    return (side.occurred_at, side.actor)


def side_of(sides: Sequence[Side], source: str, name: str) -> int | None:
    """The side holding ``source``'s edit of ``name`` that is in play (the side touches
    the field): the side whose value that source set (it may have reached a later
    version of another CRM, which then superseded ``source``'s own side), else
    ``source``'s own side. None when ``source`` has no edit of the field in play: a value
    some side has already replaced is not one to take (its edit's clock is unknown, so a
    resolution keeping it could not place it in the past of the CRMs that replaced it)."""
    authored = [i for i, s in enumerate(sides) if s.touched(name) and s.setter(name) == source]
    own = [i for i, s in enumerate(sides) if s.source == source and s.touched(name)]
    found = authored or own
    if found:
        return max(found, key=lambda i: lww_key(sides[i]))
    return None


def resolve(
    sides: Sequence[Side],
    base: Mapping[str, Scalar],
    rules: Rules = LWW,
    choices: Mapping[str, Choice] | None = None,
) -> Outcome:
    """Resolve concurrent ``sides`` of one record whose common state is ``base``.

    ``choices`` are an operator's decisions for contested fields; a choice for a field no
    two sides contest overrides nothing (callers refuse those before). A contested field
    under ``manual`` without a choice is left undecided (the base value stands in
    ``fields``) and listed in ``undecided``; a deleted outcome never waits for an
    operator (its contested values are decided by ``lww``: there is nothing to show).
    """
    choices = choices or {}
    alive = [i for i, s in enumerate(sides) if not s.deleted]
    dead = len(alive) < len(sides)
    # Delete against a concurrent update: the entity's delete rule, not timestamps (a
    # late edit must not be eaten by an early delete under update-wins).
    deleted = rules.deletes == "delete-wins" if dead and alive else dead
    # Under update-wins a side that deleted the record does not compete for values with
    # the sides that kept it (its changes count only where no living side changed).
    competing = alive if (alive and not deleted) else list(range(len(sides)))
    fields: dict[str, Scalar] = {}
    taken: dict[str, int | None] = {}
    contests: dict[str, Contest] = {}
    undecided: list[str] = []
    names = set(base).union(*(s.fields.keys() for s in sides))
    for name in sorted(names):
        touching = [i for i in competing if sides[i].touched(name)]
        if not touching:
            touching = [i for i, s in enumerate(sides) if s.touched(name)]
        if len({sides[i].fields[name] for i in touching}) == 1:
            # One side's edit, or several sides holding the same value: no contest. The
            # value is credited to its highest-ranked author (priority ranks by it later),
            # then to the latest; either way independent of the sides' order.
            kept = max(
                touching, key=lambda i: (-rules.rank(sides[i].setter(name)), lww_key(sides[i]))
            )
            fields[name], taken[name] = sides[kept].fields[name], kept
            continue
        if not touching:
            if name in base:
                fields[name], taken[name] = base[name], None
            else:  # carried but changed by nobody: a field the base never had
                holders = [i for i, s in enumerate(sides) if name in s.fields]
                holder = max(holders, key=lambda i: lww_key(sides[i]))  # order-independent
                fields[name], taken[name] = sides[holder].fields[name], holder
            continue
        contest = _contest(name, sides, touching, rules, choices.get(name), deleted)
        contests[name] = contest
        if contest.winner is not None:
            fields[name], taken[name] = sides[contest.winner].fields[name], contest.winner
        elif isinstance(choice := choices.get(name), SetValue):
            fields[name], taken[name] = choice.value, None
        else:
            undecided.append(name)
            fields[name], taken[name] = base.get(name), None
    return Outcome(fields, deleted, taken, contests, tuple(undecided))


def _contest(
    name: str,
    sides: Sequence[Side],
    touching: list[int],
    rules: Rules,
    choice: Choice | None,
    deleted: bool,
) -> Contest:
    policy: str = rules.for_field(name)
    winner: int | None
    if isinstance(choice, TakeSide):
        winner, policy = side_of(sides, choice.source, name), "operator"
        if winner is None:
            raise ValueError(f"{choice.source} has no edit of {name} in play in this conflict")
    elif isinstance(choice, SetValue):
        winner, policy = None, "operator"
    elif policy == "manual" and not deleted:
        winner = None
    elif policy == "priority":
        best = min(rules.rank(sides[i].setter(name)) for i in touching)
        ranked = [i for i in touching if rules.rank(sides[i].setter(name)) == best]
        winner = max(ranked, key=lambda i: lww_key(sides[i]))  # equal rank: latest edit
    else:
        policy = "lww"
        winner = max(touching, key=lambda i: lww_key(sides[i]))
    kept = sides[winner].fields[name] if winner is not None else _chosen(choice)
    decided = winner is not None or isinstance(choice, SetValue)
    losing = tuple(
        (sides[i].setter(name), sides[i].fields[name])
        for i in touching
        if decided and i != winner and sides[i].fields[name] != kept
    )
    return Contest(policy, tuple(touching), winner, losing)


def _chosen(choice: Choice | None) -> Scalar:
    return choice.value if isinstance(choice, SetValue) else None
