//! Leader election through a `coordination.k8s.io/v1` Lease: of several replicas, only
//! the holder writes verdicts; another takes over when the holder stops renewing.
//!
//! Every change to the Lease is a replace conditioned on the resourceVersion read, so
//! two replicas racing for an expired Lease cannot both win.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
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

pub fn lease_action(lease: Option<&Lease>, identity: &str, now: Timestamp) -> LeaseAction {
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
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    let expired = spec
        .renew_time
        .as_ref()
        .is_none_or(|t| t.0 + duration < now)
        || spec.holder_identity.as_deref().is_none_or(str::is_empty);
    if expired {
        LeaseAction::TakeOver
    } else {
        LeaseAction::Follow
    }
}

impl Election {
    /// Acquires or renews the Lease; `Ok(true)` when this replica holds it afterwards.
    pub async fn hold(&self, leases: &Api<Lease>) -> kube::Result<bool> {
        let now = Timestamp::now();
        let current = leases.get_opt(&self.lease_name).await?;
        let action = lease_action(current.as_ref(), &self.identity, now);
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
        let now: Timestamp = "2026-01-01T10:00:20Z".parse().unwrap();
        assert_eq!(lease_action(None, "a", now), LeaseAction::Create);
        assert_eq!(
            lease_action(Some(&lease("b", "2026-01-01T10:00:10.000000Z")), "a", now),
            LeaseAction::Follow
        );
        assert_eq!(
            lease_action(Some(&lease("b", "2026-01-01T10:00:04.000000Z")), "a", now),
            LeaseAction::TakeOver
        );
        assert_eq!(
            lease_action(Some(&lease("a", "2026-01-01T10:00:04.000000Z")), "a", now),
            LeaseAction::Renew
        );
        assert_eq!(
            lease_action(Some(&lease("", "2026-01-01T10:00:19.000000Z")), "a", now),
            LeaseAction::TakeOver,
            "a released Lease is taken over at once"
        );
    }
}
