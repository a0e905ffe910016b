//! One drain running beside the poll loop: started on a notice, reported when done
//! (metrics, one summary line, Azure's acknowledgement), and owned by the guard: when
//! the guard goes (stopped, or its task killed), the drain goes with it, as it would with
//! the process. While it runs, each of its rounds tells `/healthz` it makes progress.

use std::sync::Arc;
use std::time::Instant;

use kube::Client;
use reclaim_service::endpoints::Health;
use tokio::task::JoinHandle;

use super::{DrainJob, PodOutcome, Progress, drain};
use crate::imds::MetadataClient;
use crate::metrics::Metrics;

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

impl Progress for Health {
    fn progressed(&self) {
        self.work_progressed();
    }
}

impl DrainTask {
    /// Starts draining for `event`. `acknowledge`: the Azure client to approve the
    /// event with once the drain is done.
    pub fn start(
        event: String,
        job: DrainJob,
        client: Client,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        acknowledge: Option<Arc<MetadataClient>>,
    ) -> DrainTask {
        let acknowledged = event.clone();
        let task_health = health.clone();
        let handle = tokio::spawn(async move {
            let health = task_health;
            let started = Instant::now();
            tracing::info!(deadline = %job.deadline, "draining the node");
            health.work_progressed();
            let report = drain(&client, &job, health.as_ref()).await;
            health.work_ended();
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
            for (_, name, group, outcome) in &report.outcomes {
                if *outcome == PodOutcome::Failed {
                    tracing::error!(
                        pod = name,
                        group = group.label(),
                        "still on the node, not terminating, when the drain ended"
                    );
                }
            }
            if let Some(MetadataClient::Azure(events)) = acknowledge.as_deref() {
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
