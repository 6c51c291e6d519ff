"""HubSpot's answers as the SDK's rows, pure: a v3 object -> :class:`SourceRow`, batch
results matched to their inputs, and the contact a 409 names."""

from __future__ import annotations

import re
from typing import Any

from adapters.base import SourceRow
from adapters.hubspot import search
from adapters.hubspot.client import Answer
from adapters.hubspot.mapping import ObjectMapping

_EXISTING_RE = re.compile(r"Existing ID:\s*(\d+)")


def existing_id(body: Any) -> str | None:
    """The contact a 409 CONFLICT names ("Contact already exists. Existing ID: N")."""
    if not isinstance(body, dict):
        return None
    ids = (body.get("context") or {}).get("existingId")
    if isinstance(ids, list) and ids:
        return str(ids[0])
    match = _EXISTING_RE.search(str(body.get("message") or ""))
    return match.group(1) if match else None


def results(answer: Answer) -> list[dict[str, Any]]:
    """The objects of a search, list or batch answer (a 207's missing ids are absent)."""
    body = answer.body if isinstance(answer.body, dict) else {}
    return [r for r in body.get("results") or [] if isinstance(r, dict)]


def to_row(entity: str, mapping: ObjectMapping, result: dict[str, Any]) -> SourceRow:
    """A v3 object as the SDK's row: the version is ``lastmodifieddate`` as HubSpot
    spells it, the position the same stamp typed."""
    props = result.get("properties") or {}
    stamp = str(props.get("lastmodifieddate") or result.get("updatedAt"))
    return SourceRow(
        entity=entity,
        source_record_id=str(result["id"]),
        fields=mapping.read(props),
        deleted=bool(result.get("archived", False)),
        version=stamp,
        position=search.parse_stamp(stamp),
    )


def in_input_order(
    props: list[dict[str, str]], found: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Batch results are not promised in input order: match them by email (unique in
    HubSpot) where every input has a distinct one, else take them by position."""
    emails = [(p.get("email") or "").strip().lower() for p in props]
    if all(emails) and len(set(emails)) == len(emails):
        by_email = {
            str((r.get("properties") or {}).get("email") or "").strip().lower(): r for r in found
        }
        if all(e in by_email for e in emails):
            return [by_email[e] for e in emails]
    return found
