"""The wire contract: ``ChangeEvent`` and its msgpack encoding.

Both ends validate with the same model, so an adapter can never publish what the
router would refuse for its shape. Field values are plain scalars (str, int, float,
bool, None): canonical models turn richer CRM types into these before publishing.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

import msgpack
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from router.clock import VectorClock, actor_name
from router.errors import DecodeError

SCHEMA_VERSION: Final = 1
CONTENT_TYPE: Final = "application/msgpack"

NAME_RE: Final = r"^[a-z][a-z0-9_-]{0,62}$"
ACTOR_RE: Final = r"^[a-z][a-z0-9_-]{0,62}(@[1-9][0-9]{0,8})?$"
ENTITY_RE: Final = r"^[a-z][a-z0-9_]{0,62}$"

INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**63 - 1  # signed 64-bit: what SQLite, PostgreSQL and MariaDB hold
MAX_COUNTER: Final = INT_MAX

Scalar = str | int | float | bool | None
# What every store and CRM can hold: signed 64-bit integers (an unsigned one above
# 2^63 passed msgpack, then failed in SQLite and was retried for minutes), and finite
# floats (NaN != NaN, so a republish of the same bytes looked like a reused clock).
# The integer range is checked in Python (ChangeEvent._signed_64_bit): a range on the
# int branch would let the float branch take an out-of-range integer as a float.
WireScalar = str | int | Annotated[float, Field(allow_inf_nan=False)] | bool | None
Op = Literal["upsert", "delete"]
Origin = Literal["live", "migration", "replay"]


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _uuid_str(value: str) -> str:
    # The canonical form is what every crmsync producer sends: a regex is ~5x cheaper
    # than uuid.UUID on the router's hot path. Other spellings are parsed and normalised.
    if _CANONICAL_UUID.fullmatch(value):
        return value
    try:
        return str(uuid.UUID(value))
    except ValueError as e:
        raise ValueError(f"not a uuid: {value!r}") from e


class ChangeEvent(BaseModel):
    """One version of one record, as a source (or the hub) made it."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    v: Literal[1] = SCHEMA_VERSION
    event_id: str
    source: Annotated[str, Field(pattern=NAME_RE)]
    actor: Annotated[str, Field(pattern=ACTOR_RE)]
    entity: Annotated[str, Field(pattern=ENTITY_RE)]
    record_id: str
    source_record_id: Annotated[str, Field(max_length=255)] = ""
    op: Op
    # Checked by pydantic-core (the router's hot path), not by Python validators.
    clock: Annotated[
        dict[Annotated[str, Field(pattern=ACTOR_RE)], Annotated[int, Field(ge=1, le=MAX_COUNTER)]],
        Field(min_length=1),
    ]
    fields: dict[Annotated[str, Field(pattern=ENTITY_RE)], WireScalar]
    changed: list[str]
    occurred_at: AwareDatetime
    origin: Origin = "live"
    # Per field, the counter of this actor's edit that last set the value (DESIGN "Exact
    # attribution under reordering"); a carried field absent from it holds a value the
    # actor received from the hub. None: an older producer; the router bounds instead.
    field_versions: (
        dict[
            Annotated[str, Field(pattern=ENTITY_RE)],
            Annotated[int, Field(ge=1, le=MAX_COUNTER)],
        ]
        | None
    ) = None

    @field_validator("event_id", "record_id")
    @classmethod
    def _is_uuid(cls, value: str) -> str:
        return _uuid_str(value)

    @field_validator("fields")
    @classmethod
    def _signed_64_bit(cls, value: dict[str, Scalar]) -> dict[str, Scalar]:
        for name, item in value.items():
            if type(item) is int and not INT_MIN <= item <= INT_MAX:
                raise ValueError(f"field {name!r}: integer outside the signed 64-bit range")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ChangeEvent:
        if actor_name(self.actor) != self.source:
            raise ValueError(f"actor {self.actor!r} does not belong to source {self.source!r}")
        # A migration event re-announces the version the source holds, which others may
        # have made (a record it only received): it need not carry a counter of its own.
        if self.clock.get(self.actor, 0) < 1 and self.origin != "migration":
            raise ValueError(f"clock has no entry for its own actor {self.actor!r}")
        unknown = set(self.changed) - set(self.fields)
        if unknown and self.op == "upsert":
            raise ValueError(f"changed names fields not in fields: {sorted(unknown)}")
        if self.field_versions:
            self._check_field_versions(self.field_versions)
        return self

    def _check_field_versions(self, versions: dict[str, int]) -> None:
        stray = [name for name in versions if name not in self.fields and name not in self.changed]
        if stray:
            raise ValueError(f"field_versions names fields the event does not carry: {stray}")
        own = self.clock[self.actor]
        if max(versions.values()) > own:
            # An edit of this actor after this very version: a counter from the future.
            raise ValueError(f"field_versions has a counter above the actor's own ({own})")

    @property
    def vclock(self) -> VectorClock:
        return VectorClock(self.clock)

    @property
    def routing_key(self) -> str:
        return f"{self.source}.{self.entity}.{self.op}"


def new_event_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


def encode(event: ChangeEvent) -> bytes:
    payload = event.model_dump()
    if payload["field_versions"] is None:
        # Absent, not nil: the bytes an older producer sent, which an older router reads.
        del payload["field_versions"]
    return encode_dict(payload)


def encode_dict(payload: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(payload, datetime=True, use_bin_type=True)
    return packed


def decode(raw: bytes) -> ChangeEvent:
    """Bytes -> validated event, or :class:`DecodeError` with a reason for the invalid queue."""
    try:
        payload = msgpack.unpackb(raw, raw=False, timestamp=3, strict_map_key=True)
    except Exception as e:  # msgpack raises several unrelated types for garbage
        raise DecodeError("undecodable", f"{type(e).__name__}: {e}", raw) from e
    if not isinstance(payload, dict):
        raise DecodeError("invalid-schema", f"body is a {type(payload).__name__}, not a map", raw)
    try:
        return ChangeEvent.model_validate(payload)
    except ValidationError as e:
        errors = e.errors()
        # A value that fits no branch of a union fails every branch: name the branch it
        # came closest to (a broken constraint, e.g. "finite number"), not "not a string".
        first = next((x for x in errors if not x["type"].endswith("_type")), errors[0])
        where = ".".join(str(p) for p in first["loc"]) or "event"
        detail = f"{where}: {first['msg']} ({e.error_count()} error(s))"
        raise DecodeError("invalid-schema", detail, raw) from e
