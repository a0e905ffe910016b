//! Waiting for outcomes: tests poll what the system reports, with generous timeouts,
//! and never assert how fast it got there (these machines are shared and small).

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// Polls `check` every 100 ms until it holds; fails after `timeout`, naming `what`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check().await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("timed out after {timeout:?} waiting for {what}")
}
