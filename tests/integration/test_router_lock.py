"""The state store's router lock (router/daemon/leader.py) on PostgreSQL and MariaDB:
one holder per store, free again the moment its session ends, stores in other
schemas/databases independent; on SQLite a second holder is refused in one line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from router.daemon.leader import FileLock, RouterAlreadyRunning, ServerLock, lock_for
from tests.integration.test_state_store import SERVERS, Db, _provision

pytestmark = pytest.mark.integration


@pytest.fixture(params=SERVERS)
def server_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    yield from _provision(request.param, tmp_path)


@pytest.fixture
def other_db(server_db: Db, tmp_path: Path) -> Iterator[Db]:
    yield from _provision(server_db.backend, tmp_path)


def test_one_holder_per_store_until_its_session_ends(server_db: Db, other_db: Db) -> None:
    first, second, elsewhere = (
        ServerLock(server_db.url),
        ServerLock(server_db.url),
        ServerLock(other_db.url),
    )
    try:
        assert first.acquire() and first.held()
        assert not second.acquire()  # a standby: tries again later
        assert elsewhere.acquire()  # another deployment's store
        first.release()  # its session ends, as when the process dies
        assert second.acquire() and second.held()
        assert not first.held()
    finally:
        for lock in (first, second, elsewhere):
            lock.release()


def test_a_second_holder_of_a_sqlite_file_is_refused_in_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state' / 'router.db'}"
    first = lock_for(url)
    assert isinstance(first, FileLock) and first.acquire()
    try:
        with pytest.raises(RouterAlreadyRunning) as info:
            lock_for(url).acquire()
        message = str(info.value)
        assert "\n" not in message and "another router" in message
        assert str(tmp_path / "state" / "router.db") in message
    finally:
        first.release()
    again = lock_for(url)
    assert again.acquire()  # free once released (a process's exit releases it too)
    again.release()
