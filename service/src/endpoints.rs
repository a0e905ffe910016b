//! The HTTP endpoints of both binaries: `/metrics`, `/healthz`, `/readyz`. Read-only by design:
//! nothing served here changes anything, so it needs no authentication.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Metrics in the Prometheus text format.
pub trait Exposition: Send + Sync + 'static {
    fn encode(&self) -> String;
}

/// Liveness of the poll loop (not just of the process) and readiness.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    /// Milliseconds after `started` of the poll loop's last turn.
    last_turn_ms: AtomicU64,
    /// Why the process is not ready (`None`: ready). Starts as not ready.
    not_ready: Mutex<Option<String>>,
    /// The loop counts as stuck when it has not turned for this long.
    stale_after: Duration,
    /// While long work runs (the agent's drain): when it last made progress.
    work_progress: Mutex<Option<Instant>>,
}

/// Running work counts as stalled when it has made no progress for this long.
pub const WORK_STALL_AFTER: Duration = Duration::from_secs(30);

impl Health {
    pub fn new(stale_after: Duration) -> Health {
        Health {
            started: Instant::now(),
            last_turn_ms: AtomicU64::new(0),
            not_ready: Mutex::new(Some("no successful metadata poll yet".into())),
            stale_after,
            work_progress: Mutex::new(None),
        }
    }

    /// The poll loop calls this on every turn, whether the poll succeeded or not.
    pub fn loop_turned(&self) {
        self.last_turn_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Long work (the agent's drain) made progress; `/healthz` fails when it then goes
    /// [`WORK_STALL_AFTER`] without more, until [`Health::work_ended`].
    pub fn work_progressed(&self) {
        *self.work_progress.lock().expect("health lock") = Some(Instant::now());
    }

    pub fn work_ended(&self) {
        *self.work_progress.lock().expect("health lock") = None;
    }

    pub fn set_ready(&self) {
        *self.not_ready.lock().expect("health lock") = None;
    }

    /// Not ready, for `reason` (served on `/readyz`, so say what fails).
    pub fn set_not_ready(&self, reason: String) {
        *self.not_ready.lock().expect("health lock") = Some(reason);
    }

    pub fn not_ready_reason(&self) -> Option<String> {
        self.not_ready.lock().expect("health lock").clone()
    }

    pub fn is_alive(&self) -> bool {
        let since = self.started.elapsed().saturating_sub(Duration::from_millis(
            self.last_turn_ms.load(Ordering::Relaxed),
        ));
        let work_stalled = self
            .work_progress
            .lock()
            .expect("health lock")
            .is_some_and(|t| t.elapsed() > WORK_STALL_AFTER);
        since <= self.stale_after && !work_stalled
    }

    pub fn is_ready(&self) -> bool {
        self.not_ready_reason().is_none()
    }
}

/// Serves the endpoints on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<dyn Exposition>, health: Arc<Health>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a metrics connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (metrics, health) = (metrics.clone(), health.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = respond(&request, metrics.as_ref(), &health);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
        });
    }
}

fn respond(
    request: &Request<hyper::body::Incoming>,
    metrics: &dyn Exposition,
    health: &Health,
) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match request.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        "/healthz" if health.is_alive() => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/healthz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "poll loop or drain stalled\n".to_owned(),
        ),
        "/readyz" => match health.not_ready_reason() {
            None => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
            Some(reason) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("{reason}\n"),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

/// Binds the metrics address, with an actionable error when it is taken.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for metrics: {e}; choose another --metrics-addr / RECLAIM_METRICS_ADDR"))
}
