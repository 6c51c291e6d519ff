"""The automatic conflict policies end to end (``field-merge``, ``priority``, per-field
overrides, delete against update) and a parked conflict seen by ``crmsync status`` and
across a router restart: three SQL CRMs, the router and the adapters as real processes.

As in test_spine_conflicts_manual.py, concurrency is made certain rather than raced: the
adapters of the CRMs that edit are stopped, their users edit, then the adapters start
again; neither side has seen the other's edit.

What the router counts: the side that reaches it first is ``accepted`` (a router cannot
know a concurrent change is on its way) and sent on; the other is concurrent with it and
counted ``conflict`` once, its resolution going to every CRM (DESIGN "Conflict policies").
"""

from __future__ import annotations

import json
import time

import pytest
import sqlalchemy as sa

from adapters.links import link_table
from tests.integration.cli_runner import run_cli
from tests.integration.spine import Spine

pytestmark = pytest.mark.integration

ALL = ["legacy", "sales", "mktg"]
EMAIL = "user0@example.com"
OTHER = "user1@example.com"
SEEDED = 3


def _verdict(spine: Spine, name: str) -> int:
    return int(spine.status()["router"].get("verdicts", {}).get(name, 0))


def _verdicts(spine: Spine) -> dict[str, int]:
    return dict(spine.status()["router"].get("verdicts", {}))


def _conflicts(spine: Spine) -> list[dict[str, object]]:
    result = run_cli("conflicts", "list", "--json", amqp=spine.url)
    assert result.code == 0, result
    found: list[dict[str, object]] = json.loads(result.stdout)
    return found


def _history(spine: Spine, record_id: str) -> list[dict[str, object]]:
    result = run_cli("conflicts", "history", record_id, "--json", amqp=spine.url)
    assert result.code == 0, result
    found: list[dict[str, object]] = json.loads(result.stdout)
    return found


def _record_id(spine: Spine, email: str) -> str:
    """The global record id of a contact, from the sales adapter's link table (it lives
    in the sales CRM's own database, next to the data)."""
    db = spine.dbs["sales"]
    people = db.table
    query = (
        sa.select(link_table.c.record_id)
        .select_from(link_table.join(people, link_table.c.source_record_id == people.c[db.crm.id]))
        .where(people.c[db.crm.fields["email"]] == email)
    )
    with db.engine.connect() as conn:
        [record_id] = conn.execute(query).scalars().all()
    return str(record_id)


def _boot(spine: Spine, conflicts: str) -> None:
    """Router with these ``[conflicts.contact]`` rules, three adapters, contacts seeded in
    legacy and everywhere, and the router done with them."""
    spine.set_conflicts(conflicts)
    spine.start(tuple(ALL))
    spine.dbs["legacy"].insert_contacts(SEEDED)
    spine.wait(
        "seeded",
        lambda: (
            all(spine.dbs[n].count() == SEEDED for n in ("sales", "mktg"))
            and _verdict(spine, "accepted") == SEEDED
        ),
    )


def _stop(spine: Spine, *names: str) -> None:
    for name in names:
        assert spine.fleet.stop_one(name) == 0, name


def _edit(spine: Spine, name: str, email: str, **fields: object) -> None:
    spine.dbs[name].update_by_email(email, **fields)
    # The next edit is later in wall time for certain (occurred_at is the row's timestamp).
    time.sleep(0.05)


def _everywhere(spine: Spine, email: str, **expected: object) -> bool:
    """Every CRM holds the live contact with these values (for the fields it maps)."""
    for db in spine.dbs.values():
        row = db.contacts().get(email)
        if row is None:
            return False
        if any(row[k] != v for k, v in expected.items() if k in row):
            return False
    return True


def _assert_everywhere(spine: Spine, email: str, **expected: object) -> None:
    for name, db in spine.dbs.items():
        row = db.contacts()[email]
        for field, value in expected.items():
            if field in row:  # mktg does not map phone
                assert row[field] == value, (name, field, row)


def test_field_merge_keeps_both_sides_edits_of_different_fields(spine: Spine) -> None:
    _boot(spine, '[conflicts.contact]\npolicy = "field-merge"\n')
    before = _verdicts(spine)

    _stop(spine, "sales", "mktg")
    _edit(spine, "sales", EMAIL, last_name="Salesperson", phone="+44 20 7946 0001")
    _edit(spine, "mktg", EMAIL, first_name="Marketa")
    spine.start_adapter("sales")
    spine.start_adapter("mktg")

    spine.wait(
        "both edits everywhere",
        lambda: _everywhere(
            spine, EMAIL, last_name="Salesperson", first_name="Marketa", phone="+44 20 7946 0001"
        ),
    )
    after = spine.wait_quiet()
    _assert_everywhere(
        spine, EMAIL, last_name="Salesperson", first_name="Marketa", phone="+44 20 7946 0001"
    )
    # The first to arrive is accepted, the other is concurrent with it: one conflict,
    # merged by the router (nothing contested), nothing parked.
    assert after.get("accepted", 0) - before.get("accepted", 0) == 1, after
    assert after.get("conflict", 0) - before.get("conflict", 0) == 1, after
    assert after.get("parked", 0) == 0 and after.get("held", 0) == 0, after
    assert _conflicts(spine) == []
    [entry] = _history(spine, _record_id(spine, EMAIL))
    assert entry["status"] == "resolved" and entry["resolved_by"] == "policy", entry
    assert entry["settlement"]["fields"] == {}, entry  # type: ignore[index]


def _priority_round(spine: Spine, email: str, first: str, second: str, tag: str) -> None:
    """sales and mktg edit last_name, mktg later (lww would keep mktg's value); ``first``'s
    edit reaches the router, and is accepted, before ``second``'s adapter even starts."""
    before = _verdicts(spine)
    _stop(spine, "sales", "mktg")
    _edit(spine, "sales", email, last_name=f"Sales{tag}")
    _edit(spine, "mktg", email, last_name=f"Mktg{tag}")
    spine.start_adapter(first)
    spine.wait(
        f"{first}'s edit accepted",
        lambda: _verdict(spine, "accepted") == before.get("accepted", 0) + 1,
    )
    spine.start_adapter(second)
    spine.wait(
        f"{second}'s edit in conflict",
        lambda: _verdict(spine, "conflict") == before.get("conflict", 0) + 1,
    )
    spine.wait(
        f"sales' value everywhere ({tag})",
        lambda: _everywhere(spine, email, last_name=f"Sales{tag}"),
    )
    after = spine.wait_quiet()
    _assert_everywhere(spine, email, last_name=f"Sales{tag}")
    assert after.get("accepted", 0) - before.get("accepted", 0) == 1, (tag, after)
    assert after.get("conflict", 0) - before.get("conflict", 0) == 1, (tag, after)
    assert after.get("parked", 0) == 0, after

    [entry] = _history(spine, _record_id(spine, email))
    assert entry["resolved_by"] == "policy", entry
    how = entry["settlement"]["fields"]["last_name"]  # type: ignore[index]
    assert how["policy"] == "priority", (tag, how)
    assert how["value"] == f"Sales{tag}", (tag, how)
    assert how["source"] == "sales", (tag, how)
    assert how["losing"] == [["mktg", f"Mktg{tag}"]], (tag, how)


def test_priority_wins_whatever_the_arrival_order(spine: Spine) -> None:
    _boot(
        spine,
        '[conflicts.contact]\npolicy = "priority"\npriority = ["sales", "legacy", "mktg"]\n',
    )
    _priority_round(spine, EMAIL, "sales", "mktg", "A")  # the winner's edit arrives first
    _priority_round(spine, OTHER, "mktg", "sales", "B")  # the loser's edit arrives first


def test_per_field_override_beats_the_entity_policy(spine: Spine) -> None:
    _boot(
        spine,
        '[conflicts.contact]\npolicy = "lww"\npriority = ["mktg", "sales"]\n'
        '[conflicts.contact.fields]\nlast_name = "priority"\n',
    )
    before = _verdicts(spine)
    _stop(spine, "sales", "mktg")
    _edit(spine, "mktg", EMAIL, first_name="Mkfirst", last_name="Mklast")
    _edit(spine, "sales", EMAIL, first_name="Safirst", last_name="Salast")  # the later edit
    spine.start_adapter("sales")
    spine.start_adapter("mktg")

    spine.wait(
        "the resolution everywhere",
        lambda: _everywhere(spine, EMAIL, first_name="Safirst", last_name="Mklast"),
    )
    after = spine.wait_quiet()
    # last_name: priority (mktg ranks first) though sales wrote later; first_name: lww.
    _assert_everywhere(spine, EMAIL, first_name="Safirst", last_name="Mklast")
    assert after.get("conflict", 0) - before.get("conflict", 0) == 1, after
    assert after.get("parked", 0) == 0, after
    [entry] = _history(spine, _record_id(spine, EMAIL))
    fields = entry["settlement"]["fields"]  # type: ignore[index]
    assert fields["last_name"]["policy"] == "priority", fields
    assert fields["last_name"]["value"] == "Mklast", fields
    assert fields["last_name"]["losing"] == [["sales", "Salast"]], fields
    assert fields["first_name"]["policy"] == "lww", fields
    assert fields["first_name"]["value"] == "Safirst", fields
    assert fields["first_name"]["losing"] == [["mktg", "Mkfirst"]], fields


def test_update_wins_over_a_concurrent_delete_and_the_deleter_gets_it_back(
    spine: Spine,
) -> None:
    _boot(spine, '[conflicts.contact]\npolicy = "lww"\n')  # deletes = "update-wins" (default)
    before = _verdicts(spine)
    _stop(spine, "sales", "mktg")
    _edit(spine, "mktg", EMAIL, last_name="Kept")
    spine.dbs["sales"].delete_by_email(EMAIL)  # the later change: time does not decide
    assert EMAIL not in spine.dbs["sales"].contacts()
    spine.start_adapter("sales")
    spine.start_adapter("mktg")

    # contacts() lists live rows only: sales' deleted flag is cleared again.
    spine.wait("the edited record everywhere", lambda: _everywhere(spine, EMAIL, last_name="Kept"))
    after = spine.wait_quiet()
    _assert_everywhere(spine, EMAIL, last_name="Kept")
    assert all(db.count() == SEEDED for db in spine.dbs.values())
    assert after.get("conflict", 0) - before.get("conflict", 0) == 1, after
    assert after.get("parked", 0) == 0, after
    [entry] = _history(spine, _record_id(spine, EMAIL))
    assert entry["settlement"]["deleted"] is False, entry  # type: ignore[index]


def test_delete_wins_deletes_the_record_in_every_crm(spine: Spine) -> None:
    _boot(spine, '[conflicts.contact]\npolicy = "lww"\ndeletes = "delete-wins"\n')
    before = _verdicts(spine)
    _stop(spine, "sales", "mktg")
    spine.dbs["sales"].delete_by_email(EMAIL)
    time.sleep(0.05)
    _edit(spine, "mktg", EMAIL, last_name="Doomed")  # the later change: time does not decide
    spine.start_adapter("sales")
    spine.start_adapter("mktg")

    def gone() -> bool:
        return all(EMAIL not in db.contacts() for db in spine.dbs.values())

    spine.wait("the record deleted everywhere", gone)
    after = spine.wait_quiet()
    assert gone()
    # Soft deletes keep the row (flag set), mktg's hard deletes remove it.
    assert EMAIL in spine.dbs["legacy"].contacts(include_deleted=True)
    assert EMAIL in spine.dbs["sales"].contacts(include_deleted=True)
    assert EMAIL not in spine.dbs["mktg"].contacts(include_deleted=True)
    assert all(db.count() == SEEDED - 1 for db in spine.dbs.values())
    assert after.get("conflict", 0) - before.get("conflict", 0) == 1, after
    assert after.get("parked", 0) == 0, after
    [entry] = _history(spine, _record_id(spine, EMAIL))
    assert entry["settlement"]["deleted"] is True, entry  # type: ignore[index]


def _park_one(spine: Spine) -> dict[str, object]:
    """A manual conflict on last_name between sales and mktg, parked."""
    _stop(spine, "sales", "mktg")
    _edit(spine, "sales", EMAIL, last_name="Sales")
    _edit(spine, "mktg", EMAIL, last_name="Mktg")
    spine.start_adapter("sales")
    spine.start_adapter("mktg")
    spine.wait("the conflict parked", lambda: _verdict(spine, "parked") == 1)
    [conflict] = _conflicts(spine)
    return conflict


def test_status_shows_parked_conflicts(spine: Spine) -> None:
    _boot(spine, '[conflicts.contact]\npolicy = "manual"\n')
    calm = run_cli("status", amqp=spine.url)
    assert calm.code == 0, calm
    assert "parked" not in calm.stdout, calm.stdout

    _park_one(spine)
    shown = run_cli("status", amqp=spine.url)
    assert shown.code == 1, shown  # needs attention: a person must decide
    assert "1 conflict(s) parked" in shown.stdout, shown.stdout
    assert "needs attention: 1 conflict(s) parked" in shown.stdout, shown.stdout
    as_json = run_cli("status", "--json", amqp=spine.url)
    assert as_json.code == 1, as_json
    data = json.loads(as_json.stdout)
    assert data["router"]["store"]["conflicts_open"] == 1, data["router"]
    assert data["attention"] == ["1 conflict(s) parked"], data["attention"]


def test_parked_conflict_survives_a_router_restart(spine: Spine) -> None:
    _boot(spine, '[conflicts.contact]\npolicy = "manual"\n')
    original = spine.dbs["mktg"].contacts()[EMAIL]
    conflict = _park_one(spine)

    assert spine.fleet.stop_one("router") == 0
    spine.start_router()
    spine.wait("the router back", lambda: bool(spine.status()["router"]["alive"]))

    [still] = _conflicts(spine)
    assert still["id"] == conflict["id"] and still["record_id"] == conflict["record_id"]
    assert still["held"] == 0 and still["fields"] == ["last_name"], still
    data = json.loads(run_cli("status", "--json", amqp=spine.url).stdout)
    assert data["router"]["store"]["conflicts_open"] == 1, data["router"]

    # A change arriving after the restart still waits behind the parked conflict.
    spine.dbs["sales"].update_by_email(EMAIL, first_name="Afterwards")
    spine.wait("sales' edit held", lambda: _verdict(spine, "held") == 1)
    spine.wait_quiet()
    for name in ("legacy", "mktg"):
        assert spine.dbs[name].contacts()[EMAIL]["first_name"] == original["first_name"], name
    assert spine.dbs["mktg"].contacts()[EMAIL]["last_name"] == "Mktg"
    [held] = _conflicts(spine)
    assert held["held"] == 1, held

    resolved = run_cli(
        "conflicts", "resolve", str(conflict["id"]), "--field", "last_name=mktg", amqp=spine.url
    )
    assert resolved.code == 0, resolved
    assert f"conflict {conflict['id']} resolved" in resolved.stdout
    spine.wait(
        "the resolution everywhere",
        lambda: _everywhere(spine, EMAIL, last_name="Mktg", first_name="Afterwards"),
    )
    spine.wait_quiet()
    _assert_everywhere(spine, EMAIL, last_name="Mktg", first_name="Afterwards")
    assert _conflicts(spine) == []
    [entry] = _history(spine, str(conflict["record_id"]))
    assert entry["status"] == "resolved", entry
    assert str(entry["resolved_by"]).startswith("operator:"), entry
    how = entry["settlement"]["fields"]["last_name"]  # type: ignore[index]
    assert how["value"] == "Mktg" and how["losing"] == [["sales", "Sales"]], how
