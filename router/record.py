"""What the router knows about one record: its clock, fields and where they came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from router.clock import VectorClock
from router.events import Scalar


@dataclass(frozen=True)
class RecordState:
    record_id: str
    entity: str
    clock: VectorClock
    fields: dict[str, Scalar]
    # The clock of the version that last set each field (for field-level decisions).
    field_clocks: dict[str, VectorClock]
    deleted: bool
    source: str
    actor: str
    event_id: str
    occurred_at: datetime
    # Compare-and-set token for stores shared by several routers; 0 = not stored yet.
    version: int = 0
    # The source that set each field's value (missing: ``source``); ``priority`` ranks by
    # it, so a value keeps its author's rank through later resolutions.
    field_sources: dict[str, str] = field(default_factory=dict)
    # The id of the conflict this record is parked in: nothing is sent for it until an
    # operator resolves that conflict.
    parked: str | None = None
