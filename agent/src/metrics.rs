//! Prometheus metrics, with low-cardinality labels only: no pod names, no event ids.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use reclaim_model::{NoticeKind, Placement, Provider};

use jiff::Timestamp;

use crate::drain::{DrainReport, PodOutcome};
use crate::imds::MetadataPath;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NoticeLabels {
    pub provider: String,
    pub kind: String,
    /// The agent's own node's zone and instance type (`unknown` when unlabelled): one
    /// value each per agent, so the cardinality stays that of the fleet's placements.
    pub zone: String,
    pub instance_type: String,
}

/// Where the agent's node is: one series per agent, so that rates can be taken per node.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlacementLabels {
    pub zone: String,
    pub instance_type: String,
}

impl PlacementLabels {
    fn of(placement: &Placement) -> PlacementLabels {
        let known = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
        PlacementLabels {
            zone: known(&placement.zone),
            instance_type: known(&placement.instance_type),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeActionLabels {
    /// `apply` or `undo`.
    pub action: String,
    /// `changed`, `unchanged` or `failed`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MetadataErrorLabels {
    pub provider: String,
    /// The metadata path that failed (`spot/instance-action`, `scheduledevents`, ...).
    pub path: String,
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `list` (the node's pods, once a round), `evict` or `delete`.
    pub request: String,
    /// `ok` (list), `accepted`, `budget_refused`, `throttled`, `multiple_budgets`, `gone`,
    /// `error`, `timeout`.
    pub answer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabels {
    pub path: String,
}

pub struct Metrics {
    registry: Registry,
    notices: Family<NoticeLabels, Counter>,
    node_placement: Family<PlacementLabels, Gauge>,
    node_actions: Family<NodeActionLabels, Counter>,
    evictions: Family<OutcomeLabels, Counter>,
    drain_requests: Family<RequestLabels, Counter>,
    drain_duration: Histogram,
    drain_remaining: Gauge,
    drain_slack: Histogram,
    notice_to_taint: Histogram,
    node_age_at_notice: Histogram,
    last_successful_poll: Gauge<f64, AtomicU64>,
    metadata_errors: Family<MetadataErrorLabels, Counter>,
    metadata_path_up: Family<PathLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("reclaim");
        let notices = Family::<NoticeLabels, Counter>::default();
        registry.register(
            "notices",
            "Interruption notices acted on, by provider, kind, and the node's zone and instance type",
            notices.clone(),
        );
        let node_placement = Family::<PlacementLabels, Gauge>::default();
        registry.register(
            "node_placement",
            "1 for the zone and instance type of the node this agent guards (to count agents per zone)",
            node_placement.clone(),
        );
        let node_actions = Family::<NodeActionLabels, Counter>::default();
        registry.register(
            "node_actions",
            "Node updates (taint, cordon, annotation) by action and outcome",
            node_actions.clone(),
        );
        let evictions = Family::<OutcomeLabels, Counter>::default();
        registry.register("evictions", "Pods drained, by outcome", evictions.clone());
        let drain_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "drain_requests",
            "Requests of the drain (list, evict, delete), by what the server answered",
            drain_requests.clone(),
        );
        let drain_duration =
            Histogram::new([1.0, 5.0, 10.0, 20.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0]);
        registry.register(
            "drain_duration_seconds",
            "Time from drain start until the node was empty or the deadline passed",
            drain_duration.clone(),
        );
        let drain_slack = Histogram::new([0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 90.0]);
        registry.register(
            "drain_slack_seconds",
            "Time to spare before the drain deadline when the node became empty",
            drain_slack.clone(),
        );
        let drain_remaining = Gauge::default();
        registry.register(
            "drain_pods_remaining",
            "Drained pods still on the node when the last drain stopped waiting at its deadline",
            drain_remaining.clone(),
        );
        let notice_to_taint =
            Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0]);
        registry.register(
            "notice_to_taint_seconds",
            "Time from the provider's notice time until the node was tainted",
            notice_to_taint.clone(),
        );
        // From an hour to a month: spot nodes that live minutes are rare, months rarer.
        let node_age_at_notice = Histogram::new([
            3600.0, 21600.0, 43200.0, 86400.0, 172800.0, 604800.0, 2592000.0,
        ]);
        registry.register(
            "node_age_at_notice_seconds",
            "How long the node had run when a notice came (first time per event)",
            node_age_at_notice.clone(),
        );
        let last_successful_poll = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_successful_poll_timestamp_seconds",
            "Unix time by which every metadata path had last answered (the oldest path's last success)",
            last_successful_poll.clone(),
        );
        let metadata_errors = Family::<MetadataErrorLabels, Counter>::default();
        registry.register(
            "metadata_errors",
            "Failed metadata polls, by provider, path and error kind",
            metadata_errors.clone(),
        );
        let metadata_path_up = Family::<PathLabels, Gauge>::default();
        registry.register(
            "metadata_path_up",
            "1 when the latest poll of this metadata path succeeded, 0 when it failed",
            metadata_path_up.clone(),
        );
        Metrics {
            registry,
            notices,
            node_placement,
            node_actions,
            evictions,
            drain_requests,
            drain_duration,
            drain_remaining,
            drain_slack,
            notice_to_taint,
            node_age_at_notice,
            last_successful_poll,
            metadata_errors,
            metadata_path_up,
        }
    }
}

impl reclaim_service::endpoints::Exposition for Metrics {
    /// The text exposition format served on `/metrics`.
    fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String never fails");
        out
    }
}

impl Metrics {
    pub fn notice(&self, provider: Provider, kind: NoticeKind, placement: &Placement) {
        let place = PlacementLabels::of(placement);
        self.notices
            .get_or_create(&NoticeLabels {
                provider: provider.as_str().to_owned(),
                kind: kind.as_str().to_owned(),
                zone: place.zone,
                instance_type: place.instance_type,
            })
            .inc();
    }

    /// The guarded node's placement, as last read (one series: a relabelled node moves it).
    pub fn node_placement(&self, placement: &Placement) {
        let place = PlacementLabels::of(placement);
        if self.node_placement.get(&place).is_none() {
            self.node_placement.clear();
            self.node_placement.get_or_create(&place).set(1);
        }
    }

    pub fn node_action(&self, action: &str, outcome: &str) {
        self.node_actions
            .get_or_create(&NodeActionLabels {
                action: action.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn node_age_at_notice(&self, seconds: i64) {
        self.node_age_at_notice.observe(seconds.max(0) as f64);
    }

    pub fn notice_to_taint(&self, seconds: f64) {
        self.notice_to_taint.observe(seconds.max(0.0));
    }

    /// When every metadata path had last answered.
    pub fn all_paths_answered(&self, at: Timestamp) {
        self.last_successful_poll
            .set(at.as_millisecond() as f64 / 1000.0);
    }

    /// One poll of `path`: `error` is the label of its error, `None` when it answered.
    pub fn path_polled(&self, provider: Provider, path: MetadataPath, error: Option<&str>) {
        self.metadata_path_up
            .get_or_create(&PathLabels {
                path: path.label().to_owned(),
            })
            .set(i64::from(error.is_none()));
        if let Some(error) = error {
            self.metadata_errors
                .get_or_create(&MetadataErrorLabels {
                    provider: provider.as_str().to_owned(),
                    path: path.label().to_owned(),
                    error: error.to_owned(),
                })
                .inc();
        }
    }

    pub fn drained(&self, report: &DrainReport, seconds: f64) {
        for outcome in PodOutcome::ALL {
            let counter = self.evictions.get_or_create(&OutcomeLabels {
                outcome: outcome.label().to_owned(),
            });
            counter.inc_by(report.count(outcome) as u64);
        }
        for (request, answer) in &report.answers {
            self.drain_requests
                .get_or_create(&RequestLabels {
                    request: (*request).to_owned(),
                    answer: (*answer).to_owned(),
                })
                .inc();
        }
        self.drain_duration.observe(seconds);
        self.drain_remaining.set(report.remaining as i64);
        if let Some(slack) = report.slack_seconds {
            self.drain_slack.observe(slack);
        }
    }
}
