//! Benchmarks of the agent on the local control plane (figures, not pass/fail):
//! 1. notice-to-taint latency over N notices per cloud (each on a fresh node and agent),
//!    then right after a 15-error storm on the spot path (measured from the first answer
//!    that carried the notice);
//! 2. on a node of 110 pods, the time from the taint until every eviction was issued,
//!    on AWS (2-minute notice) and GCP (30 s: every pod must be due before the deadline);
//! 3. an agent at rest: its API requests, memory and CPU while it polls the metadata
//!    service and nothing, far maintenance, or a rebalance recommendation is announced;
//! 4. a fleet of agents noticed in the same second (`--fleet-only` runs it alone);
//! 5. a real Spark job losing one of its two spot nodes mid-shuffle, with Reclaim, with
//!    Reclaim but Spark's decommissioning off, and with no handler (`--spark-only`).
//!
//! The agents of 3 and 4 run as a ServiceAccount, as in a cluster: API Priority and
//! Fairness (on, as in every cluster) exempts only `system:masters`, so they meet the
//! server's throttling as a real DaemonSet does.
//!
//! Run it through `scripts/bench`, which builds the release binaries it measures.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use kube::runtime::watcher;
use reclaim_model::Provider;
use reclaim_simulator::{SimState, Simulator};
use reclaim_testbed::agent::spawn_agent_process;
use reclaim_testbed::clouds::STORM_ERRORS;
use reclaim_testbed::process::ReclaimProcess;
use reclaim_testbed::{ControlPlane, TestKubelet, TestNode, TestPod, clouds};
use serde_json::json;

struct Args {
    notices: usize,
    storms: usize,
    fleet: usize,
    fleet_pods: usize,
    pods: usize,
    idle_seconds: u64,
    /// Only the idle agents (section 3).
    idle_only: bool,
    /// Only the fleet (section 4).
    fleet_only: bool,
    /// Only the Spark job (section 5).
    spark_only: bool,
}

fn args() -> Result<Args> {
    let mut args = Args {
        notices: 20,
        storms: 10,
        fleet: 20,
        fleet_pods: 50,
        pods: 110,
        idle_seconds: 60,
        idle_only: false,
        fleet_only: false,
        spark_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if ["--idle-only", "--fleet-only", "--spark-only"].contains(&flag.as_str()) {
            args.idle_only |= flag == "--idle-only";
            args.fleet_only |= flag == "--fleet-only";
            args.spark_only |= flag == "--spark-only";
            continue;
        }
        let value: u64 = it
            .next()
            .with_context(|| format!("{flag} needs a value"))?
            .parse()?;
        match flag.as_str() {
            "--notices" => args.notices = value as usize,
            "--storms" => args.storms = value as usize,
            "--fleet" => args.fleet = value as usize,
            "--fleet-pods" => args.fleet_pods = value as usize,
            "--pods" => args.pods = value as usize,
            "--idle-seconds" => args.idle_seconds = value,
            other => {
                anyhow::bail!(
                    "unknown flag {other}; use --notices N, --storms N, --pods N, --fleet N, --fleet-pods N, --idle-seconds N, --idle-only, --fleet-only, --spark-only"
                )
            }
        }
    }
    Ok(args)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = args()?;
    let cp: &ControlPlane = tokio::task::spawn_blocking(ControlPlane::shared).await?;
    let sim = Simulator::start("127.0.0.1:0".parse()?, SimState::default()).await?;
    let kubelet = TestKubelet::new(cp.admin_client().await?, "bench").await?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    println!(
        "reclaim-agent benchmark on {cp}; {} cores",
        std::thread::available_parallelism()?.get()
    );

    let account = agent_account(cp).await?;
    if args.idle_only {
        return idle_agents(cp, &account, &kubelet, &sim, &http, args.idle_seconds).await;
    }
    if args.fleet_only {
        return fleets(cp, &account, &kubelet, &sim, &http, &args).await;
    }
    if args.spark_only {
        return spark_side_by_side(cp).await;
    }
    println!(
        "\n1. notice-to-taint, {} notices per cloud (targets: p99 <= poll + 200 ms = 1200 ms on AWS and Azure, <= 200 ms on GCP):",
        args.notices
    );
    for provider in [Provider::Aws, Provider::Azure, Provider::Gcp] {
        let latencies =
            notice_to_taint(&kubelet, &sim, &http, provider, args.notices, false).await?;
        print_percentiles(provider, latencies);
    }
    println!(
        "\n1b. a notice announced during a storm of {STORM_ERRORS} errors (503, garbage, a hang past the timeout, 500) on the spot path: from the storm's last error (the service answers correctly from then on) to the taint, {} storms per cloud (target: p99 <= poll + 1 s = 2000 ms):",
        args.storms
    );
    for provider in [Provider::Aws, Provider::Azure, Provider::Gcp] {
        let latencies = notice_to_taint(&kubelet, &sim, &http, provider, args.storms, true).await?;
        print_percentiles(provider, latencies);
    }

    println!(
        "\n2. drain of a node with {} pods, a kubelet ending each graceful deletion when due (targets: every non-critical eviction issued within 1 s of the taint, critical pods once the others are gone; on a 30 s notice every pod due by the deadline):",
        args.pods
    );
    for (provider, lead) in [(Provider::Aws, 120), (Provider::Gcp, 30)] {
        full_node_drain(
            &kubelet,
            &sim,
            &http,
            provider,
            args.pods,
            SignedDuration::from_secs(lead),
        )
        .await?;
    }

    fleets(cp, &account, &kubelet, &sim, &http, &args).await?;

    idle_agents(cp, &account, &kubelet, &sim, &http, args.idle_seconds).await?;
    Ok(())
}

fn print_percentiles(provider: Provider, mut latencies: Vec<f64>) {
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    println!(
        "   {provider:?}: p50 {:.0} ms, p99 {:.0} ms (min {:.0}, max {:.0})",
        percentile(0.5),
        percentile(0.99),
        latencies[0],
        latencies[latencies.len() - 1]
    );
}

/// Announces a preemption `count` times, each on a fresh node guarded by a fresh agent,
/// at a different point of the agent's poll cycle; returns the latencies in ms. With
/// `storm`, the notice comes while an error storm on the spot path has begun, and the
/// latency counts from the first answer that carried it.
async fn notice_to_taint(
    kubelet: &TestKubelet,
    sim: &Simulator,
    http: &reqwest::Client,
    provider: Provider,
    count: usize,
    storm: bool,
) -> Result<Vec<f64>> {
    let lead = SignedDuration::from_secs(120);
    let mut latencies = Vec::new();
    for i in 0..count {
        let round = if storm { "storm" } else { "latency" };
        let node = kubelet.node_name(&format!("{round}-{provider:?}-{i}").to_lowercase());
        kubelet
            .register_node(clouds::spot_node(provider, &node))
            .await?;
        let flags = clouds::agent_flags(provider, &node, lead);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let agent = spawn_agent_process(&node, &sim.url(), &flags, std::process::Stdio::null())?;
        agent.ready(http).await?;
        let tainted = tokio::spawn(taint_seen(kubelet.nodes(), node.clone()));
        tokio::time::sleep(Duration::from_millis(200 + (i as u64 * 379) % 1000)).await;
        if storm {
            // One request hangs past the agent's 2 s timeout.
            clouds::error_storm(sim, provider, Duration::from_millis(2500));
            while sim.state().faults.pending() > STORM_ERRORS - 2 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let announced = Instant::now();
        clouds::announce_spot(sim, provider, &node, lead);
        let (seen, seen_at) = tokio::time::timeout(Duration::from_secs(60), tainted).await???;
        latencies.push(if storm {
            // From the end of the storm: the service could answer correctly from then on.
            let ended = sim
                .state()
                .faults
                .last_served
                .context("the storm was never served")?;
            seen_at.duration_since(ended).as_secs_f64() * 1000.0
        } else {
            ms(seen.saturating_duration_since(announced))
        });
        drop(agent);
        clouds::clear(sim);
    }
    Ok(latencies)
}

/// A kubeconfig for the ServiceAccount `reclaim-system/bench-agent`, bound to cluster-admin:
/// the agents' identity in sections 3 and 4 (the audit log records `reclaim-system`).
async fn agent_account(cp: &ControlPlane) -> Result<std::path::PathBuf> {
    let admin = cp.admin_client().await?;
    let objects = [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "reclaim-system"}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bench-agent", "namespace": "reclaim-system"}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "bench-agent"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": "bench-agent", "namespace": "reclaim-system"}]}),
    ];
    for object in objects {
        let object: DynamicObject = serde_json::from_value(object)?;
        let gvk = GroupVersionKind::try_from(object.types.as_ref().context("types")?)?;
        let (resource, _) = kube::discovery::pinned_kind(&admin, &gvk).await?;
        let api: Api<DynamicObject> = match object.metadata.namespace.as_deref() {
            Some(ns) => Api::namespaced_with(admin.clone(), ns, &resource),
            None => Api::all_with(admin.clone(), &resource),
        };
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    cp.service_account_kubeconfig_file("reclaim-system", "bench-agent", "bench-agent.kubeconfig")
        .await
}

/// Section 3, one agent at rest under each thing the metadata service may go on saying
/// for days: nothing; scheduled maintenance two days ahead (beyond the lead time, so
/// nothing to do); a rebalance recommendation, served until the instance dies (the node
/// tainted and cordoned once). What it asked of the API server is read from the server's
/// audit log (which records the ServiceAccounts of `reclaim-system`), by the node named.
async fn idle_agents(
    cp: &ControlPlane,
    kubeconfig: &std::path::Path,
    kubelet: &TestKubelet,
    sim: &Simulator,
    http: &reqwest::Client,
    seconds: u64,
) -> Result<()> {
    let node = kubelet.node_name("at-rest");
    kubelet.register_node(TestNode::spot(&node)).await?;
    let url = sim.url();
    let args = ["--node-name", node.as_str(), "--metadata-url", url.as_str()];
    let agent = ReclaimProcess::spawn_with(
        "reclaim-agent",
        &args,
        std::process::Stdio::null(),
        kubeconfig,
    )?;
    agent.ready(http).await?;
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    println!(
        "\n3. an agent at rest for {seconds} s under each state, polling every 1 s (targets: 0 API requests per minute but the Node watch's renewals, RSS <= 10 MiB, CPU <= 1 millicore):"
    );
    let maintenance = serde_json::json!([{
        "Code": "system-reboot", "Description": "scheduled reboot", "State": "active",
        "EventId": "instance-event-0bench0000000000a",
        "NotBefore": aws_event_time(Timestamp::now() + SignedDuration::from_hours(48)),
        "NotAfter": aws_event_time(Timestamp::now() + SignedDuration::from_hours(49)),
    }]);
    for state in [
        "nothing announced",
        "maintenance 2 days ahead",
        "rebalance served",
    ] {
        match state {
            "maintenance 2 days ahead" => sim.state().aws.set_maintenance(maintenance.clone()),
            "rebalance served" => {
                sim.state().aws.set_rebalance(Timestamp::now());
                wait_for_taint(kubelet, &node).await?;
                // The record is written beside the taint: let it land first.
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            _ => {}
        }
        let (from, started) = (Timestamp::now(), Instant::now());
        let cpu_before = agent.cpu_ticks()?;
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let (to, elapsed) = (Timestamp::now(), started.elapsed());
        let millicores =
            (agent.cpu_ticks()? - cpu_before) as f64 / ticks_per_second / elapsed.as_secs_f64()
                * 1000.0;
        let verbs = cp.audited(&node, from, to)?;
        let per_minute = |n: usize| n as f64 * 60.0 / elapsed.as_secs_f64();
        let watches = verbs.get("watch").copied().unwrap_or(0);
        let others: usize = verbs.values().sum::<usize>() - watches;
        let mib = |key| agent.memory_mib(key);
        println!(
            "   {state:<25} API requests {:.2}/min (+ {:.2}/min Node watch renewals) {verbs:?}; RSS {:.1} MiB ({:.1} MiB heap and stacks, {:.1} MiB mapped code; peak {:.1} MiB); CPU {millicores:.2} millicores",
            per_minute(others),
            per_minute(watches),
            mib("VmRSS")?,
            mib("RssAnon")?,
            mib("RssFile")?,
            mib("VmHWM")?,
        );
    }
    let polls = sim.state().aws.stats.metadata_requests;
    reclaim_testbed::clouds::clear(sim);
    println!("   {polls} metadata requests served in total");
    Ok(())
}

/// AWS's format for scheduled event times.
fn aws_event_time(t: Timestamp) -> String {
    t.to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("%d %b %Y %H:%M:%S GMT")
        .to_string()
}

/// Waits until `node` carries Reclaim's taint.
async fn wait_for_taint(kubelet: &TestKubelet, node: &str) -> Result<()> {
    reclaim_testbed::eventually(Duration::from_secs(60), "the taint", || async {
        Ok(kubelet
            .nodes()
            .get(node)
            .await?
            .spec
            .and_then(|s| s.taints)
            .unwrap_or_default()
            .iter()
            .any(|t| t.key == reclaim_model::keys::INTERRUPTION_TAINT))
    })
    .await
}

/// Section 4, twice: the agents as the ServiceAccount a DaemonSet runs as (one APF flow for
/// them all, at the `workload-low` priority level of the default FlowSchemas), then as
/// `system:masters`, which APF exempts: what the server's throttling costs a mass reclaim.
async fn fleets(
    cp: &ControlPlane,
    account: &std::path::Path,
    kubelet: &TestKubelet,
    sim: &Simulator,
    http: &reqwest::Client,
    args: &Args,
) -> Result<()> {
    for (who, kubeconfig) in [
        ("a ServiceAccount (APF applies)", account),
        ("system:masters (exempt from APF)", cp.kubeconfig.as_path()),
    ] {
        println!(
            "\n4. fleet as {who}: {} agents, each on a node of {} pods (two behind a budget that refuses), all noticed in the same second, 60 s ahead (target: 0 pods present at their node's deadline):",
            args.fleet, args.fleet_pods
        );
        let kubelet = TestKubelet::new(kubelet.client().clone(), "bench-fleet").await?;
        fleet(kubeconfig, &kubelet, sim, http, args.fleet, args.fleet_pods).await?;
    }
    Ok(())
}

/// A node of `count` pods (two in eleven Spark executors, a few critical) preempted `lead` ahead.
async fn full_node_drain(
    kubelet: &TestKubelet,
    sim: &Simulator,
    http: &reqwest::Client,
    provider: Provider,
    count: usize,
    lead: SignedDuration,
) -> Result<()> {
    let cloud = format!("{provider:?}").to_lowercase();
    let node = kubelet.node_name(&format!("full-{cloud}"));
    kubelet
        .register_node(clouds::spot_node(provider, &node))
        .await?;
    let pods = (0..count).map(|i| {
        let pod = match i % 11 {
            0 | 1 => TestPod::spark_executor(&format!("exec-{cloud}-{i}"), "spark-bench"),
            2 if i < 30 => TestPod::new(&format!("critical-{cloud}-{i}"))
                .priority_class("system-node-critical"),
            _ => TestPod::new(&format!("task-{cloud}-{i}")),
        };
        kubelet.run_pod(&node, pod)
    });
    for created in futures::future::join_all(pods).await {
        created?;
    }
    let flags = clouds::agent_flags(provider, &node, lead);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let agent = spawn_agent_process(&node, &sim.url(), &flags, std::process::Stdio::null())?;
    agent.ready(http).await?;
    let finisher = kubelet.keep_finishing_deletions(&node);
    let tainted = tokio::spawn(taint_seen(kubelet.nodes(), node.clone()));
    let evictions = tokio::spawn(evictions_seen(kubelet.pods(), node.clone(), count));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let announced = Instant::now();
    let action = Timestamp::now() + lead;
    clouds::announce_spot(sim, provider, &node, lead);
    let (taint, _) = tokio::time::timeout(Duration::from_secs(30), tainted).await???;
    let order = tokio::time::timeout(Duration::from_secs(90), evictions).await???;
    finisher.abort();
    drop(agent);
    clouds::clear(sim);
    let role = |pod: &Pod| {
        pod.metadata
            .name
            .clone()
            .unwrap_or_default()
            .split('-')
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let executors = order.iter().filter(|(_, p)| role(p) == "exec").count();
    let criticals = order.iter().filter(|(_, p)| role(p) == "critical").count();
    let executors_first = order.iter().take(executors).all(|(_, p)| role(p) == "exec");
    let critical_last = order
        .iter()
        .rev()
        .take(criticals)
        .all(|(_, p)| role(p) == "critical");
    let last_of = |critical: bool| {
        order
            .iter()
            .filter(|(_, p)| (role(p) == "critical") == critical)
            .map(|(at, _)| *at)
            .max()
            .unwrap_or(taint)
    };
    // The default safety margin is 10 s; the announced time is known to within a second.
    let deadline = action - SignedDuration::from_secs(10) + SignedDuration::from_secs(1);
    let late = order
        .iter()
        .filter(|(_, p)| {
            p.metadata
                .deletion_timestamp
                .as_ref()
                .is_none_or(|t| t.0 > deadline)
        })
        .count();
    println!(
        "   {provider:?}, {}-s notice: notice -> taint {:.0} ms; taint -> last of {} non-critical evictions issued {:.0} ms; taint -> last of {criticals} critical pods asked {:.0} ms; executors asked first: {executors_first}; critical last: {critical_last}; pods due after the deadline: {late}",
        lead.as_secs(),
        ms(taint - announced),
        order.len() - criticals,
        ms(last_of(false).saturating_duration_since(taint)),
        ms(last_of(true).saturating_duration_since(taint))
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// When the node was first seen carrying the interruption taint.
async fn taint_seen(nodes: Api<Node>, node: String) -> Result<(Instant, Timestamp)> {
    let config = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let mut stream = watcher(nodes, config).boxed();
    while let Some(event) = stream.next().await {
        if let watcher::Event::Apply(n) | watcher::Event::InitApply(n) = event? {
            let taints = n.spec.and_then(|s| s.taints).unwrap_or_default();
            if taints.iter().any(|t| t.key == "reclaim.dev/interruption") {
                return Ok((Instant::now(), Timestamp::now()));
            }
        }
    }
    anyhow::bail!("the node watch ended")
}

/// The first `count` pods on `node` seen terminating, in that order, with when.
async fn evictions_seen(pods: Api<Pod>, node: String, count: usize) -> Result<Vec<(Instant, Pod)>> {
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut stream = watcher(pods, config).boxed();
    let mut order: Vec<(Instant, Pod)> = Vec::new();
    while let Some(event) = stream.next().await {
        if let watcher::Event::Apply(pod) = event? {
            let seen = order
                .iter()
                .any(|(_, p)| p.metadata.name == pod.metadata.name);
            if pod.metadata.deletion_timestamp.is_some() && !seen {
                order.push((Instant::now(), pod));
                if order.len() == count {
                    return Ok(order);
                }
            }
        }
    }
    anyhow::bail!("the pod watch ended")
}

/// `agents` nodes of `per_node` pods each (one in ten a Spark executor, two behind a
/// budget that refuses, two critical, the rest ordinary), each guarded by its own agent
/// process, all noticed at once (they read the same simulated instance metadata).
async fn fleet(
    kubeconfig: &std::path::Path,
    kubelet: &TestKubelet,
    sim: &Simulator,
    http: &reqwest::Client,
    agents: usize,
    per_node: usize,
) -> Result<()> {
    let lead = SignedDuration::from_secs(60);
    let margin = SignedDuration::from_secs(10);
    let mut nodes = Vec::new();
    for n in 0..agents {
        let node = kubelet.node_name(&format!("fleet-{n}"));
        kubelet
            .register_node(clouds::spot_node(Provider::Aws, &node))
            .await?;
        let pods = (0..per_node).map(|i| {
            let name = format!("f{n}-{i}");
            let pod = match i % 10 {
                _ if i < 2 => TestPod::new(&name).label("budget", &format!("fleet-{n}")),
                _ if i < 4 => TestPod::new(&name).priority_class("system-node-critical"),
                0 => TestPod::spark_executor(&name, "spark-fleet"),
                _ => TestPod::new(&name),
            };
            kubelet.run_pod(&node, pod.grace_period(5))
        });
        for created in futures::future::join_all(pods).await {
            created?;
        }
        let selector = format!("fleet-{n}");
        kubelet
            .pod_disruption_budget(&format!("fleet-{n}"), &[("budget", &selector)], 2)
            .await?;
        nodes.push(node);
    }
    let mut processes = Vec::new();
    for node in &nodes {
        let url = sim.url();
        let args = [
            "--node-name",
            node,
            "--metadata-url",
            &url,
            "--safety-margin",
            "10s",
        ];
        processes.push(ReclaimProcess::spawn_with(
            "reclaim-agent",
            &args,
            std::process::Stdio::null(),
            kubeconfig,
        )?);
    }
    for process in &processes {
        process.ready(http).await?;
    }
    let finisher = tokio::spawn(finish_every_due_deletion(kubelet.clone()));
    let asked = Arc::new(Mutex::new(HashMap::new()));
    let watch = tokio::spawn(first_asked(kubelet.pods(), asked.clone()));
    let announced = Timestamp::now();
    let deadline = announced + lead - margin;
    clouds::announce_spot(sim, Provider::Aws, &nodes[0], lead);
    // Until the drain deadline, plus a little for the last graceful deletions to end.
    tokio::time::sleep(Duration::from_secs((lead - margin).as_secs() as u64 + 3)).await;
    let present = kubelet.pods().list(&Default::default()).await?.items;
    watch.abort();
    finisher.abort();
    // Per node, when its last ordinary pod or executor was first asked to go.
    let asked = asked.lock().unwrap().clone();
    let mut ordinary_done: Vec<f64> = nodes
        .iter()
        .enumerate()
        .map(|(n, _)| {
            (4..per_node)
                .filter_map(|i| asked.get(&format!("f{n}-{i}")))
                .map(|t: &Timestamp| t.duration_since(announced).as_secs_f64())
                .fold(0.0, f64::max)
        })
        .collect();
    ordinary_done.sort_by(f64::total_cmp);
    let late = present
        .iter()
        .filter(|p| {
            p.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with('f'))
                && p.metadata
                    .deletion_timestamp
                    .as_ref()
                    .is_none_or(|t| t.0 > deadline)
        })
        .count();
    let mut answers = std::collections::BTreeMap::<String, f64>::new();
    let mut last_issued = Vec::new();
    for process in &processes {
        let text = process.metrics_text(http).await?;
        for line in text
            .lines()
            .filter(|l| l.starts_with("reclaim_drain_requests_total{"))
        {
            if let Some((labels, value)) = line.split_once("} ") {
                *answers
                    .entry(
                        labels
                            .trim_start_matches("reclaim_drain_requests_total{")
                            .to_owned(),
                    )
                    .or_default() += value.trim().parse::<f64>().unwrap_or(0.0);
            }
        }
        last_issued.push(
            process
                .metric(http, "reclaim_drain_duration_seconds_sum")
                .await?,
        );
    }
    let requests: f64 = answers.values().sum();
    println!(
        "   notice -> last ordinary pod or executor asked, per node: median {:.1} s, max {:.1} s",
        ordinary_done[ordinary_done.len() / 2],
        ordinary_done[ordinary_done.len() - 1]
    );
    println!(
        "   pods present at the deadline, not due by it: {late} of {}; drain requests per node (list, evict, delete): {:.0}",
        agents * per_node,
        requests / agents as f64
    );
    println!("   answers met, summed over the agents: {answers:?}");
    last_issued.sort_by(f64::total_cmp);
    println!(
        "   drain duration per node (until empty, or the deadline with nothing left to ask): median {:.1} s, max {:.1} s",
        last_issued[last_issued.len() / 2],
        last_issued[last_issued.len() - 1]
    );
    drop(processes);
    clouds::clear(sim);
    Ok(())
}

/// Ends every due graceful deletion in the namespace, twice a second, like the kubelets.
async fn finish_every_due_deletion(kubelet: TestKubelet) {
    loop {
        if let Ok(pods) = kubelet.pods().list(&Default::default()).await {
            let now = Timestamp::now();
            for pod in pods.items {
                if pod
                    .metadata
                    .deletion_timestamp
                    .as_ref()
                    .is_some_and(|t| t.0 <= now)
                {
                    let _ = kubelet
                        .finish_deletion(&pod.metadata.name.unwrap_or_default())
                        .await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Records, for each pod of the namespace seen terminating, when it was asked to go (its
/// deletion timestamp minus its grace period).
async fn first_asked(pods: Api<Pod>, asked: Arc<Mutex<HashMap<String, Timestamp>>>) {
    let mut stream = watcher(pods, watcher::Config::default()).boxed();
    while let Some(Ok(event)) = stream.next().await {
        if let watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) = event
            && let (Some(due), Some(grace)) = (
                pod.metadata.deletion_timestamp.as_ref(),
                pod.metadata.deletion_grace_period_seconds,
            )
        {
            asked
                .lock()
                .unwrap()
                .entry(pod.metadata.name.clone().unwrap_or_default())
                .or_insert(due.0 - SignedDuration::from_secs(grace));
        }
    }
}

/// How a spot node's reclaim reaches the Spark job in section 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SparkCase {
    /// The agent drains the node; Spark decommissions its executors.
    Reclaim,
    /// The agent drains the node; Spark's decommissioning is off.
    ReclaimWithoutDecommissioning,
    /// No handler: at the deadline the instance is gone (its pods deleted at once).
    NoHandler,
}

/// Section 5: the same job and the same interruption (20 s ahead, when the middle stage
/// starts), three ways, on one control plane.
async fn spark_side_by_side(cp: &ControlPlane) -> Result<()> {
    use reclaim_testbed::spark::{JobFigures, SparkDist, SparkNodes};
    let work = cp.dir.join("spark-bench");
    std::fs::create_dir_all(&work)?;
    let dist = SparkDist::provisioned(&work).await?;
    // The in-process agents log warnings only, to stderr: the figures stay readable.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_writer(std::io::stderr)
        .try_init();
    let job = (400_000, Duration::from_secs(12));
    let lead = SignedDuration::from_secs(20);
    println!(
        "\n5. a Spark job (400,000 records, two shuffles, 8 partitions, middle-stage tasks of 12 s; 4 executors of 1 core on two spot nodes, driver on demand) whose first spot node is reclaimed {} s ahead as the middle stage starts:",
        lead.as_secs()
    );
    println!(
        "   {:<44} {:>8} {:>7} {:>12} {:>13} {:>6} {:>15} {:>9}",
        "", "job s", "result", "failed tasks", "stages again", "lost", "decommissioned", "migrated"
    );
    for case in [
        SparkCase::Reclaim,
        SparkCase::ReclaimWithoutDecommissioning,
        SparkCase::NoHandler,
    ] {
        let k = TestKubelet::new(cp.admin_client().await?, "bench-spark").await?;
        let logs = work.join(format!("{case:?}"));
        let SparkNodes {
            spot,
            executors: _executors,
            ..
        } = SparkNodes::start(&k, &dist, logs.join("executors")).await?;
        let sim = Simulator::start("127.0.0.1:0".parse()?, SimState::default()).await?;
        let agent = match case {
            SparkCase::NoHandler => None,
            _ => {
                let agent =
                    reclaim_testbed::agent::start_agent(&spot[0].name, &sim.url(), &[]).await?;
                agent.ready().await?;
                Some(agent)
            }
        };
        let decommission = if case == SparkCase::Reclaim {
            "true"
        } else {
            "false"
        };
        let driver_log = logs.join("driver.log");
        let mut driver = dist.start_driver(
            cp,
            &k.namespace,
            "driver",
            job,
            &driver_log,
            &[("spark.decommission.enabled", decommission)],
        )?;
        reclaim_testbed::eventually(Duration::from_secs(180), "the middle stage", || async {
            Ok(std::fs::read_to_string(&driver_log)
                .unwrap_or_default()
                .contains("Starting task 0.0 in stage 1.0"))
        })
        .await?;
        let deadline = Timestamp::now() + lead;
        sim.state()
            .aws
            .schedule_spot("terminate", Timestamp::now(), lead);
        if case == SparkCase::NoHandler {
            // The instance goes at the deadline: its pods with it, and no new one lands.
            tokio::time::sleep(deadline.duration_since(Timestamp::now()).unsigned_abs()).await;
            let cordon = json!({"spec": {"unschedulable": true}});
            k.nodes()
                .patch(
                    &spot[0].name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&cordon),
                )
                .await?;
            let on_node =
                kube::api::ListParams::default().fields(&format!("spec.nodeName={}", spot[0].name));
            for pod in k.pods().list(&on_node).await? {
                k.finish_deletion(&pod.metadata.name.unwrap_or_default())
                    .await?;
            }
        }
        let finished = tokio::time::timeout(Duration::from_secs(600), driver.wait()).await;
        if finished.is_err() {
            let _ = driver.kill().await;
        }
        let figures = JobFigures::read(&driver_log, &logs.join("executors"))?;
        println!(
            "   {:<44} {:>8} {:>7} {:>12} {:>13} {:>6} {:>15} {:>9}",
            match case {
                SparkCase::Reclaim => "Reclaim, decommissioning on",
                SparkCase::ReclaimWithoutDecommissioning => "Reclaim, decommissioning off",
                SparkCase::NoHandler => "no handler (pods gone at the deadline)",
            },
            figures.seconds.map_or("-".into(), |s| format!("{s:.1}")),
            if figures.correct { "right" } else { "WRONG" },
            figures.failed_tasks,
            figures.resubmitted,
            figures.lost_executors,
            figures.decommissioned_executors,
            figures.migrated_blocks,
        );
        if let Some(agent) = agent {
            agent.stop().await?;
        }
    }
    Ok(())
}
