//! Runs the local control plane until SIGINT or SIGTERM, for kubectl and manual experiments.
//!
//! Prints the kubeconfig to use and the components' process ids, then waits. On the
//! signal it exits normally, which stops etcd, kube-apiserver and kube-controller-manager
//! and removes their data.

use reclaim_testbed::ControlPlane;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

fn main() -> anyhow::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    let cp = ControlPlane::shared();
    println!("{cp}");
    println!("export KUBECONFIG={}", cp.kubeconfig.display());
    let pids: Vec<String> = cp.component_pids().iter().map(u32::to_string).collect();
    println!("pids: {}", pids.join(" "));
    println!("dir: {}", cp.dir.display());
    println!("ready; Ctrl-C stops it");
    signals.forever().next();
    Ok(())
}
