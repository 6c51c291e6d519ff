"""Canonical entity models: the values every CRM agrees to exchange.

A source row that does not validate is reported (logged, counted) and not published;
it is never silently dropped, and never silently "fixed" either. Entities not listed
here pass through with scalar values only.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from router.events import INT_MAX, INT_MIN, Scalar

_EMAIL_RE: Final = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class InvalidRecord(ValueError):
    """A source row whose mapped values break the canonical model."""


class _Canonical(BaseModel):
    # Sources map a subset of fields, and customers add their own: allow extra scalars.
    model_config = ConfigDict(extra="allow")


class Contact(_Canonical):
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is None:
            return value
        value = value.strip()
        if not _EMAIL_RE.match(value):
            # The reason reaches reports and logs: it names the field, never the value.
            raise ValueError("not an email address")
        return value


class Company(_Canonical):
    name: str | None = None
    domain: str | None = None


class Deal(_Canonical):
    title: str | None = None
    amount: str | None = None
    stage: str | None = None

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, value: Any) -> Any:
        if value is None:
            return value
        try:
            return str(Decimal(str(value)))
        except ArithmeticError as e:
            raise ValueError(f"not an amount: {value!r}") from e


MODELS: Final[dict[str, type[_Canonical]]] = {"contact": Contact, "company": Company, "deal": Deal}


def to_scalar(value: Any) -> Scalar:
    """A database value as a wire scalar (dates as ISO text, decimals as exact text)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRecord("not a finite number (NaN or infinity)")
    if isinstance(value, int) and not isinstance(value, bool) and not INT_MIN <= value <= INT_MAX:
        raise InvalidRecord("integer outside the signed 64-bit range")
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        raise InvalidRecord("binary values are not exchanged")
    return str(value)


def validate(entity: str, fields: dict[str, Any]) -> dict[str, Scalar]:
    """Canonical values for ``fields``, or :class:`InvalidRecord` saying which field is wrong."""
    values: dict[str, Scalar] = {}
    for name, value in fields.items():
        try:
            values[name] = to_scalar(value)
        except InvalidRecord as e:
            raise InvalidRecord(f"{name}: {e}") from None
    model = MODELS.get(entity)
    if model is None:
        return values
    try:
        checked = model.model_validate(values)
    except ValidationError as e:
        first = e.errors()[0]
        raise InvalidRecord(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    dumped = checked.model_dump()
    return {name: dumped.get(name, values[name]) for name in values}
