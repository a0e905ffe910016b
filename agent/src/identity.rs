//! The agent checks who it is before it acts, twice.
//!
//! - A ServiceAccount token bound to a pod names the node that pod runs on
//!   (`authentication.kubernetes.io/node-name` in the user's extra info, Kubernetes 1.32+);
//!   an agent whose `--node-name` is another node was misconfigured, or its token was taken
//!   elsewhere. A token that names no node (a kubeconfig, a token not bound to a pod) is let
//!   through: there is nothing to compare, and the server-side policies refuse its writes.
//! - The metadata service answers for the instance the agent runs on; the Node named by
//!   `--node-name` says in its providerID which instance it is. When they differ, the
//!   agent would drain one node on another's notices.
//!
//! On a mismatch the agent refuses to act, rather than taint and drain a node that is not
//! its own. When a side cannot say (no providerID, a metadata service that names no
//! instance, a review the server cannot answer), there is nothing to compare and it goes on.

use kube::Client;
use reclaim_model::Provider;
use serde_json::{Value, json};

use crate::imds::azure::vm_name_from_provider_id;

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

/// The instance `provider_id` names, in the form `provider`'s metadata service gives it:
/// AWS `aws:///<zone>/<instance id>`, GCP `gce://<project>/<zone>/<name>`, Azure the VM name
/// [`vm_name_from_provider_id`] derives. `None` for another cloud's or a malformed one.
pub fn instance_in_provider_id(provider: Provider, provider_id: &str) -> Option<String> {
    let last = |prefix: &str| {
        let rest = provider_id.strip_prefix(prefix)?;
        let name = rest.rsplit('/').next()?;
        (!name.is_empty() && rest.contains('/')).then(|| name.to_owned())
    };
    match provider {
        Provider::Aws => last("aws://"),
        Provider::Gcp => last("gce://"),
        Provider::Azure => vm_name_from_provider_id(provider_id),
        Provider::Drill => None,
    }
}

/// Whether the Node `node_name` (with `provider_id`) is the instance the metadata service
/// of `provider` names (`instance`).
pub fn check_instance(
    node_name: &str,
    provider: Provider,
    provider_id: &str,
    instance: Option<&str>,
) -> Result<(), String> {
    match (instance_in_provider_id(provider, provider_id), instance) {
        (Some(named), Some(instance)) if named != instance => Err(format!(
            "--node-name is {node_name:?}, whose providerID {provider_id:?} names instance {named:?}, but this instance's metadata service says it is {instance:?}: refusing to act on another node (check the DaemonSet's NODE_NAME from spec.nodeName)"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_providers_instance_must_be_the_one_the_node_names() {
        let aws = "aws:///us-east-1a/i-0123456789abcdef0";
        assert!(check_instance("n", Provider::Aws, aws, Some("i-0123456789abcdef0")).is_ok());
        let refused =
            check_instance("n", Provider::Aws, aws, Some("i-0fedcba9876543210")).unwrap_err();
        assert!(
            refused.contains("i-0fedcba9876543210") && refused.contains(aws),
            "{refused}"
        );
        assert!(
            check_instance("n", Provider::Aws, aws, None).is_ok(),
            "nothing to compare"
        );
        assert!(
            check_instance("n", Provider::Aws, "", Some("i-1")).is_ok(),
            "no providerID"
        );
        let gce = "gce://project-1/europe-west4-b/gke-spot-pool-7f3a";
        assert!(check_instance("n", Provider::Gcp, gce, Some("gke-spot-pool-7f3a")).is_ok());
        assert!(check_instance("n", Provider::Gcp, gce, Some("gke-spot-pool-0000")).is_err());
        let vmss = "azure:///subscriptions/0000/resourceGroups/mc_rg/providers/Microsoft.Compute/virtualMachineScaleSets/aks-spot-12345678-vmss/virtualMachines/3";
        assert!(
            check_instance("n", Provider::Azure, vmss, Some("aks-spot-12345678-vmss_3")).is_ok()
        );
        assert!(
            check_instance("n", Provider::Azure, vmss, Some("aks-spot-12345678-vmss_4")).is_err()
        );
        // Another cloud's providerID, or a malformed one, names no instance of this one.
        for (provider, id) in [
            (Provider::Gcp, aws),
            (Provider::Aws, "aws://"),
            (Provider::Aws, "aws:///us-east-1a/"),
            (Provider::Gcp, "gce://just-a-name"),
        ] {
            assert_eq!(instance_in_provider_id(provider, id), None, "{id:?}");
        }
    }

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
