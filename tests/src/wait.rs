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
    eventually_some(timeout, what, || {
        let checked = check();
        async move { Ok(checked.await?.then_some(())) }
    })
    .await
}

/// Polls `find` every 100 ms until it finds something, and returns it; fails after
/// `timeout`, naming `what`.
pub async fn eventually_some<T, F, Fut>(timeout: Duration, what: &str, mut find: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(found) = find().await? {
            return Ok(found);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("timed out after {timeout:?} waiting for {what}")
}
