//! The agent's side of the `Interruption` record (see `reclaim_model::interruption`):
//! created when the agent acts on a notice, then kept up to date with the drain.
//!
//! The record is written by a task of its own, fed the latest status through a watch
//! channel: the drain never waits on it, a slow or failing API server delays the record
//! (each write is retried until it lands) but never the drain, and a burst of drain rounds
//! becomes one write every [`WRITE_EVERY`]. The agent writes only the spec and the fields
//! of [`AgentStatus`], with merge patches, so the classifier's fields stay as they are.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::Client;
use kube::api::{Patch, PatchParams, PostParams};
use reclaim_model::interruption::{
    API_VERSION, AgentStatus, DrainSummary, InterruptionSpec, KIND, MAX_PODS_LISTED, Phase,
    PodEntry, record_name,
};
use reclaim_service::interruptions::{api, crd_missing, report_crd_missing};
use serde_json::json;
use tokio::sync::watch;

use crate::drain::{DrainReport, PodOutcome, PodReport};

/// At most one write per this long while the drain goes on.
const WRITE_EVERY: Duration = Duration::from_secs(2);

/// Pause before a failed write is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Once nothing new will come (the notice is over, or the agent stops), the last state
/// is retried this long at most: past it, the node is likely gone with the agent.
const GIVE_UP_AFTER: Duration = Duration::from_secs(120);

/// No write waits longer than this.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Late pods named in `latePods` (the rest are counted).
const LATE_PODS_NAMED: usize = 3;

/// The record of one notice. Cloned senders ([`Record::updates`]) let the drain report
/// into it; the record is written until every sender is dropped and the last state
/// has landed.
#[derive(Clone)]
pub struct Record {
    status: watch::Sender<AgentStatus>,
}

impl Record {
    /// Starts writing the record of `spec` (created with `status`).
    pub fn start(client: Client, spec: InterruptionSpec, status: AgentStatus) -> Record {
        let (sender, updates) = watch::channel(status);
        tokio::spawn(keep_written(client, spec, updates));
        Record { status: sender }
    }

    pub fn set(&self, status: AgentStatus) {
        self.status.send_replace(status);
    }

    /// The node was given back: see [`given_back`].
    pub fn cancel(&self, why: &str) {
        self.status.send_modify(|status| given_back(status, why));
    }

    /// The drain's progress so far (`finished`: its final report).
    pub fn drained(&self, summary: DrainSummary, finished: bool) {
        self.status.send_modify(|status| {
            *status = status_of_drain(summary, finished);
        });
    }
}

/// The node given back (`why`): a notice that ended before its drain did is `Canceled`;
/// a drain that had finished keeps its phase (a drill is called off once it has run, and
/// `kubectl get` should still say how it went), and the reason says both.
pub fn given_back(status: &mut AgentStatus, why: &str) {
    match status.phase {
        Phase::Drained | Phase::DeadlineMissed => {
            status.reason = format!("{}; then the node was given back: {why}", status.reason)
        }
        Phase::Noticed | Phase::Draining | Phase::Canceled => {
            status.phase = Phase::Canceled;
            status.reason = why.to_owned();
        }
    }
}

/// What the record says once the drain has reported.
pub fn status_of_drain(summary: DrainSummary, finished: bool) -> AgentStatus {
    let (phase, reason) = match (finished, summary.late) {
        (false, _) => (
            Phase::Draining,
            format!(
                "draining: {} of {} pods gone",
                summary.pods_gone, summary.pods_total
            ),
        ),
        (true, 0) => (
            Phase::Drained,
            format!(
                "every pod ({}) left before the deadline",
                summary.pods_total
            ),
        ),
        (true, late) => (
            Phase::DeadlineMissed,
            format!(
                "{late} of {} pods were not gone by the deadline: {}",
                summary.pods_total, summary.late_pods
            ),
        ),
    };
    AgentStatus {
        phase,
        reason,
        drain: Some(summary),
    }
}

/// The drain as the record shows it at `now`. A pod left when it was first seen gone, or
/// when its deletion was due (the end of its grace period: the kubelet kills what is left
/// then), whichever came first; it is late when it had not left by `deadline` (or had not
/// at `now`, past it), or stayed (`failed`). A drain round sees a pod gone up to a round
/// after it went, which the due time makes up for. The late pods are listed first, and at
/// most [`MAX_PODS_LISTED`] pods are listed.
pub fn drain_summary(
    report: &DrainReport,
    started_at: Timestamp,
    deadline: Timestamp,
    now: Timestamp,
    finished: bool,
) -> DrainSummary {
    let left = |p: &PodReport| match (p.gone_at, p.due_at) {
        (Some(gone), Some(due)) => Some(gone.min(due)),
        (gone, due) => gone.or(due.filter(|due| *due <= now)),
    };
    let late =
        |p: &PodReport| p.outcome == Some(PodOutcome::Failed) || left(p).unwrap_or(now) > deadline;
    let mut entries: Vec<(bool, &PodReport)> = report.pods.iter().map(|p| (late(p), p)).collect();
    entries.sort_by_key(|(late, _)| !late);
    let late_names: Vec<String> = entries
        .iter()
        .filter(|(late, _)| *late)
        .map(|(_, p)| reclaim_model::namespaced_name(&p.namespace, &p.name))
        .collect();
    let late_pods = match late_names.len() {
        0 => "none".to_owned(),
        n if n <= LATE_PODS_NAMED => late_names.join(", "),
        n => format!(
            "{}, +{} more",
            late_names[..LATE_PODS_NAMED].join(", "),
            n - LATE_PODS_NAMED
        ),
    };
    let pods: Vec<PodEntry> = entries
        .iter()
        .take(MAX_PODS_LISTED)
        .map(|(late, p)| PodEntry {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            group: p.group.label().to_owned(),
            outcome: p.outcome.map(|o| o.label().to_owned()),
            asked_at: p.asked_at,
            budget_refusals: p.budget_refusals,
            grace_seconds: p.grace_seconds,
            gone_at: p.gone_at,
            due_at: p.due_at,
            slack_seconds: left(p).map(|left| deadline.duration_since(left).as_secs_f64()),
            late: *late,
        })
        .collect();
    DrainSummary {
        started_at,
        finished_at: finished.then_some(now),
        deadline,
        pods_total: report.pods.len() as u32,
        pods_gone: report.pods.iter().filter(|p| p.gone_at.is_some()).count() as u32,
        late: late_names.len() as u32,
        late_pods,
        outcomes: PodOutcome::ALL
            .into_iter()
            .map(|o| (o.label().to_owned(), report.count(o) as u32))
            .filter(|(_, n)| *n > 0)
            .collect(),
        slack_seconds: report.slack_seconds,
        pods_omitted: report.pods.len().saturating_sub(MAX_PODS_LISTED) as u32,
        pods,
    }
}

/// Creates the record (a restarted agent finds it there), then writes each new status
/// until the senders are gone and the last one has landed.
async fn keep_written(
    client: Client,
    spec: InterruptionSpec,
    mut updates: watch::Receiver<AgentStatus>,
) {
    let records = api(&client);
    let (node, notice) = (&spec.interruption.node, &spec.interruption.notice);
    let name = record_name(node, &notice.event_id, notice.notice_time);
    let mut written: Option<AgentStatus> = None;
    let mut created = false;
    let mut closed_since: Option<Instant> = None;
    loop {
        let latest = updates.borrow_and_update().clone();
        if written.as_ref() == Some(&latest) {
            // Everything is written: wait for news, at most one write per WRITE_EVERY.
            if updates.changed().await.is_err() {
                return;
            }
            tokio::time::sleep(WRITE_EVERY).await;
            continue;
        }
        let result = if created {
            let patch = json!({"status": latest});
            timed(records.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))).await
        } else {
            let mut status = serde_json::to_value(&latest).expect("a status serializes");
            // The classifier counts from here; `kubectl get` shows 0 rather than nothing.
            status["retryable"] = json!(0);
            let object = serde_json::from_value(json!({
                "apiVersion": API_VERSION,
                "kind": KIND,
                "metadata": {
                    "name": name,
                    "labels": {"reclaim.dev/provider": notice.provider.as_str()},
                },
                "spec": spec,
                "status": status,
            }))
            .expect("an Interruption record is a valid object");
            match timed(records.create(&PostParams::default(), &object)).await {
                // A restarted agent: the record is there; its status is written next.
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    created = true;
                    continue;
                }
                other => other,
            }
        };
        match result {
            Ok(_) => {
                created = true;
                written = Some(latest);
            }
            Err(e) if crd_missing(&e) => {
                report_crd_missing("reclaim-agent");
                return;
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {
                tracing::info!(
                    record = name,
                    "the Interruption record was deleted (past the classifier's retention, or by hand); not writing it again"
                );
                return;
            }
            Err(e) => {
                if updates.has_changed().is_err() {
                    let since = *closed_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= GIVE_UP_AFTER {
                        tracing::error!(record = name, error = %e, "could not write the Interruption record's final state; giving up");
                        return;
                    }
                }
                tracing::warn!(record = name, error = %e, hint = %reclaim_service::client::hint(&e, "interruptions.reclaim.dev create and patch"), "could not write the Interruption record; retrying");
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    }
}

async fn timed<T>(call: impl Future<Output = kube::Result<T>>) -> kube::Result<T> {
    tokio::time::timeout(WRITE_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(kube::Error::Service(
                format!("no answer within {WRITE_TIMEOUT:?}").into(),
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drain::plan::Group;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn pod(name: &str, outcome: Option<PodOutcome>, gone_at: Option<i64>) -> PodReport {
        PodReport {
            uid: format!("uid-{name}"),
            namespace: "spark".into(),
            name: name.into(),
            group: Group::First,
            outcome,
            asked_at: Some(at(1)),
            budget_refusals: 0,
            grace_seconds: None,
            gone_at: gone_at.map(at),
            due_at: None,
        }
    }

    fn report(pods: Vec<PodReport>) -> DrainReport {
        DrainReport {
            pods,
            ..DrainReport::default()
        }
    }

    #[test]
    fn a_drain_that_empties_the_node_in_time_has_no_late_pod() {
        let report = report(vec![
            pod("exec-1", Some(PodOutcome::Evicted), Some(5)),
            pod("exec-2", Some(PodOutcome::DeletedAtDeadline), Some(19)),
        ]);
        let summary = drain_summary(&report, at(0), at(20), at(19), true);
        assert_eq!((summary.late, summary.late_pods.as_str()), (0, "none"));
        assert_eq!(summary.pods[1].slack_seconds, Some(1.0));
        assert_eq!(summary.outcomes["evicted"], 1);
        assert_eq!(summary.finished_at, Some(at(19)));
        let status = status_of_drain(summary, true);
        assert_eq!(status.phase, Phase::Drained);
    }

    #[test]
    fn over_time_a_pod_becomes_late_once_the_deadline_passes_without_it_leaving() {
        let going = report(vec![
            pod("exec-1", Some(PodOutcome::Evicted), Some(5)),
            pod("stuck", None, None),
        ]);
        let before = drain_summary(&going, at(0), at(20), at(10), false);
        assert_eq!(before.late, 0);
        assert_eq!(status_of_drain(before, false).phase, Phase::Draining);
        let after = drain_summary(&going, at(0), at(20), at(21), false);
        assert_eq!((after.late, after.late_pods.as_str()), (1, "spark/stuck"));
        // The late pod is listed first.
        assert_eq!(after.pods[0].name, "stuck");
        let left_late = report(vec![pod("stuck", Some(PodOutcome::Evicted), Some(24))]);
        let done = drain_summary(&left_late, at(0), at(20), at(24), true);
        assert_eq!(done.pods[0].slack_seconds, Some(-4.0));
        let status = status_of_drain(done, true);
        assert_eq!(status.phase, Phase::DeadlineMissed);
        assert!(status.reason.contains("spark/stuck"), "{}", status.reason);
    }

    #[test]
    fn a_pod_whose_grace_ended_by_the_deadline_left_in_time_though_seen_gone_a_round_later() {
        let due = |due_at: i64, gone_at: Option<i64>| PodReport {
            due_at: Some(at(due_at)),
            ..pod("exec-1", Some(PodOutcome::DeletedAtDeadline), gone_at)
        };
        let seen_late = report(vec![due(20, Some(21))]);
        let summary = drain_summary(&seen_late, at(0), at(20), at(21), true);
        assert_eq!(
            (summary.late, summary.pods[0].slack_seconds),
            (0, Some(0.0))
        );
        // Still terminating past the deadline, but due before it: not late either.
        let terminating = report(vec![due(19, None)]);
        assert_eq!(
            drain_summary(&terminating, at(0), at(20), at(22), true).late,
            0
        );
        // Due after the deadline: late, whenever it is seen gone.
        let overdue = report(vec![due(23, None)]);
        let summary = drain_summary(&overdue, at(0), at(20), at(22), true);
        assert_eq!(summary.late, 1);
        // Before its due time, a terminating pod is on its way, not gone.
        let on_its_way = drain_summary(&report(vec![due(19, None)]), at(0), at(20), at(10), false);
        assert_eq!(
            (on_its_way.late, on_its_way.pods[0].slack_seconds),
            (0, None)
        );
    }

    #[test]
    fn a_notice_given_back_mid_drain_is_canceled_but_a_finished_drain_keeps_its_phase() {
        let draining = report(vec![pod("exec-1", None, None)]);
        let mut midway =
            status_of_drain(drain_summary(&draining, at(0), at(20), at(5), false), false);
        given_back(&mut midway, "the drill was called off");
        assert_eq!(
            (midway.phase, midway.reason.as_str()),
            (Phase::Canceled, "the drill was called off")
        );
        assert!(midway.drain.is_some(), "the drain's figures stay");
        let done = report(vec![pod("exec-1", Some(PodOutcome::Evicted), Some(5))]);
        let mut finished = status_of_drain(drain_summary(&done, at(0), at(20), at(5), true), true);
        given_back(&mut finished, "the drill was called off");
        assert_eq!(finished.phase, Phase::Drained);
        assert_eq!(
            finished.reason,
            "every pod (1) left before the deadline; then the node was given back: the drill was called off"
        );
    }

    #[test]
    fn hundreds_of_pods_make_a_bounded_record_that_still_counts_them_all() {
        let mut pods: Vec<PodReport> = (0..250)
            .map(|i| pod(&format!("p{i}"), Some(PodOutcome::Evicted), Some(3)))
            .collect();
        for i in [200, 240, 17, 99, 3] {
            pods[i] = pod(&format!("late{i}"), Some(PodOutcome::Failed), None);
        }
        let summary = drain_summary(&report(pods), at(0), at(20), at(25), true);
        assert_eq!(summary.pods.len(), MAX_PODS_LISTED);
        assert_eq!(summary.pods_omitted, 150);
        assert_eq!(summary.pods_total, 250);
        assert_eq!(
            summary.pods_gone, 245,
            "the omitted pods are counted, not guessed"
        );
        assert_eq!(summary.late, 5);
        assert!(summary.pods[..5].iter().all(|p| p.late));
        assert!(
            summary.late_pods.ends_with(", +2 more"),
            "{}",
            summary.late_pods
        );
        let size = serde_json::to_string(&summary).unwrap().len();
        assert!(size < 64 * 1024, "{size} bytes");
    }
}
