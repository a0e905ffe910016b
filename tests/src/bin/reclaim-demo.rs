//! The demo: a spot node on a real local control plane, as Reclaim will see it.
//!
//! Today it sets up the scene the interruption demo plays on (Spark executors behind a
//! PodDisruptionBudget, an Airflow task pod, a DaemonSet pod on a Karpenter spot node),
//! reads it back from the API server, and shows it through kubectl. The agent's part
//! (notice, taint, ordered evictions against the deadline) joins with issue 3.

use std::process::Command;

use anyhow::{Context, Result};
use kube::ResourceExt;
use reclaim_agent::pods::pods_on_node;
use reclaim_testbed::{ControlPlane, TestKubelet, TestNode, TestPod};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let hold = std::env::args().any(|a| a == "--hold");
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    let started = std::time::Instant::now();
    let cp = tokio::task::spawn_blocking(ControlPlane::shared).await?;
    println!(
        "[{:>5.1}s] control plane up: {cp}",
        started.elapsed().as_secs_f64()
    );

    let kubelet = TestKubelet::new(cp.admin_client().await?, "data-platform").await?;
    let node = "ip-10-0-7-21.ec2.internal";
    kubelet
        .register_node(
            TestNode::spot(node).label("node.kubernetes.io/instance-type", "m6i.4xlarge"),
        )
        .await?;
    for i in 1..=3 {
        let executor =
            TestPod::spark_executor(&format!("etl-daily-exec-{i}"), "spark-7f3a").grace_period(90);
        kubelet.run_pod(node, executor).await?;
    }
    kubelet
        .pod_disruption_budget(
            "etl-daily-executors",
            &[("spark-app-selector", "spark-7f3a")],
            3,
        )
        .await?;
    let task = TestPod::new("load-orders-5b1c")
        .label("dag_id", "orders")
        .label("task_id", "load")
        .label("kubernetes_pod_operator", "True")
        .grace_period(30);
    kubelet.run_pod(node, task).await?;
    kubelet.run_daemonset_pod(node, "fluent-bit").await?;
    println!(
        "[{:>5.1}s] spot node {node} registered with its pods:",
        started.elapsed().as_secs_f64()
    );

    for pod in pods_on_node(kubelet.client(), node).await? {
        let role = pod.labels().get("spark-role").cloned().unwrap_or_else(|| {
            match pod.owner_references().first() {
                Some(owner) => format!("{} pod", owner.kind),
                None => "task pod".into(),
            }
        });
        let phase = pod.status.and_then(|s| s.phase).unwrap_or_default();
        println!(
            "          {:<40} {:<14} {phase}",
            pod.metadata.name.unwrap_or_default(),
            role
        );
    }

    println!(
        "\nkubectl sees the same (KUBECONFIG={}):",
        cp.kubeconfig.display()
    );
    let shown = Command::new("kubectl")
        .args(["get", "nodes,pods,pdb", "-A", "-o", "wide"])
        .env("KUBECONFIG", &cp.kubeconfig)
        .status()
        .context("running kubectl")?;
    anyhow::ensure!(shown.success(), "kubectl failed: {shown}");

    if hold {
        println!(
            "\nHolding the control plane; in another shell:\n  export KUBECONFIG={}\nCtrl-C stops it.",
            cp.kubeconfig.display()
        );
        tokio::task::spawn_blocking(move || signals.forever().next()).await?;
    } else {
        println!("\nRun `scripts/demo --hold` to keep the control plane up for kubectl.");
    }
    Ok(())
}
