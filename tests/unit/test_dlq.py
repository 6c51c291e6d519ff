"""Dead-letter entries (router/dlq.py): ids, error types, x-death, groups, selections."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from router import dlq, dlq_view, topology
from router.errors import CrmsyncError
from router.events import ChangeEvent, decode, encode

SALES_DLQ = topology.dlq_queue("sales")
WHEN = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
CHECK = "IntegrityError: CHECK constraint failed: email_domain"


def event(**overrides: Any) -> ChangeEvent:
    values: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "source": "legacy",
        "actor": "legacy",
        "entity": "contact",
        "record_id": str(uuid.uuid4()),
        "op": "upsert",
        "clock": {"legacy": 2},
        "fields": {"email": "ann@example.com"},
        "changed": ["email"],
        "occurred_at": WHEN,
    }
    return ChangeEvent(**{**values, **overrides})


def failed(**overrides: Any) -> dict[str, Any]:
    """Headers as the adapter writes them on a failed write."""
    headers: dict[str, Any] = {
        topology.TARGET_HEADER: "sales",
        topology.ATTEMPTS_HEADER: 1,
        topology.ERROR_TYPE_HEADER: "permanent",
        topology.ERROR_HEADER: CHECK,
        topology.TRACEBACK_HEADER: "Traceback (most recent call last):\n  ...\n" + CHECK,
        topology.FIRST_FAILED_HEADER: 1_000_000,  # epoch ms
        topology.LAST_FAILED_HEADER: 1_100_500,
        topology.RECORD_KEY_HEADER: "r",
    }
    return {**headers, **overrides}


def death(reason: str, queue: str, when: datetime = WHEN, count: int = 1) -> dict[str, Any]:
    return {
        "count": count,
        "reason": reason,
        "queue": queue,
        "time": when,
        "exchange": "",
        "routing-keys": [queue],
    }


def poison_headers(*deaths: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """What the broker leaves on a message it dead-lettered (RabbitMQ 3.10)."""
    return {
        "x-death": list(deaths),
        "x-first-death-reason": deaths[-1]["reason"],
        "x-first-death-queue": deaths[-1]["queue"],
        "x-first-death-exchange": "",
        "x-delivery-count": 0,
        **extra,
    }


def entry(
    body: bytes | None = None,
    headers: dict[str, Any] | None = None,
    queue: str = SALES_DLQ,
    position: int = 0,
) -> dlq.Entry:
    return dlq.read_entry(
        queue,
        position,
        encode(event()) if body is None else body,
        failed() if headers is None else headers,
    )


# -- ids --------------------------------------------------------------------------------


def test_id_of_a_decodable_entry_is_its_event_id() -> None:
    e = event()
    assert dlq.entry_id(encode(e), e) == e.event_id
    assert entry(encode(e)).id == e.event_id


@pytest.mark.parametrize(
    "body",
    [b"\x00garbage\xff", msgpack.packb([1, 2]), msgpack.packb({"event_id": "x"}), b""],
    ids=["garbage", "not-a-map", "invalid-schema", "empty"],
)
def test_id_of_an_undecodable_body_is_a_short_hash_of_the_body(body: bytes) -> None:
    got = entry(body)
    assert got.id == "h-" + hashlib.sha256(body).hexdigest()[:12]
    assert got.event is None
    assert got.decode_error
    assert got.entity is None and got.record_id is None


def test_same_bytes_give_the_same_id_every_time() -> None:
    assert entry(b"\x01\x02").id == entry(b"\x01\x02").id != entry(b"\x01\x03").id


# -- what an entry says -----------------------------------------------------------------


def test_a_failed_write_is_read_from_crmsyncs_headers() -> None:
    e = event()
    got = entry(encode(e), failed(**{topology.ATTEMPTS_HEADER: 4}))
    assert (got.adapter, got.error_type, got.error, got.attempts) == (
        "sales",
        "permanent",
        CHECK,
        4,
    )
    assert got.traceback.endswith(CHECK)
    assert (got.first_failed_at, got.last_failed_at) == (1000.0, 1100.5)
    assert got.age(1200.5) == 100.0
    assert (got.entity, got.record_id) == ("contact", e.record_id)


def test_timestamps_may_be_ints_or_amqp_timestamps() -> None:
    got = entry(
        headers=failed(
            **{topology.FIRST_FAILED_HEADER: 1_000_000, topology.LAST_FAILED_HEADER: WHEN}
        )
    )
    assert got.first_failed_at == 1000.0
    assert got.last_failed_at == WHEN.timestamp()


def test_missing_history_is_reported_as_unknown_not_invented() -> None:
    got = entry(headers={})
    assert got.adapter == "sales"  # the queue's adapter
    assert got.error_type == "unknown"
    assert got.attempts is None and got.age(5000.0) is None


def test_broker_poison_with_only_x_death_takes_adapter_and_time_from_x_death() -> None:
    got = entry(
        headers=poison_headers(death("delivery_limit", topology.sink_queue("sales"))),
        queue=topology.dlq_queue("other"),
    )
    assert got.error_type == "poison"
    assert got.adapter == "sales"
    assert "delivery limit" in got.error and topology.sink_queue("sales") in got.error
    assert got.first_failed_at == got.last_failed_at == WHEN.timestamp()
    assert got.attempts is None


def test_broker_poison_wins_over_stale_crmsync_headers_of_earlier_retries() -> None:
    stale = failed(**{topology.ERROR_TYPE_HEADER: "transient", topology.ATTEMPTS_HEADER: 2})
    got = entry(
        headers=poison_headers(
            death("delivery_limit", topology.sink_queue("sales")),
            death("expired", topology.retry_queue("sales", "1s")),
            **stale,
        )
    )
    assert got.error_type == "poison"
    assert got.attempts == 2  # crmsync's own counter, as it was
    assert CHECK in got.error  # the last recorded error is kept for the operator
    assert got.first_failed_at == 1000.0


def test_an_older_x_death_of_a_retry_tier_does_not_make_it_poison() -> None:
    headers = poison_headers(death("expired", topology.retry_queue("sales", "10s")), **failed())
    assert entry(headers=headers).error_type == "permanent"


def test_broker_dead_lettering_for_another_reason_names_the_reason() -> None:
    got = entry(headers=poison_headers(death("rejected", topology.sink_queue("sales"))))
    assert got.error_type == "rejected"
    assert topology.sink_queue("sales") in got.error


def test_latest_death_is_the_first_record_and_tolerates_junk() -> None:
    got = dlq.latest_death(
        {"x-death": [death("delivery_limit", "a", count=3), death("expired", "b")]}
    )
    assert got == dlq.Death("delivery_limit", "a", WHEN.timestamp(), 3)
    assert dlq.latest_death({}) is None
    assert dlq.latest_death({"x-death": "nonsense"}) is None
    assert dlq.latest_death({"x-death": []}) is None
    raw = dlq.latest_death({"x-death": [{"reason": b"expired", "queue": b"q"}]})
    assert raw == dlq.Death("expired", "q", None, 1)


def test_router_invalid_entries_use_reason_and_detail() -> None:
    headers = {
        topology.REASON_HEADER: "unregistered-source",
        topology.DETAIL_HEADER: "source 'ghost' never registered",
    }
    got = entry(headers=headers, queue=topology.INVALID)
    assert (got.adapter, got.error_type) == (dlq.ROUTER, "unregistered-source")
    assert got.error == "source 'ghost' never registered"


def test_an_event_the_broker_took_from_the_ingress_reads_as_delivery_limit() -> None:
    """No reason header of ours: the ingress's delivery limit (the router died holding it)."""
    headers = poison_headers(death("delivery_limit", topology.INGRESS))
    got = entry(headers=headers, queue=topology.INVALID)
    assert (got.adapter, got.error_type) == (dlq.ROUTER, "delivery-limit")
    assert topology.INGRESS in got.error and "died" in got.error
    # Our own reason, where there is one, is the word that counts.
    ours = entry(headers={**headers, topology.REASON_HEADER: "too-large"}, queue=topology.INVALID)
    assert ours.error_type == "too-large"


def test_queue_names() -> None:
    assert dlq.queue_for("sales") == SALES_DLQ
    assert dlq.queue_for(dlq.ROUTER) == topology.INVALID
    assert dlq.adapter_of(SALES_DLQ) == "sales"
    assert dlq.adapter_of(topology.INVALID) == dlq.ROUTER
    with pytest.raises(CrmsyncError, match="not an adapter name"):
        dlq.queue_for("Sales/../x")


# -- groups -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (CHECK, CHECK),
        ('duplicate key violates unique constraint "contacts_email_key"', None),
        ("HTTP 503 after 2.5 s", "HTTP <n> after <n> s"),
        (
            f"record {uuid.UUID(int=7)} has no row 42",
            "record <id> has no row <n>",
        ),
        ("Key (email)=(ann@example.com) already exists", "Key (email)=(<email>) already exists"),
        ("lock 0xdeadbeef99 held  by\tpid 12", "lock <id> held by pid <n>"),
        ("column varchar2 too long", "column varchar2 too long"),  # names keep their digits
    ],
)
def test_normalize_error_blanks_what_varies_per_record(text: str, expected: str | None) -> None:
    assert dlq_view.normalize_error(text) == (text if expected is None else expected)


@given(st.text(max_size=80))
def test_normalize_error_is_idempotent(text: str) -> None:
    once = dlq_view.normalize_error(text)
    assert dlq_view.normalize_error(once) == once


def test_group_by_error_merges_the_same_failure_of_many_records() -> None:
    entries = [
        entry(headers=failed(**{topology.ERROR_HEADER: "timeout after 5000 ms"}), position=0),
        entry(position=1),
        entry(headers=failed(**{topology.ERROR_HEADER: "timeout after 7000 ms"}), position=2),
        entry(position=3),
        entry(b"junk", failed(**{topology.ERROR_TYPE_HEADER: "undecodable"}), position=4),
        entry(position=5),
    ]
    groups = dlq_view.group(entries)
    assert [(g.key, [e.position for e in g.entries]) for g in groups] == [
        (f"permanent: {CHECK}", [1, 3, 5]),
        ("permanent: timeout after <n> ms", [0, 2]),
        (f"undecodable: {CHECK}", [4]),
    ]
    assert groups[0].oldest_failed_at == 1100.5
    assert groups[0].oldest_age(1200.5) == 100.0


def test_group_by_entity_and_adapter() -> None:
    entries = [
        entry(position=0),
        entry(b"junk", position=1),
        entry(encode(event(entity="deal")), position=2),
        entry(headers=failed(**{topology.TARGET_HEADER: "mktg"}), position=3),
    ]
    by_entity = {g.key: len(g.entries) for g in dlq_view.group(entries, "entity")}
    assert by_entity == {"contact": 2, "(undecodable)": 1, "deal": 1}
    by_adapter = {g.key: len(g.entries) for g in dlq_view.group(entries, "adapter")}
    assert by_adapter == {"sales": 3, "mktg": 1}


# -- selecting --------------------------------------------------------------------------


def test_find_by_id_or_a_long_enough_unambiguous_prefix() -> None:
    entries = [entry(position=i) for i in range(3)]
    target = entries[1]
    assert dlq.find(entries, target.id, SALES_DLQ) == [target]
    assert dlq.find(entries, target.id[:8], SALES_DLQ) == [target]
    with pytest.raises(dlq.UnknownEntry, match=f"no entry {target.id[:7]} in {SALES_DLQ}"):
        dlq.find(entries, target.id[:7], SALES_DLQ)  # too short to be taken as a prefix


def test_find_refuses_an_ambiguous_prefix() -> None:
    a = entry(encode(event(event_id="aaaaaaaa-0000-4000-8000-000000000001")), position=0)
    b = entry(encode(event(event_id="aaaaaaaa-0000-4000-8000-000000000002")), position=1)
    with pytest.raises(dlq.UnknownEntry, match="matches 2 entries"):
        dlq.find([a, b], "aaaaaaaa", SALES_DLQ)


def test_find_returns_every_copy_of_a_duplicated_entry() -> None:
    body = encode(event())
    copies = [entry(body, position=0), entry(position=1), entry(body, position=2)]
    assert [e.position for e in dlq.find(copies, copies[0].id, SALES_DLQ)] == [0, 2]


def test_select_by_ids_and_error_type_keeps_queue_order() -> None:
    entries = [
        entry(position=0),
        entry(headers=failed(**{topology.ERROR_TYPE_HEADER: "transient"}), position=1),
        entry(position=2),
    ]
    ids = [entries[2].id, entries[0].id]
    assert dlq.select(entries, SALES_DLQ, ids) == [entries[0], entries[2]]
    assert dlq.select(entries, SALES_DLQ, error_type="transient") == [entries[1]]
    assert dlq.select(entries, SALES_DLQ, [entries[1].id], "permanent") == []
    assert dlq.select(entries, SALES_DLQ) == entries
    with pytest.raises(dlq.UnknownEntry, match=f"no entry nope in {SALES_DLQ}"):
        dlq.select(entries, SALES_DLQ, [entries[0].id, "nope"])


# -- replaying --------------------------------------------------------------------------


def test_replay_marks_origin_and_goes_to_the_target_through_deliveries() -> None:
    e = event()
    headers = poison_headers(
        death("delivery_limit", topology.sink_queue("sales")),
        **failed(**{topology.ATTEMPTS_HEADER: 3}),
        BCC=["mktg"],
        CC=["legacy"],
        trace="kept",
    )
    message = dlq.replay_of(entry(encode(e), headers))
    assert (message.exchange, message.routing_key) == (topology.DELIVERIES, "sales")
    assert message.message_id == e.event_id
    replayed = decode(message.body)
    assert replayed.origin == "replay"
    assert replayed.model_dump(exclude={"origin"}) == e.model_dump(exclude={"origin"})
    assert message.headers == {
        **{k: v for k, v in failed(**{topology.ATTEMPTS_HEADER: 3}).items()},
        topology.RECORD_KEY_HEADER: e.record_id,
        "trace": "kept",
        # a replay starts a fresh retry budget and is counted
        topology.ATTEMPTS_HEADER: 0,
        topology.REPLAYS_HEADER: 1,
    }


def test_replay_of_a_refused_event_goes_back_to_the_router() -> None:
    e = event()
    headers = {topology.REASON_HEADER: "unregistered-source", topology.DETAIL_HEADER: "x"}
    message = dlq.replay_of(entry(encode(e), headers, queue=topology.INVALID))
    assert (message.exchange, message.routing_key) == (topology.CHANGES, "legacy.contact.upsert")


def test_an_undecodable_entry_cannot_be_replayed_or_edited() -> None:
    garbage = entry(b"\x00garbage")
    with pytest.raises(dlq.NotReplayable, match=f"{garbage.id} .* cannot be replayed"):
        dlq.replay_of(garbage)
    with pytest.raises(dlq.NotReplayable, match="cannot be edited"):
        dlq.edit_request(garbage, {"email": "x"})


# -- editing ----------------------------------------------------------------------------


def test_parse_assignments() -> None:
    got = dlq.parse_assignments(
        ["email=ann@example.com", "note=a=b", "age:=42", "vip:=true", "phone:=null", "zip=01234"]
    )
    assert got == {
        "email": "ann@example.com",
        "note": "a=b",
        "age": 42,
        "vip": True,
        "phone": None,
        "zip": "01234",
    }


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("email", "write field=value"),
        ("Email=x", "not a field name"),
        ("age:=forty", "not JSON"),
        ("tags:=[1]", "scalars"),
    ],
)
def test_parse_assignments_refuses_with_one_line(item: str, message: str) -> None:
    with pytest.raises(CrmsyncError, match=message):
        dlq.parse_assignments([item])


def test_edit_request_names_the_record_for_the_router() -> None:
    e = event()
    assert dlq.edit_request(entry(encode(e)), {"email": "x@ok.example"}) == {
        "record_id": e.record_id,
        "entity": "contact",
        "set": {"email": "x@ok.example"},
    }


# -- presenting -------------------------------------------------------------------------


def test_jsonable_headers() -> None:
    value = {"t": WHEN, "b": b"\x00", "d": Decimal("1.5"), "l": [1, 2.5, None, True], "s": "x"}
    assert dlq_view.jsonable(value) == {
        "t": WHEN.isoformat(),
        "b": {"base64": "AA=="},
        "d": "1.5",
        "l": [1, 2.5, None, True],
        "s": "x",
    }


def test_detail_of_an_undecodable_entry_carries_the_body() -> None:
    got = dlq_view.detail(entry(b"\x00garbage"))
    assert got["event"] is None and got["decodes"] is False
    assert got["body_base64"] == "AGdhcmJhZ2U="
    assert got["last_failed_at"] == 1100.5  # absolute: the same output every time


@pytest.mark.parametrize(
    ("seconds", "text"), [(None, "-"), (5.9, "5s"), (125, "2m"), (7300, "2h"), (190000, "2d")]
)
def test_age_text(seconds: float | None, text: str) -> None:
    assert dlq_view.age_text(seconds) == text


def test_float_seconds_from_older_entries_are_still_read() -> None:
    got = entry(body=b"x", headers=failed(**{topology.FIRST_FAILED_HEADER: 1000.0}))
    assert got.first_failed_at == 1000.0


def test_replaying_again_counts_the_replays() -> None:
    headers = dlq.replay_headers({**failed(), topology.REPLAYS_HEADER: 2}, "r")
    assert headers[topology.REPLAYS_HEADER] == 3
    assert headers[topology.ATTEMPTS_HEADER] == 0
