//! The drain on a bad day, on the real control plane: the API server refusing and
//! black-holing the agent's connections mid-drain (a TCP fault proxy between the agent
//! and the server), groups that wait for each other, a pod bound after the drain
//! started, a pod already terminating with a grace period past the deadline.

use super::*;
use reclaim_service::endpoints::Exposition;
use reclaim_testbed::agent::{AgentClients, start_agent_as};
use reclaim_testbed::fault_proxy::{FaultProxy, Mode};

use super::record::{finished_record, phase};

/// Waits until `name` was seen terminating; returns that revision.
async fn asked(history: &PodHistory, name: &str) -> Result<u64> {
    eventually(WAIT, &format!("{name} to be asked to go"), || async {
        Ok(history.deleting(name).is_some())
    })
    .await?;
    Ok(history.deleting(name).map(|(rv, _)| rv).unwrap_or_default())
}

#[tokio::test]
async fn a_drain_gets_every_pod_off_in_time_through_black_holed_and_refused_connections()
-> Result<()> {
    let (k, sim, node) = spot_node("drain-api-faults").await?;
    ControlPlane::shared().install_interruption_crd()?;
    k.run_executor_behind_refusing_budget(&node, 3).await?;
    k.run_pod(&node, TestPod::critical("node-dns").grace_period(1))
        .await?;
    let (history, _kubelet) = watched_with_kubelet(&k, &node);
    let cp = ControlPlane::shared();
    let proxy = FaultProxy::start(cp.server.trim_start_matches("https://")).await?;
    let clients = AgentClients::via(Some(&proxy.url())).await?;
    let agent = start_agent_as(clients, &node, &sim.url(), &["--safety-margin", "5s"]).await?;
    agent.ready().await?;
    sim.state()
        .aws
        .schedule_spot("terminate", Timestamp::now(), SignedDuration::from_secs(45));
    asked(&history, "task").await?;

    // Mid-drain: 15 s of black hole (open connections hang forever), then 5 s of refusals.
    proxy.set(Mode::BlackHole);
    tokio::time::sleep(Duration::from_secs(15)).await;
    proxy.set(Mode::Refuse);
    tokio::time::sleep(Duration::from_secs(5)).await;
    proxy.set(Mode::Pass);

    let pods = k.pods();
    eventually(WAIT, "every pod to be gone", || {
        gone(&pods, &["exec-1", "task", "node-dns"])
    })
    .await?;
    let notice = node_notice(&k.nodes().get(&node).await?).context("notice")?;
    let drain_deadline = notice.deadline.unwrap() - SignedDuration::from_secs(5);
    for name in ["exec-1", "node-dns"] {
        let (_, deleting) = history.deleting(name).context("asked")?;
        let due = deleting.metadata.deletion_timestamp.unwrap().0;
        assert!(
            due <= drain_deadline,
            "{name} due at {due}, after {drain_deadline}"
        );
    }
    assert!(
        history.removed("task").unwrap() < history.deleting("node-dns").unwrap().0,
        "the critical pod was asked after the ordinary pod was gone"
    );
    eventually(WAIT, "the drain's summary", || async {
        Ok(agent.metric("reclaim_evictions_total{outcome=\"deleted_at_deadline\"}") == 1.0)
    })
    .await?;
    assert!(
        agent.metric_sum("reclaim_drain_requests_total", &[("answer", "timeout")])
            + agent.metric_sum("reclaim_drain_requests_total", &[("answer", "error")])
            >= 1.0,
        "the faults were met: {}",
        agent.metrics.encode()
    );
    assert_eq!(agent.metric("reclaim_drain_pods_remaining"), 0.0);
    assert!(agent.health.is_alive(), "the drain is over: nothing stalls");
    // The record's writes failed through the outage too, and were retried until they
    // landed: it tells the drain's story in full.
    let record = finished_record(&k, &node).await?;
    let drain = &record.data["status"]["drain"];
    assert_eq!(phase(&record), "Drained", "{drain}");
    assert_eq!(
        (drain["podsTotal"].as_u64(), drain["latePods"].as_str()),
        (Some(3), Some("none"))
    );
    assert_eq!(
        drain["outcomes"],
        json!({"evicted": 2, "deleted_at_deadline": 1})
    );
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn drivers_wait_for_their_executors_and_critical_pods_for_everyone_else() -> Result<()> {
    let (k, sim, node) = spot_node("drain-groups").await?;
    k.run_pod(
        &node,
        TestPod::spark_executor("exec-1", "spark-1").grace_period(3),
    )
    .await?;
    k.run_pod(
        &node,
        TestPod::new("driver")
            .label("spark-role", "driver")
            .grace_period(1),
    )
    .await?;
    k.run_pod(&node, TestPod::new("task").grace_period(2))
        .await?;
    k.run_pod(
        &node,
        TestPod::new("shuffle")
            .annotation("reclaim.dev/drain-group", "last")
            .grace_period(1),
    )
    .await?;
    k.run_pod(&node, TestPod::critical("node-dns").grace_period(1))
        .await?;
    let (history, _kubelet) = watched_with_kubelet(&k, &node);
    let agent = start_agent(&node, &sim.url(), &[]).await?;
    agent.ready().await?;
    sim.state().aws.schedule_spot(
        "terminate",
        Timestamp::now(),
        SignedDuration::from_secs(120),
    );
    let pods = k.pods();
    eventually(WAIT, "every pod to be gone", || {
        gone(&pods, &["exec-1", "driver", "task", "shuffle", "node-dns"])
    })
    .await?;
    let removed = |name| history.removed(name).context("removed");
    let asked_at = |name| history.deleting(name).map(|(rv, _)| rv).context("asked");
    assert!(
        asked_at("task")? < removed("exec-1")?,
        "executors and ordinary pods at once"
    );
    assert!(
        removed("exec-1")? < asked_at("driver")?,
        "the driver after its executor"
    );
    for last in ["node-dns", "shuffle"] {
        for other in ["exec-1", "driver", "task"] {
            assert!(
                removed(other)? < asked_at(last)?,
                "{last} was asked before {other} was gone"
            );
        }
    }
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_pod_bound_mid_drain_is_drained_and_a_slow_termination_is_made_to_fit() -> Result<()> {
    let (k, sim, node) = spot_node("drain-late").await?;
    k.run_executor_behind_refusing_budget(&node, 3).await?;
    // Someone else deleted this pod with its 300 s grace period: it would outlive the node.
    k.run_pod(&node, TestPod::new("slow").grace_period(300))
        .await?;
    k.pods().delete("slow", &Default::default()).await?;
    let (history, _kubelet) = watched_with_kubelet(&k, &node);
    let agent = start_agent(&node, &sim.url(), &["--safety-margin", "5s"]).await?;
    agent.ready().await?;
    sim.state()
        .aws
        .schedule_spot("terminate", Timestamp::now(), SignedDuration::from_secs(30));
    asked(&history, "task").await?;
    // Bound after the drain's first round, as a scheduler that missed the taint would.
    k.run_pod(&node, TestPod::new("late").grace_period(1))
        .await?;
    let pods = k.pods();
    eventually(WAIT, "every pod to be gone", || {
        gone(&pods, &["exec-1", "task", "slow", "late"])
    })
    .await?;
    let notice = node_notice(&k.nodes().get(&node).await?).context("notice")?;
    let drain_deadline = notice.deadline.unwrap() - SignedDuration::from_secs(5);
    let hastened = history
        .first("slow", |p| {
            p.metadata
                .deletion_timestamp
                .as_ref()
                .is_some_and(|t| t.0 <= drain_deadline)
        })
        .context("the slow pod was never made to fit")?;
    assert!(hastened.1.metadata.deletion_grace_period_seconds.unwrap() < 300);
    assert!(
        history.deleting("late").is_some(),
        "the late pod was drained"
    );
    eventually(WAIT, "the drain's summary", || async {
        Ok(agent.metric("reclaim_evictions_total{outcome=\"hastened\"}") == 1.0)
    })
    .await?;
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn healthz_fails_while_a_drain_makes_no_progress_and_recovers_when_it_does() -> Result<()> {
    let (k, sim, node) = spot_node("drain-stall").await?;
    k.run_executor_behind_refusing_budget(&node, 3).await?;
    let (history, _watch) = PodHistory::record(k.pods());
    let cp = ControlPlane::shared();
    let proxy = FaultProxy::start(cp.server.trim_start_matches("https://")).await?;
    let clients = AgentClients::via(Some(&proxy.url())).await?;
    let agent = start_agent_as(clients, &node, &sim.url(), &[]).await?;
    agent.ready().await?;
    sim.state().aws.schedule_spot(
        "terminate",
        Timestamp::now(),
        SignedDuration::from_secs(120),
    );
    asked(&history, "task").await?;
    assert!(agent.health.is_alive());
    proxy.set(Mode::BlackHole);
    // The bound is 30 s without a completed round (WORK_STALL_AFTER).
    eventually(
        Duration::from_secs(90),
        "/healthz to report the stalled drain",
        || async { Ok(!agent.health.is_alive()) },
    )
    .await?;
    proxy.set(Mode::Pass);
    eventually(WAIT, "/healthz to recover with the drain", || async {
        Ok(agent.health.is_alive())
    })
    .await?;
    agent.stop().await?;
    Ok(())
}
