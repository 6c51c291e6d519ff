"""adapters/mapping.py RecordMapping: an entity mapping applied to property dicts, the
way HTTP, file and plugin adapters hold records."""

from __future__ import annotations

import pytest

from adapters.canonical import InvalidRecord, validate
from adapters.mapping import RecordMapping
from router.adapter_config import EntityMapping
from router.errors import PermanentWriteError


def _mapping(**extra: object) -> RecordMapping:
    raw: dict[str, object] = {"object": "people", "fields": {"email": "mail", "phone": "tel"}}
    raw.update(extra)
    return RecordMapping("contact", EntityMapping.model_validate(raw))


def test_plain_renames_both_ways_and_only_mapped_properties_are_asked_for() -> None:
    m = _mapping()
    assert m.properties == ["mail", "tel"]
    assert m.field_names == ["email", "phone"]
    assert m.read({"mail": "a@example.com", "tel": None, "other": "x"}) == {
        "email": "a@example.com",
        "phone": None,
    }
    assert m.write({"email": "b@example.com"}) == {"mail": "b@example.com"}


def test_transforms_names_and_constants_apply_beside_the_renames() -> None:
    m = _mapping(
        transforms={"email": {"column": "mail", "lower": True, "trim": True}},
        names={"column": "full_name"},
        constants={"source": "crmsync"},
    )
    assert m.properties == ["full_name", "mail", "tel"]
    assert set(m.field_names) == {"email", "phone", "first_name", "last_name"}
    read = m.read({"mail": "  Ada@Example.COM ", "tel": "+1", "full_name": "Ada King Lovelace"})
    assert read == {
        "email": "ada@example.com",
        "phone": "+1",
        "first_name": "Ada King",
        "last_name": "Lovelace",
    }
    written = m.write({"email": "ada@example.com", "first_name": "Ada", "last_name": "L"})
    assert written == {"mail": "ada@example.com", "full_name": "Ada L", "source": "crmsync"}


def test_a_value_a_transform_refuses_is_one_records_error_naming_the_field_not_the_value() -> None:
    m = _mapping(transforms={"phone": {"column": "tel", "type": "integer"}})
    fields = m.read({"mail": "a@example.com", "tel": "not-a-number"})
    with pytest.raises(InvalidRecord) as info:
        validate("contact", fields)
    assert "phone" in str(info.value) and "not-a-number" not in str(info.value)
    assert str(info.value).count("phone") == 1  # named once, not "phone: phone: ..."
    with pytest.raises(PermanentWriteError, match="phone"):
        m.write({"first_name": "Ada", "phone": "twelve"})
