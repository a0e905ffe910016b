//! reclaim-classifier: decides whether a failed job was killed by a spot interruption,
//! so Airflow can retry exactly those.
//!
//! - [`verdict`]: the rules, as pure functions over a pod's status and its node's notice.

pub mod verdict;
