//! The vocabulary every part of Reclaim shares.
//!
//! The agent writes these keys and records on Nodes and Pods; the classifier and the
//! Airflow integration read them back. Defining them once here is what keeps the
//! writers and the readers from drifting apart.

pub mod interruption;
pub mod keys;
pub mod notice;
pub mod placement;
pub mod verdict;

pub use notice::{Notice, NoticeKind, PodInterruption, Provider};
pub use placement::Placement;
pub use verdict::Evidence;

/// `namespace/name`: how logs, records and evidence name a namespaced object.
pub fn namespaced_name(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}
