//! The Kubernetes client both binaries use.
//!
//! kube's default client retries every 429 answer up to 15 times, with a backoff that
//! grows to minutes. From the eviction endpoint a 429 is a PodDisruptionBudget saying
//! "not now", and only the drain knows, against the deadline, whether to ask again or
//! to delete the pod: one blocked eviction must never stall the drain inside the
//! client. The classifier's writes are retried by its watches instead. So this client
//! has that retry layer turned off.
//!
//! Every client has connect and read timeouts: a connection black-holed by a load
//! balancer failover would otherwise hang a request forever.

use std::time::Duration;

use kube::{Client, Config};

/// Connect timeout of every client.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a request may wait for the server's next bytes. Short for the agent, which
/// makes only short requests; longer for the classifier's watches, which the server
/// keeps open with nothing to say until their own timeout.
#[derive(Debug, Clone, Copy)]
pub enum ReadTimeout {
    ShortRequests,
    Watches,
}

/// A client from `config` with kube's automatic 429/503 retries turned off and timeouts.
pub fn client_from_config(mut config: Config, read: ReadTimeout) -> kube::Result<Client> {
    config.default_retry = false;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(match read {
        ReadTimeout::ShortRequests => Duration::from_secs(15),
        // The classifier's watches ask the server to end them after 45 s.
        ReadTimeout::Watches => Duration::from_secs(60),
    });
    config.write_timeout = Some(Duration::from_secs(15));
    Client::try_from(config)
}

/// A client from `KUBECONFIG` when set, else the in-cluster service account.
pub async fn default_client(read: ReadTimeout) -> anyhow::Result<Client> {
    let config = Config::infer().await?;
    Ok(client_from_config(config, read)?)
}

/// What an operator should check after `error` from a request that needs `permission`
/// (e.g. `events create`): the RBAC only when the server said so, not when it could not
/// be reached.
pub fn hint(error: &kube::Error, permission: &str) -> String {
    match error {
        kube::Error::Api(status) if status.code == 401 => {
            "the API server does not accept the agent's credentials (ServiceAccount token)".into()
        }
        kube::Error::Api(status) if status.code == 403 => {
            format!("the RBAC does not allow it: grant {permission}")
        }
        kube::Error::Api(status) if status.code == 429 || status.code >= 500 => {
            "the API server is overloaded or failing; retried".into()
        }
        kube::Error::Api(_) => "the API server refused the request; see the error".into(),
        _ => "the API server is unreachable or did not answer in time (network, load balancer); retried".into(),
    }
}
