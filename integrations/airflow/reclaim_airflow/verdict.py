"""Was a failed Kubernetes task killed by a spot interruption? Read from the pod.

The classifier's verdict (``reclaim.dev/cause``) is authoritative. A pod can be deleted
before the classifier sees it (KubernetesPodOperator deletes its pods), so the agent's
``reclaim.dev/interruption`` annotation, written before the agent evicts a pod, is the
fallback, judged with the classifier's rules: an out-of-memory kill or an error exit is
never called spot-caused, and a record counts only for a kill inside its notice's window
(or when the node is gone). Pure functions over the pod as a dict (or a ``V1Pod``).

The rules' cases live in one table, ``classifier/verdict-cases.json``, which this
module's tests and the classifier's read alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

CAUSE = "reclaim.dev/cause"
RETRYABLE = "reclaim.dev/retryable"
EVIDENCE = "reclaim.dev/evidence"
INTERRUPTION = "reclaim.dev/interruption"
SPOT_INTERRUPTION = "spot-interruption"
# Written over an earlier spot-caused verdict when a later failure was the job's own.
OWN_FAILURE = "own-failure"

# Exit codes of a container stopped by a signal: SIGKILL (grace period over, node gone)
# and SIGTERM (evicted).
KILL_EXIT_CODES = frozenset({137, 143})
# DisruptionTarget reasons that mean the pod was taken away, and status.reason values
# that mean its node went away under it (as in classifier/src/verdict.rs).
DISRUPTIONS = frozenset({"DeletionByPodGC", "EvictionByEvictionAPI", "DeletionByTaintManager", "TerminationByKubelet"})
NODE_GONE_REASONS = frozenset({"NodeLost", "Terminated"})
# A record counts for a kill from its notice time (less the clock slack) to its deadline
# plus the record slack; a notice without a deadline spans the deadline-less window.
CLOCK_SLACK = timedelta(seconds=60)
RECORD_SLACK = timedelta(minutes=3)
DEADLINE_LESS_WINDOW = timedelta(minutes=15)


@dataclass(frozen=True)
class SpotVerdict:
    """``spot`` is True (spot-caused: retry), False (its own failure) or None (unknown)."""

    spot: bool | None
    reason: str
    #: Where the verdict came from: ``classifier``, ``agent-annotation`` or ``pod-status``.
    source: str = "none"
    #: The classifier's evidence, or the agent's interruption record.
    evidence: Mapping[str, Any] = field(default_factory=dict)

    @property
    def node(self) -> str | None:
        return self.evidence.get("node")

    @property
    def drill(self) -> bool:
        """The interruption was a rehearsal (``reclaim.dev/drill``), not the cloud's: the
        retry is the same, but dashboards and alerts may want to tell them apart."""
        return self.evidence.get("provider") == "drill"


UNKNOWN = SpotVerdict(None, "no spot interruption recorded for this task")


def as_dict(obj: Any) -> dict:
    """A Kubernetes object as the API server's JSON (camelCase keys)."""
    if obj is None or isinstance(obj, dict):
        return obj or {}
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(obj)


def _annotations(obj: dict) -> dict:
    return (obj.get("metadata") or {}).get("annotations") or {}


def _terminations(pod: dict) -> list[dict]:
    # Native sidecars (init containers with restartPolicy Always) report in
    # initContainerStatuses; their exits count like any container's.
    status = pod.get("status") or {}
    statuses = (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])
    return [
        s["state"]["terminated"]
        for s in statuses
        if (s.get("state") or {}).get("terminated")
    ]


def _json(text: str | None) -> dict:
    try:
        value = json.loads(text or "")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def verdict_of_object(obj: Any) -> SpotVerdict | None:
    """The classifier's verdict on a pod, Job or SparkApplication, if it wrote one."""
    annotations = _annotations(as_dict(obj))
    evidence = _json(annotations.get(EVIDENCE))
    if annotations.get(CAUSE) == OWN_FAILURE:
        return SpotVerdict(
            spot=False,
            reason=f"its latest failure was its own: pod {evidence.get('pod', '?')} ({evidence.get('why', '?')})",
            source="classifier",
            evidence=evidence,
        )
    if annotations.get(CAUSE) != SPOT_INTERRUPTION:
        return None
    return SpotVerdict(
        spot=annotations.get(RETRYABLE) == "true",
        reason=f"spot interruption on node {evidence.get('node', '?')} "
        f"(signals: {', '.join(evidence.get('signals', [])) or 'none'})",
        source="classifier",
        evidence=evidence,
    )


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    if isinstance(text, datetime):
        return text if text.tzinfo else text.replace(tzinfo=timezone.utc)
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def _disruption(pod: dict) -> str | None:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "DisruptionTarget" and condition.get("status") == "True":
            return condition.get("reason")
    return None


def _within_window(record: dict, killed_at: datetime) -> bool:
    """The record's times are written by whoever may write the pod: a bound past what a
    datetime holds (a deadline in year 9999) is no evidence, never an exception."""
    notice_time = _time(record.get("noticeTime"))
    if notice_time is None:
        return False
    try:
        end = _time(record.get("deadline")) or notice_time + DEADLINE_LESS_WINDOW
        return notice_time - CLOCK_SLACK <= killed_at <= end + RECORD_SLACK
    except (OverflowError, TypeError):
        return False


def _deletion_requested(pod: dict) -> datetime | None:
    """When the pod was asked to leave: its deletionTimestamp less its grace period."""
    metadata = pod.get("metadata") or {}
    due = _time(metadata.get("deletionTimestamp"))
    if due is None:
        return None
    try:
        return due - timedelta(seconds=int(metadata.get("deletionGracePeriodSeconds") or 0))
    except (OverflowError, TypeError, ValueError):
        return None


def _left_when_asked(pod: dict, record: dict, errors: list[dict]) -> bool:
    """An error exit after the drain asked the pod to leave (a program that traps SIGTERM
    and exits 1), with the agent's record current: the drain's doing, as in the classifier."""
    requested = _deletion_requested(pod)
    notice_time = _time(record.get("noticeTime"))
    if requested is None or notice_time is None:
        return False
    try:
        if requested < notice_time - CLOCK_SLACK:
            return False
    except (OverflowError, TypeError):
        return False
    for error in errors:
        finished = _time(error.get("finishedAt"))
        if finished is None or finished < requested or not _within_window(record, finished):
            return False
    return True


def verdict_of_pod(pod: Any, deleted: bool | None = None, now: datetime | None = None) -> SpotVerdict:
    """The verdict for one failed pod, as the pod itself records it.

    ``deleted``: whether the pod was deleted before it finished; ``None`` (unknown, as for
    KubernetesPodOperator's last read of a pod it then deleted) counts a pod without any
    container exit as deleted. ``now`` stands in for the kill time of a pod without one.
    """
    pod = as_dict(pod)
    written = verdict_of_object(pod)
    if written is not None:
        return written
    terminations = _terminations(pod)
    if terminations and all(t.get("exitCode") == 0 for t in terminations):
        # A Spark executor decommissioned by the drain exits 0: nothing failed.
        return SpotVerdict(None, "every container exited 0: nothing failed")
    oom = [t for t in terminations if t.get("reason") == "OOMKilled"]
    if oom:
        return SpotVerdict(False, "a container was OOMKilled: its memory limit, not the node", "pod-status")
    errors = [t for t in terminations if t.get("exitCode", 0) not in KILL_EXIT_CODES | {0}]
    record = _json(_annotations(pod).get(INTERRUPTION))
    if errors and not (record and _left_when_asked(pod, record, errors)):
        code = errors[0].get("exitCode")
        return SpotVerdict(False, f"a container exited with code {code}: a failure of the task itself", "pod-status")
    status = pod.get("status") or {}
    if deleted is None:
        deleted = not terminations
    disruption = _disruption(pod)
    killed = (
        any(t.get("exitCode") in KILL_EXIT_CODES for t in terminations)
        or deleted
        or disruption in DISRUPTIONS
        or status.get("reason") in NODE_GONE_REASONS
    )
    if errors:
        killed = True
    if not killed:
        return SpotVerdict(None, "the failure does not look like a kill")
    if not record:
        return UNKNOWN
    finished = [f for f in (_time(t.get("finishedAt")) for t in terminations) if f]
    killed_at = max(finished) if finished else (now or datetime.now(timezone.utc))
    node_gone = disruption == "DeletionByPodGC" or status.get("reason") == "NodeLost"
    if not node_gone and not _within_window(record, killed_at):
        return SpotVerdict(None, "its interruption record is from a notice that ended long before the kill")
    return SpotVerdict(
        spot=True,
        reason=f"stopped by the {record.get('kind', 'interruption')} notice on node "
        f"{record.get('node', '?')} (agent annotation)",
        source="agent-annotation",
        evidence=record,
    )
