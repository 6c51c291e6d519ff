"""Modified-since capture through HubSpot's search endpoint, exact across its limits.

Search is the only way to ask HubSpot what changed (``lastmodifieddate GTE t``), and it
returns at most 10,000 results per query however it is paged. So no query here is ever
paged: every request is a fresh query anchored on the last position read, a keyset
``(lastmodifieddate, hs_object_id)``::

    (lastmodifieddate EQ t AND hs_object_id GT id) OR (lastmodifieddate GT t)

sorted by ``lastmodifieddate``. HubSpot sorts by one property only, so the order of
records sharing a millisecond is not promised. A full page therefore keeps only the
milliseconds it holds completely (all but its last); when one millisecond fills a whole
page, that millisecond is read alone, sorted by ``hs_object_id``, which is exact. Nothing
is missed or read twice within one pass, however many records share a stamp.

Pure query building and page trimming, plus :func:`read_changes` that sends them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from adapters.hubspot.client import Answer

PAGE_MAX = 200  # search's page limit
LMD = "lastmodifieddate"
ID = "hs_object_id"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Anchor = tuple[int, int]  # (lastmodifieddate epoch ms, hs_object_id)


class Poster(Protocol):
    def post(self, path: str, body: Any, *, conflict_ok: bool = False) -> Answer: ...


def to_ms(stamp: datetime) -> int:
    """Epoch milliseconds (naive datetimes are UTC), exact: no float rounding."""
    aware = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    return (aware - _EPOCH) // timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def parse_stamp(text: str) -> datetime:
    """HubSpot's ISO 8601 stamp (``2026-12-03T06:27:03.123Z``) as an aware UTC datetime."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _f(name: str, op: str, value: int) -> dict[str, Any]:
    return {"propertyName": name, "operator": op, "value": str(value)}


def keyset_body(
    since_ms: int | None, anchor: Anchor | None, properties: Sequence[str], limit: int
) -> dict[str, Any]:
    """The next page after ``anchor`` (None: from ``since_ms``, or from the beginning)."""
    if anchor is not None:
        t, ident = anchor
        groups = [
            {"filters": [_f(LMD, "EQ", t), _f(ID, "GT", ident)]},
            {"filters": [_f(LMD, "GT", t)]},
        ]
    else:
        groups = [{"filters": [_f(LMD, "GTE", since_ms or 0)]}]
    return {
        "filterGroups": groups,
        "sorts": [{"propertyName": LMD, "direction": "ASCENDING"}],
        "properties": list(properties),
        "limit": min(limit, PAGE_MAX),
    }


def same_ms_body(t: int, after_id: int, properties: Sequence[str], limit: int) -> dict[str, Any]:
    """One millisecond's records after ``after_id``, in id order (an exact sort)."""
    return {
        "filterGroups": [{"filters": [_f(LMD, "EQ", t), _f(ID, "GT", after_id)]}],
        "sorts": [{"propertyName": ID, "direction": "ASCENDING"}],
        "properties": list(properties),
        "limit": min(limit, PAGE_MAX),
    }


def id_after_body(after_id: int, properties: Sequence[str], limit: int) -> dict[str, Any]:
    """Records in id order after ``after_id``: a migration page resumed by search."""
    return {
        "filterGroups": [{"filters": [_f(ID, "GT", after_id)]}],
        "sorts": [{"propertyName": ID, "direction": "ASCENDING"}],
        "properties": list(properties),
        "limit": min(limit, PAGE_MAX),
    }


def key_of(result: dict[str, Any]) -> Anchor:
    props = result.get("properties") or {}
    stamp = props.get(LMD) or result.get("updatedAt")
    return to_ms(parse_stamp(str(stamp))), int(result["id"])


def complete_prefix(
    results: list[dict[str, Any]], full: bool
) -> tuple[list[dict[str, Any]], int | None]:
    """The results whose milliseconds the page holds completely, in keyset order, and
    the millisecond to read alone when one fills the whole page (else None)."""
    ordered = sorted(results, key=key_of)
    if not full or not ordered:
        return ordered, None
    last = key_of(ordered[-1])[0]
    kept = [r for r in ordered if key_of(r)[0] < last]
    return kept, (last if not kept else None)


def read_changes(
    client: Poster,
    path: str,
    properties: Sequence[str],
    since: datetime | None,
    after: Anchor | None,
    limit: int,
) -> list[dict[str, Any]]:
    """At most ``limit`` records changed at or after ``since``, strictly after the
    keyset ``after``, in ``(lastmodifieddate, id)`` order."""
    since_ms = None if since is None else to_ms(since)
    out: list[dict[str, Any]] = []
    anchor = after
    stuck: int | None = None  # a millisecond too full for one page, being read alone
    while len(out) < limit:
        want = min(PAGE_MAX, limit - len(out))
        if stuck is None or anchor is None or anchor[0] != stuck:
            body = keyset_body(since_ms, anchor, properties, PAGE_MAX)
            results = _results(client.post(path, body))
            page, stuck = complete_prefix(results, len(results) >= PAGE_MAX)
        if stuck is not None:
            # One millisecond fills the page: read it alone, in id order.
            start = anchor[1] if anchor is not None and anchor[0] == stuck else 0
            results = _results(client.post(path, same_ms_body(stuck, start, properties, want)))
            out.extend(results)
            if len(results) < want:
                anchor, stuck = (stuck, 2**62), None  # that millisecond is done: on to the next
            elif results:
                anchor = key_of(results[-1])
            continue
        out.extend(page[:want])
        if len(results) < PAGE_MAX:
            break  # the query's last page: nothing more changed
        anchor = key_of(out[-1])
    return out[:limit]


def _results(answer: Answer) -> list[dict[str, Any]]:
    body = answer.body if isinstance(answer.body, dict) else {}
    results = body.get("results") or []
    return [r for r in results if isinstance(r, dict)]
