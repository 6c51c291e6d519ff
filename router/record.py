"""What the router knows about one record: its clock, fields and where they came from."""

from __future__ import annotations

from dataclasses import dataclass
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
