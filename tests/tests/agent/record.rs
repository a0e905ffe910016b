//! The Interruption record as the agent writes it, and drills: started, taken over by a
//! real notice, called off mid-drain, ignored in a dry run. Every assertion reads the
//! record, the Node and the pods back from the API server.

use super::*;
use kube::api::{DeleteParams, PostParams};
use kube::core::DynamicObject;
use reclaim_model::interruption::record_name;
use reclaim_model::keys::DRILL_ANNOTATION;
use reclaim_testbed::agent::RunningAgent;

/// The record of the notice `node` carries now (`None` until both exist).
pub(crate) async fn record_of_notice(k: &TestKubelet, node: &str) -> Result<Option<DynamicObject>> {
    let Some(notice) = node_notice(&k.nodes().get(node).await?) else {
        return Ok(None);
    };
    record(k, &record_name(node, &notice.event_id, notice.notice_time)).await
}

async fn record(k: &TestKubelet, name: &str) -> Result<Option<DynamicObject>> {
    ControlPlane::shared().install_interruption_crd()?;
    Ok(reclaim_service::interruptions::api(k.client())
        .get_opt(name)
        .await?)
}

/// The record of `node`'s notice once its drain has finished.
pub(crate) async fn finished_record(k: &TestKubelet, node: &str) -> Result<DynamicObject> {
    eventually_some(WAIT, "the record's final state", || async {
        Ok(record_of_notice(k, node)
            .await?
            .filter(|r| r.data["status"]["drain"]["finishedAt"].is_string()))
    })
    .await
}

pub(crate) fn phase(record: &DynamicObject) -> &str {
    record.data["status"]["phase"].as_str().unwrap_or_default()
}

/// The record's entry for pod `name`.
fn pod_entry<'a>(record: &'a DynamicObject, name: &str) -> Option<&'a serde_json::Value> {
    record.data["status"]["drain"]["pods"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
}

pub(crate) async fn annotate_drill(k: &TestKubelet, node: &str, value: Option<&str>) -> Result<()> {
    let patch = json!({"metadata": {"annotations": {DRILL_ANNOTATION: value}}});
    k.nodes()
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// A guarded AWS spot node running `exec-1`, behind a budget that never allows its
/// eviction (deleted at the deadline), and `task`; a kubelet finishing their deletions.
async fn node_with_a_blocked_executor(
    test: &str,
) -> Result<(TestKubelet, Simulator, String, RunningAgent, Tasks)> {
    let (k, sim, node) = spot_node(test).await?;
    ControlPlane::shared().install_interruption_crd()?;
    k.run_executor_behind_refusing_budget(&node, 2).await?;
    let (_history, kubelet) = watched_with_kubelet(&k, &node);
    let agent = start_agent(&node, &sim.url(), &["--safety-margin", "5s"]).await?;
    agent.ready().await?;
    Ok((k, sim, node, agent, kubelet))
}

#[tokio::test]
async fn the_record_follows_the_drain_and_outlives_the_node() -> Result<()> {
    let (k, sim, node, agent, _kubelet) = node_with_a_blocked_executor("record-drain").await?;
    sim.state()
        .aws
        .schedule_spot("terminate", Timestamp::now(), SignedDuration::from_secs(25));

    // Written while the drain goes: the budget keeps refusing `exec-1` for about 15 s.
    let draining = eventually_some(WAIT, "the record of a drain in progress", || async {
        Ok(record_of_notice(&k, &node).await?.filter(|r| {
            phase(r) == "Draining"
                && pod_entry(r, "exec-1").is_some_and(|p| p["budgetRefusals"].as_u64() >= Some(1))
        }))
    })
    .await?;
    let name = draining.name_any();
    let notice = node_notice(&k.nodes().get(&node).await?).context("the notice")?;
    assert_eq!(draining.data["spec"]["provider"], "aws");
    assert_eq!(draining.data["spec"]["eventId"], notice.event_id.as_str());
    assert_eq!(draining.data["spec"]["node"], node.as_str());
    assert!(pod_entry(&draining, "exec-1").unwrap()["askedAt"].is_string());

    let finished = finished_record(&k, &node).await?;
    assert_eq!(finished.name_any(), name);
    let drain = &finished.data["status"]["drain"];
    assert_eq!(phase(&finished), "Drained", "{drain}");
    assert_eq!(drain["podsTotal"], 2);
    assert_eq!(
        (drain["late"].as_u64(), drain["latePods"].as_str()),
        (Some(0), Some("none"))
    );
    assert_eq!(
        drain["outcomes"],
        json!({"evicted": 1, "deleted_at_deadline": 1})
    );
    let executor = pod_entry(&finished, "exec-1").context("exec-1 listed")?;
    assert_eq!(executor["outcome"], "deleted_at_deadline");
    assert_eq!(executor["group"], "first");
    assert!(
        executor["graceSeconds"].as_i64().is_some_and(|g| g <= 2),
        "{executor}"
    );
    assert!(
        executor["slackSeconds"].as_f64().is_some_and(|s| s >= 0.0),
        "{executor}"
    );
    let task = pod_entry(&finished, "task").context("task listed")?;
    assert_eq!(
        (task["outcome"].as_str(), task["late"].as_bool()),
        (Some("evicted"), Some(false))
    );
    // The node's slack is when a round saw it empty, which may be a round after the end.
    assert!(drain["slackSeconds"].is_number());
    // `kubectl get` shows the story at a glance (the CRD's printer columns).
    let listed = ControlPlane::shared().kubectl(&["get", "interruption", &name])?;
    let row: Vec<&str> = listed
        .lines()
        .nth(1)
        .context("a row")?
        .split_whitespace()
        .collect();
    assert_eq!(
        &row[..8],
        [
            name.as_str(),
            node.as_str(),
            "aws",
            "spot-interruption",
            "Drained",
            "2",
            "none",
            "0"
        ],
        "{listed}"
    );
    agent.stop().await?;

    // The Node goes, as the cloud takes the instance back. The garbage collector removes
    // what the Node owns (a canary ConfigMap); the record, owned by nothing, stays.
    let node_uid = k.nodes().get(&node).await?.uid().context("uid")?;
    let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(k.client().clone(), &k.namespace);
    configmaps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owned-by-node",
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid}]}}))?,
        )
        .await?;
    k.nodes().delete(&node, &DeleteParams::default()).await?;
    eventually(
        WAIT,
        "the garbage collector to remove what the Node owned",
        || async { Ok(configmaps.get_opt("owned-by-node").await?.is_none()) },
    )
    .await?;
    let kept = record(&k, &name)
        .await?
        .context("the record outlives the Node")?;
    assert_eq!(phase(&kept), "Drained");
    Ok(())
}

#[tokio::test]
async fn a_drill_drains_like_a_notice_and_removing_its_annotation_calls_it_off_mid_drain()
-> Result<()> {
    let (k, _sim, node, agent, _kubelet) = node_with_a_blocked_executor("drill-cancel").await?;
    let started = Timestamp::now();
    annotate_drill(&k, &node, Some("spot-interruption,lead=60s")).await?;

    eventually(WAIT, "the drill's taint, cordon and notice", || {
        node_state(&k, &node, |n| {
            reclaim_taints(n) == ["spot-interruption:NoSchedule"]
                && unschedulable(n)
                && node_notice(n).is_some_and(|n| n.provider == Provider::Drill)
        })
    })
    .await?;
    let notice = node_notice(&k.nodes().get(&node).await?).unwrap();
    assert!(notice.event_id.starts_with("drill-"), "{}", notice.event_id);
    let deadline = notice.deadline.context("a drill has a deadline")?;
    let lead = deadline.duration_since(started);
    assert!(
        lead >= SignedDuration::from_secs(58) && lead <= SignedDuration::from_secs(65),
        "the deadline is the lead after the annotation: {lead:?}"
    );
    // The task leaves; the executor's budget refuses, so it stays, marked, mid-drain.
    let pods = k.pods();
    eventually(WAIT, "the task drained", || gone(&pods, &["task"])).await?;
    let executor = pods.get("exec-1").await?;
    let marked = PodInterruption::from_json(
        executor
            .annotations()
            .get("reclaim.dev/interruption")
            .context("the executor carries the drill's reason")?,
    )?;
    assert_eq!(marked.notice.provider, Provider::Drill);
    let name = record_name(&node, &notice.event_id, notice.notice_time);
    eventually(WAIT, "the drill's record mid-drain", || async {
        Ok(record(&k, &name)
            .await?
            .is_some_and(|r| phase(&r) == "Draining" && r.data["spec"]["provider"] == "drill"))
    })
    .await?;

    annotate_drill(&k, &node, None).await?;
    eventually(WAIT, "the node given back", || {
        node_state(&k, &node, |n| {
            reclaim_taints(n).is_empty() && !unschedulable(n) && node_notice(n).is_none()
        })
    })
    .await?;
    let called_off = eventually_some(WAIT, "the record canceled", || async {
        Ok(record(&k, &name).await?.filter(|r| phase(r) == "Canceled"))
    })
    .await?;
    let reason = called_off.data["status"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("drill was called off"), "{reason}");
    assert!(
        pod_entry(&called_off, "task").is_some(),
        "the drain's figures stay"
    );
    // The executor stays, unmarked, not terminating.
    let executor = pods.get("exec-1").await?;
    assert!(executor.metadata.deletion_timestamp.is_none());
    assert!(
        !executor
            .annotations()
            .contains_key("reclaim.dev/interruption")
    );
    assert!(!executor.labels().contains_key("reclaim.dev/interrupted"));
    assert_eq!(
        agent.metric_sum(
            "reclaim_notices_total",
            &[("provider", "drill"), ("kind", "spot-interruption")]
        ),
        1.0
    );
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_real_notice_during_a_drill_takes_over_and_removing_the_drill_leaves_it() -> Result<()> {
    let (k, sim, node, agent, _kubelet) = node_with_a_blocked_executor("drill-then-real").await?;
    annotate_drill(&k, &node, Some("spot-interruption,lead=1h")).await?;
    eventually(WAIT, "the drill acted on", || {
        node_state(&k, &node, |n| {
            node_notice(n).is_some_and(|n| n.provider == Provider::Drill)
        })
    })
    .await?;
    let drill = node_notice(&k.nodes().get(&node).await?).unwrap();

    // The cloud reclaims the node for real, much sooner than the drill said.
    sim.state()
        .aws
        .schedule_spot("terminate", Timestamp::now(), SignedDuration::from_secs(20));
    eventually(WAIT, "the real notice to take over", || {
        node_state(&k, &node, |n| {
            node_notice(n).is_some_and(|n| n.provider == Provider::Aws)
        })
    })
    .await?;
    let replaced = eventually_some(WAIT, "the drill's record closed", || async {
        Ok(
            record(&k, &record_name(&node, &drill.event_id, drill.notice_time))
                .await?
                .filter(|r| phase(r) == "Canceled"),
        )
    })
    .await?;
    let reason = replaced.data["status"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("replaced by the aws spot-interruption notice"),
        "{reason}"
    );

    // Calling the drill off now does not give the node back: the real notice stands, and
    // its drain empties the node by the real deadline.
    annotate_drill(&k, &node, None).await?;
    let pods = k.pods();
    eventually(WAIT, "the real drain to finish", || {
        gone(&pods, &["exec-1", "task"])
    })
    .await?;
    let read = k.nodes().get(&node).await?;
    assert_eq!(reclaim_taints(&read), ["spot-interruption:NoSchedule"]);
    assert_eq!(node_notice(&read).map(|n| n.provider), Some(Provider::Aws));
    eventually(WAIT, "the real notice's record drained", || async {
        Ok(record_of_notice(&k, &node)
            .await?
            .is_some_and(|r| phase(&r) == "Drained" && r.data["spec"]["provider"] == "aws"))
    })
    .await?;
    agent.stop().await?;
    Ok(())
}

/// Announces a real AWS spot interruption 60 s ahead and waits until the node carries
/// its taint and notice: the agent still guards the node.
async fn a_real_notice_is_acted_on(k: &TestKubelet, sim: &Simulator, node: &str) -> Result<()> {
    sim.state()
        .aws
        .schedule_spot("terminate", Timestamp::now(), SignedDuration::from_secs(60));
    eventually(WAIT, "the real notice's taint", || {
        node_state(k, node, |n| !reclaim_taints(n).is_empty())
    })
    .await?;
    let notice = node_notice(&k.nodes().get(node).await?).context("the notice")?;
    assert_eq!(notice.provider, Provider::Aws);
    Ok(())
}

#[tokio::test]
async fn with_drills_turned_off_the_annotation_is_ignored_and_real_notices_still_count()
-> Result<()> {
    let (k, sim, node) = spot_node("drills-off").await?;
    annotate_drill(&k, &node, Some("spot-interruption")).await?;
    let agent = start_agent(&node, &sim.url(), &["--disable-drills"]).await?;
    agent.ready().await?;
    a_real_notice_is_acted_on(&k, &sim, &node).await?;
    assert_eq!(
        agent.metric_sum(
            "reclaim_notices_total",
            &[("provider", "drill"), ("kind", "spot-interruption")]
        ),
        0.0,
        "the drill was never acted on"
    );
    assert_eq!(
        agent.metric_sum(
            "reclaim_notices_total",
            &[("provider", "aws"), ("kind", "spot-interruption")]
        ),
        1.0
    );
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn an_absurd_drill_lead_is_refused_and_the_node_stays_guarded() -> Result<()> {
    let (k, sim, node) = spot_node("drill-absurd").await?;
    let agent = start_agent(&node, &sim.url(), &[]).await?;
    agent.ready().await?;
    // Anyone who may patch nodes can write this: it must not stop the agent.
    annotate_drill(
        &k,
        &node,
        Some("spot-interruption,lead=99999999999999999999s"),
    )
    .await?;
    eventually(WAIT, "the DrillRefused Event", || async {
        Ok(node_events(&k, &node, "DrillRefused").await? >= 1)
    })
    .await?;
    a_real_notice_is_acted_on(&k, &sim, &node).await?;
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_vm_preempted_again_under_the_same_name_gets_a_second_record_and_the_first_is_kept()
-> Result<()> {
    ControlPlane::shared().install_interruption_crd()?;
    let (k, sim, node) = spot_node_on(Provider::Gcp, "record-repeat").await?;
    let flags = clouds::agent_flags(Provider::Gcp, &node, SignedDuration::from_secs(20));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (_history, _kubelet) = watched_with_kubelet(&k, &node);
    // First life: preempted (GCP's event id is always `gce-preempted`), drained, recorded.
    k.run_pod(&node, TestPod::new("first-life")).await?;
    let agent = start_agent(&node, &sim.url(), &flags).await?;
    agent.ready().await?;
    clouds::announce_spot(&sim, Provider::Gcp, &node, SignedDuration::from_secs(20));
    let first = finished_record(&k, &node).await?;
    assert!(pod_entry(&first, "first-life").is_some());
    agent.stop().await?;
    // GKE recreates the VM under the same name: a new Node, a new agent, a new preemption.
    clouds::clear(&sim);
    k.nodes().delete(&node, &DeleteParams::default()).await?;
    eventually(WAIT, "the old Node to be gone", || async {
        Ok(k.nodes().get_opt(&node).await?.is_none())
    })
    .await?;
    k.register_node(clouds::spot_node(Provider::Gcp, &node))
        .await?;
    k.run_pod(&node, TestPod::new("second-life")).await?;
    let agent = start_agent(&node, &sim.url(), &flags).await?;
    agent.ready().await?;
    clouds::announce_spot(&sim, Provider::Gcp, &node, SignedDuration::from_secs(20));
    let second = eventually_some(WAIT, "the second life's finished record", || async {
        Ok(finished_record(&k, &node)
            .await
            .ok()
            .filter(|r| r.name_any() != first.name_any()))
    })
    .await?;
    assert!(pod_entry(&second, "second-life").is_some());
    assert!(pod_entry(&second, "first-life").is_none());
    let kept = record(&k, &first.name_any())
        .await?
        .context("the first record")?;
    assert_eq!(
        kept.resource_version(),
        first.resource_version(),
        "the first interruption's record was written again"
    );
    agent.stop().await?;
    Ok(())
}
