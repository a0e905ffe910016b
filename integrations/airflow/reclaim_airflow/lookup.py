"""Finds what a failed Airflow task left in Kubernetes, and reads its verdict.

KubernetesPodOperator keeps the last pod it read (``remote_pod``) and usually deletes
the pod afterwards; KubernetesJobOperator keeps its ``job``. In order, freshest first:
the live pod (it may carry the classifier's verdict by now), the pods the operator
labelled for this try, the operator's last read of its pod (the agent's annotation is
on it: the agent writes it before it evicts), then the Job.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Callable, Iterable, Mapping

from .verdict import UNKNOWN, SpotVerdict, as_dict, verdict_of_object, verdict_of_pod

MAX_LABEL_LENGTH = 63


def safe_label_value(value: str) -> str:
    """A label value as KubernetesPodOperator writes it: invalid characters dropped and,
    when anything was changed or it is too long, a hash of the original appended."""
    safe = re.sub(r"^[^a-z0-9A-Z]*|[^a-zA-Z0-9_\-\.]|[^a-z0-9A-Z]*$", "", value)
    if len(safe) > MAX_LABEL_LENGTH or safe != value:
        digest = hashlib.md5(value.encode()).hexdigest()[:9]
        safe = safe[: MAX_LABEL_LENGTH - len(digest) - 1] + "-" + digest
    return safe


def task_pod_selector(context: Mapping[str, Any]) -> str:
    """The label selector of the pods KubernetesPodOperator started for this try."""
    ti = context["ti"]
    labels = {
        "dag_id": ti.dag_id,
        "task_id": ti.task_id,
        "run_id": ti.run_id,
        "try_number": str(ti.try_number),
    }
    if getattr(ti, "map_index", -1) not in (None, -1):
        labels["map_index"] = str(ti.map_index)
    return ",".join(f"{k}={safe_label_value(str(v))}" for k, v in labels.items())


def default_core_v1() -> Any:
    """A CoreV1Api from the in-cluster service account, else from KUBECONFIG."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CoreV1Api()


def _core_v1_of(task: Any, fallback: Callable[[], Any]) -> Any:
    hook = getattr(task, "hook", None)
    try:
        return hook.core_v1_client if hook is not None else fallback()
    except Exception:  # noqa: BLE001 - the operator's hook is a convenience only
        return fallback()


def _read_pod(core_v1: Any, name: str, namespace: str) -> dict | None:
    from kubernetes.client.exceptions import ApiException

    try:
        return as_dict(core_v1.read_namespaced_pod(name, namespace))
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def _first_decided(verdicts: Iterable[SpotVerdict]) -> SpotVerdict:
    for verdict in verdicts:
        if verdict.spot is not None:
            return verdict
    return UNKNOWN


def spot_verdict(
    context: Mapping[str, Any],
    core_v1: Any | None = None,
    batch_v1: Any | None = None,
) -> SpotVerdict:
    """Whether the task of ``context`` failed because of a spot interruption.

    ``core_v1``/``batch_v1`` default to the operator's hook's clients, else to the
    in-cluster or KUBECONFIG configuration.
    """
    task = context.get("task")
    core_v1 = core_v1 or _core_v1_of(task, default_core_v1)

    def candidates() -> Iterable[SpotVerdict]:
        remembered = as_dict(getattr(task, "remote_pod", None) or getattr(task, "pod", None))
        meta = remembered.get("metadata") or {}
        namespace = meta.get("namespace") or getattr(task, "namespace", None)
        if meta.get("name") and namespace:
            live = _read_pod(core_v1, meta["name"], namespace)
            if live is not None:
                yield verdict_of_pod(live)
        if namespace and "ti" in context:
            listed = core_v1.list_namespaced_pod(namespace, label_selector=task_pod_selector(context))
            for pod in listed.items:
                yield verdict_of_pod(pod)
        if remembered:
            yield verdict_of_pod(remembered)
        job = as_dict(getattr(task, "job", None))
        job_meta = job.get("metadata") or {}
        if job_meta.get("name") and job_meta.get("namespace"):
            yield _job_verdict(batch_v1, job_meta["name"], job_meta["namespace"])

    return _first_decided(candidates())


def _job_verdict(batch_v1: Any | None, name: str, namespace: str) -> SpotVerdict:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    batch_v1 = batch_v1 or client.BatchV1Api()
    try:
        job = batch_v1.read_namespaced_job(name, namespace)
    except ApiException as e:
        if e.status == 404:
            return UNKNOWN
        raise
    return verdict_of_object(job) or UNKNOWN
