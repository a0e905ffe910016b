//! The drain on a bad day, on the real control plane: the API server refusing and
//! black-holing the agent's connections mid-drain (a TCP fault proxy between the agent
//! and the server), API Priority and Fairness rejecting its evictions with 429, groups
//! that wait for each other, a pod bound after the drain started, a pod already
//! terminating with a grace period past the deadline.

use super::*;
use std::time::Instant;

use reclaim_service::endpoints::Exposition;
use reclaim_testbed::agent::{AgentClients, privileged_account, start_agent_as};
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
async fn pods_with_native_sidecars_are_evicted_like_any_pod() -> Result<()> {
    let (k, sim, node) = spot_node("drain-sidecars").await?;
    k.run_pod(
        &node,
        TestPod::spark_executor("exec-1", "spark-1")
            .native_sidecar("log-shipper")
            .grace_period(2),
    )
    .await?;
    k.run_pod(
        &node,
        TestPod::new("task").native_sidecar("proxy").grace_period(1),
    )
    .await?;
    let (history, _kubelet) = watched_with_kubelet(&k, &node);
    let agent = start_agent(&node, &sim.url(), &["--safety-margin", "5s"]).await?;
    agent.ready().await?;
    sim.state()
        .aws
        .schedule_spot("terminate", Timestamp::now(), SignedDuration::from_secs(30));
    let pods = k.pods();
    eventually(WAIT, "every pod to be gone", || {
        gone(&pods, &["exec-1", "task"])
    })
    .await?;
    for (name, grace) in [("exec-1", 2), ("task", 1)] {
        let (_, deleting) = history.deleting(name).context("asked")?;
        // Through the Eviction API (the server's own mark), with its whole grace period.
        let evicted = deleting
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter().any(|c| {
                    c.type_ == "DisruptionTarget"
                        && c.reason.as_deref() == Some("EvictionByEvictionAPI")
                })
            });
        assert!(evicted, "{name}: {:?}", deleting.status);
        assert_eq!(deleting.metadata.deletion_grace_period_seconds, Some(grace));
    }
    eventually(WAIT, "the drain's summary", || async {
        Ok(agent.metric("reclaim_evictions_total{outcome=\"evicted\"}") == 2.0)
    })
    .await?;
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn healthz_stays_healthy_through_an_api_outage_mid_drain_and_the_drain_goes_on() -> Result<()>
{
    let (k, sim, node) = spot_node("drain-outage-health").await?;
    k.run_executor_behind_refusing_budget(&node, 3).await?;
    let (history, _kubelet) = watched_with_kubelet(&k, &node);
    let cp = ControlPlane::shared();
    let proxy = FaultProxy::start(cp.server.trim_start_matches("https://")).await?;
    let clients = AgentClients::via(Some(&proxy.url())).await?;
    let agent = start_agent_as(clients, &node, &sim.url(), &[]).await?;
    agent.ready().await?;
    sim.state()
        .aws
        .schedule_spot("terminate", Timestamp::now(), SignedDuration::from_secs(80));
    asked(&history, "task").await?;
    // 40 s without the API server (longer than WORK_STALL_AFTER, 30 s): the drain's
    // rounds fail, but they turn. A failing /healthz would have the kubelet restart an
    // agent that then needs the API server before it polls the metadata service again.
    proxy.set(Mode::BlackHole);
    let outage = Instant::now();
    let mut unhealthy = 0;
    while outage.elapsed() < Duration::from_secs(40) {
        unhealthy += usize::from(!agent.health.is_alive());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    proxy.set(Mode::Pass);
    assert_eq!(unhealthy, 0, "/healthz failed during the outage");
    let pods = k.pods();
    eventually(
        WAIT,
        "the drain to get every pod off after the outage",
        || gone(&pods, &["exec-1", "task"]),
    )
    .await?;
    assert!(agent.health.is_alive());
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_drain_throttled_by_priority_and_fairness_waits_as_told_and_still_gets_every_pod_off_in_time()
-> Result<()> {
    let (k, sim, node) = spot_node("drain-apf").await?;
    ControlPlane::shared().install_interruption_crd()?;
    // exec-1 (grace 3 s) is refused by its budget until its time runs short; task goes at once.
    k.run_executor_behind_refusing_budget(&node, 3).await?;
    let (history, _kubelet) = watched_with_kubelet(&k, &node);
    let clients = privileged_account(&k, &k.namespace, "agent").await?;
    let account_client = clients.requests.clone();
    // A round every 250 ms: an agent deaf to Retry-After would ask four times a second.
    let agent = start_agent_as(
        clients,
        &node,
        &sim.url(),
        &[
            "--safety-margin",
            "5s",
            "--eviction-retry-interval",
            "250ms",
        ],
    )
    .await?;
    agent.ready().await?;
    sim.state()
        .aws
        .schedule_spot("terminate", Timestamp::now(), SignedDuration::from_secs(45));
    asked(&history, "task").await?;

    // Mid-drain, the server starts rejecting the agent's evictions with 429 for 8 s.
    let cp = ControlPlane::shared();
    let token = cp.service_account_token(&k.namespace, "agent").await?;
    let began = Instant::now();
    let throttle = reclaim_testbed::throttle::Throttle::start(
        cp,
        &k.namespace,
        "agent",
        &token,
        &account_client,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    throttle.end().await?;
    let throttled_for = began.elapsed();

    let pods = k.pods();
    eventually(WAIT, "every pod to be gone", || {
        gone(&pods, &["exec-1", "task"])
    })
    .await?;
    let notice = node_notice(&k.nodes().get(&node).await?).context("notice")?;
    let drain_deadline = notice.deadline.unwrap() - SignedDuration::from_secs(5);
    let (_, deleting) = history.deleting("exec-1").context("exec-1 asked")?;
    let due = deleting.metadata.deletion_timestamp.unwrap().0;
    assert!(
        due <= drain_deadline,
        "exec-1 due at {due}, after {drain_deadline}"
    );
    eventually(WAIT, "the drain's summary", || async {
        Ok(agent.metric("reclaim_evictions_total{outcome=\"deleted_at_deadline\"}") == 1.0)
    })
    .await?;
    let answered = |answer: &str| {
        agent.metric_sum(
            "reclaim_drain_requests_total",
            &[("request", "evict"), ("answer", answer)],
        )
    };
    // The server's 429s were told apart from the budget's, and honoured: at most one
    // request per Retry-After (1 s or more) while they lasted, not one per round.
    let (throttled, refused) = (answered("throttled"), answered("budget_refused"));
    assert!(throttled >= 1.0, "{}", agent.metrics.encode());
    assert!(refused >= 1.0, "{}", agent.metrics.encode());
    assert!(
        throttled <= throttled_for.as_secs_f64() + 2.0,
        "{throttled} throttled evictions in {throttled_for:?}: Retry-After was not honoured"
    );
    let record = finished_record(&k, &node).await?;
    let drain = &record.data["status"]["drain"];
    assert_eq!(drain["latePods"].as_str(), Some("none"), "{drain}");
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_pod_whose_annotations_cannot_take_the_reason_is_still_drained() -> Result<()> {
    let (k, sim, node) = spot_node("drain-stamp-refused").await?;
    // Its creator filled the pod's annotations to just under the server's 256 KiB limit:
    // the agent's reason does not fit, and the server answers 422.
    k.run_pod(
        &node,
        TestPod::new("bloated")
            .annotation("example.com/blob", &"x".repeat(262_000))
            .grace_period(1),
    )
    .await?;
    k.run_pod(&node, TestPod::new("task").grace_period(1))
        .await?;
    let (history, _kubelet) = watched_with_kubelet(&k, &node);
    let agent = start_agent(&node, &sim.url(), &[]).await?;
    agent.ready().await?;
    sim.state()
        .aws
        .schedule_spot("terminate", Timestamp::now(), SignedDuration::from_secs(60));
    asked(&history, "task").await?;
    asked(&history, "bloated").await?;
    let pods = k.pods();
    eventually(WAIT, "both pods to be gone", || {
        gone(&pods, &["bloated", "task"])
    })
    .await?;
    let (_, bloated) = history.deleting("bloated").context("asked")?;
    assert!(
        !bloated
            .annotations()
            .contains_key("reclaim.dev/interruption"),
        "the reason did fit after all: the test proves nothing"
    );
    agent.stop().await?;
    Ok(())
}
