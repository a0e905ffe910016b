"""Was a failed Kubernetes task killed by a spot interruption? Read from the pod.

The classifier's verdict (``reclaim.dev/cause``) is authoritative. A pod can be deleted
before the classifier sees it (KubernetesPodOperator deletes its pods), so the agent's
``reclaim.dev/interruption`` annotation, written before the agent evicts a pod, is the
fallback, judged with the classifier's rules: an out-of-memory kill or an error exit is
never called spot-caused. Pure functions over the pod as a dict (or a ``V1Pod``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

CAUSE = "reclaim.dev/cause"
RETRYABLE = "reclaim.dev/retryable"
EVIDENCE = "reclaim.dev/evidence"
INTERRUPTION = "reclaim.dev/interruption"
SPOT_INTERRUPTION = "spot-interruption"

# Exit codes of a container stopped by a signal: SIGKILL (grace period over, node gone)
# and SIGTERM (evicted).
KILL_EXIT_CODES = frozenset({137, 143})


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
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
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
    if annotations.get(CAUSE) != SPOT_INTERRUPTION:
        return None
    evidence = _json(annotations.get(EVIDENCE))
    return SpotVerdict(
        spot=annotations.get(RETRYABLE) == "true",
        reason=f"spot interruption on node {evidence.get('node', '?')} "
        f"(signals: {', '.join(evidence.get('signals', [])) or 'none'})",
        source="classifier",
        evidence=evidence,
    )


def verdict_of_pod(pod: Any) -> SpotVerdict:
    """The verdict for one failed pod, as the pod itself records it."""
    pod = as_dict(pod)
    written = verdict_of_object(pod)
    if written is not None:
        return written
    terminations = _terminations(pod)
    oom = [t for t in terminations if t.get("reason") == "OOMKilled"]
    if oom:
        return SpotVerdict(False, "a container was OOMKilled: its memory limit, not the node", "pod-status")
    errors = [t for t in terminations if t.get("exitCode", 0) not in KILL_EXIT_CODES | {0}]
    if errors:
        code = errors[0].get("exitCode")
        return SpotVerdict(False, f"a container exited with code {code}: a failure of the task itself", "pod-status")
    record = _json(_annotations(pod).get(INTERRUPTION))
    if not record:
        return UNKNOWN
    return SpotVerdict(
        spot=True,
        reason=f"stopped by the {record.get('kind', 'interruption')} notice on node "
        f"{record.get('node', '?')} (agent annotation)",
        source="agent-annotation",
        evidence=record,
    )
