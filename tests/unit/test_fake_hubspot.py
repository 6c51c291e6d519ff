"""The fake HubSpot behaves as HubSpot's CRM v3 docs say, over real HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.hubspot import FakeHubSpot, hubspot_server

C = "/crm/v3/objects/contacts"


class Clock:
    """A hand-driven clock: lag and rate windows are tested without sleeping."""

    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def hs(clock: Clock) -> Iterator[FakeHubSpot]:
    with hubspot_server(clock=clock) as fake:
        yield fake


def call(
    hs: FakeHubSpot, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, Any, dict[str, str]]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(hs.base_url + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token or hs.token}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            raw, status, headers = resp.read(), resp.status, dict(resp.headers)
    except urllib.error.HTTPError as e:
        with e:
            raw, status, headers = e.read(), e.code, dict(e.headers)
    return status, (json.loads(raw) if raw else None), headers


def create(hs: FakeHubSpot, *props: dict[str, Any], **extra: Any) -> tuple[int, Any]:
    status, body, _ = call(hs, "POST", f"{C}/batch/create", {"inputs": list(props), **extra})
    return status, body


def since(ms: int, **extra: Any) -> dict[str, Any]:
    return {
        "filterGroups": [
            {"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": str(ms)}]}
        ],
        "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
        **extra,
    }


def test_auth_is_required(hs: FakeHubSpot) -> None:
    status, body, _ = call(hs, "GET", C, token="wrong")
    assert status == 401 and body["category"] == "INVALID_AUTHENTICATION"
    assert hs.unauthorized == 1 and hs.total_requests == 0


def test_created_contact_has_string_properties_and_system_fields(hs: FakeHubSpot) -> None:
    status, body = create(hs, {"properties": {"email": "A@x.test", "age": 7, "vip": True}})
    assert status == 201
    (made,) = body["results"]
    assert made["id"].isdigit() and made["archived"] is False
    status, got, _ = call(hs, "GET", f"{C}/{made['id']}?properties=email,age,vip,phone")
    props = got["properties"]
    assert props["age"] == "7" and props["vip"] == "true" and props["email"] == "A@x.test"
    assert props["hs_object_id"] == made["id"] and props["phone"] is None
    assert props["createdate"].endswith("Z") and props["lastmodifieddate"] == props["createdate"]


def test_list_pages_and_excludes_archived(hs: FakeHubSpot) -> None:
    ids = hs.seed(25)
    hs.delete(ids[0])
    seen: list[str] = []
    after = ""
    while True:
        status, body, _ = call(hs, "GET", f"{C}?limit=10&properties=email{after}")
        assert status == 200
        seen += [r["id"] for r in body["results"]]
        assert set(body["results"][0]["properties"]) >= {"email", "hs_object_id"}
        if "paging" not in body:
            break
        after = "&after=" + body["paging"]["next"]["after"]
    assert seen == ids[1:]
    status, body, _ = call(hs, "GET", f"{C}?archived=true")
    assert [r["id"] for r in body["results"]] == [ids[0]]
    assert body["results"][0]["archived"] is True and "archivedAt" in body["results"][0]
    assert call(hs, "GET", f"{C}?limit=101")[0] == 400


def test_email_unique_case_insensitive_409_writes_nothing(hs: FakeHubSpot) -> None:
    _, body = create(hs, {"properties": {"email": "dup@x.test"}})
    existing = body["results"][0]["id"]
    status, err = create(
        hs, {"properties": {"email": "ok@x.test"}}, {"properties": {"email": "DUP@x.test"}}
    )
    assert status == 409 and err["category"] == "CONFLICT"
    assert err["message"] == f"Contact already exists. Existing ID: {existing}"
    assert hs.live_count() == 1  # the good input of the failed batch was not written
    # Its would-be id is not burnt either: the next create gets the next number.
    _, body = create(hs, {"properties": {"email": "ok@x.test"}})
    assert int(body["results"][0]["id"]) == int(existing) + 1


def test_multi_status_writes_good_inputs_and_names_bad_ones(hs: FakeHubSpot) -> None:
    create(hs, {"properties": {"email": "dup@x.test"}})
    status, body = create(
        hs,
        {"properties": {"email": "new@x.test"}, "objectWriteTraceId": "t1"},
        {"properties": {"email": "dup@x.test"}, "objectWriteTraceId": "t2"},
    )
    assert status == 207 and body["numErrors"] == 1
    assert [r["properties"]["email"] for r in body["results"]] == ["new@x.test"]
    assert body["errors"][0]["context"]["objectWriteTraceId"] == ["t2"]
    assert hs.live_count() == 2


def test_batch_limit_is_100(hs: FakeHubSpot) -> None:
    inputs = [{"properties": {"email": f"{i}@x.test"}} for i in range(101)]
    status, err = create(hs, *inputs)
    assert status == 400 and err["category"] == "VALIDATION_ERROR" and hs.live_count() == 0
    for op in ("update", "upsert", "archive", "read"):
        assert call(hs, "POST", f"{C}/batch/{op}", {"inputs": [{"id": "1"}] * 101})[0] == 400


def test_update_upsert_read_archive(hs: FakeHubSpot, clock: Clock) -> None:
    (cid,) = hs.seed(1)
    before = hs.get(cid)
    assert before is not None
    clock.t += 1
    status, body, _ = call(
        hs, "POST", f"{C}/batch/update", {"inputs": [{"id": cid, "properties": {"city": "Oslo"}}]}
    )
    assert status == 200 and body["results"][0]["id"] == cid
    after = hs.get(cid)
    assert after is not None and after.updated_ms == int(clock.t * 1000) > before.updated_ms
    status, err, _ = call(
        hs, "POST", f"{C}/batch/update", {"inputs": [{"id": "999999", "properties": {}}]}
    )
    assert status == 404 and err["category"] == "OBJECT_NOT_FOUND"
    status, err, _ = call(
        hs,
        "POST",
        f"{C}/batch/update",
        {"inputs": [{"id": cid, "properties": {"createdate": "1"}}]},
    )
    assert status == 400 and "read-only" in err["message"]
    email = before.properties["email"]
    upsert = {
        "inputs": [
            {"id": email.upper(), "idProperty": "email", "properties": {"city": "Rome"}},
            {"id": "fresh@x.test", "idProperty": "email", "properties": {}},
        ]
    }
    status, body, _ = call(hs, "POST", f"{C}/batch/upsert", upsert)
    assert status == 200 and [r["new"] for r in body["results"]] == [False, True]
    assert body["results"][0]["id"] == cid and hs.live_count() == 2
    read = {"inputs": [{"id": cid}, {"id": "424242"}], "properties": ["city"]}
    status, body, _ = call(hs, "POST", f"{C}/batch/read", read)
    assert status == 207 and body["results"][0]["properties"]["city"] == "Rome"
    assert body["errors"][0]["context"]["ids"] == ["424242"]
    arch = {"inputs": [{"id": cid}, {"id": "424242"}]}
    assert call(hs, "POST", f"{C}/batch/archive", arch)[:2] == (204, None)
    assert call(hs, "GET", f"{C}/{cid}")[0] == 404
    # The archived email is free again.
    assert create(hs, {"properties": {"email": email}})[0] == 201


def test_search_modified_since_sorted_and_paged(hs: FakeHubSpot) -> None:
    ids = hs.seed(450, start_ms=1_000_000, step_ms=10)
    status, body, _ = call(hs, "POST", f"{C}/search", since(1_000_000 + 100 * 10, limit=200))
    assert status == 200 and body["total"] == 350
    assert [r["id"] for r in body["results"]] == ids[100:300]
    status, body, _ = call(
        hs, "POST", f"{C}/search", since(0, limit=200, after=body["paging"]["next"]["after"])
    )
    assert [r["id"] for r in body["results"]] == ids[200:400]
    gt = since(0)
    gt["filterGroups"][0]["filters"] = [
        {"propertyName": "lastmodifieddate", "operator": "GT", "value": "1000000"},
        {"propertyName": "lastmodifieddate", "operator": "LTE", "value": "1000030"},
    ]
    body = call(hs, "POST", f"{C}/search", gt)[1]
    assert [r["id"] for r in body["results"]] == ids[1:4]
    assert call(hs, "POST", f"{C}/search", since(0, limit=201))[0] == 400


def test_search_stops_at_10000_results(hs: FakeHubSpot) -> None:
    hs.seed(10_050)
    status, body, _ = call(hs, "POST", f"{C}/search", since(0, limit=200, after="9800"))
    assert status == 200 and body["total"] == 10_050 and len(body["results"]) == 200
    status, err, _ = call(
        hs, "POST", f"{C}/search", since(0, limit=200, after=body["paging"]["next"]["after"])
    )
    assert status == 400 and err["category"] == "VALIDATION_ERROR" and "10000" in err["message"]


def test_search_lags_writes_and_never_shows_archived(clock: Clock) -> None:
    with hubspot_server(clock=clock, lag=5.0) as hs:
        _, body = create(hs, {"properties": {"email": "lag@x.test", "city": "Oslo"}})
        cid = body["results"][0]["id"]
        assert call(hs, "POST", f"{C}/search", since(0))[1]["total"] == 0
        clock.t += 5
        assert call(hs, "POST", f"{C}/search", since(0))[1]["results"][0]["id"] == cid
        hs.edit(cid, city="Rome")
        q = since(0, properties=["city"])
        assert call(hs, "POST", f"{C}/search", q)[1]["results"][0]["properties"]["city"] == "Oslo"
        clock.t += 5
        assert call(hs, "POST", f"{C}/search", q)[1]["results"][0]["properties"]["city"] == "Rome"
        hs.delete(cid)
        clock.t += 5
        assert call(hs, "POST", f"{C}/search", q)[1]["total"] == 0


def test_rate_limit_window_headers_and_429(clock: Clock) -> None:
    with hubspot_server(clock=clock, per_10s=3, daily=5) as hs:
        for left in (2, 1, 0):
            status, _, headers = call(hs, "GET", C)
            assert status == 200 and headers["X-HubSpot-RateLimit-Remaining"] == str(left)
        assert headers["X-HubSpot-RateLimit-Max"] == "3"
        assert headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
        assert headers["X-HubSpot-RateLimit-Daily"] == "5"
        assert headers["X-HubSpot-RateLimit-Daily-Remaining"] == "2"
        status, body, headers = call(hs, "GET", C)
        assert status == 429 and body["errorType"] == "RATE_LIMIT"
        assert (
            body["policyName"] == "TEN_SECONDLY_ROLLING"
            and headers["X-HubSpot-RateLimit-Remaining"] == "0"
        )
        clock.t += 10
        assert call(hs, "GET", C)[0] == call(hs, "GET", C)[0] == 200
        status, body, _ = call(hs, "GET", C)
        assert status == 429 and body["policyName"] == "DAILY"
        assert hs.throttled == 2 and hs.total_requests == 5
        assert hs.requests[f"GET {C}"] == 5


def test_injected_failures_then_recovery(hs: FakeHubSpot) -> None:
    hs.fail_next(502, times=2)
    assert [call(hs, "GET", C)[0] for _ in range(3)] == [502, 502, 200]


def test_hard_delete_behind_the_api(hs: FakeHubSpot) -> None:
    ids = hs.seed(2)
    hs.delete(ids[0], hard=True)
    assert hs.get(ids[0]) is None and hs.live_count() == 1
    assert call(hs, "POST", f"{C}/search", since(0))[1]["total"] == 1


def test_update_to_a_taken_email_is_409_and_changes_nothing(hs: FakeHubSpot) -> None:
    a, b = hs.seed(2)
    taken = hs.get(b)
    assert taken is not None
    change = {
        "inputs": [
            {"id": a, "properties": {"city": "Oslo"}},
            {"id": a, "properties": {"email": taken.properties["email"].upper()}},
        ]
    }
    status, err, _ = call(hs, "POST", f"{C}/batch/update", change)
    assert status == 409 and err["message"] == f"Contact already exists. Existing ID: {b}"
    unchanged = hs.get(a)
    assert unchanged is not None and "city" not in unchanged.properties
    assert (
        call(hs, "POST", f"{C}/search", since(0, properties=["city"]))[1]["results"][0][
            "properties"
        ]["city"]
        is None
    )


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (f"{C}/batch/upsert", {"inputs": [{"id": "x@y.test", "properties": {}}]}),
        (f"{C}/batch/create", {"inputs": [{"properties": {"email": None}}]}),
        (f"{C}/batch/create", {"nothing": []}),
        (
            f"{C}/search",
            {
                "filterGroups": [
                    {"filters": [{"propertyName": "email", "operator": "NOPE", "value": "1"}]}
                ]
            },
        ),
        (f"{C}/search", {"limit": "many"}),
    ],
)
def test_bad_requests_are_400_validation_errors(hs: FakeHubSpot, path: str, body: Any) -> None:
    status, err, _ = call(hs, "POST", path, body)
    assert status == 400 and err["status"] == "error" and err["category"] == "VALIDATION_ERROR"
    assert err["message"] and hs.live_count() == 0


def test_concurrent_clients_get_unique_ids_and_one_winner_per_email(hs: FakeHubSpot) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def work(n: int) -> list[int]:
        own = [{"properties": {"email": f"w{n}-{i}@x.test"}} for i in range(20)]
        return [create(hs, *own)[0], create(hs, {"properties": {"email": "same@x.test"}})[0]]

    with ThreadPoolExecutor(4) as pool:
        statuses = [s for batch in pool.map(work, range(4)) for s in batch]
    assert sorted(statuses) == [201] * 5 + [409] * 3
    assert hs.live_count() == 81
