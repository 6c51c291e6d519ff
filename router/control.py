"""The control protocol on ``crmsync.control``: one pydantic model per request and reply.

Routing keys: ``register.<adapter>``, ``heartbeat.<adapter>`` (the adapter's name is in
the key, not the body) and ``op.<verb>`` for operators. Bodies are msgpack maps. Every
reply has ``ok``; a refusal has ``ok = false`` and a one-line ``error``. Server
(:mod:`router.daemon.control_server`) and clients (:mod:`router.broker.rpc`, the CLI,
adapters) share these models, so a field renamed on one side fails the type check on
the other instead of silently reading ``None``.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, TypeVar

import msgpack
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from router.errors import CrmsyncError
from router.events import ENTITY_RE, INT_MAX, NAME_RE, Scalar

AdapterName = Annotated[str, Field(pattern=NAME_RE)]
NonEmpty = Annotated[str, Field(min_length=1, max_length=255)]


class BadRequest(CrmsyncError, ValueError):
    """A control request the router cannot act on: the reply's one-line ``error``."""


class Refused(CrmsyncError):
    """The router answered, and said no: its one-line reason."""


def pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def unpack(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False)


class Request(BaseModel):
    """A control request. ``KEY`` is its routing key (``register``/``heartbeat`` add the
    adapter's name as a second part, carried in :attr:`Keyed.name`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    KEY: ClassVar[str]

    @property
    def routing_key(self) -> str:
        return self.KEY

    def body(self) -> bytes:
        return pack(self.model_dump(mode="json"))


class Keyed(Request):
    """A request whose routing key names the adapter it speaks for."""

    name: AdapterName

    @property
    def routing_key(self) -> str:
        return f"{self.KEY}.{self.name}"

    def body(self) -> bytes:
        return pack(self.model_dump(mode="json", exclude={"name"}))


class Register(Keyed):
    KEY: ClassVar[str] = "register"
    actor: str | None = None  # from the adapter's own state; None when it has none
    # The highest counter of ``actor`` in the adapter's links (None: not reported): a
    # CRM database restored from a backup has links behind what the router accepted.
    highest: Annotated[int, Field(ge=0, le=INT_MAX)] | None = None
    entities: dict[Annotated[str, Field(pattern=ENTITY_RE)], list[str]] = {}
    version: str = ""
    # Its retry.delays: the router declares the adapter's queues (a least-privilege
    # adapter user may not: a queue's dead-letter exchange needs write on it).
    retry_tiers: list[Annotated[str, Field(max_length=32)]] = Field(
        default_factory=list, max_length=32
    )


class CaptureHealth(BaseModel):
    """How an adapter's capture is doing, carried by its heartbeats (optional: adapters
    of an earlier version send none). ``error`` is the last failure's type only."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    failing: Annotated[int, Field(ge=0)] = 0  # consecutive capture passes that raised
    last_ok: float | None = None  # when a pass last completed (epoch seconds)
    error: Annotated[str, Field(max_length=200)] | None = None
    bad_rows: Annotated[int, Field(ge=0)] = 0  # rows skipped since the adapter started
    # capture.push: "active" (changes wake capture), "polling" (its listener is down);
    # None: push not configured.
    push: Literal["active", "polling"] | None = None
    # What the adapter still owes (``crmsync status`` is "drained" only when all is 0):
    # local changes not confirmed by the broker yet, and its retry tiers' labels (their
    # queues, crmsync.retry.NAME.LABEL, hold writes waiting for another try).
    outbox: Annotated[int, Field(ge=0)] = 0
    retry_tiers: list[Annotated[str, Field(max_length=32)]] = Field(
        default_factory=list, max_length=32
    )


class Heartbeat(Keyed):
    KEY: ClassVar[str] = "heartbeat"
    actor: str | None = None
    at: float | None = None
    capture: CaptureHealth | None = None


class StatusRequest(Request):
    KEY: ClassVar[str] = "op.status"


class EditRecord(Request):
    """Edit & retry: the router makes a hub version of the record with these values."""

    KEY: ClassVar[str] = "op.edit"
    record_id: NonEmpty
    entity: str | None = None
    set: dict[str, Scalar]

    @field_validator("set")
    @classmethod
    def _something_to_set(cls, value: dict[str, Scalar]) -> dict[str, Scalar]:
        if not value:
            raise ValueError("op.edit needs a non-empty 'set' (field -> value)")
        return value


class RemoveAdapter(Request):
    KEY: ClassVar[str] = "op.adapter-remove"
    name: AdapterName


class ListConflicts(Request):
    KEY: ClassVar[str] = "op.conflicts.list"
    entity: str | None = None


class ShowConflict(Request):
    KEY: ClassVar[str] = "op.conflicts.show"
    id: NonEmpty


class ConflictHistory(Request):
    KEY: ClassVar[str] = "op.conflicts.history"
    record_id: NonEmpty


class ResolveConflict(Request):
    KEY: ClassVar[str] = "op.conflicts.resolve"
    id: NonEmpty
    take: str | None = None
    fields: dict[str, str] = {}  # field -> the source whose side it comes from
    values: dict[str, Scalar] = {}  # field -> a value the operator typed
    by: str | None = None  # the operator's login, for the audit record


class ListIdentities(Request):
    KEY: ClassVar[str] = "op.identity.list"
    entity: str | None = None
    limit: Annotated[int, Field(ge=1, le=100_000)] = 1000


class ResolveIdentity(Request):
    """An operator's decision on an event identity matching parked: exactly one of
    ``link`` (it is that record: an alias), ``new`` (a record of its own), ``discard``."""

    KEY: ClassVar[str] = "op.identity.resolve"
    event_id: NonEmpty
    link: NonEmpty | None = None
    new: bool = False
    discard: bool = False
    by: str | None = None  # the operator's login, for the log

    @model_validator(mode="after")
    def _one_decision(self) -> ResolveIdentity:
        if (self.link is not None) + self.new + self.discard != 1:
            raise ValueError("say exactly one of --link RECORD_ID, --new, --discard")
        return self


class ShowRecord(Request):
    """``crmsync record show``: the router's state of one record."""

    KEY: ClassVar[str] = "op.record.show"
    record_id: NonEmpty


REQUESTS: dict[str, type[Request]] = {
    model.KEY: model
    for model in (
        Register,
        Heartbeat,
        StatusRequest,
        EditRecord,
        RemoveAdapter,
        ListConflicts,
        ShowConflict,
        ConflictHistory,
        ResolveConflict,
        ListIdentities,
        ResolveIdentity,
        ShowRecord,
    )
}


def _explain(err: ValidationError, key: str) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{key}: {where}: {first['msg']}{more}"


def parse_request(routing_key: str, raw: bytes) -> Request:
    """The typed request a control message carries, or :class:`BadRequest` naming what is
    wrong with it (unknown operation, undecodable body, a field missing or mistyped)."""
    head, _, name = routing_key.partition(".")
    keyed = head in (Register.KEY, Heartbeat.KEY)
    model = REQUESTS.get(head if keyed else routing_key)
    if model is None:
        raise BadRequest(f"unknown control request {routing_key!r}")
    try:
        body = unpack(raw)
    except Exception as e:  # msgpack raises several unrelated types for garbage
        raise BadRequest(f"{routing_key}: the body is not msgpack ({type(e).__name__})") from e
    if not isinstance(body, dict):
        raise BadRequest(f"{routing_key}: the body must be a map, not {type(body).__name__}")
    if keyed:
        if "name" in body:
            raise BadRequest(f"{routing_key}: the adapter's name goes in the routing key")
        body = {**body, "name": name}
    try:
        return model.model_validate(body)
    except ValidationError as e:
        raise BadRequest(_explain(e, routing_key)) from None


Q = TypeVar("Q", bound=Request)


def request(model: type[Q], **fields: Any) -> Q:
    """A request as a client builds it; a bad value is a one-line :class:`BadRequest`."""
    try:
        return model.model_validate(fields)
    except ValidationError as e:
        raise BadRequest(_explain(e, model.KEY)) from None


# -- replies ----------------------------------------------------------------------------


class Reply(BaseModel):
    # A newer router may say more than this client knows: ignore it, don't fail.
    model_config = ConfigDict(extra="ignore", frozen=True)
    ok: bool = True

    def body(self) -> bytes:
        return pack(self.model_dump(mode="json"))


class Failure(Reply):
    ok: bool = False
    error: str


class Registered(Reply):
    actor: str
    epoch: int
    rewound: str = ""  # why a new epoch was issued for a claimed actor (its state was behind)
    # With [security] set: the broker users whose deliveries the adapter's sink accepts
    # (the router's, the operators'); empty: any (a development hub's single user).
    accept_from: list[str] = Field(default_factory=list)

    def body(self) -> bytes:
        # Said only when it happened: the usual reply stays what older adapters know.
        unsaid = {k for k in ("rewound", "accept_from") if not getattr(self, k)}
        return pack(self.model_dump(mode="json", exclude=unsaid))


class AdapterStatus(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    name: str
    actor: str
    entities: list[str]
    version: str
    last_heartbeat: float
    capture: CaptureHealth | None = None


class Status(Reply):
    hub_actor: str
    heartbeat_timeout: float
    uptime: float
    last_batch_age: float | None
    verdicts: dict[str, int]
    invalid: dict[str, int]
    store: dict[str, int]
    adapters: list[AdapterStatus]
    active_router: str = ""  # which router process answers: "host:pid since <UTC>"


class VersionMade(Reply):
    """A hub version (an edit, a resolution) stored and sent, or owed (``pending``)."""

    event_id: str
    clock: dict[str, int]
    pending: bool = False
    conflict: str | None = None


class Removed(Reply):
    queue: str


class Conflicts(Reply):
    conflicts: list[dict[str, Any]]


class ConflictShown(Reply):
    conflict: dict[str, Any]


class RecordShown(Reply):
    # fields, per-field clock and author, tombstone, the conflict it is parked in; and
    # the adapters that map its entity (to ask where each CRM has it)
    record: dict[str, Any]
    adapters: list[str]


class Identities(Reply):
    identities: list[dict[str, Any]]  # ParkedIdentity.summary(): ids, never values


class IdentityResolved(Reply):
    event_id: str
    decision: str  # link | new | discard
    record_id: str | None = None  # the record it now belongs to (None: discarded)
    verdict: str | None = None  # what the router's decision on it was
    pending: bool = False  # stored; its deliveries are owed in the outbox


R = TypeVar("R", bound=Reply)


def parse_reply(raw: Any, expected: type[R], key: str) -> R:
    """The router's answer as ``expected``; its refusal as :class:`CrmsyncError` (one line)."""
    if not isinstance(raw, dict):
        raise CrmsyncError(f"the router's answer to {key} is not a map")
    if not raw.get("ok", False):
        raise Refused(str(raw.get("error") or f"the router refused {key}"))
    try:
        return expected.model_validate(raw)
    except ValidationError as e:
        raise CrmsyncError(
            f"the router's answer to {key} is not what this crmsync expects "
            f"({_explain(e, key)}); are router and client the same version?"
        ) from None


# The migration and reconcile requests live in their own module; importing it here keeps
# REQUESTS complete for every process, whatever it imported first.
from router import control_migration as _migration  # noqa: E402, F401
