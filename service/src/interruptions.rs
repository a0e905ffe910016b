//! Kubernetes access to the `Interruption` records (`interruptions.reclaim.dev`), shared
//! by the agent (which writes them) and the classifier (which completes and deletes
//! them). The record's shape is `reclaim_model::interruption`.
//!
//! Both binaries must keep doing their real job on a cluster where the CRD is not
//! installed: [`crd_missing`] tells that answer apart, and [`report_crd_missing`] says so
//! once per process.

use std::sync::Once;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition, CustomResourceDefinitionNames,
    CustomResourceDefinitionSpec, CustomResourceDefinitionVersion, CustomResourceValidation,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::{Client, core::GroupVersionKind};
use reclaim_model::interruption::{
    GROUP, InterruptionSpec, InterruptionStatus, KIND, PLURAL, VERSION,
};

/// The records, cluster-scoped.
pub fn api(client: &Client) -> Api<DynamicObject> {
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, KIND), PLURAL);
    Api::all_with(client.clone(), &resource)
}

/// The server does not know the resource at all (the CRD is not installed), as opposed
/// to one record being missing (`interruptions.reclaim.dev "name" not found`). An unknown
/// API group answers a plain-text `404 page not found`; a known group without the
/// resource, a Status saying it `could not find the requested resource`.
pub fn crd_missing(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status)
        if status.code == 404
            && (status.message.contains("404 page not found")
                || status.message.contains("could not find the requested resource")))
}

static CRD_MISSING: Once = Once::new();

/// Logs, once per process, that records are not kept and what to do about it.
pub fn report_crd_missing(binary: &str) {
    CRD_MISSING.call_once(|| {
        tracing::warn!(
            "the Interruption CRD (interruptions.reclaim.dev) is not installed, so {binary} keeps no Interruption records; everything else works. Apply manifests/base/crd/interruptions.yaml to keep them"
        )
    });
}

/// The shape of one record, for its schema: the spec the agent writes, and the status the
/// agent and the classifier fill in between them.
#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
struct Interruption {
    spec: InterruptionSpec,
    status: Option<InterruptionStatus>,
}

/// The Interruption CRD (`manifests/base/crd/interruptions.yaml` is this, as YAML; a test
/// fails when they differ, and `RECLAIM_WRITE_CRD=1 cargo test -p reclaim-service` rewrites
/// the file). Its schema is generated from the model's types, doc comments as descriptions,
/// made structural as Kubernetes requires (kube's rewriter). There is no status
/// subresource: the agent and the classifier write their parts of `status` with merge
/// patches of the record itself.
pub fn crd() -> CustomResourceDefinition {
    let generator = schemars::generate::SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(kube::core::schema::StructuralSchemaRewriter)
        .with_transform(kube::core::schema::OptionalEnum)
        .into_generator();
    let mut schema = serde_json::to_value(generator.into_root_schema_for::<Interruption>())
        .expect("a schema serializes");
    if let Some(root) = schema.as_object_mut() {
        root.remove("title");
        root.remove("description");
    }
    let column = |name: &str, type_: &str, path: &str, description: Option<&str>, priority| {
        CustomResourceColumnDefinition {
            name: name.into(),
            type_: type_.into(),
            json_path: path.into(),
            description: description.map(str::to_owned),
            priority,
            format: None,
        }
    };
    CustomResourceDefinition {
        metadata: ObjectMeta {
            name: Some(format!("{PLURAL}.{GROUP}")),
            labels: Some([("app.kubernetes.io/part-of".into(), "reclaim".into())].into()),
            ..ObjectMeta::default()
        },
        spec: CustomResourceDefinitionSpec {
            group: GROUP.into(),
            // Records outlive Nodes, which have no namespace either.
            scope: "Cluster".into(),
            names: CustomResourceDefinitionNames {
                kind: KIND.into(),
                list_kind: Some(format!("{KIND}List")),
                plural: PLURAL.into(),
                singular: Some("interruption".into()),
                short_names: Some(vec!["intr".into()]),
                categories: None,
            },
            versions: vec![CustomResourceDefinitionVersion {
                name: VERSION.into(),
                served: true,
                storage: true,
                additional_printer_columns: Some(vec![
                    column("Node", "string", ".spec.node", None, None),
                    column(
                        "Provider",
                        "string",
                        ".spec.provider",
                        Some("The cloud that announced it, or drill"),
                        None,
                    ),
                    column("Kind", "string", ".spec.kind", None, None),
                    column("Zone", "string", ".spec.placement.zone", None, Some(1)),
                    column(
                        "Type",
                        "string",
                        ".spec.placement.instanceType",
                        Some("The node's instance type"),
                        Some(1),
                    ),
                    column("Phase", "string", ".status.phase", None, None),
                    column(
                        "Pods",
                        "integer",
                        ".status.drain.podsTotal",
                        Some("Pods the drain had to move"),
                        None,
                    ),
                    column(
                        "Late",
                        "string",
                        ".status.drain.latePods",
                        Some("Pods not gone by the deadline"),
                        None,
                    ),
                    column(
                        "Retryable",
                        "integer",
                        ".status.retryable",
                        Some(
                            "Pods, Jobs and SparkApplications the classifier marked spot-caused, retryable",
                        ),
                        None,
                    ),
                    column(
                        "Slack",
                        "number",
                        ".status.drain.slackSeconds",
                        Some("Seconds to spare before the deadline when the node was empty"),
                        Some(1),
                    ),
                    column("Deadline", "date", ".spec.deadline", None, Some(1)),
                    column("Noticed", "date", ".spec.noticeTime", None, None),
                ]),
                schema: Some(CustomResourceValidation {
                    open_api_v3_schema: Some(
                        serde_json::from_value(schema)
                            .expect("a generated schema is a JSONSchemaProps"),
                    ),
                }),
                ..CustomResourceDefinitionVersion::default()
            }],
            ..CustomResourceDefinitionSpec::default()
        },
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../manifests/base/crd/interruptions.yaml"
    );

    /// The header of the shipped file: the YAML below it is generated.
    const HEADER: &str = "\
# Interruption: one record per notice the agent acts on (a cloud's or a drill's), kept after
# the Node is gone. The agent writes the spec and the drain (status.phase, reason, drain);
# the classifier adds what it marked (status.retryable, verdicts) and deletes records older
# than its --interruption-retention (30 days by default).
#
# GENERATED from the model's types by reclaim_service::interruptions::crd(); do not edit:
# change the types, then RECLAIM_WRITE_CRD=1 cargo test -p reclaim-service.
";

    #[test]
    fn the_shipped_crd_is_the_one_generated_from_the_types() {
        let generated = HEADER.to_owned() + &serde_saphyr::to_string(&crd()).expect("YAML");
        if std::env::var_os("RECLAIM_WRITE_CRD").is_some() {
            std::fs::write(SHIPPED, &generated).expect("writing the CRD");
        }
        let shipped = std::fs::read_to_string(SHIPPED).expect("the shipped CRD");
        assert!(
            shipped == generated,
            "{SHIPPED} is not what the model's types generate; run RECLAIM_WRITE_CRD=1 cargo test -p reclaim-service and review the diff"
        );
    }

    #[test]
    fn the_schema_says_what_the_api_server_needs_to_keep_each_field() {
        let crd = serde_json::to_value(crd()).unwrap();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let spec = &schema["properties"]["spec"]["properties"];
        for field in [
            "node",
            "provider",
            "kind",
            "eventId",
            "noticeTime",
            "deadline",
            "detectedAt",
            "placement",
            "nodeAgeSeconds",
            "warningSeconds",
        ] {
            assert!(spec[field].is_object(), "spec.{field} in {spec}");
        }
        assert_eq!(
            spec["provider"]["enum"],
            serde_json::json!(["aws", "azure", "gcp", "drill"])
        );
        assert_eq!(spec["placement"]["properties"]["zone"]["maxLength"], 63);
        let status = &schema["properties"]["status"]["properties"];
        for field in ["phase", "reason", "drain", "retryable", "verdicts"] {
            assert!(status[field].is_object(), "status.{field} in {status}");
        }
        assert_eq!(status["drain"]["properties"]["pods"]["maxItems"], 100);
        assert!(
            !schema.to_string().contains("$ref"),
            "inlined: a CRD schema has no references"
        );
        assert!(!schema.to_string().contains("anyOf"), "structural");
    }
}
