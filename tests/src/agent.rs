//! Runs the real agent loop ([`reclaim_agent::guard::run`]) in-process against the local
//! control plane and a metadata simulator, so tests can stop it, or kill it mid-drain.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use reclaim_agent::config::Config;
use reclaim_agent::metrics::Metrics;
use reclaim_agent::own_node::OwnNode;
use reclaim_service::client::ReadTimeout;
use reclaim_service::endpoints::{Exposition, Health};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ControlPlane;
use crate::process::ReclaimProcess;

pub struct RunningAgent {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The agent's two clients, as its `main` makes them: one for its short requests, one
/// for the watch on its own Node (drills).
#[derive(Clone)]
pub struct AgentClients {
    pub requests: kube::Client,
    pub watches: kube::Client,
}

/// A ServiceAccount `namespace/name` bound to cluster-admin: all the rights, but through
/// RBAC, so API Priority and Fairness treats it like any workload (only `system:masters`
/// is exempt). In `reclaim-system`, what it asks is in the server's audit log
/// ([`ControlPlane::audited`]). The namespace is created when missing.
pub async fn privileged_account(
    k: &crate::TestKubelet,
    namespace: &str,
    name: &str,
) -> Result<AgentClients> {
    use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
    use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
    use kube::api::{Api, PostParams};
    let created = |result: kube::Result<_>| match result {
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        other => other.map(|_| ()),
    };
    let client = k.client().clone();
    let namespace_object: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}}))?;
    created(
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace_object)
            .await,
    )?;
    let account: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &account)
        .await?;
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("reclaim-test-{namespace}-{name}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "namespace": namespace, "name": name}],
    }))?;
    Api::<ClusterRoleBinding>::all(client)
        .create(&PostParams::default(), &binding)
        .await?;
    let cp = ControlPlane::shared();
    Ok(AgentClients {
        requests: cp
            .service_account_client(namespace, name, ReadTimeout::ShortRequests)
            .await?,
        watches: cp
            .service_account_client(namespace, name, ReadTimeout::Watches)
            .await?,
    })
}

impl AgentClients {
    /// Administrator clients, through `server` (a fault proxy) when given.
    pub async fn via(server: Option<&str>) -> Result<AgentClients> {
        let cp = ControlPlane::shared();
        Ok(AgentClients {
            requests: cp.client_via(server, ReadTimeout::ShortRequests).await?,
            watches: cp.client_via(server, ReadTimeout::Watches).await?,
        })
    }
}

/// The agent's pod on `node` (ServiceAccount `namespace/account`, as the DaemonSet makes
/// it) and the agent's clients with tokens bound to that pod, as the kubelet mounts them:
/// the API server reads the pod's node from them (`authentication.kubernetes.io/node-name`).
/// Start the agent with `--pod-name`/`--pod-namespace` of the pod, so it leaves it alone.
pub async fn pod_bound_agent(
    namespace: &str,
    account: &str,
    node: &str,
) -> Result<(k8s_openapi::api::core::v1::Pod, AgentClients)> {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, PostParams};
    let cp = ControlPlane::shared();
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("reclaim-agent-{node}")},
        "spec": {"nodeName": node, "serviceAccountName": account,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "agent", "image": "reclaim"}]},
    }))?;
    let pod = Api::<Pod>::namespaced(cp.admin_client().await?, namespace)
        .create(&PostParams::default(), &pod)
        .await?;
    let clients = AgentClients {
        requests: cp
            .pod_bound_client(namespace, account, &pod, ReadTimeout::ShortRequests)
            .await?,
        watches: cp
            .pod_bound_client(namespace, account, &pod, ReadTimeout::Watches)
            .await?,
    };
    Ok((pod, clients))
}

/// Starts an agent guarding `node`, reading metadata from `metadata_url`; `extra` are
/// more command-line flags (e.g. `["--safety-margin", "5s"]`).
pub async fn start_agent(node: &str, metadata_url: &str, extra: &[&str]) -> Result<RunningAgent> {
    start_agent_as(AgentClients::via(None).await?, node, metadata_url, extra).await
}

/// As [`start_agent`], with the agent's Kubernetes access through `clients` (say, its
/// ServiceAccount's token).
pub async fn start_agent_as(
    clients: AgentClients,
    node: &str,
    metadata_url: &str,
    extra: &[&str],
) -> Result<RunningAgent> {
    let mut args = vec![
        "reclaim-agent",
        "--node-name",
        node,
        "--metadata-url",
        metadata_url,
        "--poll-interval",
        "500ms",
    ];
    args.extend_from_slice(extra);
    let config = Config::try_parse_from(args)?;
    // The agent's log lines show up in a failing test's output.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("reclaim_agent=debug")
        .try_init();
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::new(Duration::from_secs(30)));
    let (stop, shutdown) = watch::channel(false);
    let own_node = OwnNode::watch(clients.watches, &config.node_name);
    let task = tokio::spawn(reclaim_agent::guard::run(
        config,
        clients.requests,
        own_node,
        metrics.clone(),
        health.clone(),
        shutdown,
    ));
    Ok(RunningAgent {
        metrics,
        health,
        stop,
        task,
    })
}

impl RunningAgent {
    /// Waits until the agent's first metadata poll has succeeded (what `/readyz` reports).
    pub async fn ready(&self) -> Result<()> {
        crate::eventually(
            Duration::from_secs(60),
            "the agent's first successful poll",
            || async { Ok(self.health.is_ready()) },
        )
        .await
    }

    /// Kills the agent wherever it is, as SIGKILL or an OOM kill would.
    pub fn kill(self) {
        self.task.abort();
    }

    /// Asks the agent to stop, as SIGTERM does, and waits until it has.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), self.task).await??;
        Ok(())
    }

    /// [`metric_sum`] over this agent's `/metrics`.
    pub fn metric_sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_sum(&self.metrics.encode(), name, labels)
    }

    /// The value of one sample in the agent's `/metrics` text, e.g.
    /// `reclaim_evictions_total{outcome="evicted"}`; 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        self.metrics
            .encode()
            .lines()
            .find_map(|line| {
                line.strip_prefix(sample)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }
}

/// The sum of the samples of `name` in a `/metrics` text that carry every one of
/// `labels`, e.g. every path's `reclaim_metadata_errors_total` with `error="timeout"`.
pub fn metric_sum(exposition: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    exposition
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (label_text, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once('}')?,
                None => ("", rest),
            };
            labels
                .iter()
                .all(|(k, v)| label_text.split(',').any(|l| l == format!("{k}=\"{v}\"")))
                .then(|| value.trim().parse::<f64>().ok())?
        })
        .sum()
}

/// The real `reclaim-agent` binary guarding `node`, as a child process (demo and
/// benchmarks); `extra` are more flags.
pub fn spawn_agent_process(
    node: &str,
    metadata_url: &str,
    extra: &[&str],
    log: std::process::Stdio,
) -> Result<ReclaimProcess> {
    let mut args = vec!["--node-name", node, "--metadata-url", metadata_url];
    args.extend_from_slice(extra);
    ReclaimProcess::spawn("reclaim-agent", &args, log)
}
