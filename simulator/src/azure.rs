//! Azure Scheduled Events (and the instance name) as documented: `Metadata: true`
//! required, `DocumentIncarnation` bumped on every change, events broadcast to every VM
//! of the scale set, `StartRequests` acknowledgements.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Shared;
use crate::faults::{Fault, delay_or_fail};

/// What the simulated VM's Azure IMDS serves.
const EVENTS_PATH: &str = "/metadata/scheduledevents";
const NAME_PATH: &str = "/metadata/instance/compute/name";

#[derive(Debug, Default)]
pub struct AzureMetadata {
    /// `compute.name`: for a scale set instance `<vmss>_<instance id>`.
    pub vm_name: String,
    incarnation: u64,
    events: Vec<Value>,
    /// Event ids acknowledged with `StartRequests`, in order.
    pub acknowledged: Vec<String>,
    pub requests: u64,
}

impl AzureMetadata {
    /// Replaces the event list (objects as Azure documents them) and bumps the incarnation.
    pub fn set_events(&mut self, events: Vec<Value>) {
        self.events = events;
        self.incarnation += 1;
    }

    pub fn document(&self) -> Value {
        json!({"DocumentIncarnation": self.incarnation, "Events": self.events})
    }
}

/// Azure IMDS answers errors with a small JSON document.
pub fn error_page(status: StatusCode) -> Response {
    let body = json!({"error": status.canonical_reason().unwrap_or("Error")});
    (
        status,
        [("content-type", "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route(EVENTS_PATH, get(events).post(acknowledge))
        .route(NAME_PATH, get(compute_name))
}

#[derive(Deserialize)]
struct ApiVersion {
    #[serde(rename = "api-version")]
    api_version: Option<String>,
}

/// Azure's refusal when the request lacks `Metadata: true` or an api-version.
fn refusal(headers: &HeaderMap, query: &ApiVersion) -> Option<Response> {
    let problem = if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        "Bad request. Required metadata header not specified"
    } else if query.api_version.is_none() {
        "Bad request. api-version was not specified in the request"
    } else {
        return None;
    };
    let body = json!({"error": problem}).to_string();
    Some(
        (
            StatusCode::BAD_REQUEST,
            [("content-type", "application/json; charset=utf-8")],
            body,
        )
            .into_response(),
    )
}

async fn events(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<ApiVersion>,
) -> Response {
    state.lock().expect("simulator lock").azure.requests += 1;
    if let Some(failure) = delay_or_fail(&state, EVENTS_PATH, error_page).await {
        return failure;
    }
    if let Some(refused) = refusal(&headers, &query) {
        return refused;
    }
    let mut sim = state.lock().expect("simulator lock");
    if sim
        .faults
        .take_if(EVENTS_PATH, |f| *f == Fault::Absent)
        .is_some()
    {
        let body =
            json!({"DocumentIncarnation": sim.azure.incarnation + 1, "Events": []}).to_string();
        return (
            StatusCode::OK,
            [("content-type", "application/json; charset=utf-8")],
            body,
        )
            .into_response();
    }
    if sim
        .faults
        .take_if(EVENTS_PATH, |f| *f == Fault::Garbage)
        .is_some()
    {
        return (
            StatusCode::OK,
            [("content-type", "application/json; charset=utf-8")],
            "{\"DocumentIncarnation\": ",
        )
            .into_response();
    }
    let document = sim.azure.document();
    if document["Events"].as_array().is_some_and(|e| !e.is_empty()) {
        sim.notice_served();
    }
    let body = document.to_string();
    (
        StatusCode::OK,
        [("content-type", "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
struct StartRequests {
    start_requests: Vec<StartRequest>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
struct StartRequest {
    event_id: String,
}

async fn acknowledge(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<ApiVersion>,
    Json(body): Json<StartRequests>,
) -> Response {
    if let Some(refused) = refusal(&headers, &query) {
        return refused;
    }
    let mut sim = state.lock().expect("simulator lock");
    sim.azure
        .acknowledged
        .extend(body.start_requests.into_iter().map(|r| r.event_id));
    StatusCode::OK.into_response()
}

async fn compute_name(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<ApiVersion>,
) -> Response {
    if let Some(failure) = delay_or_fail(&state, NAME_PATH, error_page).await {
        return failure;
    }
    if let Some(refused) = refusal(&headers, &query) {
        return refused;
    }
    let mut sim = state.lock().expect("simulator lock");
    if sim
        .faults
        .take_if(NAME_PATH, |f| *f == Fault::Garbage)
        .is_some()
    {
        return (
            StatusCode::OK,
            [("content-type", "text/plain; charset=utf-8")],
            "<html>",
        )
            .into_response();
    }
    let name = sim.azure.vm_name.clone();
    if name.is_empty() {
        return error_page(StatusCode::NOT_FOUND);
    }
    (
        StatusCode::OK,
        [("content-type", "text/plain; charset=utf-8")],
        name,
    )
        .into_response()
}

#[derive(Deserialize)]
pub(crate) struct EventsRequest {
    pub events: Vec<Value>,
}
