"""Migration batches on the wire: many change events in one message, end to end.

A bulk migration moves records in batches (DESIGN "Commands", ``crmsync migrate``): the
source adapter publishes one message per page of records to ``crmsync.changes`` (routing
key ``<source>.<entity>.migrate``, so topic permissions still confine it to its own
prefix) and the router delivers one message per batch to the target's sink. Each event
inside keeps its own msgpack bytes, exactly as a single event would be published: the
router and the target split a batch without re-encoding, judge and write every event
by the same rules as a live one, and a refused or failed event leaves the batch as a
message of its own, byte for byte. Only what concerns the batch as a whole rides in
:class:`BatchMeta`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final

import msgpack
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from router.errors import DecodeError
from router.events import ENTITY_RE, NAME_RE

BATCH_HEADER: Final = "x-crmsync-batch"  # marks a batch message (value: its kind)
MIGRATION: Final = "migration"
MIGRATION_HEADER: Final = "x-crmsync-migration"  # a single migration event's migration id
REPAIR_HEADER: Final = "x-crmsync-repair"  # a delivery that overwrites drift (reconcile)
MAX_BATCH: Final = 5000


class InvalidRow(BaseModel):
    """A source record that cannot migrate, and why (never its values)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    source_record_id: Annotated[str, Field(max_length=255)]
    reason: Annotated[str, Field(max_length=500)]


class BatchMeta(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: str = MIGRATION
    migration_id: Annotated[str, Field(min_length=1, max_length=64)]
    entity: Annotated[str, Field(pattern=ENTITY_RE)]
    source: Annotated[str, Field(pattern=NAME_RE)]
    target: Annotated[str, Field(pattern=NAME_RE)]
    # Records per second the target may write (migrate --rate); renewed by each batch.
    rate: Annotated[float, Field(gt=0)] | None = None
    # Source rows of this page that cannot migrate (source -> router only).
    invalid: list[InvalidRow] = []
    # Records of this batch that were matched to a record the target already held
    # (router -> target: the target counts them as linked).
    linked: list[str] = []


def pack_batch(meta: BatchMeta, events: list[bytes]) -> bytes:
    packed: bytes = msgpack.packb(
        {"batch": meta.model_dump(mode="json"), "events": events}, use_bin_type=True
    )
    return packed


def unpack_batch(raw: bytes) -> tuple[BatchMeta, list[bytes]]:
    """The batch's description and its events' own bytes, or :class:`DecodeError`."""
    try:
        payload: Any = msgpack.unpackb(raw, raw=False)
    except Exception as e:  # msgpack raises several unrelated types for garbage
        raise DecodeError("undecodable", f"batch: {type(e).__name__}: {e}", raw) from e
    if not isinstance(payload, dict) or not isinstance(payload.get("events"), list):
        raise DecodeError("invalid-schema", "batch: not a map with a list of events", raw)
    events = payload["events"]
    if len(events) > MAX_BATCH or not all(isinstance(e, bytes) for e in events):
        raise DecodeError(
            "invalid-schema", f"batch: events must be <= {MAX_BATCH} byte strings", raw
        )
    try:
        meta = BatchMeta.model_validate(payload.get("batch"))
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "batch"
        raise DecodeError("invalid-schema", f"batch.{where}: {first['msg']}", raw) from e
    return meta, events


def is_batch(headers: Mapping[str, Any] | None) -> bool:
    return headers is not None and headers.get(BATCH_HEADER) == MIGRATION
