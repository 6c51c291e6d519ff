"""An adapter's read-only part in ``crmsync migrate --dry-run`` (runs on its worker thread).

As the source it reads a page of rows in source-id order *without* capture: a dry run
must leave the links, the outbox and the hub exactly as they were, so a row changed
since capture last looked is planned from its current content, and a row capture never
linked is planned with no record id (the router's identity matching decides what it
would become). As the target it hashes the rows of given record ids.

Hashes are those of :meth:`adapters.migration.MigrationWork.digest` (canonical content
of the fields both sides map), so "unchanged" in the plan means what verification means.
"""

from __future__ import annotations

from collections.abc import Sequence

from adapters import links
from adapters.badrows import why
from adapters.base import Adapter
from adapters.canonical import validate
from adapters.rules import content_hash
from router.adapter_control import PlanRow
from router.identity import key_values

INVALID = "invalid"


def plan_rows(
    adapter: Adapter,
    entity: str,
    fields: Sequence[str],
    keys: Sequence[str],
    after: str | None,
    limit: int,
) -> tuple[list[PlanRow], str | None, int]:
    """The page's live rows as planned, the keyset to continue after, rows read."""
    wanted = set(fields)
    with adapter.snapshot() as tx:
        rows = adapter.read_page(tx, entity, after, limit)
        known = links.by_source(tx, entity, [r.source_record_id for r in rows])
    planned: list[PlanRow] = []
    for row in rows:
        if row.deleted:
            continue  # a deleted record is not one to migrate (as the real run)
        link = known.get(row.source_record_id)
        record_id = link.record_id if link is not None and not link.deleted else None
        try:
            values = validate(entity, row.fields)
        except Exception as e:
            planned.append(PlanRow(source_record_id=row.source_record_id, error=why(e)))
            continue
        picked = {k: v for k, v in values.items() if k in wanted}
        planned.append(
            PlanRow(
                source_record_id=row.source_record_id,
                record_id=record_id,
                hash=content_hash(picked, False),
                keys=key_values(values, keys),
            )
        )
    last = rows[-1].source_record_id if rows else None
    return planned, last, len(rows)


def hashes(
    adapter: Adapter, entity: str, fields: Sequence[str], record_ids: Sequence[str]
) -> dict[str, str | None]:
    """record id -> hash of ``fields`` for the ids this adapter links (None: its row is
    gone or deleted; ``"invalid"``: it breaks the canonical model); unlinked ids absent."""
    wanted = set(fields)
    with adapter.snapshot() as tx:
        found = links.by_records(tx, list(dict.fromkeys(record_ids)))
        mine = {rid: link for rid, link in found.items() if link.entity == entity}
        sids = [link.source_record_id for link in mine.values() if link.source_record_id]
        rows = adapter.read_records(tx, entity, sids)
    out: dict[str, str | None] = {}
    for record_id, link in mine.items():
        row = rows.get(link.source_record_id) if link.source_record_id else None
        if row is None or row.deleted:
            out[record_id] = None
            continue
        try:
            values = validate(entity, row.fields)
        except Exception:
            out[record_id] = INVALID
            continue
        out[record_id] = content_hash({k: v for k, v in values.items() if k in wanted}, False)
    return out
