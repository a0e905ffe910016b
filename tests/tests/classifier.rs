//! The classifier on a real API server: its rules applied to pods terminated as the
//! kubelet reports them, on nodes whose notice the agent wrote; and the controller's
//! verdicts on pods and Jobs, read back.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Event;
use kube::Resource;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use reclaim_classifier::controller::Settings;
use reclaim_classifier::leader::Election;
use reclaim_classifier::metrics::ClassifierMetrics;
use reclaim_classifier::verdict::{Verdict, classify, failure_of};
use reclaim_model::{Evidence, Notice, NoticeKind, PodInterruption};
use reclaim_service::client::ReadTimeout;
use reclaim_service::endpoints::Exposition;
use reclaim_testbed::clouds::{notice_node, write_record};
use reclaim_testbed::fault_proxy::{FaultProxy, Mode};
use reclaim_testbed::kubelet::Exit;
use reclaim_testbed::{ControlPlane, TestKubelet, TestNode, TestPod, eventually};

#[path = "classifier/drill.rs"]
mod drill;

#[tokio::test]
async fn verdicts_from_pods_and_nodes_as_the_server_returns_them() -> Result<()> {
    let k = TestKubelet::new(ControlPlane::shared().admin_client().await?, "verdicts").await?;
    let (noticed, quiet) = (k.node_name("spot-noticed"), k.node_name("spot-quiet"));
    k.register_node(TestNode::spot(&noticed)).await?;
    k.register_node(TestNode::spot(&quiet)).await?;
    let node_notice = notice_node(&k, &noticed).await?;

    let cases = [
        ("killed", &noticed, Exit::KILLED, false),
        ("oom", &noticed, Exit::OOM_KILLED, false),
        ("bug", &noticed, Exit::FAILED, false),
        ("annotated", &noticed, Exit::KILLED, true),
        ("elsewhere", &quiet, Exit::KILLED, false),
    ];
    for (name, node, exit, annotated) in cases {
        let mut pod = TestPod::new(name);
        if annotated {
            pod = pod.interrupted(&node_notice.for_pod(node));
        }
        k.run_pod(node, pod).await?;
        k.terminate(name, exit).await?;
    }

    let verdict = |name: &'static str| {
        let k = k.clone();
        let (noticed, node_notice) = (noticed.clone(), node_notice.clone());
        async move {
            let pod = k.pods().get(name).await?;
            let record = pod
                .annotations()
                .get("reclaim.dev/interruption")
                .map(|t| PodInterruption::from_json(t))
                .transpose()?;
            let node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            let seen = (node == noticed).then_some((node.as_str(), &node_notice));
            let now = jiff::Timestamp::now();
            anyhow::Ok(classify(
                &failure_of(&pod, false),
                record.as_ref(),
                seen,
                now,
            ))
        }
    };
    let Verdict::SpotCaused(evidence) = verdict("killed").await? else {
        panic!("137/Error on a noticed node is spot-caused")
    };
    assert_eq!(
        (evidence.node.as_str(), evidence.exit_code),
        (noticed.as_str(), Some(137))
    );
    assert_eq!(evidence.signals, ["exit-137", "node-notice"]);
    let Verdict::SpotCaused(evidence) = verdict("annotated").await? else {
        panic!("an annotated pod is spot-caused")
    };
    assert!(evidence.signals.contains(&"pod-annotation".to_owned()));
    assert!(
        matches!(verdict("oom").await?, Verdict::NotSpot(ref why) if why.contains("OOMKilled"))
    );
    assert!(
        matches!(verdict("bug").await?, Verdict::NotSpot(ref why) if why.contains("exit code 1"))
    );
    assert!(matches!(verdict("elsewhere").await?, Verdict::Unknown(_)));
    Ok(())
}

/// A classifier replica named `identity`, electing its leader through a Lease in `k`'s namespace.
fn start_classifier(
    k: &TestKubelet,
    identity: &str,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
    Arc<ClassifierMetrics>,
) {
    start_classifier_as(k, identity, k.client().clone(), Duration::from_secs(10))
}

/// As [`start_classifier`], returning once the replica leads and every watch has listed
/// (`/readyz`): what a test needs when its pods may come and go at once.
async fn start_ready_classifier(
    k: &TestKubelet,
    identity: &str,
) -> Result<(
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
    Arc<ClassifierMetrics>,
)> {
    let health = Arc::new(reclaim_service::endpoints::Health::new(Duration::MAX));
    let started = start_classifier_with(
        k,
        identity,
        k.client().clone(),
        Duration::from_secs(10),
        health.clone(),
    );
    eventually(
        Duration::from_secs(60),
        "the replica to be ready",
        || async {
            Ok(health.is_ready() && started.2.encode().contains("reclaim_classifier_leader 1"))
        },
    )
    .await?;
    Ok(started)
}

/// As [`start_classifier`], talking to the API server through `client`.
fn start_classifier_as(
    k: &TestKubelet,
    identity: &str,
    client: kube::Client,
    lease_duration: Duration,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
    Arc<ClassifierMetrics>,
) {
    let health = Arc::new(reclaim_service::endpoints::Health::new(Duration::MAX));
    start_classifier_with(k, identity, client, lease_duration, health)
}

/// As [`start_classifier_as`], reporting to `health`.
fn start_classifier_with(
    k: &TestKubelet,
    identity: &str,
    client: kube::Client,
    lease_duration: Duration,
    health: Arc<reclaim_service::endpoints::Health>,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
    Arc<ClassifierMetrics>,
) {
    let metrics = Arc::new(ClassifierMetrics::default());
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let election = Election {
        lease_name: "reclaim-classifier".into(),
        namespace: k.namespace.clone(),
        identity: identity.into(),
        // 10 s or more: a renewal delayed by a loaded machine does not hand the Lease over.
        lease_duration,
    };
    // Scoped to the test's namespace: tests share the control plane, not their pods.
    let settings = Settings {
        retention: Duration::from_secs(6 * 3600),
        record_retention: Duration::from_secs(30 * 86400),
        namespace: Some(k.namespace.clone()),
        metrics: metrics.clone(),
        health,
    };
    let task = tokio::spawn(reclaim_classifier::elected::run_elected(
        client, settings, election, shutdown,
    ));
    (stop, task, metrics)
}

/// Stops a replica started by [`start_classifier`], as SIGTERM does, and waits (bounded)
/// until it has.
async fn stop_replica(
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
) -> Result<()> {
    stop.send(true)?;
    tokio::time::timeout(Duration::from_secs(30), task).await??;
    Ok(())
}

/// Who holds the classifier's Lease in `k`'s namespace.
async fn lease_holder(k: &TestKubelet) -> Result<Option<String>> {
    let leases: Api<Lease> = Api::namespaced(k.client().clone(), &k.namespace);
    Ok(leases
        .get_opt("reclaim-classifier")
        .await?
        .and_then(|l| l.spec?.holder_identity))
}

async fn job(k: &TestKubelet, name: &str) -> Result<Job> {
    let manifest = serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "registry.invalid/reclaim/test:1"}]}}},
    });
    Ok(Api::<Job>::namespaced(k.client().clone(), &k.namespace)
        .create(&PostParams::default(), &serde_json::from_value(manifest)?)
        .await?)
}

fn verdict_of(
    annotations: &std::collections::BTreeMap<String, String>,
) -> Option<(String, String, Evidence)> {
    Some((
        annotations.get("reclaim.dev/cause")?.clone(),
        annotations.get("reclaim.dev/retryable")?.clone(),
        serde_json::from_str(annotations.get("reclaim.dev/evidence")?).ok()?,
    ))
}

/// The evidence the classifier writes for `pod` SIGKILLed on `node` under `notice`.
fn killed_under(notice: &Notice, node: &str, pod: &str) -> Evidence {
    Evidence {
        node: node.to_owned(),
        notice_kind: notice.kind,
        provider: Some(notice.provider),
        event_id: Some(notice.event_id.clone()),
        notice_time: notice.notice_time,
        exit_code: Some(137),
        reason: Some("Error".into()),
        signals: vec!["exit-137".into(), "node-notice".into()],
        pod: Some(pod.to_owned()),
        failed_at: None,
    }
}

/// The cause and retryable annotations on an object, whatever the evidence says.
fn cause_of(annotations: &std::collections::BTreeMap<String, String>) -> Option<(&str, &str)> {
    Some((
        annotations.get("reclaim.dev/cause")?.as_str(),
        annotations.get("reclaim.dev/retryable")?.as_str(),
    ))
}

/// `pod` carrying the classifier's verdict annotations with `evidence`.
fn marked_spot_caused(pod: TestPod, evidence: &Evidence) -> Result<TestPod> {
    Ok(pod
        .annotation("reclaim.dev/cause", "spot-interruption")
        .annotation("reclaim.dev/retryable", "true")
        .annotation("reclaim.dev/evidence", &serde_json::to_string(evidence)?))
}

/// A test's kubelet and one spot node carrying a spot notice, as the agent writes it.
async fn noticed_node(test: &str, node: &str) -> Result<(TestKubelet, String, Notice)> {
    let k = TestKubelet::new(ControlPlane::shared().admin_client().await?, test).await?;
    let node = k.node_name(node);
    k.register_node(TestNode::spot(&node)).await?;
    let notice = notice_node(&k, &node).await?;
    Ok((k, node, notice))
}

#[tokio::test]
async fn the_classifier_marks_spot_killed_pods_and_their_jobs_and_nothing_else() -> Result<()> {
    let k = TestKubelet::new(ControlPlane::shared().admin_client().await?, "classify").await?;
    let (noticed, quiet) = (k.node_name("spot-noticed"), k.node_name("spot-quiet"));
    k.register_node(TestNode::spot(&noticed)).await?;
    k.register_node(TestNode::spot(&quiet)).await?;
    notice_node(&k, &noticed).await?;
    let (stop, task, metrics) = start_classifier(&k, "replica-a");

    // The spot-killed pod fails last: once it is marked, the classifier has seen the others.
    let cases = [
        ("oom", &noticed, Exit::OOM_KILLED),
        ("bug", &noticed, Exit::FAILED),
        ("elsewhere", &quiet, Exit::KILLED),
        ("killed", &noticed, Exit::KILLED),
    ];
    for (name, node, exit) in cases {
        let owner = job(&k, &format!("job-{name}"))
            .await?
            .controller_owner_ref(&())
            .unwrap();
        k.run_pod(node, TestPod::new(name).owned_by(owner)).await?;
        k.terminate(name, exit).await?;
    }
    let pods = k.pods();
    eventually(
        Duration::from_secs(60),
        "the spot-killed pod's verdict",
        || async { Ok(verdict_of(pods.get("killed").await?.annotations()).is_some()) },
    )
    .await?;
    let (cause, retryable, evidence) = verdict_of(pods.get("killed").await?.annotations()).unwrap();
    assert_eq!(
        (cause.as_str(), retryable.as_str()),
        ("spot-interruption", "true")
    );
    assert_eq!(
        (
            evidence.node.as_str(),
            evidence.exit_code,
            evidence.notice_kind
        ),
        (noticed.as_str(), Some(137), NoticeKind::SpotInterruption)
    );
    let jobs: Api<Job> = Api::namespaced(k.client().clone(), &k.namespace);
    eventually(Duration::from_secs(30), "the Job's verdict", || async {
        Ok(verdict_of(jobs.get("job-killed").await?.annotations()).is_some())
    })
    .await?;
    let events: Api<Event> = Api::namespaced(k.client().clone(), &k.namespace);
    let spot_events = |listed: Vec<Event>| -> Vec<(String, String)> {
        let mut about: Vec<_> = listed
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("SpotInterruption"))
            .map(|e| {
                (
                    e.involved_object.kind.unwrap_or_default(),
                    e.involved_object.name.unwrap_or_default(),
                )
            })
            .collect();
        about.sort();
        about
    };
    eventually(Duration::from_secs(30), "the Events", || async {
        Ok(spot_events(events.list(&Default::default()).await?.items).len() == 2)
    })
    .await?;
    assert_eq!(
        spot_events(events.list(&Default::default()).await?.items),
        [
            ("Job".to_owned(), "job-killed".to_owned()),
            ("Pod".to_owned(), "killed".to_owned())
        ],
        "one Event on each marked object, none on the others"
    );
    let text = metrics.encode();
    let count = |verdict: &str| {
        let sample = format!("reclaim_classifier_verdicts_total{{verdict=\"{verdict}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&sample))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(count("spot_caused"), 1.0, "{text}");
    assert!(
        count("not_spot") >= 2.0 && count("unknown") >= 1.0,
        "{text}"
    );
    assert!(
        text.contains("reclaim_classifier_classify_seconds_count 1"),
        "{text}"
    );
    for other in ["oom", "bug", "elsewhere"] {
        assert!(
            verdict_of(pods.get(other).await?.annotations()).is_none(),
            "{other} must not be marked"
        );
        assert!(
            verdict_of(jobs.get(&format!("job-{other}")).await?.annotations()).is_none(),
            "job-{other} must not be marked"
        );
    }
    stop.send(true)?;
    task.await?;
    Ok(())
}

#[tokio::test]
async fn a_pod_whose_node_is_gone_is_marked_by_a_restarted_classifier_and_never_rewritten()
-> Result<()> {
    let (k, node, notice) = noticed_node("classify-gone", "spot-gone").await?;
    let (stop, task, _) = start_classifier(&k, "replica-a");
    // The agent marks the pod before evicting it; then the classifier is down while the
    // node disappears and the pod dies.
    k.run_pod(
        &node,
        TestPod::new("executor").interrupted(&notice.for_pod(&node)),
    )
    .await?;
    stop.send(true)?;
    task.await?;
    k.nodes().delete(&node, &Default::default()).await?;
    k.terminate("executor", Exit::KILLED).await?;

    let (stop, task, _) = start_classifier(&k, "replica-a");
    let pods = k.pods();
    eventually(Duration::from_secs(60), "the verdict", || async {
        Ok(verdict_of(pods.get("executor").await?.annotations()).is_some())
    })
    .await?;
    let (_, _, evidence) = verdict_of(pods.get("executor").await?.annotations()).unwrap();
    assert!(
        evidence.signals.contains(&"pod-annotation".to_owned()),
        "{:?}",
        evidence.signals
    );
    assert_eq!(evidence.node, node);
    let version = pods.get("executor").await?.resource_version();
    stop.send(true)?;
    task.await?;

    // A third classifier sees the marked pod again (initial list) and writes nothing;
    // a pod failing after it shows it has processed what came before.
    let (stop, task, _) = start_classifier(&k, "replica-a");
    k.run_pod(
        &node,
        TestPod::new("later").interrupted(&notice.for_pod(&node)),
    )
    .await?;
    k.terminate("later", Exit::KILLED).await?;
    eventually(Duration::from_secs(60), "the later verdict", || async {
        Ok(verdict_of(pods.get("later").await?.annotations()).is_some())
    })
    .await?;
    assert_eq!(
        pods.get("executor").await?.resource_version(),
        version,
        "an existing verdict is not rewritten"
    );
    stop.send(true)?;
    task.await?;
    Ok(())
}

#[tokio::test]
async fn a_job_whose_pod_the_agent_evicted_is_marked_unless_the_pod_died_by_itself() -> Result<()> {
    let (k, node, notice) = noticed_node("classify-evicted", "spot-evicted").await?;
    let (stop, task, _) = start_classifier(&k, "replica-a");
    let plain = job(&k, "job-plain")
        .await?
        .controller_owner_ref(&())
        .unwrap();
    k.run_pod(&node, TestPod::new("deleted-unmarked").owned_by(plain))
        .await?;
    let evicted = job(&k, "job-evicted")
        .await?
        .controller_owner_ref(&())
        .unwrap();
    let record = notice.for_pod(&node);
    k.run_pod(
        &node,
        TestPod::new("evicted")
            .owned_by(evicted)
            .interrupted(&record),
    )
    .await?;
    // Evicted too, but OOMKilled during its grace period: a failure of its own.
    let oom = job(&k, "job-oom").await?.controller_owner_ref(&()).unwrap();
    k.run_pod(
        &node,
        TestPod::new("oom-in-grace")
            .owned_by(oom)
            .interrupted(&record),
    )
    .await?;
    k.terminate("oom-in-grace", Exit::OOM_KILLED).await?;
    // Deleted in this order: once the last Job is marked, the other deletions were seen
    // (the interrupted pods come through one watch, in order).
    k.finish_deletion("deleted-unmarked").await?;
    k.finish_deletion("oom-in-grace").await?;
    k.finish_deletion("evicted").await?;

    let jobs: Api<Job> = Api::namespaced(k.client().clone(), &k.namespace);
    eventually(
        Duration::from_secs(60),
        "the evicted pod's Job verdict",
        || async { Ok(verdict_of(jobs.get("job-evicted").await?.annotations()).is_some()) },
    )
    .await?;
    let (_, retryable, evidence) =
        verdict_of(jobs.get("job-evicted").await?.annotations()).unwrap();
    assert_eq!(retryable, "true");
    assert_eq!(evidence.signals, ["pod-deleted", "pod-annotation"]);
    assert!(
        verdict_of(jobs.get("job-plain").await?.annotations()).is_none(),
        "a pod deleted without a notice says nothing"
    );
    assert!(
        verdict_of(jobs.get("job-oom").await?.annotations()).is_none(),
        "OOMKilled during the drain is not spot-caused"
    );
    stop.send(true)?;
    task.await?;
    Ok(())
}

/// Which field manager last wrote the verdict annotations of a pod.
fn verdict_writer(pod: &k8s_openapi::api::core::v1::Pod) -> Option<String> {
    pod.metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|f| {
            f.fields_v1
                .as_ref()
                .is_some_and(|v| v.0.to_string().contains("reclaim.dev/cause"))
        })
        .and_then(|f| f.manager.clone())
}

#[tokio::test]
async fn of_two_replicas_only_the_lease_holder_writes_and_the_other_takes_over() -> Result<()> {
    let k = TestKubelet::new(ControlPlane::shared().admin_client().await?, "classify-ha").await?;
    let node = k.node_name("spot-ha");
    k.register_node(TestNode::spot(&node)).await?;
    let notice = notice_node(&k, &node).await?;
    let replicas = [
        ("replica-a", start_classifier(&k, "replica-a")),
        ("replica-b", start_classifier(&k, "replica-b")),
    ];
    let holder = || lease_holder(&k);
    eventually(Duration::from_secs(30), "a leader", || async {
        Ok(holder().await?.is_some())
    })
    .await?;
    let leader = holder().await?.unwrap();

    let record = notice.for_pod(&node);
    k.run_pod(&node, TestPod::new("first").interrupted(&record))
        .await?;
    k.terminate("first", Exit::KILLED).await?;
    let pods = k.pods();
    eventually(Duration::from_secs(60), "the first verdict", || async {
        Ok(verdict_of(pods.get("first").await?.annotations()).is_some())
    })
    .await?;
    assert_eq!(
        verdict_writer(&pods.get("first").await?).as_deref(),
        Some(leader.as_str()),
        "the Lease holder wrote the verdict"
    );

    let mut follower = None;
    for (name, (stop, task, _)) in replicas {
        if name == leader {
            stop.send(true)?;
            task.await?;
        } else {
            follower = Some((name, stop, task));
        }
    }
    let (follower, stop, task) = follower.unwrap();
    eventually(
        Duration::from_secs(30),
        "the follower to take over",
        || async { Ok(holder().await?.as_deref() == Some(follower)) },
    )
    .await?;
    k.run_pod(&node, TestPod::new("second").interrupted(&record))
        .await?;
    k.terminate("second", Exit::KILLED).await?;
    eventually(Duration::from_secs(60), "the second verdict", || async {
        Ok(verdict_of(pods.get("second").await?.annotations()).is_some())
    })
    .await?;
    assert_eq!(
        verdict_writer(&pods.get("second").await?).as_deref(),
        Some(follower)
    );
    assert_eq!(
        verdict_writer(&pods.get("first").await?).as_deref(),
        Some(leader.as_str()),
        "the first verdict was not rewritten"
    );
    stop.send(true)?;
    task.await?;
    Ok(())
}

#[tokio::test]
async fn a_job_is_marked_even_when_its_pod_was_marked_before() -> Result<()> {
    let (k, node, notice) = noticed_node("classify-job-later", "spot-later").await?;
    let owner = job(&k, "job-later")
        .await?
        .controller_owner_ref(&())
        .unwrap();
    // Marked by an earlier run that failed before it reached the Job: judged again (the
    // annotations are output, not evidence), it is still spot-caused, and the Job gets it.
    let evidence = killed_under(&notice, &node, &format!("{}/marked", k.namespace));
    let marked = marked_spot_caused(TestPod::new("marked").owned_by(owner), &evidence)?;
    k.run_pod(&node, marked).await?;
    k.terminate("marked", Exit::KILLED).await?;
    let (stop, task, _) = start_classifier(&k, "replica-a");
    let jobs: Api<Job> = Api::namespaced(k.client().clone(), &k.namespace);
    eventually(Duration::from_secs(60), "the Job's verdict", || async {
        Ok(verdict_of(jobs.get("job-later").await?.annotations()).is_some())
    })
    .await?;
    // The same evidence, now with the kill's time (the earlier run's had none).
    let written = verdict_of(jobs.get("job-later").await?.annotations())
        .unwrap()
        .2;
    assert!(written.failed_at.is_some());
    assert_eq!(
        Evidence {
            failed_at: None,
            ..written
        },
        evidence
    );
    stop.send(true)?;
    task.await?;
    Ok(())
}

/// A Spark driver (on an on-demand node) and one executor on the noticed spot node,
/// owned as Spark on Kubernetes owns them; the executor is then SIGKILLed.
async fn spark_app_loses_an_executor(
    k: &TestKubelet,
    spot: &str,
    on_demand: &str,
    driver: &str,
    driver_owner: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
) -> Result<String> {
    let mut driver_pod = TestPod::new(driver).label("spark-role", "driver");
    if let Some(owner) = driver_owner {
        driver_pod = driver_pod.owned_by(owner);
    }
    let driver_ref = k
        .run_pod(on_demand, driver_pod)
        .await?
        .controller_owner_ref(&())
        .unwrap();
    let executor = format!("{driver}-exec-1");
    k.run_pod(
        spot,
        TestPod::spark_executor(&executor, &format!("spark-{driver}")).owned_by(driver_ref),
    )
    .await?;
    k.terminate(&executor, Exit::KILLED).await?;
    Ok(executor)
}

#[tokio::test]
async fn a_spark_executors_verdict_reaches_its_driver_and_spark_application_when_that_api_exists()
-> Result<()> {
    let (k, spot, _) = noticed_node("classify-spark", "spot-spark").await?;
    let on_demand = k.node_name("on-demand");
    k.register_node(TestNode::new(&on_demand)).await?;
    let (stop, task, _) = start_classifier(&k, "replica-a");
    let pods = k.pods();

    // No SparkApplication API on the server yet: the driver is marked, its owner skipped
    // cleanly, and the classifier goes on.
    let missing_app = k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: "sparkoperator.k8s.io/v1beta2".into(),
        kind: "SparkApplication".into(),
        name: "not-served-yet".into(),
        uid: "00000000-0000-0000-0000-000000000001".into(),
        controller: Some(true),
        ..Default::default()
    };
    let lost =
        spark_app_loses_an_executor(&k, &spot, &on_demand, "driver-a", Some(missing_app)).await?;
    eventually(Duration::from_secs(60), "the driver's verdict", || async {
        Ok(verdict_of(pods.get("driver-a").await?.annotations()).is_some())
    })
    .await?;
    let (cause, retryable, evidence) =
        verdict_of(pods.get("driver-a").await?.annotations()).unwrap();
    assert_eq!(
        (cause.as_str(), retryable.as_str()),
        ("spot-interruption", "true")
    );
    assert_eq!(evidence.pod, Some(format!("{}/{lost}", k.namespace)));
    assert_eq!(evidence.node, spot);
    assert!(verdict_of(pods.get(&lost).await?.annotations()).is_some());

    // With the Spark operator's CRD installed, the SparkApplication that owns the driver
    // is marked too, with an Event.
    ControlPlane::shared().install_crds("sparkapplications.yaml")?;
    let resource = reclaim_classifier::owners::spark_application_resource();
    let apps: Api<kube::core::DynamicObject> =
        Api::namespaced_with(k.client().clone(), &k.namespace, &resource);
    let app = apps
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "apiVersion": "sparkoperator.k8s.io/v1beta2", "kind": "SparkApplication",
                "metadata": {"name": "nightly-etl"},
                "spec": {"type": "Scala", "mode": "cluster"},
            }))?,
        )
        .await?;
    let lost = spark_app_loses_an_executor(
        &k,
        &spot,
        &on_demand,
        "driver-b",
        app.controller_owner_ref(&resource),
    )
    .await?;
    eventually(
        Duration::from_secs(60),
        "the SparkApplication's verdict",
        || async { Ok(verdict_of(apps.get("nightly-etl").await?.annotations()).is_some()) },
    )
    .await?;
    let (_, retryable, evidence) =
        verdict_of(apps.get("nightly-etl").await?.annotations()).unwrap();
    assert_eq!(retryable, "true");
    assert_eq!(evidence.pod, Some(format!("{}/{lost}", k.namespace)));
    assert!(verdict_of(pods.get("driver-b").await?.annotations()).is_some());
    let events: Api<Event> = Api::namespaced(k.client().clone(), &k.namespace);
    eventually(
        Duration::from_secs(30),
        "the SparkApplication's Event",
        || async {
            Ok(events
                .list(&Default::default())
                .await?
                .items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("SpotInterruption")
                        && e.involved_object.kind.as_deref() == Some("SparkApplication")
                        && e.involved_object.name.as_deref() == Some("nightly-etl")
                }))
        },
    )
    .await?;
    stop.send(true)?;
    task.await?;
    Ok(())
}

#[tokio::test]
async fn verdicts_of_pods_that_failed_during_an_api_outage_are_written_once_it_ends() -> Result<()>
{
    let (k, node, notice) = noticed_node("classify-outage", "spot-outage").await?;
    let record_name =
        reclaim_model::interruption::record_name(&node, &notice.event_id, notice.notice_time);
    write_record(&k, &record_name, &node, &notice).await?;
    let cp = ControlPlane::shared();
    let proxy = FaultProxy::start(cp.server.trim_start_matches("https://")).await?;
    let client = cp
        .client_via(Some(&proxy.url()), ReadTimeout::Watches)
        .await?;
    let (stop, task, _) =
        start_classifier_as(&k, "replica-outage", client, Duration::from_secs(10));
    let pods = k.pods();
    let jobs: Api<Job> = Api::namespaced(k.client().clone(), &k.namespace);
    // One verdict before the outage: the classifier is up and leading.
    for (name, exit) in [("before", Exit::KILLED)] {
        let owner = job(&k, &format!("job-{name}"))
            .await?
            .controller_owner_ref(&())
            .unwrap();
        k.run_pod(&node, TestPod::new(name).owned_by(owner)).await?;
        k.terminate(name, exit).await?;
    }
    eventually(Duration::from_secs(60), "the first verdict", || async {
        Ok(verdict_of(pods.get("before").await?.annotations()).is_some())
    })
    .await?;

    // A pod the agent marked, which will be deleted during the outage.
    let owner = job(&k, "job-evicted")
        .await?
        .controller_owner_ref(&())
        .unwrap();
    let marked = TestPod::new("evicted")
        .owned_by(owner)
        .interrupted(&notice.for_pod(&node));
    k.run_pod(&node, marked).await?;

    // The connection to the API server is black-holed (open connections hang), then
    // refused, while a spot-killed pod fails and the marked pod is deleted.
    proxy.set(Mode::BlackHole);
    k.finish_deletion("evicted").await?;
    let owner = job(&k, "job-during")
        .await?
        .controller_owner_ref(&())
        .unwrap();
    k.run_pod(&node, TestPod::new("during").owned_by(owner))
        .await?;
    k.terminate("during", Exit::KILLED).await?;
    tokio::time::sleep(Duration::from_secs(15)).await;
    proxy.set(Mode::Refuse);
    tokio::time::sleep(Duration::from_secs(5)).await;
    proxy.set(Mode::Pass);

    eventually(
        Duration::from_secs(120),
        "the verdict on the pod and its Job",
        || async {
            Ok(
                verdict_of(pods.get("during").await?.annotations()).is_some()
                    && verdict_of(jobs.get("job-during").await?.annotations()).is_some(),
            )
        },
    )
    .await?;
    eventually(
        Duration::from_secs(60),
        "the deleted pod's Job verdict",
        || async { Ok(verdict_of(jobs.get("job-evicted").await?.annotations()).is_some()) },
    )
    .await?;
    // The notice's record lists every object marked, those of the outage included: its
    // writes are retried with the verdicts.
    let records = reclaim_service::interruptions::api(k.client());
    let ns = &k.namespace;
    let keys = [
        "Pod/{ns}/before",
        "Job/{ns}/job-before",
        "Pod/{ns}/during",
        "Job/{ns}/job-during",
        "Job/{ns}/job-evicted",
    ]
    .map(|key| key.replace("{ns}", ns));
    eventually(
        Duration::from_secs(60),
        "the record to list every object marked",
        || async {
            let record = records.get(&record_name).await?;
            Ok(keys
                .iter()
                .all(|key| record.data["status"]["verdicts"][key].is_object()))
        },
    )
    .await?;
    assert_eq!(
        records.get(&record_name).await?.data["status"]["retryable"],
        5
    );
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(10), task).await??;
    Ok(())
}

#[tokio::test]
async fn a_leader_stopped_by_sigterm_releases_the_lease_and_the_follower_takes_over_at_once()
-> Result<()> {
    let k = TestKubelet::new(
        ControlPlane::shared().admin_client().await?,
        "classify-release",
    )
    .await?;
    // A lease of 60 s: without the release, the follower would wait for it to expire.
    let lease = Duration::from_secs(60);
    let (stop_a, task_a, _) = start_classifier_as(&k, "replica-a", k.client().clone(), lease);
    let holder = || lease_holder(&k);
    eventually(Duration::from_secs(30), "replica-a to lead", || async {
        Ok(holder().await?.as_deref() == Some("replica-a"))
    })
    .await?;
    let (stop_b, task_b, _) = start_classifier_as(&k, "replica-b", k.client().clone(), lease);
    stop_replica(stop_a, task_a).await?;
    eventually(
        Duration::from_secs(15),
        "replica-b to take over, long before 60 s",
        || async { Ok(holder().await?.as_deref() == Some("replica-b")) },
    )
    .await?;
    stop_replica(stop_b, task_b).await?;
    Ok(())
}

#[tokio::test]
async fn a_leader_whose_connection_is_black_holed_stops_writing_and_the_follower_takes_over()
-> Result<()> {
    let (k, node, notice) = noticed_node("classify-hole", "spot-hole").await?;
    let cp = ControlPlane::shared();
    let proxy = FaultProxy::start(cp.server.trim_start_matches("https://")).await?;
    let via_proxy = cp
        .client_via(Some(&proxy.url()), ReadTimeout::Watches)
        .await?;
    let lease = Duration::from_secs(10);
    let (stop_a, task_a, _) = start_classifier_as(&k, "replica-a", via_proxy, lease);
    let holder = || lease_holder(&k);
    eventually(Duration::from_secs(30), "replica-a to lead", || async {
        Ok(holder().await?.as_deref() == Some("replica-a"))
    })
    .await?;
    let (stop_b, task_b, _) = start_classifier_as(&k, "replica-b", k.client().clone(), lease);

    proxy.set(Mode::BlackHole);
    eventually(
        Duration::from_secs(60),
        "replica-b to take the Lease over",
        || async { Ok(holder().await?.as_deref() == Some("replica-b")) },
    )
    .await?;
    let record = notice.for_pod(&node);
    k.run_pod(&node, TestPod::new("after").interrupted(&record))
        .await?;
    k.terminate("after", Exit::KILLED).await?;
    let pods = k.pods();
    eventually(Duration::from_secs(60), "the verdict", || async {
        Ok(verdict_of(pods.get("after").await?.annotations()).is_some())
    })
    .await?;
    assert_eq!(
        verdict_writer(&pods.get("after").await?).as_deref(),
        Some("replica-b")
    );
    // Reachable again, the old leader sees the new holder and follows.
    proxy.set(Mode::Pass);
    stop_replica(stop_a, task_a).await?;
    assert_eq!(
        holder().await?.as_deref(),
        Some("replica-b"),
        "a follower releases nothing"
    );
    stop_replica(stop_b, task_b).await?;
    Ok(())
}

#[tokio::test]
async fn ready_only_once_every_watch_has_listed_and_unhealthy_while_watches_keep_failing()
-> Result<()> {
    let k = TestKubelet::new(
        ControlPlane::shared().admin_client().await?,
        "classify-health",
    )
    .await?;
    // A ServiceAccount that may hold the Lease but not watch pods or nodes: the watches
    // are refused (403) for as long as it runs, while the leadership works.
    let ns = k.namespace.clone();
    create(&k, serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "lease-only", "namespace": ns}})).await?;
    create(&k, serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "lease-only", "namespace": ns},
        "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}]})).await?;
    create(&k, serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "lease-only", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "lease-only"},
        "subjects": [{"kind": "ServiceAccount", "name": "lease-only", "namespace": ns}]})).await?;
    let client = ControlPlane::shared()
        .service_account_client(&ns, "lease-only", ReadTimeout::Watches)
        .await?;
    let health = Arc::new(reclaim_service::endpoints::Health::new(Duration::MAX));
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let election = Election {
        lease_name: "reclaim-classifier".into(),
        namespace: ns.clone(),
        identity: "replica-health".into(),
        lease_duration: Duration::from_secs(10),
    };
    let settings = Settings {
        retention: Duration::from_secs(3600),
        record_retention: Duration::from_secs(30 * 86400),
        namespace: Some(ns.clone()),
        metrics: Arc::new(ClassifierMetrics::default()),
        health: health.clone(),
    };
    let task = tokio::spawn(reclaim_classifier::elected::run_elected(
        client, settings, election, shutdown,
    ));
    eventually(
        Duration::from_secs(30),
        "/readyz to name the watches not listed",
        || async {
            Ok(health.not_ready_reason().is_some_and(|r| {
                r.contains("watches not listed yet: failed pods, interrupted pods, nodes")
            }))
        },
    )
    .await?;
    eventually(
        Duration::from_secs(90),
        "/healthz to report the failing watches",
        || async { Ok(!health.is_alive()) },
    )
    .await?;
    assert!(!health.is_ready(), "never listed, never ready");
    stop_replica(stop, task).await?;
    Ok(())
}

#[tokio::test]
async fn a_kill_under_only_a_rebalance_or_under_a_record_long_over_is_never_called_spot_caused()
-> Result<()> {
    let k = TestKubelet::new(
        ControlPlane::shared().admin_client().await?,
        "classify-precision",
    )
    .await?;
    let (rebalanced, quiet) = (k.node_name("spot-rebalanced"), k.node_name("spot-quiet"));
    k.register_node(TestNode::spot(&rebalanced)).await?;
    k.register_node(TestNode::spot(&quiet)).await?;
    let now = jiff::Timestamp::now();
    let rebalance = Notice {
        kind: NoticeKind::Rebalance,
        event_id: "rebalance-1".into(),
        deadline: None,
        ..reclaim_testbed::clouds::aws_spot_notice()
    };
    reclaim_agent::node::update_node(&k.nodes(), &rebalanced, |n| {
        reclaim_agent::node::apply_notice_patch(n, &rebalance)
    })
    .await?;
    // A maintenance notice of two hours ago, long canceled: its record stayed on the pod.
    let old = Notice {
        kind: NoticeKind::ScheduledMaintenance,
        event_id: "instance-event-old".into(),
        notice_time: now - jiff::SignedDuration::from_hours(2),
        deadline: Some(now - jiff::SignedDuration::from_mins(110)),
        detected_at: now - jiff::SignedDuration::from_hours(2),
        ..reclaim_testbed::clouds::aws_spot_notice()
    };
    let (stop, task, metrics) = start_classifier(&k, "replica-precise");
    k.run_pod(&rebalanced, TestPod::new("liveness-killed"))
        .await?;
    k.terminate("liveness-killed", Exit::KILLED).await?;
    k.run_pod(
        &quiet,
        TestPod::new("long-after").interrupted(&old.for_pod(&quiet)),
    )
    .await?;
    k.terminate("long-after", Exit::KILLED).await?;
    judged(&metrics, "unknown", 2.0).await?;
    let pods = k.pods();
    for name in ["liveness-killed", "long-after"] {
        assert!(
            verdict_of(pods.get(name).await?.annotations()).is_none(),
            "{name} was marked"
        );
    }
    stop_replica(stop, task).await?;
    Ok(())
}

/// Waits until the classifier has reached `count` verdicts of kind `verdict` (`unknown`,
/// `not_spot`): the pods were judged, whatever it wrote.
async fn judged(metrics: &ClassifierMetrics, verdict: &str, count: f64) -> Result<()> {
    eventually(
        Duration::from_secs(60),
        &format!("{count} {verdict} verdicts"),
        || async {
            Ok(reclaim_testbed::agent::metric_sum(
                &metrics.encode(),
                "reclaim_classifier_verdicts_total",
                &[("verdict", verdict)],
            ) >= count)
        },
    )
    .await
}

/// Creates `manifest` (any kind) as cluster admin.
async fn create(k: &TestKubelet, manifest: serde_json::Value) -> Result<()> {
    let object: kube::core::DynamicObject = serde_json::from_value(manifest)?;
    let gvk = anyhow::Context::context(object.types.clone(), "typed")?.try_into()?;
    let resource = kube::discovery::ApiResource::from_gvk(&gvk);
    let api: Api<kube::core::DynamicObject> = match object.metadata.namespace.as_deref() {
        Some(namespace) => Api::namespaced_with(k.client().clone(), namespace, &resource),
        None => Api::all_with(k.client().clone(), &resource),
    };
    api.create(&PostParams::default(), &object).await?;
    Ok(())
}

#[tokio::test]
async fn a_verdict_the_server_refuses_for_good_is_given_up_and_counted() -> Result<()> {
    let (k, node, _) = noticed_node("classify-refused", "spot-refused").await?;
    let ns = k.namespace.clone();
    // A ServiceAccount that may see everything it needs and mark pods, but not Jobs: the
    // same request would be refused (403) however often it is sent.
    let rules = |name: &str, rules: serde_json::Value| {
        serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": name, "namespace": ns}, "rules": rules})
    };
    let binding = |kind: &str, name: &str| {
        let mut binding = serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": format!("{kind}Binding"),
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": "classifier", "namespace": ns}]});
        if kind == "Role" {
            binding["metadata"]["namespace"] = ns.clone().into();
        }
        binding
    };
    let watcher_role = format!("classify-refused-{ns}");
    create(&k, serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "classifier", "namespace": ns}})).await?;
    create(&k, rules("reads", serde_json::json!([
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "patch"]},
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]},
    ]))).await?;
    create(&k, binding("Role", "reads")).await?;
    create(&k, serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": watcher_role},
        "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}]})).await?;
    create(&k, binding("ClusterRole", &watcher_role)).await?;
    let client = ControlPlane::shared()
        .service_account_client(&ns, "classifier", ReadTimeout::Watches)
        .await?;
    let (stop, task, metrics) =
        start_classifier_as(&k, "replica-refused", client, Duration::from_secs(10));
    let owner = job(&k, "job-refused")
        .await?
        .controller_owner_ref(&())
        .unwrap();
    k.run_pod(&node, TestPod::new("refused").owned_by(owner))
        .await?;
    k.terminate("refused", Exit::KILLED).await?;
    let pods = k.pods();
    eventually(
        Duration::from_secs(60),
        "the pod's verdict and the Job's refusal given up",
        || async {
            Ok(
                verdict_of(pods.get("refused").await?.annotations()).is_some()
                    && reclaim_testbed::agent::metric_sum(
                        &metrics.encode(),
                        "reclaim_classifier_dropped_total",
                        &[("reason", "refused")],
                    ) >= 1.0,
            )
        },
    )
    .await?;
    assert_eq!(
        reclaim_testbed::agent::metric_sum(
            &metrics.encode(),
            "reclaim_classifier_pending_verdicts",
            &[]
        ),
        0.0,
        "a refused write is not retried"
    );
    let jobs: Api<Job> = Api::namespaced(k.client().clone(), &ns);
    assert!(verdict_of(jobs.get("job-refused").await?.annotations()).is_none());
    stop_replica(stop, task).await?;
    Ok(())
}

#[tokio::test]
async fn the_servers_disruption_targets_and_a_native_sidecars_exit_are_read_from_the_real_pods()
-> Result<()> {
    let (k, node, _) = noticed_node("classify-current", "spot-current").await?;
    let (stop, task, metrics) = start_classifier(&k, "replica-current");
    // No agent record on any of these pods: what ties them to the notice is the node's
    // notice, and what says they were taken away is the server's own condition.
    for (name, sidecar) in [
        ("evicted", None),
        ("orphaned", None),
        ("sidecar-evicted", Some("log-shipper")),
        ("sidecar-oom", Some("proxy")),
    ] {
        let owner = job(&k, &format!("job-{name}"))
            .await?
            .controller_owner_ref(&())
            .unwrap();
        let mut pod = TestPod::new(name).owned_by(owner).grace_period(30);
        if let Some(sidecar) = sidecar {
            pod = pod.native_sidecar(sidecar);
        }
        k.run_pod(&node, pod).await?;
    }
    let admin = k.client();
    for name in ["evicted", "sidecar-evicted", "sidecar-oom"] {
        let uid = k.pods().get(name).await?.uid().unwrap_or_default();
        let pod = reclaim_agent::eviction::PodRef {
            namespace: &k.namespace,
            name,
            uid: &uid,
        };
        assert_eq!(
            reclaim_agent::eviction::evict(admin, pod, None).await?,
            reclaim_agent::eviction::Answer::Accepted
        );
    }
    let sigterm = Exit {
        code: 143,
        reason: "Error",
    };
    k.terminate("evicted", sigterm).await?;
    // A native sidecar is stopped after the main container; a clean stop says nothing.
    k.terminate_with_sidecar(
        "sidecar-evicted",
        sigterm,
        Some(("log-shipper", Exit::COMPLETED)),
    )
    .await?;
    // The sidecar's own OOM kill is the pod's own failure, whatever the node went through.
    k.terminate_with_sidecar(
        "sidecar-oom",
        Exit::KILLED,
        Some(("proxy", Exit::OOM_KILLED)),
    )
    .await?;

    let jobs: Api<Job> = Api::namespaced(k.client().clone(), &k.namespace);
    for name in ["job-evicted", "job-sidecar-evicted"] {
        eventually(Duration::from_secs(60), name, || async {
            Ok(verdict_of(jobs.get(name).await?.annotations()).is_some())
        })
        .await?;
        let (cause, retryable, evidence) = verdict_of(jobs.get(name).await?.annotations()).unwrap();
        assert_eq!(
            (cause.as_str(), retryable.as_str()),
            ("spot-interruption", "true")
        );
        assert_eq!(
            evidence.signals,
            [
                "exit-143",
                "disruption-target:EvictionByEvictionAPI",
                "node-notice"
            ],
            "{name}"
        );
    }
    // The sidecar's OOM kill judged.
    judged(&metrics, "not_spot", 1.0).await?;
    assert!(verdict_of(jobs.get("job-sidecar-oom").await?.annotations()).is_none());

    // The instance is reclaimed with the pod still on it: the pod garbage collector marks
    // the orphan (after its 40 s quarantine) and deletes it.
    k.nodes().delete(&node, &Default::default()).await?;
    eventually(
        Duration::from_secs(150),
        "the orphan's Job verdict",
        || async { Ok(verdict_of(jobs.get("job-orphaned").await?.annotations()).is_some()) },
    )
    .await?;
    let (_, _, evidence) = verdict_of(jobs.get("job-orphaned").await?.annotations()).unwrap();
    assert!(
        evidence
            .signals
            .contains(&"disruption-target:DeletionByPodGC".to_owned()),
        "{:?}",
        evidence.signals
    );
    stop_replica(stop, task).await?;
    Ok(())
}

#[tokio::test]
async fn a_forged_record_whose_times_overflow_stops_nothing_among_real_kills() -> Result<()> {
    let (k, noticed, notice) = noticed_node("classify-forged", "spot-forged").await?;
    let quiet = k.node_name("spot-quiet");
    k.register_node(TestNode::spot(&quiet)).await?;
    let (stop, task, _) = start_classifier(&k, "replica-forged");
    // A pod's creator wrote a record whose deadline is the end of time: judged first (one
    // watch, in order), it must neither stop the classifier nor count as evidence.
    let forged = Notice {
        deadline: Some(jiff::Timestamp::MAX),
        ..notice.clone()
    };
    k.run_pod(
        &quiet,
        TestPod::new("forged").interrupted(&forged.for_pod(&quiet)),
    )
    .await?;
    k.terminate("forged", Exit::KILLED).await?;
    k.run_pod(
        &noticed,
        TestPod::new("real").interrupted(&notice.for_pod(&noticed)),
    )
    .await?;
    k.terminate("real", Exit::KILLED).await?;
    let pods = k.pods();
    eventually(
        Duration::from_secs(60),
        "the real kill's verdict",
        || async { Ok(verdict_of(pods.get("real").await?.annotations()).is_some()) },
    )
    .await?;
    assert!(verdict_of(pods.get("forged").await?.annotations()).is_none());
    assert!(!task.is_finished(), "the classifier is still running");
    stop_replica(stop, task).await?;
    Ok(())
}

#[tokio::test]
async fn a_pod_that_writes_its_own_verdict_gets_no_verdict_on_its_job() -> Result<()> {
    let (k, noticed, notice) = noticed_node("classify-self-marked", "spot-self").await?;
    let (stop, task, _) = start_classifier(&k, "replica-self");
    // A pod's creator writes the classifier's annotations itself, naming a real notice,
    // and the pod then fails by itself (exit 1) on that noticed node.
    let evidence = killed_under(&notice, &noticed, &format!("{}/self-marked", k.namespace));
    let owner = job(&k, "job-self-marked")
        .await?
        .controller_owner_ref(&())
        .unwrap();
    let forged = marked_spot_caused(TestPod::new("self-marked").owned_by(owner), &evidence)?;
    k.run_pod(&noticed, forged).await?;
    k.terminate("self-marked", Exit::FAILED).await?;
    // A real kill after it, on the same node (one watch, in order).
    let owner = job(&k, "job-real")
        .await?
        .controller_owner_ref(&())
        .unwrap();
    k.run_pod(&noticed, TestPod::new("real").owned_by(owner))
        .await?;
    k.terminate("real", Exit::KILLED).await?;
    let jobs: Api<Job> = Api::namespaced(k.client().clone(), &k.namespace);
    eventually(
        Duration::from_secs(60),
        "the real kill's Job verdict",
        || async { Ok(verdict_of(jobs.get("job-real").await?.annotations()).is_some()) },
    )
    .await?;
    assert!(
        verdict_of(jobs.get("job-self-marked").await?.annotations()).is_none(),
        "a forged verdict reached the Job"
    );
    stop_replica(stop, task).await?;
    Ok(())
}

#[tokio::test]
async fn a_pod_that_loses_the_agents_label_in_an_undo_is_not_taken_for_deleted() -> Result<()> {
    let (k, node, notice) = noticed_node("classify-undo", "spot-undo").await?;
    // Ready: every watch has listed, so pods that come and go at once are seen.
    let (stop, task, _) = start_ready_classifier(&k, "replica-undo").await?;
    let record = notice.for_pod(&node);
    for name in ["stays", "evicted"] {
        let owner = job(&k, &format!("job-{name}"))
            .await?
            .controller_owner_ref(&())
            .unwrap();
        k.run_pod(
            &node,
            TestPod::new(name).owned_by(owner).interrupted(&record),
        )
        .await?;
    }
    // The notice is undone (a canceled maintenance, a drill called off): the agent takes
    // its label and stamp off the pod that stays. Then the other pod is really deleted.
    let undo = serde_json::json!({"metadata": {
        "labels": {"reclaim.dev/interrupted": null},
        "annotations": {"reclaim.dev/interruption": null},
    }});
    k.pods()
        .patch(
            "stays",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&undo),
        )
        .await?;
    k.finish_deletion("evicted").await?;
    let jobs: Api<Job> = Api::namespaced(k.client().clone(), &k.namespace);
    eventually(
        Duration::from_secs(60),
        "the deleted pod's Job verdict",
        || async { Ok(verdict_of(jobs.get("job-evicted").await?.annotations()).is_some()) },
    )
    .await?;
    assert!(
        verdict_of(jobs.get("job-stays").await?.annotations()).is_none(),
        "a running pod's Job was marked spot-caused"
    );
    let stays = k.pods().get("stays").await?;
    assert!(verdict_of(stays.annotations()).is_none());
    stop_replica(stop, task).await?;
    Ok(())
}

#[tokio::test]
async fn a_later_failure_of_its_own_replaces_an_earlier_spot_verdict() -> Result<()> {
    let (k, spot, _) = noticed_node("classify-latest", "spot-latest").await?;
    let on_demand = k.node_name("on-demand");
    k.register_node(TestNode::new(&on_demand)).await?;
    let (stop, task, _) = start_classifier(&k, "replica-latest");
    let pods = k.pods();
    let jobs: Api<Job> = Api::namespaced(k.client().clone(), &k.namespace);
    // An executor is reclaimed (Spark survives it): its driver reads retryable. A Job's
    // first pod is reclaimed: the Job reads retryable.
    spark_app_loses_an_executor(&k, &spot, &on_demand, "driver-oom", None).await?;
    let owner = job(&k, "job-retried")
        .await?
        .controller_owner_ref(&())
        .unwrap();
    k.run_pod(&spot, TestPod::new("first-try").owned_by(owner.clone()))
        .await?;
    k.terminate("first-try", Exit::KILLED).await?;
    eventually(Duration::from_secs(60), "the spot verdicts", || async {
        Ok(cause_of(pods.get("driver-oom").await?.annotations())
            == Some(("spot-interruption", "true"))
            && cause_of(jobs.get("job-retried").await?.annotations())
                == Some(("spot-interruption", "true")))
    })
    .await?;
    // Later, the driver runs out of memory, and the Job's next pod fails by itself.
    k.terminate("driver-oom", Exit::OOM_KILLED).await?;
    k.run_pod(&on_demand, TestPod::new("second-try").owned_by(owner))
        .await?;
    k.terminate("second-try", Exit::FAILED).await?;
    eventually(
        Duration::from_secs(60),
        "the later own failures to replace the spot verdicts",
        || async {
            Ok(cause_of(pods.get("driver-oom").await?.annotations())
                == Some(("own-failure", "false"))
                && cause_of(jobs.get("job-retried").await?.annotations())
                    == Some(("own-failure", "false")))
        },
    )
    .await?;
    let evidence: reclaim_model::verdict::OwnFailure = serde_json::from_str(
        &jobs.get("job-retried").await?.annotations()["reclaim.dev/evidence"],
    )?;
    assert_eq!(evidence.pod, format!("{}/second-try", k.namespace));
    assert!(cause_of(pods.get("second-try").await?.annotations()).is_none());
    stop_replica(stop, task).await?;
    Ok(())
}

#[tokio::test]
async fn an_owner_recreated_under_the_same_name_is_not_marked() -> Result<()> {
    let (k, node, notice) = noticed_node("classify-owner-uid", "spot-owner-uid").await?;
    let (stop, task, _) = start_ready_classifier(&k, "replica-owner-uid").await?;
    let record = notice.for_pod(&node);
    let jobs: Api<Job> = Api::namespaced(k.client().clone(), &k.namespace);
    // A pod the agent stamped, owned by a Job that is deleted (the garbage collector then
    // deletes the pod) and created again under the same name before the pod is gone, as
    // a scheduler that names its Jobs after the task does.
    let first = job(&k, "task-a").await?;
    let owner = first.controller_owner_ref(&()).unwrap();
    k.run_pod(
        &node,
        TestPod::new("old-run").owned_by(owner).interrupted(&record),
    )
    .await?;
    jobs.delete("task-a", &kube::api::DeleteParams::background())
        .await?;
    eventually(
        Duration::from_secs(60),
        "the garbage collector to delete the pod",
        || async {
            Ok(k.pods()
                .get("old-run")
                .await?
                .metadata
                .deletion_timestamp
                .is_some())
        },
    )
    .await?;
    eventually(
        Duration::from_secs(60),
        "the first Job to be gone",
        || async { Ok(jobs.get_opt("task-a").await?.is_none()) },
    )
    .await?;
    let second = job(&k, "task-a").await?;
    assert_ne!(first.uid(), second.uid());
    k.finish_deletion("old-run").await?;
    // A real eviction after it, on the same watch.
    let owner = job(&k, "task-b").await?.controller_owner_ref(&()).unwrap();
    k.run_pod(
        &node,
        TestPod::new("evicted").owned_by(owner).interrupted(&record),
    )
    .await?;
    k.finish_deletion("evicted").await?;
    eventually(
        Duration::from_secs(60),
        "the evicted pod's Job verdict",
        || async { Ok(verdict_of(jobs.get("task-b").await?.annotations()).is_some()) },
    )
    .await?;
    assert!(
        verdict_of(jobs.get("task-a").await?.annotations()).is_none(),
        "the new Job under the old one's name was marked"
    );
    stop_replica(stop, task).await?;
    Ok(())
}

#[tokio::test]
async fn a_program_that_exits_1_on_the_drains_sigterm_is_spot_caused_and_one_that_failed_before_is_not()
-> Result<()> {
    let (k, node, notice) = noticed_node("classify-trapped", "spot-trapped").await?;
    let (stop, task, _) = start_classifier(&k, "replica-trapped");
    let record = notice.for_pod(&node);
    let jobs: Api<Job> = Api::namespaced(k.client().clone(), &k.namespace);
    // The job failed by itself before the drain reached it, then the drain came.
    let owner = job(&k, "job-failed-first")
        .await?
        .controller_owner_ref(&())
        .unwrap();
    k.run_pod(
        &node,
        TestPod::new("failed-first")
            .owned_by(owner)
            .interrupted(&record),
    )
    .await?;
    k.terminate("failed-first", Exit::FAILED).await?;
    // The server's times are whole seconds: the request comes in a later one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    k.pods()
        .delete("failed-first", &kube::api::DeleteParams::default())
        .await?;
    // The drain asks a program to leave; it traps SIGTERM and exits 1.
    let owner = job(&k, "job-trapped")
        .await?
        .controller_owner_ref(&())
        .unwrap();
    k.run_pod(
        &node,
        TestPod::new("trapped")
            .owned_by(owner)
            .interrupted(&record)
            .grace_period(30),
    )
    .await?;
    k.pods()
        .delete("trapped", &kube::api::DeleteParams::default())
        .await?;
    k.terminate("trapped", Exit::FAILED).await?;
    eventually(
        Duration::from_secs(60),
        "the trapped program's Job verdict",
        || async { Ok(verdict_of(jobs.get("job-trapped").await?.annotations()).is_some()) },
    )
    .await?;
    let (_, _, evidence) = verdict_of(jobs.get("job-trapped").await?.annotations()).unwrap();
    assert_eq!(evidence.exit_code, Some(1));
    assert!(
        evidence
            .signals
            .contains(&"exit-1-after-drain-request".to_owned()),
        "{:?}",
        evidence.signals
    );
    assert!(
        verdict_of(jobs.get("job-failed-first").await?.annotations()).is_none(),
        "a failure before the drain's request was called spot-caused"
    );
    stop_replica(stop, task).await?;
    Ok(())
}
