"""The control protocol: every malformed request is a BadRequest naming what is wrong."""

from __future__ import annotations

import msgpack
import pytest

from router import control
from router.control import BadRequest, pack, parse_reply, parse_request
from router.errors import CrmsyncError


def test_a_typed_request_round_trips_through_its_routing_key_and_body() -> None:
    sent = control.Register(name="legacy", actor="legacy@2", entities={"contact": ["email"]})
    assert sent.routing_key == "register.legacy"
    assert b"name" not in sent.body()  # the name travels in the key only
    assert parse_request(sent.routing_key, sent.body()) == sent


@pytest.mark.parametrize(
    "model",
    [
        control.StatusRequest(),
        control.EditRecord(record_id="r1", set={"email": "a@b.c", "age": 3, "vip": None}),
        control.RemoveAdapter(name="sales"),
        control.ListConflicts(entity="contact"),
        control.ShowConflict(id="c1"),
        control.ConflictHistory(record_id="r1"),
        control.ResolveConflict(id="c1", take="sales", fields={"email": "mktg"}, by="ops"),
        control.Heartbeat(name="mktg", actor="mktg", at=1.5),
        control.ListIdentities(entity="contact", limit=10),
        control.ResolveIdentity(event_id="e1", link="r1", by="ops"),
        control.ResolveIdentity(event_id="e1", new=True),
    ],
)
def test_every_request_parses_back_to_itself(model: control.Request) -> None:
    assert parse_request(model.routing_key, model.body()) == model


def test_every_request_model_has_a_distinct_key() -> None:
    assert len(control.REQUESTS) == 19
    assert {
        "op.migration.open",
        "op.migration.checkpoint",
        "op.redeliver",
        "op.record.show",
    } <= set(control.REQUESTS)
    assert all(key == model.KEY for key, model in control.REQUESTS.items())


@pytest.mark.parametrize(
    ("key", "body", "says"),
    [
        ("op.nope", pack({}), "unknown control request 'op.nope'"),
        ("nope", pack({}), "unknown control request 'nope'"),
        ("op.status", b"\xc1garbage", "op.status: the body is not msgpack"),
        ("op.status", pack([1, 2]), "op.status: the body must be a map, not list"),
        ("op.edit", pack({"record_id": "r1"}), "op.edit: set: Field required"),
        ("op.edit", pack({"record_id": "r1", "set": {}}), "op.edit: set:"),
        ("op.edit", pack({"record_id": "r1", "set": {"a": [1]}}), "op.edit: set.a"),
        ("op.status", pack({"surprise": 1}), "op.status: surprise: Extra inputs"),
        ("op.adapter-remove", pack({"name": "Not A Name"}), "op.adapter-remove: name:"),
        ("register.Bad Name", pack({}), "register.Bad Name: name:"),
        ("register.", pack({}), "register.: name:"),
        ("register.legacy", pack({"name": "sales"}), "the adapter's name goes in the routing key"),
        ("op.conflicts.show", pack({"id": ""}), "op.conflicts.show: id:"),
    ],
)
def test_a_malformed_request_is_refused_with_what_is_wrong(
    key: str, body: bytes, says: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_request(key, body)
    assert says in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_reply_is_parsed_into_its_model_and_a_refusal_is_one_line() -> None:
    made = control.VersionMade(event_id="e1", clock={"hub": 2}, pending=True)
    raw = msgpack.unpackb(made.body())
    assert parse_reply(raw, control.VersionMade, "op.edit") == made
    refusal = {"ok": False, "error": "no record r9 in the router's state"}
    with pytest.raises(CrmsyncError, match=r"^no record r9 in the router's state$"):
        parse_reply(refusal, control.Removed, "op.adapter-remove")
    with pytest.raises(CrmsyncError, match="not a map"):
        parse_reply([1], control.Removed, "op.adapter-remove")
    with pytest.raises(CrmsyncError, match="same version"):
        parse_reply({"ok": True}, control.Removed, "op.adapter-remove")


def test_a_reply_from_a_newer_router_with_more_fields_still_parses() -> None:
    raw = {"ok": True, "queue": "crmsync.sink.x", "added_later": 1}
    assert parse_reply(raw, control.Removed, "op.adapter-remove").queue == "crmsync.sink.x"
