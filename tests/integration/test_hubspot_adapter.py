"""The HubSpot adapter against the fake HubSpot, driven through the SDK's SyncEngine as
the runtime drives it (issue 12, item 6): 429s slow it without losing or dead-lettering
anything, a duplicate email becomes a link, an archive is a delete both ways, errors are
classified, a user edit is never overwritten, and the token is in no log line. The
25,000-contact capture across the 10k search cap is test_hubspot_capture_cap.py."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import pytest

from adapters import links
from adapters.base import VersionMismatch
from router.errors import PermanentWriteError, TransientWriteError
from router.events import Scalar
from tests.integration.hubspot_rig import VirtualClock, delivery, drain, rig

pytestmark = pytest.mark.integration


def test_capture_then_echo_and_user_edits(tmp_path: Path) -> None:
    with rig(tmp_path) as (fake, _, engine):
        ids = fake.seed(30)
        result = engine.capture({})
        events = drain(engine)
        assert sorted(e.source_record_id for e in events) == sorted(ids)
        assert all(e.fields["email"] == f"seed{e.source_record_id}@example.test" for e in events)
        # Nothing changed: the overlap re-read is an echo.
        again = engine.capture(result.positions)
        assert again.changes == 0 and drain(engine) == []
        fake.edit(ids[3], firstname="Grace")
        engine.capture(again.positions)
        [edited] = drain(engine)
        assert (edited.source_record_id, edited.fields["first_name"]) == (ids[3], "Grace")
        assert edited.changed == ["first_name"]


def test_429s_slow_writes_and_capture_down_without_losing_anything(tmp_path: Path) -> None:
    # The account allows 8 requests per 10 s, but the adapter was told 100, and another
    # integration spends one request of the account's budget after each of ours: the
    # Remaining headers the adapter sees are stale, so it meets 429s, which must hold
    # it back. Both run on one virtual clock, so the waits cost no wall time.
    clock = VirtualClock()
    with rig(tmp_path, virtual=clock, fake_args={"per_10s": 8}, requests_per_10s=100) as (
        fake,
        adapter,
        engine,
    ):
        ours = fake.handle

        def shared(*args: Any) -> Any:
            answer = ours(*args)
            with fake.lock:
                fake.limits.take()  # the other integration's request, after ours
            return answer

        fake.handle = shared  # type: ignore[method-assign,assignment]
        fake.seed(450)
        engine.capture({})
        captured = drain(engine)
        results = [
            engine.apply(delivery(str(uuid.uuid4()), {"email": f"new{i}@example.test"}))
            for i in range(30)
        ]
        assert len(captured) == 450
        assert [r.action for r in results] == ["applied"] * 30
        assert fake.live_count() == 480
        assert fake.throttled > 0 and adapter.client.retries > 0
        # ~33 requests of ours (and as many of theirs) at 8 per 10 s: 80 s at least.
        assert clock.slept >= 60


def test_duplicate_email_on_create_links_the_existing_contact(tmp_path: Path) -> None:
    with rig(tmp_path) as (fake, adapter, engine):
        [existing] = fake.seed(1)
        record = str(uuid.uuid4())
        fields = {"email": f"SEED{existing}@Example.test", "first_name": "Ada"}
        assert engine.apply(delivery(record, fields)).action == "applied"
        assert fake.live_count() == 1  # no duplicate
        contact = fake.get(existing)
        assert contact is not None and contact.properties["firstname"] == "Ada"
        with adapter.transaction() as tx:
            link = links.by_record(tx, record)
        assert link is not None and link.source_record_id == existing
        # Capture reads our own write back as an echo, not a change.
        engine.capture({})
        assert [e.record_id for e in drain(engine)] == []


def test_bulk_insert_falls_back_per_input_when_one_email_exists(tmp_path: Path) -> None:
    with rig(tmp_path) as (fake, adapter, _):
        [existing] = fake.seed(1)
        items: list[tuple[str, dict[str, Scalar]]] = [
            (str(uuid.uuid4()), {"email": f"bulk{i}@example.test"}) for i in range(150)
        ]
        items[120] = (items[120][0], {"email": f"seed{existing}@example.test"})
        with adapter.transaction() as tx:
            rows = adapter.insert_many(tx, "contact", items)
        assert [r.fields["email"] for r in rows] == [f["email"] for _, f in items]
        assert rows[120].source_record_id == existing
        assert fake.live_count() == 150  # 149 created + the existing one linked
        # The first chunk went in one request; the one the 409 failed, input by input.
        assert fake.requests["POST /crm/v3/objects/contacts/batch/create"] == 2 + 50


def test_one_email_twice_in_a_bulk_insert_is_permanent(tmp_path: Path) -> None:
    with rig(tmp_path) as (_, adapter, _engine):
        items: list[tuple[str, dict[str, Scalar]]] = [
            (str(uuid.uuid4()), {"email": "twice@example.test"}) for _ in range(2)
        ]
        with pytest.raises(PermanentWriteError, match="one contact"), adapter.transaction() as tx:
            adapter.insert_many(tx, "contact", items)


def test_archive_is_a_delete_both_ways(tmp_path: Path) -> None:
    with rig(tmp_path) as (fake, _, engine):
        a, b = fake.seed(2)
        engine.capture({})
        by_sid = {e.source_record_id: e for e in drain(engine)}
        fake.delete(a)  # archived in HubSpot's UI: gone from search and reads
        assert engine.scan_hard_deletes() == 1
        [gone] = drain(engine)
        assert (gone.op, gone.record_id) == ("delete", by_sid[a].record_id)
        # A delete delivered from elsewhere archives the contact.
        seen = by_sid[b]
        result = engine.apply(delivery(seen.record_id, {}, seen.clock, op="delete"))
        assert result.action == "applied"
        archived = fake.get(b)
        assert archived is not None and archived.archived
        assert fake.live_count() == 0


def test_a_restored_contact_comes_back_as_a_record(tmp_path: Path) -> None:
    with rig(tmp_path) as (fake, adapter, engine):
        captured_back, linked_back = fake.seed(2)
        engine.capture({})
        for event in drain(engine):
            delete = delivery(event.record_id, {}, event.clock, op="delete")
            assert engine.apply(delete).action == "applied"
        with adapter.transaction() as tx:
            tomb = links.by_source(tx, "contact", [linked_back])[linked_back]
        # Restored from HubSpot's recycle bin under its id; capture reads it as new.
        fake.restore(captured_back)
        positions = engine.capture({}).positions
        [back] = drain(engine)
        assert (back.op, back.source_record_id) == ("upsert", captured_back)
        # Restored, then a record with its email is delivered before capture saw it:
        # the contact is linked to that record, and the old tombstone lets go of it.
        fake.restore(linked_back)
        fresh = str(uuid.uuid4())
        email = {"email": f"seed{linked_back}@example.test"}
        assert engine.apply(delivery(fresh, email)).action == "applied"
        with adapter.transaction() as tx:
            old = links.by_record(tx, tomb.record_id)
            new = links.by_record(tx, fresh)
        assert old is not None and old.deleted and old.source_record_id is None
        assert new is not None and new.source_record_id == linked_back
        assert fake.live_count() == 2
        engine.capture(positions)
        assert drain(engine) == []


def test_conditional_write_and_bounded_existence_checks(tmp_path: Path) -> None:
    with rig(tmp_path) as (fake, adapter, _):
        ids = fake.seed(250)
        for sid in ids[::50]:
            fake.delete(sid)
        before = fake.requests["POST /crm/v3/objects/contacts/batch/read"]
        with adapter.transaction() as tx:
            present = adapter.existing_ids(tx, "contact", ids)
            row = adapter.read_record(tx, "contact", ids[1], for_update=True)
        assert present == set(ids) - set(ids[::50])
        assert fake.requests["POST /crm/v3/objects/contacts/batch/read"] - before == 3 + 1
        assert row is not None
        fake.edit(ids[1], firstname="Someone")  # a user edit since the version last seen
        with adapter.transaction() as tx, pytest.raises(VersionMismatch) as missed:
            adapter.write_record(tx, "contact", ids[1], "r", {"first_name": "X"}, "stale")
        assert missed.value.current is not None
        contact = fake.get(ids[1])
        assert contact is not None and contact.properties["firstname"] == "Someone"


def test_errors_are_classified(tmp_path: Path) -> None:
    clock = VirtualClock()  # the back-off between retries costs no wall time
    with rig(tmp_path, virtual=clock) as (fake, _, engine):
        fake.fail_next(400)
        with pytest.raises(PermanentWriteError, match="HubSpot 400"):
            engine.apply(delivery(str(uuid.uuid4()), {"email": "x@example.test"}))
        fake.fail_next(502, times=2)  # retried inside the client: the write lands
        assert engine.apply(delivery(str(uuid.uuid4()), {"email": "y@example.test"})).action == (
            "applied"
        )
        fake.fail_next(503, times=20)
        with pytest.raises(TransientWriteError, match="503"):
            engine.apply(delivery(str(uuid.uuid4()), {"email": "z@example.test"}))
        assert fake.live_count() == 1
        assert clock.slept == pytest.approx(0.25 + 0.5 + (0.25 + 0.5 + 1 + 2 + 4))


def test_a_user_edit_is_never_overwritten(tmp_path: Path) -> None:
    with rig(tmp_path) as (fake, _, engine):
        [sid] = fake.seed(1)
        engine.capture({})
        [first] = drain(engine)
        fake.edit(sid, firstname="User")  # not captured yet
        fields = {"email": f"seed{sid}@example.test", "first_name": "X"}
        result = engine.apply(delivery(first.record_id, fields, first.clock))
        assert result.action == "local-change-first"
        contact = fake.get(sid)
        assert contact is not None and contact.properties["firstname"] == "User"
        [published] = drain(engine)
        assert published.fields["first_name"] == "User"


def test_migration_paging_and_count(tmp_path: Path) -> None:
    with rig(tmp_path) as (fake, adapter, _):
        ids = fake.seed(600)
        fake.delete(ids[10])
        with adapter.transaction() as tx:
            assert adapter.count_rows(tx, "contact") == 599
            first = adapter.read_page(tx, "contact", None, 120)
            second = adapter.read_page(tx, "contact", first[-1].source_record_id, 120)
            # A page not continued from this process (a resumed migration): by search.
            resumed = adapter.read_page(tx, "contact", second[5].source_record_id, 230)
            every = list(adapter.list_all(tx, "contact"))
        live = [i for i in ids if i != ids[10]]
        assert [r.source_record_id for r in first + second] == live[:240]
        at = live.index(second[5].source_record_id)
        assert len(resumed) == 230  # two searches: 200 + 30
        assert [r.source_record_id for r in resumed] == live[at + 1 : at + 231]
        assert [r.source_record_id for r in every] == live


def test_token_never_in_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with rig(tmp_path, fake_args={"token": "pat-na1-secret-0123"}) as (fake, _, engine):
        fake.seed(3)
        fake.fail_next(502)
        engine.capture({})
        engine.apply(delivery(str(uuid.uuid4()), {"email": "new@example.test"}))
    with rig(tmp_path, token="pat-na1-wrong-4567") as (fake, _, engine):
        with pytest.raises(PermanentWriteError, match=r"check api\.token_file") as refused:
            engine.capture({})
        assert fake.unauthorized == 1
    text = str(refused.value) + "\n".join(
        f"{r.getMessage()} {getattr(r, 'kv', '')} {r.args}" for r in caplog.records
    )
    assert caplog.records
    for secret in ("pat-na1-secret-0123", "pat-na1-wrong-4567", "Bearer"):
        assert secret not in text


def test_cursor_stays_a_search_lag_behind_so_a_late_indexed_edit_is_read(
    tmp_path: Path,
) -> None:
    # Search shows an edit up to a minute late, and not in stamp order: here A's edit
    # lags 30 s while B (indexed at once) is stamped 20 s later. A cursor that followed
    # B would start the next poll past A's stamp and never see A's edit.
    clock = VirtualClock()
    with rig(tmp_path, virtual=clock, fake_args={"lag": 30.0}, search_lag="60s") as (
        fake,
        _,
        engine,
    ):
        t0_ms = int(clock.now * 1000)
        [a] = fake.seed(1, start_ms=t0_ms - 100_000)
        first = engine.capture({})
        assert [e.source_record_id for e in drain(engine)] == [a]
        fake.edit(a, firstname="Late")  # stamped t0, searchable from t0 + 30 s
        clock.now += 20
        [b] = fake.seed(1, start_ms=t0_ms + 20_000)  # searchable at once
        second = engine.capture(first.positions)
        assert [e.source_record_id for e in drain(engine)] == [b]
        assert second.positions["contact"].timestamp() <= clock.now - 59.999
        clock.now += 15
        engine.capture(second.positions)
        [late] = drain(engine)
        assert (late.source_record_id, late.fields["first_name"]) == (a, "Late")


def test_stale_search_versions_after_our_writes_are_no_changes(tmp_path: Path) -> None:
    # For `lag` seconds after a write, search still returns the version before it.
    # Captured then, that old version must neither undo our write nor resurrect an
    # archived contact as a new record.
    clock = VirtualClock()
    with rig(tmp_path, virtual=clock, fake_args={"lag": 30.0}, search_lag="60s") as (
        fake,
        _,
        engine,
    ):
        kept, archived = fake.seed(2)
        engine.capture({})
        seen = {e.source_record_id: e for e in drain(engine)}
        fields = {"email": f"seed{kept}@example.test", "first_name": "New"}
        assert engine.apply(delivery(seen[kept].record_id, fields, seen[kept].clock)).action == (
            "applied"
        )
        gone = seen[archived]
        assert engine.apply(delivery(gone.record_id, {}, gone.clock, op="delete")).action == (
            "applied"
        )
        clock.now += 5  # both writes still lag in search
        assert engine.capture({}).changes == 0
        assert drain(engine) == []
        clock.now += 60  # indexed now: our own write, an echo; the archive, gone
        assert engine.capture({}).changes == 0
        assert drain(engine) == []
        contact = fake.get(kept)
        assert contact is not None and contact.properties["firstname"] == "New"
