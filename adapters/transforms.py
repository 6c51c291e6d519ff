"""Mapping transforms between a CRM's raw values and canonical values, both ways.

Pure: values in, values out. ``read`` turns a CRM row (column -> value) into canonical
fields, ``write`` a canonical record into CRM columns. Configured per entity
(router.transform_config, reference in docs/transforms.md). A value a transform cannot
take raises :class:`TransformError` naming the field and what is wrong, never the value:
the engine routes it per record (dead-letter on write, report on capture).

Reversible transforms satisfy ``read(write(x)) == x`` for canonical ``x`` (the unit tests
check it with hypothesis). Not reversible by design: trim/lower (read-side
normalisation), map defaults, write defaults and constants, epoch text below its unit,
name splitting of multi-word last names, and local times in a DST fall-back hour.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Final
from zoneinfo import ZoneInfo

from router.errors import CrmsyncError
from router.transform_config import EntityTransforms, FieldTransform, NameSplit

__all__ = ["TransformError", "Transforms"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_DIGITS_RE: Final = re.compile(r"^-?\d+$")
_TRUE: Final = frozenset({"true", "1", "yes"})
_FALSE: Final = frozenset({"false", "0", "no"})
_UNIT_MS: Final = {"iso": 1, "epoch_ms": 1, "epoch_s": 1000}


class TransformError(CrmsyncError, ValueError):
    """A value a configured transform cannot take. ``reason`` never quotes the value."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class _Bad(ValueError):
    """Internal: a value-free reason, given its field name by the caller."""


# ---- type conversions: CRM value (text or native) <-> canonical value ----


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _read_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = _text(value)
    if text is not None and text.strip().lower() in _TRUE | _FALSE:
        return text.strip().lower() in _TRUE
    raise _Bad("not a boolean (true/false)")


def _read_integer(value: Any) -> int:
    if isinstance(value, bool):
        raise _Bad("not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, (float, Decimal)) and math.isfinite(value) and value == int(value):
        return int(value)
    text = _text(value)
    if text is not None and _DIGITS_RE.match(text.strip()):
        return int(text.strip())
    raise _Bad("not an integer")


def _read_decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise _Bad("not a number")
    try:
        number = Decimal(value.strip() if isinstance(value, str) else str(value))
    except InvalidOperation:
        raise _Bad("not a number") from None
    if not number.is_finite():
        raise _Bad("not a finite number")
    return number


def _read_number(value: Any) -> float:
    number = float(_read_decimal(value))
    if not math.isfinite(number):
        raise _Bad("number outside the floating-point range")
    return number


def _epoch(value: Any, unit_ms: int) -> datetime | None:
    """An all-digit text or an int as epoch time (HubSpot: milliseconds)."""
    if isinstance(value, int) and not isinstance(value, bool):
        count = value
    elif isinstance(value, str) and _DIGITS_RE.match(value.strip()):
        count = int(value.strip())
    else:
        return None
    try:
        return _EPOCH + timedelta(milliseconds=count * unit_ms)
    except OverflowError:
        raise _Bad("epoch time out of range") from None


def _read_datetime(value: Any, t: FieldTransform) -> str:
    stamp = _epoch(value, _UNIT_MS[t.format])
    if stamp is None:
        if isinstance(value, datetime):
            stamp = value
        elif isinstance(value, str):
            try:
                stamp = datetime.fromisoformat(value.strip())
            except ValueError:
                raise _Bad("not an ISO date-time or epoch time") from None
        else:
            raise _Bad("not a date-time")
        if stamp.tzinfo is None:
            # fold=0: in a fall-back hour the earlier of the two instants (documented).
            stamp = stamp.replace(tzinfo=ZoneInfo(t.tz) if t.tz else UTC, fold=0)
    return stamp.astimezone(UTC).isoformat()


def _write_datetime(value: Any, t: FieldTransform) -> Any:
    stamp = _canonical_stamp(value)
    if t.format != "iso":
        delta = stamp - _EPOCH
        ms = (delta.days * 86_400_000) + delta.seconds * 1000 + delta.microseconds // 1000
        count = ms // _UNIT_MS[t.format]
        return str(count) if t.as_string else count
    if t.tz is not None:
        # The CRM holds naive local time: convert, then drop the zone (and the fold) it
        # does not store, so the value read back is the same whether it went through a
        # database or not.
        stamp = stamp.astimezone(ZoneInfo(t.tz)).replace(tzinfo=None, fold=0)
    elif not t.as_string:
        # Native values go to SQL columns that, in the CRMs we know, are naive UTC; an
        # aware value would be shifted by a session time zone on some drivers.
        stamp = stamp.replace(tzinfo=None)
    return stamp.isoformat() if t.as_string else stamp


def _canonical_stamp(value: Any) -> datetime:
    try:
        stamp = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        raise _Bad("not an ISO date-time") from None
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


def _read_date(value: Any, t: FieldTransform) -> str:
    stamp = _epoch(value, _UNIT_MS[t.format])
    if stamp is not None:
        return stamp.date().isoformat()
    if isinstance(value, datetime):
        raise _Bad("a date-time where a date is expected")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip()).isoformat()
        except ValueError:
            pass
    raise _Bad("not an ISO date (YYYY-MM-DD) or epoch time")


def _write_date(value: Any, t: FieldTransform) -> Any:
    try:
        day = value if isinstance(value, date) else date.fromisoformat(str(value))
    except ValueError:
        raise _Bad("not an ISO date") from None
    if t.format != "iso":
        ms = (day - _EPOCH.date()).days * 86_400_000
        count = ms // _UNIT_MS[t.format]
        return str(count) if t.as_string else count
    return day.isoformat() if t.as_string else day


def _to_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _read_typed(value: Any, t: FieldTransform) -> Any:
    if t.type == "bool":
        return _read_bool(value)
    if t.type == "integer":
        return _read_integer(value)
    if t.type == "number":
        return _read_number(value)
    if t.type == "decimal":
        return str(_read_decimal(value))
    if t.type == "date":
        return _read_date(value, t)
    return _read_datetime(value, t)


def _write_typed(value: Any, t: FieldTransform) -> Any:
    if t.type == "date":
        return _write_date(value, t)
    if t.type == "datetime":
        return _write_datetime(value, t)
    checked: Any = {
        "bool": _read_bool,
        "integer": _read_integer,
        "number": _read_number,
        "decimal": _read_decimal,
    }[t.type or "bool"](value)
    return _to_text(checked) if t.as_string else checked


# ---- one field, one entity ----


@dataclass(frozen=True)
class _Field:
    name: str
    column: str
    t: FieldTransform
    reverse_map: Mapping[str, str]

    def read(self, value: Any) -> Any:
        t = self.t
        if isinstance(value, str):
            value = value.strip() if t.trim else value
            value = value.lower() if t.lower else value
        if value is None:
            return None
        if t.map:
            key = _text(value)
            if key is None:
                raise _Bad("not text, the map has text keys")
            if key in t.map:
                return t.map[key]
            if t.map_default is None:
                raise _Bad("value not in the map and no map_default")
            return t.map_default
        if t.type is not None:
            if isinstance(value, str) and not value.strip():
                return None  # HubSpot sends "" for an unset property
            return _read_typed(value, t)
        return value

    def write(self, value: Any) -> Any:
        t = self.t
        if value is None:
            value = t.default
        if value is None:
            return None
        if t.map:
            key = _text(value)
            if key is not None and key in self.reverse_map:
                return self.reverse_map[key]
            if t.map_write_default is None:
                raise _Bad("value not in the map and no map_write_default")
            return t.map_write_default
        if t.type is not None:
            return _write_typed(value, t)
        return value


def _split_name(full: Any) -> tuple[str | None, str | None]:
    """Last whitespace-separated word: last name; the rest: first name; one word: first."""
    if full is None:
        return None, None
    if not isinstance(full, str):
        raise _Bad("not text")
    words = full.split()
    if not words:
        return None, None
    if len(words) == 1:
        return words[0], None
    return " ".join(words[:-1]), words[-1]


def _join_name(first: Any, last: Any) -> str | None:
    parts = [p for p in (first, last) if p is not None and p != ""]
    if any(not isinstance(p, str) for p in parts):
        raise _Bad("not text")
    return " ".join(parts) or None


class Transforms:
    """The compiled transforms of one entity (immutable, shareable)."""

    def __init__(self, config: EntityTransforms) -> None:
        self._fields = tuple(
            _Field(name, t.column or name, t, {v: k for k, v in t.map.items()})
            for name, t in config.transforms.items()
        )
        self._names: NameSplit | None = config.names
        self._constants = dict(config.constants)
        claimed = {f.column for f in self._fields} | set(self._constants)
        if self._names is not None:
            claimed.add(self._names.column)
        self._claimed_columns: frozenset[str] = frozenset(claimed)
        produced = {f.name for f in self._fields}
        if self._names is not None:
            produced |= {self._names.first, self._names.last}
        self._claimed_fields: frozenset[str] = frozenset(produced)

    def read(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """CRM columns -> canonical fields. Unlisted columns pass through unchanged;
        write-only fields and constants are not read."""
        out = {k: v for k, v in row.items() if k not in self._claimed_columns}
        for f in self._fields:
            if f.t.direction != "write" and f.column in row:
                out[f.name] = _apply(f.name, f.read, row[f.column])
        names = self._names
        if names is not None and names.column in row:
            first, last = _apply(names.column, _split_name, row[names.column])
            out[names.first], out[names.last] = first, last
        return out

    def write(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Canonical fields -> CRM columns. Unlisted fields pass through unchanged;
        read-only fields are not written; a field with a default is written even when
        the record lacks it; constants are always written."""
        out = {k: v for k, v in record.items() if k not in self._claimed_fields}
        for f in self._fields:
            if f.t.direction == "read":
                continue
            if f.name in record or f.t.default is not None:
                out[f.column] = _apply(f.name, f.write, record.get(f.name))
        names = self._names
        if names is not None:
            present = [n in record for n in (names.first, names.last)]
            if any(present) and not all(present):
                # Joining one half with a guessed other half would overwrite the name.
                raise TransformError(
                    names.column, f"needs both {names.first} and {names.last} to write"
                )
            if all(present):
                pair = (record[names.first], record[names.last])
                out[names.column] = _apply(names.column, lambda p: _join_name(*p), pair)
        out.update(self._constants)
        return out


def _apply(field: str, fn: Callable[[Any], Any], value: Any) -> Any:
    try:
        return fn(value)
    except _Bad as e:
        raise TransformError(field, str(e)) from None
