//! The Helm chart (`charts/reclaim`), tested with the real helm (built by
//! `scripts/control-plane`) on the real API server: `helm lint --strict`; a render per cloud
//! equal, object by object, to what that cloud's Kustomize overlay installs; the values schema
//! refusing a misspelt or mistyped value; `helm install` (the server's dry run, then for
//! real), the proofs of `proof/` with the objects the chart installed, `helm upgrade` keeping
//! the CRD and the records, `helm uninstall` leaving them.

mod proof;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use kube::ResourceExt;
use kube::api::{ListParams, PostParams};
use proof::{NAMESPACE, write_temp};
use reclaim_testbed::ControlPlane;
use serde_json::{Value, json};

const CLOUDS: [&str; 3] = ["aws", "azure", "gcp"];
const RELEASE: &str = "reclaim";

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

fn chart() -> String {
    repo("charts/reclaim").display().to_string()
}

/// Runs the real helm against the shared control plane; its stdout, or an error with its
/// stderr. Helm's caches and settings stay in the control plane's directory.
fn helm(args: &[&str]) -> Result<String> {
    let cp = ControlPlane::shared();
    let home = cp.dir.join("helm");
    let output =
        std::process::Command::new(reclaim_testbed::control_plane::binaries_dir()?.join("helm"))
            .args(args)
            .env("KUBECONFIG", &cp.kubeconfig)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .output()
            .context("running helm (run `scripts/control-plane provision`)")?;
    if !output.status.success() {
        bail!(
            "helm {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// The objects of a multi-document YAML text, as JSON (kubectl reads it, as a user's does).
fn objects(name: &str, yaml: &str) -> Result<Vec<Value>> {
    let path = write_temp(name, yaml)?;
    let json = ControlPlane::shared().kubectl(&[
        "create",
        "--dry-run=client",
        "-o",
        "json",
        "-f",
        path.to_str().context("path")?,
    ])?;
    // One JSON document per object, one after the other.
    let mut objects = Vec::new();
    for object in serde_json::Deserializer::from_str(&json).into_iter::<Value>() {
        let object = object?;
        match object["kind"].as_str() {
            Some("List") => objects.extend(object["items"].as_array().cloned().unwrap_or_default()),
            _ => objects.push(object),
        }
    }
    Ok(objects)
}

/// Labels Helm adds that Kustomize does not: who manages the object, not what it is.
const HELM_LABELS: [&str; 4] = [
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "helm.sh/chart",
];

/// Objects by `Kind namespace/name`, without Helm's own labels.
fn by_key(objects: Vec<Value>) -> BTreeMap<String, Value> {
    objects
        .into_iter()
        .map(|mut o| {
            if let Some(labels) = o["metadata"]["labels"].as_object_mut() {
                for label in HELM_LABELS {
                    labels.remove(label);
                }
            }
            let key = format!(
                "{} {}/{}",
                o["kind"].as_str().unwrap_or("?"),
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap_or("?")
            );
            (key, o)
        })
        .collect()
}

fn template(cloud: &str, extra: &[&str]) -> Result<String> {
    let chart = chart();
    let cloud = format!("cloud={cloud}");
    let mut args = vec![
        "template",
        RELEASE,
        &chart,
        "--namespace",
        NAMESPACE,
        "--include-crds",
        "--set",
        &cloud,
    ];
    args.extend_from_slice(extra);
    helm(&args)
}

/// The CRDs the chart's optional objects and the classifier's proofs need, installed once
/// per test binary (two `kubectl apply`s of one file at once race to create).
fn crds() -> Result<()> {
    static INSTALLED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let cp = ControlPlane::shared();
            cp.install_crds("monitoring.yaml")
                .and_then(|()| cp.install_crds("sparkapplications.yaml"))
                .map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

#[test]
fn the_chart_lints_and_renders_per_cloud_exactly_what_the_overlay_installs() -> Result<()> {
    crds()?;
    let cp = ControlPlane::shared();
    for cloud in CLOUDS {
        helm(&[
            "lint",
            "--strict",
            &chart(),
            "--set",
            &format!("cloud={cloud}"),
        ])?;
        let chart = by_key(objects(
            &format!("chart-{cloud}.yaml"),
            &template(cloud, &[])?,
        )?);
        let overlay_dir = repo(&format!("manifests/overlays/{cloud}"));
        let overlay = cp.kubectl(&["kustomize", overlay_dir.to_str().context("path")?])?;
        let mut overlay = by_key(objects(&format!("overlay-{cloud}.yaml"), &overlay)?);
        // Helm installs into a namespace it is given (--create-namespace); Kustomize creates it.
        assert!(overlay.remove(&format!("Namespace /{NAMESPACE}")).is_some());
        assert_eq!(
            chart.keys().collect::<Vec<_>>(),
            overlay.keys().collect::<Vec<_>>(),
            "{cloud}: the same objects"
        );
        for (key, object) in &chart {
            assert!(
                object == &overlay[key],
                "{cloud}: {key} differs:\nchart:   {}\noverlay: {}",
                serde_json::to_string_pretty(object)?,
                serde_json::to_string_pretty(&overlay[key])?
            );
        }
    }
    Ok(())
}

#[test]
fn values_set_flags_and_a_misspelt_or_mistyped_value_is_refused_with_its_name() -> Result<()> {
    let rendered = template(
        "gcp",
        &[
            "--set",
            "agent.flags.pollInterval=2s",
            "--set",
            "agent.flags.dryRun=true",
            "--set",
            "agent.flags.disableDrills=false",
            "--set",
            "classifier.flags.interruptionRetention=7d",
            "--set",
            "image.tag=0.1.0-rc1",
            "--set",
            "commonLabels.team=data",
            "--set",
            "policies.enabled=false",
            "--set",
            "monitoring.prometheusRule=false",
        ],
    )?;
    let objects = by_key(objects("chart-values.yaml", &rendered)?);
    let agent = &objects[&format!("DaemonSet {NAMESPACE}/reclaim-agent")]["spec"]["template"]["spec"]
        ["containers"][0];
    assert_eq!(
        agent["args"],
        json!(["--dry-run", "--log-format=json", "--poll-interval=2s"]),
        "flags as arguments, false ones left out"
    );
    assert_eq!(agent["image"], "ghcr.io/reclaim-dev/reclaim:0.1.0-rc1");
    let classifier = &objects[&format!("Deployment {NAMESPACE}/reclaim-classifier")]["spec"]["template"]
        ["spec"]["containers"][0];
    assert_eq!(
        classifier["args"],
        json!(["--interruption-retention=7d", "--log-format=json"])
    );
    // Helm installs the CRD of crds/ as it is, untemplated.
    assert!(
        objects
            .iter()
            .filter(|(k, _)| !k.starts_with("CustomResourceDefinition"))
            .all(|(_, o)| o["metadata"]["labels"]["team"] == "data"),
        "commonLabels on every templated object"
    );
    assert!(
        !objects
            .keys()
            .any(|k| k.starts_with("ValidatingAdmissionPolicy")),
        "policies off"
    );
    assert!(
        !objects.keys().any(|k| k.starts_with("PrometheusRule")),
        "PrometheusRule off"
    );

    for (value, named) in [
        ("agent.flags.pollIntervall=2s", "pollIntervall"),
        ("agent.flags.pollInterval=soon", "pollInterval"),
        ("classifier.replicas=two", "replicas"),
        ("cloud=oracle", "cloud"),
        ("monitoring.grafana=true", "grafana"),
    ] {
        let refused = template("aws", &["--set", value])
            .expect_err(value)
            .to_string();
        assert!(
            refused.contains("values don't meet the specifications of the schema")
                && refused.contains(named),
            "{value}: {refused}"
        );
    }
    Ok(())
}

/// The names of the Interruption records, in the server's order.
async fn record_names(records: &kube::Api<kube::core::DynamicObject>) -> Result<Vec<String>> {
    Ok(records
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|r| r.name_any())
        .collect())
}

/// The chart as a package of `version`, in the control plane's directory.
fn package(version: &str) -> Result<String> {
    let dir = ControlPlane::shared().dir.join(format!("chart-{version}"));
    helm(&[
        "package",
        &chart(),
        "--version",
        version,
        "--app-version",
        version,
        "--destination",
        dir.to_str().context("path")?,
    ])?;
    Ok(dir
        .join(format!("reclaim-{version}.tgz"))
        .display()
        .to_string())
}

#[tokio::test]
async fn installed_with_helm_the_chart_passes_every_proof_upgrades_and_uninstalls_leaving_the_records()
-> Result<()> {
    crds()?;
    let cp = ControlPlane::shared();
    let admin = cp.admin_client().await?;
    // The server's dry run first (admission and schema, nothing stored), then for real.
    let first = package("0.1.0")?;
    let install = |dry: bool| {
        let mut args = vec![
            "install",
            RELEASE,
            &first,
            "--namespace",
            NAMESPACE,
            "--create-namespace",
        ];
        if dry {
            args.push("--dry-run=server");
        }
        helm(&args)
    };
    install(true)?;
    let daemonsets: kube::Api<k8s_openapi::api::apps::v1::DaemonSet> =
        kube::Api::namespaced(admin.clone(), NAMESPACE);
    assert!(
        daemonsets.get_opt("reclaim-agent").await?.is_none(),
        "a dry run stores nothing"
    );
    install(false)?;
    proof::policies_in_effect()?;

    // What the chart installed lets each identity do its job, and nothing more.
    proof::the_agent_drains_its_node_and_can_do_nothing_else().await?;
    proof::the_classifier_marks_pods_jobs_and_spark_and_nothing_else().await?;
    proof::only_those_granted_drills_start_or_stop_one().await?;
    proof::only_reclaim_writes_the_evidence_it_reads().await?;

    // Upgrade to the next version: the CRD stays (the same object), the records too.
    let crds: kube::Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        kube::Api::all(admin.clone());
    let crd = crds.get("interruptions.reclaim.dev").await?;
    let records = reclaim_service::interruptions::api(&admin);
    let notice = reclaim_testbed::clouds::aws_spot_notice();
    let record = serde_json::from_value(json!({
        "apiVersion": reclaim_model::interruption::API_VERSION,
        "kind": reclaim_model::interruption::KIND,
        "metadata": {"name": "before-the-upgrade"}, "spec": notice.for_pod("spot-gone"),
    }))?;
    records.create(&PostParams::default(), &record).await?;
    let before = record_names(&records).await?;
    let next = package("0.1.1")?;
    helm(&["upgrade", RELEASE, &next, "--namespace", NAMESPACE])?;
    let releases: Value =
        serde_json::from_str(&helm(&["list", "--namespace", NAMESPACE, "-o", "json"])?)?;
    let release = &releases[0];
    assert_eq!(release["chart"], "reclaim-0.1.1", "{releases}");
    assert_eq!(
        release["revision"].to_string().trim_matches('"'),
        "2",
        "{releases}"
    );
    let agent = daemonsets.get("reclaim-agent").await?;
    assert_eq!(
        agent
            .spec
            .and_then(|s| s.template.spec)
            .map(|s| s.containers[0].image.clone()),
        Some(Some("ghcr.io/reclaim-dev/reclaim:0.1.1".into())),
        "the new version's image"
    );
    assert_eq!(
        crds.get("interruptions.reclaim.dev").await?.uid(),
        crd.uid(),
        "the same CRD"
    );
    let after = record_names(&records).await?;
    assert_eq!(after, before, "every record kept");

    // Uninstall: the workloads, roles and policies go; the CRD and the records stay.
    helm(&["uninstall", RELEASE, "--namespace", NAMESPACE, "--wait"])?;
    assert!(daemonsets.get_opt("reclaim-agent").await?.is_none());
    let policies: kube::Api<
        k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy,
    > = kube::Api::all(admin.clone());
    assert!(policies.get_opt("reclaim-agent-own-node").await?.is_none());
    assert_eq!(
        crds.get("interruptions.reclaim.dev").await?.uid(),
        crd.uid()
    );
    let left = record_names(&records).await?;
    assert_eq!(left, before, "the records outlive the release");
    Ok(())
}

#[test]
fn the_chart_is_versioned_with_the_crates() -> Result<()> {
    let chart = std::fs::read_to_string(repo("charts/reclaim/Chart.yaml"))?;
    let crates = std::fs::read_to_string(repo("Cargo.toml"))?;
    let version = crates
        .lines()
        .skip_while(|l| *l != "[workspace.package]")
        .find_map(|l| l.strip_prefix("version = "))
        .context("the workspace version")?
        .trim_matches('"');
    assert!(
        chart.contains(&format!("\nversion: {version}\n")),
        "chart version {version}"
    );
    assert!(
        chart.contains(&format!("\nappVersion: \"{version}\"\n")),
        "appVersion {version}"
    );
    Ok(())
}
