//! The test bed: what the end-to-end tests and the demo stand on.
//!
//! - [`control_plane`]: a real etcd + kube-apiserver (RBAC on, HTTPS) + kube-controller-manager
//!   on loopback, one per process, torn down when the process ends however it ends;
//! - [`clouds`]: a spot interruption staged on AWS, Azure or GCP;
//! - [`agent`]: the real agent loop, run in-process so tests can kill it mid-drain;
//! - [`process`]: the real binaries as child processes, for the demo and the benchmarks;
//! - [`fault_proxy`]: a TCP proxy that refuses or black-holes a binary's API connections;
//! - [`throttle`]: API Priority and Fairness rejecting a ServiceAccount's evictions (429);
//! - [`kubelet`]: plays the kubelet the control plane does not have (nodes, running pods,
//!   graceful deletions, container exits, DaemonSet and mirror pods, disruption budgets).

pub mod agent;
pub mod clouds;
pub mod control_plane;
pub mod fault_proxy;
pub mod kubelet;
pub mod process;
pub mod spark;
pub mod throttle;
pub mod wait;

pub use control_plane::ControlPlane;
pub use kubelet::{TestKubelet, TestNode, TestPod};
pub use wait::{eventually, eventually_some};
