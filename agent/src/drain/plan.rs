//! The drain plan: which pods go, in what order, and what to do when a budget refuses.
//! Pure functions over pods and times, so the rules are tested without a server.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;

/// Eviction order. Executors first: their preStop hook starts Spark's decommissioning,
/// which needs the most time. Critical pods last: the others may depend on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    SparkExecutor,
    Ordinary,
    Critical,
}

/// Pods the drain leaves alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exempt {
    /// Recreated on the node at once; dies with it.
    DaemonSet,
    /// The API server's copy of a static pod; only the kubelet can remove it.
    Mirror,
    /// The agent itself: it must outlive the drain.
    Agent,
    /// Already finished; nothing left to stop.
    Finished,
    /// Already being deleted (by an earlier run of this drain, or by someone else).
    Terminating,
}

/// The pod running this agent, to be exempted from its own drain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnPod {
    pub namespace: String,
    pub name: String,
}

const CRITICAL_PRIORITY_CLASSES: [&str; 2] = ["system-node-critical", "system-cluster-critical"];
/// Priority values from this one up are reserved for system-critical pods.
const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;
/// Kubernetes' default terminationGracePeriodSeconds.
const DEFAULT_GRACE_SECONDS: i64 = 30;

pub fn triage(pod: &Pod, own: Option<&OwnPod>) -> Result<Priority, Exempt> {
    let meta = &pod.metadata;
    if own.is_some_and(|o| {
        meta.namespace.as_deref() == Some(&o.namespace) && meta.name.as_deref() == Some(&o.name)
    }) {
        return Err(Exempt::Agent);
    }
    if meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"))
    {
        return Err(Exempt::Mirror);
    }
    let owned_by_daemonset = meta
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.kind == "DaemonSet");
    if owned_by_daemonset {
        return Err(Exempt::DaemonSet);
    }
    if meta.deletion_timestamp.is_some() {
        return Err(Exempt::Terminating);
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return Err(Exempt::Finished);
    }
    let spec = pod.spec.as_ref();
    let critical = spec.is_some_and(|s| {
        s.priority_class_name
            .as_deref()
            .is_some_and(|c| CRITICAL_PRIORITY_CLASSES.contains(&c))
            || s.priority.is_some_and(|p| p >= SYSTEM_CRITICAL_PRIORITY)
    });
    if critical {
        return Ok(Priority::Critical);
    }
    let executor = meta
        .labels
        .as_ref()
        .and_then(|l| l.get("spark-role"))
        .is_some_and(|r| r == "executor");
    Ok(if executor {
        Priority::SparkExecutor
    } else {
        Priority::Ordinary
    })
}

pub fn grace_seconds(pod: &Pod) -> i64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(DEFAULT_GRACE_SECONDS)
}

/// Whole seconds from `now` until `deadline`, never negative.
pub fn seconds_left(now: Timestamp, deadline: Timestamp) -> i64 {
    deadline.duration_since(now).as_secs().max(0)
}

/// The grace period to ask for when evicting: the pod's own if it fits before the
/// deadline, else the time left (`None` keeps the pod's own).
pub fn eviction_grace(now: Timestamp, deadline: Timestamp, pod_grace: i64) -> Option<i64> {
    let left = seconds_left(now, deadline);
    (pod_grace > left).then_some(left)
}

/// What to do after a PodDisruptionBudget refused an eviction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterRefusal {
    /// Ask again after the retry interval: the pod's full grace period still fits.
    RetryEviction,
    /// The deadline wins over the budget: delete now with this grace period.
    Delete { grace_seconds: i64 },
}

pub fn after_refusal(
    now: Timestamp,
    deadline: Timestamp,
    pod_grace: i64,
    retry_interval_seconds: i64,
) -> AfterRefusal {
    let left = seconds_left(now, deadline);
    if left >= pod_grace + retry_interval_seconds {
        AfterRefusal::RetryEviction
    } else {
        AfterRefusal::Delete {
            grace_seconds: pod_grace.min(left),
        }
    }
}

/// The node's pods sorted out: those to drain in eviction order, and those left alone.
#[derive(Debug, Default)]
pub struct DrainPlan {
    pub to_drain: Vec<(Priority, Pod)>,
    pub exempt: Vec<(Exempt, Pod)>,
}

pub fn order(pods: Vec<Pod>, own: Option<&OwnPod>) -> DrainPlan {
    let mut plan = DrainPlan::default();
    for pod in pods {
        match triage(&pod, own) {
            Ok(priority) => plan.to_drain.push((priority, pod)),
            Err(reason) => plan.exempt.push((reason, pod)),
        }
    }
    plan.to_drain.sort_by_key(|(priority, _)| *priority);
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(extra: serde_json::Value) -> Pod {
        let mut base = json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": []}, "status": {"phase": "Running"}});
        merge(&mut base, extra);
        serde_json::from_value(base).unwrap()
    }

    fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
        match (base, extra) {
            (serde_json::Value::Object(b), serde_json::Value::Object(e)) => {
                for (k, v) in e {
                    merge(b.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (b, e) => *b = e,
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn pods_are_ordered_executors_then_ordinary_then_critical() {
        let pods = vec![
            pod(
                json!({"metadata": {"name": "dns"}, "spec": {"priorityClassName": "system-cluster-critical"}}),
            ),
            pod(json!({"metadata": {"name": "task"}})),
            pod(json!({"metadata": {"name": "exec", "labels": {"spark-role": "executor"}}})),
            pod(json!({"metadata": {"name": "driver", "labels": {"spark-role": "driver"}}})),
            pod(json!({"metadata": {"name": "prio"}, "spec": {"priority": 2000001000}})),
        ];
        let plan = order(pods, None);
        let names: Vec<_> = plan
            .to_drain
            .iter()
            .map(|(p, pod)| (*p, pod.metadata.name.clone().unwrap()))
            .collect();
        assert_eq!(
            names,
            [
                (Priority::SparkExecutor, "exec".to_owned()),
                (Priority::Ordinary, "task".to_owned()),
                (Priority::Ordinary, "driver".to_owned()),
                (Priority::Critical, "dns".to_owned()),
                (Priority::Critical, "prio".to_owned()),
            ]
        );
        assert!(plan.exempt.is_empty());
    }

    #[test]
    fn daemonset_mirror_own_finished_and_terminating_pods_are_exempt() {
        let own = OwnPod {
            namespace: "ns".into(),
            name: "reclaim-agent-x".into(),
        };
        let cases = [
            (
                json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "d", "uid": "u", "controller": true}]}}),
                Exempt::DaemonSet,
            ),
            (
                json!({"metadata": {"annotations": {"kubernetes.io/config.mirror": "h"}}}),
                Exempt::Mirror,
            ),
            (
                json!({"metadata": {"name": "reclaim-agent-x"}}),
                Exempt::Agent,
            ),
            (json!({"status": {"phase": "Succeeded"}}), Exempt::Finished),
            (
                json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
                Exempt::Terminating,
            ),
        ];
        for (extra, expected) in cases {
            assert_eq!(
                triage(&pod(extra.clone()), Some(&own)),
                Err(expected),
                "{extra}"
            );
        }
        let owned_by_job = json!({"metadata": {"ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u", "controller": true}]}});
        assert_eq!(
            triage(&pod(owned_by_job), Some(&own)),
            Ok(Priority::Ordinary)
        );
    }

    #[test]
    fn a_grace_period_longer_than_the_time_left_is_clamped() {
        let now = at("2026-01-01T10:00:00Z");
        assert_eq!(eviction_grace(now, at("2026-01-01T10:01:50Z"), 30), None);
        assert_eq!(
            eviction_grace(now, at("2026-01-01T10:00:20Z"), 30),
            Some(20)
        );
        assert_eq!(eviction_grace(now, at("2026-01-01T09:59:00Z"), 30), Some(0));
    }

    #[test]
    fn a_refused_eviction_is_retried_only_while_the_grace_period_still_fits() {
        let deadline = at("2026-01-01T10:01:00Z");
        assert_eq!(
            after_refusal(at("2026-01-01T10:00:00Z"), deadline, 30, 1),
            AfterRefusal::RetryEviction
        );
        assert_eq!(
            after_refusal(at("2026-01-01T10:00:29Z"), deadline, 30, 1),
            AfterRefusal::RetryEviction
        );
        assert_eq!(
            after_refusal(at("2026-01-01T10:00:30Z"), deadline, 30, 1),
            AfterRefusal::Delete { grace_seconds: 30 }
        );
        assert_eq!(
            after_refusal(at("2026-01-01T10:00:50Z"), deadline, 30, 1),
            AfterRefusal::Delete { grace_seconds: 10 }
        );
        assert_eq!(
            after_refusal(at("2026-01-01T10:02:00Z"), deadline, 30, 1),
            AfterRefusal::Delete { grace_seconds: 0 }
        );
    }
}
