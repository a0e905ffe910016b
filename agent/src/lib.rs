//! reclaim-agent: guards one spot node. It turns a cloud interruption notice into a
//! taint, a cordon and a drain that finishes before the instance goes away.
//!
//! - [`imds`]: what each cloud's metadata service announces, path by path (I/O and parsing);
//! - [`polling`]: one poller per path, never backing off, never waiting on another path;
//! - [`observation`]: what the paths have said, remembered across polls (pure);
//! - [`decision`]: what to do about it, as pure rules;
//! - [`node`]: the Node changes (taint, cordon, annotations), never losing others' writes;
//! - [`drain`]: the deadline-aware drain, with its pure plan in [`drain::plan`];
//! - [`drill`]: a reclaim rehearsed through a node annotation (pure), which
//!   [`own_node`] watches for;
//! - [`record`]: the Interruption record of each notice, written beside the drain;
//! - [`eviction`], [`pods`]: Kubernetes access (client and Events: `reclaim_service`);
//! - [`connect`]: finding the provider and the Eviction API at start;
//! - [`guard`]: the loop tying them together; [`config`] and [`metrics`] around it
//!   (served by `reclaim_service::endpoints`).

pub mod config;
pub mod connect;
pub mod decision;
pub mod drain;
pub mod drill;
pub mod eviction;
pub mod guard;
pub mod identity;
pub mod imds;
pub mod metrics;
pub mod node;
pub mod observation;
pub mod own_node;
pub mod pods;
pub mod polling;
pub mod record;
