//! The `Interruption` record: one cluster-scoped custom resource
//! (`interruptions.reclaim.dev`) per notice the agent acts on, so that the story of a
//! reclaim outlives the Node it happened to.
//!
//! The agent writes the spec (the notice and the node) and the drain's progress; the
//! classifier adds what it marked and deletes records past their retention. The two
//! write disjoint fields with merge patches, so neither overwrites the other. The shape
//! is fixed by the CRD in `manifests/base/crd/interruptions.yaml`; the API server prunes
//! any field that is not in it.

use std::collections::BTreeMap;

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Placement, PodInterruption};

pub const GROUP: &str = "reclaim.dev";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "reclaim.dev/v1alpha1";
pub const KIND: &str = "Interruption";
pub const PLURAL: &str = "interruptions";

/// Per-pod entries kept in one record (the late pods first); the counts cover every pod,
/// so a node with hundreds of pods still gets a record of bounded size.
pub const MAX_PODS_LISTED: usize = 100;

/// Marked objects kept in one record; `retryable` counts them all.
pub const MAX_VERDICTS_LISTED: usize = 100;

/// The record's name: the node's name and a hash of the notice's event id and notice
/// time, so that the agent and the classifier find the same record from the same notice
/// without a lookup. The time is part of the identity because some event ids are fixed:
/// GKE recreates a preempted VM under the same name and announces `gce-preempted` again,
/// an Auto Scaling group may reuse a node name with `asg-target-lifecycle-terminated`;
/// by id alone the second interruption would overwrite the first one's record. Node
/// names are DNS subdomains; the result is one too, at most 253 characters.
pub fn record_name(node: &str, event_id: &str, notice_time: Timestamp) -> String {
    let identity = format!("{event_id}@{notice_time}");
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let hash = identity.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let suffix = format!("-{:010x}", hash & 0xff_ffff_ffff);
    let base: String = node.chars().take(253 - suffix.len()).collect();
    format!("{}{suffix}", base.trim_end_matches(['-', '.']))
}

/// Where the interruption stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Tainted and cordoned; no drain (a rebalance recommendation), or not started yet.
    Noticed,
    Draining,
    /// Every drained pod was gone before the deadline.
    Drained,
    /// At least one pod was still on the node at the deadline (see `latePods`).
    DeadlineMissed,
    /// The notice ended or was withdrawn (or the drill annotation removed) and the node
    /// was given back.
    Canceled,
}

/// The record's `spec`: the notice as the agent acted on it, the node, and where the node
/// was and how long it had run (so that the records say where reclaims happen).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InterruptionSpec {
    #[serde(flatten)]
    pub interruption: PodInterruption,
    #[serde(default, skip_serializing_if = "Placement::is_empty")]
    pub placement: Placement,
    /// The node's age when the notice came, in whole seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_age_seconds: Option<i64>,
    /// How long before the deadline the agent saw the notice, in whole seconds (none for
    /// a notice without a deadline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning_seconds: Option<i64>,
}

impl InterruptionSpec {
    /// The record of `interruption`, on a Node labelled `labels` and created at `created`.
    pub fn new(
        interruption: PodInterruption,
        labels: &BTreeMap<String, String>,
        created: Option<Timestamp>,
    ) -> InterruptionSpec {
        let notice = &interruption.notice;
        let seconds = |from: Timestamp, to: Timestamp| to.duration_since(from).as_secs().max(0);
        InterruptionSpec {
            placement: Placement::from_labels(labels),
            node_age_seconds: created.map(|c| seconds(c, notice.notice_time)),
            warning_seconds: notice.deadline.map(|d| seconds(notice.detected_at, d)),
            interruption,
        }
    }
}

/// What the agent writes in `status` (the classifier writes [`ClassifiedStatus`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    pub phase: Phase,
    /// Why the phase is what it is, in a sentence.
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainSummary>,
}

/// The drain, as far as it has got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrainSummary {
    pub started_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// When every pod had to be gone (the cloud's deadline minus the safety margin).
    pub deadline: Timestamp,
    /// Pods the drain had to move.
    pub pods_total: u32,
    /// Of those, the pods seen gone.
    pub pods_gone: u32,
    /// Pods not gone by the deadline.
    pub late: u32,
    /// The late pods by name (`none`, or `ns/a, ns/b, +3 more`), for `kubectl get`.
    pub late_pods: String,
    /// Pods by outcome (`evicted`, `deleted_at_deadline`, `hastened`, `already_gone`, `failed`).
    pub outcomes: BTreeMap<String, u32>,
    /// Seconds to spare when the node became empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack_seconds: Option<f64>,
    /// Up to 100 pods (`MAX_PODS_LISTED`), the late ones first.
    #[schemars(length(max = 100))]
    pub pods: Vec<PodEntry>,
    /// Pods counted but not listed.
    pub pods_omitted: u32,
}

/// One pod's part in the drain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodEntry {
    pub namespace: String,
    pub name: String,
    /// The drain group: `first`, `normal`, `drivers`, `last`.
    pub group: String,
    /// How it left; absent while it is still on its way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// When it was first asked to go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asked_at: Option<Timestamp>,
    /// Evictions its PodDisruptionBudget refused.
    pub budget_refusals: u32,
    /// The grace period it was last given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_seconds: Option<i64>,
    /// When the drain first saw it gone (within a round, about a second, of its going).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gone_at: Option<Timestamp>,
    /// When its deletion was due: the end of its grace period, when the kubelet kills
    /// whatever is left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<Timestamp>,
    /// Seconds between its leaving (seen gone, or due, whichever came first) and the
    /// deadline (negative: late).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack_seconds: Option<f64>,
    /// Not gone, nor due to be, by the deadline.
    pub late: bool,
}

/// The record's `status` as its two writers leave it between them: the agent's part (phase,
/// reason, drain) and the classifier's (what it marked), each written with a merge patch of
/// its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InterruptionStatus {
    #[serde(flatten)]
    pub agent: AgentStatus,
    #[serde(flatten)]
    pub classified: ClassifiedStatus,
}

/// What the classifier writes in `status`: the objects it marked spot-caused, retryable.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClassifiedStatus {
    /// Objects marked, listed or not.
    #[serde(default)]
    pub retryable: u32,
    /// Up to 100 marked objects (`MAX_VERDICTS_LISTED`), by `Kind/namespace/name`.
    #[serde(default)]
    pub verdicts: BTreeMap<String, VerdictEntry>,
}

/// One object the classifier marked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerdictEntry {
    /// `Pod`, `Job` or `SparkApplication`.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The pod that died (`namespace/name`), when the object is its owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    pub signals: Vec<String>,
    pub marked_at: Timestamp,
}

impl VerdictEntry {
    /// The entry's key in [`ClassifiedStatus::verdicts`].
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_dns_subdomain(name: &str) -> bool {
        name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
    }

    #[test]
    fn record_names_are_stable_distinct_and_valid() {
        let node = "ip-10-0-1-17.ec2.internal";
        let t: Timestamp = "2020-04-24T17:09:44Z".parse().unwrap();
        let a = record_name(node, "instance-action-2020-04-24T17:11:44Z", t);
        assert_eq!(
            a,
            record_name(node, "instance-action-2020-04-24T17:11:44Z", t)
        );
        assert_ne!(
            a,
            record_name(node, "instance-action-2020-04-24T17:13:44Z", t)
        );
        // A fixed event id on a VM recreated under the same name: another record.
        let later = t + jiff::SignedDuration::from_hours(3);
        assert_ne!(
            record_name(node, "gce-preempted", t),
            record_name(node, "gce-preempted", later)
        );
        assert!(a.starts_with("ip-10-0-1-17.ec2.internal-"), "{a}");
        assert!(is_dns_subdomain(&a), "{a}");
        let long = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61)
        );
        let named = record_name(&long, "drill-2026-12-01T03:00:00Z", Timestamp::UNIX_EPOCH);
        assert!(named.len() <= 253 && is_dns_subdomain(&named), "{named}");
    }

    #[test]
    fn a_record_says_where_the_node_was_how_old_and_how_much_warning_it_had() {
        let at = |t: &str| t.parse::<Timestamp>().unwrap();
        let notice = crate::Notice {
            provider: crate::Provider::Aws,
            kind: crate::NoticeKind::SpotInterruption,
            event_id: "instance-action".into(),
            notice_time: at("2026-12-07T06:00:00Z"),
            deadline: Some(at("2026-12-07T06:02:00Z")),
            detected_at: at("2026-12-07T06:00:01Z"),
        };
        let labels = [(
            "topology.kubernetes.io/zone".to_owned(),
            "us-east-1a".to_owned(),
        )]
        .into();
        let spec = InterruptionSpec::new(
            notice.for_pod("n1"),
            &labels,
            Some(at("2026-12-07T04:00:00Z")),
        );
        assert_eq!(spec.placement.zone.as_deref(), Some("us-east-1a"));
        assert_eq!(spec.node_age_seconds, Some(7200));
        assert_eq!(spec.warning_seconds, Some(119));
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            json["node"], "n1",
            "the notice and the node stay at the top of spec"
        );
        assert_eq!(json["placement"]["zone"], "us-east-1a");
        // A node created after the notice (a clock skew) is not of negative age.
        let skewed = InterruptionSpec::new(
            notice.for_pod("n1"),
            &labels,
            Some(at("2026-12-07T07:00:00Z")),
        );
        assert_eq!(skewed.node_age_seconds, Some(0));
    }

    #[test]
    fn the_pods_listed_bound_is_the_schemas() {
        // `#[schemars(length(max = 100))]` on `DrainSummary::pods` is a literal.
        assert_eq!(MAX_PODS_LISTED, 100);
    }

    #[test]
    fn phases_serialize_as_the_crd_enum_says() {
        let json = serde_json::to_value([Phase::Noticed, Phase::DeadlineMissed]).unwrap();
        assert_eq!(json, serde_json::json!(["Noticed", "DeadlineMissed"]));
    }
}
