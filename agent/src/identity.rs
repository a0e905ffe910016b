//! The agent checks who it is before it acts. A ServiceAccount token bound to a pod names
//! the node that pod runs on (`authentication.kubernetes.io/node-name` in the user's extra
//! info, Kubernetes 1.32+); an agent whose `--node-name` is another node was misconfigured,
//! or its token was taken elsewhere, and it refuses to act rather than taint and drain a
//! node that is not its own. A token that names no node (a kubeconfig, a token not bound
//! to a pod) is let through: there is nothing to compare, and the server-side policies are
//! what confine such a token.

use kube::Client;
use serde_json::{Value, json};

/// Where the API server puts the node of a pod-bound ServiceAccount token.
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

/// Whether an agent told to guard `node_name` may act with a token naming `token_nodes`.
pub fn check(node_name: &str, token_nodes: &[String]) -> Result<(), String> {
    match token_nodes {
        [] => Ok(()),
        [only] if only == node_name => Ok(()),
        named => Err(format!(
            "--node-name is {node_name:?}, but this agent's ServiceAccount token is bound to a pod on {named:?}: refusing to act on another node (check the DaemonSet's NODE_NAME from spec.nodeName)"
        )),
    }
}

/// The nodes the client's own token names, as the API server reads it (a
/// SelfSubjectReview, which every authenticated user may create).
pub async fn token_nodes(client: &Client) -> kube::Result<Vec<String>> {
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let request = http::Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).expect("a JSON body"))
        .map_err(kube::Error::HttpError)?;
    let review: Value = client.request(request).await?;
    Ok(review["status"]["userInfo"]["extra"][NODE_NAME_EXTRA]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_bound_to_a_pod_on_another_node_is_refused_and_an_unbound_one_passes() {
        assert!(check("node-a", &["node-a".into()]).is_ok());
        assert!(check("node-a", &[]).is_ok(), "a token that names no node");
        let refused = check("node-b", &["node-a".into()]).unwrap_err();
        assert!(
            refused.contains("node-a") && refused.contains("node-b"),
            "{refused}"
        );
        assert!(check("node-a", &["node-a".into(), "node-b".into()]).is_err());
    }
}
