"""Nightly ETL on spot nodes: spot-caused failures are retried, OOM kills and bugs are not.

Needs the Reclaim agent on the spot nodes and the classifier in the cluster, and
``reclaim_airflow`` on the workers' PYTHONPATH (it only depends on ``kubernetes``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import DAG

from reclaim_airflow.airflow2 import log_spot_verdict
from reclaim_airflow.retry_policy import SpotRetryPolicy

SPOT = {"karpenter.sh/capacity-type": "spot"}

with DAG(
    dag_id="spot_aware_etl",
    start_date=datetime(2026, 11, 1),
    schedule="@daily",
    catchup=False,
    default_args={"retries": 3, "retry_delay": timedelta(minutes=5)},
) as dag:
    extract = KubernetesPodOperator(
        task_id="extract",
        name="extract",
        namespace="data",
        image="registry.example.com/etl/extract:2026.11",
        node_selector=SPOT,
        # Keep failed pods: the classifier marks them, and the policy reads them. The
        # agent's annotation on the pod KPO last read covers a pod deleted anyway.
        on_finish_action="delete_succeeded_pod",
        # Spot-caused: retried after 30 s. OOMKilled or an error exit: failed at once.
        retry_policy=SpotRetryPolicy(spot_retry_delay=timedelta(seconds=30)),
        on_failure_callback=log_spot_verdict,
    )
