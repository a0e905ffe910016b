"""The Airflow hooks against the local control plane: the real classifier's verdicts,
and the real KubernetesPodOperator running, failing and deleting its pod."""

import threading
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
from kubernetes import client

from cluster import eventually, unique
from reclaim_airflow import Action, spot_verdict
from reclaim_airflow.airflow2 import SpotAwareRetries, spot_decision

kpo = pytest.importorskip("airflow.providers.cncf.kubernetes.operators.pod")
from airflow.sdk import RetryAction  # noqa: E402
from airflow.sdk.exceptions import AirflowFailException  # noqa: E402
from reclaim_airflow.retry_policy import SpotRetryPolicy  # noqa: E402


class TaskInstance:
    """What KubernetesPodOperator and the hooks use of Airflow's task instance."""

    def __init__(self, dag_id, task_id, run_id, try_number=1):
        self.dag_id, self.task_id, self.run_id = dag_id, task_id, run_id
        self.try_number, self.map_index = try_number, -1
        self.xcom = {}

    def xcom_push(self, key, value):
        self.xcom[key] = value


def context_for(task, ti):
    return {"ti": ti, "task": task, "run_id": ti.run_id, "dag": SimpleNamespace(dag_id=ti.dag_id)}


def kpo_labels(ti):
    from airflow.providers.cncf.kubernetes.pod_generator import make_safe_label_value

    raw = {"dag_id": ti.dag_id, "task_id": ti.task_id, "run_id": ti.run_id, "try_number": "1", "kubernetes_pod_operator": "True"}
    return {k: make_safe_label_value(v) for k, v in raw.items()}


def test_the_classifiers_verdict_is_read_from_the_tasks_pod(kubelet, classifier, namespace):
    node = unique("spot-noticed")
    kubelet.register_spot_node(node, notice=True)
    ti = TaskInstance("nightly", "extract", "scheduled__2026-11-22T00:00:00+00:00")
    kubelet.create_pod("extract-pod", kpo_labels(ti))
    kubelet.start("extract-pod", node)
    kubelet.end("extract-pod", 137, "Error")
    core = kubelet.core

    def marked():
        pod = core.read_namespaced_pod("extract-pod", namespace)
        return (pod.metadata.annotations or {}).get("reclaim.dev/cause")

    assert eventually("the classifier's verdict", marked) == "spot-interruption"
    # The operator object knows nothing here: the pod is found by the labels KPO sets.
    task = SimpleNamespace(namespace=namespace)
    verdict = spot_verdict(context_for(task, ti), core_v1=core)
    assert (verdict.spot, verdict.source, verdict.node) == (True, "classifier", node)
    assert "node-notice" in verdict.evidence["signals"]


def run_pod_operator(kubelet, namespace, cp, node, ending, **operator_args):
    """Runs a real KubernetesPodOperator; the kubelet runs its pod and ends it with
    ``ending(pod_name)``. Returns the operator, its context and what it raised."""
    ti = TaskInstance(unique("dag"), "transform", "manual__2026-11-22T10:00:00+00:00")

    def play_kubelet():
        pod = kubelet.next_new_pod()
        kubelet.start(pod, node)
        time.sleep(1)
        ending(pod)

    operator_class = operator_args.pop("operator_class", kpo.KubernetesPodOperator)
    operator = operator_class(
        task_id=ti.task_id,
        name="transform",
        namespace=namespace,
        image="registry.invalid/reclaim/transform:1",
        config_file=cp.kubeconfig,
        in_cluster=False,
        kubernetes_conn_id=None,
        get_logs=False,
        startup_timeout_seconds=60,
        poll_interval=0.5,
        **operator_args,
    )
    context = context_for(operator, ti)
    kubelet_thread = threading.Thread(target=play_kubelet)
    kubelet_thread.start()
    with pytest.raises(Exception) as raised:
        operator.execute(context)
    kubelet_thread.join()
    return operator, context, raised.value


def drained(kubelet, node, exit_code, reason):
    """The ending of a pod the agent marked and evicted, whose container then exited so."""

    def ending(pod):
        kubelet.mark_interrupted(pod, node)
        kubelet.end(pod, exit_code, reason)

    return ending


def test_a_spot_killed_pod_operator_task_is_retried_after_its_pod_is_deleted(kubelet, control_plane, namespace):
    node = unique("spot-reclaimed")
    kubelet.register_spot_node(node, notice=True)
    drain = drained(kubelet, node, 137, "Error")
    operator, context, failure = run_pod_operator(kubelet, namespace, control_plane, node, drain)
    pod_name = context["ti"].xcom["pod_name"]
    eventually(
        "KubernetesPodOperator to delete its pod",
        lambda: not [p for p in kubelet.core.list_namespaced_pod(namespace).items if p.metadata.name == pod_name],
    )
    policy = SpotRetryPolicy(spot_retry_delay=timedelta(seconds=45), core_v1=lambda: kubelet.core)
    decision = policy.evaluate(failure, try_number=1, max_tries=3, context=context)
    assert decision.action is RetryAction.RETRY
    assert decision.retry_delay == timedelta(seconds=45)
    assert node in decision.reason and "agent annotation" in decision.reason


def test_an_oom_kill_on_an_interrupted_node_is_not_retried(kubelet, control_plane, namespace):
    node = unique("spot-oom")
    kubelet.register_spot_node(node, notice=True)

    oom_during_drain = drained(kubelet, node, 137, "OOMKilled")
    _, context, failure = run_pod_operator(kubelet, namespace, control_plane, node, oom_during_drain)
    decision = SpotRetryPolicy(core_v1=lambda: kubelet.core).evaluate(failure, 1, 3, context)
    assert decision.action is RetryAction.FAIL
    assert "OOMKilled" in decision.reason


class SpotAwarePodOperator(SpotAwareRetries, kpo.KubernetesPodOperator):
    pass


def test_airflow2_operator_skips_retries_for_a_bug_and_keeps_them_for_a_spot_kill(kubelet, control_plane, namespace):
    node = unique("spot-a2")
    kubelet.register_spot_node(node, notice=True)

    _, _, failure = run_pod_operator(
        kubelet, namespace, control_plane, node,
        lambda pod: kubelet.end(pod, 1, "Error"),
        operator_class=SpotAwarePodOperator,
    )
    assert isinstance(failure, AirflowFailException), failure
    assert "exited with code 1" in str(failure)

    _, context, failure = run_pod_operator(
        kubelet, namespace, control_plane, node, drained(kubelet, node, 143, "Error"), operator_class=SpotAwarePodOperator
    )
    assert not isinstance(failure, AirflowFailException), "a spot kill keeps the task's retries"
    assert spot_decision(context).action is Action.RETRY


def test_an_unreachable_api_server_leaves_the_default_retries(namespace):
    unreachable = client.Configuration()
    unreachable.host = "https://127.0.0.1:1"
    core = client.CoreV1Api(client.ApiClient(unreachable))
    ti = TaskInstance("nightly", "extract", "manual__1")
    task = SimpleNamespace(namespace=namespace, pod=client.V1Pod(metadata=client.V1ObjectMeta(name="gone", namespace=namespace)))
    policy = SpotRetryPolicy(core_v1=lambda: core)
    with pytest.raises(Exception):
        policy.evaluate(RuntimeError("pod failed"), 1, 3, context_for(task, ti))
    assert spot_decision(context_for(SimpleNamespace(hook=SimpleNamespace(core_v1_client=core), **vars(task)), ti)).action is Action.DEFAULT
