//! One poller per metadata path, each at the poll interval whatever the others do.
//!
//! The metadata service is a link-local endpoint on the instance itself: polling it
//! costs nothing and protects no shared server, so a poller never backs off. After an
//! error (timeout, 401, 5xx, garbage, transport) the next poll comes at most one poll
//! interval later, and a notice that appears in the middle of an error storm is seen as
//! soon as its path answers again. Paths are independent: a `maintenance/scheduled`
//! that fails forever, or a GCP `maintenance-event` hanging GET that times out, never
//! delays the spot path. Errors are counted on every occurrence and logged at most once
//! per [`LOG_EVERY`] per path, with counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::imds::{MetadataClient, MetadataError, MetadataPath, PathReport};
use crate::metrics::Metrics;

/// A failing path is logged at most this often (each failure is still counted).
const LOG_EVERY: Duration = Duration::from_secs(30);

/// One poll of one path, as the guard receives it.
#[derive(Debug)]
pub struct Polled {
    pub path: MetadataPath,
    /// The answer, or the label of the error (the pollers log the error itself).
    pub answer: Result<PathReport, &'static str>,
    pub at: Timestamp,
}

/// The running pollers; dropping this stops them.
pub struct Pollers {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Pollers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts one poller per path of `source`; their answers arrive on the receiver.
pub fn start(
    source: Arc<MetadataClient>,
    interval: Duration,
    metrics: Arc<Metrics>,
) -> (Pollers, mpsc::Receiver<Polled>) {
    let (tx, rx) = mpsc::channel(64);
    let mut tasks = Vec::new();
    for path in source.paths() {
        let answered = Arc::new(AtomicBool::new(false));
        tasks.push(tokio::spawn(first_call(
            source.clone(),
            path,
            answered.clone(),
            tx.clone(),
        )));
        tasks.push(tokio::spawn(poll_path(
            source.clone(),
            path,
            interval,
            metrics.clone(),
            answered,
            tx.clone(),
        )));
    }
    (Pollers { tasks }, rx)
}

async fn poll_path(
    source: Arc<MetadataClient>,
    path: MetadataPath,
    interval: Duration,
    metrics: Arc<Metrics>,
    answered: Arc<AtomicBool>,
    tx: mpsc::Sender<Polled>,
) {
    let provider = source.provider();
    let mut log = ErrorLog::default();
    loop {
        let started = Instant::now();
        let answer = source.poll(path, Timestamp::now()).await;
        let ok = answer.is_ok();
        match &answer {
            Ok(_) => {
                answered.store(true, Ordering::Relaxed);
                log.answered(path);
            }
            Err(e) => log.failed(path, e),
        }
        metrics.path_polled(
            provider,
            path,
            answer.as_ref().err().map(MetadataError::label),
        );
        let polled = Polled {
            path,
            answer: answer.map_err(|e| e.label()),
            at: Timestamp::now(),
        };
        if tx.send(polled).await.is_err() || (ok && path.once()) {
            return;
        }
        // A fixed cadence: a slow answer eats into the pause, never adds to it.
        let pause = if ok {
            source.pause_after_success(interval)
        } else {
            interval
        };
        tokio::time::sleep_until(started + pause).await;
    }
}

/// The slow first call some paths need (Azure's after boot), made once beside the
/// regular polls; its answer counts only if no regular poll has answered first.
async fn first_call(
    source: Arc<MetadataClient>,
    path: MetadataPath,
    answered: Arc<AtomicBool>,
    tx: mpsc::Sender<Polled>,
) {
    match source.first_call(path, Timestamp::now()).await {
        Some(Ok(report)) if !answered.load(Ordering::Relaxed) => {
            let polled = Polled {
                path,
                answer: Ok(report),
                at: Timestamp::now(),
            };
            let _ = tx.send(polled).await;
        }
        Some(Err(e)) => {
            tracing::debug!(path = path.label(), error = %e, "the long first call failed; the regular polls go on")
        }
        _ => {}
    }
}

/// Rate-limited logging of one path's failures.
#[derive(Default)]
struct ErrorLog {
    /// Failures in a row.
    failures: u64,
    /// Failures since the last log line, and when that was.
    unlogged: u64,
    logged_at: Option<Instant>,
}

impl ErrorLog {
    fn failed(&mut self, path: MetadataPath, error: &MetadataError) {
        self.failures += 1;
        self.unlogged += 1;
        if self.logged_at.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            tracing::warn!(
                path = path.label(),
                error = %error,
                failures_in_a_row = self.failures,
                since_last_log = self.unlogged,
                "metadata path failing; polling it again at the poll interval (other paths are unaffected)"
            );
            self.logged_at = Some(Instant::now());
            self.unlogged = 0;
        }
    }

    fn answered(&mut self, path: MetadataPath) {
        if self.failures > 0 {
            tracing::info!(
                path = path.label(),
                failures = self.failures,
                "metadata path answers again"
            );
        }
        *self = ErrorLog::default();
    }
}
