//! The `/_sim/` control API (AWS, Azure, GCP, faults): how a user, the demo or a test script tells the simulated
//! instance what to announce. It listens where the simulator listens (loopback by
//! default): it is a rehearsal tool, never deployed next to real workloads.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use serde_json::Value;

use crate::Shared;
use crate::faults::Fault;

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/_sim/aws/spot", post(spot))
        .route("/_sim/aws/rebalance", post(rebalance))
        .route("/_sim/aws/maintenance", put(maintenance))
        .route("/_sim/aws/lifecycle", put(lifecycle))
        .route("/_sim/aws/expire-tokens", post(expire_tokens))
        .route("/_sim/azure/events", put(azure_events))
        .route("/_sim/gcp/preempted", put(gcp_preempted))
        .route("/_sim/gcp/maintenance-event", put(gcp_maintenance))
        .route("/_sim/faults", post(faults).delete(clear_faults))
        .route("/_sim/reset", post(reset))
        .route("/_sim/stats", get(stats))
}

#[derive(Deserialize)]
struct SpotRequest {
    #[serde(default = "terminate")]
    action: String,
    /// Seconds from now until the notice appears.
    #[serde(default)]
    after_seconds: i64,
    /// Seconds between the notice and the action (AWS: 120).
    #[serde(default = "two_minutes")]
    lead_seconds: i64,
}

fn terminate() -> String {
    "terminate".into()
}

fn two_minutes() -> i64 {
    120
}

async fn spot(State(state): State<Shared>, Json(request): Json<SpotRequest>) -> StatusCode {
    let visible = Timestamp::now() + SignedDuration::from_secs(request.after_seconds);
    state.lock().expect("simulator lock").aws.schedule_spot(
        &request.action,
        visible,
        SignedDuration::from_secs(request.lead_seconds),
    );
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct AfterRequest {
    #[serde(default)]
    after_seconds: i64,
}

async fn rebalance(State(state): State<Shared>, Json(request): Json<AfterRequest>) -> StatusCode {
    let at = Timestamp::now() + SignedDuration::from_secs(request.after_seconds);
    state.lock().expect("simulator lock").aws.set_rebalance(at);
    StatusCode::NO_CONTENT
}

async fn maintenance(State(state): State<Shared>, Json(events): Json<Value>) -> StatusCode {
    if !events.is_array() {
        return StatusCode::UNPROCESSABLE_ENTITY;
    }
    state
        .lock()
        .expect("simulator lock")
        .aws
        .set_maintenance(events);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct LifecycleRequest {
    state: Option<String>,
}

async fn lifecycle(
    State(state): State<Shared>,
    Json(request): Json<LifecycleRequest>,
) -> StatusCode {
    state
        .lock()
        .expect("simulator lock")
        .aws
        .set_lifecycle(request.state.as_deref());
    StatusCode::NO_CONTENT
}

async fn expire_tokens(State(state): State<Shared>) -> StatusCode {
    state.lock().expect("simulator lock").aws.expire_tokens();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct FaultRequest {
    fault: Fault,
    /// How many requests it applies to (ignored when `persistent`).
    #[serde(default = "one")]
    count: usize,
    /// Only requests whose path contains this (e.g. `spot/instance-action`).
    path: Option<String>,
    /// Every matching request until `DELETE /_sim/faults` or `/_sim/reset`.
    #[serde(default)]
    persistent: bool,
}

fn one() -> usize {
    1
}

async fn faults(State(state): State<Shared>, Json(request): Json<FaultRequest>) -> StatusCode {
    let faults = &mut state.lock().expect("simulator lock").faults;
    let path = request.path.as_deref();
    if request.persistent {
        faults.persist(path, request.fault);
    } else {
        faults.inject_on(path, request.fault, request.count);
    }
    StatusCode::NO_CONTENT
}

async fn clear_faults(State(state): State<Shared>) -> StatusCode {
    state.lock().expect("simulator lock").faults.clear();
    StatusCode::NO_CONTENT
}

async fn reset(State(state): State<Shared>) -> StatusCode {
    let mut sim = state.lock().expect("simulator lock");
    sim.aws.clear_notices();
    sim.azure.set_events(Vec::new());
    sim.gcp.set_preempted(false);
    sim.gcp.set_maintenance_event("NONE");
    sim.faults.clear();
    sim.notice_first_served = None;
    StatusCode::NO_CONTENT
}

async fn stats(State(state): State<Shared>) -> Json<Value> {
    let sim = state.lock().expect("simulator lock");
    Json(serde_json::json!({
        "aws": sim.aws.stats,
        "azure": {"requests": sim.azure.requests, "acknowledged": sim.azure.acknowledged},
        "gcp": {"requests": sim.gcp.requests},
        "notice_first_served": sim.notice_first_served,
        "faults_pending": sim.faults.pending(),
    }))
}

async fn azure_events(
    State(state): State<Shared>,
    Json(request): Json<crate::azure::EventsRequest>,
) -> StatusCode {
    state
        .lock()
        .expect("simulator lock")
        .azure
        .set_events(request.events);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct ValueRequest<T> {
    value: T,
}

async fn gcp_preempted(
    State(state): State<Shared>,
    Json(request): Json<ValueRequest<bool>>,
) -> StatusCode {
    state
        .lock()
        .expect("simulator lock")
        .gcp
        .set_preempted(request.value);
    StatusCode::NO_CONTENT
}

async fn gcp_maintenance(
    State(state): State<Shared>,
    Json(request): Json<ValueRequest<String>>,
) -> StatusCode {
    state
        .lock()
        .expect("simulator lock")
        .gcp
        .set_maintenance_event(&request.value);
    StatusCode::NO_CONTENT
}
