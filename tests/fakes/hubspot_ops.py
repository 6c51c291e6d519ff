"""The endpoints of the fake HubSpot as functions: (store, request body) -> (status, body).

Batch semantics follow the v3 docs: at most 100 inputs; by default one bad input fails
the whole batch and nothing is written (its error is the response); when the inputs
carry `objectWriteTraceId` (HubSpot's switch for multi-status errors) the good inputs
are written and the response is 207 with `errors` naming each failed trace id.
"""

from __future__ import annotations

import heapq
import operator
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tests.fakes.hubspot_store import DATE_PROPERTIES, ApiError, Contact, Store, validation

BATCH_MAX = 100
LIST_MAX = 100
SEARCH_MAX = 200
SEARCH_CAP = 10_000  # the search endpoints return at most 10,000 results per query
MAX_GROUPS, MAX_FILTERS_PER_GROUP, MAX_FILTERS = 5, 10, 25
Response = tuple[int, dict[str, Any] | None]
# What one batch input did: the contact and extra result fields (upsert's `new`).
Applied = tuple[Contact, dict[str, Any]]


def _stamp() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _inputs(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise validation("Request body must be an object with an `inputs` array")
    inputs: list[dict[str, Any]] = body["inputs"]
    if len(inputs) > BATCH_MAX:
        raise validation(f"Batch input limit exceeded: {len(inputs)} inputs, at most {BATCH_MAX}")
    if not all(isinstance(i, dict) for i in inputs):
        raise validation("Every input must be an object")
    return inputs


def _batch(
    store: Store, body: Any, apply: Callable[[dict[str, Any]], Applied], ok: int
) -> Response:
    inputs = _inputs(body)
    wanted = body.get("properties") if isinstance(body.get("properties"), list) else None
    multi = any("objectWriteTraceId" in i for i in inputs)
    results: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    first_id = store.next_id
    if not multi:
        store.begin()
    for item in inputs:
        try:
            contact, extra = apply(item)
            results.append({**contact.render(wanted), **extra})
        except ApiError as e:
            if not multi:
                store.rollback(first_id)
                raise
            err = e.body(correlation_id="fake")
            err["context"] = {
                **e.context,
                "objectWriteTraceId": [str(item.get("objectWriteTraceId"))],
            }
            errors.append(err)
    store.commit()
    out: dict[str, Any] = {
        "status": "COMPLETE",
        "results": results,
        "startedAt": _stamp(),
        "completedAt": _stamp(),
    }
    if errors:
        out["errors"], out["numErrors"] = errors, len(errors)
        return 207, out
    return ok, out


def batch_create(store: Store, body: Any) -> Response:
    def apply(item: dict[str, Any]) -> Applied:
        return store.create(item.get("properties", {})), {}

    return _batch(store, body, apply, 201)


def _target(store: Store, item: dict[str, Any]) -> Contact:
    ident = item.get("id")
    if not isinstance(ident, str | int):
        raise validation("Every input needs an `id`")
    c = store.find(str(ident), item.get("idProperty"))
    if c is None:
        raise ApiError(
            404, "OBJECT_NOT_FOUND", f"Object not found. objectId are usually numeric.: {ident}"
        )
    return c


def batch_update(store: Store, body: Any) -> Response:
    def apply(item: dict[str, Any]) -> Applied:
        return store.update(_target(store, item), item.get("properties", {})), {}

    return _batch(store, body, apply, 200)


def batch_upsert(store: Store, body: Any) -> Response:
    def apply(item: dict[str, Any]) -> Applied:
        prop, ident = item.get("idProperty"), item.get("id")
        if prop != "email" or not isinstance(ident, str):
            raise validation("Upsert needs `idProperty` = a unique property (email) and `id`")
        c = store.by_email(ident)
        if c is None:
            return store.create({**item.get("properties", {}), "email": ident}), {"new": True}
        return store.update(c, item.get("properties", {})), {"new": False}

    return _batch(store, body, apply, 200)


def batch_archive(store: Store, body: Any) -> Response:
    for item in _inputs(body):
        store.archive(str(item.get("id", "")))
    return 204, None


def batch_read(store: Store, body: Any) -> Response:
    inputs = _inputs(body)
    wanted = body.get("properties") if isinstance(body.get("properties"), list) else None
    results, missing = [], []
    for item in inputs:
        c = store.find(str(item.get("id", "")), body.get("idProperty"))
        if c is None:
            missing.append(str(item.get("id", "")))
        else:
            results.append(c.render(wanted))
    out: dict[str, Any] = {"status": "COMPLETE", "results": results}
    if missing:
        out["errors"] = [
            {
                "status": "error",
                "category": "OBJECT_NOT_FOUND",
                "message": "Could not get some CONTACT objects, they may be deleted or not exist.",
                "context": {"ids": missing},
            }
        ]
        out["numErrors"] = 1
        return 207, out
    return 200, out


def list_contacts(store: Store, query: dict[str, list[str]]) -> Response:
    limit = _int(query.get("limit", ["10"])[0], "limit")
    if not 1 <= limit <= LIST_MAX:
        raise validation(f"limit must be between 1 and {LIST_MAX}")
    after = query.get("after", [None])[0]
    if after is not None and not after.isdigit():
        raise validation("after must be a cursor returned by a previous page")
    props = query.get("properties", [""])[0]
    wanted = [p for p in props.split(",") if p] or None
    archived = query.get("archived", ["false"])[0].lower() == "true"
    page, nxt = store.list_page(limit, after, archived)
    out: dict[str, Any] = {"results": [c.render(wanted) for c in page]}
    if nxt is not None:
        out["paging"] = {"next": {"after": nxt}}
    return 200, out


def _int(raw: Any, name: str) -> int:
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise validation(f"{name} must be an integer") from None


def _value(c: Contact, name: str) -> int | str | None:
    if name == "createdate":
        return c.created_ms
    if name == "lastmodifieddate":
        return c.updated_ms
    if name == "hs_object_id":
        return int(c.id)
    return c.properties.get(name)


_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "EQ": operator.eq,
    "NEQ": operator.ne,
    "GT": operator.gt,
    "GTE": operator.ge,
    "LT": operator.lt,
    "LTE": operator.le,
}


LMD = "lastmodifieddate"
_NUMERIC: dict[str, Callable[[Contact], int]] = {
    "createdate": lambda c: c.created_ms,
    "lastmodifieddate": lambda c: c.updated_ms,
    "hs_object_id": lambda c: int(c.id),
}


def _predicate(f: dict[str, Any]) -> Callable[[Contact], bool]:
    """One filter as a test of a contact, its value parsed once per query (a search
    reads every contact, so this is what 25,000-contact tests spend their time on)."""
    name, op = f.get("propertyName"), f.get("operator")
    if op == "HAS_PROPERTY":
        return lambda c: _value(c, str(name)) is not None
    if op not in _OPS or not isinstance(name, str) or "value" not in f:
        raise validation(f"Unsupported filter: {op} on {name}")
    compare = _OPS[op]
    numeric = _NUMERIC.get(name)
    if numeric is not None:
        want_int = _int(f["value"], name)
        return lambda c: bool(compare(numeric(c), want_int))
    want = str(f["value"]).lower()

    def text(c: Contact) -> bool:
        have = c.properties.get(name)
        if have is None:
            return bool(op == "NEQ")
        return bool(compare(have.lower(), want))

    return text


def _lmd_floor(groups: list[dict[str, Any]]) -> int | None:
    """The lowest lastmodifieddate any group admits, when every group bounds it below."""
    floors = []
    for g in groups:
        bounds = [
            _int(f["value"], LMD) + (1 if f["operator"] == "GT" else 0)
            for f in g.get("filters", [])
            if f.get("propertyName") == LMD and f.get("operator") in ("GT", "GTE", "EQ")
        ]
        if not bounds:
            return None
        floors.append(max(bounds))
    return min(floors) if floors else None


def _group(filters: list[dict[str, Any]]) -> Callable[[Contact], bool]:
    tests = [_predicate(f) for f in filters]
    return lambda c: all(t(c) for t in tests)


def search(store: Store, body: Any) -> Response:
    if not isinstance(body, dict):
        raise validation("Search body must be an object")
    limit = _int(body.get("limit", 10), "limit")
    if not 1 <= limit <= SEARCH_MAX:
        raise validation(f"limit must be between 1 and {SEARCH_MAX}")
    after = _int(body.get("after", 0) or 0, "after")
    if after >= store.search_cap:
        raise validation(f"Cannot page past {store.search_cap} results: narrow the query instead")
    groups = body.get("filterGroups", [])
    if len(groups) > MAX_GROUPS or any(
        len(g.get("filters", [])) > MAX_FILTERS_PER_GROUP for g in groups
    ):
        raise validation("Too many filter groups or filters in a group")
    if sum(len(g.get("filters", [])) for g in groups) > MAX_FILTERS:
        raise validation("Too many filters")
    for g in groups:
        for f in g.get("filters", []):
            # Checked up front so a bad filter fails even on an empty account.
            if f.get("operator") not in {*_OPS, "HAS_PROPERTY"} or not f.get("propertyName"):
                raise validation(
                    f"Unsupported filter: {f.get('operator')} on {f.get('propertyName')}"
                )
    tests = [_group(g.get("filters", [])) for g in groups]
    pool = store.searchable()
    floor = _lmd_floor(groups)
    if floor is not None:  # a cheap first cut; every filter is still applied below
        pool = [c for c in pool if c.updated_ms >= floor]
    hits = [c for c in pool if not tests or any(t(c) for t in tests)]
    sorts = body.get("sorts") or []
    if len(sorts) > 1:
        raise validation("Search supports one sort")
    key, desc = "hs_object_id", False
    if sorts:
        key = str(sorts[0].get("propertyName"))
        desc = str(sorts[0].get("direction", "ASCENDING")).upper().startswith("DESC")
    order: Callable[[Contact], Any] = lambda c: (_sort_key(c, key), int(c.id))  # noqa: E731
    # Only the first after + limit in order are needed: nsmallest/nlargest equal
    # sorted(...)[:n] and cost a fraction of sorting every hit per page.
    pick = heapq.nlargest if desc else heapq.nsmallest
    page = pick(after + limit, hits, key=order)[after:]
    wanted = body.get("properties") or None
    out: dict[str, Any] = {"total": len(hits), "results": [c.render(wanted) for c in page]}
    if after + limit < len(hits):
        out["paging"] = {"next": {"after": str(after + limit)}}
    return 200, out


def _sort_key(c: Contact, key: str) -> tuple[int, int | str]:
    v = _value(c, key)
    if v is None:
        return (1, "")
    return (0, v) if key in DATE_PROPERTIES or key == "hs_object_id" else (0, str(v))
