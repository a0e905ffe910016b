//! The classifier's verdict as written on failed pods, Jobs and SparkApplications.

use serde::{Deserialize, Serialize};

use crate::{NoticeKind, Provider};

/// The value of `reclaim.dev/cause` for a failure caused by a spot interruption.
pub const SPOT_INTERRUPTION_CAUSE: &str = "spot-interruption";

/// The `reclaim.dev/evidence` annotation: why the classifier called a failure spot-caused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// The node that carried the interruption notice.
    pub node: String,
    pub notice_kind: NoticeKind,
    /// Who announced the notice: a cloud, or `drill` for a rehearsal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Provider>,
    /// The notice's event id; with the node it names the `Interruption` record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// When the provider issued the notice (RFC 3339).
    pub notice_time: jiff::Timestamp,
    /// The exit code of the killed container, when it reported one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The container's termination reason (`Error`), when it reported one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The signals that matched, e.g. `pod-annotation`, `exit-137`, `pod-deleted`.
    pub signals: Vec<String>,
    /// The failed pod (`namespace/name`) the verdict was drawn from: on a Job, a driver
    /// or a SparkApplication, the pod that actually died.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// When that pod died (its last container's finish, else when the classifier saw it
    /// dead): an owner's verdict describes its latest failure, so a later one replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<jiff::Timestamp>,
}

/// The value of `reclaim.dev/cause` on an object whose latest failure was its own (an
/// out-of-memory kill, an error exit), written only over an earlier spot-caused verdict.
pub const OWN_FAILURE_CAUSE: &str = "own-failure";

/// The `reclaim.dev/evidence` annotation that goes with [`OWN_FAILURE_CAUSE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnFailure {
    /// The failed pod (`namespace/name`).
    pub pod: String,
    /// When it died.
    pub failed_at: jiff::Timestamp,
    /// Why the failure was its own, in a sentence.
    pub why: String,
}
