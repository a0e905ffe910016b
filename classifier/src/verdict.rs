//! The rules: was a failure caused by a spot interruption? Pure functions over what the
//! pod's status says and what notice its node carried, so each rule is tested with
//! plain values. The order matters: an out-of-memory kill or a failure of the job itself
//! is never called spot-caused, whatever the node went through.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;
use reclaim_model::{Evidence, Notice, NoticeKind, PodInterruption};

/// How one container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerExit {
    pub code: i32,
    pub reason: Option<String>,
    pub finished_at: Option<Timestamp>,
}

/// What the pod's status says about how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failure {
    pub exits: Vec<ContainerExit>,
    /// `status.reason` (`NodeLost`, `Terminated` after a graceful node shutdown, ...).
    pub pod_reason: Option<String>,
    /// The reason of a true `DisruptionTarget` condition (Kubernetes 1.26+).
    pub disruption: Option<String>,
    /// The pod was deleted (evicted, or removed with its node) before it finished.
    pub deleted: bool,
    /// When the pod was asked to leave (an eviction or a deletion): its deletionTimestamp
    /// less its grace period. `None` when it was not, or the times are out of range.
    pub deletion_requested: Option<Timestamp>,
}

impl Failure {
    /// When the pod died: its last container's finish time, else `observed`, when the
    /// classifier first saw it dead (a pod deleted, or lost with its node, has none).
    pub fn killed_at(&self, observed: Timestamp) -> Timestamp {
        self.exits
            .iter()
            .filter_map(|e| e.finished_at)
            .max()
            .unwrap_or(observed)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Killed because of the interruption: retry it.
    SpotCaused(Evidence),
    /// A failure of its own (out of memory, an error exit): do not retry blindly.
    NotSpot(String),
    /// Nothing ties the failure to an interruption; nothing is written.
    Unknown(&'static str),
}

/// Why a kill is unknown when nothing ties its node to a notice: the one verdict that
/// a fresher read of the node can change.
pub const NO_NODE_NOTICE: &str = "its node never carried an interruption notice";

/// `DisruptionTarget` reasons that mean the pod was taken away, not that it failed.
const DISRUPTIONS: [&str; 4] = [
    "DeletionByPodGC",
    "EvictionByEvictionAPI",
    "DeletionByTaintManager",
    "TerminationByKubelet",
];
/// Pod `status.reason` values that mean the node went away under the pod.
const NODE_GONE_REASONS: [&str; 2] = ["NodeLost", "Terminated"];
/// A kill must come after its notice was issued (with this much slack for clocks).
const CLOCK_SLACK: SignedDuration = SignedDuration::from_secs(60);
/// A pod's own interruption record counts for a kill up to this long after the notice's
/// deadline: a container SIGKILLed at the deadline, a kubelet slow to report it.
pub const RECORD_SLACK: SignedDuration = SignedDuration::from_mins(3);
/// The window of a notice without a deadline (an ASG termination; a rebalance that the
/// agent drained for, with `--rebalance-drain`), from its notice time.
const DEADLINE_LESS_WINDOW: SignedDuration = SignedDuration::from_mins(15);

/// Why a pod whose every container exited 0 gets no verdict, deleted or not.
pub const EXITED_CLEANLY: &str = "every container exited 0: nothing failed";

/// Why a kill on a node whose only notice is a rebalance recommendation is unknown.
pub const REBALANCE_KILLS_NOTHING: &str =
    "its node carried only a rebalance recommendation, which kills nothing";
/// Why a kill is unknown when the pod's record is from a notice long over.
pub const RECORD_OUT_OF_WINDOW: &str =
    "its interruption record is from a notice that ended long before the kill";

/// Native sidecars (init containers with `restartPolicy: Always`) report in
/// `initContainerStatuses`; their exits count like any container's: a sidecar's own OOM
/// kill is as much the pod's own failure as the main container's.
pub fn failure_of(pod: &Pod, deleted: bool) -> Failure {
    let status = pod.status.as_ref();
    let exits = status
        .into_iter()
        .flat_map(|s| [&s.container_statuses, &s.init_container_statuses])
        .flatten()
        .flatten()
        .filter_map(|c| {
            let terminated = c.state.as_ref()?.terminated.as_ref()?;
            Some(ContainerExit {
                code: terminated.exit_code,
                reason: terminated.reason.clone(),
                finished_at: terminated.finished_at.as_ref().map(|t| t.0),
            })
        })
        .collect();
    let disruption = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionTarget" && c.status == "True")
        .and_then(|c| c.reason.clone());
    Failure {
        exits,
        pod_reason: status.and_then(|s| s.reason.clone()),
        disruption,
        deleted,
        deletion_requested: deletion_requested(pod),
    }
}

/// When `pod` was asked to leave: the server sets its deletionTimestamp to the request's
/// time plus the grace period.
fn deletion_requested(pod: &Pod) -> Option<Timestamp> {
    let due = pod.metadata.deletion_timestamp.as_ref()?.0;
    let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(0);
    due.checked_sub(SignedDuration::from_secs(grace)).ok()
}

/// A container that exited with an error after the drain asked its pod to leave (a
/// program that traps SIGTERM and exits 1): the drain's doing, not the job's, when the
/// agent's record is current and the request came after the notice. Every error exit
/// must come after the request; an exit before it was the job's own failure.
fn left_when_asked(
    failure: &Failure,
    record: Option<&PodInterruption>,
    errors: &[&ContainerExit],
) -> bool {
    let (Some(requested), Some(record)) = (failure.deletion_requested, record) else {
        return false;
    };
    let issued = record.notice.notice_time.checked_sub(CLOCK_SLACK).ok();
    issued.is_some_and(|issued| requested >= issued)
        && errors.iter().all(|e| {
            e.finished_at
                .is_some_and(|t| t >= requested && within_window(&record.notice, t))
        })
}

/// Whether a kill at `at` falls in `notice`'s window: from its notice time (less the
/// clock slack) to its deadline plus [`RECORD_SLACK`]. The times come from an annotation
/// anyone who may write the pod can forge: a bound past the representable range (a
/// deadline in year 9999) makes the window unknowable, and the kill is out of it.
fn within_window(notice: &Notice, at: Timestamp) -> bool {
    let end = match notice.deadline {
        Some(deadline) => Some(deadline),
        None => notice.notice_time.checked_add(DEADLINE_LESS_WINDOW).ok(),
    };
    let (Some(start), Some(end)) = (
        notice.notice_time.checked_sub(CLOCK_SLACK).ok(),
        end.and_then(|end| end.checked_add(RECORD_SLACK).ok()),
    ) else {
        tracing::warn!(notice_time = %notice.notice_time, deadline = ?notice.deadline, "an interruption record's times are out of range; not counted");
        return false;
    };
    at >= start && at <= end
}

/// `record` is the pod's own `reclaim.dev/interruption`; `node_notice` the notice the
/// classifier saw on the pod's node (it may have outlived the node); `observed`, when the
/// classifier first saw the pod dead, stands in for the kill time of a pod without one
/// (deleted, or lost with its node): a retry judges with it, not with the retry's time.
pub fn classify(
    failure: &Failure,
    record: Option<&PodInterruption>,
    node_notice: Option<(&str, &Notice)>,
    observed: Timestamp,
) -> Verdict {
    if failure
        .exits
        .iter()
        .any(|e| e.reason.as_deref() == Some("OOMKilled"))
    {
        return Verdict::NotSpot("OOMKilled: the container exceeded its memory limit".into());
    }
    // A Spark executor decommissioned by the drain finishes its work and exits 0: nothing
    // failed, whatever took its pod away.
    if !failure.exits.is_empty() && failure.exits.iter().all(|e| e.code == 0) {
        return Verdict::Unknown(EXITED_CLEANLY);
    }
    let errors: Vec<&ContainerExit> = failure
        .exits
        .iter()
        .filter(|e| ![0, 137, 143].contains(&e.code))
        .collect();
    if let Some(exit) = errors.first()
        && !left_when_asked(failure, record, &errors)
    {
        return Verdict::NotSpot(format!("exit code {}: the job failed by itself", exit.code));
    }
    let mut signals = Vec::new();
    for exit in &failure.exits {
        match exit.code {
            0 => {}
            137 => signals.push("exit-137".to_owned()),
            143 => signals.push("exit-143".to_owned()),
            code => signals.push(format!("exit-{code}-after-drain-request")),
        }
    }
    if failure.deleted {
        signals.push("pod-deleted".into());
    }
    if let Some(reason) = failure
        .disruption
        .as_deref()
        .filter(|r| DISRUPTIONS.contains(r))
    {
        signals.push(format!("disruption-target:{reason}"));
    }
    if let Some(reason) = failure
        .pod_reason
        .as_deref()
        .filter(|r| NODE_GONE_REASONS.contains(r))
    {
        signals.push(format!("pod-reason:{reason}"));
    }
    if signals.is_empty() {
        return Verdict::Unknown("the failure does not look like a kill");
    }
    let finished_at = failure.exits.iter().filter_map(|e| e.finished_at).max();
    let killed_at = failure.killed_at(observed);
    // A pod lost with its node often has no finish time, and the pod garbage collector may
    // report it minutes later: its record counts whenever it comes.
    let node_gone = failure.disruption.as_deref() == Some("DeletionByPodGC")
        || failure.pod_reason.as_deref() == Some("NodeLost");
    let current = record.filter(|r| node_gone || within_window(&r.notice, killed_at));
    let (node, notice) = match (current, node_notice) {
        // The agent wrote it before asking the pod to go: the agent's own drain (for a
        // rebalance too, when `--rebalance-drain` asked for one).
        (Some(record), _) => {
            signals.push("pod-annotation".into());
            (record.node.as_str(), &record.notice)
        }
        (None, Some((_, notice))) if notice.kind == NoticeKind::Rebalance => {
            return Verdict::Unknown(REBALANCE_KILLS_NOTHING);
        }
        (None, Some((node, notice))) => {
            let issued = notice.notice_time.checked_sub(CLOCK_SLACK).ok();
            if finished_at.is_some_and(|t| issued.is_none_or(|issued| t < issued)) {
                return Verdict::Unknown("killed before its node's notice was issued");
            }
            signals.push("node-notice".into());
            (node, notice)
        }
        (None, None) if record.is_some() => return Verdict::Unknown(RECORD_OUT_OF_WINDOW),
        (None, None) => return Verdict::Unknown(NO_NODE_NOTICE),
    };
    let killed = failure.exits.iter().find(|e| e.code != 0);
    Verdict::SpotCaused(Evidence {
        node: node.to_owned(),
        notice_kind: notice.kind,
        provider: Some(notice.provider),
        event_id: Some(notice.event_id.clone()),
        notice_time: notice.notice_time,
        exit_code: killed.map(|e| e.code),
        reason: killed.and_then(|e| e.reason.clone()),
        signals,
        pod: None,
        failed_at: Some(killed_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reclaim_model::Provider;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// When the tests classify: within the notices' windows.
    const NOW: Timestamp = Timestamp::constant(1_767_261_720, 0); // 2026-01-01T10:02:00Z

    fn notice() -> Notice {
        Notice {
            provider: Provider::Aws,
            kind: NoticeKind::SpotInterruption,
            event_id: "instance-action-terminate-2026-01-01T10:02:00Z".into(),
            notice_time: at("2026-01-01T10:00:00Z"),
            deadline: Some(at("2026-01-01T10:02:00Z")),
            detected_at: at("2026-01-01T10:00:01Z"),
        }
    }

    fn exit(code: i32, reason: &str, finished: &str) -> Failure {
        Failure {
            exits: vec![ContainerExit {
                code,
                reason: Some(reason.into()),
                finished_at: Some(at(finished)),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn sigkill_after_the_notice_on_an_annotated_pod_is_spot_caused() {
        let record = notice().for_pod("ip-10-0-1-17");
        let Verdict::SpotCaused(evidence) = classify(
            &exit(137, "Error", "2026-01-01T10:01:55Z"),
            Some(&record),
            None,
            NOW,
        ) else {
            panic!("expected spot-caused");
        };
        assert_eq!(evidence.node, "ip-10-0-1-17");
        assert_eq!(
            (evidence.exit_code, evidence.reason.as_deref()),
            (Some(137), Some("Error"))
        );
        assert_eq!(evidence.signals, ["exit-137", "pod-annotation"]);
    }

    #[test]
    fn sigterm_exit_and_deletion_found_by_the_node_notice_are_spot_caused() {
        let n = notice();
        assert!(matches!(
            classify(
                &exit(143, "Error", "2026-01-01T10:00:30Z"),
                None,
                Some(("node-a", &n)),
                NOW
            ),
            Verdict::SpotCaused(_)
        ));
        let deleted = Failure {
            deleted: true,
            ..Default::default()
        };
        let Verdict::SpotCaused(evidence) = classify(&deleted, None, Some(("node-a", &n)), NOW)
        else {
            panic!("a pod deleted on a noticed node is spot-caused");
        };
        assert_eq!(evidence.signals, ["pod-deleted", "node-notice"]);
        assert_eq!(evidence.exit_code, None);
    }

    #[test]
    fn a_pod_lost_with_its_node_is_spot_caused() {
        let n = notice();
        let gc = Failure {
            disruption: Some("DeletionByPodGC".into()),
            ..Default::default()
        };
        assert!(matches!(
            classify(&gc, None, Some(("node-a", &n)), NOW),
            Verdict::SpotCaused(_)
        ));
        let lost = Failure {
            pod_reason: Some("NodeLost".into()),
            ..Default::default()
        };
        assert!(matches!(
            classify(&lost, None, Some(("node-a", &n)), NOW),
            Verdict::SpotCaused(_)
        ));
    }

    #[test]
    fn a_record_whose_times_overflow_is_not_evidence_and_nothing_panics() {
        let mut forged = notice();
        forged.deadline = Some(Timestamp::MAX);
        let failure = exit(137, "Error", "2026-01-01T10:01:00Z");
        let now = at("2026-01-01T10:02:00Z");
        assert_eq!(
            classify(&failure, Some(&forged.for_pod("node-a")), None, now),
            Verdict::Unknown(RECORD_OUT_OF_WINDOW)
        );
        let mut early = notice();
        early.notice_time = Timestamp::MIN;
        early.deadline = None;
        assert!(matches!(
            classify(&failure, None, Some(("node-a", &early)), now),
            Verdict::Unknown(_)
        ));
        assert_eq!(
            classify(&failure, Some(&early.for_pod("node-a")), None, now),
            Verdict::Unknown(RECORD_OUT_OF_WINDOW)
        );
    }

    #[test]
    fn oomkilled_is_never_spot_caused_even_on_a_noticed_node() {
        let record = notice().for_pod("node-a");
        let verdict = classify(
            &exit(137, "OOMKilled", "2026-01-01T10:01:00Z"),
            Some(&record),
            Some(("node-a", &record.notice)),
            NOW,
        );
        assert!(
            matches!(verdict, Verdict::NotSpot(ref why) if why.contains("OOMKilled")),
            "{verdict:?}"
        );
    }

    #[test]
    fn an_error_exit_is_the_jobs_own_failure() {
        let record = notice().for_pod("node-a");
        for code in [1, 2, 255] {
            let verdict = classify(
                &exit(code, "Error", "2026-01-01T10:01:00Z"),
                Some(&record),
                None,
                NOW,
            );
            assert!(
                matches!(verdict, Verdict::NotSpot(ref why) if why.contains(&code.to_string())),
                "{verdict:?}"
            );
        }
    }

    #[test]
    fn a_kill_without_any_notice_or_before_the_notice_is_unknown() {
        let kill = exit(137, "Error", "2026-01-01T10:01:00Z");
        assert!(matches!(
            classify(&kill, None, None, NOW),
            Verdict::Unknown(_)
        ));
        let n = notice();
        let early = exit(137, "Error", "2026-01-01T09:30:00Z");
        assert_eq!(
            classify(&early, None, Some(("node-a", &n)), NOW),
            Verdict::Unknown("killed before its node's notice was issued")
        );
        assert!(
            matches!(
                classify(&Failure::default(), None, Some(("node-a", &n)), NOW),
                Verdict::Unknown(_)
            ),
            "no sign of a kill"
        );
    }

    /// The shared table (`classifier/verdict-cases.json`), which the Airflow
    /// integration's tests read too.
    #[test]
    fn every_case_of_the_shared_table_gets_its_verdict() {
        let table: serde_json::Value =
            serde_json::from_str(include_str!("../verdict-cases.json")).unwrap();
        let now: Timestamp = table["now"].as_str().unwrap().parse().unwrap();
        let notice_named = |name: &serde_json::Value| -> Option<Notice> {
            let name = name.as_str()?;
            Some(serde_json::from_value(table["notices"][name].clone()).unwrap())
        };
        let cases = table["cases"].as_array().unwrap();
        assert!(cases.len() >= 15);
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let pod = case_pod(case, |n| {
                notice_named(n).map(|notice| notice.for_pod("node-a"))
            });
            let record = pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("reclaim.dev/interruption"))
                .map(|t| PodInterruption::from_json(t).unwrap());
            let deleted = case["deleted"].as_bool().unwrap_or(false);
            let node_notice = notice_named(&case["nodeNotice"]);
            let verdict = classify(
                &failure_of(&pod, deleted),
                record.as_ref(),
                node_notice.as_ref().map(|n| ("node-a", n)),
                now,
            );
            let got = match verdict {
                Verdict::SpotCaused(_) => "spot-caused",
                Verdict::NotSpot(_) => "not-spot",
                Verdict::Unknown(_) => "unknown",
            };
            assert_eq!(got, case["expected"], "case {name}: {verdict:?}");
        }
    }

    /// The pod a case describes, as the API server would return it.
    fn case_pod(
        case: &serde_json::Value,
        record: impl Fn(&serde_json::Value) -> Option<PodInterruption>,
    ) -> Pod {
        // A case's exits (`exits`, or `sidecarExits`) as container statuses named `prefix0`, ...
        let statuses = |key: &str, prefix: &str| -> Vec<serde_json::Value> {
            case[key]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, exit)| {
                    serde_json::json!({
                        "name": format!("{prefix}{i}"), "image": "task", "imageID": "", "ready": false, "restartCount": 0,
                        "state": {"terminated": {"exitCode": exit["code"], "reason": exit["reason"], "finishedAt": exit["finishedAt"]}},
                    })
                })
                .collect()
        };
        let mut annotations = serde_json::Map::new();
        if let Some(record) = record(&case["record"]) {
            annotations.insert("reclaim.dev/interruption".into(), record.to_json().into());
        }
        let mut status = serde_json::json!({
            "phase": "Failed",
            "containerStatuses": statuses("exits", "c"),
            "initContainerStatuses": statuses("sidecarExits", "s"),
        });
        if let Some(reason) = case["podReason"].as_str() {
            status["reason"] = reason.into();
        }
        if let Some(reason) = case["disruption"].as_str() {
            status["conditions"] = serde_json::json!([{"type": "DisruptionTarget", "status": "True", "reason": reason}]);
        }
        let mut metadata = serde_json::json!({"name": case["name"], "namespace": "jobs", "annotations": annotations});
        if let Some(requested) = case["deletionRequested"].as_str() {
            let requested: Timestamp = requested.parse().unwrap();
            metadata["deletionTimestamp"] = (requested + SignedDuration::from_secs(30))
                .to_string()
                .into();
            metadata["deletionGracePeriodSeconds"] = 30.into();
        }
        serde_json::from_value(serde_json::json!({
            "metadata": metadata,
            "spec": {"nodeName": "node-a", "containers": []},
            "status": status,
        }))
        .unwrap()
    }
}
