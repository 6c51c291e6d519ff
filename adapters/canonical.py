"""Canonical entity models: the values every CRM agrees to exchange.

Every source row is validated *and cleansed* here, on capture and on the read-back of a
delivery alike (:mod:`adapters.cleansing`): strings trimmed, emails lower-cased, phones
in E.164 where a default country is configured, stamps as UTC text, empty strings as
null. A row that does not validate is reported (logged, counted) and not published; it
is never silently dropped. Entities not listed here get the type-level rules only
(scalars, trimmed strings, UTC stamps). Reasons name the field and what is wrong, never
the value: they go into logs and reports.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from adapters import cleansing as clean
from adapters.cleansing import DEFAULT, Cleansing
from router.events import INT_MAX, INT_MIN, Scalar

__all__ = ["MODELS", "Cleansing", "InvalidRecord", "to_scalar", "validate"]


class InvalidRecord(ValueError):
    """A source row whose mapped values break the canonical model."""


class _Canonical(BaseModel):
    # Sources map a subset of fields, and customers add their own: allow extra scalars.
    model_config = ConfigDict(extra="allow")


def _cleansing(info: ValidationInfo) -> Cleansing:
    context = info.context
    return context["cleansing"] if isinstance(context, dict) else DEFAULT


class Contact(_Canonical):
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        return None if value is None else clean.email(value)

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else clean.phone(value, _cleansing(info))


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
            amount = Decimal(str(value))
        except ArithmeticError:
            raise ValueError("not an amount") from None
        if not amount.is_finite():
            raise ValueError("not a finite amount")
        return str(amount)


MODELS: Final[dict[str, type[_Canonical]]] = {"contact": Contact, "company": Company, "deal": Deal}


def to_scalar(value: Any) -> Scalar:
    """A database value as a wire scalar (stamps as UTC ISO text, dates as ISO text,
    decimals as exact text)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRecord("not a finite number (NaN or infinity)")
    if isinstance(value, int) and not isinstance(value, bool) and not INT_MIN <= value <= INT_MAX:
        raise InvalidRecord("integer outside the signed 64-bit range")
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, datetime):
        return clean.utc_text(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        raise InvalidRecord("binary values are not exchanged")
    return str(value)


def validate(
    entity: str, fields: dict[str, Any], cleansing: Cleansing = DEFAULT
) -> dict[str, Scalar]:
    """Cleansed canonical values for ``fields``, or :class:`InvalidRecord` saying which
    field is wrong (never its value). Idempotent: validating the result gives it back."""
    values: dict[str, Scalar] = {}
    for name, value in fields.items():
        try:
            scalar = to_scalar(value)
        except InvalidRecord as e:
            raise InvalidRecord(f"{name}: {e}") from None
        values[name] = clean.text(scalar, cleansing) if isinstance(scalar, str) else scalar
    model = MODELS.get(entity)
    if model is None:
        return values
    try:
        checked = model.model_validate(values, context={"cleansing": cleansing})
    except ValidationError as e:
        raise InvalidRecord(_reason(e)) from None
    dumped = checked.model_dump()
    return {name: dumped.get(name, values[name]) for name in values}


def _reason(err: ValidationError) -> str:
    """The first error as ``field: what is wrong``. A validator's own message is ours
    and value-free; pydantic's messages for its types do not quote the input either."""
    first = err.errors()[0]
    where = ".".join(map(str, first["loc"]))
    cause = first.get("ctx", {}).get("error")
    return f"{where}: {cause if isinstance(cause, ValueError) else first['msg']}"
