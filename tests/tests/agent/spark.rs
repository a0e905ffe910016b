//! A real Spark application, its executors on two spot nodes run by the executor kubelet
//! (`reclaim_testbed::spark`), one of them reclaimed mid-shuffle and drained by the real
//! agent: the job finishes with the right result, the drained executors decommission.

use super::*;

use reclaim_testbed::spark::{JobFigures, SparkDist, SparkNodes};

#[tokio::test]
async fn a_spark_job_survives_the_reclaim_of_half_its_executors_mid_shuffle() -> Result<()> {
    let cp = ControlPlane::shared();
    let work = cp.dir.join("spark-e2e");
    std::fs::create_dir_all(&work)?;
    let dist = SparkDist::provisioned(&work).await?;
    let k = kubelet("spark-e2e").await?;
    let SparkNodes {
        spot,
        executors: _executors,
        ..
    } = SparkNodes::start(&k, &dist, work.join("executors")).await?;
    let (stop_classifier, classifier) = start_classifier(&k);
    let sim = simulator().await?;
    let agent = start_agent(&spot[0].name, &sim.url(), &[]).await?;
    agent.ready().await?;
    let driver_log = work.join("driver.log");
    let mut driver = dist.start_driver(
        cp,
        &k.namespace,
        "driver",
        (400_000, Duration::from_secs(4)),
        &driver_log,
        &[],
    )?;
    // Mid-shuffle: the middle stage (reading the first shuffle) has started.
    eventually(
        Duration::from_secs(180),
        "the middle stage to start",
        || async {
            let log = std::fs::read_to_string(&driver_log).unwrap_or_default();
            Ok(log.contains("Starting task 0.0 in stage 1.0"))
        },
    )
    .await?;
    sim.state()
        .aws
        .schedule_spot("terminate", Timestamp::now(), SignedDuration::from_secs(60));
    let status = tokio::time::timeout(Duration::from_secs(300), driver.wait()).await??;
    let log = std::fs::read_to_string(&driver_log)?;
    assert!(status.success(), "the job failed:\n{}", tail(&log));
    assert!(log.contains("RESULT ok 400000"), "{}", tail(&log));
    // Spark's own account: the reclaimed node's executors were decommissioned, moved
    // their shuffle blocks, and none was lost; no task failed, no stage ran again.
    let figures = JobFigures::read(&driver_log, &work.join("executors"))?;
    assert!(figures.correct, "{}", tail(&log));
    assert_eq!(figures.decommissioned_executors, 2, "{figures:?}");
    assert!(
        figures.migrated_blocks > 0,
        "no shuffle block migrated: {figures:?}"
    );
    assert_eq!(
        (
            figures.lost_executors,
            figures.failed_tasks,
            figures.resubmitted
        ),
        (0, 0, 0),
        "{figures:?}\n{}",
        tail(&log)
    );
    // Nothing failed, so nothing is retryable: the executors left cleanly (exit 0) when
    // their pods were evicted. A real kill judged after them (one watch, in order) says
    // when the classifier has seen their deletions.
    let notice = node_notice(&k.nodes().get(&spot[0].name).await?).context("the notice")?;
    let jobs: Api<k8s_openapi::api::batch::v1::Job> =
        Api::namespaced(k.client().clone(), &k.namespace);
    let sentinel: k8s_openapi::api::batch::v1::Job = serde_json::from_value(json!({
        "metadata": {"name": "sentinel"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "registry.invalid/reclaim/test:1"}]}}},
    }))?;
    let sentinel = jobs.create(&Default::default(), &sentinel).await?;
    use kube::Resource;
    k.run_pod(
        &spot[0].name,
        TestPod::new("sentinel")
            .owned_by(sentinel.controller_owner_ref(&()).context("owner")?)
            .interrupted(&notice.for_pod(&spot[0].name)),
    )
    .await?;
    eventually(WAIT, "the executors' pods to be gone", || async {
        let executors = k
            .pods()
            .list(&ListParams::default().labels("spark-role=executor"))
            .await?;
        Ok(executors.items.is_empty())
    })
    .await?;
    k.finish_deletion("sentinel").await?;
    eventually(WAIT, "the sentinel's verdict", || async {
        Ok(jobs
            .get("sentinel")
            .await?
            .annotations()
            .contains_key("reclaim.dev/cause"))
    })
    .await?;
    let driver_pod = k.pods().get("driver").await?;
    assert!(
        !driver_pod.annotations().contains_key("reclaim.dev/cause"),
        "the driver was marked although nothing failed: {:?}",
        driver_pod.annotations()
    );
    stop_classifier.send(true)?;
    classifier.await?;
    agent.stop().await?;
    Ok(())
}

/// A classifier replica for `k`'s namespace, leading at once.
fn start_classifier(
    k: &TestKubelet,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    use reclaim_classifier::controller::Settings;
    use reclaim_classifier::leader::Election;
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let settings = Settings {
        retention: Duration::from_secs(3600),
        record_retention: Duration::from_secs(86400),
        namespace: Some(k.namespace.clone()),
        metrics: Default::default(),
        health: Arc::new(reclaim_service::endpoints::Health::new(Duration::MAX)),
    };
    let election = Election {
        lease_name: "reclaim-classifier".into(),
        namespace: k.namespace.clone(),
        identity: "spark-e2e".into(),
        lease_duration: Duration::from_secs(10),
    };
    let task = tokio::spawn(reclaim_classifier::elected::run_elected(
        k.client().clone(),
        settings,
        election,
        shutdown,
    ));
    (stop, task)
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}
