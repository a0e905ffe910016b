//! The demo: a spot interruption end to end on a real local control plane, on AWS
//! (default), Azure or GCP (`--provider`).
//!
//! A spot node runs three Spark executors (their driver is on an on-demand node) behind a
//! PodDisruptionBudget that allows one disruption, an Airflow task's Job pod, a report
//! Job pod that runs out of memory while it is drained, a node-critical DNS pod and a
//! DaemonSet pod; an ad-hoc query on the on-demand node is SIGKILLed meanwhile. The
//! metadata simulator announces a spot interruption; the real `reclaim-agent` binary
//! taints, cordons and drains the node, and the real `reclaim-classifier` writes its
//! verdicts. What happened is printed as a timeline read from the API server (watches
//! on the node and the pods) and the binaries' logs, then a table of verdicts read back
//! from the pods, the Jobs and the driver. Then a rehearsal: a drill on a second spot
//! node, with its own agent, called off once drained. It ends with the Interruption
//! records (`kubectl get interruptions`, `kubectl describe`).
//!
//! With `--drill`, the main scene is driven by the drill annotation
//! (`kubectl annotate node NODE reclaim.dev/drill=spot-interruption,lead=...`) instead of
//! the metadata service, and the rehearsal is left out.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use reclaim_model::Provider;
use reclaim_model::keys::DRILL_ANNOTATION;
use reclaim_simulator::{SimState, Simulator};
use reclaim_testbed::agent::spawn_agent_process;
use reclaim_testbed::kubelet::Exit;
use reclaim_testbed::process::ReclaimProcess;
use reclaim_testbed::{
    ControlPlane, TestKubelet, TestNode, TestPod, clouds, eventually, eventually_some,
};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tokio::sync::mpsc;

const SAFETY_MARGIN: i64 = 5;

struct Args {
    hold: bool,
    drill: bool,
    lead_seconds: i64,
    provider: Provider,
}

/// An on-demand node's name, as each cloud's Kubernetes service names its nodes.
fn on_demand_node_name(provider: Provider) -> &'static str {
    match provider {
        Provider::Aws => "ip-10-0-3-9.ec2.internal",
        Provider::Azure => "aks-system-12345678-vmss000000",
        Provider::Gcp => "gke-data-default-pool-1a2b3c4d-9zq0",
        Provider::Drill => unreachable!("the demo runs on a cloud's nodes"),
    }
}

/// The label that makes the node a spot node, on each cloud.
fn spot_label(provider: Provider) -> &'static str {
    match provider {
        Provider::Aws => "karpenter.sh/capacity-type=spot",
        Provider::Azure => "kubernetes.azure.com/scalesetpriority=spot",
        Provider::Gcp => "cloud.google.com/gke-spot=true",
        Provider::Drill => unreachable!("the demo runs on a cloud's nodes"),
    }
}

/// A spot node's name, as each cloud's Kubernetes service names its nodes.
/// Where a demo spot node is, as its cloud labels it: the zone (the first or the second of
/// the region) and the instance type.
fn placed(node: TestNode, provider: Provider, second_zone: bool) -> TestNode {
    let (zones, instance_type) = match provider {
        Provider::Aws => (["us-east-1a", "us-east-1b"], "m5.2xlarge"),
        Provider::Azure => (["eastus-1", "eastus-2"], "Standard_D8s_v5"),
        Provider::Gcp => (["us-central1-a", "us-central1-b"], "n2-standard-8"),
        Provider::Drill => unreachable!("the demo runs on a cloud's nodes"),
    };
    node.label(
        "topology.kubernetes.io/zone",
        zones[usize::from(second_zone)],
    )
    .label("node.kubernetes.io/instance-type", instance_type)
}

fn node_name(provider: Provider) -> &'static str {
    match provider {
        Provider::Aws => "ip-10-0-7-21.ec2.internal",
        Provider::Azure => "aks-spot-12345678-vmss000003",
        Provider::Gcp => "gke-data-spot-pool-7d9f3c1a-x2lk",
        Provider::Drill => unreachable!("the demo runs on a cloud's nodes"),
    }
}

/// A second spot node, for the rehearsal.
fn rehearsal_node_name(provider: Provider) -> &'static str {
    match provider {
        Provider::Aws => "ip-10-0-7-22.ec2.internal",
        Provider::Azure => "aks-spot-12345678-vmss000004",
        Provider::Gcp => "gke-data-spot-pool-7d9f3c1a-y7pq",
        Provider::Drill => unreachable!("the demo runs on a cloud's nodes"),
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
        Provider::Drill => unreachable!("a drill is announced by its annotation"),
    }
}

fn args() -> Result<Args> {
    let mut args = Args {
        hold: false,
        drill: false,
        lead_seconds: 30,
        provider: Provider::Aws,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--hold" => args.hold = true,
            "--drill" => args.drill = true,
            "--lead-seconds" => {
                args.lead_seconds = it.next().context("--lead-seconds needs a value")?.parse()?
            }
            "--provider" => {
                args.provider =
                    clouds::parse_provider(&it.next().context("--provider needs a value")?)?
            }
            other => anyhow::bail!(
                "unknown argument {other}; use --provider aws|azure|gcp, --lead-seconds N, --drill, --hold"
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
    cp.install_interruption_crd()?;
    let sim = Simulator::start("127.0.0.1:0".parse()?, SimState::default()).await?;
    println!("Metadata simulator: {} ({:?})", sim.url(), args.provider);
    let node = node_name(args.provider);
    let lead = SignedDuration::from_secs(args.lead_seconds);

    let kubelet = TestKubelet::new(cp.admin_client().await?, "data-platform").await?;
    kubelet
        .register_node(placed(
            clouds::spot_node(args.provider, node),
            args.provider,
            false,
        ))
        .await?;
    let on_demand = on_demand_node_name(args.provider);
    kubelet.register_node(TestNode::new(on_demand)).await?;
    let driver = kubelet
        .run_pod(
            on_demand,
            TestPod::new("etl-daily-driver")
                .label("spark-role", "driver")
                .label("spark-app-selector", "spark-7f3a"),
        )
        .await?
        .controller_owner_ref(&())
        .context("the driver's owner reference")?;
    for i in 1..=3 {
        kubelet
            .run_pod(
                node,
                TestPod::spark_executor(&format!("etl-daily-exec-{i}"), "spark-7f3a")
                    .owned_by(driver.clone())
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
        .owned_by(job(&kubelet, "orders-load").await?)
        .grace_period(3);
    kubelet.run_pod(node, task).await?;
    let report = TestPod::new("report-build-x7")
        .owned_by(job(&kubelet, "report-build").await?)
        .grace_period(10);
    kubelet.run_pod(node, report).await?;
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
    kubelet
        .run_pod(on_demand, TestPod::new("ad-hoc-query-2f"))
        .await?;
    let finisher = kubelet.keep_finishing_deletions(node);
    println!(
        "\nSpot node {node} ({}), namespace {}:",
        spot_label(args.provider),
        kubelet.namespace
    );
    println!(
        "  etl-daily-exec-1..3   Spark executors of etl-daily-driver, grace 5 s, PodDisruptionBudget minAvailable 2 (allows one disruption)"
    );
    println!("  orders-load-5b1c      Airflow task (Job orders-load), grace 3 s");
    println!(
        "  report-build-x7       Job report-build, grace 10 s; will run out of memory while it shuts down"
    );
    println!("  node-local-dns        priorityClassName system-node-critical, grace 2 s");
    println!("  {daemon:<21} DaemonSet pod (left alone: it dies with the node)");
    println!("On-demand node {on_demand}:");
    println!("  etl-daily-driver      the Spark driver (drivers belong on on-demand nodes)");
    println!("  ad-hoc-query-2f       will be SIGKILLed (exit 137) with no notice anywhere");

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
    forward_log(
        "agent",
        agent.child.stdout.take().context("agent stdout")?,
        tx.clone(),
    );
    agent.ready(&http).await?;
    println!(
        "\nreclaim-agent is watching the {:?} metadata service ({}).",
        args.provider, agent.metrics_url
    );

    let mut classifier = ReclaimProcess::classifier(
        &kubelet.namespace,
        &["--log-format", "json"],
        Stdio::piped(),
    )?;
    forward_log(
        "classifier",
        classifier
            .child
            .stdout
            .take()
            .context("classifier stdout")?,
        tx.clone(),
    );
    classifier.ready(&http).await?;
    println!(
        "reclaim-classifier is watching namespace {} ({}).",
        kubelet.namespace, classifier.metrics_url
    );

    tokio::spawn(watch_node(kubelet.nodes(), node, tx.clone()));
    tokio::spawn(watch_pods(kubelet.pods(), tx.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let notice_at = Instant::now();
    let action = (Timestamp::now() + lead).round(jiff::Unit::Second)?;
    let deadline = action - SignedDuration::from_secs(SAFETY_MARGIN);
    let announced = if args.drill {
        let annotation = format!(
            "{DRILL_ANNOTATION}=spot-interruption,lead={}s",
            args.lead_seconds
        );
        cp.kubectl(&["annotate", "node", node, &annotation])?;
        format!("drill started: kubectl annotate node {node} {annotation}")
    } else {
        clouds::announce_spot(&sim, args.provider, node, lead);
        announcement(args.provider, node, action)
    };
    println!(
        "\nTimeline (AWS gives 120 s, Azure and GCP about 30 s; this demo announces {} s ahead; pods must be gone {SAFETY_MARGIN} s early):",
        args.lead_seconds
    );
    println!("[   +0.0s] {announced}; drain deadline about {deadline}");

    tokio::spawn(oom_while_terminating(kubelet.clone(), "report-build-x7"));
    let adhoc = kubelet.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        adhoc.terminate("ad-hoc-query-2f", Exit::KILLED).await
    });

    let drained = [
        "etl-daily-exec-1",
        "etl-daily-exec-2",
        "etl-daily-exec-3",
        "orders-load-5b1c",
        "report-build-x7",
        "node-local-dns",
    ];
    let mut gone_at: HashMap<String, f64> = HashMap::new();
    // What the classifier logged about pods it wrote nothing on, by pod name.
    let mut said: HashMap<String, String> = HashMap::new();
    let give_up = notice_at + Duration::from_secs(args.lead_seconds as u64 + 5);
    while gone_at.len() < drained.len() && Instant::now() < give_up {
        let Ok(Some((at, line))) =
            tokio::time::timeout(Duration::from_millis(500), timeline.recv()).await
        else {
            continue;
        };
        let t = at.saturating_duration_since(notice_at).as_secs_f64();
        println!("[{t:>+7.1}s] {line}");
        note_verdict(&mut said, &line);
        if let Some(name) = line
            .strip_prefix("pod ")
            .and_then(|l| l.strip_suffix(" is gone"))
        {
            gone_at.insert(name.to_owned(), t);
        }
    }
    // The classifier's last words: each job pod's verdict, logged or written.
    let verdict_pods = [
        ("etl-daily-exec-1", Some(("Pod", "etl-daily-driver"))),
        ("etl-daily-exec-2", Some(("Pod", "etl-daily-driver"))),
        ("etl-daily-exec-3", Some(("Pod", "etl-daily-driver"))),
        ("orders-load-5b1c", Some(("Job", "orders-load"))),
        ("report-build-x7", Some(("Job", "report-build"))),
        ("ad-hoc-query-2f", None),
    ];
    let quiet_by = Instant::now() + Duration::from_secs(20);
    loop {
        let settled = said.contains_key("report-build-x7") && said.contains_key("ad-hoc-query-2f");
        let wait = if settled {
            Duration::from_millis(1500)
        } else {
            quiet_by.saturating_duration_since(Instant::now())
        };
        let Ok(Some((at, line))) = tokio::time::timeout(wait, timeline.recv()).await else {
            break;
        };
        println!(
            "[{:>+7.1}s] {line}",
            at.saturating_duration_since(notice_at).as_secs_f64()
        );
        note_verdict(&mut said, &line);
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
    print_verdicts(&kubelet, &verdict_pods, &said).await?;
    if !args.drill {
        rehearse(cp, &kubelet, &http, args.provider).await?;
    }
    print_record(cp, &kubelet, node).await?;
    print_plugin(cp)?;
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
            "\nHolding the control plane; in another shell:\n  export KUBECONFIG={}\n  kubectl get interruptions -o wide; kubectl get events -n default; kubectl get node {node} -o yaml\nCtrl-C stops it.",
            cp.kubeconfig.display()
        );
        tokio::task::spawn_blocking(move || signals.forever().next()).await?;
    }
    finisher.abort();
    drop(agent);
    Ok(())
}

/// Relays the JSON log lines of `component` that tell the story: the agent's notices,
/// budget refusals and drain summary, the classifier's verdicts.
fn forward_log(
    component: &'static str,
    stdout: std::process::ChildStdout,
    tx: mpsc::UnboundedSender<(Instant, String)>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let fields = &entry["fields"];
            let text = |key: &str| fields[key].as_str().unwrap_or_default().to_owned();
            let message = text("message");
            let story = match message.as_str() {
                "interruption notice: node tainted and cordoned" => {
                    format!("{message} ({})", text("kind"))
                }
                m if m == reclaim_agent::drain::DEADLINE_DELETION => format!(
                    "budget still refuses {} -> deleted with grace {} s so it is gone by the deadline",
                    text("pod"),
                    fields["grace_seconds"]
                ),
                "drain finished" => format!(
                    "drain finished: evicted {}, deleted at deadline {}, already gone {}, failed {}, exempt {}",
                    fields["evicted"],
                    fields["deleted_at_deadline"],
                    fields["already_gone"],
                    fields["failed"],
                    fields["exempt"]
                ),
                "spot-caused failure marked retryable" => format!(
                    "{} {} marked spot-interruption, retryable (signals {})",
                    text("kind"),
                    text("object"),
                    text("signals")
                ),
                "not a spot interruption; nothing written"
                | "deleted during the drain, but not because of it; nothing written" => {
                    format!("{}: not spot: {}", text("pod"), text("why"))
                }
                "no verdict" => format!("{}: unknown: {}", text("pod"), text("why")),
                _ => continue,
            };
            if tx
                .send((Instant::now(), format!("{component}: {story}")))
                .is_err()
            {
                return;
            }
        }
    });
}

/// Remembers a classifier log line about a pod (`classifier: ns/pod: not spot: why`).
fn note_verdict(said: &mut HashMap<String, String>, line: &str) {
    if let Some((pod, verdict)) = line
        .strip_prefix("classifier: ")
        .and_then(|l| l.split_once(": "))
    {
        let pod = pod.rsplit('/').next().unwrap_or(pod);
        said.insert(pod.to_owned(), verdict.to_owned());
    }
}

/// Plays a container that runs out of memory once its pod is asked to stop.
async fn oom_while_terminating(kubelet: TestKubelet, name: &'static str) -> Result<()> {
    loop {
        let pod = kubelet.pods().get(name).await?;
        if pod.metadata.deletion_timestamp.is_some() {
            kubelet.terminate(name, Exit::OOM_KILLED).await?;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The verdict of each job pod, read back from the objects the classifier writes on (the
/// pod while it exists, its Job, the Spark driver); what it logged where it wrote nothing.
async fn print_verdicts(
    kubelet: &TestKubelet,
    pods: &[(&str, Option<(&str, &str)>)],
    said: &HashMap<String, String>,
) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(kubelet.client().clone(), &kubelet.namespace);
    println!("\nVerdicts (reclaim-classifier; read back from the API server):");
    println!("  {:<18} {:<38} written on", "pod", "verdict");
    for (pod, owner) in pods {
        let mut targets = vec![(
            "Pod",
            pod.to_string(),
            kubelet.pods().get_opt(pod).await?.map(|p| p.metadata),
        )];
        if let Some((kind, name)) = owner {
            let meta = match *kind {
                "Job" => jobs.get_opt(name).await?.map(|j| j.metadata),
                _ => kubelet.pods().get_opt(name).await?.map(|p| p.metadata),
            };
            targets.push((kind, name.to_string(), meta));
        }
        // (verdict, where it is written), for each object that carries one.
        let marked: Vec<(String, String)> = targets
            .iter()
            .filter_map(|(kind, name, meta)| {
                let annotations = meta.as_ref()?.annotations.as_ref()?;
                let cause = annotations.get("reclaim.dev/cause")?;
                let retryable = annotations.get("reclaim.dev/retryable")?;
                let evidence: reclaim_model::Evidence =
                    serde_json::from_str(annotations.get("reclaim.dev/evidence")?).ok()?;
                let from = evidence.pod.unwrap_or_default();
                let from = from.rsplit('/').next().unwrap_or_default();
                let via = if from == *pod {
                    String::new()
                } else {
                    format!(" (from {from})")
                };
                Some((
                    format!("{cause}, retryable={retryable}"),
                    format!("{kind} {name}{via}"),
                ))
            })
            .collect();
        match (marked.first(), said.get(*pod)) {
            (Some((verdict, _)), _) => {
                let written: Vec<&str> = marked.iter().map(|(_, on)| on.as_str()).collect();
                println!("  {pod:<18} {verdict:<38} {}", written.join(", "));
            }
            (None, Some(logged)) => println!("  {pod:<18} {logged}; nothing written"),
            (None, None) => println!("  {pod:<18} no verdict yet"),
        }
    }
    Ok(())
}

/// The second act: a platform team rehearses a reclaim on another spot node with one
/// annotation, then calls the drill off; its own agent does the rest.
async fn rehearse(
    cp: &ControlPlane,
    kubelet: &TestKubelet,
    http: &reqwest::Client,
    provider: Provider,
) -> Result<()> {
    let node = rehearsal_node_name(provider);
    // Its own metadata service, which announces nothing: the first one still announces
    // the first node's reclaim, which a real notice would make win over the drill.
    let sim = Simulator::start("127.0.0.1:0".parse()?, SimState::default()).await?;
    kubelet
        .register_node(placed(clouds::spot_node(provider, node), provider, true))
        .await?;
    let owner = job(kubelet, "hourly-sync").await?;
    kubelet
        .run_pod(
            node,
            TestPod::new("hourly-sync-9k2")
                .owned_by(owner)
                .grace_period(2),
        )
        .await?;
    let finisher = kubelet.keep_finishing_deletions(node);
    let mut flags = vec!["--safety-margin".to_owned(), format!("{SAFETY_MARGIN}s")];
    flags.extend(clouds::agent_flags(
        provider,
        node,
        SignedDuration::from_secs(30),
    ));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let agent = spawn_agent_process(node, &sim.url(), &flags, Stdio::null())?;
    agent.ready(http).await?;
    let annotation = format!("{DRILL_ANNOTATION}=spot-interruption,lead=20s");
    println!(
        "\nRehearsal: a drill on spot node {node} (an Airflow task of Job hourly-sync), with its own agent:"
    );
    println!("  $ kubectl annotate node {node} {annotation}");
    let started = Instant::now();
    cp.kubectl(&["annotate", "node", node, &annotation])?;
    let record = record_of_node(
        kubelet,
        node,
        "the drill drained and its Job marked",
        |status| status["phase"] == "Drained" && status["retryable"].as_u64() >= Some(1),
    )
    .await?;
    let jobs: Api<Job> = Api::namespaced(kubelet.client().clone(), &kubelet.namespace);
    let evidence: reclaim_model::Evidence = serde_json::from_str(
        jobs.get("hourly-sync")
            .await?
            .annotations()
            .get("reclaim.dev/evidence")
            .context("the Job's verdict")?,
    )?;
    println!(
        "  [{:>5.1}s] {}; Job hourly-sync marked spot-interruption, retryable, its evidence naming provider {}",
        started.elapsed().as_secs_f64(),
        record.data["status"]["reason"].as_str().unwrap_or_default(),
        evidence.provider.map(Provider::as_str).unwrap_or("?"),
    );
    println!("  $ kubectl annotate node {node} {DRILL_ANNOTATION}-");
    cp.kubectl(&["annotate", "node", node, &format!("{DRILL_ANNOTATION}-")])?;
    let nodes = kubelet.nodes();
    eventually(Duration::from_secs(60), "the node given back", || async {
        let spec = nodes.get(node).await?.spec.unwrap_or_default();
        let tainted = spec
            .taints
            .unwrap_or_default()
            .iter()
            .any(|t| t.key == "reclaim.dev/interruption");
        Ok(!tainted && !spec.unschedulable.unwrap_or(false))
    })
    .await?;
    println!(
        "  [{:>5.1}s] node given back: taint lifted, uncordoned",
        started.elapsed().as_secs_f64()
    );
    finisher.abort();
    drop(agent);
    Ok(())
}

/// What `kubectl reclaim` makes of the records: where reclaims happened, and where to run
/// next (minutes of history: ranked with a threshold of a few node-seconds, as a demo).
fn print_plugin(cp: &ControlPlane) -> Result<()> {
    let plugins = std::env::current_exe()?
        .parent()
        .context("the demo's directory")?
        .to_path_buf();
    for args in [
        vec!["reclaim", "history", "--since", "1h"],
        vec![
            "reclaim",
            "advise",
            "--since",
            "1h",
            "--min-node-hours",
            "0.001",
        ],
    ] {
        println!("\n$ kubectl {}", args.join(" "));
        let (code, out, err) = cp.kubectl_with_plugins(&plugins, &args)?;
        anyhow::ensure!(code == 0, "kubectl {} exited {code}: {err}", args.join(" "));
        print!("{}", indent(&out));
    }
    Ok(())
}

/// The Interruption record of `node` once its status satisfies `holds` (within a minute).
async fn record_of_node(
    kubelet: &TestKubelet,
    node: &str,
    what: &str,
    holds: impl Fn(&serde_json::Value) -> bool,
) -> Result<kube::core::DynamicObject> {
    let records = reclaim_service::interruptions::api(kubelet.client());
    eventually_some(Duration::from_secs(60), what, || async {
        Ok(records
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .find(|r| r.data["spec"]["node"] == node && holds(&r.data["status"])))
    })
    .await
}

/// The node's Interruption record, once the agent has written its final state: what
/// `kubectl get interruptions` and `kubectl describe` show.
async fn print_record(cp: &ControlPlane, kubelet: &TestKubelet, node: &str) -> Result<()> {
    let record = record_of_node(kubelet, node, "the record's final state", |status| {
        matches!(status["phase"].as_str(), Some("Drained" | "DeadlineMissed"))
    })
    .await?;
    println!("\n$ kubectl get interruptions");
    print!("{}", indent(&cp.kubectl(&["get", "interruptions"])?));
    let name = record.name_any();
    println!("\n$ kubectl describe interruption {name}   (its pods shown as a table below)");
    let described = cp.kubectl(&["describe", "interruption", &name])?;
    // The pod list, one field per line, reads better as the table below: its lines (those
    // indented deeper than `Pods:`) are left out.
    let indent_of = |l: &str| l.len() - l.trim_start().len();
    let mut pods_at: Option<usize> = None;
    let kept: Vec<&str> = described
        .lines()
        .skip_while(|l| !l.starts_with("Spec:"))
        .filter(|l| {
            if pods_at.is_some_and(|at| indent_of(l) <= at) {
                pods_at = None;
            }
            if l.trim_start() == "Pods:" {
                pods_at = Some(indent_of(l));
            }
            pods_at.is_none() && !l.starts_with("Events:")
        })
        .collect();
    print!("{}", indent(&(kept.join("\n") + "\n")));
    println!(
        "  {:<22} {:<8} {:<20} {:>8} {:>6} {:>8}",
        "pod", "group", "outcome", "refusals", "grace", "slack"
    );
    for pod in record.data["status"]["drain"]["pods"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let text = |key: &str| pod[key].as_str().unwrap_or("-").to_owned();
        let grace = pod["graceSeconds"]
            .as_i64()
            .map_or("-".into(), |g| format!("{g}s"));
        let slack = pod["slackSeconds"]
            .as_f64()
            .map_or("-".into(), |s| format!("{s:.1}s"));
        println!(
            "  {:<22} {:<8} {:<20} {:>8} {:>6} {:>8}",
            text("name"),
            text("group"),
            text("outcome"),
            pod["budgetRefusals"].as_u64().unwrap_or_default(),
            grace,
            slack
        );
    }
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// A Job whose pods the test kubelet runs (parallelism 0: the job controller starts none).
async fn job(kubelet: &TestKubelet, name: &str) -> Result<OwnerReference> {
    let manifest = serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"parallelism": 0, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "main", "image": "registry.invalid/data/job:1"}]}}},
    });
    let jobs: Api<Job> = Api::namespaced(kubelet.client().clone(), &kubelet.namespace);
    jobs.create(&PostParams::default(), &serde_json::from_value(manifest)?)
        .await?
        .controller_owner_ref(&())
        .context("the Job's owner reference")
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
    let (mut annotated, mut terminating, mut exited) = (
        Vec::<String>::new(),
        Vec::<String>::new(),
        Vec::<String>::new(),
    );
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
                let exit = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|cs| cs.iter().find_map(|c| c.state.as_ref()?.terminated.clone()));
                if let Some(exit) = exit.filter(|_| !exited.contains(&name)) {
                    exited.push(name.clone());
                    let _ = tx.send((
                        now,
                        format!(
                            "{role} {name}: container exited {} ({})",
                            exit.exit_code,
                            exit.reason.unwrap_or_default()
                        ),
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
