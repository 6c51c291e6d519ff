"""The SQLite specifics of the router's state store (router/state.py).

DESIGN.md: "State store: SQLite (WAL, ``synchronous=FULL``) by default for a single host".
The store behaviour shared with PostgreSQL and MariaDB is in
tests/integration/test_state_store.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from router.database import make_engine
from router.errors import ConfigError, StateError
from router.state import RouterStore


def test_sqlite_store_uses_wal_full_sync_and_a_busy_timeout(tmp_path: Path) -> None:
    store = RouterStore(f"sqlite:///{tmp_path / 'router.db'}")
    try:
        # every pooled connection gets the pragmas, not just the first one
        with store.engine.connect() as a, store.engine.connect() as b:
            for conn in (a, b):
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 2  # FULL
                assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 10000
    finally:
        store.close()


def test_sqlite_store_creates_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "state" / "nested" / "router.db"
    store = RouterStore(f"sqlite:///{path}")
    try:
        assert path.is_file()
        assert store.hub_actor == "hub"
    finally:
        store.close()


def test_in_memory_sqlite_url_works() -> None:
    engine = make_engine("sqlite:///:memory:")
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()


def test_malformed_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not a database URL"):
        make_engine("state/router.db")


def test_unopenable_sqlite_file_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "router.db").mkdir()  # a directory where the database file should be
    with pytest.raises(StateError, match="cannot open state store"):
        RouterStore(f"sqlite:///{tmp_path / 'router.db'}")


def test_retrying_starts_over_after_a_version_conflict_and_gives_up_at_last(
    tmp_path: Path,
) -> None:
    from sqlalchemy.engine import Connection

    from router.state import RouterStore, VersionConflict

    store = RouterStore(f"sqlite:///{tmp_path}/r.db")
    calls: list[int] = []

    def flaky(conn: Connection) -> str:
        calls.append(1)
        if len(calls) < 3:
            raise VersionConflict("another router got there first")
        return "done"

    assert store.retrying(flaky) == "done"
    assert len(calls) == 3

    def always(conn: Connection) -> str:
        raise VersionConflict("never settles")

    with pytest.raises(VersionConflict):
        store.retrying(always, attempts=2)
    store.close()
