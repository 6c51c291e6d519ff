"""One mapped HubSpot object type: canonical fields <-> HubSpot properties, pure.

Every HubSpot property value is a string (null when unset). A field listed only in
``fields`` is carried as that text; canonical types (numbers, booleans, dates) come
through the entity's transforms (docs/transforms.md), and whatever a write produces is
sent as text, since HubSpot stores text. A null clears the property (HubSpot clears on
an empty string).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from adapters.mapping import RecordMapping
from router.adapter_config import EntityMapping
from router.events import Scalar

SYSTEM = ("hs_object_id", "createdate", "lastmodifieddate")


def as_text(value: Any) -> str:
    """A canonical (or transformed) value as the string HubSpot stores; None clears."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


class ObjectMapping:
    """An entity's :class:`~adapters.mapping.RecordMapping`, with HubSpot's system
    properties always asked for and every written value sent as text."""

    def __init__(self, entity: str, mapping: EntityMapping) -> None:
        assert mapping.object is not None  # AdapterConfig: hubspot entities name one
        self.entity = entity
        self.object = mapping.object
        self._record = RecordMapping(entity, mapping)
        self.field_names = self._record.field_names
        self.properties = [p for p in self._record.properties if p not in SYSTEM] + list(SYSTEM)

    def read(self, properties: Mapping[str, Any]) -> dict[str, Any]:
        """HubSpot properties -> canonical fields (raw text where no transform applies)."""
        return self._record.read(properties)

    def write(self, fields: Mapping[str, Scalar]) -> dict[str, str]:
        """Canonical fields -> the property values to send, as text. A value a transform
        cannot write is permanent: retrying cannot change it."""
        return {p: as_text(v) for p, v in self._record.write(fields).items()}
