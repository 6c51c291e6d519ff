"""The HubSpot adapter's API usage as Prometheus metrics (served on ``[metrics] port``
with the adapter's other metrics, labelled by adapter name): how many requests went out
and how they ended, and how long the request budget held them back."""

from __future__ import annotations

import prometheus_client as prom

REQUESTS = prom.Counter(
    "crmsync_adapter_api_requests",
    "HubSpot API requests sent, by outcome: ok, conflict (409), throttled (429), "
    "server_error (5xx), client_error (other 4xx), connection (no answer)",
    ["adapter", "outcome"],
)
THROTTLED = prom.Counter(
    "crmsync_adapter_api_throttled_seconds",
    "Seconds HubSpot requests waited for the request budget (api.requests_per_10s, "
    "api.daily, the server's rate-limit headers)",
    ["adapter"],
)


def outcome(status: int | None) -> str:
    """The ``outcome`` label of a response status (None: no response)."""
    if status is None:
        return "connection"
    if status < 300:
        return "ok"
    if status == 409:
        return "conflict"
    if status == 429:
        return "throttled"
    return "server_error" if status >= 500 else "client_error"
