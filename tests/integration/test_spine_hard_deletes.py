"""Hard deletes across processes (issue 10, item 6): a row hard-deleted in mktg reaches
the other CRMs on the next poll, and a row inserted under its id is a new customer
everywhere, not an edit of the deleted one."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.integration.spine import Spine

pytestmark = pytest.mark.integration


def test_a_hard_delete_and_a_reused_id_reach_the_other_crms(spine: Spine) -> None:
    spine.start()
    mktg = spine.dbs["mktg"]
    mktg.insert_contacts(3)
    spine.wait(
        "3 contacts everywhere",
        lambda: spine.dbs["legacy"].count() == 3 and spine.dbs["sales"].count() == 3,
    )
    f = mktg.crm.fields
    with mktg.engine.begin() as conn:
        alice = conn.execute(
            sa.select(mktg.c[mktg.crm.id]).where(mktg.c[f["email"]] == "user1@example.com")
        ).scalar_one()
        # Alice is deleted and Bob inserted under her id in one go: no poll in between.
        conn.execute(mktg.table.delete().where(mktg.c[mktg.crm.id] == alice))
        conn.execute(
            mktg.table.insert().values(
                {
                    mktg.c[mktg.crm.id]: alice,
                    mktg.c[f["email"]]: "bob@example.com",
                    mktg.c[f["first_name"]]: "Bob",
                    mktg.c[f["last_name"]]: "Reused",
                    mktg.c[mktg.crm.updated_at]: mktg._now(),
                }
            )
        )

    def settled() -> bool:
        return all(
            "user1@example.com" not in db.contacts() and "bob@example.com" in db.contacts()
            for db in spine.dbs.values()
        )

    spine.wait("Alice's delete and Bob everywhere", settled)
    verdicts = spine.wait_quiet()
    for name in ("legacy", "sales"):
        kept = spine.dbs[name].contacts(include_deleted=True)
        # Alice's row is flagged deleted and Bob is a row of his own, not Alice's renamed
        assert {"user1@example.com", "bob@example.com"} <= set(kept), name
        assert set(spine.dbs[name].contacts()) == set(mktg.contacts()), name
    assert verdicts.get("accepted") == 3 + 2  # the inserts, Alice's delete, Bob
    assert verdicts.get("conflict", 0) == 0
