//! Benchmarks of the agent on the local control plane (figures, not pass/fail):
//! 1. notice-to-taint latency over N spot notices (each on a fresh node and agent);
//! 2. on a node of 110 pods, the time from the taint until every eviction was issued;
//! 3. the idle agent's memory and CPU while it polls the metadata service.
//!
//! Run it through `scripts/bench`, which builds the release binaries it measures.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use kube::runtime::watcher;
use reclaim_simulator::{SimState, Simulator};
use reclaim_testbed::agent::AgentProcess;
use reclaim_testbed::{ControlPlane, TestKubelet, TestNode, TestPod};

struct Args {
    notices: usize,
    pods: usize,
    idle_seconds: u64,
}

fn args() -> Result<Args> {
    let mut args = Args {
        notices: 20,
        pods: 110,
        idle_seconds: 60,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value: u64 = it
            .next()
            .with_context(|| format!("{flag} needs a value"))?
            .parse()?;
        match flag.as_str() {
            "--notices" => args.notices = value as usize,
            "--pods" => args.pods = value as usize,
            "--idle-seconds" => args.idle_seconds = value,
            other => {
                anyhow::bail!("unknown flag {other}; use --notices N, --pods N, --idle-seconds N")
            }
        }
    }
    Ok(args)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = args()?;
    let cp = tokio::task::spawn_blocking(ControlPlane::shared).await?;
    let sim = Simulator::start("127.0.0.1:0".parse()?, SimState::default()).await?;
    let kubelet = TestKubelet::new(cp.admin_client().await?, "bench").await?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    println!(
        "reclaim-agent benchmark on {cp}; {} cores",
        std::thread::available_parallelism()?.get()
    );

    let mut latencies = Vec::new();
    for i in 0..args.notices {
        let node = kubelet.node_name(&format!("latency-{i}"));
        kubelet.register_node(TestNode::spot(&node)).await?;
        let agent = AgentProcess::spawn(&node, &sim.url(), &[], std::process::Stdio::null())?;
        agent.ready(&http).await?;
        let tainted = tokio::spawn(taint_seen(kubelet.nodes(), node.clone()));
        // Announce at a different point of the agent's poll cycle each time.
        tokio::time::sleep(Duration::from_millis(200 + (i as u64 * 379) % 1000)).await;
        let announced = Instant::now();
        sim.state().aws.schedule_spot(
            "terminate",
            Timestamp::now(),
            SignedDuration::from_secs(120),
        );
        let seen = tokio::time::timeout(Duration::from_secs(30), tainted).await???;
        latencies.push(seen.saturating_duration_since(announced).as_secs_f64() * 1000.0);
        drop(agent);
        sim.state().aws.clear_notices();
    }
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    println!(
        "\n1. notice-to-taint, {} spot notices, poll interval 1 s (target p99 <= 1200 ms):",
        latencies.len()
    );
    println!(
        "   p50 {:.0} ms, p99 {:.0} ms, min {:.0} ms, max {:.0} ms",
        percentile(0.5),
        percentile(0.99),
        latencies[0],
        latencies[latencies.len() - 1]
    );

    let node = kubelet.node_name("full");
    kubelet.register_node(TestNode::spot(&node)).await?;
    let pods = (0..args.pods).map(|i| {
        let pod = match i % 11 {
            0 | 1 => TestPod::spark_executor(&format!("exec-{i}"), "spark-bench"),
            2 if i < 30 => {
                TestPod::new(&format!("critical-{i}")).priority_class("system-node-critical")
            }
            _ => TestPod::new(&format!("task-{i}")),
        };
        kubelet.run_pod(&node, pod)
    });
    for created in futures::future::join_all(pods).await {
        created?;
    }
    let agent = AgentProcess::spawn(&node, &sim.url(), &[], std::process::Stdio::null())?;
    agent.ready(&http).await?;
    let tainted = tokio::spawn(taint_seen(kubelet.nodes(), node.clone()));
    let evictions = tokio::spawn(evictions_seen(kubelet.pods(), args.pods));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let announced = Instant::now();
    sim.state().aws.schedule_spot(
        "terminate",
        Timestamp::now(),
        SignedDuration::from_secs(120),
    );
    let taint = tokio::time::timeout(Duration::from_secs(30), tainted).await???;
    let (last, order) = tokio::time::timeout(Duration::from_secs(60), evictions).await???;
    drop(agent);
    sim.state().aws.clear_notices();
    let executors_first = order.iter().take_while(|n| n.starts_with("exec-")).count()
        == order.iter().filter(|n| n.starts_with("exec-")).count();
    let critical_last = order
        .iter()
        .rev()
        .take_while(|n| n.starts_with("critical-"))
        .count()
        == order.iter().filter(|n| n.starts_with("critical-")).count();
    println!(
        "\n2. drain of a node with {} pods (target: all evictions issued within 1 s of the taint):",
        args.pods
    );
    println!(
        "   notice -> taint {:.0} ms; taint -> last of {} evictions issued {:.0} ms",
        ms(taint - announced),
        order.len(),
        ms(last.saturating_duration_since(taint))
    );
    println!(
        "   executors asked first: {executors_first}; critical pods asked last: {critical_last}"
    );

    let node = kubelet.node_name("idle");
    kubelet.register_node(TestNode::spot(&node)).await?;
    let agent = AgentProcess::spawn(&node, &sim.url(), &[], std::process::Stdio::null())?;
    agent.ready(&http).await?;
    let pid = agent.child.id();
    let (cpu_before, started) = (cpu_ticks(pid)?, Instant::now());
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let (cpu_after, elapsed) = (cpu_ticks(pid)?, started.elapsed());
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let millicores =
        (cpu_after - cpu_before) as f64 / ticks_per_second / elapsed.as_secs_f64() * 1000.0;
    let polls = sim.state().aws.stats.metadata_requests;
    println!(
        "\n3. idle agent over {} s, polling every 1 s (targets: RSS <= 10 MiB, CPU <= 1 millicore):",
        args.idle_seconds
    );
    let mib = |key| status_kib(pid, key).map(|kib| kib / 1024.0);
    println!(
        "   RSS {:.1} MiB = {:.1} MiB heap and stacks (RssAnon) + {:.1} MiB mapped binary and libraries (RssFile); peak {:.1} MiB",
        mib("VmRSS")?,
        mib("RssAnon")?,
        mib("RssFile")?,
        mib("VmHWM")?
    );
    println!("   CPU {millicores:.2} millicores; {polls} metadata requests served in total");
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// When the node was first seen carrying the interruption taint.
async fn taint_seen(nodes: Api<Node>, node: String) -> Result<Instant> {
    let config = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let mut stream = watcher(nodes, config).boxed();
    while let Some(event) = stream.next().await {
        if let watcher::Event::Apply(n) | watcher::Event::InitApply(n) = event? {
            let taints = n.spec.and_then(|s| s.taints).unwrap_or_default();
            if taints.iter().any(|t| t.key == "reclaim.dev/interruption") {
                return Ok(Instant::now());
            }
        }
    }
    anyhow::bail!("the node watch ended")
}

/// When the last of `count` pods was seen terminating, and the order they were seen in.
async fn evictions_seen(pods: Api<Pod>, count: usize) -> Result<(Instant, Vec<String>)> {
    let mut stream = watcher(pods, watcher::Config::default()).boxed();
    let mut order: Vec<String> = Vec::new();
    while let Some(event) = stream.next().await {
        if let watcher::Event::Apply(pod) = event? {
            let name = pod.metadata.name.clone().unwrap_or_default();
            if pod.metadata.deletion_timestamp.is_some() && !order.contains(&name) {
                order.push(name);
                if order.len() == count {
                    return Ok((Instant::now(), order));
                }
            }
        }
    }
    anyhow::bail!("the pod watch ended")
}

fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

fn status_kib(pid: u32, key: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .with_context(|| format!("{key} missing"))?;
    Ok(line.split_whitespace().nth(1).unwrap_or("0").parse()?)
}
