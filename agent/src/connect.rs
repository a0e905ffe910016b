//! Connecting to the node's cloud: which provider's metadata service to read (the Node's
//! providerID, or a probe), and its client.
//! Retried, never fatal: an agent that cannot start guarding says why and tries again.

use std::sync::Arc;
use std::time::Duration;

use jiff::SignedDuration;
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::Api;
use reclaim_model::Provider;
use tokio::sync::watch;

use crate::config::{Config, ProviderChoice};
use crate::imds::aws::AwsImds;
use crate::imds::azure::{AzureEvents, AzureRules, vm_name_from_provider_id};
use crate::imds::gcp::GcpMetadata;
use crate::imds::{MetadataClient, probe, provider_of};
use reclaim_service::endpoints::Health;

/// Pause between retries while the provider cannot be found yet.
const CONNECT_RETRY: Duration = Duration::from_secs(5);

/// Finds the provider, retrying (never exiting) until it is known; `None` on shutdown.
pub async fn connect(
    config: &Config,
    client: &Client,
    health: &Health,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Arc<MetadataClient>> {
    let mut failures = 0u32;
    loop {
        health.loop_turned();
        match metadata_client(config, client).await {
            Ok(source) => {
                tracing::info!(provider = ?source.provider(), node = %config.node_name, "guarding node");
                return Some(Arc::new(source));
            }
            Err(e) => tracing::error!(error = %e, "cannot start guarding the node; retrying"),
        }
        failures += 1;
        tokio::select! {
            _ = shutdown.changed() => return None,
            _ = tokio::time::sleep(CONNECT_RETRY.min(config.poll_interval * failures)) => {}
        }
    }
}

async fn metadata_client(config: &Config, client: &Client) -> anyhow::Result<MetadataClient> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(config.metadata_timeout)
        .build()
        .map_err(|e| anyhow::anyhow!("building the HTTP client: {e}"))?;
    // The Node is read only when something is to be learnt from its providerID.
    let provider_id = match config.provider {
        ProviderChoice::Auto => Some(provider_id(config, client).await?),
        // Only a stand-in for Azure's compute/name: not worth waiting for.
        ProviderChoice::Azure if config.azure_vm_name.is_none() => {
            match provider_id(config, client).await {
                Ok(id) => Some(id),
                Err(e) => {
                    tracing::warn!(error = %e, "no VM name from the providerID; waiting for Azure's compute/name");
                    None
                }
            }
        }
        _ => None,
    };
    let provider = match config.provider {
        ProviderChoice::Aws => Provider::Aws,
        ProviderChoice::Azure => Provider::Azure,
        ProviderChoice::Gcp => Provider::Gcp,
        ProviderChoice::Auto => {
            let id = provider_id.clone().unwrap_or_default();
            match provider_of(&id) {
                    Some(provider) => provider,
                    None => probe(&http, &config.metadata_url, config.metadata_timeout).await.ok_or_else(|| {
                        anyhow::anyhow!(
                            "node {} has providerID {id:?}, which names no cloud, and no single metadata service (AWS, Azure, GCP) answered at {}; \
                             set --provider / RECLAIM_PROVIDER, and check that the agent can reach the metadata service (hostNetwork, --metadata-url)",
                            config.node_name,
                            config.metadata_url
                        )
                    })?,
                }
        }
    };
    let preemption_notice = SignedDuration::try_from(config.preemption_notice)?;
    Ok(match provider {
        Provider::Aws => MetadataClient::Aws(AwsImds::new(
            http,
            &config.metadata_url,
            config.metadata_timeout,
            config.imds_token_ttl,
        )),
        Provider::Azure => {
            let rules = AzureRules {
                vm_name: config.azure_vm_name.clone(),
                vm_name_hint: provider_id.as_deref().and_then(vm_name_from_provider_id),
                include_freeze: config.azure_freeze,
                preemption_notice,
            };
            MetadataClient::Azure(AzureEvents::new(
                http,
                &config.metadata_url,
                config.metadata_timeout,
                config.azure_first_call_timeout,
                rules,
            ))
        }
        Provider::Gcp => MetadataClient::Gcp(GcpMetadata::new(
            http,
            &config.metadata_url,
            config.metadata_timeout,
            config.gcp_wait,
            preemption_notice,
        )),
        Provider::Drill => anyhow::bail!("a drill is not a cloud; drills need no metadata client"),
    })
}

async fn provider_id(config: &Config, client: &Client) -> anyhow::Result<String> {
    let node = Api::<Node>::all(client.clone())
        .get(&config.node_name)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "reading node {} for its providerID: {e}; check NODE_NAME; {}",
                config.node_name,
                reclaim_service::client::hint(&e, "nodes get")
            )
        })?;
    Ok(node.spec.and_then(|s| s.provider_id).unwrap_or_default())
}
