//! The real Reclaim binaries as child processes (demo and benchmarks): started with the
//! local control plane's kubeconfig and their endpoints on a free port, read through
//! `/metrics` and `/proc`, killed when dropped.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::ControlPlane;

pub struct ReclaimProcess {
    pub child: std::process::Child,
    /// Where its `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics_url: String,
}

impl ReclaimProcess {
    /// Starts `binary` from next to the current executable (cargo puts all of a
    /// workspace's binaries in one directory), with its logs to `log`.
    pub fn spawn(binary: &str, args: &[&str], log: std::process::Stdio) -> Result<ReclaimProcess> {
        ReclaimProcess::spawn_with(binary, args, log, &ControlPlane::shared().kubeconfig)
    }

    /// As [`ReclaimProcess::spawn`], with the credentials of `kubeconfig`.
    pub fn spawn_with(
        binary: &str,
        args: &[&str],
        log: std::process::Stdio,
        kubeconfig: &std::path::Path,
    ) -> Result<ReclaimProcess> {
        let path = std::env::current_exe()?.with_file_name(binary);
        anyhow::ensure!(
            path.is_file(),
            "{} not found: build it first (cargo build --bins, with the same profile)",
            path.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let metrics_addr = format!("127.0.0.1:{port}");
        let child = std::process::Command::new(path)
            .args(args)
            .args(["--metrics-addr", &metrics_addr])
            .env("KUBECONFIG", kubeconfig)
            .stdout(log)
            .stderr(std::process::Stdio::inherit())
            .spawn()?;
        Ok(ReclaimProcess {
            child,
            metrics_url: format!("http://{metrics_addr}"),
        })
    }

    /// The real `reclaim-classifier`, electing itself through a Lease in `namespace` and
    /// classifying only that namespace's pods.
    /// `extra` are more flags.
    pub fn classifier(
        namespace: &str,
        extra: &[&str],
        log: std::process::Stdio,
    ) -> Result<ReclaimProcess> {
        let mut args = vec![
            "--namespace",
            namespace,
            "--lease-namespace",
            namespace,
            "--identity",
            "reclaim-classifier-0",
        ];
        args.extend_from_slice(extra);
        ReclaimProcess::spawn("reclaim-classifier", &args, log)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `/readyz` answers 200.
    pub async fn ready(&self, http: &reqwest::Client) -> Result<()> {
        let url = format!("{}/readyz", self.metrics_url);
        crate::eventually(Duration::from_secs(60), "/readyz", || async {
            Ok(http
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success()))
        })
        .await
    }

    /// Its whole `/metrics` text.
    pub async fn metrics_text(&self, http: &reqwest::Client) -> Result<String> {
        Ok(http
            .get(format!("{}/metrics", self.metrics_url))
            .send()
            .await?
            .text()
            .await?)
    }

    /// The value of one sample of its `/metrics`, e.g.
    /// `reclaim_classifier_verdicts_total{verdict="spot_caused"}`; 0 when absent.
    pub async fn metric(&self, http: &reqwest::Client, sample: &str) -> Result<f64> {
        let text = http
            .get(format!("{}/metrics", self.metrics_url))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0))
    }

    /// A memory figure of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`, `RssAnon:`...) in MiB.
    pub fn memory_mib(&self, key: &str) -> Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .with_context(|| format!("{key} missing"))?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .unwrap_or("0")
            .parse::<f64>()?
            / 1024.0)
    }

    /// CPU time used so far (user + system), in clock ticks.
    pub fn cpu_ticks(&self) -> Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
    }
}

impl Drop for ReclaimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where cargo put the workspace's binaries (`target/<profile>`), from a test binary in its
/// `deps/`; fails, saying how to build it, when `binary` is not there.
pub fn workspace_binaries(binary: &str) -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let deps = exe.parent().context("the test's directory")?;
    let dir = deps
        .parent()
        .context("the profile's directory")?
        .to_path_buf();
    anyhow::ensure!(
        dir.join(binary).is_file(),
        "{} has no {binary}: build the workspace's binaries first (cargo build --workspace --bins)",
        dir.display()
    );
    Ok(dir)
}
