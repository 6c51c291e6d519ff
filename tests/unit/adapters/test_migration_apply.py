"""A migration batch applied by the target adapter (adapters.migration.MigrationWork):
new records inserted in bulk and logged as created, a second copy logged unchanged, a
record drifted behind capture's back (same version token) overwritten with the hub's
version, linked records counted as linked; the log keeps each record's first outcome."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from adapters.migration import MigrationWork, summary
from router.clock import VectorClock
from tests.unit.adapters import test_sql_engine_sqlite as engine_tests
from tests.unit.adapters.test_sql_engine_sqlite import Crm, delivery

# the demo CRMs' fixtures
make_crm, legacy = engine_tests.make_crm, engine_tests.legacy


def _migrating(record_id: str, email: str, **fields: Any) -> Any:
    values = {"email": email, "first_name": "Ada", "last_name": "Lovelace", "phone": "+44-1"}
    return delivery(record_id, VectorClock({"sales": 1}), {**values, **fields}).model_copy(
        update={"origin": "migration"}
    )


def _counts(crm: Crm, migration_id: str) -> dict[str, int]:
    with crm.adapter.transaction() as tx:
        counts, _ = summary(tx, migration_id, None, 10)
    return counts.get("contact", {})


def test_new_records_are_created_then_unchanged_and_the_first_outcome_stays(legacy: Crm) -> None:
    work = MigrationWork(legacy.engine)
    events = [_migrating(str(uuid.uuid4()), f"p{i}@example.com") for i in range(30)]
    assert work.apply(events, "m1", set()) == ["created"] * 30
    assert {r[legacy.f["email"]] for r in legacy.all_rows()} >= {
        f"p{i}@example.com" for i in range(30)
    }
    assert all(legacy.link(e.record_id) is not None for e in events)
    # The same batch again (a redelivery after a crash): nothing written, nothing recounted.
    assert work.apply(events, "m1", set()) == ["unchanged"] * 30
    assert _counts(legacy, "m1") == {"created": 30}
    # A later migration of the same records: unchanged; linked where matching joined them.
    linked = {events[0].record_id}
    assert work.apply(events[:2], "m2", linked) == ["linked", "unchanged"]


def test_a_value_changed_behind_captures_back_is_overwritten_with_the_hubs_version(
    legacy: Crm,
) -> None:
    work = MigrationWork(legacy.engine)
    event = _migrating(str(uuid.uuid4()), "drift@example.com")
    work.apply([event], "m1", set())
    # Drift: the value changes, the version token (updated_at) does not.
    with legacy.db.engine.begin() as conn:
        conn.execute(
            legacy.db.table.update()
            .where(legacy.db.c[legacy.f["email"]] == "drift@example.com")
            .values({legacy.f["first_name"]: "Changed"})
        )
    assert work.apply([event], "m2", set()) == ["updated"]
    row = legacy.row_by_email("drift@example.com")
    assert row is not None and row[legacy.f["first_name"]] == "Ada"
    # A user's edit moves the token: it is capture's to publish, never overwritten here.
    legacy.edit_columns("drift@example.com", **{legacy.f["first_name"]: "Users"})
    assert work.apply([event], "m3", set()) == ["unchanged"]
    row = legacy.row_by_email("drift@example.com")
    assert row is not None and row[legacy.f["first_name"]] == "Users"
    with legacy.db.engine.connect() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(legacy.db.table)).scalar_one() >= 1
        )
