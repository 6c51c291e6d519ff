"""Actor marks (router/watermark_store.py) on SQLite, PostgreSQL and MariaDB, with two
routers sharing one state store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from router import watermark_store
from router.events import INT_MAX
from tests.factories import make_state, new_id
from tests.integration.test_state_store import BACKENDS, Db, _provision

pytestmark = pytest.mark.integration


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    yield from _provision(request.param, tmp_path)


def test_two_routers_raise_marks_never_lower_them_and_64_bit_counters_fit(db: Db) -> None:
    first, second = db.store(), db.store()
    state = make_state(
        {"legacy": 3, "hub": INT_MAX}, {"email": "a@x.io"}, record_id=new_id(), version=0
    )
    first.commit_batch([], [state], [], [])
    highs, inexact = watermark_store.opened(first)
    assert highs == {"legacy": 3, "hub": INT_MAX} and inexact == set()
    with first.transaction() as conn:
        watermark_store.save(conn, {"legacy": 7, "sales": 2}, highs)
    # The second router never saw sales: its first counter is already stored elsewhere.
    with second.transaction() as conn:
        watermark_store.save(conn, {"legacy": 5, "sales": 1}, {"legacy": 3})
    assert watermark_store.opened(second) == ({"legacy": 7, "hub": INT_MAX, "sales": 2}, set())
    doubtful = watermark_store.restored(second, {"legacy", "sales", "mktg"}, "hub@2")
    assert doubtful == {"legacy", "sales", "mktg", "hub"}
    assert watermark_store.opened(first)[1] == doubtful
