"""Anti-entropy hashes the hub's records exactly as an adapter hashes its rows: the
adapter's real digest (MigrationWork.digest over a SQLite CRM) equals the router's
router.antientropy.hub_digest of the same content, and differs when the content does."""

from __future__ import annotations

from typing import Any

from adapters.migration import MigrationWork
from router.antientropy import hub_digest
from tests.factories import make_state
from tests.unit.adapters import test_sql_engine_sqlite as engine_tests
from tests.unit.adapters.test_sql_engine_sqlite import Crm

make_crm = engine_tests.make_crm  # the fixture: demo CRMs on SQLite files


def test_an_adapter_digest_equals_the_hubs_hash_of_the_same_content(make_crm: Any) -> None:
    crm: Crm = make_crm("mktg")  # maps email, first and last name; no phone
    emails = crm.db.insert_contacts(3)
    crm.db.update_by_email(emails[1], first_name=None)
    published = {e.record_id: e for e in crm.capture_and_publish()}
    fields = sorted(crm.engine.mapped["contact"])
    items, _last = MigrationWork(crm.engine).digest("contact", fields, None, 100)
    assert len(items) == 3
    for record_id, _sid, digest, _state in items:
        assert record_id is not None
        event = published[record_id]
        # The hub holds what the adapter published, plus a field another CRM maps, and
        # no entry at all for a field nobody ever set.
        held = {k: v for k, v in event.fields.items() if v is not None}
        held["phone"] = "+15550000001"
        state = make_state({event.actor: 1}, held, actor=event.actor, record_id=record_id)
        assert hub_digest(state, fields).hash == digest
        changed = make_state({event.actor: 1}, {**held, "last_name": "Other"}, record_id=record_id)
        assert hub_digest(changed, fields).hash != digest
