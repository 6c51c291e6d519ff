"""An entity's mapping applied to one record: CRM names and values <-> canonical ones.

:class:`Wired` is the mapping's transforms (docs/transforms.md) with every field's CRM
name resolved; the SQL adapter reads and writes columns through it. Adapters whose
records are dicts of named properties (an HTTP API, a file, a plugin) use
:class:`RecordMapping`, which adds the plain renames of ``fields``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.canonical import InvalidRecord
from adapters.transforms import TransformError, Transforms
from router.adapter_config import EntityMapping
from router.errors import PermanentWriteError
from router.transform_config import EntityTransforms


class Unreadable:
    """A value a read transform refused. Canonical validation turns it into
    :class:`InvalidRecord` (via ``str``), so capture skips and reports the row, and a
    read-back dead-letters the write, exactly as for a value the model refuses."""

    def __init__(self, err: TransformError, field: str) -> None:
        self.err = err
        # Validation names the field the marker stands in: the reason alone then, so the
        # report reads "score: not an integer", not "score: score: ...".
        self._text = err.reason if field == err.field else str(err)

    def __str__(self) -> str:
        raise InvalidRecord(self._text)


class Wired:
    """An entity's transforms with each field's column resolved: a transform without
    ``column`` uses the field's column from ``fields``, else the field's name."""

    def __init__(self, mapping: EntityMapping) -> None:
        resolved = {
            name: t if t.column else t.model_copy(update={"column": mapping.fields.get(name, name)})
            for name, t in mapping.transforms.items()
        }
        config = EntityTransforms(
            transforms=resolved, names=mapping.names, constants=mapping.constants
        )
        self.engine = Transforms(config)
        self.read_columns = {t.column or n for n, t in resolved.items() if t.direction != "write"}
        self.columns = {t.column or n for n, t in resolved.items()}
        self.fields = set(resolved)
        self.first: str | None = None
        if mapping.names is not None:
            self.read_columns.add(mapping.names.column)
            self.columns.add(mapping.names.column)
            self.fields |= {mapping.names.first, mapping.names.last}
            self.first = mapping.names.first

    def read(self, raw: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.engine.read(raw)
        except TransformError as e:
            # The row still reads; validation reports it (see Unreadable).
            field = self.first if e.field not in self.fields and self.first else e.field
            return {field: Unreadable(e, field)}

    def write(self, fields: dict[str, Any]) -> dict[str, Any]:
        return self.engine.write(fields)


class RecordMapping:
    """One entity of a CRM whose records are dicts keyed by the CRM's property names."""

    def __init__(self, entity: str, mapping: EntityMapping) -> None:
        self.entity = entity
        wired = None
        if mapping.transforms or mapping.names is not None or mapping.constants:
            wired = Wired(mapping)
        self._wired = wired
        claimed_fields = wired.fields if wired else set()
        claimed_columns = wired.columns if wired else set()
        # Fields read and written under another name only (no transform applies).
        self.renames = {
            name: prop
            for name, prop in mapping.fields.items()
            if name not in claimed_fields and prop not in claimed_columns
        }
        self.field_names = sorted(set(self.renames) | claimed_fields)
        # The CRM properties a read needs (ask an API for exactly these).
        self.properties = sorted(
            set(self.renames.values()) | (wired.read_columns if wired else set())
        )
        # Every CRM property a write may set (a new CSV file's header lists them).
        written = wired.columns if wired else set()
        self.columns = sorted(set(self.renames.values()) | written | set(mapping.constants))

    def read(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The canonical fields of a record as the CRM returned it. A value a transform
        refuses becomes a marker that canonical validation reports for that record only."""
        fields = {name: record.get(prop) for name, prop in self.renames.items()}
        if self._wired is not None:
            raw = {col: record.get(col) for col in self._wired.read_columns}
            fields.update(self._wired.read(raw))
        return fields

    def write(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """The CRM's properties for canonical ``fields``; a value a transform cannot
        write is a :class:`PermanentWriteError` (retrying cannot help: it dead-letters)."""
        out = {self.renames[name]: v for name, v in fields.items() if name in self.renames}
        if self._wired is not None:
            rest = {n: v for n, v in fields.items() if n not in self.renames}
            try:
                out.update(self._wired.write(rest))
            except TransformError as e:
                raise PermanentWriteError(f"{self.entity}: cannot write {e}") from None
        return out
