"""The adapter's pure decisions (adapters/rules.py) and canonical validation
(adapters/canonical.py)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.canonical import InvalidRecord, to_scalar, validate
from adapters.rules import (
    DeliveryAction,
    changed_fields,
    content_hash,
    delivery_action,
    local_clock,
)
from router.clock import Order, VectorClock, compare
from router.events import Scalar

# -- content_hash ---------------------------------------------------------------------


def test_content_hash_ignores_key_order() -> None:
    a = {"email": "ada@example.com", "first_name": "Ada", "phone": None}
    b = {"phone": None, "first_name": "Ada", "email": "ada@example.com"}
    assert list(a) != list(b)
    assert content_hash(a, False) == content_hash(b, False)


def test_content_hash_differs_for_deleted() -> None:
    fields = {"email": "ada@example.com", "first_name": "Ada"}
    assert content_hash(fields, False) != content_hash(fields, True)


def test_content_hash_differs_for_different_values() -> None:
    base = {"email": "ada@example.com", "first_name": "Ada"}
    assert content_hash(base, False) != content_hash({**base, "first_name": "Grace"}, False)
    # a cleared field is not the same content as an absent one
    assert content_hash(base, False) != content_hash({**base, "phone": None}, False)
    # scalar types matter: 1 and "1" are different content
    assert content_hash({"n": 1}, False) != content_hash({"n": "1"}, False)


def test_content_hash_is_stable_text() -> None:
    digest = content_hash({"a": 1}, False)
    assert isinstance(digest, str)
    assert len(digest) == 32
    assert digest == content_hash({"a": 1}, False)
    int(digest, 16)  # hex


@given(
    st.dictionaries(
        st.text(alphabet="abcdefghij_", min_size=1, max_size=8),
        st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text()),
        max_size=8,
    ),
    st.booleans(),
    st.randoms(use_true_random=False),
)
def test_content_hash_order_independent_property(
    fields: dict[str, Scalar], deleted: bool, rnd: random.Random
) -> None:
    items = list(fields.items())
    rnd.shuffle(items)
    assert content_hash(dict(items), deleted) == content_hash(fields, deleted)


# -- delivery_action ------------------------------------------------------------------

KNOWN = VectorClock({"legacy": 2, "sales": 1})


@pytest.mark.parametrize(
    ("delivered", "expected"),
    [
        ({"legacy": 1, "sales": 1}, DeliveryAction.SKIP_STALE),  # before
        ({"legacy": 2}, DeliveryAction.SKIP_STALE),  # before (missing actor is 0)
        ({"legacy": 2, "sales": 1}, DeliveryAction.SKIP_STALE),  # equal: duplicate
        ({"legacy": 2, "sales": 2}, DeliveryAction.APPLY),  # after
        ({"legacy": 2, "sales": 1, "hub": 1}, DeliveryAction.APPLY),  # after, new actor
        ({"legacy": 1, "sales": 2}, DeliveryAction.SKIP_CONCURRENT),  # concurrent
        ({"legacy": 3}, DeliveryAction.SKIP_CONCURRENT),  # concurrent
        ({"mktg": 1}, DeliveryAction.SKIP_CONCURRENT),  # disjoint: concurrent
    ],
)
def test_delivery_action(delivered: dict[str, int], expected: DeliveryAction) -> None:
    assert delivery_action(VectorClock(delivered), KNOWN) is expected


def test_delivery_action_without_known_clock_applies() -> None:
    assert delivery_action(VectorClock({"sales": 1}), None) is DeliveryAction.APPLY


def test_delivery_action_values_are_the_reported_actions() -> None:
    assert DeliveryAction.APPLY.value == "apply"
    assert DeliveryAction.SKIP_STALE.value == "skip-stale"
    assert DeliveryAction.SKIP_CONCURRENT.value == "skip-concurrent"


# -- local_clock ----------------------------------------------------------------------


def test_local_clock_from_nothing() -> None:
    assert local_clock(None, "legacy") == VectorClock({"legacy": 1})


def test_local_clock_increments_own_counter_only() -> None:
    known = VectorClock({"legacy": 2, "sales": 5, "hub": 1})
    mine = local_clock(known, "legacy")
    assert mine == VectorClock({"legacy": 3, "sales": 5, "hub": 1})
    assert compare(mine, known) is Order.AFTER
    assert known == VectorClock({"legacy": 2, "sales": 5, "hub": 1})  # not mutated


def test_local_clock_adds_new_actor_epoch() -> None:
    known = VectorClock({"legacy": 7})
    assert local_clock(known, "legacy@2") == VectorClock({"legacy": 7, "legacy@2": 1})


def test_local_change_on_top_of_delivery_is_concurrent_with_a_newer_delivery() -> None:
    applied = VectorClock({"legacy": 1, "sales": 1})
    mine = local_clock(applied, "legacy")
    newer = VectorClock({"legacy": 1, "sales": 2})
    assert compare(mine, newer) is Order.CONCURRENT
    assert delivery_action(newer, mine) is DeliveryAction.SKIP_CONCURRENT


# -- changed_fields -------------------------------------------------------------------


def test_changed_fields_without_parent_lists_all_sorted() -> None:
    assert changed_fields(None, {"phone": "1", "email": "a@b.co"}) == ["email", "phone"]


def test_changed_fields_lists_only_differences() -> None:
    before = {"email": "a@b.co", "first_name": "Ada", "phone": "1"}
    after = {"email": "a@b.co", "first_name": "Grace", "phone": "1"}
    assert changed_fields(before, after) == ["first_name"]


def test_changed_fields_new_and_cleared_fields() -> None:
    before = {"email": "a@b.co", "phone": "1"}
    after = {"email": "a@b.co", "phone": None, "last_name": "Lovelace"}
    assert changed_fields(before, after) == ["last_name", "phone"]


def test_changed_fields_nothing_changed() -> None:
    same = {"email": "a@b.co", "phone": None}
    assert changed_fields(same, dict(same)) == []


# -- canonical.validate ---------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", ["not-an-email", "a@b", "two words@example.com", "@example.com", "a@@example.com"]
)
def test_contact_bad_email_raises_invalid_record(bad: str) -> None:
    with pytest.raises(InvalidRecord, match="email"):
        validate("contact", {"email": bad, "first_name": "Ada"})


def test_invalid_record_is_a_value_error() -> None:
    assert issubclass(InvalidRecord, ValueError)


def test_contact_valid_email_is_stripped_and_other_fields_kept() -> None:
    out = validate("contact", {"email": "  ada@example.com ", "first_name": "Ada", "phone": None})
    assert out == {"email": "ada@example.com", "first_name": "Ada", "phone": None}


def test_contact_null_email_is_allowed() -> None:
    assert validate("contact", {"email": None}) == {"email": None}


def test_validate_returns_only_given_fields() -> None:
    # The model has defaults for unmapped fields: they must not appear in the snapshot.
    out = validate("contact", {"email": "ada@example.com"})
    assert out == {"email": "ada@example.com"}


def test_contact_extra_fields_pass_through() -> None:
    out = validate("contact", {"email": "ada@example.com", "loyalty_tier": "gold", "score": 3})
    assert out == {"email": "ada@example.com", "loyalty_tier": "gold", "score": 3}


def test_deal_amount_decimal_becomes_exact_text() -> None:
    out = validate("deal", {"title": "Big", "amount": Decimal("1234.50")})
    assert out == {"title": "Big", "amount": "1234.50"}
    assert validate("deal", {"amount": 10})["amount"] == "10"


def test_deal_bad_amount_raises_invalid_record() -> None:
    with pytest.raises(InvalidRecord, match="amount"):
        validate("deal", {"amount": "lots"})


def test_datetime_and_date_become_iso_text() -> None:
    when = datetime(2024, 5, 1, 12, 30, 0, 123456, tzinfo=UTC)
    out = validate(
        "contact", {"email": "a@b.co", "signed_up": when, "birthday": date(1815, 12, 10)}
    )
    assert out["signed_up"] == "2024-05-01T12:30:00.123456+00:00"
    assert out["birthday"] == "1815-12-10"


def test_unknown_entity_passes_through_scalars() -> None:
    when = datetime(2024, 1, 2, 3, 4, 5)
    fields = {
        "subject": "hello",
        "count": 3,
        "ratio": 0.5,
        "open": True,
        "none": None,
        "price": Decimal("9.90"),
        "at": when,
        "email": "not-an-email",  # no model for this entity: nothing to validate
    }
    out = validate("ticket", fields)
    assert out == {
        "subject": "hello",
        "count": 3,
        "ratio": 0.5,
        "open": True,
        "none": None,
        "price": "9.90",
        "at": "2024-01-02T03:04:05+00:00",  # a naive stamp is UTC
        "email": "not-an-email",
    }


def test_binary_values_are_refused() -> None:
    with pytest.raises(InvalidRecord):
        validate("ticket", {"blob": b"\x00\x01"})
    with pytest.raises(InvalidRecord):
        to_scalar(b"x")


def test_to_scalar_other_types_become_text() -> None:
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert to_scalar(u) == "12345678-1234-5678-1234-567812345678"
    assert to_scalar(True) is True
    assert to_scalar(None) is None


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 2**63, -(2**63) - 1])
def test_a_number_no_store_can_hold_is_an_invalid_row_not_a_blocked_capture(value: float) -> None:
    with pytest.raises(InvalidRecord) as caught:
        validate("contact", {"email": "ann@example.com", "score": value})
    # The field and what is wrong with it; never the value (it is customer data).
    assert str(caught.value) in (
        "score: not a finite number (NaN or infinity)",
        "score: integer outside the signed 64-bit range",
    )


def test_the_signed_64_bit_edges_are_valid_values() -> None:
    assert validate("contact", {"score": 2**63 - 1, "low": -(2**63)}) == {
        "score": 2**63 - 1,
        "low": -(2**63),
    }
