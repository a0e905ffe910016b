//! Leader election through a `coordination.k8s.io/v1` Lease: of several replicas, only
//! the holder writes verdicts; another takes over when the holder stops renewing.
//!
//! Every change to the Lease is a replace conditioned on the resourceVersion read, so
//! two replicas racing for an expired Lease cannot both win. Expiry is judged from when
//! this replica last saw the Lease change ([`Observed`]), as client-go does.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, PostParams};
use serde_json::json;

#[derive(Debug, Clone)]
pub struct Election {
    pub lease_name: String,
    pub namespace: String,
    /// This replica's name (its pod name in a cluster).
    pub identity: String,
    /// A holder that has not renewed for this long has lost the Lease.
    pub lease_duration: Duration,
}

/// What this replica should do with the Lease as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseAction {
    Create,
    Renew,
    TakeOver,
    /// Another replica holds a live Lease.
    Follow,
}

/// When this replica last saw the Lease change (client-go's `observedTime`). A holder's
/// `renewTime` comes from the holder's clock; judging expiry from it lets clock skew
/// between nodes decide who writes. So expiry is judged from how long this replica has
/// seen the Lease unchanged, on its own clock.
#[derive(Debug, Default)]
pub struct Observed {
    resource_version: Option<String>,
    since: Option<Instant>,
}

impl Observed {
    /// Records `lease` as read at `now`; returns how long it has been seen unchanged.
    pub fn unchanged_for(&mut self, lease: Option<&Lease>, now: Instant) -> Duration {
        let version = lease.and_then(|l| l.metadata.resource_version.clone());
        if self.since.is_none() || version != self.resource_version {
            self.resource_version = version;
            self.since = Some(now);
        }
        now.saturating_duration_since(self.since.unwrap_or(now))
    }
}

/// What to do with `lease`, seen unchanged for `unchanged_for` by this replica.
pub fn lease_action(lease: Option<&Lease>, identity: &str, unchanged_for: Duration) -> LeaseAction {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return if lease.is_some() {
            LeaseAction::TakeOver
        } else {
            LeaseAction::Create
        };
    };
    if spec.holder_identity.as_deref() == Some(identity) {
        return LeaseAction::Renew;
    }
    let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(15).max(0) as u64);
    let expired =
        unchanged_for > duration || spec.holder_identity.as_deref().is_none_or(str::is_empty);
    if expired {
        LeaseAction::TakeOver
    } else {
        LeaseAction::Follow
    }
}

impl Election {
    /// Acquires or renews the Lease; `Ok(true)` when this replica holds it afterwards.
    pub async fn hold(
        &self,
        leases: &Api<Lease>,
        observed: &Mutex<Observed>,
    ) -> kube::Result<bool> {
        let now = Timestamp::now();
        let current = leases.get_opt(&self.lease_name).await?;
        let unchanged_for = observed
            .lock()
            .expect("observed lock")
            .unchanged_for(current.as_ref(), Instant::now());
        let action = lease_action(current.as_ref(), &self.identity, unchanged_for);
        let transitions = current
            .as_ref()
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.lease_transitions)
            .unwrap_or(0);
        let acquired = match action {
            LeaseAction::Follow => return Ok(false),
            LeaseAction::Renew => current
                .as_ref()
                .and_then(|l| l.spec.as_ref())
                .and_then(|s| s.acquire_time.clone()),
            LeaseAction::Create | LeaseAction::TakeOver => Some(MicroTime(now)),
        };
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {
                "name": self.lease_name,
                "namespace": self.namespace,
                "resourceVersion": current.as_ref().and_then(|l| l.metadata.resource_version.clone()),
            },
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.lease_duration.as_secs(),
                "acquireTime": acquired,
                "renewTime": MicroTime(now),
                "leaseTransitions": if action == LeaseAction::TakeOver { transitions + 1 } else { transitions },
            },
        }))
        .expect("the Lease manifest is well-formed");
        let written = match action {
            LeaseAction::Create => leases
                .create(&PostParams::default(), &lease)
                .await
                .map(|_| ()),
            _ => leases
                .replace(&self.lease_name, &PostParams::default(), &lease)
                .await
                .map(|_| ()),
        };
        match written {
            Ok(()) => Ok(true),
            // Another replica wrote the Lease first.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Election {
    /// Gives the Lease up, if this replica holds it, as client-go does on shutdown: no
    /// holder, so a follower takes over at its next look instead of after an expiry.
    pub async fn release(&self, leases: &Api<Lease>) -> kube::Result<()> {
        let Some(mut lease) = leases.get_opt(&self.lease_name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = Some(String::new());
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        leases
            .replace(&self.lease_name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed: &str) -> Lease {
        serde_json::from_value(json!({
            "metadata": {"name": "reclaim-classifier"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed},
        }))
        .unwrap()
    }

    #[test]
    fn a_live_lease_is_followed_an_expired_one_taken_over_and_ours_renewed() {
        let (fresh, stale) = (Duration::from_secs(10), Duration::from_secs(16));
        // The renewTime is far in the past on purpose: the holder's clock does not count.
        let old = "2020-01-01T10:00:10.000000Z";
        assert_eq!(lease_action(None, "a", fresh), LeaseAction::Create);
        assert_eq!(
            lease_action(Some(&lease("b", old)), "a", fresh),
            LeaseAction::Follow
        );
        assert_eq!(
            lease_action(Some(&lease("b", old)), "a", stale),
            LeaseAction::TakeOver
        );
        assert_eq!(
            lease_action(Some(&lease("a", old)), "a", stale),
            LeaseAction::Renew
        );
        assert_eq!(
            lease_action(Some(&lease("", old)), "a", Duration::ZERO),
            LeaseAction::TakeOver,
            "a released Lease is taken over at once"
        );
    }

    #[test]
    fn expiry_counts_from_when_this_replica_last_saw_the_lease_change() {
        let start = Instant::now();
        let mut observed = Observed::default();
        let mut lease = lease("b", "2020-01-01T10:00:10.000000Z");
        lease.metadata.resource_version = Some("7".into());
        assert_eq!(
            observed.unchanged_for(Some(&lease), start),
            Duration::ZERO,
            "first sight"
        );
        let later = start + Duration::from_secs(12);
        assert_eq!(
            observed.unchanged_for(Some(&lease), later),
            Duration::from_secs(12)
        );
        lease.metadata.resource_version = Some("8".into());
        assert_eq!(
            observed.unchanged_for(Some(&lease), later),
            Duration::ZERO,
            "renewed"
        );
    }
}
