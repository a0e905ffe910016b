//! The deadline-aware drain, as a level-triggered loop: until the node is empty of
//! drainable pods or the cloud's deadline has passed, each round lists the node's pods,
//! asks the pure plan ([`plan::next_requests`]) what to do given what it sees and what
//! the drain did, and sends those requests at once.
//!
//! Every request is bounded: by the client's connect and read timeouts, and by the time
//! left. A request that fails or times out is simply planned again in a later round, so
//! an API server that refuses or black-holes connections for a while delays the drain
//! but does not end it; deletions are retried until they land or the cloud's deadline
//! passes. Every request carries the UID of the pod the plan judged (see
//! [`crate::eviction`]). Every pod is annotated with the reason before it is asked to go.

pub mod plan;
pub mod task;

use std::time::Duration;

use futures::future::join_all;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use reclaim_model::PodInterruption;
use reclaim_model::keys::{INTERRUPTED_LABEL, POD_INTERRUPTION_ANNOTATION};

use crate::eviction::{Answer, EvictionError, PodRef, delete, evict};
use crate::pods::pods_on_node;
use plan::{DrainPod, Group, History, OwnPod, Request, next_requests};

/// The log line of a pod deleted because its grace period no longer fit before the
/// deadline while its budget refused (the demo tells its story from it).
pub const DEADLINE_DELETION: &str = "its budget still refuses and its grace period no longer fits before the deadline: deleted the pod";

/// No single request waits longer than this, even with time left.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How one pod left (or did not leave) the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PodOutcome {
    /// The Eviction API accepted it: graceful, budget respected.
    Evicted,
    /// Deleted because its budget still refused when its grace period no longer fit.
    DeletedAtDeadline,
    /// Already terminating with a grace period that would end after the deadline:
    /// deleted again with the grace period clamped to the time left.
    Hastened,
    /// Gone before the agent got to it, or left by itself (someone else deleted it).
    AlreadyGone,
    /// Still on the node, not terminating, when the drain ended.
    Failed,
}

impl PodOutcome {
    pub const ALL: [PodOutcome; 5] = [
        PodOutcome::Evicted,
        PodOutcome::DeletedAtDeadline,
        PodOutcome::Hastened,
        PodOutcome::AlreadyGone,
        PodOutcome::Failed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            PodOutcome::Evicted => "evicted",
            PodOutcome::DeletedAtDeadline => "deleted_at_deadline",
            PodOutcome::Hastened => "hastened",
            PodOutcome::AlreadyGone => "already_gone",
            PodOutcome::Failed => "failed",
        }
    }
}

/// Everything one drain needs to know.
#[derive(Debug, Clone)]
pub struct DrainJob {
    pub node: String,
    /// Written on every pod before it is evicted or deleted.
    pub record: PodInterruption,
    /// Every pod must be gone by then (announced deadline minus the safety margin).
    pub deadline: Timestamp,
    /// When the instance goes away: deletions are retried until then.
    pub hard_deadline: Timestamp,
    pub own_pod: Option<OwnPod>,
    pub retry_interval: Duration,
}

/// One drainable pod's part in the drain, for the Interruption record.
#[derive(Debug, Clone, PartialEq)]
pub struct PodReport {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub group: Group,
    /// How it left; `None` while it is still on its way.
    pub outcome: Option<PodOutcome>,
    /// When it was first asked to go.
    pub asked_at: Option<Timestamp>,
    /// Evictions refused by its budget (or by two budgets).
    pub budget_refusals: u32,
    /// The grace period of the last request that overrode its own.
    pub grace_seconds: Option<i64>,
    /// The round that first found it gone.
    pub gone_at: Option<Timestamp>,
    /// When its deletion is due (its `deletionTimestamp`: the end of its grace period, when
    /// the kubelet kills what is left), as last seen terminating.
    pub due_at: Option<Timestamp>,
}

/// What a drain did, for the summary log line, the metrics and the Interruption record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DrainReport {
    /// Every drainable pod seen, in the order first seen.
    pub pods: Vec<PodReport>,
    /// Every answer of every request (`list`, `evict`, `delete`), by label (`ok`,
    /// `accepted`, `budget_refused`, `throttled`, `multiple_budgets`, `gone`, `error`,
    /// `timeout`).
    pub answers: Vec<(&'static str, &'static str)>,
    /// Pods left alone (DaemonSet, mirror, the agent, finished), in the last round.
    pub exempt: usize,
    /// Drained pods still on the node when the drain ended.
    pub remaining: usize,
    /// Seconds to spare before the deadline when the node became empty (`None` when it
    /// did not).
    pub slack_seconds: Option<f64>,
}

impl DrainReport {
    /// Every drained pod left: nothing on the node, nothing that failed to go.
    pub fn emptied(&self) -> bool {
        self.remaining == 0 && self.count(PodOutcome::Failed) == 0
    }

    pub fn count(&self, outcome: PodOutcome) -> usize {
        self.pods
            .iter()
            .filter(|p| p.outcome == Some(outcome))
            .count()
    }

    /// The pod's entry, added the first time the drain sees it.
    fn entry(&mut self, pod: &Pod, group: Group) -> &mut PodReport {
        let uid = pod.uid().unwrap_or_default();
        let at = match self.pods.iter().position(|p| p.uid == uid) {
            Some(at) => at,
            None => {
                self.pods.push(PodReport {
                    uid,
                    namespace: pod.namespace().unwrap_or_default(),
                    name: pod.name_any(),
                    group,
                    outcome: None,
                    asked_at: None,
                    budget_refusals: 0,
                    grace_seconds: None,
                    gone_at: None,
                    due_at: None,
                });
                self.pods.len() - 1
            }
        };
        &mut self.pods[at]
    }

    fn outcome(&mut self, pod: &Pod, group: Group, outcome: PodOutcome) {
        let entry = self.entry(pod, group);
        // A definitive outcome is not overwritten by a later "gone".
        if outcome != PodOutcome::AlreadyGone
            || entry.outcome.is_none_or(|o| o == PodOutcome::Failed)
        {
            entry.outcome = Some(outcome);
        }
    }
}

/// How the drain tells the rest of the agent that it makes progress: after each round,
/// with what it has done so far. A round whose list failed (the API server down) counts
/// too: the loop is alive and will go on, and `/healthz` failing would only have the
/// kubelet restart an agent that then needs the API server before it polls again.
pub trait Progress: Send + Sync {
    fn round(&self, report: &DrainReport);
}

/// Drains the node; returns once no drainable pod is left, or the deadline has passed
/// with nothing left to do but wait, or the cloud's deadline has passed.
pub async fn drain(client: &Client, job: &DrainJob, progress: &dyn Progress) -> DrainReport {
    let retry =
        SignedDuration::try_from(job.retry_interval).unwrap_or(SignedDuration::from_secs(1));
    let mut history = History::new();
    let mut report = DrainReport::default();
    let mut seen: Vec<Pod> = Vec::new();
    loop {
        let now = Timestamp::now();
        if now >= job.hard_deadline {
            break;
        }
        let pods = match bounded(job, pods_on_node(client, &job.node)).await {
            Ok(Ok(pods)) => pods,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, hint = %reclaim_service::client::hint(&e, "pods list"), "listing the node's pods failed; the drain goes on with the next round");
                report.answers.push(("list", "error"));
                progress.round(&report);
                tokio::time::sleep(job.retry_interval).await;
                continue;
            }
            Err(_) => {
                tracing::warn!(
                    "listing the node's pods timed out; the API server does not answer; the drain goes on with the next round"
                );
                report.answers.push(("list", "timeout"));
                progress.round(&report);
                continue;
            }
        };
        report.answers.push(("list", "ok"));
        let (drainable, exempt): (Vec<_>, Vec<_>) = pods
            .into_iter()
            .map(|pod| (DrainPod::of(&pod, job.own_pod.as_ref()), pod))
            .partition(|(view, _)| view.is_ok());
        report.exempt = exempt.len();
        let drainable: Vec<(DrainPod, Pod)> = drainable
            .into_iter()
            .filter_map(|(view, pod)| view.ok().map(|v| (v, pod)))
            .collect();
        for gone in seen.iter().filter(|p| {
            !drainable
                .iter()
                .any(|(v, _)| Some(&v.uid) == p.metadata.uid.as_ref())
        }) {
            let group = plan::triage(gone, job.own_pod.as_ref()).unwrap_or(Group::Normal);
            report.outcome(gone, group, PodOutcome::AlreadyGone);
            report.entry(gone, group).gone_at.get_or_insert(now);
        }
        for (view, pod) in &drainable {
            let entry = report.entry(pod, view.group);
            if let Some(due) = &pod.metadata.deletion_timestamp {
                entry.due_at = Some(due.0);
            }
        }
        seen = drainable.iter().map(|(_, p)| p.clone()).collect();
        let views: Vec<DrainPod> = drainable.iter().map(|(v, _)| v.clone()).collect();
        let requests = next_requests(now, job.deadline, &views, &history, retry);
        if views.is_empty() {
            report.slack_seconds = Some(job.deadline.duration_since(now).as_secs_f64());
            break;
        }
        if requests.is_empty() && now >= job.deadline {
            break;
        }
        progress.round(&report);
        // Group by group (executors first), each group's requests at once.
        let mut sent = Vec::new();
        for group in plan::GROUPS.map(|(g, _)| g) {
            let answers = join_all(requests.iter().filter_map(|request| {
                let uid = match request {
                    Request::Evict { uid, .. } | Request::Delete { uid, .. } => uid,
                };
                let (view, pod) = drainable
                    .iter()
                    .find(|(v, _)| &v.uid == uid && v.group == group)?;
                Some(async move { (view, pod, request, send(client, job, pod, request).await) })
            }))
            .await;
            sent.extend(answers);
        }
        for (view, pod, request, answer) in sent {
            let tried = history.entry(view.uid.clone()).or_default();
            tried.requests += 1;
            let pause = match answer {
                Ok(Answer::Throttled {
                    retry_after: Some(after),
                }) => after.max(job.retry_interval),
                _ => job.retry_interval,
            };
            tried.not_before = Some(now + SignedDuration::try_from(pause).unwrap_or(retry));
            let (kind, grace) = match request {
                Request::Evict { grace, .. } => ("evict", *grace),
                Request::Delete { grace, .. } => ("delete", Some(*grace)),
            };
            let entry = report.entry(pod, view.group);
            entry.asked_at.get_or_insert(now);
            if grace.is_some() {
                entry.grace_seconds = grace;
            }
            if matches!(answer, Ok(Answer::BudgetRefused | Answer::MultipleBudgets)) {
                entry.budget_refusals += 1;
            }
            report.answers.push((kind, answer_label(&answer)));
            let outcome = match (request, &answer) {
                (Request::Evict { .. }, Ok(Answer::Accepted)) => Some(PodOutcome::Evicted),
                (Request::Delete { .. }, Ok(Answer::Accepted))
                    if view.terminating_until.is_some() =>
                {
                    Some(PodOutcome::Hastened)
                }
                (Request::Delete { grace, .. }, Ok(Answer::Accepted)) => {
                    tracing::info!(pod = %reclaim_model::namespaced_name(&pod.namespace().unwrap_or_default(), &pod.name_any()), grace_seconds = grace, "{DEADLINE_DELETION}");
                    Some(PodOutcome::DeletedAtDeadline)
                }
                (_, Ok(Answer::Gone)) => Some(PodOutcome::AlreadyGone),
                _ => None,
            };
            if let Some(outcome) = outcome {
                report.outcome(pod, view.group, outcome);
            }
            log_answer(pod, request, &answer, tried.requests);
        }
        tokio::time::sleep(job.retry_interval.min(Duration::from_secs(1))).await;
    }
    report.remaining = seen.len();
    for pod in &seen {
        let terminating = pod.metadata.deletion_timestamp.is_some();
        if !terminating {
            let group = plan::triage(pod, job.own_pod.as_ref()).unwrap_or(Group::Normal);
            report.outcome(pod, group, PodOutcome::Failed);
        }
    }
    report
}

/// `call`, bounded by [`REQUEST_TIMEOUT`] and by the time left before the cloud's deadline.
async fn bounded<T>(
    job: &DrainJob,
    call: impl Future<Output = T>,
) -> Result<T, tokio::time::error::Elapsed> {
    let left = job
        .hard_deadline
        .duration_since(Timestamp::now())
        .unsigned_abs();
    tokio::time::timeout(REQUEST_TIMEOUT.min(left), call).await
}

/// Marks the pod with the reason, then sends the request, both bounded.
async fn send(
    client: &Client,
    job: &DrainJob,
    pod: &Pod,
    request: &Request,
) -> Result<Answer, SendError> {
    let namespace = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let uid = pod.uid().unwrap_or_default();
    let target = PodRef {
        namespace: &namespace,
        name: &name,
        uid: &uid,
    };
    if let Some(answer) = bounded(job, mark(client, &job.record, pod))
        .await
        .map_err(|_| SendError::Timeout)?
    {
        return Ok(answer);
    }
    let call = async {
        match request {
            Request::Evict { grace, .. } => evict(client, target, *grace).await,
            Request::Delete { grace, .. } => delete(client, target, *grace).await,
        }
    };
    match bounded(job, call).await {
        Ok(answer) => answer.map_err(SendError::Failed),
        Err(_) => Err(SendError::Timeout),
    }
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("no answer in time (the API server is slow or unreachable)")]
    Timeout,
    #[error(transparent)]
    Failed(EvictionError),
}

fn answer_label(answer: &Result<Answer, SendError>) -> &'static str {
    match answer {
        Ok(answer) => answer.label(),
        Err(SendError::Timeout) => "timeout",
        Err(SendError::Failed(_)) => "error",
    }
}

/// Logs what deserves it: every failure, and the first refusal of each pod.
fn log_answer(pod: &Pod, request: &Request, answer: &Result<Answer, SendError>, tries: u32) {
    let pod = reclaim_model::namespaced_name(&pod.namespace().unwrap_or_default(), &pod.name_any());
    match answer {
        Ok(Answer::BudgetRefused) if tries == 1 => tracing::info!(
            pod,
            "its disruption budget refuses for now; asking again while its grace period fits"
        ),
        Ok(Answer::Throttled { retry_after }) => tracing::warn!(
            pod,
            ?retry_after,
            "the API server is throttling (429, API Priority and Fairness or max-inflight); asking again after Retry-After"
        ),
        Ok(Answer::MultipleBudgets) if tries == 1 => tracing::warn!(
            pod,
            "more than one PodDisruptionBudget selects this pod, so the Eviction API refuses it (500); it will be deleted when its grace period no longer fits; fix the budgets"
        ),
        Err(e) => {
            tracing::warn!(pod, ?request, error = %e, "request failed; planned again in the next round")
        }
        _ => {}
    }
}

/// Writes `reclaim.dev/interruption` (and the `reclaim.dev/interrupted` label) on the pod
/// unless they are already there, conditioned on its UID. `Some(Gone)` when the pod the
/// drain judged no longer exists (404). Any other failure to write is logged and the
/// request goes on: the deadline matters more than the reason.
async fn mark(client: &Client, record: &PodInterruption, pod: &Pod) -> Option<Answer> {
    if pod.annotations().get(POD_INTERRUPTION_ANNOTATION) == Some(&record.to_json())
        && pod.labels().contains_key(INTERRUPTED_LABEL)
    {
        return None;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let mut patch = record.pod_metadata_patch();
    patch["metadata"]["uid"] = serde_json::json!(pod.metadata.uid);
    match pods
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => None,
        Err(kube::Error::Api(status)) if status.code == 404 => Some(Answer::Gone),
        // A refusal (an admission policy's 422, the annotations' size limit, a 409 on the
        // UID) is not a departure: the request goes on, and its own UID precondition
        // tells a replaced pod from one that stays.
        Err(e) => {
            tracing::warn!(pod = %pod.name_any(), error = %e, hint = %reclaim_service::client::hint(&e, "pods patch"), "could not write the interruption reason on the pod; asking it to go anyway");
            None
        }
    }
}
