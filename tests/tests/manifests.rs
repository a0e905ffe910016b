//! What we ship is what we test: every overlay of `manifests/` builds and the real API
//! server accepts it (server-side dry run); installed, the agent and the classifier,
//! authenticated with tokens of their own ServiceAccounts and bound by the shipped RBAC and
//! admission policies, do their whole job, and what they must not do, the server refuses
//! (the proofs are in `proof/`, shared with the chart's tests).

mod proof;

use std::sync::OnceLock;

use anyhow::{Context, Result};
use proof::write_temp;
use reclaim_testbed::ControlPlane;
use serde_json::{Value, json};

const OVERLAYS: [&str; 3] = ["aws", "azure", "gcp"];

/// `kubectl kustomize manifests/overlays/<overlay>`, as a user builds it.
fn overlay(name: &str) -> Result<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/overlays/").to_owned() + name;
    ControlPlane::shared().kubectl(&["kustomize", &dir])
}

/// The AWS overlay applied for real, once per test binary (namespace, RBAC, workloads,
/// monitoring), with the CRDs it and the classifier need.
fn installed() -> Result<()> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let cp = ControlPlane::shared();
            let install = || -> Result<()> {
                cp.install_crds("monitoring.yaml")?;
                cp.install_crds("sparkapplications.yaml")?;
                let path = write_temp("reclaim-aws.yaml", &overlay("aws")?)?;
                cp.kubectl(&["apply", "-f", path.to_str().context("path")?])?;
                proof::policies_in_effect()
            };
            install().map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

fn items(list: &Value) -> Vec<&Value> {
    match list["kind"].as_str() {
        Some("List") => list["items"].as_array().into_iter().flatten().collect(),
        _ => vec![list],
    }
}

fn find<'a>(objects: &[&'a Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn every_overlay_builds_and_the_api_server_accepts_every_object() -> Result<()> {
    installed()?;
    let cp = ControlPlane::shared();
    for name in OVERLAYS {
        let path = write_temp(&format!("dry-run-{name}.yaml"), &overlay(name)?)?;
        let answer = cp.kubectl(&[
            "apply",
            "--dry-run=server",
            "-o",
            "json",
            "-f",
            path.to_str().context("path")?,
        ])?;
        let answer: Value = serde_json::from_str(&answer)?;
        let objects = items(&answer);
        let mut kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
        kinds.sort();
        kinds.dedup();
        assert_eq!(
            kinds,
            [
                "ClusterRole",
                "ClusterRoleBinding",
                "ConfigMap",
                "CustomResourceDefinition",
                "DaemonSet",
                "Deployment",
                "Namespace",
                "PodDisruptionBudget",
                "PodMonitor",
                "PrometheusRule",
                "Role",
                "RoleBinding",
                "ServiceAccount",
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding"
            ],
            "{name}"
        );
        assert_eq!(objects.len(), 27, "{name}: every object answered");
        let crd = &find(
            &objects,
            "CustomResourceDefinition",
            "interruptions.reclaim.dev",
        )["spec"];
        assert_eq!(
            crd["scope"], "Cluster",
            "{name}: records outlive Nodes, in no namespace"
        );
        let columns: Vec<&str> = crd["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(
            columns,
            [
                "Node",
                "Provider",
                "Kind",
                "Zone",
                "Type",
                "Phase",
                "Pods",
                "Late",
                "Retryable",
                "Slack",
                "Deadline",
                "Noticed"
            ],
            "{name}: printer columns"
        );

        // What the server would store, read back from its answer.
        let agent = &find(&objects, "DaemonSet", "reclaim-agent")["spec"];
        let pod = &agent["template"]["spec"];
        let container = &pod["containers"][0];
        let provider = container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == "RECLAIM_PROVIDER")
            .map(|e| e["value"].clone());
        assert_eq!(provider, Some(json!(name)), "{name}: provider");
        let env = &container["env"];
        assert_eq!(
            env[4],
            json!({"name": "POD_IP", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}}}),
            "{name}: the pod's IP, for the endpoints"
        );
        assert_eq!(
            env[5],
            json!({"name": "RECLAIM_METRICS_ADDR", "value": "$(POD_IP):9847"}),
            "{name}: the endpoints on the pod's IP only"
        );
        let spot_keys: Vec<&str> = pod["affinity"]["nodeAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["matchExpressions"][0]["key"].as_str())
            .collect();
        let expected: &[&str] = match name {
            "aws" => &[
                "eks.amazonaws.com/capacityType",
                "karpenter.sh/capacity-type",
            ],
            "azure" => &["kubernetes.azure.com/scalesetpriority"],
            _ => &[
                "cloud.google.com/gke-spot",
                "cloud.google.com/gke-preemptible",
            ],
        };
        assert_eq!(spot_keys, expected, "{name}: only that cloud's spot nodes");
        assert_eq!(
            pod["hostNetwork"].as_bool().unwrap_or(false),
            name != "azure",
            "{name}: host network"
        );
        assert_eq!(pod["priorityClassName"], "system-node-critical");
        assert_eq!(pod["tolerations"], json!([{"operator": "Exists"}]));
        assert_eq!(
            agent["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
            1
        );
        for workload in [
            agent,
            &find(&objects, "Deployment", "reclaim-classifier")["spec"],
        ] {
            let pod = &workload["template"]["spec"];
            let container = &pod["containers"][0];
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
            assert_eq!(
                pod["securityContext"]["seccompProfile"]["type"],
                "RuntimeDefault"
            );
            let security = &container["securityContext"];
            assert_eq!(security["readOnlyRootFilesystem"], true);
            assert_eq!(security["allowPrivilegeEscalation"], false);
            assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
            for probe in ["livenessProbe", "readinessProbe"] {
                assert!(container[probe]["httpGet"]["path"].is_string(), "{probe}");
            }
            assert!(container["resources"]["limits"]["memory"].is_string());
            assert!(container["resources"]["requests"]["cpu"].is_string());
        }
        let classifier = &find(&objects, "Deployment", "reclaim-classifier")["spec"];
        assert_eq!(classifier["replicas"], 2);
        // The classifier runs exactly where the agent does not: each spot expression of the
        // agent's terms, negated, in the classifier's one term.
        let negated: Vec<Value> = pod["affinity"]["nodeAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|t| t["matchExpressions"].as_array().into_iter().flatten())
            .map(|e| {
                assert_eq!(e["operator"], "In");
                json!({"key": e["key"], "operator": "NotIn", "values": e["values"]})
            })
            .collect();
        assert_eq!(
            classifier["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                ["nodeSelectorTerms"],
            json!([{"matchExpressions": negated}]),
            "{name}: the classifier off spot nodes"
        );
        assert_eq!(
            find(&objects, "PodDisruptionBudget", "reclaim-classifier")["spec"]["minAvailable"],
            1
        );
    }
    Ok(())
}

#[tokio::test]
async fn the_agent_with_its_own_pod_bound_token_drains_its_node_and_can_do_nothing_else()
-> Result<()> {
    installed()?;
    proof::the_agent_drains_its_node_and_can_do_nothing_else().await
}

#[tokio::test]
async fn the_classifier_with_its_own_service_account_marks_pods_jobs_and_spark_and_nothing_else()
-> Result<()> {
    installed()?;
    proof::the_classifier_marks_pods_jobs_and_spark_and_nothing_else().await
}

#[tokio::test]
async fn only_those_granted_drills_start_or_stop_one() -> Result<()> {
    installed()?;
    proof::only_those_granted_drills_start_or_stop_one().await
}

#[tokio::test]
async fn only_reclaim_writes_the_evidence_it_reads() -> Result<()> {
    installed()?;
    proof::only_reclaim_writes_the_evidence_it_reads().await
}
