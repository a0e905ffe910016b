//! The agent's command line; every flag can also come from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use reclaim_service::{LogFormat, parse_duration};

use crate::decision::Policy;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProviderChoice {
    /// From the Node's providerID.
    Auto,
    Aws,
    Azure,
    Gcp,
}

/// Guards one spot node: taint, cordon and drain it before the cloud reclaims it.
#[derive(Debug, Clone, Parser)]
#[command(name = "reclaim-agent", version)]
pub struct Config {
    /// The Node this agent guards (downward API: spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    #[arg(long, env = "RECLAIM_PROVIDER", value_enum, default_value = "auto")]
    pub provider: ProviderChoice,
    /// Base URL of the instance metadata service.
    #[arg(
        long,
        env = "RECLAIM_METADATA_URL",
        default_value = "http://169.254.169.254"
    )]
    pub metadata_url: String,
    #[arg(long, env = "RECLAIM_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// Timeout of each metadata request.
    #[arg(long, env = "RECLAIM_METADATA_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub metadata_timeout: Duration,
    /// Lifetime requested for IMDSv2 session tokens (renewed at 90 %).
    #[arg(long, env = "RECLAIM_IMDS_TOKEN_TTL", default_value = "6h", value_parser = parse_duration)]
    pub imds_token_ttl: Duration,
    /// Serves /metrics, /healthz and /readyz (read-only).
    #[arg(long, env = "RECLAIM_METRICS_ADDR", default_value = "0.0.0.0:9847", value_parser = reclaim_service::endpoints::parse_listen_addr)]
    pub metrics_addr: SocketAddr,
    /// Log what would be done; write nothing to the cluster.
    #[arg(long, env = "RECLAIM_DRY_RUN")]
    pub dry_run: bool,
    /// Ignore the `reclaim.dev/drill` node annotation, and do not watch the Node for it.
    #[arg(long, env = "RECLAIM_DISABLE_DRILLS")]
    pub disable_drills: bool,
    #[arg(long, env = "RECLAIM_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Pods must be gone this long before the announced deadline.
    #[arg(long, env = "RECLAIM_SAFETY_MARGIN", default_value = "10s", value_parser = parse_duration)]
    pub safety_margin: Duration,
    /// Also drain on a rebalance recommendation (default: taint and cordon only).
    #[arg(long, env = "RECLAIM_REBALANCE_DRAIN")]
    pub rebalance_drain: bool,
    /// Lift a rebalance taint and cordon after this long without a termination.
    #[arg(long, env = "RECLAIM_REBALANCE_EXPIRY", default_value = "30m", value_parser = parse_duration)]
    pub rebalance_expiry: Duration,
    /// Act on scheduled maintenance this long before it starts.
    #[arg(long, env = "RECLAIM_MAINTENANCE_LEAD_TIME", default_value = "10m", value_parser = parse_duration)]
    pub maintenance_lead_time: Duration,
    /// Undo a notice the provider stops announcing (without saying it ended) only after
    /// this long and at least 3 successful polls without it; a shorter gap is a flap.
    #[arg(long, env = "RECLAIM_WITHDRAWAL_AFTER", default_value = "60s", value_parser = parse_duration)]
    pub withdrawal_after: Duration,
    /// Drain budget when a termination comes without a deadline (ASG lifecycle).
    #[arg(long, env = "RECLAIM_DRAIN_BUDGET", default_value = "2m", value_parser = parse_duration)]
    pub drain_budget: Duration,
    /// Pause between evictions refused by a PodDisruptionBudget.
    #[arg(long, env = "RECLAIM_EVICTION_RETRY_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub eviction_retry_interval: Duration,
    /// Deadline of a preemption announced without one: GCP `preempted=TRUE`, or an Azure
    /// `Preempt` already Started (empty NotBefore).
    #[arg(long, env = "RECLAIM_PREEMPTION_NOTICE", default_value = "30s", value_parser = parse_duration)]
    pub preemption_notice: Duration,
    /// Azure: this VM's name in Scheduled Events `Resources` (default: instance metadata compute/name).
    #[arg(long, env = "RECLAIM_AZURE_VM_NAME")]
    pub azure_vm_name: Option<String>,
    /// Azure: approve the event (`StartRequests`) once the drain is done, so it may start early.
    #[arg(long, env = "RECLAIM_AZURE_ACKNOWLEDGE")]
    pub azure_acknowledge: bool,
    /// Azure: treat `Freeze` events (a pause of seconds) as maintenance.
    #[arg(long, env = "RECLAIM_AZURE_FREEZE")]
    pub azure_freeze: bool,
    /// Azure: timeout of the first Scheduled Events call (it may take up to 2 minutes).
    #[arg(long, env = "RECLAIM_AZURE_FIRST_CALL_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    pub azure_first_call_timeout: Duration,
    /// GCP: how long the metadata server may hold a hanging GET.
    #[arg(long, env = "RECLAIM_GCP_WAIT", default_value = "15s", value_parser = parse_duration)]
    pub gcp_wait: Duration,
    /// The agent's own pod (downward API), never evicted by its own drain.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
}

impl Config {
    pub fn policy(&self) -> Policy {
        Policy {
            safety_margin: self.safety_margin,
            rebalance_drain: self.rebalance_drain,
            rebalance_expiry: self.rebalance_expiry,
            maintenance_lead_time: self.maintenance_lead_time,
            default_drain_budget: self.drain_budget,
            withdrawal_after: self.withdrawal_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_defaults_hold() {
        let config = Config::try_parse_from(["reclaim-agent", "--node-name", "n1"]).unwrap();
        assert_eq!(config.poll_interval, Duration::from_secs(1));
        assert_eq!(config.metadata_url, "http://169.254.169.254");
        assert_eq!(config.metrics_addr.port(), 9847);
        assert_eq!(config.provider, ProviderChoice::Auto);
        assert!(!config.dry_run && !config.rebalance_drain);
    }
}
