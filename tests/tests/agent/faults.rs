//! The bad day: metadata faults in combination with notices. A notice that arrives in
//! the middle of an error storm, a path that fails forever beside the spot path, a
//! notice that flaps out of two answers mid-drain, a maintenance canceled after its pods
//! were marked. Faults are injected in the simulator, at the boundary; every assertion
//! reads the outcome back from the API server.

use super::*;
use reclaim_testbed::clouds::{STORM_ERRORS, agent_flags, announce_spot, error_storm};

/// When a watch of the Node first saw it tainted (polled every 100 ms).
async fn tainted_at(k: &TestKubelet, node: &str) -> Result<Timestamp> {
    let seen = Mutex::new(None);
    eventually(WAIT, "the interruption taint", || async {
        let tainted = !reclaim_taints(&k.nodes().get(node).await?).is_empty();
        if tainted {
            *seen.lock().unwrap() = Some(Timestamp::now());
        }
        Ok(tainted)
    })
    .await?;
    Ok(seen
        .into_inner()
        .unwrap()
        .expect("set when the wait succeeded"))
}

/// From the moment the service answers the notice correctly to the taint: one poll
/// interval (here 500 ms) plus 1 s is the target; a few seconds of slack for this
/// shared machine.
const TAINTED_WITHIN: SignedDuration = SignedDuration::from_secs(4);

async fn a_notice_right_after_an_error_storm_is_acted_on_within_a_poll(
    provider: Provider,
) -> Result<()> {
    let (k, sim, node) = spot_node_on(provider, &format!("storm-{}", provider.as_str())).await?;
    k.run_pod(&node, TestPod::new("task").grace_period(1))
        .await?;
    let _kubelet = Tasks(vec![k.keep_finishing_deletions(&node)]);
    let lead = SignedDuration::from_secs(30);
    let mut flags = agent_flags(provider, &node, lead);
    flags.extend(["--metadata-timeout", "300ms", "--gcp-wait", "2s"].map(String::from));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let agent = start_agent(&node, &sim.url(), &flags).await?;
    agent.ready().await?;

    error_storm(&sim, provider, Duration::from_millis(1500));
    eventually(WAIT, "the storm to begin", || async {
        Ok(sim.state().faults.pending() <= STORM_ERRORS - 2)
    })
    .await?;
    announce_spot(&sim, provider, &node, lead);
    let tainted = tainted_at(&k, &node).await?;
    assert_eq!(
        sim.state().faults.pending(),
        0,
        "the whole storm was served"
    );
    // The service answers correctly from the storm's last error on.
    let ended = sim.state().faults.last_served.context("storm served")?;
    assert!(
        tainted.duration_since(ended) <= TAINTED_WITHIN,
        "{provider:?}: tainted {} after the storm ended",
        tainted.duration_since(ended)
    );
    assert!(
        agent.metric_sum(
            "reclaim_metadata_errors_total",
            &[("provider", provider.as_str())]
        ) >= 14.0,
        "every error of the storm is counted (the slow answer is one only where it outlasts \
         the timeout: not for GCP's hanging GET)"
    );
    let deadline = node_notice(&k.nodes().get(&node).await?)
        .and_then(|n| n.deadline)
        .context("the notice has a deadline")?;
    let pods = k.pods();
    eventually(WAIT, "the pod to be gone", || gone(&pods, &["task"])).await?;
    assert!(
        Timestamp::now() < deadline,
        "{provider:?}: the pod left before the deadline"
    );
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn aws_a_notice_right_after_an_error_storm_is_acted_on_within_a_poll() -> Result<()> {
    a_notice_right_after_an_error_storm_is_acted_on_within_a_poll(Provider::Aws).await
}

#[tokio::test]
async fn azure_a_notice_right_after_an_error_storm_is_acted_on_within_a_poll() -> Result<()> {
    a_notice_right_after_an_error_storm_is_acted_on_within_a_poll(Provider::Azure).await
}

#[tokio::test]
async fn gcp_a_notice_right_after_an_error_storm_is_acted_on_within_a_poll() -> Result<()> {
    a_notice_right_after_an_error_storm_is_acted_on_within_a_poll(Provider::Gcp).await
}

#[tokio::test]
async fn aws_paths_failing_forever_never_delay_a_spot_notice_and_are_named() -> Result<()> {
    let (k, sim, node) = spot_node("path-down").await?;
    {
        let mut state = sim.state();
        state
            .faults
            .persist(Some("maintenance/scheduled"), Fault::Status(500));
        state
            .faults
            .persist(Some("autoscaling/target-lifecycle-state"), Fault::Garbage);
    }
    let agent = start_agent(&node, &sim.url(), &[]).await?;
    eventually(WAIT, "/readyz to name both failing paths", || async {
        let reason = agent.health.not_ready_reason().unwrap_or_default();
        Ok(
            reason.contains("events/maintenance/scheduled (server_error")
                && reason.contains("autoscaling/target-lifecycle-state (garbage"),
        )
    })
    .await?;
    assert!(
        !agent
            .health
            .not_ready_reason()
            .unwrap_or_default()
            .contains("spot/instance-action"),
        "the spot path answers"
    );

    let announced = Timestamp::now();
    sim.state().aws.schedule_spot(
        "terminate",
        Timestamp::now(),
        SignedDuration::from_secs(120),
    );
    let tainted = tainted_at(&k, &node).await?;
    assert!(
        tainted.duration_since(announced) <= TAINTED_WITHIN,
        "tainted {} after the notice was announced",
        tainted.duration_since(announced)
    );
    assert_eq!(
        agent.metric("reclaim_metadata_path_up{path=\"events/maintenance/scheduled\"}"),
        0.0
    );
    assert_eq!(
        agent.metric("reclaim_metadata_path_up{path=\"spot/instance-action\"}"),
        1.0
    );
    assert!(
        agent.metric_sum(
            "reclaim_metadata_errors_total",
            &[
                ("path", "autoscaling/target-lifecycle-state"),
                ("error", "garbage")
            ]
        ) >= 1.0
    );
    assert!(agent.health.is_alive());
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn azure_a_failing_compute_name_never_hides_a_preemption() -> Result<()> {
    let (k, sim, node) = spot_node_on(Provider::Azure, "azure-no-name").await?;
    sim.state()
        .faults
        .persist(Some("compute/name"), Fault::Status(500));
    // No --azure-vm-name: the name comes from compute/name, which fails, so the one
    // derived from the Node's providerID stands in.
    let agent = start_agent(&node, &sim.url(), &["--provider", "azure"]).await?;
    eventually(WAIT, "/readyz to name compute/name", || async {
        Ok(agent
            .health
            .not_ready_reason()
            .is_some_and(|r| r.contains("instance/compute/name (server_error")))
    })
    .await?;
    announce_spot(
        &sim,
        Provider::Azure,
        &format!("aks-spot-vmss_{node}"),
        SignedDuration::from_secs(30),
    );
    tainted_at(&k, &node).await?;
    assert_eq!(
        node_notice(&k.nodes().get(&node).await?).map(|n| n.kind),
        Some(NoticeKind::SpotInterruption)
    );
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_notice_missing_from_two_polls_mid_drain_neither_lifts_the_taint_nor_stops_the_drain()
-> Result<()> {
    let (k, sim, node) = spot_node("flap").await?;
    k.run_executor_behind_refusing_budget(&node, 3).await?;
    let (history, _kubelet) = watched_with_kubelet(&k, &node);
    let agent = start_agent(&node, &sim.url(), &["--safety-margin", "5s"]).await?;
    agent.ready().await?;
    sim.state()
        .aws
        .schedule_spot("terminate", Timestamp::now(), SignedDuration::from_secs(30));
    tainted_at(&k, &node).await?;
    let notice = node_notice(&k.nodes().get(&node).await?).context("notice")?;
    // The budget keeps exec-1 on the node until the deadline nears: the drain is running.
    eventually(WAIT, "exec-1 to be marked", || async {
        Ok(history.annotated("exec-1").is_some())
    })
    .await?;
    sim.state()
        .faults
        .inject_on(Some("spot/instance-action"), Fault::Absent, 2);
    eventually(WAIT, "the two 404s to be served", || async {
        Ok(sim.state().faults.pending() == 0)
    })
    .await?;

    let pods = k.pods();
    eventually(WAIT, "every pod to be gone", || {
        gone(&pods, &["exec-1", "task"])
    })
    .await?;
    let drain_deadline = notice.deadline.unwrap() - SignedDuration::from_secs(5);
    let (_, deleting) = history.deleting("exec-1").context("exec-1 was deleted")?;
    assert!(deleting.metadata.deletion_timestamp.unwrap().0 <= drain_deadline);
    let after = k.nodes().get(&node).await?;
    assert_eq!(reclaim_taints(&after), ["spot-interruption:NoSchedule"]);
    assert_eq!(
        node_notice(&after),
        Some(notice),
        "the same notice throughout"
    );
    assert_eq!(node_events(&k, &node, "InterruptionCleared").await?, 0);
    eventually(
        WAIT,
        "the drain to report the refused pod deleted at its deadline",
        || async {
            Ok(agent.metric("reclaim_evictions_total{outcome=\"deleted_at_deadline\"}") == 1.0)
        },
    )
    .await?;
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_maintenance_canceled_after_its_pods_were_marked_leaves_no_record_on_those_that_stay()
-> Result<()> {
    let (k, sim, node) = spot_node("cancel").await?;
    // exec-1 stays (its budget refuses); task is evicted and stays terminating (no
    // kubelet finishes it), as a pod on its way out.
    k.run_executor_behind_refusing_budget(&node, 3).await?;
    let agent = start_agent(&node, &sim.url(), &["--maintenance-lead-time", "10m"]).await?;
    agent.ready().await?;
    let event = |state: &str| {
        json!([{
            "Code": "system-reboot", "Description": "scheduled reboot", "State": state,
            "EventId": "instance-event-0c1a2b3c4d5e6f708",
            "NotBefore": aws_event_time(Timestamp::now() + SignedDuration::from_secs(90)),
        }])
    };
    sim.state().aws.set_maintenance(event("active"));
    let pods = k.pods();
    let marked = |p: &Pod| {
        p.annotations().contains_key("reclaim.dev/interruption")
            || p.labels().contains_key("reclaim.dev/interrupted")
    };
    let excluded = |n: &Node| {
        n.labels()
            .contains_key("node.kubernetes.io/exclude-from-external-load-balancers")
    };
    eventually(WAIT, "the node out of load balancers", || {
        node_state(&k, &node, excluded)
    })
    .await?;
    eventually(WAIT, "exec-1 marked and task terminating", || async {
        let exec = pods.get("exec-1").await?;
        let task = pods.get("task").await?;
        Ok(marked(&exec) && marked(&task) && task.metadata.deletion_timestamp.is_some())
    })
    .await?;

    sim.state().aws.set_maintenance(event("canceled"));
    eventually(WAIT, "exec-1 to lose its record", || async {
        Ok(!marked(&pods.get("exec-1").await?))
    })
    .await?;
    eventually(WAIT, "the node to be released", || {
        node_state(&k, &node, |n| {
            reclaim_taints(n).is_empty() && !unschedulable(n) && !excluded(n)
        })
    })
    .await?;
    assert!(
        marked(&pods.get("task").await?),
        "a pod on its way out keeps the record of why"
    );
    assert_eq!(node_events(&k, &node, "InterruptionCleared").await?, 1);
    agent.stop().await?;
    Ok(())
}
