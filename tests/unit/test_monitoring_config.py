"""config/monitoring/: the shipped Prometheus alert rules and Grafana dashboard refer
only to metrics the router and adapters really export (a renamed metric fails here,
not silently on a dashboard at 3 a.m.)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import prometheus_client as prom

import adapters.metrics
import router.daemon.stats  # noqa: F401 - registers the router's metrics

MONITORING = Path(__file__).resolve().parents[2] / "config" / "monitoring"
METRIC = re.compile(r"\bcrmsync_[a-z_]+\b")


def _exported() -> set[str]:
    return set(prom.REGISTRY._names_to_collectors)  # every sample name, _total etc. included


def _exprs() -> list[str]:
    rules = re.findall(r"^\s*expr:\s*(.+)$", (MONITORING / "alerts.yml").read_text(), re.M)
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    targets = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    return rules + targets


def test_every_metric_the_rules_and_dashboard_use_is_exported() -> None:
    exported = _exported()
    used = {name for expr in _exprs() for name in METRIC.findall(expr)}
    assert used, "no metric found: the parser is broken"
    assert used - exported == set(), f"not exported: {sorted(used - exported)}"


def test_every_adapter_metric_is_on_the_dashboard() -> None:
    dashboard = (MONITORING / "grafana-dashboard.json").read_text()
    names = [
        c._name
        for c in vars(adapters.metrics).values()
        if isinstance(c, prom.metrics.MetricWrapperBase)
    ]
    assert len(names) >= 10
    missing = [n for n in names if n not in dashboard]
    assert missing == [], f"adapter metrics missing from the dashboard: {missing}"


def test_the_dashboard_is_importable_json_with_unique_panel_ids() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"] == "crmsync"
