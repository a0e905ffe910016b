//! `reclaim-agent`: see the README for flags and the contract it writes.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use reclaim_agent::config::Config;
use reclaim_agent::guard;
use reclaim_agent::metrics::Metrics;
use reclaim_agent::own_node::OwnNode;
use reclaim_service::endpoints::{self, Health};
use tokio::sync::watch;

fn main() -> ExitCode {
    let config = Config::parse();
    reclaim_service::init_logging(config.log_format);
    reclaim_service::run("reclaim-agent", |shutdown| run(config, shutdown))
}

async fn run(config: Config, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let stale_after =
        Duration::from_secs(30) + config.poll_interval * 3 + config.metadata_timeout * 4;
    let health = Arc::new(Health::new(stale_after));
    let listener = endpoints::bind(config.metrics_addr).await?;
    tokio::spawn(endpoints::serve(listener, metrics.clone(), health.clone()));
    let client = reclaim_service::client::default_client(
        reclaim_service::client::ReadTimeout::ShortRequests,
    )
    .await
    .map_err(|e| anyhow::anyhow!("no Kubernetes configuration (KUBECONFIG or in-cluster): {e}"))?;
    // The Node is watched (for its version, and drills) with a client whose read timeout
    // outlasts a quiet watch.
    if config.disable_drills {
        tracing::info!(
            "drills are turned off (--disable-drills): the reclaim.dev/drill annotation is ignored"
        );
    }
    let watch_client =
        reclaim_service::client::default_client(reclaim_service::client::ReadTimeout::Watches)
            .await?;
    if !reclaim_service::server_version::wait_until_supported(&client, &health, &mut shutdown)
        .await?
    {
        return Ok(());
    }
    let own_node = OwnNode::watch(watch_client, &config.node_name);
    guard::run(config, client, own_node, metrics, health, shutdown).await;
    Ok(())
}
