//! One drain running beside the poll loop: started on a notice, reported as it goes
//! (`/healthz`, the Interruption record) and when done (metrics, one summary line, the
//! record's final state, Azure's acknowledgement), and owned by the guard: when
//! the guard goes (stopped, or its task killed), the drain goes with it, as it would with
//! the process. While it runs, each of its rounds tells `/healthz` it makes progress.

use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use kube::Client;
use reclaim_service::endpoints::Health;
use tokio::task::JoinHandle;

use super::{DrainJob, DrainReport, PodOutcome, Progress, drain};
use crate::imds::MetadataClient;
use crate::metrics::Metrics;
use crate::record::{Record, drain_summary};

pub struct DrainTask {
    /// The notice's event id.
    pub event: String,
    pub handle: JoinHandle<()>,
    health: Arc<Health>,
}

impl Drop for DrainTask {
    fn drop(&mut self) {
        self.handle.abort();
        self.health.work_ended();
    }
}

/// Where each round of the drain is reported.
struct Rounds {
    health: Arc<Health>,
    record: Option<Record>,
    started_at: Timestamp,
    deadline: Timestamp,
}

impl Rounds {
    fn record(&self, report: &DrainReport, finished: bool) {
        if let Some(record) = &self.record {
            let summary = drain_summary(
                report,
                self.started_at,
                self.deadline,
                Timestamp::now(),
                finished,
            );
            record.drained(summary, finished);
        }
    }
}

impl Progress for Rounds {
    fn round(&self, report: &DrainReport) {
        self.health.work_progressed();
        self.record(report, false);
    }
}

impl DrainTask {
    /// Starts draining for `event`, reporting into `record` when there is one.
    /// `acknowledge`: the Azure client to approve the event with once the drain is done.
    pub fn start(
        event: String,
        job: DrainJob,
        client: Client,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        record: Option<Record>,
        acknowledge: Option<Arc<MetadataClient>>,
    ) -> DrainTask {
        let acknowledged = event.clone();
        let rounds = Rounds {
            health: health.clone(),
            record,
            started_at: Timestamp::now(),
            deadline: job.deadline,
        };
        let handle = tokio::spawn(async move {
            let started = Instant::now();
            tracing::info!(deadline = %job.deadline, "draining the node");
            rounds.health.work_progressed();
            let report = drain(&client, &job, &rounds).await;
            rounds.health.work_ended();
            rounds.record(&report, true);
            let seconds = started.elapsed().as_secs_f64();
            metrics.drained(&report, seconds);
            tracing::info!(
                evicted = report.count(PodOutcome::Evicted),
                deleted_at_deadline = report.count(PodOutcome::DeletedAtDeadline),
                hastened = report.count(PodOutcome::Hastened),
                already_gone = report.count(PodOutcome::AlreadyGone),
                failed = report.count(PodOutcome::Failed),
                exempt = report.exempt,
                remaining = report.remaining,
                seconds,
                "drain finished"
            );
            for pod in &report.pods {
                if pod.outcome == Some(PodOutcome::Failed) {
                    tracing::error!(
                        pod = %reclaim_model::namespaced_name(&pod.namespace, &pod.name),
                        group = pod.group.label(),
                        "still on the node, not terminating, when the drain ended"
                    );
                }
            }
            // Acknowledging lets the platform proceed at once: only once the node is
            // empty; pods still there keep the time until the event's NotBefore.
            if let Some(MetadataClient::Azure(events)) = acknowledge.as_deref() {
                if !report.emptied() {
                    tracing::info!(
                        event = acknowledged,
                        remaining = report.remaining,
                        "pods are still on the node: the Azure event is not acknowledged, it starts at its NotBefore"
                    );
                    return;
                }
                match events.acknowledge(&acknowledged).await {
                    Ok(()) => tracing::info!(
                        event = acknowledged,
                        "acknowledged the Azure event: the platform may proceed"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, event = acknowledged, "could not acknowledge the Azure event; it will start at its NotBefore")
                    }
                }
            }
        });
        DrainTask {
            event,
            handle,
            health,
        }
    }
}
