//! The pods the agent is responsible for: those bound to its node, in every namespace.

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams};

/// Every pod bound to `node`, found by the `spec.nodeName` field selector so the
/// server does the filtering: the agent never lists the whole cluster.
pub async fn pods_on_node(client: &Client, node: &str) -> kube::Result<Vec<Pod>> {
    let params = ListParams::default().fields(&format!("spec.nodeName={node}"));
    Ok(Api::<Pod>::all(client.clone()).list(&params).await?.items)
}
