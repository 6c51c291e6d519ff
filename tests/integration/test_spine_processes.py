"""The sync spine's acceptance scenarios, with every component a separate process."""

from __future__ import annotations

import threading

import pytest

from tests.integration.spine import Spine

pytestmark = pytest.mark.integration

MAPPED = ("email", "first_name", "last_name")


def _same_everywhere(spine: Spine, emails: int | None = None) -> None:
    views = {name: db.contacts() for name, db in spine.dbs.items()}
    legacy = views["legacy"]
    if emails is not None:
        assert len(legacy) == emails
    for name, view in views.items():
        assert set(view) == set(legacy), f"{name} holds other records than legacy"
        for email, contact in legacy.items():
            mine = {k: view[email][k] for k in MAPPED}
            assert mine == {k: contact[k] for k in MAPPED}, f"{name} differs on {email}"
    # sales and legacy both map phone
    for email, contact in legacy.items():
        assert views["sales"][email]["phone"] == contact["phone"]


def test_contacts_updates_and_deletes_propagate_without_ping_pong(spine: Spine) -> None:
    spine.start()
    spine.dbs["legacy"].insert_contacts(1000)
    spine.wait(
        "1000 contacts everywhere",
        lambda: spine.dbs["sales"].count() == 1000 and spine.dbs["mktg"].count() == 1000,
    )
    _same_everywhere(spine, 1000)

    spine.dbs["sales"].update_by_email("user10@example.com", first_name="FromSales")
    spine.dbs["mktg"].update_by_email("user11@example.com", last_name="FromMktg")
    spine.dbs["legacy"].update_by_email("user12@example.com", phone="+1-555-0000000")
    spine.dbs["legacy"].delete_by_email("user13@example.com")
    spine.wait(
        "edits and the delete everywhere",
        lambda: all(
            db.contacts().get("user10@example.com", {}).get("first_name") == "FromSales"
            and db.contacts().get("user11@example.com", {}).get("last_name") == "FromMktg"
            and "user13@example.com" not in db.contacts()
            for db in spine.dbs.values()
        ),
    )
    verdicts = spine.wait_quiet()
    _same_everywhere(spine, 999)
    assert spine.dbs["sales"].contacts()["user12@example.com"]["phone"] == "+1-555-0000000"
    # sales keeps the deleted row, flagged; mktg has none
    assert "user13@example.com" in spine.dbs["sales"].contacts(include_deleted=True)
    # exactly the changes users made, nothing echoed back
    assert verdicts.get("accepted") == 1000 + 4
    assert verdicts.get("conflict", 0) == 0
    assert spine.wait_quiet() == verdicts


@pytest.mark.parametrize("victim", ["router", "sales"], ids=["router", "target-adapter"])
def test_a_process_killed_mid_stream_loses_and_duplicates_nothing(
    spine: Spine, victim: str
) -> None:
    spine.start()
    writer = threading.Thread(
        target=lambda: [spine.dbs["legacy"].insert_contacts(200, start=i * 200) for i in range(10)]
    )
    writer.start()
    spine.wait("deliveries under way", lambda: spine.dbs["sales"].count() >= 300)
    spine.fleet.kill(victim)
    writer.join()
    if victim == "router":
        spine.start_router()
    else:
        spine.start_adapter(victim)
    spine.wait(
        "2000 contacts everywhere",
        lambda: spine.dbs["sales"].count() >= 2000 and spine.dbs["mktg"].count() >= 2000,
    )
    spine.wait_quiet()
    _same_everywhere(spine, 2000)
    for name, db in spine.dbs.items():
        with db.engine.connect() as conn:
            rows = conn.execute(db.table.select()).all()
        assert len(rows) == 2000, f"{name} has {len(rows)} rows (duplicates?)"


def test_source_adapter_killed_mid_capture_publishes_everything_once(spine: Spine) -> None:
    spine.start()
    spine.dbs["legacy"].insert_contacts(1500)
    spine.wait("capture under way", lambda: spine.dbs["sales"].count() >= 100)
    spine.fleet.kill("legacy")
    spine.start_adapter("legacy")
    spine.wait(
        "1500 contacts everywhere",
        lambda: spine.dbs["sales"].count() >= 1500 and spine.dbs["mktg"].count() >= 1500,
    )
    verdicts = spine.wait_quiet()
    _same_everywhere(spine, 1500)
    # Re-publishing after the crash may repeat events, which the router recognises.
    assert verdicts.get("accepted") == 1500


def test_late_adapter_joins_and_stopped_adapter_catches_up(spine: Spine) -> None:
    spine.start(("legacy", "sales"))
    spine.dbs["legacy"].insert_contacts(50)
    spine.wait("first contacts in sales", lambda: spine.dbs["sales"].count() == 50)

    spine.start_adapter("mktg")  # nothing else restarts
    spine.wait_registered(["legacy", "sales", "mktg"])
    spine.dbs["legacy"].insert_contacts(50, start=50)
    spine.wait(
        "new contacts reach the late adapter",
        lambda: (
            {f"user{i}@example.com" for i in range(50, 100)} <= set(spine.dbs["mktg"].contacts())
        ),
    )

    # sales must have written the second 50 too before it stops: else some of them are
    # still in its sink beside the 11 below (seen under parallel load).
    spine.wait("sales caught up", lambda: spine.dbs["sales"].count() == 100)
    spine.wait_quiet()
    codes = spine.fleet.stop_one("sales")
    assert codes == 0
    spine.dbs["legacy"].update_by_email("user60@example.com", first_name="WhileDown")
    spine.dbs["legacy"].insert_contacts(10, start=100)
    spine.wait(
        "mktg got them",
        lambda: (
            spine.dbs["mktg"].contacts().get("user60@example.com", {}).get("first_name")
            == "WhileDown"
        ),
    )
    status = spine.status()
    assert "sales" in {a["name"] for a in status["adapters"]}, "a clean stop must not deregister"
    sink = next(q for q in status["queues"] if q["name"] == "crmsync.sink.sales")
    assert sink["messages"] == 11  # waiting in its queue

    spine.start_adapter("sales")
    spine.wait(
        "sales caught up",
        lambda: (
            spine.dbs["sales"].count() == 110
            and spine.dbs["sales"].contacts()["user60@example.com"]["first_name"] == "WhileDown"
        ),
    )


def test_concurrent_edits_in_two_crms_converge(spine: Spine) -> None:
    spine.start()
    spine.dbs["legacy"].insert_contacts(20)
    spine.wait(
        "seeded", lambda: spine.dbs["mktg"].count() == 20 and spine.dbs["sales"].count() == 20
    )
    for i in range(10):
        spine.dbs["sales"].update_by_email(f"user{i}@example.com", last_name=f"Sales{i}")
        spine.dbs["legacy"].update_by_email(f"user{i}@example.com", last_name=f"Legacy{i}")
    verdicts = spine.wait_quiet()
    assert verdicts.get("conflict", 0) >= 1
    _same_everywhere(spine, 20)
    # the later edit (legacy's) wins every conflict
    for i in range(10):
        assert spine.dbs["mktg"].contacts()[f"user{i}@example.com"]["last_name"] == f"Legacy{i}"
