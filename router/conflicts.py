"""Conflicts as data: parked ones waiting for an operator, and the audit record of every
resolution (automatic or by hand).

Pure values plus their msgpack documents; the store keeps them in ``crmsync_conflicts``
and the router's decision code (:mod:`router.decide`) makes and changes them.

A parked conflict keeps each concurrent version once (deduplicated by clock); a later
event that supersedes one side replaces only that side (DESIGN "Vector clocks"), and an
event concurrent with every side joins as a side of its own. So nothing that arrives
for a parked record is lost, and nothing is sent for it until an operator decides.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from router.clock import VectorClock
from router.events import Scalar
from router.policies import UNKNOWN, Side

Status = Literal["open", "resolved"]


def new_conflict_id() -> str:
    """Short enough to type (``crmsync conflicts show c-3f9a0b12``), random so several
    routers never need to agree on a sequence."""
    return f"c-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Version:
    """One side of a conflict: a version of the record with its clock and provenance."""

    event_id: str
    source: str
    actor: str
    clock: VectorClock
    occurred_at: datetime
    fields: dict[str, Scalar]
    deleted: bool
    changed: frozenset[str]  # what this side changed since the sides' common ancestor
    sources: dict[str, str] = field(default_factory=dict)  # who set each value (default source)
    # The clock of the edit that set each value (default: clock).
    field_clocks: dict[str, VectorClock] = field(default_factory=dict)
    # For a value this version only inherited from a side it superseded (a field its CRM
    # does not map): the clock of the version that really held it. This version cannot
    # have replaced a value of such a field, whatever its own clock has seen.
    field_seen: dict[str, VectorClock] = field(default_factory=dict)

    def side(self) -> Side:
        return Side(
            self.source,
            self.actor,
            self.occurred_at,
            self.fields,
            self.deleted,
            self.changed,
            self.sources,
        )

    def field_clock(self, name: str) -> VectorClock:
        return self.field_clocks.get(name, self.clock)

    def seen(self, name: str) -> VectorClock:
        """How far this version's knowledge of ``name`` reaches."""
        return self.field_seen.get(name, self.clock)

    def to_doc(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "source": self.source,
            "actor": self.actor,
            "clock": self.clock.to_dict(),
            "occurred_at": self.occurred_at,
            "fields": self.fields,
            "deleted": self.deleted,
            "changed": sorted(self.changed),
            "sources": self.sources,
            "field_clocks": {k: v.to_dict() for k, v in self.field_clocks.items()},
            "field_seen": {k: v.to_dict() for k, v in self.field_seen.items()},
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Version:
        return cls(
            event_id=doc["event_id"],
            source=doc["source"],
            actor=doc["actor"],
            clock=VectorClock(doc["clock"]),
            occurred_at=doc["occurred_at"],
            fields=dict(doc["fields"]),
            deleted=bool(doc["deleted"]),
            changed=frozenset(doc["changed"]),
            sources=dict(doc.get("sources", {})),
            field_clocks={k: VectorClock(v) for k, v in doc.get("field_clocks", {}).items()},
            field_seen={k: VectorClock(v) for k, v in doc.get("field_seen", {}).items()},
        )


@dataclass(frozen=True)
class Settlement:
    """How a conflict ended: the audit record (who, what, which policy, what lost)."""

    at: datetime
    by: str  # "policy", "operator:<name>", or "superseded"
    event_id: str  # the resolution version sent to every subscriber
    clock: VectorClock
    deleted: bool
    # field -> {"policy": ..., "value": ..., "source": ..., "losing": [[source, value]...]}
    fields: dict[str, dict[str, Any]]

    def to_doc(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "by": self.by,
            "event_id": self.event_id,
            "clock": self.clock.to_dict(),
            "deleted": self.deleted,
            "fields": self.fields,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Settlement:
        return cls(
            at=doc["at"],
            by=doc["by"],
            event_id=doc["event_id"],
            clock=VectorClock(doc["clock"]),
            deleted=bool(doc["deleted"]),
            fields=dict(doc["fields"]),
        )


@dataclass(frozen=True)
class Conflict:
    """Concurrent versions of one record; ``settlement`` is None while it is parked."""

    id: str
    record_id: str
    entity: str
    opened_at: datetime
    sides: tuple[Version, ...]
    base: dict[str, Scalar]  # the record's values before the conflict (the common view)
    policies: dict[str, str]  # contested field -> the policy that decides it
    undecided: tuple[str, ...] = ()  # contested fields waiting for an operator
    held: int = 0  # events that joined while parked
    settlement: Settlement | None = None

    @property
    def status(self) -> Status:
        return "open" if self.settlement is None else "resolved"

    @property
    def sources(self) -> list[str]:
        """Every source with a change in this conflict: the sides' own, and the authors of
        the changes a side carries (a side that superseded another carries its edits)."""
        authors = {v.sources.get(name, v.source) for v in self.sides for name in v.changed}
        return sorted((authors | {v.source for v in self.sides}) - {UNKNOWN})

    def settle(self, settlement: Settlement) -> Conflict:
        return replace(self, settlement=settlement, undecided=())

    def to_doc(self) -> dict[str, Any]:
        return {
            "opened_at": self.opened_at,
            "sides": [v.to_doc() for v in self.sides],
            "base": self.base,
            "policies": self.policies,
            "undecided": list(self.undecided),
            "held": self.held,
            "settlement": self.settlement.to_doc() if self.settlement else None,
        }

    @classmethod
    def from_doc(cls, conflict_id: str, record_id: str, entity: str, doc: Any) -> Conflict:
        settled = doc.get("settlement")
        return cls(
            id=conflict_id,
            record_id=record_id,
            entity=entity,
            opened_at=doc["opened_at"],
            sides=tuple(Version.from_doc(v) for v in doc["sides"]),
            base=dict(doc["base"]),
            policies=dict(doc["policies"]),
            undecided=tuple(doc.get("undecided", ())),
            held=int(doc.get("held", 0)),
            settlement=Settlement.from_doc(settled) if settled else None,
        )


# -- views for operators (JSON-ready: what ``crmsync conflicts`` prints) ------------------


def _when(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def side_label(conflict: Conflict, version: Version) -> str:
    """The source, or the actor where two sides come from one source (two epochs)."""
    same = sum(1 for v in conflict.sides if v.source == version.source)
    return version.source if same == 1 else version.actor


def summary(conflict: Conflict, now: datetime) -> dict[str, Any]:
    settled = conflict.settlement
    return {
        "id": conflict.id,
        "record_id": conflict.record_id,
        "entity": conflict.entity,
        "status": conflict.status,
        "sources": conflict.sources,
        "sides": [side_label(conflict, v) for v in conflict.sides],
        "fields": sorted(conflict.policies),
        "undecided": list(conflict.undecided),
        "opened_at": _when(conflict.opened_at),
        "age_seconds": round((now - conflict.opened_at).total_seconds(), 3),
        "held": conflict.held,
        "resolved_at": _when(settled.at) if settled else None,
        "resolved_by": settled.by if settled else None,
    }


def detail(
    conflict: Conflict, now: datetime, sides: Sequence[Side] | None = None
) -> dict[str, Any]:
    """Both (or all) sides, field by field: the value before the conflict, each side's
    value, who changed it, and how a contested field is (or was) decided.

    ``sides``: the versions as the resolver sees them (``router.provenance.sides_of``), so
    that ``changed_by`` names the sides whose edits are in play, the ones ``resolve``
    chooses between; without them, each side's own ``changed`` set."""
    labels = [side_label(conflict, v) for v in conflict.sides]
    labelled = list(zip(labels, conflict.sides, strict=True))
    touched = [s.touched for s in sides] if sides else [v.side().touched for v in conflict.sides]
    names = set(conflict.base).union(*(v.fields for v in conflict.sides))
    fields = []
    for name in sorted(names):
        values = {label: v.fields[name] for label, v in labelled if name in v.fields}
        changed_by = [label for label, t in zip(labels, touched, strict=True) if t(name)]
        fields.append(
            {
                "name": name,
                "base": conflict.base.get(name),
                "values": values,
                "changed_by": changed_by,
                # Who wrote each changed value: another source when a side superseded it.
                "set_by": {
                    label: v.sources.get(name, v.source)
                    for label, v in labelled
                    if label in changed_by
                },
                "policy": conflict.policies.get(name, "merge" if changed_by else "unchanged"),
                "undecided": name in conflict.undecided,
            }
        )
    settled = conflict.settlement
    return {
        **summary(conflict, now),
        "sides": [
            {
                "label": label,
                "source": v.source,
                "actor": v.actor,
                "event_id": v.event_id,
                "clock": v.clock.to_dict(),
                "occurred_at": _when(v.occurred_at),
                "deleted": v.deleted,
                "changed": sorted(v.changed),
            }
            for label, v in labelled
        ],
        "field_values": fields,
        "settlement": (
            {
                "at": _when(settled.at),
                "by": settled.by,
                "event_id": settled.event_id,
                "clock": settled.clock.to_dict(),
                "deleted": settled.deleted,
                "fields": settled.fields,
            }
            if settled
            else None
        ),
    }
