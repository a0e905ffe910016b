//! The writer: the verdict on a pod and on the objects that outlive it (its Job, its
//! Spark driver and SparkApplication), each written once and conditioned on the
//! resourceVersion that was read, with one Event on each object marked. What carries the
//! verdict is returned, for the notice's Interruption record ([`crate::record`]), which is
//! written only once every verdict is: a record that cannot be written never holds one up.

use std::collections::HashSet;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DynamicObject;
use kube::{Client, ResourceExt};
use reclaim_model::keys::CAUSE_ANNOTATION;
use reclaim_model::verdict::SPOT_INTERRUPTION_CAUSE;
use reclaim_service::events::{self, Severity};
use serde_json::json;

use crate::latest::{Finding, Recorded, recorded_failure, replaces};
use crate::owners::{Owner, OwnerKind, owners_to_mark, spark_application_resource};

/// An object that carries the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marked {
    /// `Pod`, `Job`, `SparkApplication`.
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// Writes `finding` on the objects that outlive the pod (its Job; a Spark executor's
/// driver pod and SparkApplication), found by name and UID, where it replaces what they
/// carry ([`replaces`]). The owners of an owner are visited whatever it carried, so a
/// write that failed last time is made on the next pass. Returns the owners that carry
/// the finding (for a spot verdict, the notice's record lists them).
pub(crate) async fn mark_owners(
    client: &Client,
    writer: &str,
    namespace: &str,
    owners: &[OwnerReference],
    finding: &Finding,
) -> kube::Result<Vec<Marked>> {
    let mut pending = owners_to_mark(owners);
    let mut visited = HashSet::new();
    let mut marked = Vec::new();
    while let Some(owner) = pending.pop() {
        if !visited.insert(owner.clone()) {
            continue;
        }
        match owner.kind {
            OwnerKind::Job => {
                let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
                mark_once(client, writer, &jobs, &(), &owner, finding, &mut marked).await?;
            }
            OwnerKind::DriverPod => {
                let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
                if let Some(driver) =
                    mark_once(client, writer, &pods, &(), &owner, finding, &mut marked).await?
                {
                    pending.extend(owners_to_mark(driver.owner_references()));
                }
            }
            OwnerKind::SparkApplication => {
                let resource = spark_application_resource();
                let apps: Api<DynamicObject> =
                    Api::namespaced_with(client.clone(), namespace, &resource);
                // A cluster without the Spark operator answers 404 for the whole API.
                if mark_once(
                    client,
                    writer,
                    &apps,
                    &resource,
                    &owner,
                    finding,
                    &mut marked,
                )
                .await?
                .is_none()
                {
                    tracing::debug!(application = %format!("{namespace}/{}", owner.name), "no such SparkApplication (or the Spark operator's CRD is not installed); skipped");
                }
            }
        }
    }
    Ok(marked)
}

/// Writes `finding` on one owner unless it is gone, another object under its name, or
/// carries a verdict `finding` does not replace; returns it as read, and adds it to
/// `marked` when it carries the finding.
async fn mark_once<K>(
    client: &Client,
    writer: &str,
    api: &Api<K>,
    dynamic_type: &K::DynamicType,
    owner: &Owner,
    finding: &Finding,
    marked: &mut Vec<Marked>,
) -> kube::Result<Option<K>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = owner.name.as_str();
    let Some(object) = api.get_opt(name).await? else {
        return Ok(None);
    };
    let namespace = object.namespace().unwrap_or_default();
    if object.uid().as_deref() != Some(owner.uid.as_str()) {
        tracing::info!(object = %reclaim_model::namespaced_name(&namespace, name), "the owner was replaced by another object of the same name; not marked");
        return Ok(None);
    }
    let reference = object.object_ref(dynamic_type);
    let kind = reference.kind.clone().unwrap_or_default();
    let recorded = recorded_failure(object.annotations());
    let write = replaces(recorded, finding);
    if write {
        mark(api, writer, name, object.resource_version(), finding).await?;
        log_marked(
            &kind,
            &reclaim_model::namespaced_name(&namespace, name),
            finding,
            recorded,
        );
        record_event(client, &reference, finding).await;
    }
    let carries_spot = write
        || object
            .annotations()
            .get(CAUSE_ANNOTATION)
            .map(String::as_str)
            == Some(SPOT_INTERRUPTION_CAUSE);
    if matches!(finding, Finding::Spot(_)) && carries_spot {
        marked.push(Marked {
            kind,
            namespace,
            name: name.to_owned(),
        });
    }
    Ok(Some(object))
}

/// One line per object written.
pub(crate) fn log_marked(kind: &str, object: &str, finding: &Finding, recorded: Option<Recorded>) {
    match finding {
        Finding::Spot(evidence) => {
            tracing::info!(kind, object, signals = %evidence.signals.join(","), "spot-caused failure marked retryable")
        }
        Finding::Own(own) => {
            tracing::info!(kind, object, pod = %own.pod, why = %own.why, earlier = ?recorded.map(|r| r.at), "a later failure was the job's own: the earlier spot-caused verdict replaced, no longer retryable")
        }
    }
}

/// Tells `kubectl describe` readers why the object now carries a verdict.
pub(crate) async fn record_event(
    client: &Client,
    regarding: &k8s_openapi::api::core::v1::ObjectReference,
    finding: &Finding,
) {
    let (reason, message) = match finding {
        Finding::Spot(evidence) => (
            "SpotInterruption",
            format!(
                "failure caused by the {} notice on node {} (signals: {}); marked retryable",
                evidence.notice_kind.as_str(),
                evidence.node,
                evidence.signals.join(", ")
            ),
        ),
        Finding::Own(own) => (
            "OwnFailure",
            format!(
                "a later failure of pod {} was its own ({}); the earlier spot-caused verdict no longer holds: not retryable",
                own.pod, own.why
            ),
        ),
    };
    if let Err(e) = events::record(
        client,
        regarding,
        "reclaim-classifier",
        Severity::Warning,
        reason,
        &message,
    )
    .await
    {
        tracing::warn!(error = %e, "could not record a Kubernetes Event (check RBAC: events create)");
    }
}

/// Writes the finding, only on the version of the object that was read.
pub(crate) async fn mark<K>(
    api: &Api<K>,
    writer: &str,
    name: &str,
    resource_version: Option<String>,
    finding: &Finding,
) -> kube::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let annotations: serde_json::Map<String, serde_json::Value> = finding
        .annotations()
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.into()))
        .collect();
    let patch = json!({"metadata": {
        "resourceVersion": resource_version,
        "annotations": annotations,
    }});
    // The field manager names the replica that wrote the verdict (visible in managedFields).
    let params = PatchParams {
        field_manager: Some(writer.to_owned()),
        ..PatchParams::default()
    };
    api.patch(name, &params, &Patch::Merge(&patch)).await?;
    Ok(())
}
