"""What one CRM holds of one record, for ``crmsync record show`` (read-only).

The link says which row is the record's and which version the adapter last recorded;
the row is read as it is now, so an operator sees at once a record that is missing here,
deleted here, or edited here since (``differs``) and not captured yet.
"""

from __future__ import annotations

from adapters import links
from adapters.canonical import InvalidRecord, validate
from adapters.engine import SyncEngine
from adapters.rules import content_hash
from router.adapter_control import HeldHere


def where_is(engine: SyncEngine, record_id: str) -> HeldHere:
    adapter = engine.adapter
    with adapter.transaction() as tx:
        link = links.by_record(tx, record_id)
        if link is None:
            return HeldHere(linked=False)
        held = HeldHere(
            linked=True,
            source_record_id=link.source_record_id,
            deleted=link.deleted,
            clock=dict(link.clock),
            pending=not link.published,
        )
        if link.source_record_id is None:
            return held
        row = adapter.read_record(tx, link.entity, link.source_record_id)
    if row is None:
        return held.model_copy(update={"in_crm": False, "deleted": True})
    try:
        fields = validate(link.entity, row.fields, engine.cleansing)
    except InvalidRecord as e:  # shown as the reason: the row holds what the model refuses
        return held.model_copy(update={"in_crm": True, "fields": {"(invalid)": str(e)}})
    differs = content_hash(fields, row.deleted) != link.content_hash
    return held.model_copy(
        update={"in_crm": True, "deleted": row.deleted, "fields": fields, "differs": differs}
    )
