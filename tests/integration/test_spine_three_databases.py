"""The spine's end-to-end scenarios again with the three CRMs on three databases:
legacy on SQLite, sales on PostgreSQL, mktg on MariaDB (issue 12, item 4).

The scenarios are test_spine_processes' own functions, imported so that pytest collects
them here too with this module's ``spine`` fixture: the same assertions (insert, update,
soft and hard delete, a conflict, kill -9 of a target adapter), only the
databases differ. MariaDB's DATETIME keeps whole seconds, PostgreSQL's timestamp
microseconds: the capture cursor and the conditional writes must hold on both.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.spine import Spine
from tests.integration.test_spine_processes import (
    test_a_process_killed_mid_stream_loses_and_duplicates_nothing as _killed_mid_stream,
)
from tests.integration.test_spine_processes import (
    test_concurrent_edits_in_two_crms_converge,
    test_contacts_updates_and_deletes_propagate_without_ping_pong,
)
from tests.integration.test_state_store import _provision

pytestmark = pytest.mark.integration

__all__ = [
    "test_concurrent_edits_in_two_crms_converge",
    "test_contacts_updates_and_deletes_propagate_without_ping_pong",
]


def test_a_target_on_postgresql_killed_mid_stream_loses_and_duplicates_nothing(
    spine: Spine,
) -> None:
    """kill -9 of sales, whose CRM is on PostgreSQL, in mid-stream (the router's kill -9
    is the SQLite run's: its state store does not change here)."""
    _killed_mid_stream(spine, "sales")


@pytest.fixture
def spine(amqp: str, tmp_path: Path) -> Iterator[Spine]:
    """Router and adapters as real processes; sales' and mktg's databases on the servers."""
    postgres = _provision("postgresql", tmp_path)
    mariadb = _provision("mariadb", tmp_path)
    sales_db, mktg_db = next(postgres), next(mariadb)
    s = Spine(tmp_path, amqp, databases={"sales": sales_db.url, "mktg": mktg_db.url})
    try:
        yield s
    finally:
        codes = s.stop()
        for provisioned in (postgres, mariadb):
            next(provisioned, None)  # drops the schema / database
    assert all(code == 0 for code in codes.values()), f"unclean exits: {codes}"
