//! The Kubernetes behaviour Reclaim relies on, pinned against a real API server:
//! taint updates that never lose another writer's taint, pods listed by node,
//! policy/v1 evictions accepted or refused by a PodDisruptionBudget (and its
//! unhealthy-pod policy), the DisruptionTarget condition the server writes; plus the
//! test bed itself (test kubelet, clean teardown).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Result;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use reclaim_agent::eviction::{self, Answer, PodRef};
use reclaim_agent::node::{ensure_taint, remove_taint, taints_patch, with_taint};
use reclaim_agent::pods::pods_on_node;
use reclaim_model::NoticeKind;
use reclaim_testbed::kubelet::Exit;
use reclaim_testbed::{ControlPlane, TestKubelet, TestNode, TestPod, eventually};
use serde_json::json;

async fn kubelet(test: &str) -> Result<TestKubelet> {
    let client = ControlPlane::shared().admin_client().await?;
    TestKubelet::new(client, test).await
}

fn taint_keys(node: &Node) -> Vec<String> {
    let mut keys: Vec<String> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|ts| ts.iter().map(|t| t.key.clone()).collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

fn other_taint(key: &str) -> Taint {
    Taint {
        key: key.into(),
        value: Some("x".into()),
        effect: "NoExecute".into(),
        time_added: None,
    }
}

#[tokio::test]
async fn a_stale_taint_write_is_refused_and_the_retry_keeps_the_other_controllers_taint()
-> Result<()> {
    let k = kubelet("taint-conflict").await?;
    let name = k.node_name("spot-a");
    k.register_node(TestNode::spot(&name)).await?;
    let nodes = k.nodes();

    // We read the node; another controller then adds its taint before we write.
    let stale = nodes.get(&name).await?;
    let theirs = json!({"spec": {"taints": [other_taint("example.com/maintenance")]}});
    nodes
        .patch(&name, &PatchParams::default(), &Patch::Merge(&theirs))
        .await?;

    // A write computed from the stale read is refused by the server with 409...
    let ours = NoticeKind::SpotInterruption.taint();
    let stale_list = with_taint(&[], &ours).unwrap();
    let refused = nodes
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&taints_patch(&stale, &stale_list)),
        )
        .await;
    match refused {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 409, "{status:?}"),
        other => panic!("expected 409 Conflict for a stale write, got {other:?}"),
    }

    // ...and ensure_taint re-reads and keeps both.
    let applied = ensure_taint(&nodes, &name, &ours).await?;
    assert!(applied.changed);
    let node = nodes.get(&name).await?;
    assert_eq!(
        taint_keys(&node),
        ["example.com/maintenance", "reclaim.dev/interruption"]
    );
    let taints = node.spec.unwrap().taints.unwrap();
    let reclaim = taints
        .iter()
        .find(|t| t.key == "reclaim.dev/interruption")
        .unwrap();
    assert_eq!(reclaim.value.as_deref(), Some("spot-interruption"));
    assert_eq!(reclaim.effect, "NoSchedule");

    // Adding it again writes nothing; removing it leaves the other taint alone.
    assert!(!ensure_taint(&nodes, &name, &ours).await?.changed);
    assert!(
        remove_taint(&nodes, &name, "reclaim.dev/interruption")
            .await?
            .changed
    );
    assert_eq!(
        taint_keys(&nodes.get(&name).await?),
        ["example.com/maintenance"]
    );
    Ok(())
}

#[tokio::test]
async fn concurrent_taint_writers_lose_nothing() -> Result<()> {
    let k = kubelet("taint-race").await?;
    let name = k.node_name("spot-b");
    k.register_node(TestNode::spot(&name)).await?;
    let before = taint_keys(&k.nodes().get(&name).await?);
    let writers = (0..8).map(|i| {
        let nodes: Api<Node> = k.nodes();
        let name = name.clone();
        async move {
            ensure_taint(
                &nodes,
                &name,
                &other_taint(&format!("writer-{i}.example.com/t")),
            )
            .await
        }
    });
    let results = futures::future::join_all(writers).await;
    let mut attempts = 0;
    for result in results {
        let applied = result?;
        assert!(applied.changed);
        attempts += applied.attempts;
    }
    let keys = taint_keys(&k.nodes().get(&name).await?);
    let mut expected: Vec<String> = (0..8)
        .map(|i| format!("writer-{i}.example.com/t"))
        .collect();
    expected.extend(before);
    expected.sort();
    assert_eq!(
        keys, expected,
        "taints after 8 concurrent writers ({attempts} writes attempted)"
    );
    Ok(())
}

#[tokio::test]
async fn pods_on_node_returns_exactly_that_nodes_pods_in_every_namespace() -> Result<()> {
    let k = kubelet("by-node").await?;
    let other_ns = TestKubelet::new(k.client().clone(), "by-node-other").await?;
    let (a, b) = (k.node_name("spot-c"), k.node_name("spot-d"));
    k.register_node(TestNode::spot(&a)).await?;
    k.register_node(TestNode::spot(&b)).await?;
    k.run_pod(&a, TestPod::new("on-a-1")).await?;
    other_ns.run_pod(&a, TestPod::new("on-a-2")).await?;
    k.run_pod(&b, TestPod::new("on-b")).await?;

    let mut found: Vec<(String, String)> = pods_on_node(k.client(), &a)
        .await?
        .into_iter()
        .map(|p| (p.namespace().unwrap(), p.name_any()))
        .collect();
    found.sort();
    let mut expected = vec![
        (k.namespace.clone(), "on-a-1".to_owned()),
        (other_ns.namespace.clone(), "on-a-2".to_owned()),
    ];
    expected.sort();
    assert_eq!(found, expected);
    Ok(())
}

#[tokio::test]
async fn eviction_is_accepted_for_a_plain_pod_and_refused_while_a_budget_allows_no_disruption()
-> Result<()> {
    let k = kubelet("eviction").await?;
    let node = k.node_name("spot-e");
    k.register_node(TestNode::spot(&node)).await?;
    k.run_pod(&node, TestPod::new("plain").grace_period(1))
        .await?;
    k.run_pod(&node, TestPod::spark_executor("exec-1", "spark-app-1"))
        .await?;
    let budget = k
        .pod_disruption_budget("executors", &[("spark-role", "executor")], 1)
        .await?;
    assert_eq!(
        budget.status.as_ref().map(|s| s.disruptions_allowed),
        Some(0),
        "{:?}",
        budget.status
    );
    let finisher = k.keep_finishing_deletions(&node);

    let pods = k.pods();
    let plain = Target::of(&k, "plain").await?;
    let exec = Target::of(&k, "exec-1").await?;
    assert_eq!(
        eviction::evict(k.client(), plain.pod(), None).await?,
        Answer::Accepted
    );
    // The refusal comes back at once, not after the client's own retries (kube's default
    // client would retry the 429 for minutes); 20 s is far above one round trip.
    let asked = Instant::now();
    assert_eq!(
        eviction::evict(k.client(), exec.pod(), None).await?,
        Answer::BudgetRefused
    );
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "a blocked eviction took {:?}",
        asked.elapsed()
    );
    // The evicted pod goes away once its 1 s grace period is over; the protected one stays Running.
    eventually(
        Duration::from_secs(30),
        "the evicted pod to be gone",
        || {
            let pods = pods.clone();
            async move { Ok(pods.get_opt("plain").await?.is_none()) }
        },
    )
    .await?;
    let protected = pods.get("exec-1").await?;
    assert!(protected.metadata.deletion_timestamp.is_none());
    assert_eq!(protected.status.unwrap().phase.as_deref(), Some("Running"));
    assert_eq!(
        eviction::evict(k.client(), plain.pod(), None).await?,
        Answer::Gone
    );
    finisher.abort();
    Ok(())
}

/// A pod as the drain judges it: by name and UID.
struct Target {
    namespace: String,
    name: String,
    uid: String,
}

impl Target {
    async fn of(k: &TestKubelet, name: &str) -> Result<Target> {
        let pod = k.pods().get(name).await?;
        Ok(Target {
            namespace: k.namespace.clone(),
            name: name.to_owned(),
            uid: pod.metadata.uid.unwrap_or_default(),
        })
    }

    fn pod(&self) -> PodRef<'_> {
        PodRef {
            namespace: &self.namespace,
            name: &self.name,
            uid: &self.uid,
        }
    }
}

#[tokio::test]
async fn a_pod_recreated_under_the_same_name_is_never_touched_by_a_request_for_the_old_one()
-> Result<()> {
    let k = kubelet("eviction-uid").await?;
    let node = k.node_name("spot-u");
    k.register_node(TestNode::spot(&node)).await?;
    k.run_pod(&node, TestPod::new("db-0")).await?;
    let old = Target::of(&k, "db-0").await?;
    // Someone else deletes db-0 and its StatefulSet recreates it elsewhere.
    k.finish_deletion("db-0").await?;
    k.run_pod(&k.node_name("other"), TestPod::new("db-0"))
        .await?;
    assert_eq!(
        eviction::evict(k.client(), old.pod(), None).await?,
        Answer::Gone
    );
    assert_eq!(
        eviction::delete(k.client(), old.pod(), 0).await?,
        Answer::Gone
    );
    let replacement = k.pods().get("db-0").await?;
    assert_ne!(replacement.metadata.uid.as_deref(), Some(old.uid.as_str()));
    assert!(
        replacement.metadata.deletion_timestamp.is_none(),
        "the replacement is untouched"
    );
    Ok(())
}

#[tokio::test]
async fn a_pod_under_two_budgets_is_refused_with_a_500_told_apart_from_a_budget_refusal()
-> Result<()> {
    let k = kubelet("eviction-two-budgets").await?;
    let node = k.node_name("spot-b");
    k.register_node(TestNode::spot(&node)).await?;
    k.run_pod(&node, TestPod::new("shared").label("app", "shared"))
        .await?;
    k.pod_disruption_budget("one", &[("app", "shared")], 0)
        .await?;
    k.pod_disruption_budget("two", &[("app", "shared")], 0)
        .await?;
    let shared = Target::of(&k, "shared").await?;
    assert_eq!(
        eviction::evict(k.client(), shared.pod(), None).await?,
        Answer::MultipleBudgets
    );
    assert_eq!(
        eviction::delete(k.client(), shared.pod(), 1).await?,
        Answer::Accepted
    );
    Ok(())
}

#[tokio::test]
async fn an_eviction_can_shorten_the_grace_period() -> Result<()> {
    let k = kubelet("eviction-grace").await?;
    let node = k.node_name("spot-f");
    k.register_node(TestNode::spot(&node)).await?;
    k.run_pod(&node, TestPod::new("slow-to-stop").grace_period(600))
        .await?;
    let slow = Target::of(&k, "slow-to-stop").await?;
    let outcome = eviction::evict(k.client(), slow.pod(), Some(7)).await?;
    assert_eq!(outcome, Answer::Accepted);
    let pod: Pod = k.pods().get("slow-to-stop").await?;
    assert_eq!(pod.metadata.deletion_grace_period_seconds, Some(7));
    Ok(())
}

#[tokio::test]
async fn a_budget_that_always_allows_unhealthy_pods_lets_an_unready_pod_go_while_a_healthy_one_is_refused()
-> Result<()> {
    let k = kubelet("eviction-unhealthy").await?;
    let node = k.node_name("spot-n");
    k.register_node(TestNode::spot(&node)).await?;
    // Two executors behind each budget, one of them not ready: the budget (minAvailable 2)
    // is not healthy, so it allows no disruption.
    for (app, policy) in [("always", "AlwaysAllow"), ("if-healthy", "IfHealthyBudget")] {
        for role in ["ready", "unready"] {
            k.run_pod(
                &node,
                TestPod::spark_executor(&format!("{app}-{role}"), app).grace_period(1),
            )
            .await?;
        }
        k.set_ready(&format!("{app}-unready"), false).await?;
        k.budget(app, &[("spark-app-selector", app)], 2, Some(policy))
            .await?;
    }
    eventually(
        Duration::from_secs(30),
        "both budgets to count one healthy pod",
        || async {
            let budgets: Api<PodDisruptionBudget> =
                Api::namespaced(k.client().clone(), &k.namespace);
            let mut healthy = Vec::new();
            for name in ["always", "if-healthy"] {
                healthy.push(budgets.get(name).await?.status.map(|s| s.current_healthy));
            }
            Ok(healthy == [Some(1), Some(1)])
        },
    )
    .await?;

    let evict = |name: &'static str| {
        let k = k.clone();
        async move {
            let target = Target::of(&k, name).await?;
            anyhow::Ok(eviction::evict(k.client(), target.pod(), None).await?)
        }
    };
    // AlwaysAllow: the unready pod goes at once, the healthy one is refused.
    assert_eq!(evict("always-unready").await?, Answer::Accepted);
    assert_eq!(evict("always-ready").await?, Answer::BudgetRefused);
    // The default (IfHealthyBudget): an unhealthy budget refuses the unready pod too.
    assert_eq!(evict("if-healthy-unready").await?, Answer::BudgetRefused);
    assert_eq!(evict("if-healthy-ready").await?, Answer::BudgetRefused);
    let gone = k.pods().get("always-unready").await?;
    assert!(gone.metadata.deletion_timestamp.is_some());
    for kept in ["always-ready", "if-healthy-unready", "if-healthy-ready"] {
        assert!(
            k.pods()
                .get(kept)
                .await?
                .metadata
                .deletion_timestamp
                .is_none(),
            "{kept}"
        );
    }
    Ok(())
}

/// The true `DisruptionTarget` condition of `pod`, with its reason.
fn disruption_target(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "DisruptionTarget" && c.status == "True")
        .map(|c| c.reason.clone().unwrap_or_default())
}

#[tokio::test]
async fn the_server_marks_an_evicted_pod_and_a_pod_of_a_vanished_node_as_disruption_targets()
-> Result<()> {
    let k = kubelet("disruption-target").await?;
    let node = k.node_name("spot-d");
    k.register_node(TestNode::spot(&node)).await?;
    k.run_pod(&node, TestPod::new("evicted").grace_period(30))
        .await?;
    // A finalizer holds the pod that the pod garbage collector deletes, so that the
    // condition it wrote can be read back.
    let held = TestPod::new("orphaned").finalizer("reclaim.dev/test-hold");
    k.run_pod(&node, held).await?;

    let evicted = Target::of(&k, "evicted").await?;
    assert_eq!(
        eviction::evict(k.client(), evicted.pod(), None).await?,
        Answer::Accepted
    );
    let pod = k.pods().get("evicted").await?;
    assert!(pod.metadata.deletion_timestamp.is_some());
    assert_eq!(
        disruption_target(&pod).as_deref(),
        Some("EvictionByEvictionAPI")
    );
    // The kubelet's report of the exit keeps the server's condition.
    let pod = k
        .terminate(
            "evicted",
            Exit {
                code: 143,
                reason: "Error",
            },
        )
        .await?;
    assert_eq!(
        disruption_target(&pod).as_deref(),
        Some("EvictionByEvictionAPI")
    );

    // The node goes away with its pods (the instance was reclaimed): the pod garbage
    // collector (after its 40 s quarantine) marks the orphan Failed and deletes it.
    k.nodes().delete(&node, &Default::default()).await?;
    let pods = k.pods();
    let orphan = reclaim_testbed::eventually_some(
        Duration::from_secs(150),
        "the pod garbage collector to delete the orphaned pod",
        || async {
            let pod = pods.get("orphaned").await?;
            Ok(pod.metadata.deletion_timestamp.is_some().then_some(pod))
        },
    )
    .await?;
    assert_eq!(
        disruption_target(&orphan).as_deref(),
        Some("DeletionByPodGC")
    );
    assert_eq!(
        orphan.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Failed")
    );
    pods.patch(
        "orphaned",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn the_test_kubelet_reports_exits_owners_and_mirror_pods_as_a_kubelet_would() -> Result<()> {
    let k = kubelet("kubelet").await?;
    let name = k.node_name("spot-h");
    let node = k
        .register_node(TestNode::spot(&name).provider_id("aws:///eu-west-1b/i-0fedcba9876543210"))
        .await?;
    let read = k.nodes().get(&name).await?;
    assert_eq!(read.labels()["karpenter.sh/capacity-type"], "spot");
    assert_eq!(
        read.spec.unwrap().provider_id.as_deref(),
        Some("aws:///eu-west-1b/i-0fedcba9876543210")
    );
    let ready = read.status.unwrap().conditions.unwrap();
    assert!(
        ready
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );

    for (pod, exit) in [
        ("killed", Exit::KILLED),
        ("oom", Exit::OOM_KILLED),
        ("done", Exit::COMPLETED),
        ("bug", Exit::FAILED),
    ] {
        k.run_pod(&name, TestPod::new(pod)).await?;
        k.terminate(pod, exit).await?;
        let status = k.pods().get(pod).await?.status.unwrap();
        let terminated = status.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .terminated
            .unwrap();
        assert_eq!(
            (terminated.exit_code, terminated.reason.as_deref()),
            (exit.code, Some(exit.reason))
        );
        let phase = if exit.code == 0 {
            "Succeeded"
        } else {
            "Failed"
        };
        assert_eq!(status.phase.as_deref(), Some(phase));
    }

    let daemon = k.run_daemonset_pod(&name, "log-shipper").await?;
    let daemon = k.pods().get(&daemon.name_any()).await?;
    let owner = &daemon.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("DaemonSet", Some(true))
    );

    k.run_mirror_pod(&node, "static-web").await?;
    let mirror = k.pods().get("static-web").await?;
    assert!(
        mirror
            .annotations()
            .contains_key("kubernetes.io/config.mirror")
    );
    assert_eq!(mirror.owner_references()[0].kind, "Node");

    // A pod whose graceful deletion is due is removed by the kubelet; one not yet due stays.
    k.run_pod(&name, TestPod::new("quick").grace_period(1))
        .await?;
    k.run_pod(&name, TestPod::new("patient").grace_period(300))
        .await?;
    k.pods().delete("quick", &Default::default()).await?;
    k.pods().delete("patient", &Default::default()).await?;
    // Deletion timestamps have second precision: "quick" is due within 2 s.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let finished = k.finish_due_deletions(&name).await?;
    assert_eq!(finished, ["quick"]);
    assert!(k.pods().get_opt("quick").await?.is_none());
    assert!(
        k.pods()
            .get("patient")
            .await?
            .metadata
            .deletion_timestamp
            .is_some()
    );
    Ok(())
}

/// Starts a separate control plane in a child process and ends that process the two
/// ways a test run ends badly: SIGTERM (Ctrl-C-like) and SIGKILL.
#[test]
fn ending_the_process_leaves_no_control_plane_behind() -> Result<()> {
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_local-control-plane"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut pids = Vec::new();
        let mut dir = String::new();
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line?;
            if let Some(list) = line.strip_prefix("pids: ") {
                pids = list
                    .split(' ')
                    .map(|p| p.parse::<i32>())
                    .collect::<Result<_, _>>()?;
            } else if let Some(d) = line.strip_prefix("dir: ") {
                dir = d.to_owned();
            } else if line.starts_with("ready") {
                break;
            }
        }
        assert_eq!(
            pids.len(),
            3,
            "etcd, kube-apiserver and kube-controller-manager should be running"
        );
        assert!(pids.iter().all(|&pid| alive(pid)));
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        child.wait()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while pids.iter().any(|&pid| alive(pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let survivors: Vec<_> = pids.iter().filter(|&&pid| alive(pid)).collect();
        assert!(
            survivors.is_empty(),
            "still running after signal {signal}: {survivors:?}"
        );
        if signal == libc::SIGKILL {
            // No exit handler ran; the next start sweeps what the dead run left.
            reclaim_testbed::control_plane::sweep_stale_dirs();
        }
        assert!(
            !std::path::Path::new(&dir).exists(),
            "{dir} left behind after signal {signal}"
        );
    }
    Ok(())
}

/// Whether `pid` is a live process (zombies awaiting their reaper count as ended).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// This control plane never gets the Interruption CRD (no test here installs it): the
/// plugin says Reclaim is not installed, with its own exit code.
#[test]
fn kubectl_reclaim_says_when_reclaim_is_not_installed() -> Result<()> {
    let plugins = reclaim_testbed::process::workspace_binaries("kubectl-reclaim")?;
    let (code, out, err) =
        ControlPlane::shared().kubectl_with_plugins(&plugins, &["reclaim", "history"])?;
    assert_eq!(code, 3, "{out}{err}");
    assert!(err.contains("Reclaim is not installed"), "{err}");
    Ok(())
}
