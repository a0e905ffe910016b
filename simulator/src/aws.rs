//! AWS instance metadata (IMDS) as documented: IMDSv2 sessions, the spot, rebalance,
//! maintenance and Auto Scaling paths, XHTML error pages, tab-indented JSON.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use jiff::{SignedDuration, Timestamp, Unit};
use serde::Serialize;
use serde_json::Value;

use crate::Shared;
use crate::faults::{Fault, delay_or_fail};

const TOKEN_TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
const MAX_TOKEN_TTL: u64 = 21600;
const TOKEN_PATH: &str = "/latest/api/token";
const SPOT_PATH: &str = "/latest/meta-data/spot/instance-action";

/// Whether GETs must carry a session token (`HttpTokens: required`) or may omit it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Imdsv2 {
    #[default]
    Required,
    Optional,
}

#[derive(Debug, Clone)]
struct SpotNotice {
    action: String,
    visible_from: Timestamp,
    time: Timestamp,
}

/// Request counts, for tests that check how the agent talks to IMDS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AwsStats {
    pub token_requests: u64,
    pub metadata_requests: u64,
    pub unauthorized: u64,
    pub duplicate_token_headers: u64,
}

/// What the simulated instance's IMDS serves.
#[derive(Debug, Default)]
pub struct AwsMetadata {
    pub imdsv2: Imdsv2,
    /// Serve JSON indented with tabs, as IMDS sometimes does.
    pub compact_json: bool,
    pub instance_id: String,
    tokens: HashMap<String, Instant>,
    issued: u64,
    spot: Option<SpotNotice>,
    rebalance: Option<Timestamp>,
    maintenance: Option<Value>,
    lifecycle: Option<String>,
    pub stats: AwsStats,
}

impl AwsMetadata {
    /// A spot interruption notice that appears at `visible_from`, for an action `lead` later.
    pub fn schedule_spot(&mut self, action: &str, visible_from: Timestamp, lead: SignedDuration) {
        self.spot = Some(SpotNotice {
            action: action.to_owned(),
            visible_from,
            time: visible_from + lead,
        });
    }

    /// A rebalance recommendation issued at `notice_time` (visible from then on).
    pub fn set_rebalance(&mut self, notice_time: Timestamp) {
        self.rebalance = Some(notice_time);
    }

    /// The scheduled maintenance events, as the JSON array IMDS serves.
    pub fn set_maintenance(&mut self, events: Value) {
        self.maintenance = Some(events);
    }

    /// The Auto Scaling target lifecycle state (`InService`, `Terminated`), or none (404).
    pub fn set_lifecycle(&mut self, state: Option<&str>) {
        self.lifecycle = state.map(str::to_owned);
    }

    /// Invalidates every session token issued so far, as expiry would.
    pub fn expire_tokens(&mut self) {
        self.tokens.clear();
    }

    pub fn clear_notices(&mut self) {
        self.spot = None;
        self.rebalance = None;
        self.maintenance = None;
        self.lifecycle = None;
    }

    fn issue_token(&mut self, ttl: u64) -> String {
        self.issued += 1;
        let token = format!("AQAEAsim{:016x}{:08x}==", self.issued, std::process::id());
        self.tokens
            .insert(token.clone(), Instant::now() + Duration::from_secs(ttl));
        token
    }

    /// `Err(status)` when the request's token does not let it through.
    fn authorize(&mut self, headers: &HeaderMap) -> Result<(), StatusCode> {
        let tokens: Vec<_> = headers.get_all(TOKEN_HEADER).iter().collect();
        if tokens.len() > 1 {
            self.stats.duplicate_token_headers += 1;
            return Err(StatusCode::BAD_REQUEST);
        }
        let valid = tokens
            .first()
            .and_then(|t| t.to_str().ok())
            .and_then(|t| self.tokens.get(t))
            .is_some_and(|expires| Instant::now() < *expires);
        let allowed = valid || (tokens.is_empty() && self.imdsv2 == Imdsv2::Optional);
        if allowed {
            Ok(())
        } else {
            self.stats.unauthorized += 1;
            Err(StatusCode::UNAUTHORIZED)
        }
    }

    fn json(&self, value: Value) -> String {
        if self.compact_json {
            return value.to_string();
        }
        let mut out = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
        value
            .serialize(&mut serializer)
            .expect("JSON values serialize");
        String::from_utf8(out).expect("JSON is UTF-8")
    }

    /// The body served at `path` now, or `None` for 404.
    fn serve(&self, path: &str, now: Timestamp) -> Option<(&'static str, String)> {
        let spot = self.spot.as_ref().filter(|s| now >= s.visible_from);
        let text = "text/plain";
        match path {
            "/latest/meta-data/instance-id" => Some((text, self.instance_id.clone())),
            SPOT_PATH => spot.map(|s| {
                let body =
                    serde_json::json!({"action": s.action, "time": seconds(s.time).to_string()});
                (text, self.json(body))
            }),
            "/latest/meta-data/spot/termination-time" => {
                spot.map(|s| (text, seconds(s.time).to_string()))
            }
            "/latest/meta-data/events/recommendations/rebalance" => {
                self.rebalance.filter(|t| now >= *t).map(|t| {
                    (
                        text,
                        self.json(serde_json::json!({"noticeTime": seconds(t).to_string()})),
                    )
                })
            }
            "/latest/meta-data/events/maintenance/scheduled" => Some((
                text,
                self.json(self.maintenance.clone().unwrap_or(Value::Array(Vec::new()))),
            )),
            "/latest/meta-data/autoscaling/target-lifecycle-state" => {
                self.lifecycle.clone().map(|s| (text, s))
            }
            _ => None,
        }
    }
}

fn seconds(t: Timestamp) -> Timestamp {
    t.round(Unit::Second).unwrap_or(t)
}

/// The XHTML page IMDS answers errors with.
pub fn error_page(status: StatusCode) -> Response {
    let title = format!(
        "{} - {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n\
         <!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\"\n\
         \t\t \"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">\n\
         <html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">\n \
         <head>\n  <title>{title}</title>\n </head>\n <body>\n  <h1>{title}</h1>\n </body>\n</html>\n"
    );
    (status, [("content-type", "text/html")], body).into_response()
}

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route(TOKEN_PATH, put(token))
        .route("/latest/{*path}", axum::routing::any(metadata))
}

async fn token(State(state): State<Shared>, headers: HeaderMap) -> Response {
    state
        .lock()
        .expect("simulator lock")
        .aws
        .stats
        .token_requests += 1;
    if let Some(failure) = delay_or_fail(&state, TOKEN_PATH, error_page).await {
        return failure;
    }
    let mut sim = state.lock().expect("simulator lock");
    if sim
        .faults
        .take_if(TOKEN_PATH, |f| *f == Fault::Garbage)
        .is_some()
    {
        return (StatusCode::OK, [("content-type", "text/plain")], "").into_response();
    }
    let ttl = headers
        .get(TOKEN_TTL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ttl| (1..=MAX_TOKEN_TTL).contains(ttl));
    let Some(ttl) = ttl else {
        return error_page(StatusCode::BAD_REQUEST);
    };
    let token = sim.aws.issue_token(ttl);
    (
        StatusCode::OK,
        [
            ("content-type", "text/plain".to_owned()),
            (TOKEN_TTL_HEADER, ttl.to_string()),
        ],
        token,
    )
        .into_response()
}

async fn metadata(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if method != Method::GET {
        return error_page(StatusCode::METHOD_NOT_ALLOWED);
    }
    state
        .lock()
        .expect("simulator lock")
        .aws
        .stats
        .metadata_requests += 1;
    let path = uri.path();
    if let Some(failure) = delay_or_fail(&state, path, error_page).await {
        return failure;
    }
    let mut sim = state.lock().expect("simulator lock");
    if let Err(refused) = sim.aws.authorize(&headers) {
        return error_page(refused);
    }
    if sim.faults.take_if(path, |f| *f == Fault::Absent).is_some() {
        return error_page(StatusCode::NOT_FOUND);
    }
    if sim.faults.take_if(path, |f| *f == Fault::Garbage).is_some() {
        return (
            StatusCode::OK,
            [("content-type", "text/plain")],
            "{\"action\": \"termin\u{fffd}<html>",
        )
            .into_response();
    }
    match sim.aws.serve(path, Timestamp::now()) {
        Some((content_type, body)) => {
            if path == SPOT_PATH {
                sim.notice_served();
            }
            (StatusCode::OK, [("content-type", content_type)], body).into_response()
        }
        None => error_page(StatusCode::NOT_FOUND),
    }
}
