"""The shipped Grafana dashboard: valid JSON a Grafana sidecar loads, and every panel's
query valid PromQL for promtool. (That it names only metrics the binaries expose is checked
against the running binaries' /metrics in tests/tests/manifests.rs.)"""

import json
import subprocess
from pathlib import Path

import pytest
import yaml

DASHBOARD = Path(__file__).resolve().parents[1] / "base" / "monitoring" / "grafana-dashboard.json"


def queries():
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


def test_the_dashboard_covers_what_operators_ask():
    titles = " ".join(title for title, _ in queries()).lower()
    for topic in ["by cloud and kind", "notice to taint", "drain duration", "slack", "deleted at the deadline", "by outcome", "by namespace", "not polling", "per zone and instance type", "jobs retried", "node age at reclaim"]:
        assert topic in titles, topic


def test_every_query_is_valid_promql(promtool, tmp_path):
    # promtool checks expressions in rule files: each query becomes a recording rule, with
    # Grafana's $__rate_interval replaced by a duration, as Grafana does before sending it.
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr.replace("$__rate_interval", "5m").replace("$__range", "24h")}
        for i, (_, expr) in enumerate(queries())
    ]}]}
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(queries())} rules found" in result.stdout, result.stdout
