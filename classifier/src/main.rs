//! `reclaim-classifier`: see the README for the rules and the annotations it writes.

use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Marks spot-caused job failures as retryable, and nothing else.
#[derive(Debug, Parser)]
#[command(name = "reclaim-classifier", version)]
struct Args {
    #[arg(long, env = "RECLAIM_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// How long a node's interruption notice is remembered after it was last seen, in hours.
    #[arg(long, env = "RECLAIM_NOTICE_RETENTION_HOURS", default_value_t = 6)]
    notice_retention_hours: u64,
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
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    match args.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("reclaim-classifier: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            let _ = stop.send(true);
        }
    });
    let config = kube::Config::infer().await.map_err(|e| {
        anyhow::anyhow!("no Kubernetes configuration (KUBECONFIG or in-cluster): {e}")
    })?;
    let client = kube::Client::try_from(config)?;
    let retention = std::time::Duration::from_secs(args.notice_retention_hours * 3600);
    tracing::info!(
        retention_hours = args.notice_retention_hours,
        "classifying failed pods"
    );
    let identity = match args.identity {
        Some(identity) => identity,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")?
            .trim()
            .to_owned(),
    };
    let election = reclaim_classifier::leader::Election {
        lease_name: args.lease_name,
        namespace: args.lease_namespace,
        identity,
        lease_duration: std::time::Duration::from_secs(args.lease_duration_seconds.max(3)),
    };
    reclaim_classifier::controller::run_elected(client, retention, election, shutdown).await;
    Ok(())
}
