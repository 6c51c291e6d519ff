"""The wire contract (router/events.py): ChangeEvent, encode/decode, DecodeError reasons."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from router.clock import VectorClock
from router.errors import DecodeError
from router.events import CONTENT_TYPE, ChangeEvent, Scalar, decode, encode, encode_dict
from tests.factories import make_event, new_id, wire_event

WHEN = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def sample_event(**overrides: Any) -> ChangeEvent:
    """This file's sample: a clock of two actors, a None field, a time in microseconds."""
    values: dict[str, Any] = {
        "actor": "sales",
        "clock": {"sales": 3, "legacy": 1},
        "fields": {"email": "ada@example.com", "first_name": "Ada", "phone": None},
        "record_id": new_id(),
        "source_record_id": "42",
        "changed": ["email"],
        "occurred_at": WHEN,
    }
    return make_event(**{**values, **overrides})


def valid_payload() -> dict[str, Any]:
    return sample_event().model_dump()


def pack(payload: object) -> bytes:
    packed: bytes = msgpack.packb(payload, datetime=True, use_bin_type=True)
    return packed


def assert_refused(raw: bytes, reason: str) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode(raw)
    err = info.value
    assert err.reason == reason, str(err)
    assert err.raw == raw
    assert str(err).startswith(f"{reason}: ")
    return err


# -- round trip ----------------------------------------------------------------------------


def test_round_trip_equals_original() -> None:
    event = sample_event()
    raw = encode(event)
    assert isinstance(raw, bytes)
    back = decode(raw)
    assert back == event
    assert back.occurred_at == WHEN
    assert back.occurred_at.utcoffset() == timedelta(0)


def test_round_trip_of_delete_and_hub_event() -> None:
    delete = sample_event(op="delete", fields={}, changed=[], origin="replay")
    assert decode(encode(delete)) == delete
    hub = sample_event(source="hub", actor="hub@2", clock={"hub@2": 1, "sales": 3})
    assert decode(encode(hub)) == hub


def test_body_is_a_msgpack_map() -> None:
    event = sample_event()
    payload = msgpack.unpackb(encode(event), raw=False, timestamp=3)
    assert isinstance(payload, dict)
    assert payload["event_id"] == event.event_id
    assert payload["v"] == 1
    assert CONTENT_TYPE == "application/msgpack"


def test_round_trip_of_non_utc_timestamp_keeps_the_instant() -> None:
    local = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    back = decode(encode(sample_event(occurred_at=local)))
    assert back.occurred_at == local
    assert back.occurred_at.utcoffset() is not None


scalars: st.SearchStrategy[Scalar] = st.one_of(
    st.text(max_size=30),
    # The wire's domain: signed 64-bit integers, finite floats (refusals tested below).
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
field_names = st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True)


@given(
    fields=st.dictionaries(field_names, scalars, max_size=6),
    counter=st.integers(min_value=1, max_value=2**32),
    source_record_id=st.text(max_size=40),
    occurred_at=st.datetimes(
        min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    ),
    origin=st.sampled_from(["live", "migration", "replay"]),
    data=st.data(),
)
def test_round_trip_property(
    fields: dict[str, Scalar],
    counter: int,
    source_record_id: str,
    occurred_at: datetime,
    origin: str,
    data: st.DataObject,
) -> None:
    changed = data.draw(
        st.lists(st.sampled_from(sorted(fields)), unique=True) if fields else st.just([])
    )
    event = sample_event(
        fields=fields,
        changed=changed,
        clock={"sales": counter},
        source_record_id=source_record_id,
        occurred_at=occurred_at,
        origin=origin,
    )
    back = decode(encode(event))
    assert back == event
    # Equality alone would let True come back as 1 or 1 as 1.0: check the types too.
    assert {k: type(v) for k, v in back.fields.items()} == {k: type(v) for k, v in fields.items()}


# -- derived values --------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["upsert", "delete"])
def test_routing_key(op: str) -> None:
    event = sample_event(source="legacy", actor="legacy@2", clock={"legacy@2": 1}, op=op)
    assert event.routing_key == f"legacy.contact.{op}"
    assert event.routing_key == f"{event.source}.{event.entity}.{event.op}"


def test_epoch_actor_belongs_to_its_source() -> None:
    event = sample_event(source="legacy", actor="legacy@2", clock={"legacy@2": 4, "legacy": 9})
    assert event.actor == "legacy@2"
    assert decode(encode(event)) == event


def test_vclock_is_a_vector_clock() -> None:
    event = sample_event()
    assert event.vclock == VectorClock({"sales": 3, "legacy": 1})


def test_uuids_are_normalised() -> None:
    upper = str(uuid.uuid4()).upper()
    assert sample_event(event_id=upper).event_id == upper.lower()


def test_event_is_frozen() -> None:
    event = sample_event()
    with pytest.raises(ValidationError):
        event.op = "delete"  # type: ignore[misc]


def test_naive_datetime_is_refused_by_the_model() -> None:
    with pytest.raises(ValidationError):
        sample_event(occurred_at=datetime(2024, 5, 1, 12, 0))


# -- refused bodies ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"\xc1\xff", b"", b"\x81", pack({"a": 1}) + b"\x00"],
    ids=["never-used-byte", "empty", "truncated-map", "trailing-bytes"],
)
def test_garbage_is_undecodable(raw: bytes) -> None:
    assert_refused(raw, "undecodable")


def test_list_instead_of_map_is_invalid_schema() -> None:
    assert_refused(pack(list(valid_payload().values())), "invalid-schema")


def test_scalar_body_is_invalid_schema() -> None:
    assert_refused(pack("hello"), "invalid-schema")


def _without(key: str) -> dict[str, Any]:
    payload = valid_payload()
    del payload[key]
    return payload


def _with(**changes: Any) -> dict[str, Any]:
    return {**valid_payload(), **changes}


# case -> (payload, a word the error detail must contain)
INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "missing-event_id": (_without("event_id"), "event_id"),
    "missing-clock": (_without("clock"), "clock"),
    "missing-occurred_at": (_without("occurred_at"), "occurred_at"),
    "event_id-not-uuid": (_with(event_id="not-a-uuid"), "event_id"),
    "event_id-bytes": (_with(event_id=uuid.uuid4().bytes), "event_id"),
    "record_id-not-uuid": (_with(record_id="42"), "record_id"),
    "clock-counter-string": (_with(clock={"sales": "3"}), "clock"),
    "clock-counter-zero": (_with(clock={"sales": 3, "legacy": 0}), "clock"),
    "clock-counter-float": (_with(clock={"sales": 3.0}), "clock"),
    "fields-list": (_with(fields=["email", "ada@example.com"]), "fields"),
    "field-value-map": (_with(fields={"email": {"nested": 1}}), "fields"),
    "unknown-op": (_with(op="merge"), "op"),
    "unknown-origin": (_with(origin="manual"), "origin"),
    "unknown-extra-key": (_with(priority=1), "priority"),
    "schema-version-2": (_with(v=2), "v"),
    "bad-source-name": (_with(source="Sales", actor="Sales"), "source"),
    "actor-of-other-source": (_with(actor="legacy", clock={"legacy": 1}), "does not belong"),
    "clock-lacks-own-actor": (_with(clock={"legacy": 1}), "own actor"),
    "empty-clock": (_with(clock={}), "clock"),
    "changed-not-in-fields": (_with(changed=["email", "mobile"]), "mobile"),
    "field_versions-of-a-field-not-carried": (
        _with(field_versions={"email": 3, "mobile": 1}),
        "mobile",
    ),
    "field_versions-above-the-own-counter": (_with(field_versions={"email": 4}), "above"),
    "field_versions-zero": (_with(field_versions={"email": 0}), "field_versions"),
    "field_versions-beyond-64-bit": (_with(field_versions={"email": 2**63}), "field_versions"),
    "field_versions-counter-string": (_with(field_versions={"email": "3"}), "field_versions"),
    "field_versions-list": (_with(field_versions=["email"]), "field_versions"),
    # msgpack cannot carry a naive datetime (its timestamps are UTC): a producer that
    # sends local wall-clock time sends it as text, which is refused.
    "naive-occurred_at": (_with(occurred_at="2024-05-01T12:00:00"), "occurred_at"),
}


@pytest.mark.parametrize(("payload", "word"), list(INVALID.values()), ids=list(INVALID))
def test_invalid_schema(payload: dict[str, Any], word: str) -> None:
    raw = pack(payload)
    err = assert_refused(raw, "invalid-schema")
    assert word in err.detail


def test_changed_may_name_absent_fields_on_delete() -> None:
    event = sample_event(op="delete", fields={}, changed=["email"])
    assert decode(encode(event)) == event


def test_sanity_valid_payload_decodes() -> None:
    # The invalid cases above differ from this payload in one key only.
    payload = valid_payload()
    assert decode(pack(payload)) == ChangeEvent.model_validate(payload)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (float("nan"), "finite number"),
        (float("inf"), "finite number"),
        (float("-inf"), "finite number"),
        (2**63, "outside the signed 64-bit range"),
        (2**64 - 1, "outside the signed 64-bit range"),
        (-(2**63) - 1, None),  # msgpack cannot even encode it: the producer fails first
    ],
)
def test_numbers_no_store_can_hold_are_refused_at_decode(value: float, why: str | None) -> None:
    payload = wire_event("legacy", new_id(), {"legacy": 1}, {"score": value})
    if why is None:
        with pytest.raises((OverflowError, ValueError)):
            encode_dict(payload)
        return
    with pytest.raises(DecodeError) as caught:
        decode(encode_dict(payload))
    assert caught.value.reason == "invalid-schema"
    assert why in caught.value.detail and "score" in caught.value.detail


def test_the_edges_of_the_signed_64_bit_range_pass() -> None:
    for value in (2**63 - 1, -(2**63), 1.5e308, -0.0):
        payload = wire_event("legacy", new_id(), {"legacy": 1}, {"score": value})
        back = decode(encode_dict(payload)).fields["score"]
        assert back == value and type(back) is type(value)


# -- field_versions (DESIGN "Exact attribution under reordering") ---------------------------


def test_field_versions_round_trip() -> None:
    event = sample_event(field_versions={"email": 3, "first_name": 1})
    assert decode(encode(event)) == event
    assert decode(encode(event)).field_versions == {"email": 3, "first_name": 1}


def test_an_event_without_field_versions_encodes_as_before() -> None:
    """Absent, not nil: the bytes an older producer wrote, which an older router (its
    model forbids unknown keys) still decodes."""
    event = sample_event()
    payload = event.model_dump()
    assert payload.pop("field_versions") is None
    assert encode(event) == encode_dict(payload)
    assert decode(encode_dict(payload)).field_versions is None


def test_field_versions_may_name_changed_fields_of_a_delete() -> None:
    event = sample_event(op="delete", fields={}, changed=["email"], field_versions={"email": 2})
    assert decode(encode(event)) == event


def test_an_empty_field_versions_means_every_value_was_received() -> None:
    # Distinct from None (an older producer): every carried value came from the hub.
    event = sample_event(changed=[], field_versions={})
    assert decode(encode(event)).field_versions == {}
