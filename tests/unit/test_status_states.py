"""An adapter's state in ``crmsync status``: alive, degraded (capture failing), down."""

from __future__ import annotations

from io import StringIO
from typing import Any

from rich.console import Console

from router.cli.render_status import render_status
from router.status import DEGRADED_AFTER, QueueDepth, adapter_state, attention, drained


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


# -- drained and attention (issue 13, item 11) ------------------------------------------


def _data(**router: Any) -> dict[str, Any]:
    store = {"records": 1, "outbox": 0, "conflicts_open": 0, "identities_parked": 0}
    store.update(router.pop("store", {}))
    return {
        "router": {"alive": True, "store": store, **router},
        "adapters": [{"name": "sales", "state": "alive", "alive": True, "capture": {}}],
        "queues": [
            {"name": "crmsync.sink.sales", "messages": 0},
            {"name": "crmsync.dlq.sales", "messages": 0},
            {"name": "crmsync.router.invalid", "messages": 0},
        ],
    }


def _depths(**messages: int) -> list[QueueDepth]:
    return [QueueDepth(name, count, 1) for name, count in messages.items()]


def test_drained_means_no_queue_tier_or_outbox_holds_a_write() -> None:
    router = {"store": {"outbox": 0}}
    calm = [{"name": "sales", "capture": {"outbox": 0}}]
    empty = _depths(**{"crmsync.sink.sales": 0, "crmsync.retry.sales.1s": 0})
    assert drained(router, calm, empty)
    assert not drained(router, calm, _depths(**{"crmsync.retry.sales.1s": 2}))
    assert not drained({"store": {"outbox": 3}}, calm, empty)  # deliveries owed by the router
    assert not drained(router, [{"name": "sales", "capture": {"outbox": 1}}], empty)
    assert not drained(None, calm, empty)
    # Dead letters and invalid events wait for a person; they are not in flight.
    assert drained(router, calm, _depths(**{"crmsync.dlq.sales": 4, "crmsync.router.invalid": 1}))


def test_attention_names_what_needs_a_person_and_nothing_else() -> None:
    assert attention(_data()) == []
    busy = _data()
    busy["queues"][0]["messages"] = 500  # traffic in flight: healthy
    assert attention(busy) == []
    assert attention({"router": {"alive": False}, "adapters": [], "queues": []}) == [
        "router not answering"
    ]
    data = _data(store={"conflicts_open": 2, "identities_parked": 1})
    data["adapters"] = [
        {"name": "sales", "state": "degraded", "capture": {"bad_rows": 3}},
        {"name": "mktg", "state": "down", "capture": None},
    ]
    data["queues"][1]["messages"] = 5
    data["queues"][2]["messages"] = 1
    assert attention(data) == [
        "2 conflict(s) parked",
        "1 record(s) parked by identity matching",
        "adapter sales degraded (its capture keeps failing)",
        "adapter sales skipped 3 bad row(s)",
        "adapter mktg down",
        "5 dead letter(s) in crmsync.dlq.sales",
        "1 invalid event(s) in crmsync.router.invalid",
    ]
