//! A drill end to end, on a GKE spot node and with no cloud involved: the annotation, the
//! real agent's taint and drain, the classifier's verdict on the Job marked as a drill,
//! and the Interruption record completed with it.

use super::*;
use jiff::SignedDuration;
use kube::api::{Patch, PatchParams};
use reclaim_model::Provider;
use reclaim_model::interruption::record_name;
use reclaim_model::keys::DRILL_ANNOTATION;
use reclaim_simulator::{SimState, Simulator};
use reclaim_testbed::agent::start_agent;
use reclaim_testbed::clouds;
use reclaim_testbed::eventually_some;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_drill_ends_with_the_job_marked_as_a_drill_and_the_record_completed() -> Result<()> {
    let cp = ControlPlane::shared();
    cp.install_interruption_crd()?;
    let k = TestKubelet::new(cp.admin_client().await?, "drill-e2e").await?;
    let node = k.node_name("gke-spot");
    k.register_node(clouds::spot_node(Provider::Gcp, &node))
        .await?;
    let owner = job(&k, "nightly-load")
        .await?
        .controller_owner_ref(&())
        .unwrap();
    k.run_pod(
        &node,
        TestPod::new("nightly-load-x1")
            .owned_by(owner)
            .grace_period(1),
    )
    .await?;
    let finisher = k.keep_finishing_deletions(&node);
    let sim = Simulator::start("127.0.0.1:0".parse()?, SimState::default()).await?;
    let flags = clouds::agent_flags(Provider::Gcp, &node, SignedDuration::from_secs(30));
    let mut flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    flags.extend(["--safety-margin", "5s"]);
    let agent = start_agent(&node, &sim.url(), &flags).await?;
    agent.ready().await?;
    let (stop, task, _) = start_classifier(&k, "drill-e2e");

    let started = jiff::Timestamp::now();
    let drill =
        serde_json::json!({"metadata": {"annotations": {DRILL_ANNOTATION: "spot-interruption"}}});
    k.nodes()
        .patch(&node, &PatchParams::default(), &Patch::Merge(&drill))
        .await?;
    let notice = eventually_some(WAIT, "the drill's notice on the node", || async {
        let read = k.nodes().get(&node).await?;
        Ok(read
            .annotations()
            .get("reclaim.dev/notice")
            .map(|t| Notice::from_json(t))
            .transpose()?)
    })
    .await?;
    assert_eq!(notice.provider, Provider::Drill);
    // No lead given: GCP's own 30 s, from when the agent first saw the annotation (a
    // moment after `started`, truncated to the second).
    let lead = notice.deadline.unwrap().duration_since(started);
    assert!(
        lead >= SignedDuration::from_secs(28) && lead <= SignedDuration::from_secs(40),
        "{lead:?}"
    );

    let jobs: Api<Job> = Api::namespaced(k.client().clone(), &k.namespace);
    let (cause, retryable, evidence) = eventually_some(WAIT, "the Job's verdict", || async {
        Ok(verdict_of(jobs.get("nightly-load").await?.annotations()))
    })
    .await?;
    assert_eq!(
        (cause.as_str(), retryable.as_str()),
        ("spot-interruption", "true")
    );
    assert_eq!(
        evidence.provider,
        Some(Provider::Drill),
        "Airflow can tell a drill"
    );
    assert_eq!(evidence.event_id.as_deref(), Some(notice.event_id.as_str()));

    let name = record_name(&node, &notice.event_id, notice.notice_time);
    let records = reclaim_service::interruptions::api(k.client());
    let key = format!("Job/{}/nightly-load", k.namespace);
    let record = eventually_some(WAIT, "the record drained and completed", || async {
        Ok(records.get_opt(&name).await?.filter(|r| {
            r.data["status"]["phase"] == "Drained" && r.data["status"]["verdicts"][&key].is_object()
        }))
    })
    .await?;
    assert_eq!(record.data["spec"]["provider"], "drill");
    assert_eq!(record.data["status"]["retryable"], 1);
    let entry = &record.data["status"]["verdicts"][&key];
    assert_eq!(entry["pod"], format!("{}/nightly-load-x1", k.namespace));
    assert!(
        entry["signals"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s == "pod-annotation")),
        "{entry}"
    );
    stop_replica(stop, task).await?;
    agent.stop().await?;
    finisher.abort();
    Ok(())
}
