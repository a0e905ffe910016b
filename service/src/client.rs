//! The Kubernetes client both binaries use.
//!
//! kube's default client retries every 429 answer up to 15 times, with a backoff that
//! grows to minutes. From the eviction endpoint a 429 is a PodDisruptionBudget saying
//! "not now", and only the drain knows, against the deadline, whether to ask again or
//! to delete the pod: one blocked eviction must never stall the drain inside the
//! client. The classifier's writes are retried by its watches instead. So this client
//! has that retry layer turned off.

use kube::{Client, Config};

/// A client from `config` with kube's automatic 429/503 retries turned off.
pub fn client_from_config(mut config: Config) -> kube::Result<Client> {
    config.default_retry = false;
    Client::try_from(config)
}

/// A client from `KUBECONFIG` when set, else the in-cluster service account.
pub async fn default_client() -> anyhow::Result<Client> {
    let config = Config::infer().await?;
    Ok(client_from_config(config)?)
}
