//! reclaim-classifier: decides whether a failed job was killed by a spot interruption,
//! so Airflow can retry exactly those.
//!
//! - [`verdict`]: the rules, as pure functions over a pod's status and its node's notice;
//! - [`notices`]: which nodes carried a notice, remembered beyond the node's life;
//! - [`judged`]: failed pods already judged, so their later updates are not judged again;
//! - [`last_seen`]: the labelled pods as last seen, so a deletion missed in an outage is found;
//! - [`owners`]: which objects outlive a failed pod (Job, Spark driver, SparkApplication);
//! - [`controller`]: the watches, and the judging of each failed pod;
//! - [`writer`]: the writes of the verdict on pods and their owners, and their Events;
//! - [`record`]: the marked objects added to each notice's Interruption record, and
//!   records past their retention deleted;
//! - [`retries`]: verdicts whose write failed, retried with backoff until written;
//! - [`progress`]: whether the watches have listed and keep working (`/readyz`, `/healthz`);
//! - [`elected`]: the leader loop, running the controller while the Lease is held;
//! - [`leader`]: a Lease, so that of several replicas only one writes;
//! - [`metrics`]: verdicts by outcome and time to a verdict.

pub mod controller;
pub mod elected;
pub mod judged;
pub mod last_seen;
pub mod latest;
pub mod leader;
pub mod metrics;
pub mod notices;
pub mod owners;
pub mod progress;
pub mod record;
pub mod retries;
pub mod verdict;
pub mod writer;
