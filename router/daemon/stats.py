"""What the router counts: for ``op.status`` and for Prometheus."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import prometheus_client as prom

EVENTS = prom.Counter("crmsync_router_events", "Events judged by the router", ["verdict"])
INVALID = prom.Counter("crmsync_router_invalid", "Events refused to the invalid queue", ["reason"])
CONTROL_DENIED = prom.Counter(
    "crmsync_router_control_denied",
    "Control requests refused because their user may not make them ([security])",
    ["request"],
)
BATCH_SECONDS = prom.Histogram("crmsync_router_batch_seconds", "Time to process one batch")
OPEN_CONFLICTS = prom.Gauge(
    "crmsync_router_conflicts_open", "Conflicts parked for an operator (manual policy)"
)

# Anti-entropy (router.daemon.antientropy): drift counts only what was seen in two rounds.
AE_COMPARED = prom.Counter(
    "crmsync_antientropy_compared", "Records anti-entropy compared with the hub", ["adapter"]
)
AE_DRIFT = prom.Counter(
    "crmsync_antientropy_drift",
    "Records found drifted from the hub (kind: different, missing, deleted, invalid)",
    ["adapter", "kind"],
)
AE_REPAIRED = prom.Counter(
    "crmsync_antientropy_repaired", "Repairs anti-entropy sent to an adapter", ["adapter"]
)
AE_LAST_ROUND = prom.Gauge(
    "crmsync_antientropy_last_round_timestamp_seconds", "When the last anti-entropy round ended"
)
AE_ROUND_SECONDS = prom.Gauge(
    "crmsync_antientropy_last_round_duration_seconds", "How long the last anti-entropy round took"
)


@dataclass
class Stats:
    """Counters the router reports over ``op.status``."""

    verdicts: Counter[str] = field(default_factory=Counter)
    invalid: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    started_at: float = field(default_factory=time.time)
    last_batch_at: float = 0.0

    def add(self, verdict: str, n: int = 1) -> None:
        self.verdicts[verdict] += n
        EVENTS.labels(verdict).inc(n)

    def add_invalid(self, reason: str) -> None:
        self.invalid[reason] += 1
        INVALID.labels(reason).inc()

    def batch_done(self) -> None:
        self.batches += 1
        self.last_batch_at = time.time()
