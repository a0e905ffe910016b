//! Real Spark on the local control plane. The distribution is Spark's own jars
//! (`scripts/spark`); the driver runs as a local JVM in client mode, against the real API
//! server, and creates its executor pods there as it would in a cluster; this module's
//! [`ExecutorKubelet`] plays the kubelet for those pods: it binds each to one of the
//! test's spot nodes (there is no scheduler), starts the executor the way Spark's image
//! entrypoint does (a `KubernetesExecutorBackend` JVM with the pod's environment and
//! arguments), reports the pod Running with its node's address, runs the pod's preStop
//! hook when the pod is deleted or evicted (what Spark's `decom.sh` does: SIGPWR to the
//! executor, which starts decommissioning), kills the JVM with SIGKILL when the grace
//! period is over, and reports the container's real exit code.
//!
//! Its limits, honestly: executors are processes of the test machine, not containers
//! (no image, no cgroup limits, no volumes, no probes); each node is a loopback address
//! (127.0.1.N), so "another host" is another address on one machine; the preStop hook is
//! recognised, not executed (its command is Spark's `decom.sh`, which only sends SIGPWR
//! and waits for the JVM to exit); every other pod keeps the plain test kubelet's
//! behaviour.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{EnvVar, Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::kubelet::now;

/// Spark's jars, provisioned by `scripts/spark`, and the tests' job compiled against them.
#[derive(Debug, Clone)]
pub struct SparkDist {
    pub jars: PathBuf,
    /// The compiled `tests/spark` classes.
    pub job_classes: PathBuf,
}

impl SparkDist {
    /// As [`SparkDist::provision`], off the async runtime's threads.
    pub async fn provisioned(work: &Path) -> Result<SparkDist> {
        let work = work.to_owned();
        tokio::task::spawn_blocking(move || SparkDist::provision(&work)).await?
    }

    /// Provisions Spark (once, cached) and compiles the tests' job into `work`.
    pub fn provision(work: &Path) -> Result<SparkDist> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/spark");
        let out = std::process::Command::new(script)
            .stderr(Stdio::inherit())
            .output()
            .context("running scripts/spark")?;
        if !out.status.success() {
            bail!("scripts/spark failed");
        }
        let jars = PathBuf::from(String::from_utf8(out.stdout)?.trim());
        let job_classes = work.join("spark-job-classes");
        std::fs::create_dir_all(&job_classes)?;
        let source = concat!(env!("CARGO_MANIFEST_DIR"), "/spark/ReclaimShuffleJob.java");
        let status = std::process::Command::new("javac")
            .arg("-cp")
            .arg(format!("{}/*", jars.display()))
            .arg("-d")
            .arg(&job_classes)
            .arg(source)
            .status()
            .context("running javac")?;
        if !status.success() {
            bail!("javac could not compile {source}");
        }
        Ok(SparkDist { jars, job_classes })
    }

    /// The JVM classpath of Spark's jars (and the job's classes).
    pub fn classpath(&self) -> String {
        format!("{}/*:{}", self.jars.display(), self.job_classes.display())
    }

    /// Starts the tests' job (`tests/spark/ReclaimShuffleJob.java`: `records` in 8
    /// partitions, each middle-stage task taking `pause`) with its driver a local JVM in
    /// client mode against `cp`'s API server (as its administrator), its executors four
    /// pods of `namespace` owned by the pod `driver_pod`, decommissioning on unless
    /// `extra` says otherwise; output in `log`.
    pub fn start_driver(
        &self,
        cp: &crate::ControlPlane,
        namespace: &str,
        driver_pod: &str,
        job: (u64, std::time::Duration),
        log: &Path,
        extra: &[(&str, &str)],
    ) -> Result<tokio::process::Child> {
        let mut conf: Vec<(String, String)> = [
            ("spark.master", format!("k8s://{}", cp.server)),
            ("spark.app.name", "reclaim-e2e".into()),
            ("spark.kubernetes.namespace", namespace.into()),
            (
                "spark.kubernetes.container.image",
                "registry.invalid/spark:4.3.0".into(),
            ),
            ("spark.kubernetes.driver.pod.name", driver_pod.into()),
            ("spark.driver.host", "127.0.0.1".into()),
            ("spark.driver.bindAddress", "127.0.0.1".into()),
            ("spark.executor.instances", "4".into()),
            ("spark.executor.cores", "1".into()),
            ("spark.executor.memory", "512m".into()),
            ("spark.ui.enabled", "false".into()),
            // What docs/operations.md recommends.
            ("spark.decommission.enabled", "true".into()),
            ("spark.storage.decommission.enabled", "true".into()),
            (
                "spark.storage.decommission.shuffleBlocks.enabled",
                "true".into(),
            ),
            (
                "spark.storage.decommission.rddBlocks.enabled",
                "true".into(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (key, value) in extra {
            conf.retain(|(k, _)| k != key);
            conf.push(((*key).to_owned(), (*value).to_owned()));
        }
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let out = std::fs::File::create(log)?;
        let mut command = tokio::process::Command::new("java");
        command
            .args(conf.iter().map(|(k, v)| format!("-D{k}={v}")))
            .arg("-Xmx768m")
            .arg("-cp")
            .arg(self.classpath())
            .arg("ReclaimShuffleJob")
            .args([
                job.0.to_string(),
                "8".to_owned(),
                job.1.as_millis().to_string(),
            ])
            .env("KUBECONFIG", &cp.kubeconfig)
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true);
        Ok(command.spawn()?)
    }
}

/// What a run of the job says about itself, from Spark's own logs.
#[derive(Debug, Clone, PartialEq)]
pub struct JobFigures {
    /// `Job 0 finished ... took`, in seconds (`None`: it did not finish).
    pub seconds: Option<f64>,
    /// Every record counted exactly once (`RESULT ok`).
    pub correct: bool,
    /// Tasks that failed (`Lost task`), fetch failures included.
    pub failed_tasks: usize,
    /// Stages submitted again after a failure (`Resubmitting`).
    pub resubmitted: usize,
    /// Executors the driver lost (`Lost executor`), and those it decommissioned.
    pub lost_executors: usize,
    pub decommissioned_executors: usize,
    /// Shuffle blocks the decommissioning executors moved to others.
    pub migrated_blocks: usize,
}

impl JobFigures {
    /// Reads the driver's log and the executors' logs in `executor_logs`.
    pub fn read(driver_log: &Path, executor_logs: &Path) -> Result<JobFigures> {
        let log = std::fs::read_to_string(driver_log)?;
        let seconds = log.lines().find_map(|l| {
            let took = l.split("Job 0 finished").nth(1)?.split("took ").nth(1)?;
            took.trim()
                .trim_end_matches(" ms")
                .parse::<f64>()
                .ok()
                .map(|ms| ms / 1000.0)
        });
        let mut migrated_blocks = 0;
        for entry in std::fs::read_dir(executor_logs)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "log") {
                migrated_blocks += std::fs::read_to_string(&path)?
                    .matches("Migrated migrate_shuffle")
                    .count();
            }
        }
        Ok(JobFigures {
            seconds,
            correct: log.contains("RESULT ok"),
            failed_tasks: log.matches("Lost task").count(),
            resubmitted: log.matches("Resubmitting").count(),
            lost_executors: log.matches("Lost executor").count(),
            decommissioned_executors: log
                .lines()
                .filter_map(|l| l.split("Decommission executors:").nth(1))
                .map(|ids| ids.split(',').count())
                .sum(),
            migrated_blocks,
        })
    }
}

/// A spot node of the test, as the executor kubelet places executors on it.
#[derive(Debug, Clone)]
pub struct ExecutorNode {
    pub name: String,
    /// The loopback address standing for the node's IP (127.0.1.N).
    pub address: String,
}

/// Plays the kubelet for the Spark executor pods of one namespace; stops (killing its
/// executors) when dropped.
pub struct ExecutorKubelet {
    task: JoinHandle<()>,
}

impl Drop for ExecutorKubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One test's Spark cluster: an on-demand node running the driver's pod (`driver`), two
/// spot nodes (`spot-a` at 127.0.1.1, `spot-b` at 127.0.1.2) whose executors the
/// [`ExecutorKubelet`] runs, with their logs in `logs`.
pub struct SparkNodes {
    pub on_demand: String,
    pub spot: Vec<ExecutorNode>,
    pub executors: ExecutorKubelet,
}

impl SparkNodes {
    pub async fn start(
        k: &crate::TestKubelet,
        dist: &SparkDist,
        logs: PathBuf,
    ) -> Result<SparkNodes> {
        let on_demand = k.node_name("on-demand");
        k.register_node(crate::TestNode::new(&on_demand)).await?;
        let spot: Vec<ExecutorNode> = ["spot-a", "spot-b"]
            .iter()
            .enumerate()
            .map(|(i, n)| ExecutorNode {
                name: k.node_name(n),
                address: format!("127.0.1.{}", i + 1),
            })
            .collect();
        for node in &spot {
            k.register_node(crate::TestNode::spot(&node.name)).await?;
        }
        k.run_pod(
            &on_demand,
            crate::TestPod::new("driver").label("spark-role", "driver"),
        )
        .await?;
        std::fs::create_dir_all(&logs)?;
        let executors = ExecutorKubelet::start(
            k.client().clone(),
            &k.namespace,
            spot.clone(),
            dist.clone(),
            logs,
        );
        Ok(SparkNodes {
            on_demand,
            spot,
            executors,
        })
    }
}

/// One executor JVM.
struct Running {
    pid: u32,
    /// SIGPWR sent (the preStop hook ran).
    decommissioning: bool,
    /// When the grace period ends: SIGKILL then.
    kill_at: Option<Timestamp>,
}

/// An executor JVM that ended: pod name, uid, exit code as a container reports it.
struct Exited {
    name: String,
    uid: String,
    code: i32,
}

impl ExecutorKubelet {
    /// Runs the executors Spark creates in `namespace`, on `nodes` in turn, with their
    /// output in `logs/<pod>.log`.
    pub fn start(
        client: Client,
        namespace: &str,
        nodes: Vec<ExecutorNode>,
        dist: SparkDist,
        logs: PathBuf,
    ) -> ExecutorKubelet {
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let cluster_nodes: Api<Node> = Api::all(client);
        let task = tokio::spawn(async move {
            if let Err(e) = run(pods, cluster_nodes, nodes, dist, logs).await {
                eprintln!("spark executor kubelet: {e:#}");
            }
        });
        ExecutorKubelet { task }
    }
}

async fn run(
    pods: Api<Pod>,
    cluster_nodes: Api<Node>,
    nodes: Vec<ExecutorNode>,
    dist: SparkDist,
    logs: PathBuf,
) -> Result<()> {
    std::fs::create_dir_all(&logs)?;
    let config = watcher::Config::default().labels("spark-role=executor");
    let mut events = watcher::watcher(pods.clone(), config).boxed();
    let (exited_tx, mut exited) = mpsc::unbounded_channel::<Exited>();
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut next_node = 0;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { return Ok(()) };
                let pod = match event {
                    Ok(Event::Apply(pod) | Event::InitApply(pod)) => pod,
                    Ok(Event::Delete(pod)) => {
                        if let Some(r) = running.remove(&pod.uid().unwrap_or_default()) {
                            signal(r.pid, libc::SIGKILL);
                        }
                        continue;
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        eprintln!("spark executor kubelet: watch: {e}");
                        continue;
                    }
                };
                let uid = pod.uid().unwrap_or_default();
                let bound = pod.spec.as_ref().and_then(|s| s.node_name.clone());
                let finished = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .is_some_and(|p| p == "Succeeded" || p == "Failed");
                match (bound, running.get_mut(&uid)) {
                    (None, _) => {
                        // As the scheduler: in turn, and never on a cordoned node.
                        let mut schedulable = Vec::new();
                        for node in &nodes {
                            let cordoned = cluster_nodes.get(&node.name).await?.spec.and_then(|s| s.unschedulable).unwrap_or(false);
                            if !cordoned {
                                schedulable.push(node);
                            }
                        }
                        if let Some(node) = schedulable.get(next_node % schedulable.len().max(1)) {
                            next_node += 1;
                            bind(&pods, &pod.name_any(), &node.name).await?;
                        }
                    }
                    (Some(node), None) if !finished && pod.metadata.deletion_timestamp.is_none() => {
                        let Some(node) = nodes.iter().find(|n| n.name == node) else {
                            continue;
                        };
                        let pid = start_executor(&pods, &pod, node, &dist, &logs, exited_tx.clone()).await?;
                        running.insert(uid, Running { pid, decommissioning: false, kill_at: None });
                    }
                    // Deleted with no executor running (it exited before, or never
                    // started): nothing to stop, the deletion ends, as a kubelet ends it.
                    (Some(_), None) if pod.metadata.deletion_timestamp.is_some() => {
                        let _ = pods
                            .delete(&pod.name_any(), &DeleteParams::default().grace_period(0))
                            .await;
                    }
                    (Some(_), Some(executor)) => {
                        if let Some(due) = &pod.metadata.deletion_timestamp {
                            executor.kill_at = Some(due.0);
                            if !executor.decommissioning && has_pre_stop(&pod) {
                                // Spark's decom.sh: SIGPWR, then wait for the JVM to exit.
                                signal(executor.pid, libc::SIGPWR);
                                executor.decommissioning = true;
                            } else if !has_pre_stop(&pod) {
                                signal(executor.pid, libc::SIGTERM);
                            }
                        }
                    }
                    _ => {}
                }
            }
            Some(ended) = exited.recv() => {
                running.remove(&ended.uid);
                report_exit(&pods, &ended).await;
            }
            _ = tick.tick() => {
                let now = Timestamp::now();
                for executor in running.values_mut() {
                    if executor.kill_at.is_some_and(|t| now >= t) {
                        signal(executor.pid, libc::SIGKILL);
                        executor.kill_at = None;
                    }
                }
            }
        }
    }
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions; a pid that has exited meanwhile
    // answers ESRCH.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

fn has_pre_stop(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.lifecycle.as_ref())
        .is_some_and(|l| l.pre_stop.is_some())
}

/// Binds `pod` to `node`, as the scheduler would.
async fn bind(pods: &Api<Pod>, pod: &str, node: &str) -> Result<()> {
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    match pods
        .create_subresource::<_, serde_json::Value>(
            "binding",
            pod,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => Ok(()),
        // Bound meanwhile, or gone: the next event says which.
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("binding {pod} to {node}")),
    }
}

/// The value of one of the pod's environment variables, as the kubelet resolves it.
fn env_value(var: &EnvVar, pod: &Pod, address: &str) -> Option<String> {
    if let Some(value) = &var.value {
        return Some(value.clone());
    }
    let field = var.value_from.as_ref()?.field_ref.as_ref()?;
    match field.field_path.as_str() {
        "status.podIP" | "status.hostIP" => Some(address.to_owned()),
        "metadata.name" => Some(pod.name_any()),
        "metadata.namespace" => pod.namespace(),
        "metadata.uid" => pod.uid(),
        _ => None,
    }
}

/// Starts the executor as Spark's image entrypoint does, and reports the pod Running.
async fn start_executor(
    pods: &Api<Pod>,
    pod: &Pod,
    node: &ExecutorNode,
    dist: &SparkDist,
    logs: &Path,
    exited: mpsc::UnboundedSender<Exited>,
) -> Result<u32> {
    let name = pod.name_any();
    let container = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .context("an executor pod without a container")?;
    let env: HashMap<String, String> = container
        .env
        .iter()
        .flatten()
        .filter_map(|v| Some((v.name.clone(), env_value(v, pod, &node.address)?)))
        .collect();
    let var = |key: &str| {
        env.get(key)
            .cloned()
            .with_context(|| format!("executor pod {name} has no {key}"))
    };
    let mut java_opts: Vec<(u32, String)> = env
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("SPARK_JAVA_OPT_")?.parse().ok()?, v.clone())))
        .collect();
    java_opts.sort();
    let memory = var("SPARK_EXECUTOR_MEMORY")?;
    let local_dir = logs.join(format!("{name}-local"));
    std::fs::create_dir_all(&local_dir)?;
    let log = std::fs::File::create(logs.join(format!("{name}.log")))?;
    let mut command = tokio::process::Command::new("java");
    command
        .args(java_opts.into_iter().map(|(_, o)| o))
        .arg(format!("-Xms{memory}"))
        .arg(format!("-Xmx{memory}"))
        .arg("-cp")
        .arg(dist.classpath())
        .arg("org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend")
        .args(["--driver-url", &var("SPARK_DRIVER_URL")?])
        .args(["--executor-id", &var("SPARK_EXECUTOR_ID")?])
        .args(["--cores", &var("SPARK_EXECUTOR_CORES")?])
        .args(["--app-id", &var("SPARK_APPLICATION_ID")?])
        .args(["--hostname", &node.address])
        .args(["--resourceProfileId", &var("SPARK_RESOURCE_PROFILE_ID")?])
        .args(["--podName", &name])
        .envs(&env)
        .env("SPARK_LOCAL_DIRS", &local_dir)
        .env("SPARK_LOCAL_IP", &node.address)
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    let mut child = command.spawn().context("starting the executor JVM")?;
    let pid = child.id().context("the executor JVM has no pid")?;
    let uid = pod.uid().unwrap_or_default();
    let container_name = container.name.clone();
    tokio::spawn(async move {
        let code = match child.wait().await {
            Ok(status) => {
                use std::os::unix::process::ExitStatusExt;
                status
                    .code()
                    .or_else(|| status.signal().map(|s| 128 + s))
                    .unwrap_or(1)
            }
            Err(_) => 1,
        };
        let _ = exited.send(Exited { name, uid, code });
    });
    let now = now();
    let status = json!({"status": {
        "phase": "Running", "podIP": node.address, "podIPs": [{"ip": node.address}],
        "hostIP": node.address, "startTime": now,
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
        "containerStatuses": [{
            "name": container_name, "ready": true, "restartCount": 0, "started": true,
            "image": container.image.clone().unwrap_or_default(), "imageID": "",
            "state": {"running": {"startedAt": now}},
        }],
    }});
    pods.patch_status(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Strategic(&status),
    )
    .await
    .with_context(|| format!("reporting executor {} running", pod.name_any()))?;
    Ok(pid)
}

/// Reports the executor's container terminated with its real exit code, and ends the
/// pod's graceful deletion if one was asked for.
async fn report_exit(pods: &Api<Pod>, ended: &Exited) {
    let Ok(Some(pod)) = pods.get_opt(&ended.name).await else {
        return;
    };
    if pod.uid().as_deref() != Some(ended.uid.as_str()) {
        return;
    }
    let container = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .map(|c| c.name.clone())
        .unwrap_or_default();
    let (phase, reason) = match ended.code {
        0 => ("Succeeded", "Completed"),
        _ => ("Failed", "Error"),
    };
    let now = now();
    let status = json!({"status": {
        "phase": phase,
        "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}],
        "containerStatuses": [{
            "name": container, "ready": false, "restartCount": 0, "image": "", "imageID": "",
            "state": {"terminated": {"exitCode": ended.code, "reason": reason, "finishedAt": now}},
        }],
    }});
    if let Err(e) = pods
        .patch_status(
            &ended.name,
            &PatchParams::default(),
            &Patch::Strategic(&status),
        )
        .await
    {
        eprintln!(
            "spark executor kubelet: reporting {} ended: {e}",
            ended.name
        );
    }
    if pod.metadata.deletion_timestamp.is_some() {
        let _ = pods
            .delete(&ended.name, &DeleteParams::default().grace_period(0))
            .await;
    }
}
