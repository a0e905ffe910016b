//! Whether the watches work: each has listed what it watches, and none has been failing
//! without a break. `/readyz` waits for the first, `/healthz` fails without the second.
//! Pure: the caller passes the time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A watch failing without a break for this long makes the classifier unhealthy.
pub const FAILING_FOR: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct WatchState {
    listed: bool,
    failing_since: Option<Instant>,
}

/// The state of each watch, by name (`nodes`, `failed pods`, `interrupted pods`).
#[derive(Debug, Default)]
pub struct WatchProgress {
    watches: BTreeMap<&'static str, WatchState>,
}

impl WatchProgress {
    pub fn new(names: &[&'static str]) -> WatchProgress {
        WatchProgress {
            watches: names.iter().map(|n| (*n, WatchState::default())).collect(),
        }
    }

    /// The watch completed its initial list.
    pub fn listed(&mut self, name: &'static str) {
        let watch = self.watches.entry(name).or_default();
        watch.listed = true;
        watch.failing_since = None;
    }

    /// The watch delivered an event.
    pub fn answered(&mut self, name: &'static str) {
        self.watches.entry(name).or_default().failing_since = None;
    }

    /// The watch failed at `now`.
    pub fn failed(&mut self, name: &'static str, now: Instant) {
        self.watches
            .entry(name)
            .or_default()
            .failing_since
            .get_or_insert(now);
    }

    /// `Err` naming the watches that have not listed yet.
    pub fn ready(&self) -> Result<(), String> {
        let waiting: Vec<&str> = self
            .watches
            .iter()
            .filter(|(_, w)| !w.listed)
            .map(|(n, _)| *n)
            .collect();
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(format!("watches not listed yet: {}", waiting.join(", ")))
        }
    }

    /// The watches failing without a break for [`FAILING_FOR`] or more at `now`.
    pub fn stalled(&self, now: Instant) -> Vec<&'static str> {
        self.watches
            .iter()
            .filter(|(_, w)| {
                w.failing_since
                    .is_some_and(|since| now.saturating_duration_since(since) >= FAILING_FOR)
            })
            .map(|(n, _)| *n)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_every_watch_has_listed() {
        let mut progress = WatchProgress::new(&["nodes", "failed pods"]);
        assert_eq!(
            progress.ready(),
            Err("watches not listed yet: failed pods, nodes".into())
        );
        progress.listed("nodes");
        assert!(progress.ready().is_err());
        progress.listed("failed pods");
        assert_eq!(progress.ready(), Ok(()));
    }

    #[test]
    fn a_watch_failing_without_a_break_stalls_and_an_answer_clears_it() {
        let start = Instant::now();
        let mut progress = WatchProgress::new(&["nodes"]);
        progress.failed("nodes", start);
        progress.failed("nodes", start + Duration::from_secs(20));
        assert!(progress.stalled(start + Duration::from_secs(29)).is_empty());
        assert_eq!(progress.stalled(start + FAILING_FOR), ["nodes"]);
        progress.answered("nodes");
        assert!(progress.stalled(start + Duration::from_secs(60)).is_empty());
    }
}
