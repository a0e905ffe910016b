"""Spot-aware retries for Airflow 2.x (and 3.x before ``retry_policy``).

Airflow 2 has no retry policy, so the decision is made where the failure is raised:

    class SpotAwarePodOperator(SpotAwareRetries, KubernetesPodOperator):
        pass

    SpotAwarePodOperator(..., retries=3, on_failure_callback=log_spot_verdict)

A spot-caused failure is re-raised as it was, so Airflow retries it; an out-of-memory
kill or an error exit is raised as ``AirflowFailException``, which skips the remaining
retries; an unknown failure keeps the task's own retries.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from .decision import Action, Decision, decide
from .lookup import spot_verdict
from .verdict import UNKNOWN

log = logging.getLogger(__name__)


def _fail_exception() -> type[Exception]:
    try:
        from airflow.sdk.exceptions import AirflowFailException
    except ImportError:
        from airflow.exceptions import AirflowFailException
    return AirflowFailException


def spot_decision(context: Mapping[str, Any], fail_non_spot: bool = True) -> Decision:
    """The retry decision for the failed task of ``context``; never raises: a lookup
    that fails (API down, no permission) leaves the task's own retries in charge."""
    try:
        return decide(spot_verdict(context), fail_non_spot)
    except Exception as e:  # noqa: BLE001 - deciding must not mask the task's failure
        log.warning("reclaim: could not read the spot verdict (%s); default retries apply", e)
        return Decision(Action.DEFAULT, f"reclaim: verdict unavailable: {e}", UNKNOWN)


class SpotAwareRetries:
    """Mix in before the operator class. Set ``fail_non_spot = False`` on the subclass to
    keep the retries of out-of-memory kills and error exits too. (A class attribute: the
    operator's metaclass owns ``__init__``.)"""

    fail_non_spot = True

    def execute(self, context: Mapping[str, Any]) -> Any:
        try:
            return super().execute(context)
        except Exception as failure:
            if isinstance(failure, _fail_exception()):
                raise
            decision = spot_decision(context, self.fail_non_spot)
            log.info("%s", decision.reason)
            if decision.action is Action.FAIL:
                raise _fail_exception()(decision.reason) from failure
            raise


def log_spot_verdict(context: Mapping[str, Any]) -> Decision:
    """An ``on_failure_callback``/``on_retry_callback`` that logs why the task failed."""
    decision = spot_decision(context, fail_non_spot=True)
    log.warning("%s (task %s)", decision.reason, getattr(context.get("ti"), "task_id", "?"))
    return decision
