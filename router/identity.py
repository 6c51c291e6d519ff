"""Identity matching: is a record the router has never seen a customer it already holds?

Pure: values in, values out (DESIGN "Identity", docs/identity.md). The router's
pipeline (:mod:`router.daemon.identity_step`) looks the keys up and stores the outcome.

* A key's value is compared trimmed and case-insensitive; None and "" never match.
* Keys are tried in the configured order; the first whose value names at least one
  existing record decides: one record is a link (the new id becomes its alias),
  several are ambiguous (never guessed).
* A record that already holds a row of the same source under another source id is not
  linked: two rows of one CRM with one key are a duplicate inside that CRM, and the
  first record the hub saw keeps the key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from router.events import Scalar

# The index column's width; a longer key value is indexed by its digest.
MAX_INDEXED = 255
AMBIGUOUS = "ambiguous"
DUPLICATE = "duplicate"


def normalise(value: Scalar) -> str | None:
    """The form two values are compared in; None when the value can never match."""
    if value is None:
        return None
    text = str(value).strip().casefold()
    return text or None


def indexed(normalised: str) -> str:
    """What the match index stores for a normalised value (bounded width)."""
    if len(normalised) <= MAX_INDEXED:
        return normalised
    return "sha256:" + hashlib.sha256(normalised.encode()).hexdigest()


def key_values(fields: Mapping[str, Scalar], keys: Sequence[str]) -> list[tuple[str, str]]:
    """(key, indexed value) for each key the fields hold a matchable value for, in order."""
    found = []
    for key in keys:
        value = normalise(fields.get(key))
        if value is not None:
            found.append((key, indexed(value)))
    return found


@dataclass(frozen=True)
class Member:
    """A CRM row some accepted version of a record came from."""

    record_id: str
    source: str
    source_record_id: str


@dataclass(frozen=True)
class Alias:
    """``alias_id`` (a record id an adapter made) stands for ``record_id``, for good."""

    alias_id: str
    record_id: str
    entity: str
    source: str
    source_record_id: str
    created_at: float
    migration: str | None = None


@dataclass(frozen=True)
class Match:
    """What a new record id is: ``new``, an ``alias`` of ``record_id``, ``ambiguous``
    between ``candidates``, or a ``duplicate`` of ``record_id`` inside its source."""

    kind: Literal["new", "alias", "ambiguous", "duplicate"]
    record_id: str | None = None
    candidates: tuple[str, ...] = ()
    key: str | None = None  # the key that decided (its name, never its value)


NEW = Match("new")


def match(
    fields: Mapping[str, Scalar],
    keys: Sequence[str],
    candidates: Mapping[tuple[str, str], Collection[str]],
    members: Mapping[str, Iterable[Member]],
    source: str,
    source_record_id: str,
) -> Match:
    """Judge a record id never seen before. ``candidates``: (key, indexed value) -> the
    live records holding it; ``members``: record id -> the rows it came from."""
    for key, value in key_values(fields, keys):
        found = sorted(candidates.get((key, value), ()))
        if not found:
            continue
        if len(found) > 1:
            return Match("ambiguous", candidates=tuple(found), key=key)
        [record_id] = found
        if source_record_id and any(
            m.source == source and m.source_record_id not in ("", source_record_id)
            for m in members.get(record_id, ())
        ):
            return Match("duplicate", record_id, (record_id,), key)
        return Match("alias", record_id, (record_id,), key)
    return NEW


@dataclass(frozen=True)
class IdentityOutcome:
    """What identity matching did to one event (``BatchOutcome.identity``, keyed by the
    event's original id): ``linked`` (its record id became an alias of ``record_id``
    now), ``ambiguous`` (between ``candidates``), ``duplicate`` (of ``record_id``)."""

    kind: Literal["linked", "ambiguous", "duplicate"]
    record_id: str | None
    candidates: tuple[str, ...] = ()
    key: str | None = None


@dataclass(frozen=True)
class ParkedIdentity:
    """An event identity matching could not place; it waits for an operator."""

    event_id: str
    record_id: str
    entity: str
    source: str
    source_record_id: str
    reason: str  # AMBIGUOUS | DUPLICATE
    candidates: tuple[str, ...]
    body: bytes
    parked_at: float

    def summary(self) -> dict[str, object]:
        """What ``crmsync identity list`` shows: ids and names, never field values."""
        return {
            "event_id": self.event_id,
            "record_id": self.record_id,
            "entity": self.entity,
            "source": self.source,
            "source_record_id": self.source_record_id,
            "reason": self.reason,
            "candidates": list(self.candidates),
            "parked_at": self.parked_at,
        }


@dataclass
class IdentityWrites:
    """What a batch's identity matching stores in the batch's transaction (the match
    index itself follows the record states: RouterStore.commit_batch)."""

    aliases: list[Alias] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)
    parked: list[ParkedIdentity] = field(default_factory=list)  # inserted or replaced
    unparked: list[str] = field(default_factory=list)  # event ids an operator settled

    def __bool__(self) -> bool:
        return bool(self.aliases or self.members or self.parked or self.unparked)

    def absorb(self, other: IdentityWrites) -> None:
        self.aliases += other.aliases
        self.members += other.members
        self.parked += other.parked
        self.unparked += other.unparked
