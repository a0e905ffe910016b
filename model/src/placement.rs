//! Where a node is: zone, region, instance type, capacity type and node pool, read from the
//! well-known labels EKS, AKS, GKE and Karpenter put on Nodes. Recorded with each interruption,
//! so that the records answer "where do reclaims happen?" after the Node is gone.
//!
//! Label values are written by whoever may label Nodes (the kubelet, the cloud's controllers):
//! each is kept only if it is a valid label value (at most 63 characters of letters, digits,
//! `-`, `_`, `.`), so a record never carries an unbounded or odd string.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The node's place; a field the labels do not say is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub zone: Option<String>,
    /// AWS's zone id (`use1-az1`), the same zone in every account, as Spot Placement Scores
    /// name zones (zone names differ between accounts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub zone_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub instance_type: Option<String>,
    /// `spot` or `on-demand`, whatever the cloud's own spelling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub capacity_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub node_pool: Option<String>,
}

/// Labels naming each field, the most specific first (Kubernetes' own, then the clouds').
const ZONE: &[&str] = &[
    "topology.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/zone",
];
const REGION: &[&str] = &[
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/region",
];
const INSTANCE_TYPE: &[&str] = &[
    "node.kubernetes.io/instance-type",
    "beta.kubernetes.io/instance-type",
];
const NODE_POOL: &[&str] = &[
    "karpenter.sh/nodepool",
    "eks.amazonaws.com/nodegroup",
    "kubernetes.azure.com/agentpool",
    "agentpool",
    "cloud.google.com/gke-nodepool",
];

impl Placement {
    /// The placement a Node's `labels` say.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Placement {
        let first = |keys: &[&str]| {
            keys.iter()
                .filter_map(|k| labels.get(*k))
                .find(|v| valid_label_value(v))
                .cloned()
        };
        Placement {
            zone: first(ZONE),
            zone_id: first(&["topology.k8s.aws/zone-id"]),
            region: first(REGION),
            instance_type: first(INSTANCE_TYPE),
            capacity_type: capacity_type(labels),
            node_pool: first(NODE_POOL),
        }
    }

    pub fn is_empty(&self) -> bool {
        self == &Placement::default()
    }
}

/// `spot` or `on-demand`, from Karpenter's, EKS's, AKS's or GKE's label.
fn capacity_type(labels: &BTreeMap<String, String>) -> Option<String> {
    let label = |k: &str| labels.get(k).map(|v| v.to_ascii_lowercase());
    if let Some(v) =
        label("karpenter.sh/capacity-type").or_else(|| label("eks.amazonaws.com/capacityType"))
    {
        return match v.as_str() {
            "spot" => Some("spot".into()),
            "on_demand" | "on-demand" => Some("on-demand".into()),
            _ => None,
        };
    }
    if let Some(v) = label("kubernetes.azure.com/scalesetpriority") {
        return match v.as_str() {
            "spot" => Some("spot".into()),
            "regular" => Some("on-demand".into()),
            _ => None,
        };
    }
    let gke = [
        "cloud.google.com/gke-spot",
        "cloud.google.com/gke-preemptible",
    ];
    if gke.iter().any(|k| label(k).as_deref() == Some("true")) {
        return Some("spot".into());
    }
    None
}

/// A Kubernetes label value: at most 63 of letters, digits, `-`, `_`, `.`, alphanumeric at
/// both ends.
fn valid_label_value(value: &str) -> bool {
    let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    (1..=63).contains(&value.len())
        && ends(value.chars().next())
        && ends(value.chars().last())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn each_clouds_labels_say_where_a_node_is() {
        let eks = labels(&[
            ("topology.kubernetes.io/zone", "us-east-1a"),
            ("topology.k8s.aws/zone-id", "use1-az1"),
            ("topology.kubernetes.io/region", "us-east-1"),
            ("node.kubernetes.io/instance-type", "m5.2xlarge"),
            ("eks.amazonaws.com/capacityType", "SPOT"),
            ("eks.amazonaws.com/nodegroup", "spark-spot"),
        ]);
        assert_eq!(
            Placement::from_labels(&eks),
            Placement {
                zone: Some("us-east-1a".into()),
                zone_id: Some("use1-az1".into()),
                region: Some("us-east-1".into()),
                instance_type: Some("m5.2xlarge".into()),
                capacity_type: Some("spot".into()),
                node_pool: Some("spark-spot".into()),
            }
        );
        let karpenter = labels(&[
            ("karpenter.sh/capacity-type", "on-demand"),
            ("karpenter.sh/nodepool", "default"),
        ]);
        let placed = Placement::from_labels(&karpenter);
        assert_eq!(placed.capacity_type.as_deref(), Some("on-demand"));
        assert_eq!(placed.node_pool.as_deref(), Some("default"));
        let aks = labels(&[
            ("kubernetes.azure.com/scalesetpriority", "spot"),
            ("kubernetes.azure.com/agentpool", "spotpool"),
        ]);
        assert_eq!(
            Placement::from_labels(&aks).capacity_type.as_deref(),
            Some("spot")
        );
        let gke = labels(&[
            ("cloud.google.com/gke-preemptible", "true"),
            ("cloud.google.com/gke-nodepool", "batch"),
        ]);
        assert_eq!(
            Placement::from_labels(&gke).node_pool.as_deref(),
            Some("batch")
        );
        assert!(Placement::from_labels(&labels(&[])).is_empty());
    }

    #[test]
    fn a_value_that_is_no_label_value_is_left_out() {
        let long = "a".repeat(64);
        for bad in ["", "-us-east-1a", "us east", "zone\n", long.as_str()] {
            let placed = Placement::from_labels(&labels(&[("topology.kubernetes.io/zone", bad)]));
            assert_eq!(placed.zone, None, "{bad:?}");
        }
        let unknown = labels(&[("karpenter.sh/capacity-type", "reserved")]);
        assert_eq!(Placement::from_labels(&unknown).capacity_type, None);
    }
}
