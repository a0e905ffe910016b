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
use reclaim_model::Evidence;
use reclaim_model::keys::{CAUSE_ANNOTATION, EVIDENCE_ANNOTATION, RETRYABLE_ANNOTATION};
use reclaim_model::verdict::SPOT_INTERRUPTION_CAUSE;
use reclaim_service::events::{self, Severity};
use serde_json::json;

use crate::owners::{Owner, owners_to_mark, spark_application_resource};

/// An object that carries the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Marked {
    /// `Pod`, `Job`, `SparkApplication`.
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// Marks the objects that outlive the pod (its Job; a Spark executor's driver pod and
/// SparkApplication) when they carry no verdict yet. An owner already marked is left
/// alone, but its own owners are still visited, so a write that failed last time is
/// made on the next pass. Returns every owner that carries the verdict.
pub(crate) async fn mark_owners(
    client: &Client,
    writer: &str,
    namespace: &str,
    owners: &[OwnerReference],
    evidence: &Evidence,
) -> kube::Result<Vec<Marked>> {
    let mut pending = owners_to_mark(owners);
    let mut visited = HashSet::new();
    let mut marked = Vec::new();
    while let Some(owner) = pending.pop() {
        if !visited.insert(owner.clone()) {
            continue;
        }
        match owner {
            Owner::Job(name) => {
                let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
                mark_once(client, writer, &jobs, &(), &name, evidence, &mut marked).await?;
            }
            Owner::DriverPod(name) => {
                let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
                if let Some(driver) =
                    mark_once(client, writer, &pods, &(), &name, evidence, &mut marked).await?
                {
                    pending.extend(owners_to_mark(driver.owner_references()));
                }
            }
            Owner::SparkApplication(name) => {
                let resource = spark_application_resource();
                let apps: Api<DynamicObject> =
                    Api::namespaced_with(client.clone(), namespace, &resource);
                // A cluster without the Spark operator answers 404 for the whole API.
                if mark_once(
                    client,
                    writer,
                    &apps,
                    &resource,
                    &name,
                    evidence,
                    &mut marked,
                )
                .await?
                .is_none()
                {
                    tracing::debug!(application = %format!("{namespace}/{name}"), "no such SparkApplication (or the Spark operator's CRD is not installed); skipped");
                }
            }
        }
    }
    Ok(marked)
}

/// Marks one object unless it is gone or already carries a verdict; returns it as read,
/// and adds it to `marked`.
async fn mark_once<K>(
    client: &Client,
    writer: &str,
    api: &Api<K>,
    dynamic_type: &K::DynamicType,
    name: &str,
    evidence: &Evidence,
    marked: &mut Vec<Marked>,
) -> kube::Result<Option<K>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(object) = api.get_opt(name).await? else {
        return Ok(None);
    };
    let reference = object.object_ref(dynamic_type);
    let kind = reference.kind.clone().unwrap_or_default();
    let namespace = object.namespace().unwrap_or_default();
    if !object.annotations().contains_key(CAUSE_ANNOTATION) {
        mark(api, writer, name, object.resource_version(), evidence).await?;
        tracing::info!(kind, object = %format!("{namespace}/{name}"), signals = %evidence.signals.join(","), "spot-caused failure marked retryable");
        record_event(client, &reference, evidence).await;
    }
    marked.push(Marked {
        kind,
        namespace,
        name: name.to_owned(),
    });
    Ok(Some(object))
}

/// Tells `kubectl describe` readers why the object now carries a verdict.
pub(crate) async fn record_event(
    client: &Client,
    regarding: &k8s_openapi::api::core::v1::ObjectReference,
    evidence: &Evidence,
) {
    let message = format!(
        "failure caused by the {} notice on node {} (signals: {}); marked retryable",
        evidence.notice_kind.as_str(),
        evidence.node,
        evidence.signals.join(", ")
    );
    if let Err(e) = events::record(
        client,
        regarding,
        "reclaim-classifier",
        Severity::Warning,
        "SpotInterruption",
        &message,
    )
    .await
    {
        tracing::warn!(error = %e, "could not record a Kubernetes Event (check RBAC: events create)");
    }
}

/// Writes the verdict, only on the version of the object that was read.
pub(crate) async fn mark<K>(
    api: &Api<K>,
    writer: &str,
    name: &str,
    resource_version: Option<String>,
    evidence: &Evidence,
) -> kube::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({"metadata": {
        "resourceVersion": resource_version,
        "annotations": {
            CAUSE_ANNOTATION: SPOT_INTERRUPTION_CAUSE,
            RETRYABLE_ANNOTATION: "true",
            EVIDENCE_ANNOTATION: serde_json::to_string(evidence).expect("evidence serializes"),
        },
    }});
    // The field manager names the replica that wrote the verdict (visible in managedFields).
    let params = PatchParams {
        field_manager: Some(writer.to_owned()),
        ..PatchParams::default()
    };
    api.patch(name, &params, &Patch::Merge(&patch)).await?;
    Ok(())
}
