//! `reclaim-classifier`: see the README for the rules and the annotations it writes.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use reclaim_classifier::controller::Settings;
use reclaim_classifier::leader::Election;
use reclaim_classifier::metrics::ClassifierMetrics;
use reclaim_service::LogFormat;
use reclaim_service::endpoints::{self, Health};
use tokio::sync::watch;

/// Marks spot-caused job failures as retryable, and nothing else.
#[derive(Debug, Parser)]
#[command(name = "reclaim-classifier", version)]
struct Args {
    #[arg(long, env = "RECLAIM_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// How long a node's interruption notice is remembered after it was last seen, in hours.
    #[arg(long, env = "RECLAIM_NOTICE_RETENTION_HOURS", default_value_t = 6)]
    notice_retention_hours: u64,
    /// Interruption records older than this are deleted (`30d`, `12h`, `90m`, ...).
    #[arg(long, env = "RECLAIM_INTERRUPTION_RETENTION", default_value = "30d", value_parser = reclaim_service::parse_duration)]
    interruption_retention: Duration,
    /// Serves /metrics, /healthz and /readyz (read-only); next to the agent's 9847.
    #[arg(long, env = "RECLAIM_METRICS_ADDR", default_value = "0.0.0.0:9848", value_parser = reclaim_service::endpoints::parse_listen_addr)]
    metrics_addr: std::net::SocketAddr,
    /// Classify only the pods of this namespace (default: every namespace).
    #[arg(long, env = "RECLAIM_NAMESPACE")]
    namespace: Option<String>,
    /// The Lease that elects the one replica that writes.
    #[arg(long, env = "RECLAIM_LEASE_NAME", default_value = "reclaim-classifier")]
    lease_name: String,
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's name in the Lease (default: the host name, which is the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// A leader that has not renewed the Lease for this many seconds is replaced.
    #[arg(long, env = "RECLAIM_LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    reclaim_service::init_logging(args.log_format);
    reclaim_service::run("reclaim-classifier", |shutdown| run(args, shutdown))
}

async fn run(args: Args, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let metrics = Arc::new(ClassifierMetrics::default());
    // Ready once the Lease is read (followers) or every watch has listed (the leader);
    // unhealthy when the leader's watches fail without a break (see `progress`).
    let health = Arc::new(Health::new(Duration::MAX));
    health.set_not_ready("the Lease has not been read yet".into());
    let listener = endpoints::bind(args.metrics_addr).await?;
    tokio::spawn(endpoints::serve(listener, metrics.clone(), health.clone()));
    let client =
        reclaim_service::client::default_client(reclaim_service::client::ReadTimeout::Watches)
            .await
            .map_err(|e| {
                anyhow::anyhow!("no Kubernetes configuration (KUBECONFIG or in-cluster): {e}")
            })?;
    if !reclaim_service::server_version::wait_until_supported(&client, &health, &mut shutdown)
        .await?
    {
        return Ok(());
    }
    let identity = match args.identity {
        Some(identity) => identity,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")?
            .trim()
            .to_owned(),
    };
    let election = Election {
        lease_name: args.lease_name,
        namespace: args.lease_namespace,
        identity,
        lease_duration: Duration::from_secs(args.lease_duration_seconds.max(3)),
    };
    let settings = Settings {
        retention: Duration::from_secs(args.notice_retention_hours * 3600),
        record_retention: args.interruption_retention,
        namespace: args.namespace,
        metrics,
        health,
    };
    tracing::info!(retention_hours = args.notice_retention_hours, interruption_retention = ?settings.record_retention, namespace = ?settings.namespace, identity = %election.identity, "classifying failed pods");
    reclaim_classifier::elected::run_elected(client, settings, election, shutdown).await;
    Ok(())
}
