//! The deadline-aware drain: every pod off the node before the deadline, gracefully
//! when possible, Spark executors first.
//!
//! All first requests of a priority group go out at once, group after group, so a
//! node of 110 pods is asked within a second. A pod whose PodDisruptionBudget refuses
//! is asked again while its grace period still fits, then deleted with the grace period
//! clamped to the time left: the deadline wins over the budget, because the cloud will
//! not wait. Every pod is annotated with the reason before it is asked to go.

pub mod plan;

use std::time::Duration;

use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use reclaim_model::PodInterruption;
use reclaim_model::keys::{INTERRUPTED_LABEL, POD_INTERRUPTION_ANNOTATION};

use crate::eviction::{EvictionOutcome, EvictionVersion, evict};
use crate::pods::pods_on_node;
use plan::{AfterRefusal, OwnPod, Priority, after_refusal, eviction_grace, grace_seconds};

/// How one pod left (or did not leave) the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PodOutcome {
    /// The Eviction API accepted it: graceful, budget respected.
    Evicted,
    /// Deleted because its budget still refused when its grace period no longer fit.
    DeletedAtDeadline,
    /// It was gone before the agent got to it.
    AlreadyGone,
    /// Neither eviction nor deletion succeeded.
    Failed,
}

impl PodOutcome {
    pub const ALL: [PodOutcome; 4] = [
        PodOutcome::Evicted,
        PodOutcome::DeletedAtDeadline,
        PodOutcome::AlreadyGone,
        PodOutcome::Failed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            PodOutcome::Evicted => "evicted",
            PodOutcome::DeletedAtDeadline => "deleted_at_deadline",
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
    pub own_pod: Option<OwnPod>,
    pub retry_interval: Duration,
    pub eviction_version: EvictionVersion,
}

/// What a drain did, for the summary log line and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Pods in the order they were first asked to go, with their outcome.
    pub outcomes: Vec<(String, Priority, PodOutcome)>,
    /// Pods left alone (DaemonSet, mirror, the agent, finished, already terminating).
    pub exempt: usize,
    /// Drained pods still on the node when the drain stopped waiting.
    pub remaining: usize,
}

impl DrainReport {
    pub fn count(&self, outcome: PodOutcome) -> usize {
        self.outcomes
            .iter()
            .filter(|(_, _, o)| *o == outcome)
            .count()
    }
}

enum FirstAnswer {
    Done(PodOutcome),
    Refused,
}

/// Drains the node; returns once every drained pod is gone or the deadline has passed.
pub async fn drain(client: &Client, job: &DrainJob) -> kube::Result<DrainReport> {
    let plan = plan::order(pods_on_node(client, &job.node).await?, job.own_pod.as_ref());
    let ordered = plan.to_drain;
    let mut report = DrainReport {
        exempt: plan.exempt.len(),
        ..Default::default()
    };
    let mut refused = Vec::new();
    for priority in [
        Priority::SparkExecutor,
        Priority::Ordinary,
        Priority::Critical,
    ] {
        let group: Vec<&Pod> = ordered
            .iter()
            .filter(|(p, _)| *p == priority)
            .map(|(_, pod)| pod)
            .collect();
        let answers = join_all(group.iter().map(|pod| first_request(client, job, pod))).await;
        for (pod, answer) in group.into_iter().zip(answers) {
            match answer {
                FirstAnswer::Done(outcome) => {
                    report.outcomes.push((pod.name_any(), priority, outcome))
                }
                FirstAnswer::Refused => refused.push((priority, pod)),
            }
        }
    }
    let retried = join_all(
        refused
            .iter()
            .map(|(_, pod)| until_gone_or_deleted(client, job, pod)),
    )
    .await;
    for ((priority, pod), outcome) in refused.iter().zip(retried) {
        report.outcomes.push((pod.name_any(), *priority, outcome));
    }
    report.remaining = wait_until_empty(client, job, &ordered).await;
    Ok(report)
}

/// Annotates the pod with the reason, then asks for its eviction.
async fn first_request(client: &Client, job: &DrainJob, pod: &Pod) -> FirstAnswer {
    let (namespace, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
    if let Err(outcome) = annotate(client, job, pod).await {
        return FirstAnswer::Done(outcome);
    }
    let grace = eviction_grace(Timestamp::now(), job.deadline, grace_seconds(pod));
    match evict(client, job.eviction_version, &namespace, &name, grace).await {
        Ok(EvictionOutcome::Accepted) => FirstAnswer::Done(PodOutcome::Evicted),
        Ok(EvictionOutcome::AlreadyGone) => FirstAnswer::Done(PodOutcome::AlreadyGone),
        Ok(EvictionOutcome::BlockedByBudget) => FirstAnswer::Refused,
        Err(e) => {
            tracing::warn!(pod = %format!("{namespace}/{name}"), error = %e, "eviction failed; retrying until the deadline");
            FirstAnswer::Refused
        }
    }
}

/// Writes `reclaim.dev/interruption` (and the `reclaim.dev/interrupted` label) on the pod
/// unless they are already there.
/// `Err(AlreadyGone)` when the pod no longer exists.
async fn annotate(client: &Client, job: &DrainJob, pod: &Pod) -> Result<(), PodOutcome> {
    if pod.annotations().get(POD_INTERRUPTION_ANNOTATION) == Some(&job.record.to_json())
        && pod.labels().contains_key(INTERRUPTED_LABEL)
    {
        return Ok(());
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let patch = job.record.pod_metadata_patch();
    match pods
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(PodOutcome::AlreadyGone),
        Err(e) => {
            // The deadline matters more than the reason: evict anyway, and say so.
            tracing::warn!(pod = %pod.name_any(), error = %e, "could not write the interruption reason on the pod; evicting it anyway (check the agent's RBAC: pods patch)");
            Ok(())
        }
    }
}

/// Asks again while the pod's grace period fits before the deadline, then deletes it
/// with the grace period clamped to the time left.
async fn until_gone_or_deleted(client: &Client, job: &DrainJob, pod: &Pod) -> PodOutcome {
    let (namespace, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
    let retry_seconds = job.retry_interval.as_secs().max(1) as i64;
    loop {
        match after_refusal(
            Timestamp::now(),
            job.deadline,
            grace_seconds(pod),
            retry_seconds,
        ) {
            AfterRefusal::RetryEviction => {
                tokio::time::sleep(job.retry_interval).await;
                let grace = eviction_grace(Timestamp::now(), job.deadline, grace_seconds(pod));
                match evict(client, job.eviction_version, &namespace, &name, grace).await {
                    Ok(EvictionOutcome::Accepted) => return PodOutcome::Evicted,
                    Ok(EvictionOutcome::AlreadyGone) => return PodOutcome::AlreadyGone,
                    Ok(EvictionOutcome::BlockedByBudget) => {}
                    Err(e) => {
                        tracing::warn!(pod = %format!("{namespace}/{name}"), error = %e, "eviction failed; retrying")
                    }
                }
            }
            AfterRefusal::Delete { grace_seconds } => {
                let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
                let params = DeleteParams::default().grace_period(grace_seconds.max(0) as u32);
                return match pods.delete(&name, &params).await {
                    Ok(_) => {
                        tracing::info!(pod = %format!("{namespace}/{name}"), grace_seconds, "disruption budget still refused at the deadline; deleted the pod");
                        PodOutcome::DeletedAtDeadline
                    }
                    Err(kube::Error::Api(status)) if status.code == 404 => PodOutcome::AlreadyGone,
                    Err(e) => {
                        tracing::error!(pod = %format!("{namespace}/{name}"), error = %e, "could not delete the pod at the deadline (check the agent's RBAC: pods delete)");
                        PodOutcome::Failed
                    }
                };
            }
        }
    }
}

/// Waits until none of the drained pods is on the node, or the deadline has passed;
/// returns how many are still there.
async fn wait_until_empty(client: &Client, job: &DrainJob, drained: &[(Priority, Pod)]) -> usize {
    let uids: Vec<&str> = drained
        .iter()
        .filter_map(|(_, p)| p.metadata.uid.as_deref())
        .collect();
    loop {
        let remaining = match pods_on_node(client, &job.node).await {
            Ok(pods) => pods
                .iter()
                .filter(|p| p.metadata.uid.as_deref().is_some_and(|u| uids.contains(&u)))
                .count(),
            Err(e) => {
                tracing::warn!(error = %e, "could not list the node's pods while waiting for the drain");
                uids.len()
            }
        };
        if remaining == 0 || Timestamp::now() >= job.deadline {
            return remaining;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
