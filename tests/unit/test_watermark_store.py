"""The actors' marks in the state store (router/watermark_store.py), on SQLite."""

from __future__ import annotations

from pathlib import Path

from router import watermark_store
from router.state import RouterStore
from router.watermarks import FROM_THE_FUTURE, Watermarks
from tests.factories import make_state, new_id


def store_with_a_record(tmp_path: Path) -> RouterStore:
    store = RouterStore(f"sqlite:///{tmp_path / 'router.db'}")
    state = make_state({"legacy": 5, "hub": 2}, {"email": "a@x.io"}, record_id=new_id(), version=0)
    store.commit_batch([], [state], [], [])
    return store


def test_marks_start_from_stored_clocks_once_then_from_the_table(tmp_path: Path) -> None:
    store = store_with_a_record(tmp_path)
    assert watermark_store.opened(store) == ({"legacy": 5, "hub": 2}, set())
    with store.transaction() as conn:
        watermark_store.save(conn, {"legacy": 7, "sales": 1}, {"legacy": 5, "hub": 2})
    assert watermark_store.opened(store) == ({"legacy": 7, "hub": 2, "sales": 1}, set())
    with store.transaction() as conn:  # another router went further: never lowered
        watermark_store.save(conn, {"legacy": 6}, {"legacy": 5, "hub": 2, "sales": 1})
    assert watermark_store.opened(store)[0]["legacy"] == 7
    store.close()


def test_after_a_restore_only_the_new_hub_epoch_is_exact(tmp_path: Path) -> None:
    store = store_with_a_record(tmp_path)
    highs, _ = watermark_store.opened(store)
    doubtful = watermark_store.restored(store, {"legacy", "sales", "hub", "hub@2"}, "hub@2")
    assert doubtful == {"legacy", "sales", "hub"}
    highs, inexact = watermark_store.opened(store)
    assert inexact == {"legacy", "sales", "hub"}, "kept across restarts"
    batch = Watermarks(highs, {"legacy", "sales", "hub", "hub@2"}, inexact).batch()
    # Versions accepted after the backup are in the CRMs: their counters pass...
    assert batch.refusal({"legacy": 9, "hub": 40, "sales": 3}, "sales") is None
    # ...but the hub's new epoch, the only one a resolution increments, is checked.
    refused = batch.refusal({"hub@2": 1, "sales": 3}, "sales")
    assert refused is not None and refused[0] == FROM_THE_FUTURE
    store.close()
