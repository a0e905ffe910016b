//! What the installed objects let each identity do, proven on the real API server: the agent
//! with a token bound to its pod drains its node and nothing else, the classifier marks and
//! nothing else, drills and Reclaim's evidence only by those granted them, and every grant used.
//! The same proofs for the Kustomize overlay (`manifests.rs`) and the Helm chart (`chart.rs`),
//! each run by its test binary after its own install.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Pod, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::{Resource, ResourceExt};
use reclaim_classifier::controller::Settings;
use reclaim_classifier::leader::Election;
use reclaim_classifier::metrics::ClassifierMetrics;
use reclaim_service::client::ReadTimeout;
use reclaim_service::endpoints::Exposition;
use reclaim_simulator::{Fault, SimState, Simulator};
use reclaim_testbed::agent::{pod_bound_agent, start_agent_as};
use reclaim_testbed::clouds::{notice_node, write_record};
use reclaim_testbed::kubelet::Exit;
use reclaim_testbed::{ControlPlane, TestKubelet, TestNode, TestPod, eventually, eventually_some};
use serde_json::{Value, json};

pub const WAIT: Duration = Duration::from_secs(60);
/// The classifier's record retention in its ServiceAccount test: short enough to watch a
/// record go, long enough for the verdicts to be read from the notice's record first.
const RECORD_RETENTION: Duration = Duration::from_secs(40);
pub const NAMESPACE: &str = "reclaim-system";

pub fn write_temp(name: &str, text: &str) -> Result<std::path::PathBuf> {
    let path = ControlPlane::shared().dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Waits until the API server enforces each shipped policy (it loads them a moment after
/// they are created): a server-side dry run that each must refuse, asked as an identity it
/// governs (impersonated by the admin, so the audit log does not count it as theirs).
pub fn policies_in_effect() -> Result<()> {
    let cp = ControlPlane::shared();
    let probe = write_temp(
        "policy-probe.yaml",
        r#"
apiVersion: v1
kind: Node
metadata: {name: policy-probe}
---
apiVersion: v1
kind: Pod
metadata: {name: policy-probe, namespace: reclaim-system}
spec: {nodeName: policy-probe, containers: [{name: probe, image: registry.invalid/probe:1}]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: reclaim-test-policy-probe}
rules: [{apiGroups: [""], resources: [nodes], verbs: [get, patch]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: reclaim-test-policy-probe}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: reclaim-test-policy-probe}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: policy-probe}]
"#,
    )?;
    cp.kubectl(&["apply", "-f", probe.to_str().context("path")?])?;
    let as_user = |user: &str| format!("--as={user}");
    let agent = as_user(&format!("system:serviceaccount:{NAMESPACE}:reclaim-agent"));
    let classifier = as_user(&format!(
        "system:serviceaccount:{NAMESPACE}:reclaim-classifier"
    ));
    // The probe user may patch Nodes, and is granted neither drills nor evidence.
    let probes: [(&str, Vec<&str>); 4] = [
        (
            "reclaim-agent-own-node",
            vec![
                &agent,
                "patch",
                "node",
                "policy-probe",
                "-p",
                r#"{"metadata":{"labels":{"probe":"1"}}}"#,
            ],
        ),
        (
            "reclaim-classifier-verdicts-only",
            vec![
                &classifier,
                "-n",
                NAMESPACE,
                "patch",
                "pod",
                "policy-probe",
                "-p",
                r#"{"metadata":{"labels":{"probe":"1"}}}"#,
            ],
        ),
        (
            "reclaim-drills-by-authors",
            vec![
                "--as=policy-probe",
                "patch",
                "node",
                "policy-probe",
                "-p",
                r#"{"metadata":{"annotations":{"reclaim.dev/drill":"spot-interruption"}}}"#,
            ],
        ),
        (
            "reclaim-evidence-by-reclaim",
            vec![
                "--as=policy-probe",
                "patch",
                "node",
                "policy-probe",
                "-p",
                r#"{"metadata":{"annotations":{"reclaim.dev/notice":"{}"}}}"#,
            ],
        ),
    ];
    let deadline = std::time::Instant::now() + WAIT;
    for (policy, args) in probes {
        let args: Vec<&str> = args.into_iter().chain(["--dry-run=server"]).collect();
        loop {
            let refusal = format!("ValidatingAdmissionPolicy '{policy}'");
            match cp.kubectl(&args) {
                Err(e) if e.to_string().contains(&refusal) => break,
                answer if std::time::Instant::now() > deadline => {
                    anyhow::bail!("{policy} not in effect after {WAIT:?}: {answer:?}")
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
    Ok(())
}

/// One permission: scope (`*` cluster-wide, else a namespace), API group, resource
/// (`pods/eviction` for a subresource), verb.
pub type Permission = (String, String, String, String);

/// Every metric the shipped Grafana dashboard queries that `mine` selects is one the
/// running binary exposes (`exposition`, its `/metrics` text): a `# TYPE` line names each
/// registered family, samples or not.
pub fn dashboard_names_only_exposed_metrics(exposition: &str, mine: impl Fn(&str) -> bool) {
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../manifests/base/monitoring/grafana-dashboard.json"),
    )
    .expect("the dashboard is shipped");
    let names: BTreeSet<&str> = dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("reclaim_") && mine(w))
        .collect();
    assert!(!names.is_empty());
    for name in names {
        let family = ["_bucket", "_sum", "_count", "_total"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        assert!(
            exposition.contains(&format!("# TYPE {family} ")),
            "the dashboard queries {name}, which the binary does not expose:\n{exposition}"
        );
    }
}

/// What the shipped roles bound to `account` grant, as the server holds them.
pub async fn granted(roles: &[(&str, &str)]) -> Result<BTreeSet<Permission>> {
    let admin = ControlPlane::shared().admin_client().await?;
    let mut permissions = BTreeSet::new();
    for (namespace, name) in roles {
        let rules = if *namespace == "*" {
            Api::<ClusterRole>::all(admin.clone())
                .get(name)
                .await?
                .rules
        } else {
            Api::<Role>::namespaced(admin.clone(), namespace)
                .get(name)
                .await?
                .rules
        };
        for rule in rules.unwrap_or_default() {
            for group in rule.api_groups.unwrap_or_default() {
                for resource in rule.resources.clone().unwrap_or_default() {
                    for verb in &rule.verbs {
                        permissions.insert((
                            namespace.to_string(),
                            group.clone(),
                            resource.clone(),
                            verb.clone(),
                        ));
                    }
                }
            }
        }
    }
    Ok(permissions)
}

/// The grants in `granted` that ServiceAccount `reclaim-system/<account>` never used,
/// according to the API server's audit log (any answer but 403 is a use).
pub fn unused(account: &str, granted: &BTreeSet<Permission>) -> Result<Vec<Permission>> {
    let user = format!("system:serviceaccount:{NAMESPACE}:{account}");
    let log = std::fs::read_to_string(ControlPlane::shared().dir.join("audit.log"))?;
    let used: Vec<(String, String, String, String)> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|e| e["user"]["username"] == user.as_str() && e["responseStatus"]["code"] != 403)
        .filter(|e| e["objectRef"]["resource"].is_string())
        .map(|e| {
            let object = &e["objectRef"];
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            let mut resource = text(&object["resource"]);
            if let Some(sub) = object["subresource"].as_str() {
                resource = format!("{resource}/{sub}");
            }
            (
                text(&object["namespace"]),
                text(&object["apiGroup"]),
                resource,
                text(&e["verb"]),
            )
        })
        .collect();
    Ok(granted
        .iter()
        .filter(|(scope, group, resource, verb)| {
            !used.iter().any(|(namespace, g, r, v)| {
                g == group && r == resource && v == verb && (scope == "*" || scope == namespace)
            })
        })
        .cloned()
        .collect())
}

/// Asserts that `account`'s `roles` grant `count` permissions and that it used every one.
async fn every_grant_used(account: &str, roles: &[(&str, &str)], count: usize) -> Result<()> {
    let grants = granted(roles).await?;
    assert_eq!(unused(account, &grants)?, [], "granted but never used");
    assert_eq!(grants.len(), count, "{grants:?}");
    Ok(())
}

/// What ServiceAccount `reclaim-system/<account>` asked since `from`, by answer, as the
/// API server's audit log has it: `"<verb> <resource> <code>"` and how many times.
pub fn answered(
    account: &str,
    from: Timestamp,
) -> Result<std::collections::BTreeMap<String, usize>> {
    let user = format!("system:serviceaccount:{NAMESPACE}:{account}");
    let log = std::fs::read_to_string(ControlPlane::shared().dir.join("audit.log"))?;
    let mut answers = std::collections::BTreeMap::new();
    for e in log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|e| e["user"]["username"] == user.as_str() && e["stage"] == "ResponseComplete")
        .filter(|e| {
            e["stageTimestamp"]
                .as_str()
                .and_then(|t| t.parse::<Timestamp>().ok())
                .is_some_and(|at| at >= from)
        })
    {
        let key = format!(
            "{} {} {}",
            e["verb"].as_str().unwrap_or("?"),
            e["objectRef"]["resource"].as_str().unwrap_or("?"),
            e["responseStatus"]["code"]
        );
        *answers.entry(key).or_default() += 1;
    }
    Ok(answers)
}

/// The two ServiceAccount tests, one after the other: the classifier's test deletes
/// Interruption records past a short retention, which must not include the agent's
/// while its test reads it.
pub static ONE_SERVICE_ACCOUNT_TEST_AT_A_TIME: tokio::sync::Mutex<()> =
    tokio::sync::Mutex::const_new(());

/// Asserts that the shipped ValidatingAdmissionPolicy `policy` (or, given a prefix, one of
/// those it names) refused `result` (`what`).
pub fn denied_by<T: std::fmt::Debug>(policy: &str, result: kube::Result<T>, what: &str) {
    let refused = matches!(&result, Err(kube::Error::Api(status))
        if status.code == 403 && status.message.contains(&format!("ValidatingAdmissionPolicy '{policy}")));
    assert!(
        refused,
        "{what}: expected a refusal by {policy}, got {result:?}"
    );
}

/// Asks to run another image in pod `name`'s first container.
async fn change_image(pods: &Api<Pod>, name: &str) -> kube::Result<Pod> {
    let image = json!([{"op": "replace", "path": "/spec/containers/0/image", "value": "registry.invalid/miner:1"}]);
    let patch = Patch::Json::<()>(serde_json::from_value(image).expect("a JSON patch"));
    pods.patch(name, &PatchParams::default(), &patch).await
}

/// Whether the server refused `result` for lack of permission (403).
pub fn forbidden<T>(result: kube::Result<T>) -> bool {
    matches!(result, Err(kube::Error::Api(status)) if status.code == 403)
}

pub async fn the_agent_drains_its_node_and_can_do_nothing_else() -> Result<()> {
    let _alone = ONE_SERVICE_ACCOUNT_TEST_AT_A_TIME.lock().await;
    let cp = ControlPlane::shared();
    let k = TestKubelet::new(cp.admin_client().await?, "rbac-agent").await?;
    let (node, other) = (k.node_name("spot"), k.node_name("spot-other"));
    k.register_node(TestNode::spot(&node)).await?;
    k.register_node(TestNode::spot(&other)).await?;
    // The agent's pod on its node, and tokens bound to that pod, as the kubelet mounts them.
    let (agent_pod, agent_clients) = pod_bound_agent(NAMESPACE, "reclaim-agent", &node).await?;
    let agent_client = agent_clients.requests.clone();
    // The executor's budget refuses every eviction: the agent must delete it at the deadline.
    k.run_executor_behind_refusing_budget(&node, 3).await?;
    k.run_pod(&other, TestPod::new("theirs")).await?;
    let kubelet_task = k.keep_finishing_deletions(&node);
    let mut state = SimState::default();
    state.aws.instance_id = "i-0123456789abcdef0".into();
    let sim = Simulator::start("127.0.0.1:0".parse()?, state).await?;
    let pod_name = agent_pod.name_any();
    let agent = start_agent_as(
        agent_clients,
        &node,
        &sim.url(),
        &[
            "--safety-margin",
            "5s",
            "--pod-name",
            &pod_name,
            "--pod-namespace",
            NAMESPACE,
        ],
    )
    .await?;
    agent.ready().await?;
    let noticed = Timestamp::now();
    sim.state()
        .aws
        .schedule_spot("terminate", noticed, SignedDuration::from_secs(20));

    let pods = k.pods();
    let on_node = ListParams::default().fields(&format!("spec.nodeName={node}"));
    eventually(WAIT, "both pods drained", || async {
        Ok(pods.list(&on_node).await?.items.is_empty())
    })
    .await?;
    let tainted = k.nodes().get(&node).await?;
    assert!(
        tainted
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|ts| ts.iter().any(|t| t.key == "reclaim.dev/interruption")),
        "tainted"
    );
    assert!(tainted.annotations().contains_key("reclaim.dev/notice"));
    eventually(WAIT, "the drain summary in the metrics", || async {
        Ok(agent.metric("reclaim_evictions_total{outcome=\"deleted_at_deadline\"}") == 1.0)
    })
    .await?;
    assert_eq!(
        agent.metric("reclaim_evictions_total{outcome=\"evicted\"}"),
        1.0
    );
    assert_eq!(
        agent.metric("reclaim_evictions_total{outcome=\"deleted_at_deadline\"}"),
        1.0
    );
    assert_eq!(
        agent.metric("reclaim_evictions_total{outcome=\"failed\"}"),
        0.0
    );
    assert_eq!(
        agent.metric("reclaim_node_actions_total{action=\"apply\",outcome=\"failed\"}"),
        0.0
    );
    // Both pods were stamped before they were asked to leave, under the policy.
    let answers = answered("reclaim-agent", noticed)?;
    assert_eq!(answers.get("patch pods 200"), Some(&2), "{answers:?}");
    assert_eq!(answers.get("delete pods 200"), Some(&1), "{answers:?}");
    let events: Api<Event> = Api::namespaced(k.client().clone(), "default");
    eventually(WAIT, "the Event on the node", || async {
        Ok(events
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .any(|e| e.involved_object.name.as_deref() == Some(node.as_str())))
    })
    .await?;
    // A metadata error, so the error counter has a sample like every other family.
    sim.state().faults.inject(Fault::Status(503), 1);
    eventually(WAIT, "the metadata error to be counted", || async {
        Ok(agent.metric_sum(
            "reclaim_metadata_errors_total",
            &[("error", "server_error")],
        ) >= 1.0)
    })
    .await?;
    dashboard_names_only_exposed_metrics(&agent.metrics.encode(), |m| {
        !m.starts_with("reclaim_classifier_")
    });
    // The notice's record, created and brought to its final state with the agent's grants.
    let records = reclaim_service::interruptions::api(k.client());
    let record = eventually_some(WAIT, "the record's final state", || async {
        Ok(records
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .find(|r| {
                r.data["spec"]["node"] == node.as_str() && r.data["status"]["phase"] == "Drained"
            }))
    })
    .await?;
    agent.stop().await?;
    kubelet_task.abort();

    // What the same token may not do beyond its node: the shipped policy refuses it.
    const OWN_NODE: &str = "reclaim-agent-own-node";
    let nodes: Api<Node> = Api::all(agent_client.clone());
    let taint = json!([{"op": "add", "path": "/spec/taints", "value": [
        {"key": "reclaim.dev/interruption", "value": "spot-interruption", "effect": "NoSchedule"}]}]);
    denied_by(
        OWN_NODE,
        nodes
            .patch(
                &other,
                &PatchParams::default(),
                &Patch::Json::<()>(serde_json::from_value(taint)?),
            )
            .await,
        "taint another node",
    );
    let stamp = json!({"metadata": {"annotations": {"reclaim.dev/interruption": "{}"}}});
    let theirs: Api<Pod> = Api::namespaced(agent_client.clone(), &k.namespace);
    denied_by(
        OWN_NODE,
        theirs
            .patch("theirs", &PatchParams::default(), &Patch::Merge(&stamp))
            .await,
        "stamp a pod on another node",
    );
    denied_by(
        OWN_NODE,
        theirs.delete("theirs", &DeleteParams::default()).await,
        "delete a pod on another node",
    );
    k.run_pod(&node, TestPod::new("late")).await?;
    denied_by(
        OWN_NODE,
        change_image(&theirs, "late").await,
        "change the image of a pod on its own node",
    );
    let verdict = json!({"metadata": {"annotations": {"reclaim.dev/cause": "spot-interruption"}}});
    // Refused by the agent's policy and by the evidence policy: whichever comes first.
    denied_by(
        "reclaim-",
        theirs
            .patch("late", &PatchParams::default(), &Patch::Merge(&verdict))
            .await,
        "write the classifier's verdict on a pod on its own node",
    );
    let mut forged = record.clone();
    forged.metadata = kube::core::ObjectMeta {
        name: Some(format!("{other}-forged")),
        ..Default::default()
    };
    forged.data["spec"]["node"] = json!(other);
    let agents_records = reclaim_service::interruptions::api(&agent_client);
    denied_by(
        OWN_NODE,
        agents_records.create(&PostParams::default(), &forged).await,
        "an Interruption record for another node",
    );
    let drill = json!({"metadata": {"annotations": {"reclaim.dev/drill": "spot-interruption"}}});
    // On its own node both the agent's policy and the drills policy refuse it; whichever
    // the server evaluates first answers.
    for target in [&node, &other] {
        let refused = nodes
            .patch(target, &PatchParams::default(), &Patch::Merge(&drill))
            .await;
        denied_by("reclaim-", refused, "a drill");
    }
    // A token of the same ServiceAccount not bound to a pod names no node, and writes nothing.
    let unbound = cp
        .service_account_client(NAMESPACE, "reclaim-agent", ReadTimeout::ShortRequests)
        .await?;
    let notice = json!({"metadata": {"annotations": {"reclaim.dev/notice": "{}"}}});
    denied_by(
        OWN_NODE,
        Api::<Node>::all(unbound)
            .patch(&node, &PatchParams::default(), &Patch::Merge(&notice))
            .await,
        "a write with a token bound to no pod",
    );

    // What the agent must not do.
    let secrets: Api<Secret> = Api::namespaced(agent_client.clone(), NAMESPACE);
    assert!(
        forbidden(secrets.list(&ListParams::default()).await),
        "read Secrets"
    );
    let admin = k.client().clone();
    Api::<ConfigMap>::namespaced(admin.clone(), &k.namespace)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "settings"}, "data": {"a": "1"}}))?,
        )
        .await?;
    let patch = json!({"metadata": {"labels": {"touched": "yes"}}});
    let configmaps: Api<ConfigMap> = Api::namespaced(agent_client.clone(), &k.namespace);
    assert!(
        forbidden(
            configmaps
                .patch("settings", &PatchParams::default(), &Patch::Merge(&patch))
                .await
        ),
        "patch a ConfigMap"
    );
    let deployments: Api<Deployment> = Api::namespaced(agent_client.clone(), NAMESPACE);
    assert!(
        forbidden(
            deployments
                .patch(
                    "reclaim-classifier",
                    &PatchParams::default(),
                    &Patch::Merge(&patch)
                )
                .await
        ),
        "patch a Deployment"
    );
    assert!(
        forbidden(nodes.delete(&node, &DeleteParams::default()).await),
        "delete a Node"
    );
    assert!(
        forbidden(
            agents_records
                .delete(&record.name_any(), &DeleteParams::default())
                .await
        ),
        "delete an Interruption record"
    );
    let elsewhere: Api<Event> = Api::namespaced(agent_client.clone(), &k.namespace);
    assert!(
        forbidden(elsewhere.list(&ListParams::default()).await),
        "read Events outside default"
    );

    // And nothing it is granted goes unused.
    every_grant_used(
        "reclaim-agent",
        &[
            ("*", "reclaim-agent"),
            ("default", "reclaim-agent-node-events"),
        ],
        11,
    )
    .await?;
    Ok(())
}

pub async fn the_classifier_marks_pods_jobs_and_spark_and_nothing_else() -> Result<()> {
    let _alone = ONE_SERVICE_ACCOUNT_TEST_AT_A_TIME.lock().await;
    let cp = ControlPlane::shared();
    let classifier_client = cp
        .service_account_client(NAMESPACE, "reclaim-classifier", ReadTimeout::Watches)
        .await?;
    let k = TestKubelet::new(cp.admin_client().await?, "rbac-classifier").await?;
    let (spot, on_demand) = (k.node_name("spot"), k.node_name("on-demand"));
    k.register_node(TestNode::spot(&spot)).await?;
    k.register_node(TestNode::new(&on_demand)).await?;
    let notice = notice_node(&k, &spot).await?;
    // A record past the retention (below), and the notice's record, for the verdicts.
    let old = write_record(&k, &format!("{spot}-old"), &spot, &notice).await?;
    let record_name =
        reclaim_model::interruption::record_name(&spot, &notice.event_id, notice.notice_time);
    write_record(&k, &record_name, &spot, &notice).await?;

    let metrics = std::sync::Arc::new(ClassifierMetrics::default());
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let election = Election {
        lease_name: format!("reclaim-classifier-{}", k.namespace),
        namespace: NAMESPACE.into(),
        identity: "reclaim-classifier-0".into(),
        lease_duration: Duration::from_secs(10),
    };
    let settings = Settings {
        retention: Duration::from_secs(3600),
        record_retention: RECORD_RETENTION,
        namespace: Some(k.namespace.clone()),
        metrics: metrics.clone(),
        health: std::sync::Arc::new(reclaim_service::endpoints::Health::new(Duration::MAX)),
    };
    let task = tokio::spawn(reclaim_classifier::elected::run_elected(
        classifier_client.clone(),
        settings,
        election,
        shutdown,
    ));

    // A Job's pod and a SparkApplication's executor, both SIGKILLed on the noticed node.
    let jobs: Api<Job> = Api::namespaced(k.client().clone(), &k.namespace);
    let job = jobs
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "nightly"},
                "spec": {"template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "registry.invalid/job:1"}]}}},
            }))?,
        )
        .await?;
    k.run_pod(
        &spot,
        TestPod::new("nightly-x1").owned_by(job.controller_owner_ref(&()).unwrap()),
    )
    .await?;
    let resource = reclaim_classifier::owners::spark_application_resource();
    let apps: Api<DynamicObject> =
        Api::namespaced_with(k.client().clone(), &k.namespace, &resource);
    let app = apps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "sparkoperator.k8s.io/v1beta2", "kind": "SparkApplication",
                "metadata": {"name": "etl"}, "spec": {"type": "Scala"},
            }))?,
        )
        .await?;
    let driver = k
        .run_pod(
            &on_demand,
            TestPod::new("etl-driver").owned_by(app.controller_owner_ref(&resource).unwrap()),
        )
        .await?;
    k.run_pod(
        &spot,
        TestPod::spark_executor("etl-exec-1", "spark-etl")
            .owned_by(driver.controller_owner_ref(&()).unwrap()),
    )
    .await?;
    // And a kill on a node that never had a notice: the classifier reads that node once.
    k.run_pod(&on_demand, TestPod::new("ad-hoc")).await?;
    k.terminate("nightly-x1", Exit::KILLED).await?;
    k.terminate("etl-exec-1", Exit::KILLED).await?;
    k.terminate("ad-hoc", Exit::KILLED).await?;

    let marked = |annotations: &std::collections::BTreeMap<String, String>| {
        annotations.get("reclaim.dev/cause").map(String::as_str) == Some("spot-interruption")
    };
    let pods = k.pods();
    eventually(WAIT, "every verdict", || async {
        Ok(marked(pods.get("nightly-x1").await?.annotations())
            && marked(jobs.get("nightly").await?.annotations())
            && marked(pods.get("etl-exec-1").await?.annotations())
            && marked(pods.get("etl-driver").await?.annotations())
            && marked(apps.get("etl").await?.annotations()))
    })
    .await?;
    // The record lists every object marked (read before the retention removes it).
    let records = reclaim_service::interruptions::api(k.client());
    let ns = &k.namespace;
    let keys = [
        format!("Pod/{ns}/nightly-x1"),
        format!("Job/{ns}/nightly"),
        format!("Pod/{ns}/etl-exec-1"),
        format!("Pod/{ns}/etl-driver"),
        format!("SparkApplication/{ns}/etl"),
    ];
    let completed = eventually_some(WAIT, "the record to list every object marked", || async {
        let record = records.get(&record_name).await?;
        let verdicts = &record.data["status"]["verdicts"];
        Ok(keys
            .iter()
            .all(|key| verdicts[key].is_object())
            .then_some(record))
    })
    .await?;
    assert_eq!(completed.data["status"]["retryable"], 5);
    // Past the retention, the old record goes (by its UID).
    eventually(WAIT, "the old record deleted", || async {
        Ok(records
            .get_opt(&old.name_any())
            .await?
            .is_none_or(|r| r.uid() != old.uid()))
    })
    .await?;
    let events: Api<Event> = Api::namespaced(k.client().clone(), &k.namespace);
    eventually(WAIT, "the Events", || async {
        let about: Vec<String> = events
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("SpotInterruption"))
            .filter_map(|e| e.involved_object.name)
            .collect();
        Ok(["nightly-x1", "nightly", "etl-exec-1", "etl-driver", "etl"]
            .iter()
            .all(|n| about.iter().any(|a| a == n)))
    })
    .await?;
    let leases: Api<Lease> = Api::namespaced(k.client().clone(), NAMESPACE);
    let lease_name = format!("reclaim-classifier-{}", k.namespace);
    let lease = leases.get(&lease_name).await?;
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("reclaim-classifier-0")
    );
    eventually(WAIT, "a renewal of the Lease", || async {
        let spec = leases.get(&lease_name).await?.spec.unwrap_or_default();
        Ok(spec.renew_time.map(|t| t.0) > spec.acquire_time.map(|t| t.0))
    })
    .await?;
    eventually(WAIT, "the unknown kill to be judged", || async {
        Ok(metrics
            .encode()
            .contains("reclaim_classifier_verdicts_total{verdict=\"unknown\"} 1"))
    })
    .await?;
    assert!(
        metrics.encode().contains("reclaim_classifier_leader 1"),
        "the leader says so in its metrics"
    );
    dashboard_names_only_exposed_metrics(&metrics.encode(), |m| {
        m.starts_with("reclaim_classifier_")
    });
    stop.send(true)?;
    task.await?;

    // What the classifier must not do.
    let secrets: Api<Secret> = Api::namespaced(classifier_client.clone(), &k.namespace);
    assert!(
        forbidden(secrets.list(&ListParams::default()).await),
        "read Secrets"
    );
    let nodes: Api<Node> = Api::all(classifier_client.clone());
    let patch = json!({"metadata": {"labels": {"touched": "yes"}}});
    assert!(
        forbidden(
            nodes
                .patch(&spot, &PatchParams::default(), &Patch::Merge(&patch))
                .await
        ),
        "patch a Node"
    );
    let their_pods: Api<Pod> = Api::namespaced(classifier_client.clone(), &k.namespace);
    assert!(
        forbidden(
            their_pods
                .delete("nightly-x1", &DeleteParams::default())
                .await
        ),
        "delete a pod"
    );
    // Its writes are verdicts, and nothing else: the shipped policy refuses the rest.
    const VERDICTS_ONLY: &str = "reclaim-classifier-verdicts-only";
    denied_by(
        VERDICTS_ONLY,
        change_image(&their_pods, "etl-driver").await,
        "change a pod's image",
    );
    denied_by(
        VERDICTS_ONLY,
        their_pods
            .patch("etl-driver", &PatchParams::default(), &Patch::Merge(&patch))
            .await,
        "label a pod",
    );
    let their_jobs: Api<Job> = Api::namespaced(classifier_client.clone(), &k.namespace);
    denied_by(
        VERDICTS_ONLY,
        their_jobs
            .patch(
                "nightly",
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"suspend": true}})),
            )
            .await,
        "suspend a Job",
    );
    let their_apps: Api<DynamicObject> =
        Api::namespaced_with(classifier_client.clone(), &k.namespace, &resource);
    denied_by(
        VERDICTS_ONLY,
        their_apps
            .patch(
                "etl",
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"mainClass": "Miner"}})),
            )
            .await,
        "change a SparkApplication's spec",
    );
    let elsewhere: Api<Lease> = Api::namespaced(classifier_client.clone(), &k.namespace);
    let lease = serde_json::from_value(json!({"metadata": {"name": "stolen"}, "spec": {}}))?;
    assert!(
        forbidden(elsewhere.create(&PostParams::default(), &lease).await),
        "create a Lease outside its namespace"
    );

    // And nothing it is granted goes unused.
    every_grant_used(
        "reclaim-classifier",
        &[
            ("*", "reclaim-classifier"),
            (NAMESPACE, "reclaim-classifier-leader-election"),
        ],
        19,
    )
    .await?;
    Ok(())
}

/// ServiceAccount `<k's namespace>/<name>`, granted ClusterRole `role` cluster-wide or, when
/// `in_namespace`, in its namespace only; a client with its token.
pub async fn account(
    k: &TestKubelet,
    name: &str,
    role: &str,
    in_namespace: bool,
) -> Result<kube::Client> {
    let admin = k.client().clone();
    let account = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(admin.clone(), &k.namespace)
        .create(&PostParams::default(), &account)
        .await?;
    let binding = json!({
        "metadata": {"name": format!("{}-{name}", k.namespace)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "namespace": k.namespace, "name": name}],
    });
    if in_namespace {
        Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(admin, &k.namespace)
            .create(&PostParams::default(), &serde_json::from_value(binding)?)
            .await?;
    } else {
        Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(admin)
            .create(&PostParams::default(), &serde_json::from_value(binding)?)
            .await?;
    }
    ControlPlane::shared()
        .service_account_client(&k.namespace, name, ReadTimeout::ShortRequests)
        .await
}

/// ServiceAccount `<k's namespace>/operator`, which may get and patch every Node (and no more).
async fn node_operator(k: &TestKubelet) -> Result<kube::Client> {
    let role = format!("{}-node-operator", k.namespace);
    let operators = json!({
        "metadata": {"name": role},
        "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}],
    });
    Api::<ClusterRole>::all(k.client().clone())
        .create(&PostParams::default(), &serde_json::from_value(operators)?)
        .await?;
    account(k, "operator", &role, false).await
}

pub async fn only_those_granted_drills_start_or_stop_one() -> Result<()> {
    let cp = ControlPlane::shared();
    let k = TestKubelet::new(cp.admin_client().await?, "drill-authors").await?;
    let node = k.node_name("spot");
    k.register_node(TestNode::spot(&node)).await?;
    // A namespace user, an operator who may patch Nodes, and a drill author (the shipped role).
    let user = account(&k, "user", "edit", true).await?;
    let operator = node_operator(&k).await?;
    let author = account(&k, "author", "reclaim-drill-author", false).await?;
    let drill_state = || async {
        Ok::<_, anyhow::Error>(
            k.nodes()
                .get(&node)
                .await?
                .annotations()
                .get("reclaim.dev/drill")
                .cloned(),
        )
    };
    let start =
        json!({"metadata": {"annotations": {"reclaim.dev/drill": "spot-interruption,lead=45s"}}});
    let stop = json!({"metadata": {"annotations": {"reclaim.dev/drill": null}}});
    let patch = |client: &kube::Client, body: &Value| {
        let (nodes, node, body) = (Api::<Node>::all(client.clone()), node.clone(), body.clone());
        async move {
            nodes
                .patch(&node, &PatchParams::default(), &Patch::Merge(&body))
                .await
        }
    };

    // The operator's other changes go through (once RBAC has its binding), its drill does not.
    let label = json!({"metadata": {"labels": {"team": "data"}}});
    eventually(WAIT, "the operator's label", || async {
        Ok(patch(&operator, &label).await.is_ok())
    })
    .await?;
    denied_by(
        "reclaim-drills-by-authors",
        patch(&operator, &start).await,
        "a drill by a node operator",
    );
    assert!(
        forbidden(patch(&user, &start).await),
        "a drill by a namespace user"
    );
    assert_eq!(drill_state().await?, None);
    // The author starts one; nobody else stops it; the author does.
    eventually(WAIT, "the author's drill", || async {
        Ok(patch(&author, &start).await.is_ok())
    })
    .await?;
    assert_eq!(
        drill_state().await?.as_deref(),
        Some("spot-interruption,lead=45s")
    );
    denied_by(
        "reclaim-drills-by-authors",
        patch(&operator, &stop).await,
        "a drill stopped by a node operator",
    );
    patch(&author, &stop).await?;
    assert_eq!(drill_state().await?, None);
    Ok(())
}

pub async fn only_reclaim_writes_the_evidence_it_reads() -> Result<()> {
    let cp = ControlPlane::shared();
    let k = TestKubelet::new(cp.admin_client().await?, "evidence").await?;
    let node = k.node_name("spot");
    k.register_node(TestNode::spot(&node)).await?;
    // A tenant who runs pods and Jobs in its namespace, and an operator who may patch Nodes.
    let workloads = json!({
        "metadata": {"name": format!("{}-workloads", k.namespace)},
        "rules": [{"apiGroups": ["", "batch"], "resources": ["pods", "jobs"], "verbs": ["create", "get", "patch"]}],
    });
    Api::<ClusterRole>::all(k.client().clone())
        .create(&PostParams::default(), &serde_json::from_value(workloads)?)
        .await?;
    let tenant = account(&k, "tenant", &format!("{}-workloads", k.namespace), true).await?;
    let operator = node_operator(&k).await?;
    const EVIDENCE: &str = "reclaim-evidence-by-reclaim";

    let pods: Api<Pod> = Api::namespaced(tenant.clone(), &k.namespace);
    let pod = |annotations: Value| -> Result<Pod> {
        Ok(serde_json::from_value(json!({
            "metadata": {"name": "task", "annotations": annotations},
            "spec": {"nodeName": node, "containers": [{"name": "main", "image": "registry.invalid/task:1"}]},
        }))?)
    };
    // A pod born with a forged stamp is refused; a plain one goes in (once RBAC has the binding).
    let stamp = reclaim_model::keys::POD_INTERRUPTION_ANNOTATION;
    let forged = pod(json!({stamp: "{}"}))?;
    eventually(WAIT, "the tenant's rights", || async {
        Ok(!forbidden(pods.get_opt("task").await))
    })
    .await?;
    denied_by(
        EVIDENCE,
        pods.create(&PostParams::default(), &forged).await,
        "a pod created with the agent's stamp",
    );
    pods.create(&PostParams::default(), &pod(json!({}))?)
        .await?;
    let writes = [
        (
            json!({"metadata": {"annotations": {stamp: "{}"}}}),
            "stamp its own pod",
        ),
        (
            json!({"metadata": {"labels": {"reclaim.dev/interrupted": "spot-interruption"}}}),
            "label its own pod interrupted",
        ),
        (
            json!({"metadata": {"annotations": {"reclaim.dev/cause": "spot-interruption", "reclaim.dev/retryable": "true"}}}),
            "write a verdict on its own pod",
        ),
    ];
    for (patch, what) in &writes {
        denied_by(
            EVIDENCE,
            pods.patch("task", &PatchParams::default(), &Patch::Merge(patch))
                .await,
            what,
        );
    }
    // Its own annotations are its business.
    let own = json!({"metadata": {"annotations": {"team": "data"}}});
    pods.patch("task", &PatchParams::default(), &Patch::Merge(&own))
        .await?;
    let jobs: Api<Job> = Api::namespaced(tenant.clone(), &k.namespace);
    let job = serde_json::from_value(json!({
        "metadata": {"name": "nightly", "annotations": {"reclaim.dev/retryable": "true"}},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "main", "image": "registry.invalid/job:1"}]}}},
    }))?;
    denied_by(
        EVIDENCE,
        jobs.create(&PostParams::default(), &job).await,
        "a Job created with a verdict",
    );
    // A notice on a Node is the agent's (or an admin's) to write, not a node operator's.
    let notice = json!({"metadata": {"annotations": {"reclaim.dev/notice": "{}"}}});
    eventually(WAIT, "the operator's rights", || async {
        let label = json!({"metadata": {"labels": {"team": "data"}}});
        Ok(Api::<Node>::all(operator.clone())
            .patch(&node, &PatchParams::default(), &Patch::Merge(&label))
            .await
            .is_ok())
    })
    .await?;
    denied_by(
        EVIDENCE,
        Api::<Node>::all(operator.clone())
            .patch(&node, &PatchParams::default(), &Patch::Merge(&notice))
            .await,
        "a notice written by a node operator",
    );
    // An identity granted evidence.reclaim.dev (here the cluster admin) may, and anyone
    // may take evidence away.
    k.nodes()
        .patch(&node, &PatchParams::default(), &Patch::Merge(&notice))
        .await?;
    let admin_pods = k.pods();
    admin_pods
        .patch("task", &PatchParams::default(), &Patch::Merge(&writes[2].0))
        .await?;
    let removed = json!({"metadata": {"annotations": {"reclaim.dev/cause": null, "reclaim.dev/retryable": null}}});
    pods.patch("task", &PatchParams::default(), &Patch::Merge(&removed))
        .await?;
    let left = admin_pods.get("task").await?;
    assert!(
        !left.annotations().contains_key("reclaim.dev/cause"),
        "the tenant removed the verdict"
    );
    assert_eq!(
        left.annotations().get("team").map(String::as_str),
        Some("data")
    );
    Ok(())
}
