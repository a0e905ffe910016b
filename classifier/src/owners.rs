//! Which objects outlive a failed pod and should carry its verdict too: the owning
//! `batch/v1` Job, and for a Spark executor its driver pod and the driver's
//! `SparkApplication`. Pure, so the owner rules are tested without a server.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::core::{ApiResource, GroupVersionKind};

/// An object that gets the verdict of a pod it owns (directly or through the driver),
/// by name and UID: an object recreated under the owner's name is another object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub kind: OwnerKind,
    pub name: String,
    pub uid: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OwnerKind {
    Job,
    /// A Spark driver: Spark makes the driver pod the owner of its executors.
    DriverPod,
    SparkApplication,
}

pub const SPARK_APPLICATION_GROUP: &str = "sparkoperator.k8s.io";
pub const SPARK_APPLICATION_VERSION: &str = "v1beta2";

/// The Kubeflow Spark operator's `SparkApplication` (`sparkoperator.k8s.io/v1beta2`).
pub fn spark_application_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(
            SPARK_APPLICATION_GROUP,
            SPARK_APPLICATION_VERSION,
            "SparkApplication",
        ),
        "sparkapplications",
    )
}

/// The owners among `references` that should carry the verdict.
pub fn owners_to_mark(references: &[OwnerReference]) -> Vec<Owner> {
    let spark_application = format!("{SPARK_APPLICATION_GROUP}/{SPARK_APPLICATION_VERSION}");
    references
        .iter()
        .filter_map(|r| {
            let kind = match (r.api_version.as_str(), r.kind.as_str()) {
                ("batch/v1", "Job") => OwnerKind::Job,
                ("v1", "Pod") => OwnerKind::DriverPod,
                (version, "SparkApplication") if version == spark_application => {
                    OwnerKind::SparkApplication
                }
                _ => return None,
            };
            Some(Owner {
                kind,
                name: r.name.clone(),
                uid: r.uid.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(api_version: &str, kind: &str, name: &str) -> OwnerReference {
        OwnerReference {
            api_version: api_version.into(),
            kind: kind.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            ..OwnerReference::default()
        }
    }

    #[test]
    fn jobs_drivers_and_spark_applications_are_marked_and_nothing_else() {
        let references = [
            reference("batch/v1", "Job", "nightly"),
            reference("v1", "Pod", "etl-driver"),
            reference("sparkoperator.k8s.io/v1beta2", "SparkApplication", "etl"),
            reference("apps/v1", "ReplicaSet", "web-5d9c"),
            reference("batch/v1beta1", "CronJob", "nightly"),
            reference("sparkoperator.k8s.io/v1beta1", "SparkApplication", "old"),
        ];
        let owner = |kind, name: &str| Owner {
            kind,
            name: name.into(),
            uid: format!("uid-{name}"),
        };
        assert_eq!(
            owners_to_mark(&references),
            [
                owner(OwnerKind::Job, "nightly"),
                owner(OwnerKind::DriverPod, "etl-driver"),
                owner(OwnerKind::SparkApplication, "etl"),
            ]
        );
    }

    #[test]
    fn a_pod_without_owners_has_nothing_else_to_mark() {
        assert!(owners_to_mark(&[]).is_empty());
    }
}
