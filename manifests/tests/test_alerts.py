"""The shipped alert rules: valid for promtool, and each alert both fires and stays quiet
in the unit tests of alerts.test.yaml."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
RULE = HERE.parent / "base" / "monitoring" / "prometheusrule.yaml"


@pytest.fixture(scope="module")
def rules_dir(tmp_path_factory):
    """The PrometheusRule's spec as a plain rules file, next to the unit tests."""
    directory = tmp_path_factory.mktemp("rules")
    spec = yaml.safe_load(RULE.read_text())["spec"]
    (directory / "reclaim.rules.yaml").write_text(yaml.safe_dump(spec))
    shutil.copy(HERE / "alerts.test.yaml", directory)
    return directory


def run(promtool, *args):
    result = subprocess.run([promtool, *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_promtool_accepts_the_rules(promtool, rules_dir):
    assert "SUCCESS: 8 rules found" in run(promtool, "check", "rules", str(rules_dir / "reclaim.rules.yaml"))


def test_the_alert_unit_tests_pass(promtool, rules_dir):
    assert "SUCCESS" in run(promtool, "test", "rules", str(rules_dir / "alerts.test.yaml"))


def test_every_alert_is_tested_firing_and_quiet():
    alerts = {r["alert"] for g in yaml.safe_load(RULE.read_text())["spec"]["groups"] for r in g["rules"]}
    cases = [c for t in yaml.safe_load((HERE / "alerts.test.yaml").read_text())["tests"] for c in t["alert_rule_test"]]
    fires = {c["alertname"] for c in cases if c["exp_alerts"]}
    quiet = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert alerts == fires, f"never seen firing: {alerts - fires}"
    assert alerts == quiet, f"never seen quiet: {alerts - quiet}"


def test_every_alert_says_what_to_do():
    for group in yaml.safe_load(RULE.read_text())["spec"]["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
            assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
