"""Faults at process level: lost adapter state, connections cut by the broker."""

from __future__ import annotations

import threading
import time

import pytest

from tests.broker import close_connections, delete_queue, queue_depth
from tests.integration.spine import Spine

pytestmark = pytest.mark.integration


def _actors(spine: Spine) -> dict[str, str]:
    return {a["name"]: a["actor"] for a in spine.status()["adapters"]}


def test_adapter_that_lost_its_state_comes_back_as_a_new_epoch(spine: Spine) -> None:
    spine.start()
    spine.dbs["legacy"].insert_contacts(30)
    spine.wait("seeded", lambda: spine.dbs["mktg"].count() == 30)
    before = spine.wait_quiet()

    assert spine.fleet.stop_one("legacy") == 0
    for suffix in ("", "-wal", "-shm"):
        (spine.workdir / f"legacy.state.db{suffix}").unlink(missing_ok=True)
    spine.start_adapter("legacy")
    spine.wait("legacy registered again", lambda: _actors(spine).get("legacy") == "legacy@2")
    # It re-reads its table from the start and recognises what it already shared.
    assert spine.wait_quiet() == before

    # A new edit under the new epoch is accepted everywhere, not taken for a stale one.
    spine.dbs["legacy"].update_by_email("user3@example.com", first_name="AfterRestore")
    spine.wait(
        "the edit made under legacy@2 everywhere",
        lambda: all(
            db.contacts()["user3@example.com"]["first_name"] == "AfterRestore"
            for db in spine.dbs.values()
        ),
    )
    assert spine.wait_quiet()["accepted"] == before["accepted"] + 1


def test_connections_cut_by_the_broker_lose_nothing(spine: Spine, vhost: str) -> None:
    spine.start()
    writer = threading.Thread(
        target=lambda: [
            (spine.dbs["legacy"].insert_contacts(100, start=i * 100), time.sleep(0.1))
            for i in range(10)
        ]
    )
    writer.start()
    spine.wait("deliveries under way", lambda: spine.dbs["sales"].count() >= 100)
    # router + 3 adapters, each reconnects by itself
    assert close_connections(vhost, at_least=4) >= 4
    spine.wait("deliveries under way again", lambda: spine.dbs["sales"].count() >= 500)
    close_connections(vhost)
    writer.join()
    spine.wait(
        "1000 contacts everywhere",
        lambda: spine.dbs["sales"].count() == 1000 and spine.dbs["mktg"].count() == 1000,
        timeout=120,
    )
    verdicts = spine.wait_quiet()
    assert verdicts["accepted"] == 1000
    for name, db in spine.dbs.items():
        with db.engine.connect() as conn:
            assert len(conn.execute(db.table.select()).all()) == 1000, name
    logs = (spine.workdir / "logs" / "router.log").read_text()
    assert "lost the broker connection; reconnecting" in logs


def test_sink_queue_deleted_under_its_consumer_is_declared_again(spine: Spine, vhost: str) -> None:
    """An operator deletes an adapter's sink queue while it consumes: the adapter declares
    and binds it again by itself and later deliveries reach its CRM."""
    spine.start()
    spine.dbs["legacy"].insert_contacts(20)
    spine.wait("seeded", lambda: spine.dbs["sales"].count() == 20)
    spine.wait_quiet()
    delete_queue(vhost, "crmsync.sink.sales")
    spine.wait(
        "the sink declared again",
        lambda: _exists(vhost, "crmsync.sink.sales"),
        timeout=30,
    )
    spine.dbs["legacy"].insert_contacts(20, start=20)
    spine.wait("new contacts delivered", lambda: spine.dbs["sales"].count() == 40, timeout=60)
    logs = (spine.workdir / "logs" / "sales.log").read_text()
    assert "sink queue was deleted" in logs


def _exists(vhost: str, queue: str) -> bool:
    try:
        queue_depth(vhost, queue)
    except OSError:  # urllib's HTTPError (404) is an OSError
        return False
    return True
