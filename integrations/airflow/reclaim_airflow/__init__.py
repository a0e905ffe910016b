"""Reclaim for Airflow: was a failed Kubernetes task killed by a spot interruption?

- ``spot_verdict(context)``: the verdict for a failed KubernetesPodOperator or
  KubernetesJobOperator task (its pod, or its Job);
- ``reclaim_airflow.retry_policy.SpotRetryPolicy``: ``retry_policy`` for Airflow >= 3.3;
- ``reclaim_airflow.airflow2``: ``SpotAwareRetries`` and ``log_spot_verdict`` for 2.x.

Depends only on the ``kubernetes`` client; Airflow is imported by the hooks that need it.
"""

from .decision import Action, Decision, decide
from .lookup import spot_verdict, task_pod_selector
from .verdict import SpotVerdict, verdict_of_object, verdict_of_pod

__all__ = [
    "Action",
    "Decision",
    "SpotVerdict",
    "decide",
    "spot_verdict",
    "task_pod_selector",
    "verdict_of_object",
    "verdict_of_pod",
]
