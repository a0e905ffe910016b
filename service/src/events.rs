//! Kubernetes Events: what `kubectl describe` shows people about a Node, Pod or Job.
//!
//! Written as core/v1 Events in the object's namespace (`default` for cluster-scoped
//! objects, as the kubelet does for Nodes). The events.k8s.io/v1 API, which kube's
//! Recorder uses, refuses Events about cluster-scoped objects on servers before 1.22
//! ("involvedObject.namespace does not match").

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, ObjectReference};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Normal,
    Warning,
}

/// Records one Event about `regarding`, reported by `component` (`reclaim-agent`, ...).
/// The name is unique per call, so nothing is overwritten.
pub async fn record(
    client: &Client,
    regarding: &ObjectReference,
    component: &str,
    severity: Severity,
    reason: &str,
    message: &str,
) -> kube::Result<()> {
    let now = Timestamp::now();
    let namespace = regarding
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let name = regarding.name.clone().unwrap_or_default();
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": format!("{name}.reclaim.{:x}", now.as_nanosecond()), "namespace": namespace},
        "involvedObject": regarding,
        "reason": reason,
        "message": message,
        "type": match severity { Severity::Normal => "Normal", Severity::Warning => "Warning" },
        "source": {"component": component},
        "reportingComponent": format!("reclaim.dev/{component}"),
        "reportingInstance": name,
        "firstTimestamp": now.to_string(),
        "lastTimestamp": now.to_string(),
        "count": 1,
    });
    let event: Event = serde_json::from_value(event).expect("the Event manifest is well-formed");
    Api::<Event>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &event)
        .await?;
    Ok(())
}
