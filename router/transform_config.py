"""TOML model of mapping transforms (adapters.transforms), one table per entity.

Kept apart from router.adapter_config, which uses these models; validated the same way
(unknown keys refused, every error names its key). See docs/transforms.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, field_validator, model_validator

from router.config import Strict, _explain
from router.errors import ConfigError
from router.events import ENTITY_RE

Scalar = str | bool | int | float
FieldName = Annotated[str, Field(pattern=ENTITY_RE)]
# CRM column/property names are the CRM's: any non-empty text.
Column = Annotated[str, Field(min_length=1, max_length=255)]
ValueType = Literal["bool", "integer", "number", "decimal", "date", "datetime"]


class FieldTransform(Strict):
    """``[entities.<e>.transforms.<canonical field>]``."""

    column: Column | None = None  # the CRM's name; absent: the canonical name
    direction: Literal["both", "read", "write"] = "both"  # read: read-only, write: write-only
    trim: bool = False  # read side: canonical values are the normalised form
    lower: bool = False
    map: dict[str, str] = Field(default_factory=dict)  # CRM value -> canonical value
    map_default: str | None = None  # read: a CRM value not in the map
    map_write_default: str | None = None  # write: a canonical value not in the map
    type: ValueType | None = None  # canonical type; the CRM may hold text or native values
    as_string: bool = False  # write the CRM's value as text (HubSpot: every property)
    format: Literal["iso", "epoch_ms", "epoch_s"] = "iso"  # date/datetime text on write
    tz: str | None = None  # zone of the CRM's naive datetimes; absent: UTC
    default: Scalar | None = None  # write: when the canonical value is missing or null

    @field_validator("tz")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError('not an IANA time zone name (e.g. "Europe/Berlin")') from None
        return value

    @field_validator("map")
    @classmethod
    def _reversible(cls, value: dict[str, str]) -> dict[str, str]:
        seen: dict[str, str] = {}
        for crm, canonical in value.items():
            if canonical in seen:
                # Writes need the reverse map; two CRM values for one canonical value
                # would make the written one a guess.
                raise ValueError(
                    f"map is not reversible: {seen[canonical]!r} and {crm!r} "
                    "map to the same canonical value"
                )
            seen[canonical] = crm
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FieldTransform:
        if (self.map_default is not None or self.map_write_default is not None) and not self.map:
            raise ValueError("map_default and map_write_default need a map")
        if self.map and self.type is not None:
            raise ValueError("a field has either a map or a type, not both")
        if self.tz is not None and self.type != "datetime":
            raise ValueError('tz needs type = "datetime"')
        if self.format != "iso" and self.type not in ("date", "datetime"):
            raise ValueError('format needs type = "date" or "datetime"')
        if self.default is not None and self.direction == "read":
            raise ValueError("default applies on write; this field is read-only")
        return self


class NameSplit(Strict):
    """``[entities.<e>.names]``: one CRM full-name column <-> two canonical fields."""

    column: Column = "name"
    first: FieldName = "first_name"
    last: FieldName = "last_name"

    @model_validator(mode="after")
    def _distinct(self) -> NameSplit:
        if self.first == self.last:
            raise ValueError("first and last must be different fields")
        return self


class EntityTransforms(Strict):
    """The transforms of one entity. Fields not listed pass through unchanged."""

    transforms: dict[FieldName, FieldTransform] = Field(default_factory=dict)
    names: NameSplit | None = None
    # Written on every write, never read (e.g. SuiteCRM's bean_module = "Contacts").
    constants: dict[Column, Scalar] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _columns_unique(self) -> EntityTransforms:
        owners: dict[str, str] = {}

        def claim(column: str, owner: str) -> None:
            if column in owners:
                raise ValueError(f"CRM column {column!r} is used by {owners[column]} and {owner}")
            owners[column] = owner

        for name, transform in self.transforms.items():
            claim(transform.column or name, f"transforms.{name}")
        if self.names is not None:
            claim(self.names.column, "names")
            for name in (self.names.first, self.names.last):
                if name in self.transforms:
                    raise ValueError(f"transforms.{name} and names both produce field {name!r}")
        for column in self.constants:
            claim(column, f"constants.{column}")
        return self


class TransformsConfig(Strict):
    """entity -> its transforms; the ``[entities.<e>]`` tables of an adapter TOML."""

    entities: dict[FieldName, EntityTransforms] = Field(default_factory=dict)


def parse_transforms(raw: dict[str, Any], path: Path | str = "<config>") -> TransformsConfig:
    """Validate a parsed TOML document; a :class:`ConfigError` names the key and file."""
    try:
        return TransformsConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_explain(e, Path(path))) from None
