"""``[capture] initial = "none"``: a CRM that must only receive joins without publishing
the rows it already holds; what changes after it started is captured as usual."""

from __future__ import annotations

import time
from pathlib import Path

from tests.integration.migration_rig import Rig, people


def test_existing_rows_stay_home_and_later_edits_are_shared(amqp: str, tmp_path: Path) -> None:
    rig = Rig(tmp_path, amqp)
    config = tmp_path / "new.toml"
    config.write_text(config.read_text().replace("[capture]\n", '[capture]\ninitial = "none"\n'))
    try:
        rig.target.insert(people(5, prefix="t"))
        rig.start()
        time.sleep(1.5)  # several capture polls of the target
        assert rig.source.count() == 0, "the target published rows it held before joining"
        assert rig.status()["router"]["verdicts"].get("accepted", 0) == 0
        rig.target.update("t0000002", first_name="Edited")
        rig.wait("the edit in the source", lambda: rig.source.count() == 1)
        (row,) = rig.source.rows()
        assert row["first_name"] == "Edited" and row["email"] == "person2@example.com"
    finally:
        rig.stop()
