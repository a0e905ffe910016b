//! What the plugin reads and writes in the cluster, through the current kubeconfig and
//! context (or `--context`), as kubectl does.

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use reclaim_model::Placement;
use reclaim_model::keys::{DRILL_ANNOTATION, NODE_NOTICE_ANNOTATION};
use serde::Serialize;

use crate::records::Record;

/// Why a command failed, and the exit code that says so.
#[derive(Debug)]
pub enum Failure {
    /// The Interruption CRD is not served: Reclaim is not installed (exit 3).
    NotInstalled,
    /// The server refused for lack of permission (exit 4).
    Forbidden(String),
    /// Anything else (exit 1).
    Other(anyhow::Error),
}

impl From<kube::Error> for Failure {
    fn from(e: kube::Error) -> Failure {
        match &e {
            kube::Error::Api(s) if s.code == 403 => Failure::Forbidden(s.message.clone()),
            _ => Failure::Other(e.into()),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Other(e)
    }
}

/// A client for the current kubeconfig and context (or `context`), every request bounded.
pub async fn client(context: Option<&str>) -> anyhow::Result<Client> {
    let options = kube::config::KubeConfigOptions {
        context: context.map(str::to_owned),
        ..Default::default()
    };
    let config = match context {
        Some(_) => kube::Config::from_kubeconfig(&options).await?,
        None => kube::Config::infer().await?,
    };
    // The project's client: connect and read timeouts on every request.
    Ok(reclaim_service::client::client_from_config(
        config,
        reclaim_service::client::ReadTimeout::ShortRequests,
    )?)
}

/// Every Interruption record; those that do not parse are reported on stderr and left out.
pub async fn records(client: &Client) -> Result<Vec<Record>, Failure> {
    let list = reclaim_service::interruptions::api(client)
        .list(&ListParams::default())
        .await
        .map_err(|e| {
            if reclaim_service::interruptions::crd_missing(&e) {
                Failure::NotInstalled
            } else {
                Failure::from(e)
            }
        })?;
    let mut records = Vec::new();
    for object in list.items {
        match Record::parse(
            &object.name_any(),
            &object.data["spec"],
            &object.data["status"],
        ) {
            Ok(record) => records.push(record),
            Err(e) => eprintln!("warning: skipping {e}"),
        }
    }
    Ok(records)
}

/// The Nodes that exist: name, placement, creation.
pub async fn nodes(client: &Client) -> Result<Vec<(String, Placement, Timestamp)>, Failure> {
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    Ok(nodes
        .items
        .iter()
        .filter_map(|n| {
            let created = n.metadata.creation_timestamp.as_ref()?.0;
            Some((n.name_any(), Placement::from_labels(n.labels()), created))
        })
        .collect())
}

/// Starts a drill on `node` (`lead`: the notice, e.g. `45s`; the cloud's usual one if none),
/// or calls it off.
pub async fn drill(
    client: &Client,
    node: &str,
    lead: Option<&str>,
    cancel: bool,
) -> Result<(), Failure> {
    let value = match (cancel, lead) {
        (true, _) => serde_json::Value::Null,
        (false, Some(lead)) => format!("spot-interruption,lead={lead}").into(),
        (false, None) => "spot-interruption".into(),
    };
    let patch = serde_json::json!({"metadata": {"annotations": {DRILL_ANNOTATION: value}}});
    Api::<Node>::all(client.clone())
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// What is going on now.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Per node with an agent pod: the pod and whether it is ready.
    pub agents: Vec<AgentPod>,
    /// Nodes carrying a notice the agent acted on (`reclaim.dev/notice`).
    pub notices: Vec<NodeNote>,
    /// Nodes carrying a drill annotation.
    pub drills: Vec<NodeNote>,
    /// The classifier replica holding the Lease, if any.
    pub classifier_leader: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct AgentPod {
    pub node: String,
    pub pod: String,
    pub ready: bool,
}

#[derive(Debug, Serialize)]
pub struct NodeNote {
    pub node: String,
    pub value: String,
}

pub async fn status(client: &Client, namespace: &str) -> Result<Status, Failure> {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels("app.kubernetes.io/name=reclaim-agent"))
        .await?;
    let agents = pods
        .items
        .iter()
        .map(|p| AgentPod {
            node: p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
            pod: p.name_any(),
            ready: p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
        })
        .collect();
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    let annotated = |key: &str| -> Vec<NodeNote> {
        nodes
            .items
            .iter()
            .filter_map(|n| {
                let value = n.annotations().get(key)?;
                Some(NodeNote {
                    node: n.name_any(),
                    value: value.chars().take(200).collect(),
                })
            })
            .collect()
    };
    let leader = Api::<Lease>::namespaced(client.clone(), namespace)
        .get_opt("reclaim-classifier")
        .await?
        .and_then(|l| l.spec?.holder_identity);
    Ok(Status {
        agents,
        notices: annotated(NODE_NOTICE_ANNOTATION),
        drills: annotated(DRILL_ANNOTATION),
        classifier_leader: leader,
    })
}
