//! The agent on AWS, end to end: the metadata simulator announces, the real agent loop
//! acts on the real control plane, and every assertion reads the outcome back (node
//! taints and annotations, pod annotations and deletions, Events, metrics, what the
//! simulator was asked).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use reclaim_agent::imds::aws::AwsImds;
use reclaim_agent::imds::{MetadataError, MetadataPath};
use reclaim_model::{Notice, NoticeKind, PodInterruption, Provider};
use reclaim_simulator::{Cloud, Fault, Imdsv2, SimState, Simulator};
use reclaim_testbed::agent::start_agent;
use reclaim_testbed::clouds;
use reclaim_testbed::{ControlPlane, TestKubelet, TestNode, TestPod, eventually, eventually_some};
use serde_json::json;

#[path = "agent/drain.rs"]
mod drain;
#[path = "agent/faults.rs"]
mod faults;
#[path = "agent/plugin.rs"]
mod plugin;
#[path = "agent/record.rs"]
mod record;
#[path = "agent/spark.rs"]
mod spark;

const WAIT: Duration = Duration::from_secs(60);

async fn kubelet(test: &str) -> Result<TestKubelet> {
    TestKubelet::new(ControlPlane::shared().admin_client().await?, test).await
}

/// A test's kubelet, a fresh simulator, and one registered AWS spot node.
async fn spot_node(test: &str) -> Result<(TestKubelet, Simulator, String)> {
    spot_node_on(Provider::Aws, test).await
}

/// A test's kubelet, a fresh simulator, and one spot node as `provider`'s Kubernetes
/// service registers it.
async fn spot_node_on(provider: Provider, test: &str) -> Result<(TestKubelet, Simulator, String)> {
    let k = kubelet(test).await?;
    let sim = simulator().await?;
    let node = k.node_name("spot");
    k.register_node(clouds::spot_node(provider, &node)).await?;
    Ok((k, sim, node))
}

async fn simulator() -> Result<Simulator> {
    let mut state = SimState::default();
    state.aws.instance_id = "i-0123456789abcdef0".into();
    Ok(Simulator::start("127.0.0.1:0".parse()?, state).await?)
}

fn reclaim_taints(node: &Node) -> Vec<String> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|ts| {
            ts.iter()
                .filter(|t| t.key == "reclaim.dev/interruption")
                .map(|t| format!("{}:{}", t.value.clone().unwrap_or_default(), t.effect))
                .collect()
        })
        .unwrap_or_default()
}

fn unschedulable(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

fn node_notice(node: &Node) -> Option<Notice> {
    node.annotations()
        .get("reclaim.dev/notice")
        .map(|t| Notice::from_json(t).unwrap())
}

async fn node_state(k: &TestKubelet, node: &str, check: impl Fn(&Node) -> bool) -> Result<bool> {
    Ok(check(&k.nodes().get(node).await?))
}

/// Every change to the namespace's pods, in the order etcd applied them (a deletion is
/// recorded as the pod's last state, without `status` so no predicate mistakes it for a
/// live revision: see [`PodHistory::removed`]).
#[derive(Clone, Default)]
struct PodHistory(
    Arc<Mutex<Vec<(String, u64, Pod)>>>,
    Arc<Mutex<Vec<(String, u64)>>>,
);

/// Background tasks of a test, stopped when it ends (passes or fails).
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// The namespace's pod history, and a kubelet ending `node`'s due graceful deletions.
fn watched_with_kubelet(k: &TestKubelet, node: &str) -> (PodHistory, Tasks) {
    let (history, mut tasks) = PodHistory::record(k.pods());
    tasks.0.push(k.keep_finishing_deletions(node));
    (history, tasks)
}

impl PodHistory {
    fn record(pods: Api<Pod>) -> (PodHistory, Tasks) {
        let history = PodHistory::default();
        let sink = history.clone();
        let task = tokio::spawn(async move {
            let mut stream = watcher(pods, watcher::Config::default()).boxed();
            let rv = |pod: &Pod| {
                pod.resource_version()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            while let Some(Ok(event)) = stream.next().await {
                match event {
                    watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                        sink.0.lock().unwrap().push((pod.name_any(), rv(&pod), pod))
                    }
                    watcher::Event::Delete(pod) => {
                        sink.1.lock().unwrap().push((pod.name_any(), rv(&pod)))
                    }
                    _ => {}
                }
            }
        });
        (history, Tasks(vec![task]))
    }

    /// The first revision at which `name` satisfied `pred`.
    fn first(&self, name: &str, pred: impl Fn(&Pod) -> bool) -> Option<(u64, Pod)> {
        let seen = self.0.lock().unwrap();
        seen.iter()
            .filter(|(n, _, p)| n == name && pred(p))
            .map(|(_, rv, p)| (*rv, p.clone()))
            .min_by_key(|(rv, _)| *rv)
    }

    fn annotated(&self, name: &str) -> Option<(u64, PodInterruption)> {
        self.first(name, |p| {
            p.annotations().contains_key("reclaim.dev/interruption")
                && p.labels()
                    .get("reclaim.dev/interrupted")
                    .map(String::as_str)
                    == Some("spot-interruption")
        })
        .map(|(rv, p)| {
            (
                rv,
                PodInterruption::from_json(&p.annotations()["reclaim.dev/interruption"]).unwrap(),
            )
        })
    }

    fn deleting(&self, name: &str) -> Option<(u64, Pod)> {
        self.first(name, |p| p.metadata.deletion_timestamp.is_some())
    }

    /// The revision at which `name` was removed from the API server.
    fn removed(&self, name: &str) -> Option<u64> {
        let removed = self.1.lock().unwrap();
        removed.iter().find(|(n, _)| n == name).map(|(_, rv)| *rv)
    }
}

async fn gone(pods: &Api<Pod>, names: &[&str]) -> Result<bool> {
    for name in names {
        if pods.get_opt(name).await?.is_some() {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn node_events(k: &TestKubelet, node: &str, reason: &str) -> Result<usize> {
    let events: Api<Event> = Api::namespaced(k.client().clone(), "default");
    Ok(events
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|e| {
            e.involved_object.name.as_deref() == Some(node) && e.reason.as_deref() == Some(reason)
        })
        .count())
}

#[tokio::test]
async fn a_spot_notice_taints_annotates_and_drains_executors_first() -> Result<()> {
    let k = kubelet("agent-spot").await?;
    let sim = simulator().await?;
    let node = k.node_name("spot");
    let node_obj = k.register_node(TestNode::spot(&node)).await?;
    for name in ["exec-1", "exec-2"] {
        k.run_pod(
            &node,
            TestPod::spark_executor(name, "spark-1").grace_period(2),
        )
        .await?;
    }
    k.run_pod(&node, TestPod::new("airflow-task").grace_period(2))
        .await?;
    k.run_pod(&node, TestPod::critical("node-dns").grace_period(2))
        .await?;
    let daemon = k.run_daemonset_pod(&node, "log-shipper").await?.name_any();
    k.run_mirror_pod(&node_obj, "static-proxy").await?;
    let (history, _kubelet) = watched_with_kubelet(&k, &node);
    let agent = start_agent(&node, &sim.url(), &["--safety-margin", "5s"]).await?;
    agent.ready().await?;

    let action_time = Timestamp::now() + SignedDuration::from_secs(60);
    sim.state()
        .aws
        .schedule_spot("terminate", Timestamp::now(), SignedDuration::from_secs(60));
    eventually(WAIT, "taint, cordon and notice on the node", || {
        node_state(&k, &node, |n| {
            !reclaim_taints(n).is_empty() && unschedulable(n) && node_notice(n).is_some()
        })
    })
    .await?;
    let read = k.nodes().get(&node).await?;
    assert_eq!(reclaim_taints(&read), ["spot-interruption:NoSchedule"]);
    assert_eq!(read.annotations()["reclaim.dev/cordoned"], "true");
    let notice = node_notice(&read).unwrap();
    assert_eq!(
        (notice.provider, notice.kind),
        (Provider::Aws, NoticeKind::SpotInterruption)
    );
    let deadline = notice.deadline.context("a spot notice has a deadline")?;
    assert!(
        (deadline.duration_since(action_time)).abs() <= SignedDuration::from_secs(2),
        "{deadline} vs {action_time}"
    );

    let drained = ["exec-1", "exec-2", "airflow-task", "node-dns"];
    let pods = k.pods();
    eventually(WAIT, "the drained pods to be gone", || {
        gone(&pods, &drained)
    })
    .await?;
    for name in drained {
        let (annotated_at, record) = history
            .annotated(name)
            .with_context(|| format!("{name} never carried the reason"))?;
        let (deleting_at, _) = history
            .deleting(name)
            .with_context(|| format!("{name} was never evicted"))?;
        assert!(
            annotated_at < deleting_at,
            "{name}: reason written at {annotated_at}, eviction at {deleting_at}"
        );
        assert_eq!(
            (record.node.as_str(), record.notice.kind),
            (node.as_str(), NoticeKind::SpotInterruption)
        );
        assert_eq!(record.notice.event_id, notice.event_id);
    }
    let order = |name| history.deleting(name).unwrap().0;
    assert!(
        order("exec-1").max(order("exec-2")) < order("airflow-task"),
        "executors are asked first"
    );
    assert!(
        order("airflow-task") < order("node-dns"),
        "critical pods are asked last"
    );

    for untouched in [daemon.as_str(), "static-proxy"] {
        let pod = pods.get(untouched).await?;
        assert!(
            pod.metadata.deletion_timestamp.is_none(),
            "{untouched} was evicted"
        );
        assert!(
            !pod.annotations().contains_key("reclaim.dev/interruption"),
            "{untouched} was annotated"
        );
    }
    assert_eq!(node_events(&k, &node, "InterruptionNotice").await?, 1);
    eventually(WAIT, "the drain summary in the metrics", || async {
        Ok(agent.metric("reclaim_evictions_total{outcome=\"evicted\"}") == 4.0)
    })
    .await?;
    assert_eq!(
        agent.metric_sum(
            "reclaim_notices_total",
            &[("provider", "aws"), ("kind", "spot-interruption")]
        ),
        1.0
    );
    assert_eq!(agent.metric("reclaim_notice_to_taint_seconds_count"), 1.0);
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_pod_whose_budget_keeps_refusing_is_deleted_before_the_deadline_never_after() -> Result<()>
{
    let (k, sim, node) = spot_node("agent-pdb").await?;
    k.run_executor_behind_refusing_budget(&node, 3).await?;
    let (history, _kubelet) = watched_with_kubelet(&k, &node);
    let agent = start_agent(
        &node,
        &sim.url(),
        &["--safety-margin", "5s", "--eviction-retry-interval", "1s"],
    )
    .await?;
    agent.ready().await?;

    sim.state()
        .aws
        .schedule_spot("terminate", Timestamp::now(), SignedDuration::from_secs(20));
    let pods = k.pods();
    eventually(WAIT, "both pods to be gone", || {
        gone(&pods, &["exec-1", "task"])
    })
    .await?;

    let notice = node_notice(&k.nodes().get(&node).await?).unwrap();
    let drain_deadline = notice.deadline.unwrap() - SignedDuration::from_secs(5);
    let (_, deleting) = history
        .deleting("exec-1")
        .context("exec-1 was never deleted")?;
    let gone_by = deleting.metadata.deletion_timestamp.unwrap().0;
    assert!(
        gone_by <= drain_deadline,
        "exec-1 was due to go at {gone_by}, after the drain deadline {drain_deadline}"
    );
    assert!(deleting.metadata.deletion_grace_period_seconds.unwrap() <= 3);
    let (_, task_deleting) = history.deleting("task").unwrap();
    assert!(
        task_deleting.metadata.deletion_timestamp.unwrap().0
            < gone_by - SignedDuration::from_secs(3),
        "the unprotected pod was evicted at once, long before the protected one was deleted"
    );
    eventually(WAIT, "the drain summary in the metrics", || async {
        Ok(agent.metric("reclaim_evictions_total{outcome=\"deleted_at_deadline\"}") == 1.0)
    })
    .await?;
    assert_eq!(
        agent.metric("reclaim_evictions_total{outcome=\"evicted\"}"),
        1.0
    );
    assert_eq!(agent.metric("reclaim_drain_pods_remaining"), 0.0);
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn an_agent_killed_mid_drain_is_restarted_and_finishes_without_duplicates() -> Result<()> {
    let (k, sim, node) = spot_node("agent-restart").await?;
    ControlPlane::shared().install_interruption_crd()?;
    k.run_executor_behind_refusing_budget(&node, 2).await?;
    let _kubelet = Tasks(vec![k.keep_finishing_deletions(&node)]);
    let args = ["--safety-margin", "5s"];
    let first = start_agent(&node, &sim.url(), &args).await?;
    first.ready().await?;
    sim.state()
        .aws
        .schedule_spot("terminate", Timestamp::now(), SignedDuration::from_secs(25));
    let pods = k.pods();
    eventually(
        WAIT,
        "the drain to be under way (exec-1 annotated, task evicted)",
        || async {
            let exec = pods.get("exec-1").await?;
            Ok(exec.annotations().contains_key("reclaim.dev/interruption")
                && pods
                    .get_opt("task")
                    .await?
                    .is_none_or(|t| t.metadata.deletion_timestamp.is_some()))
        },
    )
    .await?;
    assert!(
        pods.get("exec-1")
            .await?
            .metadata
            .deletion_timestamp
            .is_none(),
        "exec-1 is still held by its budget"
    );
    first.kill();

    let second = start_agent(&node, &sim.url(), &args).await?;
    eventually(WAIT, "exec-1 to be gone", || {
        gone(&pods, &["exec-1", "task"])
    })
    .await?;
    let read = k.nodes().get(&node).await?;
    assert_eq!(
        reclaim_taints(&read),
        ["spot-interruption:NoSchedule"],
        "one taint, not two"
    );
    assert_eq!(
        node_events(&k, &node, "InterruptionNotice").await?,
        1,
        "one Event, not two"
    );
    eventually(WAIT, "the second agent's drain summary", || async {
        Ok(second.metric("reclaim_evictions_total{outcome=\"deleted_at_deadline\"}") == 1.0)
    })
    .await?;
    assert_eq!(
        second.metric_sum(
            "reclaim_notices_total",
            &[("provider", "aws"), ("kind", "spot-interruption")]
        ),
        0.0,
        "the restarted agent resumed; it saw no new notice"
    );
    // One record, resumed by the second agent, which tells how its drain ended.
    let record = eventually_some(WAIT, "the record's final state", || async {
        Ok(record::record_of_notice(&k, &node)
            .await?
            .filter(|r| record::phase(r) == "Drained"))
    })
    .await?;
    let executor = record.data["status"]["drain"]["pods"]
        .as_array()
        .and_then(|pods| pods.iter().find(|p| p["name"] == "exec-1"))
        .context("exec-1 listed")?;
    assert_eq!(executor["outcome"], "deleted_at_deadline");
    let records = reclaim_service::interruptions::api(k.client())
        .list(&ListParams::default())
        .await?;
    assert_eq!(
        records
            .items
            .iter()
            .filter(|r| r.data["spec"]["node"] == node.as_str())
            .count(),
        1,
        "one record, not two"
    );
    second.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_rebalance_cordon_is_lifted_after_its_expiry_but_never_someone_elses_cordon() -> Result<()>
{
    let k = kubelet("agent-rebalance").await?;
    let sim = simulator().await?;
    let (ours, theirs) = (k.node_name("spot-a"), k.node_name("spot-b"));
    k.register_node(TestNode::spot(&ours)).await?;
    k.register_node(TestNode::spot(&theirs)).await?;
    let cordon = json!({"spec": {"unschedulable": true}});
    k.nodes()
        .patch(&theirs, &PatchParams::default(), &Patch::Merge(&cordon))
        .await?;
    k.run_pod(&ours, TestPod::new("task")).await?;
    let args = ["--rebalance-expiry", "4s"];
    let agents = [
        start_agent(&ours, &sim.url(), &args).await?,
        start_agent(&theirs, &sim.url(), &args).await?,
    ];
    for agent in &agents {
        agent.ready().await?;
    }
    sim.state().aws.set_rebalance(Timestamp::now());
    for node in [&ours, &theirs] {
        eventually(WAIT, "the rebalance taint", || {
            node_state(&k, node, |n| {
                reclaim_taints(n) == ["rebalance:NoSchedule"] && unschedulable(n)
            })
        })
        .await?;
    }
    assert!(
        k.pods()
            .get("task")
            .await?
            .metadata
            .deletion_timestamp
            .is_none(),
        "a rebalance does not drain by default"
    );
    assert!(
        !k.nodes()
            .get(&theirs)
            .await?
            .annotations()
            .contains_key("reclaim.dev/cordoned")
    );

    for node in [&ours, &theirs] {
        eventually(WAIT, "the rebalance taint to expire", || {
            node_state(&k, node, |n| {
                reclaim_taints(n).is_empty() && node_notice(n).is_none()
            })
        })
        .await?;
    }
    let polls_before = sim.state().aws.stats.metadata_requests;
    eventually(WAIT, "a few more polls", || async {
        Ok(sim.state().aws.stats.metadata_requests >= polls_before + 12)
    })
    .await?;
    let (a, b) = (k.nodes().get(&ours).await?, k.nodes().get(&theirs).await?);
    assert!(
        reclaim_taints(&a).is_empty(),
        "the retired recommendation is not acted on again"
    );
    assert!(!unschedulable(&a), "our cordon is lifted");
    assert!(unschedulable(&b), "someone else's cordon stays");
    assert!(a.annotations()["reclaim.dev/retired-notice"].starts_with("rebalance-"));
    assert!(
        k.pods()
            .get("task")
            .await?
            .metadata
            .deletion_timestamp
            .is_none()
    );
    for agent in agents {
        assert_eq!(
            agent.metric("reclaim_node_actions_total{action=\"undo\",outcome=\"changed\"}"),
            1.0
        );
        agent.stop().await?;
    }
    Ok(())
}

fn aws_event_time(t: Timestamp) -> String {
    t.to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("%d %b %Y %H:%M:%S GMT")
        .to_string()
}

#[tokio::test]
async fn scheduled_maintenance_is_acted_on_at_its_lead_time_and_undone_when_canceled() -> Result<()>
{
    let (k, sim, node) = spot_node("agent-maintenance").await?;
    let agent = start_agent(&node, &sim.url(), &["--maintenance-lead-time", "10m"]).await?;
    agent.ready().await?;
    let event = |state: &str, starts_in: i64| {
        json!([{
            "Code": "system-reboot", "Description": "scheduled reboot", "State": state,
            "EventId": "instance-event-0d59937288b749b32",
            "NotBefore": aws_event_time(Timestamp::now() + SignedDuration::from_secs(starts_in)),
            "NotAfter": aws_event_time(Timestamp::now() + SignedDuration::from_secs(starts_in + 3600)),
        }])
    };

    sim.state().aws.set_maintenance(event("active", 7200));
    let polls_before = sim.state().aws.stats.metadata_requests;
    eventually(WAIT, "a few polls", || async {
        Ok(sim.state().aws.stats.metadata_requests >= polls_before + 12)
    })
    .await?;
    assert!(
        reclaim_taints(&k.nodes().get(&node).await?).is_empty(),
        "two hours ahead is beyond the 10 min lead time"
    );

    sim.state().aws.set_maintenance(event("active", 300));
    eventually(WAIT, "the maintenance taint", || {
        node_state(&k, &node, |n| {
            reclaim_taints(n) == ["scheduled-maintenance:NoSchedule"] && unschedulable(n)
        })
    })
    .await?;
    assert_eq!(
        node_notice(&k.nodes().get(&node).await?).unwrap().event_id,
        "instance-event-0d59937288b749b32"
    );

    sim.state().aws.set_maintenance(event("canceled", 300));
    eventually(WAIT, "the cancellation to be undone", || {
        node_state(&k, &node, |n| {
            reclaim_taints(n).is_empty() && !unschedulable(n) && node_notice(n).is_none()
        })
    })
    .await?;
    assert!(
        !k.nodes()
            .get(&node)
            .await?
            .annotations()
            .contains_key("reclaim.dev/cordoned")
    );
    assert_eq!(node_events(&k, &node, "InterruptionCleared").await?, 1);
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn the_agent_survives_expired_tokens_server_errors_garbage_and_timeouts() -> Result<()> {
    let (k, sim, node) = spot_node("agent-faults").await?;
    let agent = start_agent(&node, &sim.url(), &["--metadata-timeout", "300ms"]).await?;
    agent.ready().await?;
    let tokens_before = sim.state().aws.stats.token_requests;
    {
        let mut state = sim.state();
        state.aws.expire_tokens();
        state.faults.inject(Fault::Status(503), 4);
        state.faults.inject(Fault::Garbage, 4);
        state.faults.inject(Fault::DelayMs(1000), 4);
    }
    eventually(WAIT, "every kind of error to be counted", || async {
        Ok(["server_error", "garbage", "timeout"].iter().all(|e| {
            agent.metric_sum(
                "reclaim_metadata_errors_total",
                &[("provider", "aws"), ("error", e)],
            ) >= 1.0
        }))
    })
    .await?;
    sim.state().aws.schedule_spot(
        "terminate",
        Timestamp::now(),
        SignedDuration::from_secs(120),
    );
    eventually(WAIT, "the notice to be acted on after the faults", || {
        node_state(&k, &node, |n| !reclaim_taints(n).is_empty())
    })
    .await?;
    let stats = sim.state().aws.stats.clone();
    assert!(
        stats.unauthorized >= 1,
        "the expired token was refused: {stats:?}"
    );
    assert!(
        stats.token_requests > tokens_before,
        "a new token was fetched: {stats:?}"
    );
    assert_eq!(stats.duplicate_token_headers, 0);
    assert!(agent.health.is_alive());
    agent.stop().await?;
    Ok(())
}

/// One poll of each of the four AWS paths at once, as the agent's pollers make them.
async fn poll_every_path(imds: &AwsImds) -> Result<(), MetadataError> {
    let now = Timestamp::now();
    let (spot, rebalance, maintenance, lifecycle) = tokio::join!(
        imds.poll(MetadataPath::AwsSpot, now),
        imds.poll(MetadataPath::AwsRebalance, now),
        imds.poll(MetadataPath::AwsMaintenance, now),
        imds.poll(MetadataPath::AwsLifecycle, now),
    );
    spot.and(rebalance)
        .and(maintenance)
        .and(lifecycle)
        .map(|_| ())
}

#[tokio::test]
async fn the_imds_client_caches_its_token_renews_on_401_and_explains_put_timeouts() -> Result<()> {
    let sim = simulator().await?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let imds = AwsImds::new(
        http.clone(),
        &sim.url(),
        Duration::from_millis(300),
        Duration::from_secs(600),
    );
    for _ in 0..3 {
        poll_every_path(&imds).await?;
    }
    assert_eq!(
        sim.state().aws.stats.token_requests,
        1,
        "one token for three polls"
    );
    assert_eq!(
        sim.state().aws.stats.metadata_requests,
        12,
        "four paths a poll"
    );

    sim.state().aws.expire_tokens();
    poll_every_path(&imds).await?;
    assert_eq!(
        sim.state().aws.stats.token_requests,
        2,
        "a 401 renews the token once"
    );

    sim.state().faults.inject(Fault::Status(401), 20);
    let err = poll_every_path(&imds).await.unwrap_err();
    assert_eq!(err.label(), "unauthorized", "{err}");
    sim.state().faults.clear();

    sim.state().faults.inject(Fault::Garbage, 1);
    let err = poll_every_path(&imds).await.unwrap_err();
    assert_eq!(err.label(), "garbage", "{err}");

    let fresh = AwsImds::new(
        http,
        &sim.url(),
        Duration::from_millis(300),
        Duration::from_secs(600),
    );
    sim.state().faults.inject(Fault::DelayMs(1000), 1);
    let err = poll_every_path(&fresh).await.unwrap_err();
    assert_eq!(err.label(), "timeout");
    assert!(err.to_string().contains("hop limit"), "{err}");
    Ok(())
}

#[tokio::test]
async fn the_simulator_serves_imds_as_documented() -> Result<()> {
    let sim = simulator().await?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let url = |p: &str| format!("{}{p}", sim.url());
    let spot = "/latest/meta-data/spot/instance-action";

    let no_ttl = http.put(url("/latest/api/token")).send().await?;
    assert_eq!(no_ttl.status(), 400);
    let too_long = http
        .put(url("/latest/api/token"))
        .header("X-aws-ec2-metadata-token-ttl-seconds", "21601")
        .send()
        .await?;
    assert_eq!(too_long.status(), 400);
    let token = http
        .put(url("/latest/api/token"))
        .header("X-aws-ec2-metadata-token-ttl-seconds", "60")
        .send()
        .await?;
    assert_eq!(token.status(), 200);
    assert_eq!(
        token.headers()["x-aws-ec2-metadata-token-ttl-seconds"],
        "60"
    );
    let token = token.text().await?;

    let anonymous = http.get(url(spot)).send().await?;
    assert_eq!(anonymous.status(), 401, "IMDSv2 required");
    let missing = http
        .get(url(spot))
        .header("X-aws-ec2-metadata-token", &token)
        .send()
        .await?;
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["content-type"], "text/html");
    let page = missing.text().await?;
    assert!(
        page.starts_with("<?xml") && page.contains("<title>404 - Not Found</title>"),
        "{page}"
    );
    let twice = http
        .get(url(spot))
        .header("X-aws-ec2-metadata-token", &token)
        .header("X-aws-ec2-metadata-token", &token)
        .send()
        .await?;
    assert_eq!(twice.status(), 400, "a duplicated token header is refused");
    let maintenance = http
        .get(url("/latest/meta-data/events/maintenance/scheduled"))
        .header("X-aws-ec2-metadata-token", &token)
        .send()
        .await?;
    assert_eq!(maintenance.text().await?, "[]");

    sim.state().aws.schedule_spot(
        "terminate",
        Timestamp::now(),
        SignedDuration::from_secs(120),
    );
    let notice = http
        .get(url(spot))
        .header("X-aws-ec2-metadata-token", &token)
        .send()
        .await?
        .text()
        .await?;
    assert!(
        notice.contains("\n\t\"action\": \"terminate\""),
        "tab-indented JSON: {notice:?}"
    );
    let parsed: BTreeMap<String, String> = serde_json::from_str(&notice)?;
    let time: Timestamp = parsed["time"].parse()?;
    let legacy = http
        .get(url("/latest/meta-data/spot/termination-time"))
        .header("X-aws-ec2-metadata-token", &token)
        .send()
        .await?;
    assert_eq!(legacy.text().await?.parse::<Timestamp>()?, time);

    sim.state().aws.imdsv2 = Imdsv2::Optional;
    assert_eq!(
        http.get(url("/latest/meta-data/instance-id"))
            .send()
            .await?
            .text()
            .await?,
        "i-0123456789abcdef0"
    );
    assert_eq!(
        http.get(url(spot))
            .header("X-aws-ec2-metadata-token", "forged")
            .send()
            .await?
            .status(),
        401
    );
    Ok(())
}

#[tokio::test]
async fn a_dry_run_agent_writes_nothing_for_a_notice_or_a_drill() -> Result<()> {
    let (k, sim, node) = spot_node("agent-dry-run").await?;
    ControlPlane::shared().install_interruption_crd()?;
    k.run_pod(&node, TestPod::spark_executor("exec-1", "spark-4"))
        .await?;
    record::annotate_drill(&k, &node, Some("spot-interruption")).await?;
    let before = k.nodes().get(&node).await?;
    let agent = start_agent(&node, &sim.url(), &["--dry-run"]).await?;
    agent.ready().await?;
    sim.state()
        .aws
        .schedule_spot("terminate", Timestamp::now(), SignedDuration::from_secs(60));
    let polls_before = sim.state().aws.stats.metadata_requests;
    eventually(WAIT, "a few polls with the notice announced", || async {
        Ok(sim.state().aws.stats.metadata_requests >= polls_before + 12)
    })
    .await?;
    let after = k.nodes().get(&node).await?;
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "the node was not written"
    );
    let pod = k.pods().get("exec-1").await?;
    assert!(
        pod.metadata.deletion_timestamp.is_none()
            && !pod.annotations().contains_key("reclaim.dev/interruption")
    );
    assert_eq!(node_events(&k, &node, "InterruptionNotice").await?, 0);
    let records = reclaim_service::interruptions::api(k.client())
        .list(&ListParams::default())
        .await?;
    assert!(
        !records
            .items
            .iter()
            .any(|r| r.data["spec"]["node"] == node.as_str()),
        "no Interruption record"
    );
    agent.stop().await?;
    Ok(())
}

fn azure_node(name: &str, instance: u32) -> TestNode {
    TestNode::new(name).label("kubernetes.azure.com/scalesetpriority", "spot").provider_id(&format!(
        "azure:///subscriptions/0000/resourceGroups/mc_rg/providers/Microsoft.Compute/virtualMachineScaleSets/aks-spot-12345678-vmss/virtualMachines/{instance}"
    ))
}

fn rfc1123(t: Timestamp) -> String {
    t.to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

fn azure_event(
    id: &str,
    kind: &str,
    vm: &str,
    status: &str,
    not_before: &str,
) -> serde_json::Value {
    json!({
        "EventId": id, "EventType": kind, "ResourceType": "VirtualMachine", "Resources": [vm],
        "EventStatus": status, "NotBefore": not_before, "Description": "", "EventSource": "Platform",
        "DurationInSeconds": -1,
    })
}

#[tokio::test]
async fn azure_a_preemption_of_this_vm_drains_it_and_other_vms_events_are_ignored() -> Result<()> {
    let k = kubelet("azure-preempt").await?;
    let sim = simulator().await?;
    sim.state().azure.vm_name = "aks-spot-12345678-vmss_3".into();
    let node = k.node_name("aks-spot");
    k.register_node(azure_node(&node, 3)).await?;
    k.run_pod(&node, TestPod::new("task").grace_period(1))
        .await?;
    let _kubelet = Tasks(vec![k.keep_finishing_deletions(&node)]);
    let agent = start_agent(&node, &sim.url(), &["--azure-acknowledge"]).await?;
    agent.ready().await?;

    let other = azure_event(
        "A123BC45-1234-5678-AB90-ABCDEF123456",
        "Preempt",
        "aks-spot-12345678-vmss_4",
        "Scheduled",
        &rfc1123(Timestamp::now() + SignedDuration::from_secs(60)),
    );
    sim.state().azure.set_events(vec![other.clone()]);
    let polls = sim.state().azure.requests;
    eventually(WAIT, "a few polls", || async {
        Ok(sim.state().azure.requests >= polls + 4)
    })
    .await?;
    assert!(
        reclaim_taints(&k.nodes().get(&node).await?).is_empty(),
        "another VM's preemption is not ours"
    );

    let not_before =
        (Timestamp::now() + SignedDuration::from_secs(60)).round(jiff::Unit::Second)?;
    let ours = azure_event(
        "602D9444-D2CD-49C7-8624-8643E7171297",
        "Preempt",
        "aks-spot-12345678-vmss_3",
        "Scheduled",
        &rfc1123(not_before),
    );
    sim.state().azure.set_events(vec![other, ours]);
    eventually(WAIT, "the spot taint", || {
        node_state(&k, &node, |n| {
            reclaim_taints(n) == ["spot-interruption:NoSchedule"]
        })
    })
    .await?;
    let notice = node_notice(&k.nodes().get(&node).await?).unwrap();
    assert_eq!(
        (notice.provider, notice.event_id.as_str()),
        (Provider::Azure, "602D9444-D2CD-49C7-8624-8643E7171297")
    );
    assert_eq!(notice.deadline, Some(not_before));
    let pods = k.pods();
    eventually(WAIT, "the pod to be drained", || gone(&pods, &["task"])).await?;
    eventually(
        WAIT,
        "the event to be acknowledged after the drain",
        || async { Ok(sim.state().azure.acknowledged == ["602D9444-D2CD-49C7-8624-8643E7171297"]) },
    )
    .await?;
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn azure_reboot_is_maintenance_undone_when_it_vanishes_started_preemption_gets_30s_terminate_drains_freeze_ignored()
-> Result<()> {
    let k = kubelet("azure-kinds").await?;
    let sim = simulator().await?;
    let (reboot, preempt, terminate) = (
        k.node_name("vmss-1"),
        k.node_name("vmss-2"),
        k.node_name("vmss-3"),
    );
    let mut agents = Vec::new();
    for (node, instance) in [(&reboot, 1), (&preempt, 2), (&terminate, 3)] {
        k.register_node(azure_node(node, instance)).await?;
        let vm = format!("aks-spot-12345678-vmss_{instance}");
        // A vanished event is a withdrawal only after --withdrawal-after (60 s by default).
        let flags = ["--azure-vm-name", &vm, "--withdrawal-after", "3s"];
        let agent = start_agent(node, &sim.url(), &flags).await?;
        agent.ready().await?;
        agents.push(agent);
    }
    let in_5_min = rfc1123(Timestamp::now() + SignedDuration::from_secs(300));
    let reboot_event = azure_event(
        "R1",
        "Reboot",
        "aks-spot-12345678-vmss_1",
        "Scheduled",
        &in_5_min,
    );
    let freeze_event = azure_event(
        "F1",
        "Freeze",
        "aks-spot-12345678-vmss_1",
        "Scheduled",
        &in_5_min,
    );
    let started_preempt = azure_event("P2", "Preempt", "aks-spot-12345678-vmss_2", "Started", "");
    let terminate_event = azure_event(
        "T3",
        "Terminate",
        "aks-spot-12345678-vmss_3",
        "Scheduled",
        &in_5_min,
    );
    let seen = Timestamp::now();
    sim.state().azure.set_events(vec![
        reboot_event,
        freeze_event.clone(),
        started_preempt.clone(),
        terminate_event.clone(),
    ]);

    eventually(WAIT, "the maintenance taint", || {
        node_state(&k, &reboot, |n| {
            reclaim_taints(n) == ["scheduled-maintenance:NoSchedule"]
        })
    })
    .await?;
    assert_eq!(
        node_notice(&k.nodes().get(&reboot).await?)
            .unwrap()
            .event_id,
        "R1",
        "the Freeze is ignored"
    );
    eventually(WAIT, "the spot taint", || {
        node_state(&k, &preempt, |n| {
            reclaim_taints(n) == ["spot-interruption:NoSchedule"]
        })
    })
    .await?;
    let spot = node_notice(&k.nodes().get(&preempt).await?).unwrap();
    let deadline_after_seen = spot.deadline.unwrap().duration_since(seen);
    assert!(
        deadline_after_seen >= SignedDuration::from_secs(29)
            && deadline_after_seen <= SignedDuration::from_secs(40),
        "a Started preemption's deadline is 30 s after it was seen: {deadline_after_seen:?}"
    );
    eventually(WAIT, "the termination taint", || {
        node_state(&k, &terminate, |n| {
            reclaim_taints(n) == ["asg-termination:NoSchedule"]
        })
    })
    .await?;

    sim.state()
        .azure
        .set_events(vec![freeze_event, started_preempt, terminate_event]);
    eventually(WAIT, "the vanished reboot to be undone", || {
        node_state(&k, &reboot, |n| {
            reclaim_taints(n).is_empty() && !unschedulable(n) && node_notice(n).is_none()
        })
    })
    .await?;
    for agent in agents {
        agent.stop().await?;
    }
    Ok(())
}

#[tokio::test]
async fn gcp_a_preemption_drains_executors_first_within_the_30_second_budget() -> Result<()> {
    let (k, sim, node) = spot_node_on(Provider::Gcp, "gcp-preempt").await?;
    let executors = ["exec-1", "exec-2", "exec-3"];
    for name in executors {
        k.run_pod(
            &node,
            TestPod::spark_executor(name, "spark-gcp").grace_period(25),
        )
        .await?;
    }
    for name in ["task-1", "task-2", "task-3"] {
        k.run_pod(&node, TestPod::new(name).grace_period(25))
            .await?;
    }
    k.run_pod(
        &node,
        TestPod::new("dns")
            .priority_class("system-node-critical")
            .grace_period(25),
    )
    .await?;
    let (history, _kubelet) = watched_with_kubelet(&k, &node);
    let agent = start_agent(&node, &sim.url(), &[]).await?;
    agent.ready().await?;
    sim.state().faults.inject(Fault::Status(503), 2);
    eventually(WAIT, "the 503s to be counted", || async {
        Ok(agent.metric_sum(
            "reclaim_metadata_errors_total",
            &[("provider", "gcp"), ("error", "server_error")],
        ) >= 1.0)
    })
    .await?;

    sim.state().gcp.set_preempted(true);
    eventually(WAIT, "the spot taint", || {
        node_state(&k, &node, |n| {
            reclaim_taints(n) == ["spot-interruption:NoSchedule"]
        })
    })
    .await?;
    let notice = node_notice(&k.nodes().get(&node).await?).unwrap();
    assert_eq!(
        (notice.provider, notice.event_id.as_str()),
        (Provider::Gcp, "gce-preempted")
    );
    let drain_deadline = notice.deadline.unwrap() - SignedDuration::from_secs(10);
    let all = [
        "exec-1", "exec-2", "exec-3", "task-1", "task-2", "task-3", "dns",
    ];
    eventually(WAIT, "every pod to have been asked to go", || async {
        Ok(all.iter().all(|p| history.deleting(p).is_some()))
    })
    .await?;
    let asked = |name| history.deleting(name).unwrap();
    let last_executor = executors.iter().map(|e| asked(e).0).max().unwrap();
    for other in ["task-1", "task-2", "task-3", "dns"] {
        assert!(
            last_executor < asked(other).0,
            "executors are asked before {other}"
        );
    }
    for name in all {
        let pod = asked(name).1;
        let due = pod.metadata.deletion_timestamp.unwrap().0;
        assert!(
            due <= drain_deadline,
            "{name} is due at {due}, after the drain deadline {drain_deadline}"
        );
        let grace = pod.metadata.deletion_grace_period_seconds.unwrap();
        assert!(
            grace < 25,
            "{name}'s 25 s grace period was clamped to the 20 s budget, got {grace}"
        );
    }
    let executor_grace = executors
        .iter()
        .map(|e| asked(e).1.metadata.deletion_grace_period_seconds.unwrap())
        .min()
        .unwrap();
    let others_grace = ["task-1", "task-2", "task-3", "dns"]
        .iter()
        .map(|p| asked(p).1.metadata.deletion_grace_period_seconds.unwrap())
        .max()
        .unwrap();
    assert!(
        executor_grace >= others_grace,
        "executors get the largest share of the budget: {executor_grace} s vs {others_grace} s"
    );
    let pods = k.pods();
    eventually(WAIT, "the node to be empty", || gone(&pods, &all)).await?;

    // A Spot VM that was stopped can be started again as the same node: preempted goes
    // back to FALSE, and the node must not stay cordoned.
    sim.state().gcp.set_preempted(false);
    eventually(WAIT, "the preemption to be undone", || {
        node_state(&k, &node, |n| {
            reclaim_taints(n).is_empty() && !unschedulable(n) && node_notice(n).is_none()
        })
    })
    .await?;
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn gcp_terminating_maintenance_is_acted_on_and_undone_when_it_ends() -> Result<()> {
    let (k, sim, node) = spot_node_on(Provider::Gcp, "gcp-maintenance").await?;
    let agent = start_agent(&node, &sim.url(), &[]).await?;
    agent.ready().await?;
    sim.state()
        .gcp
        .set_maintenance_event("MIGRATE_ON_HOST_MAINTENANCE");
    let requests = sim.state().gcp.requests;
    eventually(WAIT, "the change to be seen", || async {
        Ok(sim.state().gcp.requests >= requests + 2)
    })
    .await?;
    assert!(
        reclaim_taints(&k.nodes().get(&node).await?).is_empty(),
        "a live migration keeps the pods"
    );
    sim.state()
        .gcp
        .set_maintenance_event("TERMINATE_ON_HOST_MAINTENANCE");
    eventually(WAIT, "the maintenance taint", || {
        node_state(&k, &node, |n| {
            reclaim_taints(n) == ["scheduled-maintenance:NoSchedule"] && unschedulable(n)
        })
    })
    .await?;
    sim.state().gcp.set_maintenance_event("NONE");
    eventually(WAIT, "the maintenance to be undone", || {
        node_state(&k, &node, |n| {
            reclaim_taints(n).is_empty() && !unschedulable(n)
        })
    })
    .await?;
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn without_a_provider_id_the_provider_is_probed_and_nothing_answering_leaves_the_agent_unready()
-> Result<()> {
    let k = kubelet("probe").await?;
    let gcp_only =
        Simulator::start_serving("127.0.0.1:0".parse()?, SimState::default(), &[Cloud::Gcp])
            .await?;
    let node = k.node_name("bare");
    k.register_node(TestNode::new(&node)).await?;
    let agent = start_agent(&node, &gcp_only.url(), &[]).await?;
    agent.ready().await?;
    gcp_only.state().gcp.set_preempted(true);
    eventually(WAIT, "the spot taint", || {
        node_state(&k, &node, |n| {
            reclaim_taints(n) == ["spot-interruption:NoSchedule"]
        })
    })
    .await?;
    assert_eq!(
        node_notice(&k.nodes().get(&node).await?).unwrap().provider,
        Provider::Gcp
    );
    agent.stop().await?;

    let silent = Simulator::start_serving("127.0.0.1:0".parse()?, SimState::default(), &[]).await?;
    let lost = k.node_name("lost");
    k.register_node(TestNode::new(&lost)).await?;
    let agent = start_agent(&lost, &silent.url(), &[]).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !agent.health.is_ready(),
        "no metadata service answered, so the agent is not ready"
    );
    assert!(agent.health.is_alive(), "but it keeps trying");
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn an_agent_at_rest_under_far_maintenance_or_a_served_rebalance_asks_the_api_server_nothing()
-> Result<()> {
    let cp = ControlPlane::shared();
    cp.install_interruption_crd()?;
    let (k, sim, node) = spot_node("agent-at-rest").await?;
    // Its own ServiceAccount in reclaim-system: what it asks is in the audit log.
    let clients = reclaim_testbed::agent::privileged_account(
        &k,
        "reclaim-system",
        &format!("at-rest-{}", k.namespace),
    )
    .await?;
    let agent = reclaim_testbed::agent::start_agent_as(
        clients,
        &node,
        &sim.url(),
        &["--maintenance-lead-time", "10m"],
    )
    .await?;
    agent.ready().await?;
    // Counts what the agent asked (its Node, its pods, its records; a watch aside) while
    // it polled the metadata service 40 more times.
    let at_rest = |state: &'static str| {
        let (sim, node) = (&sim, &node);
        async move {
            let from = Timestamp::now();
            let polls = sim.state().aws.stats.metadata_requests;
            eventually(WAIT, "40 more polls", || async {
                Ok(sim.state().aws.stats.metadata_requests >= polls + 40)
            })
            .await?;
            let mut asked = cp.audited(node, from, Timestamp::now())?;
            asked.remove("watch");
            anyhow::ensure!(asked.is_empty(), "{state}: the agent asked {asked:?}");
            Ok(())
        }
    };
    // Maintenance two days ahead: announced, beyond the lead time, nothing to do.
    sim.state().aws.set_maintenance(json!([{
        "Code": "system-reboot", "Description": "scheduled reboot", "State": "active",
        "EventId": "instance-event-0f0f0f0f0f0f0f0f0",
        "NotBefore": aws_event_time(Timestamp::now() + SignedDuration::from_hours(48)),
        "NotAfter": aws_event_time(Timestamp::now() + SignedDuration::from_hours(49)),
    }]));
    at_rest("maintenance two days ahead").await?;
    // A rebalance recommendation, acted on once and served on.
    sim.state().aws.set_rebalance(Timestamp::now());
    eventually(WAIT, "the rebalance taint and its record", || async {
        let tainted = node_state(&k, &node, |n| {
            reclaim_taints(n) == ["rebalance:NoSchedule"] && unschedulable(n)
        })
        .await?;
        let records = reclaim_service::interruptions::api(k.client())
            .list(&ListParams::default())
            .await?;
        Ok(tainted
            && records
                .items
                .iter()
                .any(|r| r.data["spec"]["node"] == node.as_str()))
    })
    .await?;
    // Whatever the taint set off (the record's first write, an Event) has landed once the
    // watch reports the version the agent last wrote; then the rest is counted.
    eventually(WAIT, "the agent's writes to settle", || async {
        let from = Timestamp::now();
        let polls = sim.state().aws.stats.metadata_requests;
        eventually(WAIT, "a few polls", || async {
            Ok(sim.state().aws.stats.metadata_requests >= polls + 8)
        })
        .await?;
        let mut asked = cp.audited(&node, from, Timestamp::now())?;
        asked.remove("watch");
        Ok(asked.is_empty())
    })
    .await?;
    at_rest("a served rebalance recommendation").await?;
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn azure_events_are_acknowledged_only_after_a_drain_that_emptied_the_node_never_for_a_drill()
-> Result<()> {
    let k = kubelet("azure-ack").await?;
    let sim = simulator().await?;
    let (stuck, clean) = (k.node_name("vmss-5"), k.node_name("vmss-6"));
    k.register_node(azure_node(&stuck, 5)).await?;
    k.register_node(azure_node(&clean, 6)).await?;
    // A pod that never leaves (a finalizer nobody removes).
    k.run_pod(
        &stuck,
        TestPod::new("held")
            .finalizer("example.com/held")
            .grace_period(1),
    )
    .await?;
    k.run_pod(&clean, TestPod::new("drill-task").grace_period(1))
        .await?;
    let _kubelet = Tasks(vec![
        k.keep_finishing_deletions(&stuck),
        k.keep_finishing_deletions(&clean),
    ]);
    let agents = [
        start_agent(
            &stuck,
            &sim.url(),
            &[
                "--azure-acknowledge",
                "--azure-vm-name",
                "aks-spot-12345678-vmss_5",
            ],
        )
        .await?,
        start_agent(
            &clean,
            &sim.url(),
            &[
                "--azure-acknowledge",
                "--azure-vm-name",
                "aks-spot-12345678-vmss_6",
            ],
        )
        .await?,
    ];
    for agent in &agents {
        agent.ready().await?;
    }
    let drains_done = |agent: &reclaim_testbed::agent::RunningAgent| {
        agent.metric_sum("reclaim_drain_duration_seconds_count", &[])
    };
    // 1. A preemption whose drain ends with a pod still on the node.
    let held_event = "0A0A0A0A-0000-4000-8000-000000000005";
    let not_before = rfc1123(Timestamp::now() + SignedDuration::from_secs(20));
    sim.state().azure.set_events(vec![azure_event(
        held_event,
        "Preempt",
        "aks-spot-12345678-vmss_5",
        "Scheduled",
        &not_before,
    )]);
    eventually(
        Duration::from_secs(90),
        "the first drain to end",
        || async { Ok(drains_done(&agents[0]) >= 1.0) },
    )
    .await?;
    assert!(k.pods().get_opt("held").await?.is_some());
    // 2. A drill on the other node, drained to the end, then called off.
    record::annotate_drill(&k, &clean, Some("spot-interruption,lead=15s")).await?;
    eventually(
        Duration::from_secs(90),
        "the drill's drain to end",
        || async { Ok(drains_done(&agents[1]) >= 1.0) },
    )
    .await?;
    record::annotate_drill(&k, &clean, None).await?;
    eventually(WAIT, "the drill to be called off", || {
        node_state(&k, &clean, |n| reclaim_taints(n).is_empty())
    })
    .await?;
    // 3. A real preemption of that node, drained empty: the one acknowledgement.
    k.run_pod(&clean, TestPod::new("task").grace_period(1))
        .await?;
    let clean_event = "0B0B0B0B-0000-4000-8000-000000000006";
    let not_before = rfc1123(Timestamp::now() + SignedDuration::from_secs(30));
    sim.state().azure.set_events(vec![azure_event(
        clean_event,
        "Preempt",
        "aks-spot-12345678-vmss_6",
        "Scheduled",
        &not_before,
    )]);
    eventually(
        WAIT,
        "the emptied node's event to be acknowledged",
        || async { Ok(!sim.state().azure.acknowledged.is_empty()) },
    )
    .await?;
    assert_eq!(sim.state().azure.acknowledged, [clean_event]);
    // The finalizer goes, so the namespace can.
    let release = json!({"metadata": {"finalizers": null}});
    k.pods()
        .patch("held", &PatchParams::default(), &Patch::Merge(&release))
        .await?;
    for agent in agents {
        agent.stop().await?;
    }
    Ok(())
}

#[tokio::test]
async fn an_agent_on_another_instance_than_its_node_names_refuses_to_act() -> Result<()> {
    let (k, sim, node) = spot_node("agent-instance").await?;
    // The Node says it is i-0123456789abcdef0 (TestNode::spot); the metadata service here
    // answers for another instance: --node-name names a node this agent does not run on.
    sim.state().aws.instance_id = "i-0fedcba9876543210".into();
    let misplaced = start_agent(&node, &sim.url(), &[]).await?;
    eventually(WAIT, "the refusal", || async {
        Ok(misplaced.health.not_ready_reason().is_some_and(|why| {
            why.contains("i-0fedcba9876543210") && why.contains("refusing to act")
        }))
    })
    .await?;
    sim.state()
        .aws
        .schedule_spot("terminate", Timestamp::now(), SignedDuration::from_secs(60));
    // Not a taint while an agent on the right instance (the same metadata now naming the
    // Node's instance) taints it.
    sim.state().aws.instance_id = "i-0123456789abcdef0".into();
    let placed = start_agent(&node, &sim.url(), &[]).await?;
    eventually(
        WAIT,
        "the node tainted by the agent on its instance",
        || {
            node_state(&k, &node, |n| {
                reclaim_taints(n) == ["spot-interruption:NoSchedule"]
            })
        },
    )
    .await?;
    assert!(!misplaced.health.is_ready());
    assert_eq!(
        misplaced.metric_sum("reclaim_node_actions_total", &[]),
        0.0,
        "the misplaced agent acted"
    );
    misplaced.stop().await?;
    placed.stop().await?;
    Ok(())
}

#[tokio::test]
async fn an_agent_whose_token_is_bound_to_a_pod_on_another_node_refuses_to_act() -> Result<()> {
    let (k, sim, theirs) = spot_node("agent-identity").await?;
    let ours = k.node_name("spot-ours");
    k.register_node(TestNode::spot(&ours)).await?;
    // The agent's ServiceAccount (all rights, through RBAC) and its pod on our node: the
    // token bound to that pod names our node, as the kubelet mounts it.
    reclaim_testbed::agent::privileged_account(&k, &k.namespace, "agent").await?;
    let (pod, bound) =
        reclaim_testbed::agent::pod_bound_agent(&k.namespace, "agent", &ours).await?;
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let own_pod = ["--pod-name", &pod_name, "--pod-namespace", &k.namespace];
    // Told to guard another node with that token: never ready, and it acts on nothing.
    let misplaced =
        reclaim_testbed::agent::start_agent_as(bound.clone(), &theirs, &sim.url(), &own_pod)
            .await?;
    eventually(WAIT, "the refusal", || async {
        Ok(misplaced
            .health
            .not_ready_reason()
            .is_some_and(|why| why.contains("refusing to act on another node")))
    })
    .await?;
    // Guarding its own node with the same token, an agent works: the notice that follows
    // (served to both) taints our node, and the refusal still stands on theirs.
    let placed = reclaim_testbed::agent::start_agent_as(bound, &ours, &sim.url(), &own_pod).await?;
    placed.ready().await?;
    sim.state()
        .aws
        .schedule_spot("terminate", Timestamp::now(), SignedDuration::from_secs(60));
    eventually(WAIT, "our node's taint", || {
        node_state(&k, &ours, |n| {
            reclaim_taints(n) == ["spot-interruption:NoSchedule"]
        })
    })
    .await?;
    assert!(
        reclaim_taints(&k.nodes().get(&theirs).await?).is_empty(),
        "the misplaced agent tainted a node that is not its own"
    );
    assert!(!misplaced.health.is_ready());
    misplaced.stop().await?;
    placed.stop().await?;
    Ok(())
}
