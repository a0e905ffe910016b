//! Verdicts that could not be written yet, kept and retried with backoff, keyed by pod
//! UID. A Failed pod gets no further update to retry on, and a deleted pod never comes
//! back: without this, one write that fails while the API server is unreachable would
//! lose the verdict for good, and Airflow would treat a spot-caused failure as a real
//! one. Pure: the caller passes the time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

/// The first retry comes after this; each failure doubles it.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Retries never wait longer than this.
const LONGEST_WAIT: Duration = Duration::from_secs(60);

/// The work to do again.
#[derive(Debug, Clone)]
pub enum Pending {
    /// A Failed pod to judge and mark, with its owners (read afresh when retried).
    Failed(Pod),
    /// The last state of a deleted pod the agent marked: its owners to mark.
    Deleted(Pod),
}

#[derive(Debug)]
struct Entry {
    work: Pending,
    attempts: u32,
    due: Instant,
}

/// The pending verdicts, by pod UID.
#[derive(Debug, Default)]
pub struct Retries {
    entries: HashMap<String, Entry>,
}

/// The wait before the retry that follows `attempts` failed attempts.
pub fn backoff(attempts: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(1 << attempts.saturating_sub(1).min(16))
        .min(LONGEST_WAIT)
}

impl Retries {
    /// `work` for pod `uid` failed for the `attempts`-th time at `now`: retry it later.
    /// Newer work for the same pod replaces older.
    pub fn schedule(&mut self, uid: String, work: Pending, attempts: u32, now: Instant) {
        let due = now + backoff(attempts);
        self.entries.insert(
            uid,
            Entry {
                work,
                attempts,
                due,
            },
        );
    }

    /// Takes out the work due at `now`, with how many attempts it has failed so far.
    pub fn take_due(&mut self, now: Instant) -> Vec<(String, Pending, u32)> {
        let due: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.due <= now)
            .map(|(uid, _)| uid.clone())
            .collect();
        due.into_iter()
            .filter_map(|uid| {
                let entry = self.entries.remove(&uid)?;
                Some((uid, entry.work, entry.attempts))
            })
            .collect()
    }

    /// Verdicts still waiting to be written.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.uid = Some(uid.into());
        pod
    }

    #[test]
    fn the_wait_doubles_from_one_second_up_to_a_minute() {
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(1000), LONGEST_WAIT);
    }

    #[test]
    fn work_comes_back_when_due_with_its_attempts_and_only_once() {
        let start = Instant::now();
        let mut retries = Retries::default();
        retries.schedule("a".into(), Pending::Failed(pod("a")), 1, start);
        retries.schedule("b".into(), Pending::Deleted(pod("b")), 3, start);
        assert!(retries.take_due(start).is_empty());
        let due = retries.take_due(start + Duration::from_secs(1));
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].0.as_str(), due[0].2), ("a", 1));
        assert_eq!(retries.len(), 1, "b waits 4 s");
        let (uid, work, attempts) = retries
            .take_due(start + Duration::from_secs(4))
            .pop()
            .unwrap();
        assert!(matches!(work, Pending::Deleted(_)));
        assert_eq!((uid.as_str(), attempts), ("b", 3));
        assert!(retries.is_empty());
    }

    #[test]
    fn newer_work_for_a_pod_replaces_older() {
        let start = Instant::now();
        let mut retries = Retries::default();
        retries.schedule("a".into(), Pending::Failed(pod("a")), 5, start);
        retries.schedule("a".into(), Pending::Deleted(pod("a")), 1, start);
        assert_eq!(retries.len(), 1);
        let due = retries.take_due(start + Duration::from_secs(1));
        assert!(matches!(due[0].1, Pending::Deleted(_)));
    }
}
