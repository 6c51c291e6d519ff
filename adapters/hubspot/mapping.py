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

from adapters.transforms import TransformError, Transforms
from router.adapter_config import EntityMapping
from router.errors import PermanentWriteError
from router.events import Scalar
from router.transform_config import EntityTransforms

SYSTEM = ("hs_object_id", "createdate", "lastmodifieddate")


class Unreadable:
    """A value a read transform refused: canonical validation turns it into an invalid
    row (via ``str``), so capture reports that row and skips it, never the page."""

    def __init__(self, err: TransformError) -> None:
        self.err = err

    def __str__(self) -> str:
        from adapters.canonical import InvalidRecord

        raise InvalidRecord(str(self.err))


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
    def __init__(self, entity: str, mapping: EntityMapping) -> None:
        assert mapping.object is not None  # AdapterConfig: hubspot entities name one
        self.entity = entity
        self.object = mapping.object
        self.plain = {n: p for n, p in mapping.fields.items() if n not in mapping.transforms}
        self.transforms: Transforms | None = None
        self.transformed: set[str] = set()
        columns: set[str] = set()
        if mapping.transforms or mapping.names is not None or mapping.constants:
            resolved = {
                n: t if t.column else t.model_copy(update={"column": mapping.fields.get(n, n)})
                for n, t in mapping.transforms.items()
            }
            self.transforms = Transforms(
                EntityTransforms(
                    transforms=resolved, names=mapping.names, constants=mapping.constants
                )
            )
            self.transformed = set(resolved)
            columns = {t.column or n for n, t in resolved.items() if t.direction != "write"}
            if mapping.names is not None:
                columns.add(mapping.names.column)
                self.transformed |= {mapping.names.first, mapping.names.last}
        # A plain field whose property a transform claims is the transform's.
        self.plain = {n: p for n, p in self.plain.items() if p not in columns}
        self.read_columns = columns
        self.field_names = sorted(set(self.plain) | self.transformed)
        wanted = {*self.plain.values(), *columns}
        self.properties = sorted(wanted - set(SYSTEM)) + list(SYSTEM)

    def read(self, properties: Mapping[str, Any]) -> dict[str, Any]:
        """HubSpot properties -> canonical fields (raw text where no transform applies)."""
        fields: dict[str, Any] = {n: properties.get(p) for n, p in self.plain.items()}
        if self.transforms is not None:
            raw = {c: properties.get(c) for c in self.read_columns}
            try:
                fields.update(self.transforms.read(raw))
            except TransformError as e:
                name = e.field if e.field in self.transformed else sorted(self.transformed)[0]
                fields[name] = Unreadable(e)
        return fields

    def write(self, fields: Mapping[str, Scalar]) -> dict[str, str]:
        """Canonical fields -> the property values to send, as text. A value a transform
        cannot write is permanent: retrying cannot change it."""
        out = {self.plain[n]: as_text(v) for n, v in fields.items() if n in self.plain}
        if self.transforms is not None:
            try:
                written = self.transforms.write(
                    {n: v for n, v in fields.items() if n in self.transformed}
                )
            except TransformError as e:
                raise PermanentWriteError(f"{self.entity}: cannot write {e}") from None
            out.update({p: as_text(v) for p, v in written.items()})
        return out
