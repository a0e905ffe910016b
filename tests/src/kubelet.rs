//! A stand-in for the kubelet, which the local control plane does not have.
//!
//! Tests register Nodes, run pods on them (created bound to the node, then reported
//! Running through the status subresource, as a kubelet would), finish graceful
//! deletions, and report container exits with a chosen exit code and reason.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

use crate::control_plane::random_hex;

/// Plays the kubelet for the nodes of one test, in a namespace of its own.
#[derive(Clone)]
pub struct TestKubelet {
    client: Client,
    /// The test's namespace; every pod the kubelet runs lives here.
    pub namespace: String,
    /// Appended to node names so tests sharing a control plane never collide.
    pub suffix: String,
}

/// A Node to register. [`TestNode::spot`] is a Karpenter spot node on AWS.
#[derive(Debug, Clone)]
pub struct TestNode {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub provider_id: Option<String>,
}

impl TestNode {
    pub fn new(name: &str) -> TestNode {
        TestNode {
            name: name.to_owned(),
            labels: BTreeMap::new(),
            provider_id: None,
        }
    }

    /// A spot node as Karpenter labels it on AWS, with an EC2 providerID.
    pub fn spot(name: &str) -> TestNode {
        TestNode::new(name)
            .label("karpenter.sh/capacity-type", "spot")
            .provider_id("aws:///us-east-1a/i-0123456789abcdef0")
    }

    pub fn label(mut self, key: &str, value: &str) -> TestNode {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    pub fn provider_id(mut self, id: &str) -> TestNode {
        self.provider_id = Some(id.to_owned());
        self
    }
}

/// A pod to run. Defaults: one container `main`, grace period 30 s.
#[derive(Debug, Clone)]
pub struct TestPod {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub grace_period_seconds: i64,
    pub priority_class_name: Option<String>,
    /// A native sidecar (an init container with `restartPolicy: Always`) of this name.
    pub sidecar: Option<String>,
    pub finalizers: Vec<String>,
    /// Its ServiceAccount (`None`: the namespace's `default`).
    pub service_account: Option<String>,
    owner: Option<OwnerReference>,
}

impl TestPod {
    pub fn new(name: &str) -> TestPod {
        TestPod {
            name: name.to_owned(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            grace_period_seconds: 30,
            priority_class_name: None,
            sidecar: None,
            finalizers: Vec::new(),
            service_account: None,
            owner: None,
        }
    }

    /// Runs as ServiceAccount `name`, so a token can be bound to the pod (and its node).
    pub fn service_account(mut self, name: &str) -> TestPod {
        self.service_account = Some(name.to_owned());
        self
    }

    /// A node-critical pod (`system-node-critical`), as node-local DNS or a CSI node plugin.
    pub fn critical(name: &str) -> TestPod {
        TestPod::new(name).priority_class("system-node-critical")
    }

    /// A Spark executor of application `app_id`, labelled as Spark on Kubernetes labels it.
    pub fn spark_executor(name: &str, app_id: &str) -> TestPod {
        TestPod::new(name)
            .label("spark-role", "executor")
            .label("spark-app-selector", app_id)
    }

    pub fn label(mut self, key: &str, value: &str) -> TestPod {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> TestPod {
        self.annotations.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Marks the pod as the agent does before evicting it (annotation and label).
    pub fn interrupted(mut self, record: &reclaim_model::PodInterruption) -> TestPod {
        let patch = record.pod_metadata_patch();
        for (map, key) in [
            (&mut self.labels, "labels"),
            (&mut self.annotations, "annotations"),
        ] {
            for (k, v) in patch["metadata"][key].as_object().into_iter().flatten() {
                map.insert(k.clone(), v.as_str().unwrap_or_default().to_owned());
            }
        }
        self
    }

    pub fn grace_period(mut self, seconds: i64) -> TestPod {
        self.grace_period_seconds = seconds;
        self
    }

    /// Makes `owner` (a Job, a DaemonSet, a driver pod...) the pod's controller.
    pub fn owned_by(mut self, owner: OwnerReference) -> TestPod {
        self.owner = Some(owner);
        self
    }

    pub fn priority_class(mut self, name: &str) -> TestPod {
        self.priority_class_name = Some(name.to_owned());
        self
    }

    /// Holds the pod, once deleted, until the test removes `finalizer`.
    pub fn finalizer(mut self, finalizer: &str) -> TestPod {
        self.finalizers.push(finalizer.to_owned());
        self
    }

    /// Adds a native sidecar `name` (Kubernetes 1.33+: an init container with
    /// `restartPolicy: Always`, started before and stopped after the main container).
    pub fn native_sidecar(mut self, name: &str) -> TestPod {
        self.sidecar = Some(name.to_owned());
        self
    }

    fn manifest(&self, namespace: &str, node: &str) -> Value {
        let sidecars: Vec<Value> = self
            .sidecar
            .iter()
            .map(|name| json!({"name": name, "image": "registry.invalid/reclaim/sidecar:1", "restartPolicy": "Always"}))
            .collect();
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.name,
                "namespace": namespace,
                "labels": self.labels,
                "annotations": self.annotations,
                "ownerReferences": self.owner.iter().collect::<Vec<_>>(),
                "finalizers": self.finalizers,
            },
            "spec": {
                "nodeName": node,
                "terminationGracePeriodSeconds": self.grace_period_seconds,
                "priorityClassName": self.priority_class_name,
                "serviceAccountName": self.service_account,
                "initContainers": sidecars,
                "containers": [{"name": "main", "image": "registry.invalid/reclaim/test:1"}],
            },
        })
    }
}

/// How a container ended, as the kubelet reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: i32,
    pub reason: &'static str,
}

impl Exit {
    /// SIGKILL after the grace period ran out, or the node went away.
    pub const KILLED: Exit = Exit {
        code: 137,
        reason: "Error",
    };
    /// SIGKILL by the kernel's OOM killer at the memory limit.
    pub const OOM_KILLED: Exit = Exit {
        code: 137,
        reason: "OOMKilled",
    };
    pub const COMPLETED: Exit = Exit {
        code: 0,
        reason: "Completed",
    };
    /// An application error.
    pub const FAILED: Exit = Exit {
        code: 1,
        reason: "Error",
    };
}

impl TestKubelet {
    /// A kubelet for one test, with a fresh namespace named after `test`.
    pub async fn new(client: Client, test: &str) -> Result<TestKubelet> {
        let suffix = random_hex(3)?;
        let namespace = format!("{test}-{suffix}");
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}}))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {namespace}"))?;
        Ok(TestKubelet {
            client,
            namespace,
            suffix,
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    /// A node name unique to this test.
    pub fn node_name(&self, base: &str) -> String {
        format!("{base}-{}", self.suffix)
    }

    /// Registers a Ready node with 16 CPUs, 64 GiB and room for 110 pods.
    pub async fn register_node(&self, node: TestNode) -> Result<Node> {
        let manifest = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": node.name, "labels": node.labels},
            "spec": {"providerID": node.provider_id},
        });
        let created = self
            .nodes()
            .create(&PostParams::default(), &serde_json::from_value(manifest)?)
            .await
            .with_context(|| format!("registering node {}", node.name))?;
        let capacity = json!({"cpu": "16", "memory": "64Gi", "pods": "110"});
        let status = json!({"status": {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "reclaim test kubelet", "lastHeartbeatTime": now(), "lastTransitionTime": now(),
            }],
        }});
        self.nodes()
            .patch_status(&node.name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .with_context(|| format!("reporting node {} Ready", node.name))?;
        // The API server taints every new Node not-ready; the node lifecycle controller
        // (not run here) lifts that taint once the kubelet reports Ready.
        reclaim_agent::node::remove_taint(
            &self.nodes(),
            &node.name,
            "node.kubernetes.io/not-ready",
        )
        .await?;
        Ok(created)
    }

    /// Creates `pod` bound to `node` and reports it Running and Ready.
    pub async fn run_pod(&self, node: &str, pod: TestPod) -> Result<Pod> {
        let manifest = pod.manifest(&self.namespace, node);
        self.pods()
            .create(&PostParams::default(), &serde_json::from_value(manifest)?)
            .await
            .with_context(|| format!("creating pod {}", pod.name))?;
        let running = || json!({"running": {"startedAt": now()}});
        let status = json!({"status": {
            "phase": "Running",
            "startTime": now(),
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now()}],
            "containerStatuses": [container_status("main", true, running())],
            "initContainerStatuses": pod.sidecar.iter().map(|name| container_status(name, true, running())).collect::<Vec<_>>(),
        }});
        self.report_status(&pod.name, status)
            .await
            .with_context(|| format!("reporting pod {} Running", pod.name))
    }

    /// Runs a pod owned by a (real) DaemonSet, as a log shipper or CNI agent would be.
    pub async fn run_daemonset_pod(&self, node: &str, daemonset: &str) -> Result<Pod> {
        let daemonsets: Api<DaemonSet> = Api::namespaced(self.client.clone(), &self.namespace);
        let owner = match daemonsets.get_opt(daemonset).await? {
            Some(existing) => existing,
            None => {
                let manifest = json!({
                    "apiVersion": "apps/v1", "kind": "DaemonSet",
                    "metadata": {"name": daemonset},
                    "spec": {
                        "selector": {"matchLabels": {"app": daemonset}},
                        "template": {
                            "metadata": {"labels": {"app": daemonset}},
                            "spec": {"containers": [{"name": "main", "image": "registry.invalid/reclaim/test:1"}]},
                        },
                    },
                });
                daemonsets
                    .create(&PostParams::default(), &serde_json::from_value(manifest)?)
                    .await?
            }
        };
        let mut pod = TestPod::new(&format!("{daemonset}-{node}")).label("app", daemonset);
        pod.owner = owner.controller_owner_ref(&());
        self.run_pod(node, pod).await
    }

    /// Runs a mirror pod: the API server's copy of a static pod the kubelet runs from a file.
    pub async fn run_mirror_pod(&self, node: &Node, name: &str) -> Result<Pod> {
        let mut pod =
            TestPod::new(name).annotation("kubernetes.io/config.mirror", "reclaim-test-static-pod");
        pod.owner = node.controller_owner_ref(&());
        self.run_pod(&node.name_any(), pod).await
    }

    /// Drain work with one pod that cannot be evicted: the executor `exec-1` (grace
    /// `executor_grace` s) behind a PodDisruptionBudget that refuses every eviction, and an
    /// unprotected pod `task` (grace 1 s), on `node`.
    pub async fn run_executor_behind_refusing_budget(
        &self,
        node: &str,
        executor_grace: i64,
    ) -> Result<()> {
        self.run_pod(
            node,
            TestPod::spark_executor("exec-1", "spark-1").grace_period(executor_grace),
        )
        .await?;
        self.run_pod(node, TestPod::new("task").grace_period(1))
            .await?;
        self.pod_disruption_budget("executors", &[("spark-role", "executor")], 1)
            .await?;
        Ok(())
    }

    /// Creates a policy/v1 PodDisruptionBudget and waits until the disruption controller
    /// has computed its status, so evictions honour it.
    pub async fn pod_disruption_budget(
        &self,
        name: &str,
        match_labels: &[(&str, &str)],
        min_available: i32,
    ) -> Result<PodDisruptionBudget> {
        self.budget(name, match_labels, min_available, None).await
    }

    /// A PodDisruptionBudget as [`Self::pod_disruption_budget`], with its
    /// `unhealthyPodEvictionPolicy` (`AlwaysAllow` lets a not-ready pod go whatever the
    /// budget says; `IfHealthyBudget` is the server's default).
    pub async fn budget(
        &self,
        name: &str,
        match_labels: &[(&str, &str)],
        min_available: i32,
        unhealthy_pod_eviction_policy: Option<&str>,
    ) -> Result<PodDisruptionBudget> {
        let budgets: Api<PodDisruptionBudget> =
            Api::namespaced(self.client.clone(), &self.namespace);
        let labels: BTreeMap<&str, &str> = match_labels.iter().copied().collect();
        let manifest = json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name},
            "spec": {"minAvailable": min_available, "selector": {"matchLabels": labels},
                     "unhealthyPodEvictionPolicy": unhealthy_pod_eviction_policy},
        });
        budgets
            .create(&PostParams::default(), &serde_json::from_value(manifest)?)
            .await
            .with_context(|| format!("creating PodDisruptionBudget {name}"))?;
        for _ in 0..300 {
            let budget = budgets.get(name).await?;
            let observed = budget
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if observed >= budget.metadata.generation.unwrap_or(1) {
                return Ok(budget);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("the disruption controller never computed the status of PodDisruptionBudget {name}")
    }

    /// Ends a graceful deletion now, as a kubelet does once the containers have stopped.
    pub async fn finish_deletion(&self, name: &str) -> Result<()> {
        match self
            .pods()
            .delete(name, &DeleteParams::default().grace_period(0))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(e).with_context(|| format!("finishing the deletion of pod {name}")),
        }
    }

    /// Ends every graceful deletion on `node` whose grace period has run out; returns the pods removed.
    pub async fn finish_due_deletions(&self, node: &str) -> Result<Vec<String>> {
        let on_node = ListParams::default().fields(&format!("spec.nodeName={node}"));
        let now = Timestamp::now();
        let mut finished = Vec::new();
        for pod in self.pods().list(&on_node).await? {
            if pod
                .metadata
                .deletion_timestamp
                .as_ref()
                .is_some_and(|due| due.0 <= now)
            {
                self.finish_deletion(&pod.name_any()).await?;
                finished.push(pod.name_any());
            }
        }
        Ok(finished)
    }

    /// Keeps finishing due deletions on `node` in the background, like a running kubelet.
    pub fn keep_finishing_deletions(&self, node: &str) -> tokio::task::JoinHandle<()> {
        let kubelet = self.clone();
        let node = node.to_owned();
        tokio::spawn(async move {
            loop {
                if let Err(e) = kubelet.finish_due_deletions(&node).await {
                    eprintln!("test kubelet: finishing deletions on {node}: {e:#}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    }

    /// Reports the pod's container terminated with `exit`; the pod phase follows the exit code.
    pub async fn terminate(&self, name: &str, exit: Exit) -> Result<Pod> {
        self.terminate_with_sidecar(name, exit, None).await
    }

    /// As [`Self::terminate`], with the pod's native sidecar (see
    /// [`TestPod::native_sidecar`]) terminated with `sidecar` when given.
    pub async fn terminate_with_sidecar(
        &self,
        name: &str,
        exit: Exit,
        sidecar: Option<(&str, Exit)>,
    ) -> Result<Pod> {
        let phase = if exit.code == 0 {
            "Succeeded"
        } else {
            "Failed"
        };
        let terminated = |exit: Exit| {
            json!({"terminated": {
                "exitCode": exit.code, "reason": exit.reason, "startedAt": now(), "finishedAt": now(),
            }})
        };
        let status = json!({"status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now()}],
            "containerStatuses": [container_status("main", false, terminated(exit))],
            "initContainerStatuses": sidecar.iter().map(|(name, exit)| container_status(name, false, terminated(*exit))).collect::<Vec<_>>(),
        }});
        self.report_status(name, status)
            .await
            .with_context(|| format!("reporting pod {name} terminated with {exit:?}"))
    }

    /// Reports the pod Ready or not (its containers keep running), as a kubelet does
    /// when a readiness probe starts or stops failing.
    pub async fn set_ready(&self, name: &str, ready: bool) -> Result<Pod> {
        let status = if ready { "True" } else { "False" };
        let status = json!({"status": {
            "conditions": [{"type": "Ready", "status": status, "lastTransitionTime": now()}],
        }});
        self.report_status(name, status)
            .await
            .with_context(|| format!("reporting pod {name} ready={ready}"))
    }

    /// A strategic merge patch of the pod's status: conditions merge by type, so one the
    /// server wrote (DisruptionTarget) stays, as it does with a real kubelet.
    async fn report_status(&self, name: &str, status: Value) -> kube::Result<Pod> {
        self.pods()
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(&status))
            .await
    }
}

fn container_status(name: &str, ready: bool, state: Value) -> Value {
    json!({
        "name": name, "ready": ready, "restartCount": 0,
        "image": "registry.invalid/reclaim/test:1", "imageID": "", "state": state,
    })
}

pub(crate) fn now() -> String {
    // Kubernetes Time has second precision.
    Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| Timestamp::now())
        .to_string()
}
