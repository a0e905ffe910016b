"""A ``retry_policy`` for Airflow >= 3.3: retry spot-caused failures, fail the others.

    from reclaim_airflow.retry_policy import SpotRetryPolicy
    KubernetesPodOperator(..., retries=3, retry_policy=SpotRetryPolicy())

The policy runs in the worker process after the operator failed, with the operator (and
the pod it last read) in ``context["task"]``. A policy that raises falls back to
Airflow's default retries, so a Kubernetes API outage never turns into a wrong decision.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Callable

from airflow.sdk import RetryDecision, RetryPolicy

from .decision import Action, decide
from .lookup import spot_verdict


class SpotRetryPolicy(RetryPolicy):
    def __init__(
        self,
        spot_retry_delay: timedelta | None = timedelta(seconds=30),
        fail_non_spot: bool = True,
        core_v1: Callable[[], Any] | None = None,
    ):
        """``spot_retry_delay``: how long to wait before running a spot-caused failure
        again (None: the task's ``retry_delay``); ``fail_non_spot``: fail out-of-memory
        kills and error exits at once; ``core_v1``: makes the Kubernetes client (default:
        the operator's hook, else in-cluster or KUBECONFIG)."""
        self.spot_retry_delay = spot_retry_delay
        self.fail_non_spot = fail_non_spot
        self.core_v1 = core_v1

    def evaluate(self, exception, try_number, max_tries, context=None) -> RetryDecision:
        if context is None:
            return RetryDecision.default()
        client = self.core_v1() if self.core_v1 else None
        decision = decide(spot_verdict(context, core_v1=client), self.fail_non_spot)
        if decision.action is Action.RETRY:
            return RetryDecision.retry(delay=self.spot_retry_delay, reason=decision.reason)
        if decision.action is Action.FAIL:
            return RetryDecision.fail(reason=decision.reason)
        return RetryDecision.default()

    def serialize(self) -> dict[str, Any]:
        delay = self.spot_retry_delay
        return {
            "spot_retry_delay": None if delay is None else delay.total_seconds(),
            "fail_non_spot": self.fail_non_spot,
        }

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> SpotRetryPolicy:
        delay = data.get("spot_retry_delay")
        return cls(
            spot_retry_delay=None if delay is None else timedelta(seconds=delay),
            fail_non_spot=data.get("fail_non_spot", True),
        )
