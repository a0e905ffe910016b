//! `reclaim-agent`: see the README for flags and the contract it writes.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use reclaim_agent::config::{Config, LogFormat};
use reclaim_agent::endpoints::{self, Health};
use reclaim_agent::metrics::Metrics;
use reclaim_agent::{client, guard};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

fn main() -> ExitCode {
    let config = Config::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    // One thread is plenty for a loop that mostly waits, and keeps the footprint small.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("reclaim-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            tracing::info!(signal, "shutting down");
            let _ = stop.send(true);
        }
    });
    let metrics = Arc::new(Metrics::default());
    let stale_after =
        Duration::from_secs(30) + config.poll_interval * 3 + config.metadata_timeout * 4;
    let health = Arc::new(Health::new(stale_after));
    let listener = endpoints::bind(config.metrics_addr).await?;
    tokio::spawn(endpoints::serve(listener, metrics.clone(), health.clone()));
    let client = client::default_client().await.map_err(|e| {
        anyhow::anyhow!("no Kubernetes configuration (KUBECONFIG or in-cluster): {e}")
    })?;
    guard::run(config, client, metrics, health, shutdown).await;
    Ok(())
}
