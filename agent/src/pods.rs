//! The pods the agent is responsible for: those bound to its node, in every namespace,
//! and the interruption records it leaves on them.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use reclaim_model::keys::{INTERRUPTED_LABEL, POD_INTERRUPTION_ANNOTATION};
use serde_json::{Value, json};

/// Every pod bound to `node`, found by the `spec.nodeName` field selector so the
/// server does the filtering: the agent never lists the whole cluster. Served from the
/// API server's watch cache (`resourceVersion=0`), not a quorum read from etcd: a list a
/// moment stale is harmless to a drain that lists again each round (a pod already gone
/// answers 404 to its eviction; a pod just bound is found next round).
pub async fn pods_on_node(client: &Client, node: &str) -> kube::Result<Vec<Pod>> {
    let params = ListParams::default()
        .fields(&format!("spec.nodeName={node}"))
        .match_any();
    Ok(Api::<Pod>::all(client.clone()).list(&params).await?.items)
}

/// Removes the agent's interruption record (annotation and label) from the pods on
/// `node` that survived a notice now undone, so that no later, unrelated failure of
/// theirs can be read as spot-caused. Pods that finished or are terminating keep it:
/// they were ended by that notice. Returns how many pods were cleared.
pub async fn clear_interruption_records(client: &Client, node: &str) -> kube::Result<usize> {
    let params = ListParams::default()
        .fields(&format!("spec.nodeName={node}"))
        .labels(INTERRUPTED_LABEL);
    let marked = Api::<Pod>::all(client.clone()).list(&params).await?.items;
    let mut cleared = 0;
    for pod in marked.iter().filter(|p| survived(p)) {
        let pods = Api::<Pod>::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        match pods
            .patch(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(clear_patch(pod)),
            )
            .await
        {
            Ok(_) => cleared += 1,
            // Gone since the list: nothing is left behind on it.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(cleared)
}

/// Still running (or yet to run) and not on its way out.
fn survived(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// The merge patch that drops the record, valid only for the pod as listed (its UID and
/// resourceVersion): a pod replaced or changed since answers 409/422 and is judged again
/// from a fresh list on the next try.
fn clear_patch(pod: &Pod) -> Value {
    json!({"metadata": {
        "uid": pod.metadata.uid,
        "resourceVersion": pod.metadata.resource_version,
        "annotations": {POD_INTERRUPTION_ANNOTATION: Value::Null},
        "labels": {INTERRUPTED_LABEL: Value::Null},
    }})
}
