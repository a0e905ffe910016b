//! Benchmark of the classifier on the local control plane (figures, not pass/fail):
//! 10,000 running pods on 100 nodes, half of which carry a spot notice; then 1,000 of
//! the pods fail in one burst, half spot-caused (SIGKILLed on a noticed node) and half
//! not (OOMKilled or exit 1 on a noticed node, SIGKILLed on a quiet node). It prints the
//! time until every failure has a verdict, the classifier's memory as the number of
//! healthy pods grows and after the burst, and the number of wrong verdicts read back
//! from the pods.
//!
//! Run it through `scripts/bench-classifier`, which builds the release binaries it measures.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt, stream};
use kube::ResourceExt;
use reclaim_testbed::clouds::notice_node;
use reclaim_testbed::kubelet::Exit;
use reclaim_testbed::process::ReclaimProcess;
use reclaim_testbed::{ControlPlane, TestKubelet, TestNode, TestPod, eventually};

const NODES: usize = 100;
/// Requests in flight while staging pods: enough to keep the API server busy.
const CONCURRENCY: usize = 16;

struct Args {
    pods: usize,
    failures: usize,
}

fn args() -> Result<Args> {
    let mut args = Args {
        pods: 10_000,
        failures: 1_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value: usize = it
            .next()
            .with_context(|| format!("{flag} needs a value"))?
            .parse()?;
        match flag.as_str() {
            "--pods" => args.pods = value,
            "--failures" => args.failures = value,
            other => anyhow::bail!("unknown flag {other}; use --pods N, --failures N"),
        }
    }
    anyhow::ensure!(
        args.failures <= args.pods,
        "--failures must not exceed --pods"
    );
    Ok(args)
}

/// How the i-th failing pod ends, and whether that is spot-caused.
fn failure_plan(i: usize, failures: usize) -> (Exit, bool, bool) {
    // (exit, on a noticed node, spot-caused)
    match i * 20 / failures {
        0..10 => (Exit::KILLED, true, true),
        10..14 => (Exit::OOM_KILLED, true, false),
        14..17 => (Exit::FAILED, true, false),
        _ => (Exit::KILLED, false, false),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = args()?;
    let cp = tokio::task::spawn_blocking(ControlPlane::shared).await?;
    let k = TestKubelet::new(cp.admin_client().await?, "bench-classify").await?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    println!(
        "reclaim-classifier benchmark on {cp}; {} cores; {} pods on {NODES} nodes, {} failing",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.pods,
        args.failures
    );

    let nodes: Vec<String> = (0..NODES).map(|i| k.node_name(&format!("n{i}"))).collect();
    for (i, node) in nodes.iter().enumerate() {
        k.register_node(TestNode::spot(node)).await?;
        if i.is_multiple_of(2) {
            notice_node(&k, node).await?;
        }
    }

    let classifier = ReclaimProcess::classifier(&k.namespace, &[], std::process::Stdio::null())?;
    classifier.ready(&http).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("\nclassifier memory (RSS) as healthy pods are added:");
    println!(
        "   {:>6} pods: {:.1} MiB",
        0,
        classifier.memory_mib("VmRSS")?
    );

    // Pod i runs on node i % NODES; failing pods are spread over both kinds of node.
    let pod_name = |i: usize| format!("task-{i:05}");
    let started = Instant::now();
    let step = args.pods.div_ceil(4).max(1);
    for chunk_start in (0..args.pods).step_by(step) {
        let chunk = chunk_start..(chunk_start + step).min(args.pods);
        stream::iter(chunk.clone())
            .map(|i| k.run_pod(&nodes[i % NODES], TestPod::new(&pod_name(i))))
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        println!(
            "   {:>6} pods: {:.1} MiB",
            chunk.end,
            classifier.memory_mib("VmRSS")?
        );
    }
    println!(
        "   (staging the pods took {:.0} s)",
        started.elapsed().as_secs_f64()
    );

    // Failing pod j is pod j * stride, on a noticed node (even) or a quiet one (odd).
    let stride = args.pods / args.failures;
    let failing: Vec<(String, Exit, bool)> = (0..args.failures)
        .map(|j| {
            let (exit, noticed, spot) = failure_plan(j, args.failures);
            let mut i = j * stride;
            if (i % NODES).is_multiple_of(2) != noticed {
                i += 1;
            }
            (pod_name(i.min(args.pods - 1)), exit, spot)
        })
        .collect();
    let spot_expected = failing.iter().filter(|f| f.2).count();

    let burst = Instant::now();
    stream::iter(failing.iter())
        .map(|(name, exit, _)| k.terminate(name, *exit))
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    let written = burst.elapsed();
    let verdicts = |sample: &'static str| {
        let (classifier, http) = (&classifier, &http);
        async move {
            classifier
                .metric(
                    http,
                    &format!("reclaim_classifier_verdicts_total{{verdict=\"{sample}\"}}"),
                )
                .await
        }
    };
    eventually(
        Duration::from_secs(600),
        "every failure classified",
        || async {
            let total = verdicts("spot_caused").await?
                + verdicts("not_spot").await?
                + verdicts("unknown").await?;
            Ok(total as usize >= args.failures)
        },
    )
    .await?;
    let classified = burst.elapsed();

    let mut wrong = Vec::new();
    let mut marked = 0;
    for pod in k.pods().list(&Default::default()).await?.items {
        let is_marked = pod.annotations().contains_key("reclaim.dev/cause");
        marked += usize::from(is_marked);
        let expected = failing
            .iter()
            .find(|f| f.0 == pod.name_any())
            .is_some_and(|f| f.2);
        if is_marked != expected {
            wrong.push(pod.name_any());
        }
    }
    println!(
        "\n{} failures in one burst ({spot_expected} spot-caused):",
        args.failures
    );
    println!(
        "   failures written in {:.1} s; all classified {:.1} s after the first ({:.0} verdicts/s)",
        written.as_secs_f64(),
        classified.as_secs_f64(),
        args.failures as f64 / classified.as_secs_f64()
    );
    println!(
        "   verdicts: {} spot-caused, {} not spot, {} unknown; {marked} pods marked",
        verdicts("spot_caused").await?,
        verdicts("not_spot").await?,
        verdicts("unknown").await?
    );
    println!("   wrong verdicts read back from the pods: {}", wrong.len());
    for name in wrong.iter().take(10) {
        println!("      {name}");
    }
    println!(
        "   classifier RSS after the burst {:.1} MiB (RssAnon {:.1} MiB), peak {:.1} MiB",
        classifier.memory_mib("VmRSS")?,
        classifier.memory_mib("RssAnon")?,
        classifier.memory_mib("VmHWM")?
    );
    Ok(())
}
