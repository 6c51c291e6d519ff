"""An adapter's state in ``crmsync status``: alive, degraded (capture failing), down."""

from __future__ import annotations

from io import StringIO

from rich.console import Console

from router.cli.render_status import render_status
from router.status import DEGRADED_AFTER, adapter_state


def test_states() -> None:
    assert adapter_state(1.0, 30.0, None) == "alive"
    assert adapter_state(1.0, 30.0, {"failing": DEGRADED_AFTER - 1}) == "alive"
    assert adapter_state(1.0, 30.0, {"failing": DEGRADED_AFTER}) == "degraded"
    assert adapter_state(31.0, 30.0, {"failing": 0}) == "down"
    assert adapter_state(31.0, 30.0, {"failing": 9}) == "down"


def test_render_shows_degraded_and_skipped_rows() -> None:
    data = {
        "router": {"alive": False},
        "adapters": [
            {
                "name": "legacy",
                "actor": "legacy",
                "entities": ["contact"],
                "alive": False,
                "state": "degraded",
                "heartbeat_age": 1.0,
                "capture": {"failing": 4, "error": "OperationalError", "bad_rows": 3},
            }
        ],
        "queues": [],
    }
    out = StringIO()
    render_status(data, Console(file=out, width=200, no_color=True))
    text = out.getvalue()
    assert "degraded" in text and "failing x4 (OperationalError)" in text
    assert "3 bad row(s) skipped" in text


def test_render_says_whether_push_capture_is_listening() -> None:
    def capture_column(capture: dict[str, object]) -> str:
        adapter = {
            "name": "odoo",
            "actor": "odoo",
            "entities": ["contact"],
            "alive": True,
            "state": "alive",
            "heartbeat_age": 1.0,
            "capture": capture,
        }
        out = StringIO()
        data = {"router": {"alive": False}, "adapters": [adapter], "queues": []}
        render_status(data, Console(file=out, width=200, no_color=True))
        return out.getvalue()

    assert "ok; push" in capture_column({"failing": 0, "push": "active"})
    assert "ok; push down, polling" in capture_column({"failing": 0, "push": "polling"})
    assert "push" not in capture_column({"failing": 0})
