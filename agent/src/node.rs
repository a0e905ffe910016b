//! Changes to the guarded Node that must never lose another controller's work.
//!
//! A Node's taints are one list, and a patch that sends the list replaces it. Every
//! change here is therefore computed from the Node as read, and sent as a merge patch
//! carrying that read's `resourceVersion`: if anyone wrote the Node in between, the
//! server answers 409 Conflict and the change is recomputed from a fresh read.
//!
//! Applying a notice (taint, cordon, load-balancer label, annotation) and undoing it are
//! each one such patch, so a node never carries half of the agent's state.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Taint};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use reclaim_model::Notice;
use reclaim_model::keys::{
    CORDONED_ANNOTATION, EXCLUDE_FROM_LOAD_BALANCERS_LABEL, EXCLUDED_ANNOTATION,
    INTERRUPTION_TAINT, NODE_NOTICE_ANNOTATION, RETIRED_NOTICE_ANNOTATION,
};
use serde_json::{Value, json};

use crate::decision::NodeRecord;

/// How often a conflicting write is retried before giving up; each retry re-reads the Node.
const MAX_ATTEMPTS: u32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum NodeUpdateError {
    #[error("node {0} does not exist; check --node-name / NODE_NAME")]
    NotFound(String),
    #[error(
        "node {node} kept changing under us: {attempts} conflicting writes in a row; will retry on the next poll"
    )]
    Conflicts { node: String, attempts: u32 },
    #[error("updating node {node} failed: {source}")]
    Api {
        node: String,
        #[source]
        source: kube::Error,
    },
}

/// What an update did, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// False when the Node already was as wanted and nothing was written.
    pub changed: bool,
    /// Writes attempted, including those refused with 409.
    pub attempts: u32,
}

/// The taint list with `taint` added, replacing any taint with the same key and effect;
/// `None` when the list already holds it exactly. Other taints are kept as they are.
pub fn with_taint(current: &[Taint], taint: &Taint) -> Option<Vec<Taint>> {
    let same_slot = |t: &Taint| t.key == taint.key && t.effect == taint.effect;
    if current
        .iter()
        .any(|t| same_slot(t) && t.value == taint.value)
    {
        return None;
    }
    let mut taints: Vec<Taint> = current.iter().filter(|t| !same_slot(t)).cloned().collect();
    taints.push(taint.clone());
    Some(taints)
}

/// The taint list without any taint of `key`; `None` when there is none.
pub fn without_taint(current: &[Taint], key: &str) -> Option<Vec<Taint>> {
    if !current.iter().any(|t| t.key == key) {
        return None;
    }
    Some(current.iter().filter(|t| t.key != key).cloned().collect())
}

/// `patch` made valid only against the Node version it was computed from.
fn with_resource_version(read: &Node, mut patch: Value) -> Value {
    patch["metadata"]["resourceVersion"] = json!(read.metadata.resource_version);
    patch
}

/// The merge patch that sets `taints`, valid only against the Node version it was computed from.
pub fn taints_patch(read: &Node, taints: &[Taint]) -> Value {
    with_resource_version(read, json!({"spec": {"taints": taints}}))
}

fn taints_of(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

fn label<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

fn annotation<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// What the node records of the agent's past actions. A notice annotation that does not
/// parse (edited by hand) counts as no notice, and is logged.
pub fn record_of(node: &Node) -> NodeRecord {
    let notice = Notice::of_node(node.annotations()).and_then(|parsed| match parsed {
        Ok(notice) => Some(notice),
        Err(e) => {
            tracing::warn!(error = %e, "ignoring the node's notice annotation; the agent will rewrite it if a notice is announced");
            None
        }
    });
    NodeRecord {
        notice,
        retired_event: annotation(node, RETIRED_NOTICE_ANNOTATION).map(str::to_owned),
    }
}

/// The change that makes `node` carry `notice`: the taint, the cordon and the label that
/// takes the node out of cloud load balancers (each remembered as the agent's doing
/// unless the node already had it) and the notice annotation. `None` when the node
/// already carries all of it.
pub fn apply_notice_patch(node: &Node, notice: &Notice) -> Option<Value> {
    let mut patch = json!({});
    if let Some(taints) = with_taint(taints_of(node), &notice.kind.taint()) {
        patch["spec"]["taints"] = json!(taints);
    }
    let cordoned = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    if !cordoned {
        patch["spec"]["unschedulable"] = json!(true);
        patch["metadata"]["annotations"][CORDONED_ANNOTATION] = json!("true");
    }
    if label(node, EXCLUDE_FROM_LOAD_BALANCERS_LABEL).is_none() {
        patch["metadata"]["labels"][EXCLUDE_FROM_LOAD_BALANCERS_LABEL] = json!("true");
        patch["metadata"]["annotations"][EXCLUDED_ANNOTATION] = json!("true");
    }
    let recorded = Notice::of_node(node.annotations()).and_then(Result::ok);
    if recorded.as_ref() != Some(notice) {
        patch["metadata"]["annotations"][NODE_NOTICE_ANNOTATION] = json!(notice.to_json());
    }
    (patch != json!({})).then_some(patch)
}

/// The change that lifts what the agent did: its taint, its notice annotation, and the
/// cordon and the load-balancer label only if the agent set them. `retire` records an event not to act on again.
pub fn undo_patch(node: &Node, retire: Option<&str>) -> Option<Value> {
    let mut patch = json!({});
    if let Some(taints) = without_taint(taints_of(node), INTERRUPTION_TAINT) {
        patch["spec"]["taints"] = json!(taints);
    }
    if annotation(node, NODE_NOTICE_ANNOTATION).is_some() {
        patch["metadata"]["annotations"][NODE_NOTICE_ANNOTATION] = Value::Null;
    }
    if annotation(node, CORDONED_ANNOTATION) == Some("true") {
        patch["spec"]["unschedulable"] = json!(false);
        patch["metadata"]["annotations"][CORDONED_ANNOTATION] = Value::Null;
    }
    if annotation(node, EXCLUDED_ANNOTATION) == Some("true") {
        patch["metadata"]["labels"][EXCLUDE_FROM_LOAD_BALANCERS_LABEL] = Value::Null;
        patch["metadata"]["annotations"][EXCLUDED_ANNOTATION] = Value::Null;
    }
    if let Some(event) = retire.filter(|e| annotation(node, RETIRED_NOTICE_ANNOTATION) != Some(e)) {
        patch["metadata"]["annotations"][RETIRED_NOTICE_ANNOTATION] = json!(event);
    }
    (patch != json!({})).then_some(patch)
}

/// Adds (or updates the value of) `taint` on `node`, keeping every other taint.
pub async fn ensure_taint(
    nodes: &Api<Node>,
    node: &str,
    taint: &Taint,
) -> Result<Applied, NodeUpdateError> {
    update_node(nodes, node, |read| {
        with_taint(taints_of(read), taint).map(|t| json!({"spec": {"taints": t}}))
    })
    .await
}

/// Removes every taint with `key` from `node`, keeping every other taint.
pub async fn remove_taint(
    nodes: &Api<Node>,
    node: &str,
    key: &str,
) -> Result<Applied, NodeUpdateError> {
    update_node(nodes, node, |read| {
        without_taint(taints_of(read), key).map(|t| json!({"spec": {"taints": t}}))
    })
    .await
}

/// Applies the merge patch `change` computes from the Node as read (`None`: nothing to
/// do), conditioned on that read's resourceVersion; re-reads and recomputes on 409.
pub async fn update_node(
    nodes: &Api<Node>,
    node: &str,
    change: impl Fn(&Node) -> Option<Value>,
) -> Result<Applied, NodeUpdateError> {
    update_node_from(nodes, node, None, change).await
}

/// Like [`update_node`], starting from `known`, the Node as the caller just read it, so
/// the first attempt costs no second read; only a conflict re-reads.
pub async fn update_node_from(
    nodes: &Api<Node>,
    node: &str,
    mut known: Option<Node>,
    change: impl Fn(&Node) -> Option<Value>,
) -> Result<Applied, NodeUpdateError> {
    let api_error = |source| NodeUpdateError::Api {
        node: node.to_owned(),
        source,
    };
    for attempt in 1..=MAX_ATTEMPTS {
        let read = match known.take() {
            Some(read) => read,
            None => nodes
                .get_opt(node)
                .await
                .map_err(api_error)?
                .ok_or_else(|| NodeUpdateError::NotFound(node.to_owned()))?,
        };
        let Some(patch) = change(&read) else {
            return Ok(Applied {
                changed: false,
                attempts: attempt - 1,
            });
        };
        let patch = with_resource_version(&read, patch);
        match nodes
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                return Ok(Applied {
                    changed: true,
                    attempts: attempt,
                });
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                tracing::debug!(node, attempt, "node changed since it was read; re-reading");
                tokio::time::sleep(conflict_backoff(attempt)).await;
            }
            Err(other) => return Err(api_error(other)),
        }
    }
    Err(NodeUpdateError::Conflicts {
        node: node.to_owned(),
        attempts: MAX_ATTEMPTS,
    })
}

/// Short, growing pauses: a conflict means another writer is active right now, and
/// spreading the retries lets both succeed instead of colliding again.
fn conflict_backoff(attempt: u32) -> Duration {
    let jitter = u64::from(std::process::id() % 7) + u64::from(attempt);
    Duration::from_millis(10 * u64::from(attempt) + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, value: &str) -> Taint {
        Taint {
            key: key.into(),
            value: Some(value.into()),
            effect: "NoSchedule".into(),
            time_added: None,
        }
    }

    #[test]
    fn adding_keeps_other_taints_and_replaces_our_own_value() {
        let others = vec![
            taint("node.kubernetes.io/unschedulable", ""),
            taint("reclaim.dev/interruption", "rebalance"),
        ];
        let updated = with_taint(
            &others,
            &taint("reclaim.dev/interruption", "spot-interruption"),
        )
        .unwrap();
        assert_eq!(
            updated,
            vec![
                taint("node.kubernetes.io/unschedulable", ""),
                taint("reclaim.dev/interruption", "spot-interruption")
            ]
        );
    }

    #[test]
    fn adding_a_taint_already_present_changes_nothing() {
        let current = vec![taint("reclaim.dev/interruption", "spot-interruption")];
        assert_eq!(with_taint(&current, &current[0]), None);
    }

    #[test]
    fn removing_keeps_other_taints() {
        let current = vec![
            taint("a", "1"),
            taint("reclaim.dev/interruption", "rebalance"),
            taint("b", "2"),
        ];
        assert_eq!(
            without_taint(&current, "reclaim.dev/interruption").unwrap(),
            vec![taint("a", "1"), taint("b", "2")]
        );
        assert_eq!(
            without_taint(&current[..1], "reclaim.dev/interruption"),
            None
        );
    }

    fn notice() -> Notice {
        Notice {
            provider: reclaim_model::Provider::Aws,
            kind: reclaim_model::NoticeKind::SpotInterruption,
            event_id: "instance-action-1".into(),
            notice_time: "2026-01-01T10:00:00Z".parse().unwrap(),
            deadline: Some("2026-01-01T10:02:00Z".parse().unwrap()),
            detected_at: "2026-01-01T10:00:01Z".parse().unwrap(),
        }
    }

    fn node(labels: serde_json::Value, annotations: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": "n", "resourceVersion": "7", "labels": labels, "annotations": annotations}})).unwrap()
    }

    #[test]
    fn the_load_balancer_label_is_set_with_the_taint_and_removed_only_if_the_agent_set_it() {
        let patch = apply_notice_patch(&node(json!({}), json!({})), &notice()).unwrap();
        assert_eq!(
            patch["metadata"]["labels"][EXCLUDE_FROM_LOAD_BALANCERS_LABEL],
            "true"
        );
        assert_eq!(
            patch["metadata"]["annotations"][EXCLUDED_ANNOTATION],
            "true"
        );
        let theirs = node(
            json!({EXCLUDE_FROM_LOAD_BALANCERS_LABEL: "true"}),
            json!({}),
        );
        let patch = apply_notice_patch(&theirs, &notice()).unwrap();
        assert!(
            patch["metadata"]["labels"].is_null(),
            "someone else's label is left as it is"
        );
        assert!(undo_patch(&theirs, None).is_none(), "and never removed");
        let ours = node(
            json!({EXCLUDE_FROM_LOAD_BALANCERS_LABEL: "true"}),
            json!({EXCLUDED_ANNOTATION: "true"}),
        );
        let undo = undo_patch(&ours, None).unwrap();
        assert!(undo["metadata"]["labels"][EXCLUDE_FROM_LOAD_BALANCERS_LABEL].is_null());
        assert_eq!(
            undo["metadata"]["labels"].as_object().map(|l| l.len()),
            Some(1)
        );
    }
}
