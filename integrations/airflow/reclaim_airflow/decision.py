"""From a verdict to a retry decision, the same for every Airflow version."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .verdict import SpotVerdict


class Action(Enum):
    #: Spot-caused: run it again.
    RETRY = "retry"
    #: Its own failure (out of memory, an error exit): retrying blindly will not help.
    FAIL = "fail"
    #: Nothing known: the task's own retry settings decide.
    DEFAULT = "default"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    verdict: SpotVerdict


def decide(verdict: SpotVerdict, fail_non_spot: bool = True) -> Decision:
    """``fail_non_spot=False`` leaves OOM kills and error exits to the task's retries."""
    if verdict.spot:
        drill = " (a drill)" if verdict.drill else ""
        return Decision(Action.RETRY, f"reclaim: {verdict.reason}{drill}; retrying", verdict)
    if verdict.spot is False and fail_non_spot:
        return Decision(Action.FAIL, f"reclaim: not a spot interruption: {verdict.reason}; not retrying", verdict)
    return Decision(Action.DEFAULT, f"reclaim: {verdict.reason}", verdict)
