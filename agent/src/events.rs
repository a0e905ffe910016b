//! Kubernetes Events on the guarded Node: what `kubectl describe node` shows people.
//!
//! Written as core/v1 Events in `default`, as the kubelet writes Node events. The
//! events.k8s.io/v1 API (used by kube's Recorder) refuses Events about cluster-scoped
//! objects on servers before 1.22 ("involvedObject.namespace does not match").

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, Node};
use kube::api::{Api, PostParams};
use kube::{Client, Resource};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Normal,
    Warning,
}

/// Records one Event about `node`. The name is unique per call, so nothing is overwritten.
pub async fn record(
    client: &Client,
    node: &Node,
    severity: Severity,
    reason: &str,
    message: &str,
) -> kube::Result<()> {
    let now = Timestamp::now();
    let node_name = node.metadata.name.clone().unwrap_or_default();
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": format!("{node_name}.reclaim.{:x}", now.as_nanosecond()), "namespace": "default"},
        "involvedObject": node.object_ref(&()),
        "reason": reason,
        "message": message,
        "type": match severity { Severity::Normal => "Normal", Severity::Warning => "Warning" },
        "source": {"component": "reclaim-agent", "host": node_name},
        "reportingComponent": "reclaim.dev/agent",
        "reportingInstance": node_name,
        "firstTimestamp": now.to_string(),
        "lastTimestamp": now.to_string(),
        "count": 1,
    });
    let event: Event = serde_json::from_value(event).expect("the Event manifest is well-formed");
    Api::<Event>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &event)
        .await?;
    Ok(())
}
