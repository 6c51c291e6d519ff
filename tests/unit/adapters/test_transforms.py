"""Mapping transforms (adapters.transforms) and their TOML model (router.transform_config)."""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.transforms import TransformError, Transforms
from router.errors import ConfigError, CrmsyncError
from router.transform_config import parse_transforms


def compile_(toml: str, entity: str = "contact") -> Transforms:
    config = parse_transforms(tomllib.loads(toml), "adapter.toml")
    return Transforms(config.entities[entity])


def refused(toml: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_transforms(tomllib.loads(toml), "adapter.toml")
    message = str(info.value)
    assert "\n" not in message
    return message


def transform_error(fn: Any, arg: Any, secret: str) -> TransformError:
    with pytest.raises(TransformError) as info:
        fn(arg)
    err = info.value
    assert isinstance(err, CrmsyncError)
    assert secret not in str(err) and secret not in err.reason
    return err


STAGES = """
[entities.deal.transforms.stage]
column = "sales_stage"
map = { "Prospecting" = "new", "Closed Won" = "won", "Closed Lost" = "lost" }
"""

# ---- rename, passthrough, direction ----


def test_rename_both_ways_and_unlisted_fields_pass_through() -> None:
    t = compile_('[entities.contact.transforms.email]\ncolumn = "email1"\n')
    assert t.read({"email1": "a@b.de", "title": "Dr"}) == {"email": "a@b.de", "title": "Dr"}
    assert t.write({"email": "a@b.de", "title": "Dr"}) == {"email1": "a@b.de", "title": "Dr"}


def test_read_only_field_is_not_written_and_write_only_is_not_read() -> None:
    t = compile_(
        """
[entities.contact.transforms.created]
column = "date_entered"
direction = "read"
[entities.contact.transforms.owner]
direction = "write"
"""
    )
    assert t.read({"date_entered": "x", "owner": "u1"}) == {"created": "x"}
    assert t.write({"created": "x", "owner": "u1"}) == {"owner": "u1"}


def test_trim_and_lower_on_read() -> None:
    t = compile_("[entities.contact.transforms.email]\ntrim = true\nlower = true\n")
    assert t.read({"email": "  Ada@Example.COM "}) == {"email": "ada@example.com"}
    assert t.write({"email": "ada@example.com"}) == {"email": "ada@example.com"}


# ---- value maps ----


def test_value_map_both_ways() -> None:
    t = compile_(STAGES, "deal")
    assert t.read({"sales_stage": "Closed Won"}) == {"stage": "won"}
    assert t.write({"stage": "lost"}) == {"sales_stage": "Closed Lost"}
    assert t.read({"sales_stage": None}) == {"stage": None}


def test_value_map_defaults_for_unmapped_values() -> None:
    t = compile_(STAGES + 'map_default = "other"\nmap_write_default = "Prospecting"\n', "deal")
    assert t.read({"sales_stage": "Negotiation/Review"}) == {"stage": "other"}
    assert t.write({"stage": "unheard-of"}) == {"sales_stage": "Prospecting"}


def test_unmapped_value_without_default_is_a_transform_error() -> None:
    t = compile_(STAGES, "deal")
    err = transform_error(t.read, {"sales_stage": "Secret Stage"}, "Secret Stage")
    assert err.field == "stage" and "map_default" in err.reason
    err = transform_error(t.write, {"stage": "secret-stage"}, "secret-stage")
    assert "map_write_default" in err.reason
    err = transform_error(t.read, {"sales_stage": 4711}, "4711")
    assert "not text" in err.reason


# ---- names ----


NAMES = "[entities.contact.names]\n"


@pytest.mark.parametrize(
    ("full", "first", "last"),
    [
        ("Ada Lovelace", "Ada", "Lovelace"),
        ("  Mary  Ann   Evans ", "Mary Ann", "Evans"),
        ("Cher", "Cher", None),
        ("   ", None, None),
        (None, None, None),
    ],
)
def test_split_rule(full: str | None, first: str | None, last: str | None) -> None:
    t = compile_(NAMES)
    assert t.read({"name": full, "email": "a@b.de"}) == {
        "first_name": first,
        "last_name": last,
        "email": "a@b.de",
    }


def test_join_skips_empties_and_custom_columns() -> None:
    t = compile_('[entities.contact.names]\ncolumn = "full"\nfirst = "given"\nlast = "family"\n')
    assert t.write({"given": "Ada", "family": "Lovelace"}) == {"full": "Ada Lovelace"}
    assert t.write({"given": None, "family": "Lovelace"}) == {"full": "Lovelace"}
    assert t.write({"given": "", "family": None}) == {"full": None}
    assert t.write({"email": "a@b.de"}) == {"email": "a@b.de"}  # neither half: untouched


def test_join_with_one_half_missing_is_refused_not_guessed() -> None:
    t = compile_(NAMES)
    err = transform_error(t.write, {"first_name": "Zebediah"}, "Zebediah")
    assert err.field == "name" and "last_name" in err.reason
    err = transform_error(t.read, {"name": 12}, "12")
    assert err.reason == "not text"
    transform_error(t.write, {"first_name": 7, "last_name": "Secretson"}, "Secretson")


# ---- type conversions ----


def hubspot(type_: str, extra: str = "") -> Transforms:
    return compile_(f'[entities.contact.transforms.x]\ntype = "{type_}"\nas_string = true\n{extra}')


def test_bool_from_and_to_strings() -> None:
    t = hubspot("bool")
    assert t.read({"x": "true"}) == {"x": True}
    assert t.read({"x": "FALSE"}) == {"x": False}
    assert t.read({"x": ""}) == {"x": None}
    assert t.write({"x": True}) == {"x": "true"}
    native = compile_('[entities.contact.transforms.x]\ntype = "bool"\n')
    assert native.read({"x": 1}) == {"x": True}
    assert native.write({"x": False}) == {"x": False}


def test_numbers_from_and_to_strings() -> None:
    assert hubspot("number").read({"x": "12.50"}) == {"x": 12.5}
    assert hubspot("number").write({"x": 12.5}) == {"x": "12.5"}
    assert hubspot("integer").read({"x": " 42 "}) == {"x": 42}
    assert hubspot("integer").write({"x": 42}) == {"x": "42"}
    assert hubspot("decimal").read({"x": "12.50"}) == {"x": "12.50"}
    assert hubspot("decimal").write({"x": "12.50"}) == {"x": "12.50"}
    native = compile_('[entities.contact.transforms.x]\ntype = "decimal"\n')
    assert native.read({"x": Decimal("3.10")}) == {"x": "3.10"}
    assert native.write({"x": "3.10"}) == {"x": Decimal("3.10")}


def test_dates_iso_and_epoch_ms() -> None:
    assert hubspot("date").read({"x": "2026-03-01"}) == {"x": "2026-03-01"}
    epoch = hubspot("date", 'format = "epoch_ms"')
    assert epoch.read({"x": "1772323200000"}) == {"x": "2026-03-01"}
    assert epoch.write({"x": "2026-03-01"}) == {"x": "1772323200000"}
    native = compile_('[entities.contact.transforms.x]\ntype = "date"\n')
    assert native.read({"x": date(2026, 3, 1)}) == {"x": "2026-03-01"}
    assert native.write({"x": "2026-03-01"}) == {"x": date(2026, 3, 1)}


def test_datetimes_epoch_ms_and_iso_with_or_without_offset() -> None:
    t = hubspot("datetime", 'format = "epoch_ms"')
    assert t.read({"x": "1772323200123"}) == {"x": "2026-03-01T00:00:00.123000+00:00"}
    assert t.write({"x": "2026-03-01T00:00:00.123+00:00"}) == {"x": "1772323200123"}
    # HubSpot sends ISO text for some properties: read either, whatever format says.
    assert t.read({"x": "2026-03-01T01:00:00+01:00"}) == {"x": "2026-03-01T00:00:00+00:00"}
    assert hubspot("datetime").read({"x": "2026-03-01T00:00:00"}) == {
        "x": "2026-03-01T00:00:00+00:00"
    }
    native = compile_('[entities.contact.transforms.x]\ntype = "datetime"\n')
    assert native.write({"x": "2026-03-01T01:00:00+01:00"}) == {"x": datetime(2026, 3, 1)}
    assert native.read({"x": datetime(2026, 3, 1)}) == {"x": "2026-03-01T00:00:00+00:00"}
    seconds = hubspot("datetime", 'format = "epoch_s"')
    assert seconds.write({"x": "1970-01-01T00:01:00+00:00"}) == {"x": "60"}
    assert seconds.read({"x": "60"}) == {"x": "1970-01-01T00:01:00+00:00"}


def test_naive_timestamps_in_a_time_zone() -> None:
    t = compile_('[entities.contact.transforms.x]\ntype = "datetime"\ntz = "Europe/Berlin"\n')
    summer = datetime(2026, 7, 1, 14, 0)  # CEST, UTC+2
    assert t.read({"x": summer}) == {"x": "2026-07-01T12:00:00+00:00"}
    assert t.write({"x": "2026-07-01T12:00:00+00:00"}) == {"x": summer}
    winter = hubspot("datetime", 'tz = "Europe/Berlin"')
    assert winter.read({"x": "2026-01-05 09:30:00"}) == {"x": "2026-01-05T08:30:00+00:00"}
    assert winter.write({"x": "2026-01-05T08:30:00+00:00"}) == {"x": "2026-01-05T09:30:00"}


@pytest.mark.parametrize(
    ("type_", "bad", "reason"),
    [
        ("bool", "maybe-7731", "not a boolean"),
        ("integer", "12.5731", "not an integer"),
        ("integer", True, "not an integer"),
        ("number", "twelve-7731", "not a number"),
        ("number", "NaN", "not a finite number"),
        ("number", "1e999999", "floating-point range"),
        ("decimal", [7731], "not a number"),
        ("date", "01.03.2026-7731", "not an ISO date"),
        ("date", datetime(2026, 3, 1, 7, 31), "a date-time where a date"),
        ("datetime", "yesterday-7731", "not an ISO date-time or epoch"),
        ("datetime", 7731.5, "not a date-time"),
        ("datetime", "9" * 30, "out of range"),
    ],
)
def test_bad_values_on_read(type_: str, bad: Any, reason: str) -> None:
    t = hubspot(type_)
    err = transform_error(t.read, {"x": bad}, "7731")
    assert err.field == "x" and reason in err.reason


@pytest.mark.parametrize(
    ("type_", "bad", "reason"),
    [
        ("bool", "maybe-7731", "not a boolean"),
        ("integer", "7731.5", "not an integer"),
        ("date", "7731-xx", "not an ISO date"),
        ("datetime", "7731-xx", "not an ISO date-time"),
    ],
)
def test_bad_values_on_write(type_: str, bad: Any, reason: str) -> None:
    err = transform_error(hubspot(type_).write, {"x": bad}, "7731")
    assert err.field == "x" and reason in err.reason


# ---- defaults and constants on write ----


def test_write_defaults_and_constants() -> None:
    t = compile_(
        """
[entities.contact.transforms.lead_source]
default = "crmsync"
[entities.contact.constants]
bean_module = "Contacts"
deleted = 0
"""
    )
    assert t.write({"email": "a@b.de"}) == {
        "email": "a@b.de",
        "lead_source": "crmsync",
        "bean_module": "Contacts",
        "deleted": 0,
    }
    assert t.write({"lead_source": None})["lead_source"] == "crmsync"
    assert t.write({"lead_source": "web"})["lead_source"] == "web"
    # Constants are the CRM's bookkeeping, not canonical data.
    assert t.read({"bean_module": "Contacts", "deleted": 0, "email": "a@b.de"}) == {
        "email": "a@b.de"
    }


# ---- config errors: one line naming the key ----

X = "[entities.contact.transforms.x]\n"
KX = "entities.contact.transforms.x"


@pytest.mark.parametrize(
    ("toml", "key", "why"),
    [
        (
            X + "colum = 'a'\n",
            KX + ".colum",
            "unknown key",
        ),
        (
            "[entities.deal.transforms.stage]\nmap = { 'Won' = 'won', 'Closed Won' = 'won' }\n",
            "entities.deal.transforms.stage.map",
            "not reversible",
        ),
        (
            X + "map_default = 'a'\n",
            KX,
            "need a map",
        ),
        (
            X + "map = { a = 'b' }\ntype = 'bool'\n",
            KX,
            "either a map or a type",
        ),
        (
            X + "type = 'money'\n",
            KX + ".type",
            "'bool'",
        ),
        (
            X + "type = 'datetime'\ntz = 'Mars/Olympus'\n",
            KX + ".tz",
            "IANA",
        ),
        (
            X + "tz = 'Europe/Berlin'\n",
            KX,
            "tz needs",
        ),
        (
            X + "format = 'epoch_ms'\n",
            KX,
            "format needs",
        ),
        (
            X + "direction = 'read'\ndefault = 1\n",
            KX,
            "read-only",
        ),
        (
            "[entities.contact.transforms.a]\ncolumn = 'c'\n"
            "[entities.contact.transforms.b]\ncolumn = 'c'\n",
            "entities.contact",
            "'c' is used by transforms.a and transforms.b",
        ),
        (
            "[entities.contact.names]\n[entities.contact.constants]\nname = 'x'\n",
            "entities.contact",
            "'name' is used by names and constants.name",
        ),
        (
            "[entities.contact.names]\n[entities.contact.transforms.first_name]\ntrim = true\n",
            "entities.contact",
            "both produce field 'first_name'",
        ),
        (
            "[entities.contact.names]\nfirst = 'n'\nlast = 'n'\n",
            "entities.contact.names",
            "different",
        ),
        ("[entities.contact.transforms.Bad-Name]\n", "entities.contact.transforms.Bad-Name", ""),
    ],
)
def test_config_errors_name_the_key(toml: str, key: str, why: str) -> None:
    message = refused(toml)
    assert message.startswith("adapter.toml: ")
    assert f"'{key}" in message
    assert why in message


# ---- round trips: read(write(x)) == x for the reversible transforms ----

_WORD = st.text(st.characters(categories=["L"]), min_size=1, max_size=8)
_STAMPS = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


def roundtrip(t: Transforms, record: dict[str, Any]) -> None:
    assert t.read(t.write(record)) == record


@given(st.sampled_from(["new", "won", "lost"]))
def test_roundtrip_value_map(stage: str) -> None:
    roundtrip(compile_(STAGES, "deal"), {"stage": stage})


@given(_WORD, st.one_of(st.none(), _WORD), st.lists(_WORD, max_size=2))
def test_roundtrip_names(first: str, last: str | None, more: list[str]) -> None:
    # Reversible when the last name is one word (the documented rule).
    given_names = " ".join([first, *more]) if last is not None else first
    roundtrip(compile_(NAMES), {"first_name": given_names, "last_name": last})


@given(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)
def test_roundtrip_scalars_as_strings(flag: bool, whole: int, real: float) -> None:
    roundtrip(hubspot("bool"), {"x": flag})
    roundtrip(hubspot("integer"), {"x": whole})
    roundtrip(hubspot("number"), {"x": real})


@given(st.decimals(allow_nan=False, allow_infinity=False), st.booleans())
def test_roundtrip_decimal(number: Decimal, as_string: bool) -> None:
    t = compile_(f'{X}type = "decimal"\nas_string = {str(as_string).lower()}\n')
    roundtrip(t, {"x": str(number)})


@given(st.dates(), st.sampled_from(["iso", "epoch_ms", "epoch_s"]), st.booleans())
def test_roundtrip_dates(day: date, fmt: str, as_string: bool) -> None:
    t = compile_(
        f'[entities.contact.transforms.x]\ntype = "date"\nformat = "{fmt}"\n'
        f"as_string = {str(as_string).lower()}\n"
    )
    roundtrip(t, {"x": day.isoformat()})


@given(_STAMPS, st.sampled_from(["iso", "epoch_ms"]), st.booleans())
def test_roundtrip_datetimes_utc(stamp: datetime, fmt: str, as_string: bool) -> None:
    if fmt == "epoch_ms":  # epoch milliseconds carry no microseconds
        stamp = stamp.replace(microsecond=stamp.microsecond // 1000 * 1000)
    t = compile_(
        f'[entities.contact.transforms.x]\ntype = "datetime"\nformat = "{fmt}"\n'
        f"as_string = {str(as_string).lower()}\n"
    )
    roundtrip(t, {"x": stamp.isoformat()})


@given(
    _STAMPS, st.sampled_from(["Europe/Berlin", "America/New_York", "Asia/Kolkata"]), st.booleans()
)
def test_roundtrip_naive_local_time(stamp: datetime, zone: str, as_string: bool) -> None:
    local = stamp.astimezone(ZoneInfo(zone))
    # In a fall-back hour one naive local time names two instants: read takes the
    # earlier one (documented), so only the other instants are reversible.
    if local.fold or _ambiguous(local.replace(tzinfo=None), ZoneInfo(zone)):
        return
    t = compile_(
        f'[entities.contact.transforms.x]\ntype = "datetime"\ntz = "{zone}"\n'
        f"as_string = {str(as_string).lower()}\n"
    )
    roundtrip(t, {"x": stamp.isoformat()})


def _ambiguous(naive: datetime, zone: ZoneInfo) -> bool:
    return (
        naive.replace(tzinfo=zone, fold=0).utcoffset()
        != naive.replace(tzinfo=zone, fold=1).utcoffset()
    )


def test_a_fall_back_hour_reads_as_the_earlier_instant() -> None:
    t = compile_('[entities.contact.transforms.x]\ntype = "datetime"\ntz = "Europe/Berlin"\n')
    later = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 02:30 CET, the second 02:30
    written = t.write({"x": later.isoformat()})["x"]
    assert written == datetime(2026, 10, 25, 2, 30)
    assert t.read({"x": written}) == {"x": (later - timedelta(hours=1)).isoformat()}


def test_the_documented_examples_are_valid() -> None:
    doc = (Path(__file__).parents[3] / "docs" / "transforms.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", doc, re.S)
    assert len(blocks) == 3
    for block in blocks:
        config = parse_transforms(tomllib.loads(block), "docs/transforms.md")
        for entity in config.entities.values():
            Transforms(entity)
    odoo = compile_(blocks[2])
    assert odoo.read({"name": "Ada King Lovelace", "type": "contact"}) == {
        "first_name": "Ada King",
        "last_name": "Lovelace",
    }
    hub = compile_(blocks[1])
    assert hub.write({"score": 12.5, "email_optout": False}) == {
        "hubspotscore": "12.5",
        "hs_email_optout": "false",
    }
    suite = compile_(blocks[0], "deal")
    assert suite.read({"sales_stage": "Needs Analysis", "amount": 99.5}) == {
        "stage": "other",
        "amount": "99.5",
    }
