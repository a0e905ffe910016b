//! The Eviction API: the only way to remove a pod that respects its PodDisruptionBudget
//! and still runs its preStop hook (the trigger for Spark's decommissioning).
//!
//! Servers older than 1.22 reject an Eviction body labelled `policy/v1` with 400, and
//! newer ones may drop `policy/v1beta1`, so the group version is discovered once, as
//! kubectl does. The body is built here rather than with `kube::Api::evict`, which
//! sends no apiVersion and names the delete options `delete_options`, so a shortened
//! grace period would be silently ignored by the server.

use http::Request;
use kube::Client;
use serde_json::json;

/// The Eviction group version a server serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictionVersion {
    PolicyV1,
    PolicyV1beta1,
}

impl EvictionVersion {
    pub fn api_version(self) -> &'static str {
        match self {
            EvictionVersion::PolicyV1 => "policy/v1",
            EvictionVersion::PolicyV1beta1 => "policy/v1beta1",
        }
    }
}

/// What the server answered to one eviction request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictionOutcome {
    /// 201: the pod is being deleted gracefully (preStop hook, grace period).
    Accepted,
    /// 429: a PodDisruptionBudget forbids the disruption right now; retry later.
    BlockedByBudget,
    /// 404: the pod no longer exists.
    AlreadyGone,
}

#[derive(Debug, thiserror::Error)]
pub enum EvictionError {
    #[error(
        "the server serves no policy group version with evictions (looked for policy/v1 and policy/v1beta1 in {served:?})"
    )]
    NoEvictionGroup { served: Vec<String> },
    #[error("eviction of {namespace}/{name} failed: {source}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("discovering the policy API group failed: {0}")]
    Discovery(#[source] kube::Error),
}

/// Asks the server which `policy` versions it serves and picks the newest with evictions.
pub async fn discover_version(client: &Client) -> Result<EvictionVersion, EvictionError> {
    let group = client
        .list_api_group_resources("policy/v1")
        .await
        .map(|_| EvictionVersion::PolicyV1);
    match group {
        Ok(version) => Ok(version),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            let served = served_policy_versions(client).await?;
            if served.iter().any(|v| v == "policy/v1beta1") {
                Ok(EvictionVersion::PolicyV1beta1)
            } else {
                Err(EvictionError::NoEvictionGroup { served })
            }
        }
        Err(other) => Err(EvictionError::Discovery(other)),
    }
}

async fn served_policy_versions(client: &Client) -> Result<Vec<String>, EvictionError> {
    let groups = client
        .list_api_groups()
        .await
        .map_err(EvictionError::Discovery)?;
    Ok(groups
        .groups
        .into_iter()
        .filter(|g| g.name == "policy")
        .flat_map(|g| g.versions.into_iter().map(|v| v.group_version))
        .collect())
}

/// Requests the eviction of one pod. `grace_period_seconds` overrides the pod's own
/// terminationGracePeriodSeconds (used to fit a deadline); `None` keeps it.
pub async fn evict(
    client: &Client,
    version: EvictionVersion,
    namespace: &str,
    name: &str,
    grace_period_seconds: Option<i64>,
) -> Result<EvictionOutcome, EvictionError> {
    let mut body = json!({
        "apiVersion": version.api_version(),
        "kind": "Eviction",
        "metadata": {"name": name, "namespace": namespace},
    });
    if let Some(grace) = grace_period_seconds {
        body["deleteOptions"] = json!({"gracePeriodSeconds": grace});
    }
    let request = Request::post(format!(
        "/api/v1/namespaces/{namespace}/pods/{name}/eviction"
    ))
    .header(http::header::CONTENT_TYPE, "application/json")
    .body(body.to_string().into_bytes())
    .expect("an eviction request is always well-formed");
    match client.request_text(request).await {
        Ok(_) => Ok(EvictionOutcome::Accepted),
        Err(kube::Error::Api(status)) if status.code == 429 => Ok(EvictionOutcome::BlockedByBudget),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(EvictionOutcome::AlreadyGone),
        Err(source) => Err(EvictionError::Api {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
        }),
    }
}
