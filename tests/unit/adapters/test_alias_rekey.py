"""An adapter learns that the router linked its row to an existing record (identity
matching, docs/identity.md): a delivery for record R that names this adapter's alias X
in ``x-crmsync-aliases`` re-keys the link X -> R and updates the row, never a second one."""

from __future__ import annotations

import uuid

from adapters import links
from adapters.migration import MigrationWork
from router import topology
from router.clock import VectorClock, merge
from tests.unit.adapters.test_sql_engine_sqlite import (  # noqa: F401 (fixtures)
    Crm,
    delivery,
    legacy,
    make_crm,
    only,
)


def test_a_delivery_naming_our_alias_rekeys_the_link_and_updates_the_row(legacy: Crm) -> None:  # noqa: F811
    legacy.db.insert_contacts(1)
    mine = only(legacy.capture_and_publish())  # published as X; the router linked X to R
    record_id = str(uuid.uuid4())
    resolution = delivery(
        record_id,
        merge(mine.vclock, VectorClock({"sales": 1})).increment("hub"),
        {**mine.fields, "first_name": "Linked"},
        source="hub",
    )
    headers = {topology.ALIASES_HEADER: {"legacy": mine.record_id, "sales": str(uuid.uuid4())}}
    named = topology.aliases_header(headers)
    result = legacy.engine.apply_many([resolution], [named])
    assert [r.action for r in result] == ["applied"]
    rows = legacy.all_rows()
    assert len(rows) == 1 and rows[0]["fname"] == "Linked"
    assert legacy.link(mine.record_id) is None
    link = legacy.link(record_id)
    assert link is not None and link.source_record_id == mine.source_record_id
    assert legacy.capture({}).pending == []  # our own write: no echo
    # A later edit here goes out under the record's id.
    legacy.db.update_by_email(str(mine.fields["email"]), last_name="After")
    assert only(legacy.capture_and_publish()).record_id == record_id


def test_without_our_alias_an_unknown_record_is_a_new_row(legacy: Crm) -> None:  # noqa: F811
    legacy.db.insert_contacts(1)
    mine = only(legacy.capture_and_publish())
    other = delivery(str(uuid.uuid4()), {"sales": 1}, {"email": "zed@example.com"})
    # Another adapter's alias, and one naming a link we do not have, are not ours.
    for named in ({"sales": mine.record_id}, {"legacy": str(uuid.uuid4())}):
        assert legacy.engine.apply(other, named).action == "applied"
        other = delivery(str(uuid.uuid4()), {"sales": 1}, {"email": "zed2@example.com"})
    assert len(legacy.all_rows()) == 3
    with legacy.adapter.transaction() as tx:
        assert links.by_record(tx, mine.record_id) is not None
    assert topology.aliases_header({topology.ALIASES_HEADER: "garbage"}) is None
    assert topology.aliases_header({}) is None


def test_a_repair_naming_our_alias_rekeys_the_link_instead_of_a_second_row(legacy: Crm) -> None:  # noqa: F811
    """Anti-entropy and reconcile repairs of a record this adapter only knows under its
    alias (its link never re-keyed) update that row; without the alias it would be
    written as a second customer."""
    legacy.db.insert_contacts(1)
    mine = only(legacy.capture_and_publish())
    record_id = str(uuid.uuid4())
    hubs = delivery(
        record_id,
        merge(mine.vclock, VectorClock({"sales": 1})).increment("hub"),
        {**mine.fields, "first_name": "Repaired"},
        source="hub",
    )
    outcome = MigrationWork(legacy.engine).repair(hubs, {"legacy": mine.record_id})
    assert outcome in ("repaired", "applied")
    rows = legacy.all_rows()
    assert len(rows) == 1 and rows[0]["fname"] == "Repaired"
    assert legacy.link(mine.record_id) is None
    link = legacy.link(record_id)
    assert link is not None and link.source_record_id == mine.source_record_id
