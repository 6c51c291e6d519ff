"""Identity matching (issue 11, item 2; docs/identity.md): the pure rules of
router.identity, and decide_batch over a real SQLite store, one batch per call."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from router import topology
from router.authz import Principals
from router.config import RouterConfig
from router.daemon.context import RouterContext
from router.daemon.pipeline import BatchOutcome, decide_batch, judge
from router.events import decode, encode_dict
from router.identity import Member, indexed, key_values, match, normalise
from router.messages import Delivery
from router.registry import Registration
from router.state import RouterStore
from tests.factories import wire_event

ADAPTERS = ("legacy", "sales", "mktg")


def new_id() -> str:
    return str(uuid.uuid4())


# -- the pure rules ----------------------------------------------------------------------


def test_values_compare_trimmed_and_case_insensitive_and_empty_never_matches() -> None:
    assert normalise(" Ann@Example.COM ") == normalise("ann@example.com") == "ann@example.com"
    assert normalise("STRASSE") == normalise("straße")  # casefold, not lower
    assert normalise(None) is None and normalise("") is None and normalise("   ") is None
    assert normalise(42) == "42"
    long = "x" * 300
    assert indexed(long).startswith("sha256:") and len(indexed(long)) < 100
    assert key_values({"email": " ", "phone": "+1 5"}, ["email", "phone"]) == [("phone", "+1 5")]


def test_the_first_key_that_matches_anything_decides() -> None:
    fields = {"email": "ann@example.com", "phone": "+15550001"}
    keys = ["email", "phone"]
    by_phone = {("phone", "+15550001"): {"r-phone"}}
    assert match(fields, keys, by_phone, {}, "sales", "s1").record_id == "r-phone"
    both = {**by_phone, ("email", "ann@example.com"): {"r-email"}}
    decided = match(fields, keys, both, {}, "sales", "s1")
    assert (decided.kind, decided.record_id, decided.key) == ("alias", "r-email", "email")
    # An ambiguous first key is ambiguous: a later key is no tie-breaker.
    two = {**by_phone, ("email", "ann@example.com"): {"r2", "r1"}}
    decided = match(fields, keys, two, {}, "sales", "s1")
    assert (decided.kind, decided.candidates) == ("ambiguous", ("r1", "r2"))
    assert match(fields, keys, {}, {}, "sales", "s1").kind == "new"


def test_a_record_already_holding_a_row_of_the_same_source_is_a_duplicate() -> None:
    fields = {"email": "ann@example.com"}
    found = {("email", "ann@example.com"): {"r1"}}
    members = {"r1": [Member("r1", "sales", "s1")]}
    assert match(fields, ["email"], found, members, "sales", "s2").kind == "duplicate"
    # The same row again (its adapter lost its links) and another CRM's row link.
    assert match(fields, ["email"], found, members, "sales", "s1").kind == "alias"
    assert match(fields, ["email"], found, members, "legacy", "l1").kind == "alias"


# -- decide_batch over a store --------------------------------------------------------------


class Hub:
    def __init__(self, tmp_path: Path, match_keys: Sequence[str] = ("email",)) -> None:
        raw: dict[str, Any] = {"state": {"url": f"sqlite:///{tmp_path / 'router.db'}"}}
        if match_keys:
            raw["entities"] = {"contact": {"match": list(match_keys)}}
        self.ctx = RouterContext(RouterConfig.model_validate(raw))
        self.store = RouterStore(raw["state"]["url"])
        entities = {"contact": ["email", "first_name", "phone"]}
        registry = {n: Registration(n, 1, entities, "test", 0.0, 0.0) for n in ADAPTERS}
        self.ctx.open(self.store, registry)
        self.counters: dict[str, int] = {}

    def event(
        self, source: str, record_id: str, sid: str, seen: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        """``source``'s next version; after the stored version of ``seen``, if given."""
        counter = self.counters[source] = self.counters.get(source, 0) + 1
        stored = self.store.get(seen) if seen else None
        clock = {**(stored.clock.to_dict() if stored else {}), source: counter}
        return wire_event(source, record_id, clock, fields, source_record_id=sid)

    def batch(self, *payloads: dict[str, Any], unmatched: frozenset[str] = frozenset()) -> Any:
        deliveries = [
            Delivery(encode_dict(p), f"{p['source']}.contact.upsert", _Unsettled())
            for p in payloads
        ]
        judged = judge(deliveries, self.ctx.registry, Principals())
        with self.store.transaction() as conn:
            out: BatchOutcome = decide_batch(self.ctx, judged, conn, unmatched)
            self.store.commit_batch(
                out.processed,
                out.states,
                out.deliveries,
                [],
                conn,
                list(out.conflicts.values()),
                out.identity_writes,
            )
        if out.marks is not None:
            self.ctx.marks.commit(out.marks)
        return out


class _Unsettled:
    async def ack(self, multiple: bool = False) -> None:
        raise AssertionError("nothing settles here")

    async def nack(self, multiple: bool = False, requeue: bool = True) -> None:
        raise AssertionError("nothing settles here")


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    h = Hub(tmp_path)
    yield h
    h.store.close()


def test_a_new_id_with_an_existing_key_becomes_an_alias_decided_against_the_record(
    hub: Hub,
) -> None:
    ann = new_id()
    first = hub.batch(hub.event("legacy", ann, "L-1", email="Ann@Example.com ", first_name="Ann"))
    assert first.verdicts["accepted"] == 1 and not first.identity
    other = new_id()
    payload = hub.event("sales", other, "S-9", email="ann@example.com", first_name="Annie")
    out = hub.batch(payload)
    outcome = out.identity[payload["event_id"]]
    assert (outcome.kind, outcome.record_id, outcome.key) == ("linked", ann, "email")
    # Concurrent with the stored version: the policy decides, every subscriber gets it,
    # and the delivery names the alias for the adapter whose row it was.
    assert out.verdicts["conflict"] == 1 and out.verdicts["linked"] == 1
    [state] = out.states
    assert state.record_id == ann
    [sent] = out.deliveries
    assert decode(sent.body).record_id == ann
    assert sorted([sent.routing_key, *sent.headers.get("BCC", [])]) == sorted(ADAPTERS)
    assert sent.headers[topology.ALIASES_HEADER] == {"sales": other}
    assert hub.store.get(other) is None
    [alias] = hub.store.aliases_of([ann])[ann]
    assert (alias.alias_id, alias.source, alias.source_record_id) == (other, "sales", "S-9")
    assert alias.migration is None
    # A later event under the alias is rewritten to the record, and still names it.
    edit = hub.event("sales", other, "S-9", seen=ann, email="ann@example.com", phone="+1")
    later = hub.batch(edit)
    assert later.verdicts["accepted"] == 1 and not later.identity
    [sent] = later.deliveries
    assert decode(sent.body).record_id == ann
    assert sent.headers[topology.ALIASES_HEADER] == {"sales": other}
    assert hub.store.get(ann).fields["phone"] == "+1"  # type: ignore[union-attr]


def test_a_key_of_several_records_is_ambiguous_parked_and_replaced_by_newer(hub: Hub) -> None:
    one, two = new_id(), new_id()
    hub.batch(hub.event("legacy", one, "L-1", email="a@x.io"))
    hub.batch(hub.event("mktg", two, "M-1", email="b@x.io"))
    hub.batch(hub.event("mktg", two, "M-1", email="A@x.io"))  # its key changed: index follows
    newcomer = new_id()
    payload = hub.event("sales", newcomer, "S-1", email=" a@X.io", first_name="A")
    out = hub.batch(payload)
    outcome = out.identity[payload["event_id"]]
    assert (outcome.kind, outcome.candidates) == ("ambiguous", tuple(sorted((one, two))))
    assert out.verdicts == {"ambiguous": 1}
    assert out.deliveries == [] and out.states == [] and out.processed == []
    [parked] = hub.store.parked_identities()
    assert (parked.event_id, parked.reason, parked.record_id) == (
        payload["event_id"],
        "ambiguous",
        newcomer,
    )
    assert decode(parked.body).fields["first_name"] == "A"  # nothing lost
    newer = hub.event("sales", newcomer, "S-1", email="a@x.io", first_name="B")
    assert hub.batch(newer).verdicts == {"ambiguous": 1}
    [parked] = hub.store.parked_identities(entity="contact")
    assert parked.event_id == newer["event_id"]
    assert decode(parked.body).fields["first_name"] == "B"
    assert hub.store.counts()["identities_parked"] == 1
    assert hub.store.parked_identities(entity="company") == []


def test_two_rows_of_one_source_with_one_key_park_the_second_as_duplicate(hub: Hub) -> None:
    first, second = new_id(), new_id()
    hub.batch(hub.event("legacy", first, "L-1", email="a@x.io"))
    payload = hub.event("legacy", second, "L-2", email="A@x.io")
    out = hub.batch(payload)
    outcome = out.identity[payload["event_id"]]
    assert (outcome.kind, outcome.record_id) == ("duplicate", first)
    assert out.verdicts == {"duplicate-in-source": 1} and out.deliveries == []
    [parked] = hub.store.parked_identities()
    assert (parked.reason, parked.candidates) == ("duplicate", (first,))
    assert hub.store.get(second) is None


def test_new_records_with_one_key_in_one_batch_match_each_other(hub: Hub) -> None:
    a, b, c = new_id(), new_id(), new_id()
    pa = hub.event("legacy", a, "L-1", email="a@x.io")
    pb = hub.event("sales", b, "S-1", email="A@X.IO")
    pc = hub.event("sales", c, "S-2", email="a@x.io ")
    out = hub.batch(pa, pb, pc)
    assert out.identity[pb["event_id"]].kind == "linked"
    assert out.identity[pb["event_id"]].record_id == a
    assert out.identity[pc["event_id"]].kind == "duplicate"  # sales holds a row for a now
    assert {s.record_id for s in out.states} == {a}
    # The first delivery of the batch (a, before b linked) names the alias too, so sales
    # never writes a second row for a.
    assert all(d.headers[topology.ALIASES_HEADER] == {"sales": b} for d in out.deliveries)


def test_a_deleted_record_and_an_operators_new_record_are_not_matched(hub: Hub) -> None:
    gone = new_id()
    hub.batch(hub.event("legacy", gone, "L-1", email="a@x.io"))
    delete = hub.event("legacy", gone, "L-1", email="a@x.io")
    delete["op"] = "delete"
    hub.batch(delete)
    fresh = new_id()
    assert not hub.batch(hub.event("sales", fresh, "S-1", email="a@x.io")).identity
    dup = new_id()
    out = hub.batch(hub.event("sales", dup, "S-2", email="a@x.io"))
    assert out.identity  # a duplicate of fresh inside sales...
    again = hub.event("sales", dup, "S-2", email="a@x.io")
    out = hub.batch(again, unmatched=frozenset({dup}))  # ...unless an operator says new
    assert not out.identity and out.verdicts["accepted"] == 1


def test_without_match_keys_nothing_is_matched(tmp_path: Path) -> None:
    hub = Hub(tmp_path, match_keys=())
    try:
        hub.batch(hub.event("legacy", new_id(), "L-1", email="a@x.io"))
        out = hub.batch(hub.event("sales", new_id(), "S-1", email="a@x.io"))
        assert out.verdicts == {"accepted": 1} and not out.identity
        assert topology.ALIASES_HEADER not in out.deliveries[0].headers
    finally:
        hub.store.close()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("match = []", "key 'entities.contact.match': List should have at least 1 item"),
        ('match = ["email"]\nkeys = 1', "unknown key 'entities.contact.keys'"),
        ('match = ["email", "email"]', "key 'entities.contact.match': Value error, match names"),
        ('match = ["E-mail"]', "key 'entities.contact.match.0': String should match pattern"),
        ("", "missing key 'entities.contact.match'"),
    ],
)
def test_a_bad_match_is_one_line_naming_the_key(tmp_path: Path, body: str, expected: str) -> None:
    from router.config import load_router
    from router.errors import ConfigError

    path = tmp_path / "router.toml"
    path.write_text(f"[entities.contact]\n{body}\n")
    with pytest.raises(ConfigError) as caught:
        load_router(path)
    message = str(caught.value)
    assert "\n" not in message and expected in message, message


def test_records_stored_before_the_keys_were_configured_are_indexed_at_start(
    tmp_path: Path,
) -> None:
    hub = Hub(tmp_path, match_keys=())
    try:
        ann = new_id()
        hub.batch(hub.event("legacy", ann, "L-1", email="Ann@x.io"))
        hub.batch(hub.event("legacy", new_id(), "L-2", email="bo@x.io"))
        assert hub.store.sync_match_index() == []  # no keys: nothing to index
        hub.store.match_keys = {"contact": ("email",)}
        assert hub.store.sync_match_index(page=1) == ["contact"]  # one record per page
        assert hub.store.sync_match_index() == []  # built for these keys already
        out = hub.batch(hub.event("sales", new_id(), "S-1", email="ann@x.io"))
        assert [o.record_id for o in out.identity.values()] == [ann]
    finally:
        hub.store.close()
