//! reclaim-agent: guards one spot node. It turns a cloud interruption notice into a
//! taint, a cordon and a drain that finishes before the instance goes away.
//!
//! Kubernetes access lives behind a few functions per concept:
//! - [`client`]: a client that leaves retry decisions to the drain;
//! - [`node`]: taints and annotations on the guarded Node, without losing other writers' changes;
//! - [`pods`]: which pods run on the node;
//! - [`eviction`]: the Eviction API, in whichever group the server serves.

pub mod client;
pub mod eviction;
pub mod node;
pub mod pods;
