"""Control requests of migrations and reconcile (``op.migration.*``, ``op.redeliver``).

Kept beside :mod:`router.control` and added to its table of requests, so the router's
control server parses them like every other request.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from router.control import REQUESTS, AdapterName, Reply, Request
from router.events import ENTITY_RE

MigrationId = Annotated[str, Field(min_length=1, max_length=64)]
Entity = Annotated[str, Field(pattern=ENTITY_RE)]


class OpenMigration(Request):
    """Start a migration from ``source`` to ``target``, or (``resume``) find the
    unfinished one; both adapters must be registered and alive."""

    KEY: ClassVar[str] = "op.migration.open"
    source: AdapterName
    target: AdapterName
    entities: list[Entity] = Field(default_factory=list)  # empty: every entity both map
    resume: bool = False


class MigrationOpened(Reply):
    id: str
    resumed: bool
    status: str
    entities: list[str]
    cursors: dict[str, dict[str, Any]]
    previous: str | None = None  # the last finished migration of the pair, if any
    fields: dict[str, list[str]] = Field(default_factory=dict)  # entity -> fields both map


class Done(Reply):
    """A request done, with nothing more to say."""


class Checkpoint(Request):
    KEY: ClassVar[str] = "op.migration.checkpoint"
    id: MigrationId
    entity: Entity
    after: str | None = None
    exported: Annotated[int, Field(ge=0)] = 0
    done: bool = False


class MigrationProgress(Request):
    """Outcomes the router recorded for a migration; with ``outcomes``, a page of the
    records that had them (after ``after`` = [entity, source id])."""

    KEY: ClassVar[str] = "op.migration.status"
    id: MigrationId
    outcomes: list[str] = Field(default_factory=list)
    after: list[str] | None = None
    limit: Annotated[int, Field(ge=1, le=10000)] = 1000


class MigrationCounts(Reply):
    counts: dict[str, dict[str, int]]  # entity -> outcome -> records
    items: list[list[str | None]] = Field(default_factory=list)  # entity, sid, rid, outcome, detail


class FinishMigration(Request):
    KEY: ClassVar[str] = "op.migration.finish"
    id: MigrationId


class Redeliver(Request):
    """Send the hub's current version of these records to ``targets`` as repairs: the
    adapters write them even where their link already holds that clock (drift)."""

    KEY: ClassVar[str] = "op.redeliver"
    entity: Entity
    record_ids: Annotated[list[str], Field(max_length=5000)]
    targets: list[AdapterName]


class Redelivered(Reply):
    sent: int
    missing: list[str] = Field(default_factory=list)  # not in the hub, or parked


class DescribePair(Request):
    """The fields two adapters both map, per entity; both must be registered and alive."""

    KEY: ClassVar[str] = "op.pair"
    a: AdapterName
    b: AdapterName


class Pair(Reply):
    fields: dict[str, list[str]]  # entity -> fields both map
    keys: dict[str, list[str]] = Field(default_factory=dict)  # entity -> its match keys


class MatchItem(BaseModel):
    """A source row a dry run asks about. ``keys``: (key, indexed value) of its match
    keys, customer values the router uses for matching only and never logs."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    source_record_id: str
    record_id: str | None = None  # the source's link, if capture made one
    keys: list[tuple[str, str]] = Field(default_factory=list)


class PlanMatch(Request):
    """What the hub would make of these rows of ``source`` (``migrate --dry-run``):
    answered from the stored aliases, records, match index and members, storing nothing."""

    KEY: ClassVar[str] = "op.migration.plan"
    source: AdapterName
    target: AdapterName
    entity: Entity
    items: Annotated[list[MatchItem], Field(max_length=5000)]


class Verdict(BaseModel):
    """``known``: the hub holds the record (``joined``: identity matching joined it with
    a row of the source or target that no migration counted yet, so it would count as
    linked); ``new``; ``alias`` of ``record_id`` by its key; ``ambiguous`` (between
    ``candidates`` records); ``duplicate`` of ``record_id`` inside the source."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    kind: Literal["known", "new", "alias", "ambiguous", "duplicate"]
    record_id: str | None = None
    joined: bool = False
    target_ids: list[str] = Field(default_factory=list)  # ids the target may hold it under
    candidates: int = 0
    key: str | None = None  # the key that decided (its name)


class PlanMatched(Reply):
    items: list[Verdict]  # in the order asked


for _model in (
    OpenMigration,
    Checkpoint,
    MigrationProgress,
    FinishMigration,
    Redeliver,
    DescribePair,
    PlanMatch,
):
    REQUESTS[_model.KEY] = _model
