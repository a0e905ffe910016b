//! The leader loop: the controller runs only while this replica holds the Lease, and
//! stops writing as soon as a renewal fails or does not answer within the renew
//! deadline; the other replicas follow and wait.

use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use tokio::sync::watch as signal;

use std::time::Duration;

use crate::controller::{Memory, Settings, run};
use crate::leader::{Election, Observed};

/// How often a follower looks at the Lease (client-go's retry period), so that a
/// released Lease is taken over within about this long.
const FOLLOWER_RETRY: Duration = Duration::from_secs(2);
/// The release on shutdown gets this long; then the Lease simply expires.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs the controller while this replica holds the Lease; follows otherwise. Runs
/// until `shutdown` turns true; a leader releases the Lease then.
pub async fn run_elected(
    client: Client,
    settings: Settings,
    election: Election,
    mut shutdown: signal::Receiver<bool>,
) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &election.namespace);
    let memory = Memory::new(settings.retention);
    let renew_every = election.lease_duration / 3;
    // As client-go's renew deadline: a renewal that has not answered by then (a
    // black-holed connection) ends the leadership, so an old leader never writes after a
    // follower may have taken over.
    let renew_deadline = election.lease_duration * 2 / 3;
    let observed = std::sync::Mutex::new(Observed::default());
    let hold = |leases: Api<Lease>| {
        let (election, observed) = (&election, &observed);
        async move {
            match tokio::time::timeout(renew_deadline, election.hold(&leases, observed)).await {
                Ok(held) => held,
                Err(_) => Err(kube::Error::Service(
                    format!("no answer within the renew deadline ({renew_deadline:?})").into(),
                )),
            }
        }
    };
    loop {
        match hold(leases.clone()).await {
            Ok(true) => {
                tracing::info!(identity = %election.identity, lease = %election.lease_name, "leading: writing verdicts");
                settings.metrics.leading(true);
                let lost = async {
                    loop {
                        tokio::time::sleep(renew_every).await;
                        match hold(leases.clone()).await {
                            Ok(true) => {}
                            Ok(false) => {
                                return tracing::warn!(
                                    "another replica holds the Lease; no longer writing"
                                );
                            }
                            Err(e) => {
                                return tracing::warn!(error = %e, "could not renew the Lease; no longer writing until it is held again");
                            }
                        }
                    }
                };
                let run_shutdown = shutdown.clone();
                // `run` ends only on shutdown, as the first branch does: either way, stop.
                let stopping = tokio::select! {
                    _ = shutdown.changed() => true,
                    _ = run(client.clone(), &settings, &election.identity, &memory, run_shutdown) => true,
                    _ = lost => false,
                };
                settings.metrics.leading(false);
                if stopping {
                    // Hand over now rather than after a whole lease duration.
                    match tokio::time::timeout(RELEASE_TIMEOUT, election.release(&leases)).await {
                        Ok(Ok(())) => tracing::info!("released the Lease"),
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "could not release the Lease; a follower takes over when it expires")
                        }
                        Err(_) => tracing::warn!(
                            "releasing the Lease did not answer in time; a follower takes over when it expires"
                        ),
                    }
                    return;
                }
            }
            // A follower contending normally is ready: it takes over when it must.
            Ok(false) => settings.health.set_ready(),
            Err(e) => {
                settings
                    .health
                    .set_not_ready(format!("cannot read the Lease: {e}"));
                tracing::warn!(error = %e, hint = %reclaim_service::client::hint(&e, "leases get/create/update"), "could not read the Lease; retrying")
            }
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(renew_every.min(FOLLOWER_RETRY)) => {}
        }
    }
}
