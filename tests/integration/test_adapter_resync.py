"""``crmsync adapter resync NAME`` (issue 13, item 12): capture from scratch, echo-safe:
nothing unchanged is published again, and an edit capture missed (made around the CRM's
modified stamp, as a bulk fix in SQL would) reaches the other CRMs."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.integration.cli_runner import run_cli
from tests.integration.spine import Spine

pytestmark = pytest.mark.integration


def test_resync_republishes_only_what_differs(spine: Spine) -> None:
    spine.start()
    spine.dbs["legacy"].insert_contacts(20)
    spine.wait("seeded", lambda: spine.dbs["mktg"].count() == 20)
    before = spine.wait_quiet()
    assert before.get("accepted") == 20

    # A bulk fix in SQL that leaves updated_at alone: polling cannot see it.
    db = spine.dbs["legacy"]
    with db.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE contacts SET lname = 'Fixed' WHERE email_addr = 'user3@example.com'")
        )
    done = run_cli("adapter", "resync", "legacy", amqp=spine.url)
    assert done.code == 0, done
    assert "legacy captures contact again" in done.stdout
    spine.wait(
        "the missed edit everywhere",
        lambda: spine.dbs["mktg"].contacts()["user3@example.com"]["last_name"] == "Fixed",
    )
    after = spine.wait_quiet()
    assert after.get("accepted") == 21  # the one missed edit, no echo of the other 19

    wrong = run_cli("adapter", "resync", "legacy", "--entity", "deal", amqp=spine.url)
    assert wrong.code != 0 and "does not map deal" in wrong.stderr, wrong
