"""Adapter metrics (issue 13, item 9): with ``[metrics] port`` an adapter process serves
Prometheus metrics, and its counters move as a sync runs: the source's published and
captured, the target's applied and its write latency histogram, capture lag and the
outbox depth as gauges, every outcome present from the start."""

from __future__ import annotations

import re
import urllib.request

import pytest

from tests.integration.spine import Spine
from tests.rabbit_node import free_port

pytestmark = pytest.mark.integration


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    samples = {}
    for line in text.splitlines():
        match = re.match(r"^(crmsync_adapter_\S+) (\S+)$", line)
        if match:
            samples[match.group(1)] = float(match.group(2))
    return samples


def test_counters_move_during_a_sync(spine: Spine) -> None:
    ports = {name: free_port() for name in ("legacy", "sales")}
    for name, port in ports.items():
        with (spine.workdir / f"{name}.toml").open("a") as toml:
            toml.write(f"[metrics]\nport = {port}\n")
    spine.start()
    before = {name: _scrape(port) for name, port in ports.items()}
    assert before["sales"]['crmsync_adapter_events_total{adapter="sales",outcome="applied"}'] == 0
    assert (
        'crmsync_adapter_events_total{adapter="sales",outcome="dead-lettered"}' in before["sales"]
    )

    spine.dbs["legacy"].insert_contacts(25)
    spine.wait("25 contacts in sales", lambda: spine.dbs["sales"].count() == 25)
    spine.wait_quiet()
    legacy, sales = _scrape(ports["legacy"]), _scrape(ports["sales"])
    assert legacy['crmsync_adapter_events_total{adapter="legacy",outcome="published"}'] == 25
    assert legacy['crmsync_adapter_captured_total{adapter="legacy"}'] == 25
    assert sales['crmsync_adapter_events_total{adapter="sales",outcome="applied"}'] == 25
    assert sales['crmsync_adapter_write_seconds_count{adapter="sales"}'] >= 1
    assert sales['crmsync_adapter_outbox_depth{adapter="sales"}'] == 0
    # Capture completes a pass every poll (0.2 s here): the lag stays small.
    assert 0 <= legacy['crmsync_adapter_capture_lag_seconds{adapter="legacy"}'] < 5
    assert legacy['crmsync_adapter_capture_failures_total{adapter="legacy"}'] == 0
