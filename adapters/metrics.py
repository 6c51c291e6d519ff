"""The adapter process's Prometheus metrics (``[metrics] port``; 0: no endpoint).

Labelled by adapter name, so one scrape config serves a host running several adapters.
The endpoint binds 127.0.0.1 only, as the router's does: expose it through the host's
own exporter or proxy.
"""

from __future__ import annotations

import prometheus_client as prom

WRITE_RATE = prom.Gauge(
    "crmsync_adapter_write_rate_limit",
    "Writes per second allowed into the CRM now ([write] rate, [sink] max_rate, a "
    "migration's --rate: the lowest); 0: unlimited",
    ["adapter"],
)
WRITE_WAIT = prom.Counter(
    "crmsync_adapter_write_throttled_seconds",
    "Seconds writes waited for the CRM's write rate limit",
    ["adapter"],
)
WRITES = prom.Counter(
    "crmsync_adapter_write_tokens",
    "Writes admitted by the rate limiter (records)",
    ["adapter"],
)

PUSH_ACTIVE = prom.Gauge(
    "crmsync_adapter_push_active",
    "1: changes in the CRM wake capture at once (capture.push listening); 0: polling only",
    ["adapter"],
)


EVENTS = prom.Counter(
    "crmsync_adapter_events",
    "Changes by outcome: published (local changes sent to the hub), applied and skipped "
    "(deliveries written, or found stale/duplicate), retried, dead-lettered",
    ["adapter", "outcome"],
)
OUTCOMES = ("published", "applied", "skipped", "retried", "dead-lettered")
CAPTURED = prom.Counter(
    "crmsync_adapter_captured", "Local changes capture found (put in the outbox)", ["adapter"]
)
CAPTURE_FAILURES = prom.Counter(
    "crmsync_adapter_capture_failures", "Capture passes that raised", ["adapter"]
)
CAPTURE_LAG = prom.Gauge(
    "crmsync_adapter_capture_lag_seconds",
    "Seconds since capture last completed a pass: about poll_interval when healthy; it "
    "grows while capture fails or one pass takes long",
    ["adapter"],
)
OUTBOX = prom.Gauge(
    "crmsync_adapter_outbox_depth",
    "Local changes waiting for the broker's confirm (at the last heartbeat)",
    ["adapter"],
)
BAD_ROWS = prom.Gauge(
    "crmsync_adapter_bad_rows", "Source rows capture skipped since the start", ["adapter"]
)
WRITE_SECONDS = prom.Histogram(
    "crmsync_adapter_write_seconds",
    "Time to write one batch of deliveries into the CRM (one transaction)",
    ["adapter"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


def serve(port: int) -> None:
    if port:
        prom.start_http_server(port, addr="127.0.0.1")


DELIVERIES_REFUSED = prom.Counter(
    "crmsync_adapter_deliveries_refused",
    "Deliveries the sink refused because neither the router's nor an operator's broker "
    "user published them ([security] on the router); each went to the DLQ unwritten",
    ["adapter"],
)
