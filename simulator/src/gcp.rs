//! The GCP metadata server as documented: `Metadata-Flavor: Google` required, an ETag
//! on every answer, and hanging GETs (`wait_for_change`, `last_etag`, `timeout_sec`)
//! that answer as soon as the value changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::sync::Notify;

use crate::Shared;
use crate::faults::{Fault, delay_or_fail};

/// What the simulated VM's metadata server serves under `instance/`.
#[derive(Debug)]
pub struct GcpMetadata {
    values: HashMap<String, (String, u64)>,
    changed: Arc<Notify>,
    pub requests: u64,
}

impl Default for GcpMetadata {
    fn default() -> Self {
        let mut values = HashMap::new();
        values.insert("id".to_owned(), ("4520031799277581759".to_owned(), 0));
        values.insert("preempted".to_owned(), ("FALSE".to_owned(), 0));
        values.insert("maintenance-event".to_owned(), ("NONE".to_owned(), 0));
        GcpMetadata {
            values,
            changed: Arc::new(Notify::new()),
            requests: 0,
        }
    }
}

impl GcpMetadata {
    pub fn set_preempted(&mut self, preempted: bool) {
        self.set("preempted", if preempted { "TRUE" } else { "FALSE" });
    }

    /// `NONE`, `MIGRATE_ON_HOST_MAINTENANCE` or `TERMINATE_ON_HOST_MAINTENANCE`.
    pub fn set_maintenance_event(&mut self, value: &str) {
        self.set("maintenance-event", value);
    }

    fn set(&mut self, key: &str, value: &str) {
        let entry = self
            .values
            .entry(key.to_owned())
            .or_insert_with(|| (String::new(), 0));
        entry.0 = value.to_owned();
        entry.1 += 1;
        self.changed.notify_waiters();
    }

    fn current(&self, key: &str) -> Option<(String, String)> {
        self.values
            .get(key)
            .map(|(value, version)| (value.clone(), etag(key, value, *version)))
    }
}

/// An opaque hex ETag that changes whenever the value is set.
fn etag(key: &str, value: &str, version: u64) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key
        .bytes()
        .chain(value.bytes())
        .chain(version.to_le_bytes())
    {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The metadata server's HTML error page.
pub fn error_page(status: StatusCode) -> Response {
    let body = format!(
        "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <title>Error {code} ({reason})!!1</title>\n  <p><b>{code}.</b> <ins>That's an error.</ins>\n",
        code = status.as_u16(),
        reason = status.canonical_reason().unwrap_or("Error")
    );
    (
        status,
        [
            ("content-type", "text/html; charset=UTF-8"),
            ("metadata-flavor", "Google"),
        ],
        body,
    )
        .into_response()
}

pub(crate) fn routes() -> Router<Shared> {
    Router::new().route("/computeMetadata/v1/instance/{key}", get(value))
}

#[derive(Deserialize)]
struct Wait {
    wait_for_change: Option<bool>,
    last_etag: Option<String>,
    timeout_sec: Option<u64>,
}

async fn value(
    State(state): State<Shared>,
    Path(key): Path<String>,
    headers: HeaderMap,
    Query(wait): Query<Wait>,
) -> Response {
    state.lock().expect("simulator lock").gcp.requests += 1;
    let path = format!("/computeMetadata/v1/instance/{key}");
    if let Some(failure) = delay_or_fail(&state, &path, error_page).await {
        return failure;
    }
    if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
        return error_page(StatusCode::FORBIDDEN);
    }
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs(wait.timeout_sec.unwrap_or(300).min(3600));
    loop {
        let (current, notify) = {
            let mut sim = state.lock().expect("simulator lock");
            if sim
                .faults
                .take_if(&path, |f| *f == Fault::Garbage)
                .is_some()
            {
                return (
                    StatusCode::OK,
                    [
                        ("content-type", "application/text"),
                        ("metadata-flavor", "Google"),
                    ],
                    "<html>",
                )
                    .into_response();
            }
            (sim.gcp.current(&key), sim.gcp.changed.clone())
        };
        let Some((value, etag)) = current else {
            return error_page(StatusCode::NOT_FOUND);
        };
        let unchanged =
            wait.wait_for_change == Some(true) && wait.last_etag.as_deref() == Some(etag.as_str());
        if !unchanged || tokio::time::Instant::now() >= deadline {
            if matches!(value.as_str(), "TRUE" | "TERMINATE_ON_HOST_MAINTENANCE") {
                state.lock().expect("simulator lock").notice_served();
            }
            return (
                StatusCode::OK,
                [
                    ("content-type", "application/text".to_owned()),
                    ("metadata-flavor", "Google".to_owned()),
                    ("etag", etag),
                ],
                value,
            )
                .into_response();
        }
        let changed = notify.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        // Re-check after arming the notification, so a change in between is not missed.
        let still = state
            .lock()
            .expect("simulator lock")
            .gcp
            .current(&key)
            .map(|(_, e)| e);
        if still.as_deref() == Some(etag.as_str()) {
            let _ = tokio::time::timeout_at(deadline, changed).await;
        }
    }
}
