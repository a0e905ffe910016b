//! The notice record: what the cloud announced, as written on Nodes and Pods.

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::keys::{INTERRUPTION_TAINT, INTERRUPTION_TAINT_EFFECT};

/// The cloud whose metadata service announced the interruption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Aws,
    Azure,
    Gcp,
    /// A rehearsal started with the node annotation `reclaim.dev/drill`: no cloud is
    /// involved, and everything written about it says so.
    Drill,
}

impl Provider {
    /// The name written in notices and metric labels (`aws`, `azure`, `gcp`, `drill`).
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Aws => "aws",
            Provider::Azure => "azure",
            Provider::Gcp => "gcp",
            Provider::Drill => "drill",
        }
    }
}

/// What kind of interruption is coming; also the value of the interruption taint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NoticeKind {
    /// The spot/preemptible instance is being reclaimed at the deadline.
    SpotInterruption,
    /// Elevated risk of reclaim (AWS rebalance recommendation); no deadline.
    Rebalance,
    /// Host maintenance, reboot or retirement scheduled by the provider.
    ScheduledMaintenance,
    /// The autoscaling group is terminating the instance.
    AsgTermination,
}

impl NoticeKind {
    pub const ALL: [NoticeKind; 4] = [
        NoticeKind::SpotInterruption,
        NoticeKind::Rebalance,
        NoticeKind::ScheduledMaintenance,
        NoticeKind::AsgTermination,
    ];

    /// The label used in taint values, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::SpotInterruption => "spot-interruption",
            NoticeKind::Rebalance => "rebalance",
            NoticeKind::ScheduledMaintenance => "scheduled-maintenance",
            NoticeKind::AsgTermination => "asg-termination",
        }
    }

    pub fn from_taint_value(value: &str) -> Option<NoticeKind> {
        NoticeKind::ALL.into_iter().find(|k| k.as_str() == value)
    }

    /// The taint announcing this kind of notice on a node.
    pub fn taint(self) -> k8s_openapi::api::core::v1::Taint {
        k8s_openapi::api::core::v1::Taint {
            key: INTERRUPTION_TAINT.to_owned(),
            value: Some(self.as_str().to_owned()),
            effect: INTERRUPTION_TAINT_EFFECT.to_owned(),
            time_added: None,
        }
    }
}

/// An interruption notice, as stored in the node annotation `reclaim.dev/notice`.
///
/// Times serialize as RFC 3339; `deadline` is omitted when the notice has none
/// (a rebalance recommendation, for instance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    pub provider: Provider,
    pub kind: NoticeKind,
    /// The provider's identifier of the event, stable across polls.
    pub event_id: String,
    /// When the provider issued the notice.
    pub notice_time: Timestamp,
    /// When the instance goes away, as announced by the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    /// When the agent first saw the notice.
    pub detected_at: Timestamp,
}

/// The pod annotation `reclaim.dev/interruption`: the node's notice plus the node's name,
/// so a pod read after its node is gone still says where and why it was interrupted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodInterruption {
    #[serde(flatten)]
    pub notice: Notice,
    pub node: String,
}

/// A notice annotation that does not parse; the message says which key and why.
#[derive(Debug, thiserror::Error)]
#[error("annotation {key} is not a valid Reclaim record: {source}")]
pub struct BadRecord {
    pub key: &'static str,
    #[source]
    pub source: serde_json::Error,
}

impl Notice {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a Notice always serializes")
    }

    pub fn from_json(text: &str) -> Result<Notice, BadRecord> {
        serde_json::from_str(text).map_err(|source| BadRecord {
            key: crate::keys::NODE_NOTICE_ANNOTATION,
            source,
        })
    }

    /// The notice a Node's `annotations` carry (`reclaim.dev/notice`), parsed; `None` when
    /// it carries none. The one reader of that annotation, for the agent and the classifier.
    pub fn of_node(
        annotations: &std::collections::BTreeMap<String, String>,
    ) -> Option<Result<Notice, BadRecord>> {
        annotations
            .get(crate::keys::NODE_NOTICE_ANNOTATION)
            .map(|text| Notice::from_json(text))
    }

    /// The record written on a pod of `node` before it is evicted.
    pub fn for_pod(&self, node: &str) -> PodInterruption {
        PodInterruption {
            notice: self.clone(),
            node: node.to_owned(),
        }
    }
}

impl PodInterruption {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a PodInterruption always serializes")
    }

    pub fn from_json(text: &str) -> Result<PodInterruption, BadRecord> {
        serde_json::from_str(text).map_err(|source| BadRecord {
            key: crate::keys::POD_INTERRUPTION_ANNOTATION,
            source,
        })
    }

    /// The merge patch that marks a pod: the record as an annotation, and the notice kind
    /// as a label.
    pub fn pod_metadata_patch(&self) -> serde_json::Value {
        serde_json::json!({"metadata": {
            "labels": {crate::keys::INTERRUPTED_LABEL: self.notice.kind.as_str()},
            "annotations": {crate::keys::POD_INTERRUPTION_ANNOTATION: self.to_json()},
        }})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spot_notice() -> Notice {
        Notice {
            provider: Provider::Aws,
            kind: NoticeKind::SpotInterruption,
            event_id: "instance-action-2020-04-24T17:11:44Z".into(),
            notice_time: "2020-04-24T17:09:44Z".parse().unwrap(),
            deadline: Some("2020-04-24T17:11:44Z".parse().unwrap()),
            detected_at: "2020-04-24T17:09:44.512Z".parse().unwrap(),
        }
    }

    #[test]
    fn notice_json_uses_the_documented_field_names_and_rfc3339() {
        let json: serde_json::Value = serde_json::from_str(&spot_notice().to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "provider": "aws",
                "kind": "spot-interruption",
                "eventId": "instance-action-2020-04-24T17:11:44Z",
                "noticeTime": "2020-04-24T17:09:44Z",
                "deadline": "2020-04-24T17:11:44Z",
                "detectedAt": "2020-04-24T17:09:44.512Z",
            })
        );
    }

    #[test]
    fn notice_without_deadline_omits_the_field_and_round_trips() {
        let notice = Notice {
            kind: NoticeKind::Rebalance,
            deadline: None,
            ..spot_notice()
        };
        let text = notice.to_json();
        assert!(!text.contains("deadline"), "{text}");
        assert_eq!(Notice::from_json(&text).unwrap(), notice);
    }

    #[test]
    fn pod_record_is_the_notice_plus_the_node() {
        let record = spot_notice().for_pod("ip-10-0-1-17.ec2.internal");
        let json: serde_json::Value = serde_json::from_str(&record.to_json()).unwrap();
        assert_eq!(json["node"], "ip-10-0-1-17.ec2.internal");
        assert_eq!(json["kind"], "spot-interruption");
        assert_eq!(
            PodInterruption::from_json(&record.to_json()).unwrap(),
            record
        );
    }

    #[test]
    fn garbage_names_the_annotation_it_came_from() {
        let err = PodInterruption::from_json("{\"kind\":\"meteor\"}").unwrap_err();
        assert!(
            err.to_string().contains("reclaim.dev/interruption"),
            "{err}"
        );
    }

    #[test]
    fn a_nodes_notice_is_read_from_its_annotation_or_says_why_not() {
        let mut annotations = std::collections::BTreeMap::new();
        assert!(
            Notice::of_node(&annotations).is_none(),
            "no annotation, no notice"
        );
        annotations.insert(
            crate::keys::NODE_NOTICE_ANNOTATION.to_owned(),
            "{}".to_owned(),
        );
        let bad = Notice::of_node(&annotations).unwrap().unwrap_err();
        assert!(bad.to_string().contains("reclaim.dev/notice"), "{bad}");
        let notice = Notice {
            provider: Provider::Gcp,
            kind: NoticeKind::SpotInterruption,
            event_id: "gce-preempted".into(),
            notice_time: Timestamp::UNIX_EPOCH,
            deadline: None,
            detected_at: Timestamp::UNIX_EPOCH,
        };
        annotations.insert(
            crate::keys::NODE_NOTICE_ANNOTATION.to_owned(),
            notice.to_json(),
        );
        assert_eq!(Notice::of_node(&annotations).unwrap().unwrap(), notice);
    }

    #[test]
    fn taint_value_is_the_kind_and_parses_back() {
        for kind in NoticeKind::ALL {
            let taint = kind.taint();
            assert_eq!(taint.key, "reclaim.dev/interruption");
            assert_eq!(taint.effect, "NoSchedule");
            assert_eq!(
                NoticeKind::from_taint_value(taint.value.as_deref().unwrap()),
                Some(kind)
            );
        }
        assert_eq!(NoticeKind::from_taint_value("spot"), None);
    }
}
