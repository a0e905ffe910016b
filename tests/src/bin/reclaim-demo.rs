//! The demo: a spot interruption end to end on a real local control plane, on AWS
//! (default), Azure or GCP (`--provider`).
//!
//! A Karpenter spot node runs three Spark executors behind a PodDisruptionBudget that
//! allows one disruption, an Airflow task pod, a node-critical DNS pod and a DaemonSet
//! pod. The metadata simulator announces a spot interruption; the real `reclaim-agent`
//! binary taints, cordons and drains the node. What happened is printed as a timeline
//! read from the API server (watches on the node and the pods) and the agent's log.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::watcher;
use reclaim_model::Provider;
use reclaim_simulator::{SimState, Simulator};
use reclaim_testbed::agent::spawn_agent_process;
use reclaim_testbed::{ControlPlane, TestKubelet, TestPod, clouds};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tokio::sync::mpsc;

const SAFETY_MARGIN: i64 = 5;

struct Args {
    hold: bool,
    lead_seconds: i64,
    provider: Provider,
}

/// A node name as each cloud's Kubernetes service names its nodes.
fn node_name(provider: Provider) -> &'static str {
    match provider {
        Provider::Aws => "ip-10-0-7-21.ec2.internal",
        Provider::Azure => "aks-spot-12345678-vmss000003",
        Provider::Gcp => "gke-data-spot-pool-7d9f3c1a-x2lk",
    }
}

/// What the provider's metadata service says, in its own words.
fn announcement(provider: Provider, node: &str, action: Timestamp) -> String {
    match provider {
        Provider::Aws => format!("IMDS: spot/instance-action = terminate at {action}"),
        Provider::Azure => format!("Scheduled Events: Preempt for {node}, NotBefore {action}"),
        Provider::Gcp => {
            format!("metadata server: instance/preempted = TRUE (stop expected about {action})")
        }
    }
}

fn args() -> Result<Args> {
    let mut args = Args {
        hold: false,
        lead_seconds: 30,
        provider: Provider::Aws,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--hold" => args.hold = true,
            "--lead-seconds" => {
                args.lead_seconds = it.next().context("--lead-seconds needs a value")?.parse()?
            }
            "--provider" => {
                args.provider =
                    clouds::parse_provider(&it.next().context("--provider needs a value")?)?
            }
            other => anyhow::bail!(
                "unknown argument {other}; use --provider aws|azure|gcp, --lead-seconds N, --hold"
            ),
        }
    }
    anyhow::ensure!(
        args.lead_seconds > SAFETY_MARGIN + 10,
        "--lead-seconds must exceed {}",
        SAFETY_MARGIN + 10
    );
    Ok(args)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = args()?;
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    let cp = tokio::task::spawn_blocking(ControlPlane::shared).await?;
    println!("Control plane: {cp}");
    let sim = Simulator::start("127.0.0.1:0".parse()?, SimState::default()).await?;
    println!("Metadata simulator: {} ({:?})", sim.url(), args.provider);
    let node = node_name(args.provider);
    let lead = SignedDuration::from_secs(args.lead_seconds);

    let kubelet = TestKubelet::new(cp.admin_client().await?, "data-platform").await?;
    kubelet
        .register_node(clouds::spot_node(args.provider, node))
        .await?;
    for i in 1..=3 {
        kubelet
            .run_pod(
                node,
                TestPod::spark_executor(&format!("etl-daily-exec-{i}"), "spark-7f3a")
                    .grace_period(5),
            )
            .await?;
    }
    kubelet
        .pod_disruption_budget(
            "etl-daily-executors",
            &[("spark-app-selector", "spark-7f3a")],
            2,
        )
        .await?;
    let task = TestPod::new("orders-load-5b1c")
        .label("dag_id", "orders")
        .label("task_id", "load")
        .grace_period(3);
    kubelet.run_pod(node, task).await?;
    kubelet
        .run_pod(
            node,
            TestPod::new("node-local-dns")
                .priority_class("system-node-critical")
                .grace_period(2),
        )
        .await?;
    let daemon = kubelet
        .run_daemonset_pod(node, "fluent-bit")
        .await?
        .name_any();
    let finisher = kubelet.keep_finishing_deletions(node);
    println!(
        "\nSpot node {node} (karpenter.sh/capacity-type=spot), namespace {}:",
        kubelet.namespace
    );
    println!(
        "  etl-daily-exec-1..3   Spark executors, grace 5 s, PodDisruptionBudget minAvailable 2 (allows one disruption)"
    );
    println!("  orders-load-5b1c      Airflow KubernetesPodOperator task, grace 3 s");
    println!("  node-local-dns        priorityClassName system-node-critical, grace 2 s");
    println!("  {daemon:<21} DaemonSet pod (left alone: it dies with the node)");

    let (tx, mut timeline) = mpsc::unbounded_channel::<(Instant, String)>();
    let mut flags = vec![
        "--safety-margin".to_owned(),
        format!("{SAFETY_MARGIN}s"),
        "--log-format".to_owned(),
        "json".to_owned(),
    ];
    flags.extend(clouds::agent_flags(args.provider, node, lead));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut agent = spawn_agent_process(node, &sim.url(), &flags, Stdio::piped())?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    forward_agent_log(
        agent.child.stdout.take().context("agent stdout")?,
        tx.clone(),
    );
    agent.ready(&http).await?;
    println!(
        "\nreclaim-agent is watching the {:?} metadata service ({}).",
        args.provider, agent.metrics_url
    );

    tokio::spawn(watch_node(kubelet.nodes(), node, tx.clone()));
    tokio::spawn(watch_pods(kubelet.pods(), tx.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let notice_at = Instant::now();
    let action = (Timestamp::now() + lead).round(jiff::Unit::Second)?;
    let deadline = action - SignedDuration::from_secs(SAFETY_MARGIN);
    clouds::announce_spot(&sim, args.provider, node, lead);
    println!(
        "\nTimeline (AWS gives 120 s, Azure and GCP about 30 s; this demo announces {} s ahead; pods must be gone {SAFETY_MARGIN} s early):",
        args.lead_seconds
    );
    println!(
        "[   +0.0s] {}; drain deadline {deadline}",
        announcement(args.provider, node, action)
    );

    let drained = [
        "etl-daily-exec-1",
        "etl-daily-exec-2",
        "etl-daily-exec-3",
        "orders-load-5b1c",
        "node-local-dns",
    ];
    let mut gone_at: HashMap<String, f64> = HashMap::new();
    let give_up = notice_at + Duration::from_secs(args.lead_seconds as u64 + 5);
    while gone_at.len() < drained.len() && Instant::now() < give_up {
        let Ok(Some((at, line))) =
            tokio::time::timeout(Duration::from_millis(500), timeline.recv()).await
        else {
            continue;
        };
        let t = at.saturating_duration_since(notice_at).as_secs_f64();
        println!("[{t:>+7.1}s] {line}");
        if let Some(name) = line
            .strip_prefix("pod ")
            .and_then(|l| l.strip_suffix(" is gone"))
        {
            gone_at.insert(name.to_owned(), t);
        }
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    while let Ok((at, line)) = timeline.try_recv() {
        println!(
            "[{:>+7.1}s] {line}",
            at.saturating_duration_since(notice_at).as_secs_f64()
        );
    }

    let budget = (args.lead_seconds - SAFETY_MARGIN) as f64;
    println!("\nOutcome (deadline at +{budget:.0}s):");
    println!("  {:<22} {:>10}  before the deadline?", "pod", "gone at");
    for name in drained {
        match gone_at.get(name) {
            Some(t) => println!(
                "  {name:<22} {:>9.1}s  {}",
                t,
                if *t <= budget { "yes" } else { "NO" }
            ),
            None => println!("  {name:<22} {:>10}  NO", "still there"),
        }
    }
    let ds = kubelet.pods().get(&daemon).await?;
    println!(
        "  {daemon:<22} {:>10}  (DaemonSet pod, untouched: {})",
        "running",
        ds.metadata.deletion_timestamp.is_none()
    );
    let metrics = http
        .get(format!("{}/metrics", agent.metrics_url))
        .send()
        .await?
        .text()
        .await?;
    println!("\nFrom the agent's /metrics:");
    for line in metrics.lines().filter(|l| {
        l.starts_with("reclaim_evictions_total") || l.starts_with("reclaim_notices_total")
    }) {
        println!("  {line}");
    }
    if args.hold {
        println!(
            "\nHolding the control plane; in another shell:\n  export KUBECONFIG={}\n  kubectl get events -n default; kubectl get node {node} -o yaml\nCtrl-C stops it.",
            cp.kubeconfig.display()
        );
        tokio::task::spawn_blocking(move || signals.forever().next()).await?;
    }
    finisher.abort();
    drop(agent);
    Ok(())
}

/// Relays the agent's JSON log lines that tell the story (warnings, notices, drain summary).
fn forward_agent_log(
    stdout: std::process::ChildStdout,
    tx: mpsc::UnboundedSender<(Instant, String)>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let fields = &entry["fields"];
            let message = fields["message"].as_str().unwrap_or_default();
            let text = match message {
                "interruption notice: node tainted and cordoned" => format!(
                    "agent: {message} ({})",
                    fields["kind"].as_str().unwrap_or_default()
                ),
                "disruption budget still refused at the deadline; deleted the pod" => {
                    format!(
                        "agent: budget still refuses {} -> deleted with grace {} s so it is gone by the deadline",
                        fields["pod"].as_str().unwrap_or_default(),
                        fields["grace_seconds"]
                    )
                }
                "drain finished" => format!(
                    "agent: drain finished: evicted {}, deleted at deadline {}, already gone {}, failed {}, exempt {}",
                    fields["evicted"],
                    fields["deleted_at_deadline"],
                    fields["already_gone"],
                    fields["failed"],
                    fields["exempt"]
                ),
                _ => continue,
            };
            if tx.send((Instant::now(), text)).is_err() {
                return;
            }
        }
    });
}

async fn watch_node(
    nodes: Api<Node>,
    node: &'static str,
    tx: mpsc::UnboundedSender<(Instant, String)>,
) {
    let config = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let mut stream = watcher(nodes, config).boxed();
    let mut tainted = false;
    while let Some(Ok(event)) = stream.next().await {
        let (watcher::Event::Apply(node) | watcher::Event::InitApply(node)) = event else {
            continue;
        };
        let taint = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .and_then(|ts| ts.iter().find(|t| t.key == "reclaim.dev/interruption"))
            .map(|t| {
                format!(
                    "{}={}:{}",
                    t.key,
                    t.value.clone().unwrap_or_default(),
                    t.effect
                )
            });
        if let Some(taint) = taint.filter(|_| !tainted) {
            tainted = true;
            let cordoned = node
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false);
            let _ = tx.send((
                Instant::now(),
                format!("node tainted {taint}, cordoned: {cordoned}, annotated reclaim.dev/notice"),
            ));
        }
    }
}

async fn watch_pods(pods: Api<Pod>, tx: mpsc::UnboundedSender<(Instant, String)>) {
    let mut stream = watcher(pods, watcher::Config::default()).boxed();
    let (mut annotated, mut terminating) = (Vec::<String>::new(), Vec::<String>::new());
    while let Some(Ok(event)) = stream.next().await {
        let now = Instant::now();
        match event {
            watcher::Event::Apply(pod) => {
                let name = pod.name_any();
                let role = pod
                    .labels()
                    .get("spark-role")
                    .cloned()
                    .unwrap_or_else(|| "pod".into());
                if pod.annotations().contains_key("reclaim.dev/interruption")
                    && !annotated.contains(&name)
                {
                    annotated.push(name.clone());
                    let _ = tx.send((
                        now,
                        format!("{role} {name}: reason written (reclaim.dev/interruption)"),
                    ));
                }
                if let Some(grace) = pod
                    .metadata
                    .deletion_grace_period_seconds
                    .filter(|_| !terminating.contains(&name))
                {
                    terminating.push(name.clone());
                    let _ = tx.send((
                        now,
                        format!(
                            "{role} {name}: terminating, grace {grace} s (preStop hook runs now)"
                        ),
                    ));
                }
            }
            watcher::Event::Delete(pod) => {
                let _ = tx.send((now, format!("pod {} is gone", pod.name_any())));
            }
            _ => {}
        }
    }
}
