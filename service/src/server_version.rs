//! The Kubernetes releases Reclaim supports, and the check both binaries make before they
//! start: a server older than the floor would refuse the agent's every eviction with a
//! 400 (it needs `policy/v1` Evictions, node-scoped tokens, the server's own
//! `DisruptionTarget` condition), so it gets one clear error at start instead.
//!
//! The floor is the oldest minor still in standard support on one of EKS, AKS and GKE on
//! the day it was last set (see the README's "Supported Kubernetes"); the ceiling is the
//! release the test suite runs. A newer server than the ceiling is accepted: the APIs used
//! are GA and stable.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::version::Info;
use kube::Client;
use tokio::sync::watch;

use crate::endpoints::Health;

/// A Kubernetes minor release, `1.34`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Minor {
    pub major: u32,
    pub minor: u32,
}

impl std::fmt::Display for Minor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The oldest release supported.
pub const OLDEST_SUPPORTED: Minor = Minor {
    major: 1,
    minor: 34,
};
/// The release the test suite, the demo and the benchmarks run against.
pub const NEWEST_TESTED: Minor = Minor {
    major: 1,
    minor: 37,
};

/// Pause between attempts to read the version while the server cannot be reached.
const RETRY: Duration = Duration::from_secs(5);

/// The minor release a server reports. Managed clusters decorate the version
/// (`v1.35.2-eks-4f5a`, minor `"35+"` on GKE and EKS), so the leading digits of
/// gitVersion are read first, then major/minor; `None` when neither holds a number.
pub fn minor_of(info: &Info) -> Option<Minor> {
    let from_git = || {
        let mut parts = info.git_version.strip_prefix('v')?.splitn(3, '.');
        Some(Minor {
            major: leading_number(parts.next()?)?,
            minor: leading_number(parts.next()?)?,
        })
    };
    from_git().or_else(|| {
        Some(Minor {
            major: leading_number(&info.major)?,
            minor: leading_number(&info.minor)?,
        })
    })
}

/// The number at the start of `text` ("35+" is 35); `None` when there is none or it
/// does not fit.
fn leading_number(text: &str) -> Option<u32> {
    let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    text[..digits].parse().ok()
}

/// Why a server may not be used.
#[derive(Debug, thiserror::Error)]
#[error(
    "the Kubernetes API server is {found} ({git_version}), older than the oldest supported release {OLDEST_SUPPORTED}; upgrade the cluster or run an older Reclaim"
)]
pub struct TooOld {
    pub found: Minor,
    pub git_version: String,
}

/// Is `info` a release Reclaim supports? One it cannot read is let through (logged by the
/// caller): a distribution's odd version string must not keep a node unguarded.
pub fn judge(info: &Info) -> Result<Option<Minor>, TooOld> {
    match minor_of(info) {
        Some(found) if found < OLDEST_SUPPORTED => Err(TooOld {
            found,
            git_version: info.git_version.clone(),
        }),
        found => Ok(found),
    }
}

/// Reads the server's version until it answers (retrying every few seconds, with each
/// request bounded by the client's timeout), then fails if it is older than supported.
/// Each attempt counts as a turn of the process's loop on `/healthz`: waiting for an
/// unreachable API server is not a hang. Returns `Ok(false)` when `shutdown` came first.
pub async fn wait_until_supported(
    client: &Client,
    health: &Health,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<bool, TooOld> {
    loop {
        health.loop_turned();
        match client.apiserver_version().await {
            Ok(info) => {
                match judge(&info)? {
                    Some(minor) => {
                        tracing::info!(server = %info.git_version, %minor, oldest_supported = %OLDEST_SUPPORTED, "Kubernetes API server supported")
                    }
                    None => {
                        tracing::warn!(server = %info.git_version, major = %info.major, minor = %info.minor, "cannot read the server's release; assuming it is supported")
                    }
                }
                return Ok(true);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the Kubernetes API server's version; retrying")
            }
        }
        tokio::select! {
            _ = shutdown.changed() => return Ok(false),
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(git_version: &str, major: &str, minor: &str) -> Info {
        Info {
            git_version: git_version.into(),
            major: major.into(),
            minor: minor.into(),
            ..Info::default()
        }
    }

    #[test]
    fn managed_clusters_decorated_versions_are_read() {
        let eks = info("v1.35.2-eks-4f5a9b1", "1", "35+");
        assert_eq!(
            minor_of(&eks),
            Some(Minor {
                major: 1,
                minor: 35
            })
        );
        let gke = info("v1.34.1-gke.1829001", "1", "34");
        assert_eq!(judge(&gke).unwrap().map(|m| m.minor), Some(34));
        // No gitVersion: the major and minor fields.
        let bare = info("", "1", "37+");
        assert_eq!(minor_of(&bare).map(|m| m.minor), Some(37));
    }

    #[test]
    fn older_than_the_floor_is_refused_and_unreadable_is_let_through() {
        let old = info("v1.20.2", "1", "20");
        let refused = judge(&old).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("older than the oldest supported release 1.34")
        );
        assert_eq!(
            judge(&info("v2.0.0", "2", "0")).unwrap().map(|m| m.major),
            Some(2)
        );
        assert!(judge(&info("custom", "", "")).unwrap().is_none());
        // Absurd numbers do not overflow; they are unreadable, not a panic.
        assert!(minor_of(&info("v99999999999999999999.1.0", "x", "y")).is_none());
    }
}
