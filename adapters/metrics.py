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


def serve(port: int) -> None:
    if port:
        prom.start_http_server(port, addr="127.0.0.1")
