"""Cleansing rules: one spelling for each canonical value, whichever CRM it came from.

Every function is pure and idempotent (``f(f(x)) == f(x)``): a delivery written into a
CRM is read back and cleansed again before its hash is recorded, so the cleansed form
must be a fixed point or the echo would look like a new edit. Errors are
:class:`ValueError` saying what is wrong, never quoting the value: reasons go into logs
and migration reports, and values are customers' data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import phonenumbers

from router.adapter_config import CanonicalConfig

_EMAIL_RE: Final = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class Cleansing:
    """How one adapter cleanses its rows (``[canonical]`` in its config)."""

    # ISO 3166 alpha-2 region a phone number without ``+country`` is read in; None:
    # such numbers are only trimmed (nothing says which country they are in).
    default_country: str | None = None
    # "" and whitespace-only strings become null.
    empty_as_null: bool = True

    def __post_init__(self) -> None:
        if self.default_country is not None and (
            self.default_country not in phonenumbers.SUPPORTED_REGIONS
        ):
            raise ValueError("default_country is not an ISO 3166 alpha-2 region phones know")

    @classmethod
    def from_config(cls, config: CanonicalConfig) -> Cleansing:
        return cls(default_country=config.default_country, empty_as_null=config.empty_as_null)


DEFAULT: Final = Cleansing()


def text(value: str, cleansing: Cleansing) -> str | None:
    """Trimmed; null when nothing is left and the configuration says so."""
    value = value.strip()
    return None if cleansing.empty_as_null and not value else value


def utc_text(value: datetime) -> str:
    """ISO text in UTC; a naive stamp is taken as UTC already (what the stores hold)."""
    stamp = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return stamp.isoformat()


def email(value: str) -> str:
    """Trimmed and lower-cased: CRMs match and deduplicate on it, whatever the casing."""
    value = value.strip().lower()
    if not _EMAIL_RE.match(value):
        raise ValueError("not an email address")
    return value


def phone(value: str, cleansing: Cleansing) -> str:
    """E.164 (``+4930123456``) where a default country is configured (a number in
    ``+country`` form is read as its own country's); otherwise only trimmed, as before
    cleansing existed, so an adapter that configures nothing keeps its numbers as written."""
    value = value.strip()
    region = cleansing.default_country
    if not value or region is None:
        return value
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_valid_number(number):
        where = "in E.164 form" if value.startswith("+") else f"for region {region}"
        raise ValueError(f"not a valid phone number {where}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
