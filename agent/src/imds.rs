//! Cloud instance metadata: what each provider announces about this instance.
//!
//! Each provider module ([`aws`], [`azure`], [`gcp`]) turns its protocol into [`Announced`] events; what to do about
//! them is decided elsewhere ([`crate::decision`]), from plain values.

pub mod aws;
pub mod azure;
pub mod gcp;

use std::time::Duration;

use jiff::Timestamp;
use reclaim_model::{NoticeKind, Provider};

/// The provider a Node runs on, from its `spec.providerID` (`aws:///us-east-1a/i-0abc...`).
pub fn provider_of(provider_id: &str) -> Option<Provider> {
    match provider_id.split_once("://")?.0 {
        "aws" => Some(Provider::Aws),
        "azure" => Some(Provider::Azure),
        "gce" => Some(Provider::Gcp),
        _ => None,
    }
}

/// One metadata path the agent polls on its own schedule, so that a path that fails or
/// hangs never delays another (see `docs/metadata-protocols.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MetadataPath {
    AwsSpot,
    AwsRebalance,
    AwsMaintenance,
    AwsLifecycle,
    AzureEvents,
    AzureComputeName,
    GcpPreempted,
    GcpMaintenance,
}

impl MetadataPath {
    /// The path as operators know it, for logs, metrics and `/readyz`.
    pub fn label(self) -> &'static str {
        match self {
            MetadataPath::AwsSpot => "spot/instance-action",
            MetadataPath::AwsRebalance => "events/recommendations/rebalance",
            MetadataPath::AwsMaintenance => "events/maintenance/scheduled",
            MetadataPath::AwsLifecycle => "autoscaling/target-lifecycle-state",
            MetadataPath::AzureEvents => "scheduledevents",
            MetadataPath::AzureComputeName => "instance/compute/name",
            MetadataPath::GcpPreempted => "instance/preempted",
            MetadataPath::GcpMaintenance => "instance/maintenance-event",
        }
    }

    /// The path whose answers announce, and withdraw, notices of `kind` on `provider`
    /// (none for a drill, which the node's annotation announces).
    pub fn announcing(provider: Provider, kind: NoticeKind) -> Option<MetadataPath> {
        Some(match (provider, kind) {
            (Provider::Aws, NoticeKind::SpotInterruption) => MetadataPath::AwsSpot,
            (Provider::Aws, NoticeKind::Rebalance) => MetadataPath::AwsRebalance,
            (Provider::Aws, NoticeKind::ScheduledMaintenance) => MetadataPath::AwsMaintenance,
            (Provider::Aws, NoticeKind::AsgTermination) => MetadataPath::AwsLifecycle,
            (Provider::Azure, _) => MetadataPath::AzureEvents,
            (Provider::Gcp, NoticeKind::ScheduledMaintenance) => MetadataPath::GcpMaintenance,
            (Provider::Gcp, _) => MetadataPath::GcpPreempted,
            (Provider::Drill, _) => return None,
        })
    }

    /// Paths polled only until they first answer (what they tell never changes).
    pub fn once(self) -> bool {
        self == MetadataPath::AzureComputeName
    }
}

/// What one path says right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathReport {
    /// The events it announces.
    pub announced: Vec<Announced>,
    /// Events it explicitly says are over (an AWS maintenance event `canceled` or
    /// `completed`, a GCP value back to `FALSE`/`NONE`, an ASG target back `InService`).
    /// Unlike an event that is merely missing from an answer, these are undone at once.
    pub ended: Vec<String>,
}

/// A metadata client for the provider the node runs on.
pub enum MetadataClient {
    Aws(aws::AwsImds),
    Azure(azure::AzureEvents),
    Gcp(gcp::GcpMetadata),
}

impl MetadataClient {
    pub fn provider(&self) -> Provider {
        match self {
            MetadataClient::Aws(_) => Provider::Aws,
            MetadataClient::Azure(_) => Provider::Azure,
            MetadataClient::Gcp(_) => Provider::Gcp,
        }
    }

    /// The paths to poll, each on its own.
    pub fn paths(&self) -> Vec<MetadataPath> {
        match self {
            MetadataClient::Aws(_) => vec![
                MetadataPath::AwsSpot,
                MetadataPath::AwsRebalance,
                MetadataPath::AwsMaintenance,
                MetadataPath::AwsLifecycle,
            ],
            MetadataClient::Azure(events) if events.knows_vm_name() => {
                vec![MetadataPath::AzureEvents]
            }
            MetadataClient::Azure(_) => {
                vec![MetadataPath::AzureEvents, MetadataPath::AzureComputeName]
            }
            MetadataClient::Gcp(_) => {
                vec![MetadataPath::GcpPreempted, MetadataPath::GcpMaintenance]
            }
        }
    }

    /// One poll of `path`. On GCP this waits (a hanging GET) until the value changes
    /// or the server's timeout passes.
    pub async fn poll(
        &self,
        path: MetadataPath,
        now: Timestamp,
    ) -> Result<PathReport, MetadataError> {
        match self {
            MetadataClient::Aws(imds) => imds.poll(path, now).await,
            MetadataClient::Azure(events) => events.poll(path, now).await,
            MetadataClient::Gcp(metadata) => metadata.poll(path, now).await,
        }
    }

    /// A first call of `path` that may take longer than a poll (Azure's first call after
    /// boot can take two minutes); `None` where no such call is needed.
    pub async fn first_call(
        &self,
        path: MetadataPath,
        now: Timestamp,
    ) -> Option<Result<PathReport, MetadataError>> {
        match self {
            MetadataClient::Azure(events) if path == MetadataPath::AzureEvents => {
                Some(events.first_call(now).await)
            }
            _ => None,
        }
    }

    /// The instance this metadata service describes, in the form the Node's providerID
    /// names it (see [`crate::identity::instance_in_provider_id`]); `None` when it names none.
    pub async fn instance(&self) -> Result<Option<String>, MetadataError> {
        match self {
            MetadataClient::Aws(imds) => imds.instance_id().await,
            MetadataClient::Azure(events) => events.vm_name().await.map(Some),
            MetadataClient::Gcp(metadata) => metadata.instance_name().await,
        }
    }

    /// The pause after a successful poll: none on GCP, whose requests wait themselves.
    /// After a failure every path waits one poll interval, never more: the metadata
    /// service is on the instance itself, so backing off protects nothing and would
    /// blind the agent for longer than Azure's or GCP's whole 30 s notice.
    pub fn pause_after_success(&self, poll_interval: Duration) -> Duration {
        match self {
            MetadataClient::Gcp(_) => Duration::ZERO,
            _ => poll_interval,
        }
    }
}

/// Which provider's metadata service answers at `base`, asked all at once with a short
/// timeout; `None` when none does. Used when the Node's providerID names no cloud.
pub async fn probe(http: &reqwest::Client, base: &str, timeout: Duration) -> Option<Provider> {
    let base = base.trim_end_matches('/');
    let answers = |request: reqwest::RequestBuilder| async move {
        request
            .timeout(timeout)
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
    };
    let (aws, azure, gcp) = tokio::join!(
        answers(
            http.put(format!("{base}/latest/api/token"))
                .header("X-aws-ec2-metadata-token-ttl-seconds", "60")
        ),
        answers(
            http.get(format!(
                "{base}/metadata/instance/compute/name?api-version=2021-02-01&format=text"
            ))
            .header("Metadata", "true")
        ),
        answers(
            http.get(format!("{base}/computeMetadata/v1/instance/id"))
                .header("Metadata-Flavor", "Google")
        ),
    );
    let gcp = gcp.filter(|r| {
        r.headers()
            .get("metadata-flavor")
            .and_then(|v| v.to_str().ok())
            == Some("Google")
    });
    match (aws, azure, gcp) {
        (Some(_), None, None) => Some(Provider::Aws),
        (None, Some(_), None) => Some(Provider::Azure),
        (None, None, Some(_)) => Some(Provider::Gcp),
        _ => None,
    }
}

/// The body of a 200 answer; any other status is an error naming `what` and the body.
pub(crate) async fn ok_body(
    response: reqwest::Response,
    what: &str,
    timeout: Duration,
    hint: &'static str,
) -> Result<String, MetadataError> {
    let status = response.status().as_u16();
    let body = response
        .text()
        .await
        .map_err(|e| request_error(what, e, timeout, hint))?;
    if status != 200 {
        return Err(MetadataError::Status {
            what: what.to_owned(),
            status,
            body: snippet(&body),
        });
    }
    Ok(body)
}

/// A UTC time written in `format` (the providers' dates end in a literal `GMT`).
pub(crate) fn parse_utc(format: &str, text: &str) -> Option<Timestamp> {
    let civil = jiff::fmt::strtime::parse(format, text.trim())
        .ok()?
        .to_datetime()
        .ok()?;
    civil
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

pub(crate) fn request_error(
    what: &str,
    error: reqwest::Error,
    after: Duration,
    hint: &'static str,
) -> MetadataError {
    if error.is_timeout() {
        MetadataError::Timeout {
            what: what.to_owned(),
            after,
            hint,
        }
    } else {
        MetadataError::Transport {
            what: what.to_owned(),
            source: error,
        }
    }
}

/// One event the provider currently announces for this instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announced {
    pub kind: NoticeKind,
    /// Stable across polls for the same event.
    pub event_id: String,
    pub notice_time: Timestamp,
    /// When the instance goes away (spot, termination) or the maintenance starts.
    pub deadline: Option<Timestamp>,
}

/// A metadata request that did not yield a usable answer. Never fatal: the path's poller
/// logs it, counts it and polls again one poll interval later.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("{what} timed out after {after:?}{hint}")]
    Timeout {
        what: String,
        after: Duration,
        hint: &'static str,
    },
    #[error("{what} answered HTTP {status}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
    #[error("{what} answered a body that is not {expected}: {detail}")]
    Garbage {
        what: String,
        expected: &'static str,
        detail: String,
    },
    #[error("{what}: {detail}")]
    NotYet { what: String, detail: String },
    #[error(
        "{what} is unreachable: {source}; is the metadata service reachable from this pod (--metadata-url)?"
    )]
    Transport {
        what: String,
        #[source]
        source: reqwest::Error,
    },
}

impl MetadataError {
    /// A low-cardinality label for the error counter.
    pub fn label(&self) -> &'static str {
        match self {
            MetadataError::Timeout { .. } => "timeout",
            MetadataError::Status { status: 401, .. } => "unauthorized",
            MetadataError::Status { status, .. } if *status >= 500 => "server_error",
            MetadataError::Status { .. } => "http_error",
            MetadataError::Garbage { .. } => "garbage",
            MetadataError::NotYet { .. } => "not_yet",
            MetadataError::Transport { .. } => "transport",
        }
    }
}

/// The first 200 characters of an error body, on one line, for a log message.
pub(crate) fn snippet(body: &str) -> String {
    let flat: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    flat.chars().take(200).collect()
}
