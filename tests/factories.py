"""Test data for unit and integration tests: change events (typed, and as the plain map
an adapter puts on the wire), record states and conflict sides (versions).

Defaults describe one record of entity ``contact`` (``RECORD_ID``) at a fixed time
(``T0``), so a test names only what it is about; every event and state gets a fresh
event id. Clocks may be given as plain maps or as ``VectorClock``s.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from router.clock import VectorClock, actor_name
from router.conflicts import Version
from router.events import ChangeEvent, Scalar
from router.record import RecordState

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
RECORD_ID = str(uuid.uuid4())
# A compare-and-set token as a router loads it from its store: neither a new record's 0
# nor a first commit's 1, so a test sees whether a decision carried it over.
STORED_VERSION = 7


def new_id() -> str:
    return str(uuid.uuid4())


def at(minutes: int) -> datetime:
    """``T0`` plus ``minutes``: the order of events in a test, readable at a glance."""
    return T0 + timedelta(minutes=minutes)


def _event_values(
    actor: str,
    clock: Mapping[str, Any],
    fields: Mapping[str, Any],
    *,
    source: str | None = None,
    record_id: str = RECORD_ID,
    event_id: str | None = None,
    entity: str = "contact",
    source_record_id: str = "src-1",
    op: str = "upsert",
    changed: Iterable[str] | None = None,
    occurred_at: datetime = T0,
    origin: str = "live",
    field_versions: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The fields of a ChangeEvent by ``actor`` (its source is the actor's name), not
    validated. ``changed`` defaults to every field carried; ``field_versions`` are left
    out unless given (an older producer's event)."""
    return {
        "event_id": event_id or new_id(),
        "source": source if source is not None else actor_name(actor),
        "actor": actor,
        "entity": entity,
        "record_id": record_id,
        "source_record_id": source_record_id,
        "op": op,
        "clock": dict(clock),
        "fields": dict(fields),
        "changed": sorted(fields) if changed is None else list(changed),
        "occurred_at": occurred_at,
        "origin": origin,
        **({} if field_versions is None else {"field_versions": dict(field_versions)}),
    }


def make_event(
    actor: str = "sales",
    clock: Mapping[str, int] | None = None,
    fields: Mapping[str, Scalar] | None = None,
    **values: Any,
) -> ChangeEvent:
    """A ChangeEvent (keywords: those of ``_event_values``); by default sales's first
    version of ``RECORD_ID`` with one email."""
    clock = clock if clock is not None else {actor: 1}
    fields = fields if fields is not None else {"email": "ada@example.com"}
    return ChangeEvent(**_event_values(actor, clock, fields, **values))


def wire_event(
    source: str,
    record_id: str,
    clock: Mapping[str, Any],
    fields: Mapping[str, Any],
    *,
    actor: str | None = None,
    occurred_at: datetime | None = None,
    **values: Any,
) -> dict[str, Any]:
    """A ChangeEvent as the plain map an adapter puts on the wire (``encode_dict`` it),
    made now. Not validated, so a test can make it wrong on purpose."""
    return {
        "v": 1,
        **_event_values(
            actor or source,
            clock,
            fields,
            source=source,
            record_id=record_id,
            occurred_at=occurred_at or datetime.now(UTC),
            **values,
        ),
    }


def make_state(
    clock: Mapping[str, int],
    fields: Mapping[str, Scalar],
    *,
    actor: str = "legacy",
    source: str | None = None,
    record_id: str = RECORD_ID,
    entity: str = "contact",
    event_id: str | None = None,
    occurred_at: datetime = T0,
    deleted: bool = False,
    field_clocks: Mapping[str, Mapping[str, int]] | None = None,
    field_sources: Mapping[str, str] | str | None = None,
    version: int = STORED_VERSION,
    parked: str | None = None,
) -> RecordState:
    """A stored record state last written by ``actor``. Every field was set at ``clock``
    unless ``field_clocks`` says otherwise; ``field_sources`` maps fields to who set them,
    or, as one name, credits every field to that source (the default: no entries, which
    the router reads as "set by ``source``")."""
    vclock = VectorClock(clock)
    if isinstance(field_sources, str):
        sources = dict.fromkeys(fields, field_sources)
    else:
        sources = dict(field_sources or {})
    return RecordState(
        record_id=record_id,
        entity=entity,
        clock=vclock,
        fields=dict(fields),
        field_clocks=(
            dict.fromkeys(fields, vclock)
            if field_clocks is None
            else {name: VectorClock(c) for name, c in field_clocks.items()}
        ),
        deleted=deleted,
        source=source if source is not None else actor_name(actor),
        actor=actor,
        event_id=event_id or new_id(),
        occurred_at=occurred_at,
        version=version,
        field_sources=sources,
        parked=parked,
    )


def make_version(
    actor: str,
    clock: Mapping[str, int],
    fields: Mapping[str, Scalar],
    *,
    source: str | None = None,
    event_id: str | None = None,
    occurred_at: datetime = T0,
    deleted: bool = False,
    changed: Iterable[str] | None = None,
    sources: Mapping[str, str] | None = None,
    field_clocks: Mapping[str, Mapping[str, int]] | None = None,
    field_seen: Mapping[str, Mapping[str, int]] | None = None,
) -> Version:
    """One side of a conflict, made by ``actor``; ``changed`` defaults to every field."""
    return Version(
        event_id=event_id or new_id(),
        source=source if source is not None else actor_name(actor),
        actor=actor,
        clock=VectorClock(clock),
        occurred_at=occurred_at,
        fields=dict(fields),
        deleted=deleted,
        changed=frozenset(fields if changed is None else changed),
        sources=dict(sources or {}),
        field_clocks={k: VectorClock(v) for k, v in (field_clocks or {}).items()},
        field_seen={k: VectorClock(v) for k, v in (field_seen or {}).items()},
    )
