"""Requests an operator command sends to one adapter over ``crmsync.control``.

Routing key ``adapter.<name>.<verb>``; each adapter answers on its own exclusive queue,
so a request to an adapter that is not running times out with a line saying so. The
models are shared by the adapter (:mod:`adapters.control_server`) and the commands
(``crmsync migrate``, ``crmsync reconcile``), as :mod:`router.control` is for the router.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from router.batches import InvalidRow
from router.control import AdapterName, Reply, Request, pack
from router.events import ENTITY_RE

Entity = Annotated[str, Field(pattern=ENTITY_RE)]
PREFIX = "adapter"


class AdapterRequest(Request):
    """A request to the adapter ``name`` (in the routing key, not the body)."""

    name: AdapterName

    @property
    def routing_key(self) -> str:
        return f"{PREFIX}.{self.name}.{self.KEY}"

    def body(self) -> bytes:
        return pack(self.model_dump(mode="json", exclude={"name"}))


class Export(AdapterRequest):
    """Publish one page of ``entity`` (keyset after ``after``, by source id) as a
    migration batch for ``target``; the reply comes once the broker confirmed it."""

    KEY: ClassVar[str] = "export"
    migration_id: Annotated[str, Field(min_length=1, max_length=64)]
    entity: Entity
    target: AdapterName
    after: str | None = None
    limit: Annotated[int, Field(ge=1, le=5000)] = 500
    rate: Annotated[float, Field(gt=0)] | None = None


class Exported(Reply):
    rows: int  # source rows read (valid or not)
    published: int  # records sent in the batch
    invalid: list[InvalidRow] = Field(default_factory=list)
    last: str | None = None  # keyset to continue after
    done: bool = False


class Digest(AdapterRequest):
    """Content hashes of ``fields`` for a page of linked records, by record id."""

    KEY: ClassVar[str] = "digest"
    entity: Entity
    fields: list[str]
    after: str | None = None
    limit: Annotated[int, Field(ge=1, le=10000)] = 2000


class Digested(Reply):
    items: list[list[str | None]]  # [record_id, source_record_id, hash | None, state]
    last: str | None = None
    done: bool = False


class MigrationLog(AdapterRequest):
    """What this adapter wrote for a migration, as the target (counts and failures)."""

    KEY: ClassVar[str] = "migration-log"
    migration_id: Annotated[str, Field(min_length=1, max_length=64)]
    after: str | None = None  # page of failures after this record id
    limit: Annotated[int, Field(ge=1, le=10000)] = 1000


class MigrationLogged(Reply):
    counts: dict[str, dict[str, int]]  # entity -> outcome -> records
    failed: list[list[str]] = Field(default_factory=list)  # [entity, record_id, reason]


class Republish(AdapterRequest):
    """Publish these records' current rows as new local edits (reconcile --prefer)."""

    KEY: ClassVar[str] = "republish"
    entity: Entity
    record_ids: Annotated[list[str], Field(max_length=5000)]


class Republished(Reply):
    published: int
    missing: list[str] = Field(default_factory=list)


class PlanRows(AdapterRequest):
    """``migrate --dry-run``: a page of ``entity`` by source id, read only (no capture,
    nothing published): each row's record id, hash of ``fields``, validation error and
    the values of the match ``keys``."""

    KEY: ClassVar[str] = "plan-rows"
    entity: Entity
    fields: list[str]
    keys: list[str] = Field(default_factory=list)
    after: str | None = None
    limit: Annotated[int, Field(ge=1, le=5000)] = 500


class PlanRow(BaseModel):
    """One source row as the dry run plans it. ``keys`` holds customer values (the
    normalised match keys): they go to the router for matching and are never logged."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    source_record_id: str
    record_id: str | None = None  # None: capture has not linked the row yet
    hash: str | None = None  # None when invalid
    error: str | None = None  # why the row breaks the canonical model (no value)
    keys: list[tuple[str, str]] = Field(default_factory=list)  # (key, indexed value)


class PlannedRows(Reply):
    rows: list[PlanRow]
    last: str | None = None
    done: bool = False


class Hashes(AdapterRequest):
    """Content hashes of ``fields`` for these record ids (a target's side of a plan)."""

    KEY: ClassVar[str] = "hashes"
    entity: Entity
    fields: list[str]
    record_ids: Annotated[list[str], Field(max_length=10000)]


class Hashed(Reply):
    # record id -> hash; absent: no link; None: the linked row is gone; "invalid"
    hashes: dict[str, str | None]


class Count(AdapterRequest):
    """How many live records of ``entity`` the CRM holds (a progress bar's total)."""

    KEY: ClassVar[str] = "count"
    entity: Entity


class Counted(Reply):
    rows: int | None = None  # None: this CRM cannot tell cheaply


class Limit(AdapterRequest):
    """A migration's write cap for this CRM (``--rate``), or None to lift it: set when a
    run starts and lifted when it ends, so no run inherits another's cap."""

    KEY: ClassVar[str] = "limit"
    rate: Annotated[float, Field(gt=0)] | None = None
    seconds: Annotated[float, Field(gt=0, le=86400)] = 60.0  # lapses unless renewed


class Limited(Reply):
    rate: float | None = None  # the cap in force now (the adapter's own max_rate too)


class WhereIs(AdapterRequest):
    """``crmsync record show``: what this CRM holds of one record."""

    KEY: ClassVar[str] = "record"
    record_id: Annotated[str, Field(min_length=1, max_length=255)]


class HeldHere(Reply):
    linked: bool  # the adapter has a link for the record
    source_record_id: str | None = None  # the CRM's own id (None: not written there)
    in_crm: bool = False  # the CRM's row exists now
    deleted: bool = False  # as the link or the row says
    clock: dict[str, int] = Field(default_factory=dict)  # the version the link knows
    fields: dict[str, Any] = Field(default_factory=dict)  # the row's canonical values now
    pending: bool = False  # a local change waits in the outbox
    differs: bool = False  # the row's content is not the version the link knows


class Resync(AdapterRequest):
    """``crmsync adapter resync``: capture again from scratch (every entity, or one)."""

    KEY: ClassVar[str] = "resync"
    entity: Entity | None = None


class Resyncing(Reply):
    entities: list[str]


REQUESTS: dict[str, type[AdapterRequest]] = {
    m.KEY: m
    for m in (
        Export,
        Digest,
        MigrationLog,
        Republish,
        Count,
        PlanRows,
        Hashes,
        Limit,
        WhereIs,
        Resync,
    )
}
