//! The drain plan: a pure function of (now, deadline, the pods on the node, what the
//! drain did so far) to the next requests. The drain re-reads the node's pods every
//! round and asks this module what to do, so a pod bound after the drain started, a pod
//! deleted and recreated by someone else, or a request that failed are all handled by
//! the next round, as Karpenter's terminator does.
//!
//! Groups leave in turn ([`GROUPS`], data): Spark executors and ordinary pods are asked at
//! once; Spark drivers once the executors are gone (they receive the executors'
//! migrating blocks); critical pods once every other drained pod is gone (the others
//! need DNS, CSI, proxies until then). A later group starts no later than the deadline
//! minus its longest grace period (and one retry interval, the time between two rounds),
//! so it still leaves gracefully in time.

use std::collections::HashMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;
use reclaim_model::keys::DRAIN_GROUP_ANNOTATION;

/// A drain group. The order is the order in which groups are asked to leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    /// Spark executors (their preStop hook starts decommissioning, which takes longest),
    /// and pods annotated `first`.
    First,
    /// Every other pod, and pods annotated `normal`.
    Normal,
    /// Spark drivers: they receive the blocks their executors migrate.
    Drivers,
    /// Critical pods (system priority classes, priority >= 2e9), and pods annotated `last`.
    Last,
}

/// Which groups must be gone before a group is asked to leave.
pub const GROUPS: [(Group, &[Group]); 4] = [
    (Group::First, &[]),
    (Group::Normal, &[]),
    (Group::Drivers, &[Group::First]),
    (Group::Last, &[Group::First, Group::Normal, Group::Drivers]),
];

impl Group {
    pub fn label(self) -> &'static str {
        match self {
            Group::First => "first",
            Group::Normal => "normal",
            Group::Drivers => "drivers",
            Group::Last => "last",
        }
    }

    fn waits_for(self) -> &'static [Group] {
        GROUPS
            .iter()
            .find(|(g, _)| *g == self)
            .map(|(_, waits)| *waits)
            .unwrap_or_default()
    }
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

/// The group a pod leaves with, or why it stays.
pub fn triage(pod: &Pod, own: Option<&OwnPod>) -> Result<Group, Exempt> {
    let meta = &pod.metadata;
    if own.is_some_and(|o| {
        meta.namespace.as_deref() == Some(&o.namespace) && meta.name.as_deref() == Some(&o.name)
    }) {
        return Err(Exempt::Agent);
    }
    let annotation = |key: &str| meta.annotations.as_ref().and_then(|a| a.get(key));
    if annotation("kubernetes.io/config.mirror").is_some() {
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
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return Err(Exempt::Finished);
    }
    match annotation(DRAIN_GROUP_ANNOTATION).map(String::as_str) {
        Some("first") => return Ok(Group::First),
        Some("normal") => return Ok(Group::Normal),
        Some("last") => return Ok(Group::Last),
        _ => {}
    }
    if critical(pod) {
        return Ok(Group::Last);
    }
    let role = meta.labels.as_ref().and_then(|l| l.get("spark-role"));
    Ok(match role.map(String::as_str) {
        Some("executor") => Group::First,
        Some("driver") => Group::Drivers,
        _ => Group::Normal,
    })
}

/// A system-critical pod: its priority class is one of the system's (which only
/// `kube-system` may use by default) or its priority that high.
fn critical(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| {
        s.priority_class_name
            .as_deref()
            .is_some_and(|c| CRITICAL_PRIORITY_CLASSES.contains(&c))
            || s.priority.is_some_and(|p| p >= SYSTEM_CRITICAL_PRIORITY)
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

/// A grace period cut to the time left, and never to 0 (a pod whose own grace period is
/// 0 keeps it): a deletion with grace 0 is a force deletion, which removes the pod from
/// the API before its containers have stopped, and whole seconds truncate (0.9 s left
/// reads 0). At the deadline a pod gets 1 s; the drain deadline already keeps the safety
/// margin before the cloud's.
pub fn clamped_grace(grace: i64, left: i64) -> i64 {
    grace.min(left.max(1))
}

/// The grace period to ask for when evicting: the pod's own if it fits before the
/// deadline, else the time left (`None` keeps the pod's own).
pub fn eviction_grace(now: Timestamp, deadline: Timestamp, pod_grace: i64) -> Option<i64> {
    let left = seconds_left(now, deadline);
    (pod_grace > left).then(|| clamped_grace(pod_grace, left))
}

/// A pod on the node that the drain must get off it, as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainPod {
    pub uid: String,
    pub group: Group,
    /// Its terminationGracePeriodSeconds.
    pub grace: i64,
    /// Whether the groups before it keep time back for its grace period. A critical pod
    /// does; a pod that is last only by its own `reclaim.dev/drain-group` annotation
    /// (anyone who creates a pod can write one) does not, or a one-hour grace period would
    /// halve every other pod's time to leave. It still leaves last, with the time left.
    pub reserves_time: bool,
    /// When its graceful deletion ends (`deletionTimestamp`), if it is terminating.
    pub terminating_until: Option<Timestamp>,
}

impl DrainPod {
    /// The pod as the plan sees it, or why the drain leaves it alone.
    pub fn of(pod: &Pod, own: Option<&OwnPod>) -> Result<DrainPod, Exempt> {
        let group = triage(pod, own)?;
        Ok(DrainPod {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            group,
            grace: grace_seconds(pod),
            reserves_time: group != Group::Last || critical(pod),
            terminating_until: pod.metadata.deletion_timestamp.as_ref().map(|t| t.0),
        })
    }
}

/// One request the drain makes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Evict (respects the pod's budget, runs its preStop hook); `grace` overrides its
    /// own grace period when that would end after the deadline.
    Evict { uid: String, grace: Option<i64> },
    /// Delete with this grace period: the deadline wins over a refusing budget, or a pod
    /// already terminating would end too late.
    Delete { uid: String, grace: i64 },
}

/// What the drain did to one pod so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tried {
    /// Requests sent for it.
    pub requests: u32,
    /// Not before then: the retry interval after a request, or what a throttling server
    /// asked for (`Retry-After`).
    pub not_before: Option<Timestamp>,
}

/// What the drain did so far, per pod uid.
pub type History = HashMap<String, Tried>;

/// The longest grace period among the pods of `group` (0 when it has none).
fn longest_grace(pods: &[DrainPod], group: Group) -> i64 {
    pods.iter()
        .filter(|p| p.group == group)
        .map(|p| p.grace)
        .max()
        .unwrap_or(0)
}

/// The longest grace period the groups before `group` keep time back for.
fn reserved_grace(pods: &[DrainPod], group: Group) -> i64 {
    pods.iter()
        .filter(|p| p.group == group && p.reserves_time)
        .map(|p| p.grace)
        .max()
        .unwrap_or(0)
}

/// When each group must be gone. The groups nobody waits for have the drain's deadline;
/// a group others still wait for must be gone earlier, by the time those others need to
/// leave gracefully after it (their longest grace period and a round), so that critical
/// pods really leave last. Nothing is reserved for a group that starts anyway (its time
/// is short), and a reservation never takes more than half of the time left, so the
/// first groups keep time to leave gracefully on a short notice.
pub fn group_deadlines(
    now: Timestamp,
    deadline: Timestamp,
    pods: &[DrainPod],
    retry_seconds: i64,
) -> HashMap<Group, Timestamp> {
    let mut deadlines: HashMap<Group, Timestamp> = HashMap::new();
    for (group, _) in GROUPS.iter().rev() {
        let mut own = deadline;
        for (later, waits) in GROUPS.iter() {
            let present = pods.iter().any(|p| p.group == *later);
            if !waits.contains(group) || !present {
                continue;
            }
            let later_deadline = deadlines.get(later).copied().unwrap_or(deadline);
            let later_left = seconds_left(now, later_deadline);
            let needed = reserved_grace(pods, *later) + retry_seconds;
            if later_left > needed {
                let reserve = needed.min(later_left / 2);
                own = own.min(later_deadline - SignedDuration::from_secs(reserve));
            }
        }
        deadlines.insert(*group, own);
    }
    deadlines
}

/// The requests to make now, in group order. `retry` is the pause between two requests
/// for one pod, and between two rounds.
pub fn next_requests(
    now: Timestamp,
    deadline: Timestamp,
    pods: &[DrainPod],
    history: &History,
    retry: SignedDuration,
) -> Vec<Request> {
    let retry_seconds = retry.as_secs().max(1);
    let deadlines = group_deadlines(now, deadline, pods, retry_seconds);
    let deadline_of = |group: Group| deadlines.get(&group).copied().unwrap_or(deadline);
    let started = |group: Group| {
        let others_gone = !pods.iter().any(|p| group.waits_for().contains(&p.group));
        let left = seconds_left(now, deadline_of(group));
        others_gone || left <= longest_grace(pods, group) + retry_seconds
    };
    let mut in_order: Vec<&DrainPod> = pods.iter().filter(|p| started(p.group)).collect();
    in_order.sort_by_key(|p| p.group);
    let mut requests = Vec::new();
    for pod in in_order {
        let tried = history.get(&pod.uid).copied().unwrap_or_default();
        let uid = pod.uid.clone();
        let due = deadline_of(pod.group);
        let left = seconds_left(now, due);
        // A throttling server's Retry-After grows to 32 s under load: it is honoured
        // until the pod's whole grace period no longer fits, then the pod is asked every
        // round, or it would be late.
        let hurried = left <= pod.grace + retry_seconds;
        if tried.not_before.is_some_and(|t| now < t) && !hurried {
            continue;
        }
        match pod.terminating_until {
            // Terminating (asked by us or by someone else): only ever faster.
            Some(until) if until > due => requests.push(Request::Delete {
                uid,
                grace: clamped_grace(pod.grace, left),
            }),
            Some(_) => {}
            // Asked while the whole grace period (and one more try) fits; then deleted
            // with the grace period clamped to the time left.
            None if tried.requests == 0 || left >= pod.grace + retry_seconds => {
                requests.push(Request::Evict {
                    uid,
                    grace: eviction_grace(now, due, pod.grace),
                })
            }
            None => requests.push(Request::Delete {
                uid,
                grace: clamped_grace(pod.grace, left),
            }),
        }
    }
    requests
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(extra: serde_json::Value) -> Pod {
        let mut base = json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": {"containers": []}, "status": {"phase": "Running"}});
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

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    fn drain_pod(uid: &str, group: Group, grace: i64) -> DrainPod {
        DrainPod {
            uid: uid.into(),
            group,
            grace,
            reserves_time: true,
            terminating_until: None,
        }
    }

    #[test]
    fn a_pod_last_only_by_its_own_annotation_takes_no_time_from_the_others() {
        let pod = |annotations: serde_json::Value, spec: serde_json::Value| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"uid": "u", "annotations": annotations},
                "spec": spec,
            }))
            .unwrap()
        };
        let greedy = DrainPod::of(
            &pod(
                json!({"reclaim.dev/drain-group": "last"}),
                json!({"terminationGracePeriodSeconds": 3600, "containers": []}),
            ),
            None,
        )
        .unwrap();
        assert_eq!((greedy.group, greedy.reserves_time), (Group::Last, false));
        let dns = DrainPod::of(
            &pod(
                json!({}),
                json!({"priorityClassName": "system-node-critical", "terminationGracePeriodSeconds": 30, "containers": []}),
            ),
            None,
        )
        .unwrap();
        assert_eq!((dns.group, dns.reserves_time), (Group::Last, true));
        let task = drain_pod("task", Group::Normal, 30);
        let deadline = at(120);
        let alone = group_deadlines(at(0), deadline, &[task.clone(), greedy.clone()], 5);
        assert_eq!(
            alone[&Group::Normal],
            at(115),
            "the annotation reserves one round, not half the time (its 3600 s grace)"
        );
        let with_dns = group_deadlines(at(0), deadline, &[task, greedy, dns], 5);
        assert_eq!(with_dns[&Group::Normal], at(120 - 35), "DNS keeps its 30 s");
    }

    fn uids(requests: &[Request]) -> Vec<String> {
        requests
            .iter()
            .map(|r| match r {
                Request::Evict { uid, .. } => format!("evict {uid}"),
                Request::Delete { uid, grace } => format!("delete {uid} {grace}s"),
            })
            .collect()
    }

    const RETRY: SignedDuration = SignedDuration::from_secs(1);

    #[test]
    fn each_pod_gets_its_group_and_the_annotation_moves_it() {
        let cases = [
            (
                json!({"spec": {"priorityClassName": "system-cluster-critical"}}),
                Group::Last,
            ),
            (json!({"spec": {"priority": 2000001000}}), Group::Last),
            (json!({}), Group::Normal),
            (
                json!({"metadata": {"labels": {"spark-role": "executor"}}}),
                Group::First,
            ),
            (
                json!({"metadata": {"labels": {"spark-role": "driver"}}}),
                Group::Drivers,
            ),
            (
                json!({"metadata": {"annotations": {"reclaim.dev/drain-group": "last"}}}),
                Group::Last,
            ),
            (
                json!({"metadata": {"labels": {"spark-role": "driver"}, "annotations": {"reclaim.dev/drain-group": "first"}}}),
                Group::First,
            ),
            (
                json!({"metadata": {"annotations": {"reclaim.dev/drain-group": "normal"}}, "spec": {"priorityClassName": "system-node-critical"}}),
                Group::Normal,
            ),
            (
                json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
                Group::Normal,
            ),
        ];
        for (extra, group) in cases {
            assert_eq!(triage(&pod(extra.clone()), None), Ok(group), "{extra}");
        }
    }

    #[test]
    fn daemonset_mirror_own_and_finished_pods_are_exempt() {
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
        ];
        for (extra, expected) in cases {
            assert_eq!(
                triage(&pod(extra.clone()), Some(&own)),
                Err(expected),
                "{extra}"
            );
        }
        let terminating = pod(json!({"metadata": {"deletionTimestamp": "2027-01-15T08:00:40Z"}}));
        assert_eq!(
            DrainPod::of(&terminating, Some(&own))
                .unwrap()
                .terminating_until,
            Some(at(40))
        );
    }

    #[test]
    fn a_grace_period_longer_than_the_time_left_is_clamped_but_never_to_zero() {
        assert_eq!(eviction_grace(at(0), at(110), 30), None);
        assert_eq!(eviction_grace(at(0), at(20), 30), Some(20));
        assert_eq!(eviction_grace(at(0), at(-60), 30), Some(1));
        assert_eq!(clamped_grace(30, 1), 1);
        assert_eq!(clamped_grace(30, 0), 1, "no force deletion at the deadline");
        // 0.9 s before the deadline reads 0 whole seconds: still not a force deletion.
        let just_before = at(0) + SignedDuration::from_millis(100);
        assert_eq!(eviction_grace(just_before, at(1), 30), Some(1));
        assert_eq!(clamped_grace(0, 10), 0, "a pod's own 0 stays");
        assert_eq!(clamped_grace(5, 10), 5);
    }

    #[test]
    fn executors_and_ordinary_pods_go_first_drivers_after_the_executors_critical_pods_last() {
        let deadline = at(110);
        let mut pods = vec![
            drain_pod("exec", Group::First, 30),
            drain_pod("task", Group::Normal, 30),
            drain_pod("driver", Group::Drivers, 30),
            drain_pod("dns", Group::Last, 30),
        ];
        let history = History::new();
        assert_eq!(
            uids(&next_requests(at(0), deadline, &pods, &history, RETRY)),
            ["evict exec", "evict task"]
        );
        // The executor is terminating: asked is not gone, so its driver still waits.
        pods[0].terminating_until = Some(at(30));
        let asked: History = [("exec", 1), ("task", 1)]
            .map(|(u, n)| {
                (
                    u.to_owned(),
                    Tried {
                        requests: n,
                        not_before: Some(at(1)),
                    },
                )
            })
            .into();
        assert!(
            next_requests(at(5), deadline, &pods, &asked, RETRY)
                .iter()
                .all(|r| !matches!(r, Request::Evict { uid, .. } if uid != "task"))
        );
        pods.remove(0);
        assert_eq!(
            uids(&next_requests(at(31), deadline, &pods, &asked, RETRY)),
            ["evict task", "evict driver"],
            "the executor gone, its driver goes; the budget-refused task is asked again"
        );
        pods.retain(|p| p.group == Group::Last);
        assert_eq!(
            uids(&next_requests(at(40), deadline, &pods, &asked, RETRY)),
            ["evict dns"],
            "every other pod gone: the critical pod goes"
        );
    }

    #[test]
    fn a_waiting_group_starts_when_its_longest_grace_period_would_no_longer_fit() {
        let deadline = at(100);
        let pods = vec![
            drain_pod("stuck", Group::Normal, 5),
            drain_pod("dns", Group::Last, 20),
            drain_pod("proxy", Group::Last, 30),
        ];
        let refused: History = [(
            "stuck".to_owned(),
            Tried {
                requests: 3,
                not_before: None,
            },
        )]
        .into();
        assert_eq!(
            uids(&next_requests(at(68), deadline, &pods, &refused, RETRY)),
            ["evict stuck"]
        );
        assert_eq!(
            uids(&next_requests(at(69), deadline, &pods, &refused, RETRY)),
            ["evict stuck", "evict dns", "evict proxy"],
            "30 s and one round left: the critical pods start, whatever still runs"
        );
    }

    #[test]
    fn a_throttled_pod_waits_as_the_server_asks_until_its_grace_period_no_longer_fits() {
        let deadline = at(60);
        let pods = vec![drain_pod("exec", Group::First, 30)];
        // Throttled at 0 with Retry-After 32 s.
        let throttled: History = [(
            "exec".to_owned(),
            Tried {
                requests: 1,
                not_before: Some(at(32)),
            },
        )]
        .into();
        for second in [1, 15, 28] {
            assert!(
                next_requests(at(second), deadline, &pods, &throttled, RETRY).is_empty(),
                "Retry-After honoured at {second} s"
            );
        }
        // From 29 s, 31 s are left: the grace period and a round no longer fit after the
        // server's back-off, so the pod is asked at once, as an eviction while it fits,
        // then with the time left.
        assert_eq!(
            uids(&next_requests(at(29), deadline, &pods, &throttled, RETRY)),
            ["evict exec"]
        );
        assert_eq!(
            uids(&next_requests(at(31), deadline, &pods, &throttled, RETRY)),
            ["delete exec 29s"]
        );
    }

    #[test]
    fn a_refused_pod_is_asked_again_while_its_grace_fits_then_deleted_with_the_time_left() {
        let deadline = at(60);
        let pods = vec![drain_pod("exec", Group::First, 30)];
        let tried = |n, not_before| -> History {
            [(
                "exec".to_owned(),
                Tried {
                    requests: n,
                    not_before,
                },
            )]
            .into()
        };
        assert!(
            next_requests(at(1), deadline, &pods, &tried(1, Some(at(2))), RETRY).is_empty(),
            "not before the retry interval"
        );
        assert_eq!(
            uids(&next_requests(
                at(2),
                deadline,
                &pods,
                &tried(1, Some(at(2))),
                RETRY
            )),
            ["evict exec"]
        );
        assert_eq!(
            uids(&next_requests(
                at(29),
                deadline,
                &pods,
                &tried(5, None),
                RETRY
            )),
            ["evict exec"]
        );
        assert_eq!(
            uids(&next_requests(
                at(30),
                deadline,
                &pods,
                &tried(6, None),
                RETRY
            )),
            ["delete exec 30s"]
        );
        assert_eq!(
            uids(&next_requests(
                at(50),
                deadline,
                &pods,
                &tried(7, None),
                RETRY
            )),
            ["delete exec 10s"]
        );
        assert_eq!(
            uids(&next_requests(
                at(61),
                deadline,
                &pods,
                &tried(8, None),
                RETRY
            )),
            ["delete exec 1s"],
            "past the deadline: at once, but never a force deletion"
        );
        let first_ask_late = next_requests(at(50), deadline, &pods, &History::new(), RETRY);
        assert_eq!(
            first_ask_late,
            [Request::Evict {
                uid: "exec".into(),
                grace: Some(10)
            }],
            "asked first, with the grace clamped"
        );
    }

    #[test]
    fn a_terminating_pod_is_only_ever_made_faster() {
        let deadline = at(60);
        let mut slow = drain_pod("slow", Group::Normal, 300);
        slow.terminating_until = Some(at(300));
        let mut fine = drain_pod("fine", Group::Normal, 30);
        fine.terminating_until = Some(at(40));
        let pods = vec![slow, fine];
        assert_eq!(
            uids(&next_requests(
                at(10),
                deadline,
                &pods,
                &History::new(),
                RETRY
            )),
            ["delete slow 50s"]
        );
    }

    #[test]
    fn a_pod_bound_after_the_drain_started_is_asked_in_the_next_round() {
        let deadline = at(100);
        let history: History = [(
            "old".to_owned(),
            Tried {
                requests: 1,
                not_before: Some(at(1)),
            },
        )]
        .into();
        let mut old = drain_pod("old", Group::Normal, 30);
        old.terminating_until = Some(at(30));
        let pods = vec![old, drain_pod("late", Group::Normal, 30)];
        assert_eq!(
            uids(&next_requests(at(5), deadline, &pods, &history, RETRY)),
            ["evict late"]
        );
    }

    #[test]
    fn a_refused_pod_is_deleted_early_enough_for_the_critical_pods_to_leave_after_it() {
        let deadline = at(60);
        let pods = vec![
            drain_pod("exec", Group::First, 5),
            drain_pod("dns", Group::Last, 2),
        ];
        let deadlines = group_deadlines(at(0), deadline, &pods, 1);
        assert_eq!(
            deadlines[&Group::First],
            at(57),
            "3 s kept for the critical pod"
        );
        assert_eq!(deadlines[&Group::Last], deadline);
        let refused: History = [(
            "exec".to_owned(),
            Tried {
                requests: 9,
                not_before: None,
            },
        )]
        .into();
        assert_eq!(
            uids(&next_requests(at(51), deadline, &pods, &refused, RETRY)),
            ["evict exec"]
        );
        assert_eq!(
            uids(&next_requests(at(52), deadline, &pods, &refused, RETRY)),
            ["delete exec 5s"]
        );
        let only_dns = vec![drain_pod("dns", Group::Last, 2)];
        assert_eq!(
            uids(&next_requests(
                at(57),
                deadline,
                &only_dns,
                &History::new(),
                RETRY
            )),
            ["evict dns"]
        );
    }

    #[test]
    fn nothing_is_reserved_for_critical_pods_that_start_anyway_and_never_more_than_half() {
        let pods = vec![
            drain_pod("exec", Group::First, 20),
            drain_pod("dns", Group::Last, 30),
        ];
        assert_eq!(
            next_requests(at(0), at(20), &pods, &History::new(), RETRY),
            [
                Request::Evict {
                    uid: "exec".into(),
                    grace: None
                },
                Request::Evict {
                    uid: "dns".into(),
                    grace: Some(20)
                }
            ],
            "20 s left: the critical pod starts at once, the executor keeps its whole grace"
        );
        let deadlines = group_deadlines(at(0), at(40), &pods, 1);
        assert_eq!(
            deadlines[&Group::First],
            at(20),
            "31 s wanted, half of 40 s given"
        );
    }
}
