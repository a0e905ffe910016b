//! The HTTP endpoints of both binaries: `/metrics`, `/healthz`, `/readyz`. Read-only by design:
//! nothing served here changes anything, so it needs no authentication. The agent serves them
//! on the host network, where anything on the node's network can connect: connections are
//! bounded in number and in lifetime, so a flood costs a few file descriptors, not memory,
//! and the probes get through again as soon as it stops. `--metrics-addr` binds them to one
//! address (the manifests use the pod's IP; `127.0.0.1` keeps them on the node).

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

/// Connections served at once; one more is closed as soon as it is accepted. A scraper
/// and two probes need three.
pub const MAX_CONNECTIONS: usize = 16;

/// How long one connection may stay open, requests included (keep-alive reconnects).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// Serves the endpoints on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<dyn Exposition>, health: Arc<Health>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a metrics connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("{MAX_CONNECTIONS} metrics connections open; closing a new one");
            continue;
        };
        let (metrics, health) = (metrics.clone(), health.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |request| {
                let response = respond(&request, metrics.as_ref(), &health);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                Ok(Err(e)) => tracing::debug!(error = %e, "metrics connection ended with an error"),
                Err(_) => tracing::debug!("metrics connection open too long; closed"),
                Ok(Ok(())) => {}
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

/// `--metrics-addr`: `IP:PORT`, with an IPv6 address bracketed or not, so that
/// `$(POD_IP):9847` in a manifest works in IPv4 and IPv6 clusters alike.
pub fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let bad =
        || format!("{text:?} is not IP:PORT (e.g. 0.0.0.0:9847, 10.0.1.7:9847, fd00::7:9847)");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let ip: std::net::IpAddr = host.parse().map_err(|_| bad())?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    Ok(SocketAddr::new(ip, port))
}

/// Binds the metrics address, with an actionable error when it is taken.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for metrics: {e}; choose another --metrics-addr / RECLAIM_METRICS_ADDR"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    struct NoMetrics;
    impl Exposition for NoMetrics {
        fn encode(&self) -> String {
            String::new()
        }
    }

    async fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        Ok(answer)
    }

    #[tokio::test]
    async fn connections_past_the_bound_are_closed_and_served_again_once_others_end() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let health = Arc::new(Health::new(Duration::from_secs(60)));
        health.loop_turned();
        tokio::spawn(serve(listener, Arc::new(NoMetrics), health));
        assert!(
            get(addr, "/healthz")
                .await
                .unwrap()
                .starts_with("HTTP/1.1 200")
        );
        // Idle connections that never send a request hold every slot.
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        let answer = tokio::time::timeout(Duration::from_secs(3), get(addr, "/healthz"))
            .await
            .expect("one past the bound is closed at once, not left waiting");
        assert!(
            answer.as_ref().map_or(true, String::is_empty),
            "one past the bound is served nothing: {answer:?}"
        );
        drop(idle);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let answer = get(addr, "/healthz").await;
            if answer.as_ref().is_ok_and(|a| a.starts_with("HTTP/1.1 200")) {
                break;
            }
            assert!(Instant::now() < deadline, "served again: {answer:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[test]
    fn the_metrics_address_takes_ipv4_ipv6_bracketed_or_not() {
        let parse = |t| parse_listen_addr(t).map(|a| a.to_string());
        assert_eq!(parse("0.0.0.0:9847").as_deref(), Ok("0.0.0.0:9847"));
        assert_eq!(parse("[fd00::7]:9847").as_deref(), Ok("[fd00::7]:9847"));
        assert_eq!(parse("fd00::7:9847").as_deref(), Ok("[fd00::7]:9847"));
        assert_eq!(parse("127.0.0.1:9848").as_deref(), Ok("127.0.0.1:9848"));
        for bad in [
            "",
            "9847",
            "localhost:9847",
            "10.0.0.1:",
            "10.0.0.1:70000",
            "$(POD_IP):9847",
        ] {
            assert!(parse_listen_addr(bad).is_err(), "{bad:?}");
        }
    }
}
