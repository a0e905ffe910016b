//! One spot interruption, staged on any of the three clouds: the node as that cloud's
//! Kubernetes service registers it, the flags its agent needs, and the announcement as
//! that cloud's metadata service makes it (through the simulator).

use jiff::{SignedDuration, Timestamp};
use reclaim_agent::node::{apply_notice_patch, record_of, update_node};
use reclaim_model::{Notice, NoticeKind, Provider};
use reclaim_simulator::{Fault, Simulator};
use serde_json::json;

use crate::{TestKubelet, TestNode};

/// A spot node as EKS/Karpenter, AKS or GKE registers it.
pub fn spot_node(provider: Provider, name: &str) -> TestNode {
    match provider {
        Provider::Aws => TestNode::spot(name),
        Provider::Azure => TestNode::new(name).label("kubernetes.azure.com/scalesetpriority", "spot").provider_id(&format!(
            "azure:///subscriptions/0000/resourceGroups/mc_rg/providers/Microsoft.Compute/virtualMachineScaleSets/aks-spot-vmss/virtualMachines/{name}"
        )),
        Provider::Gcp => TestNode::new(name).label("cloud.google.com/gke-spot", "true").provider_id(&format!("gce://data-platform/us-central1-a/{name}")),
        Provider::Drill => unreachable!("a drill runs on a node of some cloud"),
    }
}

/// Agent flags for `node` on `provider` when preemptions come `lead` ahead: on Azure the
/// node's name stands for the VM's name; GCP's notice length is a setting.
pub fn agent_flags(provider: Provider, node: &str, lead: SignedDuration) -> Vec<String> {
    match provider {
        Provider::Aws => Vec::new(),
        Provider::Azure => vec!["--azure-vm-name".into(), node.into()],
        Provider::Gcp => vec!["--preemption-notice".into(), format!("{}s", lead.as_secs())],
        Provider::Drill => unreachable!("a drill is announced by its annotation"),
    }
}

/// Announces the preemption of `node`'s instance, effective `lead` from now.
pub fn announce_spot(sim: &Simulator, provider: Provider, node: &str, lead: SignedDuration) {
    let mut state = sim.state();
    match provider {
        Provider::Aws => state.aws.schedule_spot("terminate", Timestamp::now(), lead),
        Provider::Azure => {
            let not_before = (Timestamp::now() + lead)
                .to_zoned(jiff::tz::TimeZone::UTC)
                .strftime("%a, %d %b %Y %H:%M:%S GMT")
                .to_string();
            state.azure.set_events(vec![json!({
                "EventId": format!("{:08X}-0000-4000-8000-000000000000", Timestamp::now().as_second()),
                "EventType": "Preempt", "ResourceType": "VirtualMachine", "Resources": [node],
                "EventStatus": "Scheduled", "NotBefore": not_before, "Description": "", "EventSource": "Platform",
                "DurationInSeconds": -1,
            })]);
        }
        Provider::Gcp => state.gcp.set_preempted(true),
        Provider::Drill => unreachable!("a drill is announced by its annotation"),
    }
}

/// Withdraws every announcement and fault, for the next round of a benchmark.
pub fn clear(sim: &Simulator) {
    let mut state = sim.state();
    state.aws.clear_notices();
    state.azure.set_events(Vec::new());
    state.gcp.set_preempted(false);
    state.faults.clear();
    state.notice_first_served = None;
}

/// The path that announces a spot interruption on `provider`, as the simulator's fault
/// filter matches it.
pub fn spot_path(provider: Provider) -> &'static str {
    match provider {
        Provider::Aws => "spot/instance-action",
        Provider::Azure => "scheduledevents",
        Provider::Gcp => "instance/preempted",
        Provider::Drill => unreachable!("a drill has no metadata path"),
    }
}

/// Errors in a storm made by [`error_storm`].
pub const STORM_ERRORS: usize = 15;

/// Fifteen errors of every kind in a row on `provider`'s spot path: 503s, garbage, one
/// answer that takes `hang` (longer than the agent's timeout), 500s.
pub fn error_storm(sim: &Simulator, provider: Provider, hang: std::time::Duration) {
    let mut state = sim.state();
    let path = Some(spot_path(provider));
    state.faults.inject_on(path, Fault::Status(503), 6);
    state.faults.inject_on(path, Fault::Garbage, 2);
    state
        .faults
        .inject_on(path, Fault::DelayMs(hang.as_millis() as u64), 1);
    state.faults.inject_on(path, Fault::Status(500), 6);
}

/// `aws`, `azure` or `gcp`.
pub fn parse_provider(text: &str) -> anyhow::Result<Provider> {
    serde_json::from_value(json!(text))
        .map_err(|_| anyhow::anyhow!("unknown provider {text:?}; use aws, azure or gcp"))
}

/// A spot interruption notice on AWS as the agent records it: issued 5 s ago, 115 s to go.
pub fn aws_spot_notice() -> Notice {
    Notice {
        provider: Provider::Aws,
        kind: NoticeKind::SpotInterruption,
        event_id: "instance-action-terminate".into(),
        notice_time: Timestamp::now() - SignedDuration::from_secs(5),
        deadline: Some(Timestamp::now() + SignedDuration::from_secs(115)),
        detected_at: Timestamp::now(),
    }
}

/// An Interruption record named `name` for `notice` on `node`, drained, as an agent
/// elsewhere would leave it (the CRD installed first).
pub async fn write_record(
    k: &TestKubelet,
    name: &str,
    node: &str,
    notice: &Notice,
) -> anyhow::Result<kube::core::DynamicObject> {
    crate::ControlPlane::shared().install_interruption_crd()?;
    let record = json!({
        "apiVersion": reclaim_model::interruption::API_VERSION,
        "kind": reclaim_model::interruption::KIND,
        "metadata": {"name": name}, "spec": notice.for_pod(node),
        "status": {"phase": "Drained", "reason": "written by the test", "retryable": 0},
    });
    Ok(reclaim_service::interruptions::api(k.client())
        .create(&Default::default(), &serde_json::from_value(record)?)
        .await?)
}

/// Writes [`aws_spot_notice`] on `node` as the agent does (taint, cordon, annotation);
/// returns the notice as read back from the Node.
pub async fn notice_node(k: &TestKubelet, node: &str) -> anyhow::Result<Notice> {
    let notice = aws_spot_notice();
    update_node(&k.nodes(), node, |n| apply_notice_patch(n, &notice)).await?;
    record_of(&k.nodes().get(node).await?)
        .notice
        .ok_or_else(|| anyhow::anyhow!("the notice on {node} does not read back"))
}
