"""The verdict rules on plain pod dicts, as the API server returns them."""

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from reclaim_airflow import Action, decide, verdict_of_object, verdict_of_pod
from reclaim_airflow.lookup import safe_label_value

RECORD = {
    "provider": "aws",
    "kind": "spot-interruption",
    "node": "ip-10-0-1-7",
    "noticeTime": "2026-11-22T10:00:00Z",
    "deadline": "2026-11-22T10:02:00Z",
}
# When these cases are judged: inside the record's window.
NOW = datetime(2026, 11, 22, 10, 1, tzinfo=timezone.utc)
CASES = json.loads((Path(__file__).resolve().parents[3] / "classifier" / "verdict-cases.json").read_text())


def pod(annotations=None, exit_code=None, reason=None):
    status = {}
    if exit_code is not None:
        terminated = {"exitCode": exit_code, "reason": reason, "finishedAt": "2026-11-22T10:01:00Z"}
        status["containerStatuses"] = [{"name": "base", "state": {"terminated": terminated}}]
    return {"metadata": {"name": "task", "annotations": annotations or {}}, "status": status}


def classified(retryable="true"):
    evidence = {"node": "ip-10-0-1-7", "noticeKind": "spot-interruption", "signals": ["exit-137", "node-notice"]}
    return {
        "reclaim.dev/cause": "spot-interruption",
        "reclaim.dev/retryable": retryable,
        "reclaim.dev/evidence": json.dumps(evidence),
    }


@pytest.mark.parametrize(
    "case, expected_spot, expected_source",
    [
        (pod(classified(), 137, "Error"), True, "classifier"),
        (pod({"reclaim.dev/interruption": json.dumps(RECORD)}, 137, "Error"), True, "agent-annotation"),
        (pod({"reclaim.dev/interruption": json.dumps(RECORD)}, 143, "Error"), True, "agent-annotation"),
        (pod({"reclaim.dev/interruption": json.dumps(RECORD)}), True, "agent-annotation"),
        (pod({"reclaim.dev/interruption": json.dumps(RECORD)}, 137, "OOMKilled"), False, "pod-status"),
        (pod({"reclaim.dev/interruption": json.dumps(RECORD)}, 1, "Error"), False, "pod-status"),
        (pod({}, 2, "Error"), False, "pod-status"),
        (pod({}, 137, "Error"), None, "none"),
        (pod({"reclaim.dev/interruption": "not json"}, 137, "Error"), None, "none"),
    ],
    ids=[
        "classifier-verdict",
        "agent-annotation-sigkill",
        "agent-annotation-sigterm",
        "agent-annotation-deleted-before-exit",
        "oom-on-interrupted-node",
        "error-exit-on-interrupted-node",
        "error-exit",
        "kill-without-notice",
        "garbage-annotation",
    ],
)
def test_rules(case, expected_spot, expected_source):
    verdict = verdict_of_pod(case, now=NOW)
    assert (verdict.spot, verdict.source) == (expected_spot, expected_source)


def case_pod(case):
    """The pod a case of the shared table describes, built as the classifier's test does."""
    statuses = [
        {"name": f"c{i}", "state": {"terminated": {"exitCode": e["code"], "reason": e["reason"], "finishedAt": e["finishedAt"]}}}
        for i, e in enumerate(case["exits"])
    ]
    sidecars = [
        {"name": f"s{i}", "state": {"terminated": {"exitCode": e["code"], "reason": e["reason"], "finishedAt": e["finishedAt"]}}}
        for i, e in enumerate(case.get("sidecarExits", []))
    ]
    annotations = {}
    if case.get("record"):
        record = dict(CASES["notices"][case["record"]], node="node-a")
        annotations["reclaim.dev/interruption"] = json.dumps(record)
    status = {"phase": "Failed", "containerStatuses": statuses, "initContainerStatuses": sidecars}
    if case.get("podReason"):
        status["reason"] = case["podReason"]
    if case.get("disruption"):
        status["conditions"] = [{"type": "DisruptionTarget", "status": "True", "reason": case["disruption"]}]
    metadata = {"name": case["name"], "annotations": annotations}
    if case.get("deletionRequested"):
        requested = datetime.fromisoformat(case["deletionRequested"].replace("Z", "+00:00"))
        metadata["deletionTimestamp"] = (requested + timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
        metadata["deletionGracePeriodSeconds"] = 30
    return {"metadata": metadata, "status": status}


POD_ONLY_CASES = [c for c in CASES["cases"] if not c.get("nodeNotice")]


@pytest.mark.parametrize("case", POD_ONLY_CASES, ids=[c["name"] for c in POD_ONLY_CASES])
def test_the_shared_cases(case):
    now = datetime.fromisoformat(CASES["now"].replace("Z", "+00:00"))
    verdict = verdict_of_pod(case_pod(case), deleted=case.get("deleted", False), now=now)
    expected = {"spot-caused": True, "not-spot": False, "unknown": None}[case["expected"]]
    assert verdict.spot is expected, verdict.reason


def test_the_shared_table_is_mostly_about_the_pod():
    assert len(POD_ONLY_CASES) >= 12


def test_a_later_own_failure_on_an_object_reads_as_not_retryable():
    own = {
        "reclaim.dev/cause": "own-failure",
        "reclaim.dev/retryable": "false",
        "reclaim.dev/evidence": json.dumps({"pod": "etl/driver", "failedAt": "2026-11-22T10:30:00Z", "why": "OOMKilled"}),
    }
    verdict = verdict_of_object(pod(own))
    assert (verdict.spot, verdict.source) == (False, "classifier")
    assert "OOMKilled" in verdict.reason


def test_classifier_evidence_names_the_node():
    verdict = verdict_of_object(pod(classified()))
    assert verdict.node == "ip-10-0-1-7"
    assert "exit-137" in verdict.reason


def test_decisions():
    assert decide(verdict_of_pod(pod(classified(), 137, "Error"))).action is Action.RETRY
    oom = verdict_of_pod(pod({}, 137, "OOMKilled"))
    assert decide(oom).action is Action.FAIL
    assert decide(oom, fail_non_spot=False).action is Action.DEFAULT
    assert decide(verdict_of_pod(pod({}, 137, "Error"))).action is Action.DEFAULT


@pytest.mark.parametrize(
    "value",
    ["extract", "manual__2026-11-22T10:00:00+00:00", "scheduled__2026-11-22T00:00:00+00:00", "x" * 80, "-a.b_c-"],
)
def test_label_values_match_kubernetes_pod_operator(value):
    pod_generator = pytest.importorskip("airflow.providers.cncf.kubernetes.pod_generator")
    assert safe_label_value(value) == pod_generator.make_safe_label_value(value)


def test_the_retry_policy_survives_dag_serialization():
    pytest.importorskip("airflow.sdk")
    from reclaim_airflow.retry_policy import SpotRetryPolicy

    policy = SpotRetryPolicy(spot_retry_delay=timedelta(minutes=2), fail_non_spot=False)
    again = SpotRetryPolicy.deserialize(json.loads(json.dumps(policy.serialize())))
    assert (again.spot_retry_delay, again.fail_non_spot) == (timedelta(minutes=2), False)


def test_the_example_dag_parses_with_the_policy_attached():
    pytest.importorskip("airflow.providers.cncf.kubernetes")
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "example_dags" / "spot_aware_etl.py"
    spec = importlib.util.spec_from_file_location("spot_aware_etl", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from reclaim_airflow.retry_policy import SpotRetryPolicy

    task = module.dag.get_task("extract")
    assert isinstance(task.retry_policy, SpotRetryPolicy)
    assert task.on_finish_action.value == "delete_succeeded_pod"


def test_a_drill_is_retried_like_a_reclaim_and_says_so():
    evidence = {"node": "ip-10-0-1-7", "noticeKind": "spot-interruption", "provider": "drill", "signals": ["pod-annotation"]}
    annotations = {
        "reclaim.dev/cause": "spot-interruption",
        "reclaim.dev/retryable": "true",
        "reclaim.dev/evidence": json.dumps(evidence),
    }
    verdict = verdict_of_object({"metadata": {"annotations": annotations}})
    assert verdict.spot and verdict.drill
    decision = decide(verdict)
    assert decision.action is Action.RETRY and "(a drill)" in decision.reason
    assert not verdict_of_object({"metadata": {"annotations": classified()}}).drill
    # The agent's own record on a pod says so too.
    record = dict(RECORD, provider="drill", eventId="drill-2026-11-22T10:00:00Z", detectedAt="2026-11-22T10:00:00Z")
    assert verdict_of_pod(pod({"reclaim.dev/interruption": json.dumps(record)}, 137, "Error"), now=NOW).drill


@pytest.mark.parametrize(
    "times",
    [
        {"deadline": "9999-12-31T23:59:59Z"},
        {"noticeTime": "0001-01-01T00:00:00Z", "deadline": None},
        {"deadline": "2026-01-01T10:02:00"},
    ],
    ids=["deadline-at-the-end-of-time", "notice-at-the-beginning-of-time", "deadline-without-zone"],
)
def test_a_record_with_times_out_of_range_is_no_evidence_and_raises_nothing(times):
    """The record is written by whoever may write the pod: an absurd time must not stop the
    Airflow callback that reads it."""
    record = dict(CASES["notices"]["spot"], node="node-a", **times)
    pod = {
        "metadata": {"name": "forged", "annotations": {"reclaim.dev/interruption": json.dumps(record)}},
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {"name": "c0", "state": {"terminated": {"exitCode": 137, "reason": "Error", "finishedAt": "2026-01-01T10:01:00Z"}}}
            ],
        },
    }
    verdict = verdict_of_pod(pod, deleted=False, now=datetime(2026, 1, 1, 10, 2, tzinfo=timezone.utc))
    assert verdict.spot is None
