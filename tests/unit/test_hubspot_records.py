"""HubSpot answers as rows, pure: the contact a 409 names, batch results matched to
their inputs whatever order HubSpot returns them in, and a v3 object as a SourceRow."""

from __future__ import annotations

from datetime import UTC, datetime

from adapters.hubspot import records
from adapters.hubspot.client import Answer
from adapters.hubspot.mapping import ObjectMapping
from router.adapter_config import EntityMapping


def test_existing_id_from_context_or_message() -> None:
    assert records.existing_id({"context": {"existingId": ["1234"]}}) == "1234"
    body = {"category": "CONFLICT", "message": "Contact already exists. Existing ID: 987"}
    assert records.existing_id(body) == "987"
    assert records.existing_id({"message": "something else"}) is None
    assert records.existing_id(None) is None


def _result(ident: str, email: str | None) -> dict[str, object]:
    return {"id": ident, "properties": {"email": email}}


def test_batch_results_follow_the_inputs_by_email() -> None:
    props = [{"email": "A@x.test"}, {"email": "b@x.test"}, {"email": "c@x.test"}]
    found = [_result("3", "c@x.test"), _result("1", "a@x.test"), _result("2", "b@x.test")]
    assert [r["id"] for r in records.in_input_order(props, found)] == ["1", "2", "3"]
    # Without an email on every input, position is all there is.
    props[1] = {}
    assert [r["id"] for r in records.in_input_order(props, found)] == ["3", "1", "2"]


def test_results_and_rows() -> None:
    answer = Answer(207, {"results": [{"id": "5", "properties": {}}, "junk"], "errors": []})
    assert records.results(answer) == [{"id": "5", "properties": {}}]
    assert records.results(Answer(204, None)) == []
    mapping = ObjectMapping("contact", EntityMapping(object="contacts", fields={"email": "email"}))
    result = {
        "id": "5",
        "properties": {"email": "a@x.test", "lastmodifieddate": "2026-12-03T06:27:03.123Z"},
        "archived": False,
    }
    row = records.to_row("contact", mapping, result)
    assert (row.source_record_id, row.fields, row.deleted) == ("5", {"email": "a@x.test"}, False)
    assert row.version == "2026-12-03T06:27:03.123Z"
    assert row.position == datetime(2026, 12, 3, 6, 27, 3, 123000, tzinfo=UTC)
