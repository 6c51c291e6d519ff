"""Cleansing through the canonical models (adapters/cleansing.py, adapters/canonical.py).

One spelling per value whichever CRM it came from, the same on capture and on the
read-back of a delivery; idempotent, so a written delivery's echo hashes the same; and
reasons that say which field is wrong and how, never the customer's value.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.canonical import Cleansing, InvalidRecord, validate
from adapters.cleansing import DEFAULT
from adapters.rules import content_hash
from router.adapter_config import CanonicalConfig

DE = Cleansing(default_country="DE")
KEEP_EMPTY = Cleansing(empty_as_null=False)


def reason(entity: str, fields: dict[str, Any], cleansing: Cleansing = DEFAULT) -> str:
    with pytest.raises(InvalidRecord) as caught:
        validate(entity, fields, cleansing)
    return str(caught.value)


# -- strings, emails, empties -------------------------------------------------------------


def test_every_string_is_trimmed_whatever_the_entity() -> None:
    assert validate("contact", {"first_name": "  Ada ", "tier": "\tgold\n"}) == {
        "first_name": "Ada",
        "tier": "gold",
    }
    assert validate("ticket", {"subject": " hello "}) == {"subject": "hello"}


def test_email_is_trimmed_lower_cased_and_still_checked() -> None:
    assert validate("contact", {"email": "  Ada.Lovelace@Example.COM "}) == {
        "email": "ada.lovelace@example.com"
    }
    assert reason("contact", {"email": "Ada@@Example.com"}) == "email: not an email address"


@pytest.mark.parametrize("entity", ["contact", "company", "deal", "ticket"])
def test_empty_and_blank_strings_become_null_by_default(entity: str) -> None:
    out = validate(entity, {"a": "", "b": "   ", "c": "x"})
    assert out == {"a": None, "b": None, "c": "x"}


def test_empty_as_null_off_keeps_empty_strings_trimmed() -> None:
    out = validate("contact", {"first_name": "  ", "phone": ""}, KEEP_EMPTY)
    assert out == {"first_name": "", "phone": ""}
    # An empty email is still not an email address when empties are kept.
    assert reason("contact", {"email": ""}, KEEP_EMPTY) == "email: not an email address"


def test_an_empty_email_is_null_not_invalid_by_default() -> None:
    assert validate("contact", {"email": "  "}) == {"email": None}


# -- phones ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "e164"),
    [
        ("030 12345678", "+493012345678"),
        ("(030) 901820", "+4930901820"),
        ("0151 23456789", "+4915123456789"),
        ("+44 20 7946 0000", "+442079460000"),  # +country: read as its own country's
        ("+1 (202) 555-0143", "+12025550143"),
        ("+493012345678", "+493012345678"),
    ],
)
def test_phones_become_e164_where_a_default_country_is_configured(written: str, e164: str) -> None:
    assert validate("contact", {"phone": f" {written} "}, DE) == {"phone": e164}


@pytest.mark.parametrize("bad", ["12", "not a phone", "030", "0000000000000000000"])
def test_a_number_not_valid_in_the_region_is_invalid_and_the_reason_hides_it(bad: str) -> None:
    message = reason("contact", {"phone": bad, "email": "ann@example.com"}, DE)
    assert message == "phone: not a valid phone number for region DE"


@pytest.mark.parametrize("bad", ["+999 1", "+49 1", "+"])
def test_an_invalid_international_number_is_invalid_whatever_the_region(bad: str) -> None:
    assert reason("contact", {"phone": bad}, DE) == "phone: not a valid phone number in E.164 form"


def test_without_a_default_country_phones_are_only_trimmed() -> None:
    # As before cleansing existed: no country says how to read "030 ...".
    out = validate("contact", {"phone": " 030 12345678 ", "fax": "+1-555-0000000"})
    assert out == {"phone": "030 12345678", "fax": "+1-555-0000000"}


def test_a_null_phone_stays_null() -> None:
    assert validate("contact", {"phone": None}, DE) == {"phone": None}


def test_the_default_country_must_be_a_region_phones_know() -> None:
    with pytest.raises(ValueError, match="ISO 3166"):
        Cleansing(default_country="XX")
    assert Cleansing.from_config(CanonicalConfig(default_country="US")) == Cleansing("US", True)


# -- stamps, dates, amounts -----------------------------------------------------------------


def test_stamps_become_utc_iso_text_naive_ones_taken_as_utc() -> None:
    berlin = timezone(timedelta(hours=2))
    out = validate(
        "contact",
        {
            "aware": datetime(2024, 5, 1, 14, 30, tzinfo=berlin),
            "naive": datetime(2024, 5, 1, 12, 30, 0, 5),
            "utc": datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
            "day": date(1815, 12, 10),
        },
    )
    assert out == {
        "aware": "2024-05-01T12:30:00+00:00",
        "naive": "2024-05-01T12:30:00.000005+00:00",
        "utc": "2024-05-01T12:30:00+00:00",
        "day": "1815-12-10",
    }


@pytest.mark.parametrize(
    ("entity", "fields", "expected"),
    [
        ("deal", {"amount": "lots of money"}, "amount: not an amount"),
        ("deal", {"amount": "NaN"}, "amount: not a finite amount"),
        ("contact", {"email": "x@@secret.example"}, "email: not an email address"),
        ("contact", {"first_name": 12345}, "first_name: Input should be a valid string"),
    ],
)
def test_reasons_name_the_field_and_never_the_value(
    entity: str, fields: dict[str, Any], expected: str
) -> None:
    message = reason(entity, fields)
    assert message == expected
    for value in fields.values():
        assert str(value) not in message


# -- idempotence and echo safety -------------------------------------------------------------

_REGIONS = ["DE", "US", "GB", "FR"]
_CLEANSINGS = st.builds(Cleansing, st.sampled_from([None, *_REGIONS]), st.booleans())


@st.composite
def _phone(draw: st.DrawFn) -> str:
    region = draw(st.sampled_from(_REGIONS))
    number = phonenumbers.example_number(region)
    assert number is not None
    style = draw(
        st.sampled_from(
            [
                phonenumbers.PhoneNumberFormat.E164,
                phonenumbers.PhoneNumberFormat.INTERNATIONAL,
                phonenumbers.PhoneNumberFormat.NATIONAL,
            ]
        )
    )
    pad = draw(st.sampled_from(["", " ", "\t", "  "]))
    return pad + phonenumbers.format_number(number, style) + pad


_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
_EMAILS = st.builds(
    lambda pad, user, host: f"{pad}{user}@{host}.Example.COM{pad}",
    st.sampled_from(["", " ", "\n"]),
    st.from_regex(r"[A-Za-z0-9._+-]{1,8}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9-]{1,8}", fullmatch=True),
)
_VALUES = st.one_of(
    st.none(),
    _TEXT,
    st.sampled_from(["", "  ", " x "]),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.datetimes(timezones=st.one_of(st.none(), st.timezones())),
    st.dates(),
    st.decimals(allow_nan=False, allow_infinity=False, places=2),
)
_ROWS = st.tuples(
    st.sampled_from(["contact", "company", "deal", "ticket"]),
    st.fixed_dictionaries(
        {},
        optional={
            "email": st.one_of(st.none(), _EMAILS, _TEXT),
            "phone": st.one_of(st.none(), _phone(), _TEXT),
            "first_name": st.one_of(st.none(), _TEXT),
            "amount": st.one_of(st.none(), st.decimals(allow_nan=False, places=2), _TEXT),
            "notes": _VALUES,
            "when": _VALUES,
        },
    ),
)


def _clean_or_none(entity: str, fields: dict[str, Any], cleansing: Cleansing) -> Any:
    try:
        return validate(entity, fields, cleansing)
    except InvalidRecord:
        return None


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(_ROWS, _CLEANSINGS)
def test_cleansing_is_idempotent(row: tuple[str, dict[str, Any]], cleansing: Cleansing) -> None:
    entity, fields = row
    once = _clean_or_none(entity, fields, cleansing)
    if once is None:
        return  # refused: nothing is published or recorded, so nothing to re-cleanse
    assert validate(entity, once, cleansing) == once


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(_ROWS, _CLEANSINGS)
def test_a_cleansed_row_hashes_as_its_read_back_does(
    row: tuple[str, dict[str, Any]], cleansing: Cleansing
) -> None:
    # A delivery carries cleansed values; written into a CRM and read back it is
    # validated again: the echo must hash as the version the link recorded.
    entity, fields = row
    once = _clean_or_none(entity, fields, cleansing)
    if once is None:
        return
    again = validate(entity, once, cleansing)
    assert content_hash(again, False) == content_hash(once, False)


def test_examples_of_each_region_are_valid_and_fixed_points() -> None:
    # The property tests draw these: make sure they exercise the E.164 path.
    for region in _REGIONS:
        number = phonenumbers.example_number(region)
        assert number is not None
        national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
        e164 = validate("contact", {"phone": national}, Cleansing(region))["phone"]
        assert isinstance(e164, str) and e164.startswith("+")
        assert validate("contact", {"phone": e164}, Cleansing(region))["phone"] == e164
        assert validate("contact", {"phone": e164}, DE)["phone"] == e164
