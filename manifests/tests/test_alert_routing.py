"""The example Alertmanager routing (manifests/alertmanager/routing-example.yaml): a valid
configuration for Debian's amtool, and every shipped alert lands where the operations guide
says: critical ones on the pager, warnings on the webhook."""

import subprocess
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
CONFIG = HERE.parent / "alertmanager" / "routing-example.yaml"
RULE = HERE.parent / "base" / "monitoring" / "prometheusrule.yaml"


def run(amtool, *args):
    result = subprocess.run([amtool, *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_amtool_accepts_the_example(amtool):
    out = run(amtool, "check-config", str(CONFIG))
    assert "SUCCESS" in out, out


def shipped_alerts():
    spec = yaml.safe_load(RULE.read_text())["spec"]
    return [(r["alert"], r["labels"]["severity"]) for g in spec["groups"] for r in g["rules"] if "alert" in r]


@pytest.mark.parametrize("alert, severity", shipped_alerts(), ids=[a for a, _ in shipped_alerts()])
def test_each_shipped_alert_is_routed_by_its_severity(amtool, alert, severity):
    out = run(amtool, "config", "routes", "test", f"--config.file={CONFIG}", f"alertname={alert}", f"severity={severity}")
    expected = {"critical": "reclaim-pager", "warning": "reclaim-webhook"}[severity]
    assert out.strip() == expected, out
