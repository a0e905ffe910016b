//! Verdicts that could not be written yet, kept and retried with backoff, keyed by pod
//! UID. A Failed pod gets no further update to retry on, and a deleted pod never comes
//! back: without this, one write that fails while the API server is unreachable would
//! lose the verdict for good, and Airflow would treat a spot-caused failure as a real
//! one. Pure: the caller passes the time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;

/// The first retry comes after this; each failure doubles it.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Retries never wait longer than this.
const LONGEST_WAIT: Duration = Duration::from_secs(60);

/// Pending verdicts kept at most: anyone who may create pods can make failed or
/// labelled pods, and memory must not grow with them. Past this, work is dropped (and
/// counted) rather than kept.
pub const MAX_PENDING: usize = 10_000;

/// The work to do again: a dead pod as last seen, and when the classifier first saw it
/// dead, which a retry judges with (a pod without a finish time would otherwise look
/// killed at the retry's time, perhaps after its notice's window).
#[derive(Debug, Clone)]
pub struct Pending {
    pub pod: Pod,
    pub observed: Timestamp,
    pub work: Work,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// A Failed pod to judge and mark, with its owners (read afresh when retried).
    Failed,
    /// The last state of a deleted pod the agent marked: its owners to mark.
    Deleted,
}

/// Whether a failed write is worth retrying: a conflict, a timeout, an outage are; a
/// refusal that the same request will meet again (an admission policy's 422, RBAC's 403,
/// a 400) is not. A 404 is retried once: the pod written on may be gone (the pod garbage
/// collector deletes it right after marking it Failed) while its Job is not, and the
/// retry judges it from its last state for its owners; a 404 on that retry ends it.
pub fn permanent(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if matches!(status.code, 400 | 403 | 422))
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
    /// Newer work for the same pod replaces older. Returns false, keeping nothing, when
    /// [`MAX_PENDING`] other pods' work is waiting already.
    #[must_use]
    pub fn schedule(&mut self, uid: String, work: Pending, attempts: u32, now: Instant) -> bool {
        if self.entries.len() >= MAX_PENDING && !self.entries.contains_key(&uid) {
            return false;
        }
        let due = now + backoff(attempts);
        self.entries.insert(
            uid,
            Entry {
                work,
                attempts,
                due,
            },
        );
        true
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

    fn pending(uid: &str, work: Work) -> Pending {
        let mut pod = Pod::default();
        pod.metadata.uid = Some(uid.into());
        Pending {
            pod,
            observed: Timestamp::UNIX_EPOCH,
            work,
        }
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
        assert!(retries.schedule("a".into(), pending("a", Work::Failed), 1, start));
        assert!(retries.schedule("b".into(), pending("b", Work::Deleted), 3, start));
        assert!(retries.take_due(start).is_empty());
        let due = retries.take_due(start + Duration::from_secs(1));
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].0.as_str(), due[0].2), ("a", 1));
        assert_eq!(retries.len(), 1, "b waits 4 s");
        let (uid, work, attempts) = retries
            .take_due(start + Duration::from_secs(4))
            .pop()
            .unwrap();
        assert_eq!(work.work, Work::Deleted);
        assert_eq!((uid.as_str(), attempts), ("b", 3));
        assert!(retries.is_empty());
    }

    #[test]
    fn newer_work_for_a_pod_replaces_older() {
        let start = Instant::now();
        let mut retries = Retries::default();
        assert!(retries.schedule("a".into(), pending("a", Work::Failed), 5, start));
        assert!(retries.schedule("a".into(), pending("a", Work::Deleted), 1, start));
        assert_eq!(retries.len(), 1);
        let due = retries.take_due(start + Duration::from_secs(1));
        assert_eq!(due[0].1.work, Work::Deleted);
    }

    #[test]
    fn memory_is_bounded_but_work_already_kept_is_still_rescheduled() {
        let start = Instant::now();
        let mut retries = Retries::default();
        for i in 0..MAX_PENDING {
            assert!(retries.schedule(i.to_string(), pending("x", Work::Failed), 1, start));
        }
        assert!(!retries.schedule("one-more".into(), pending("y", Work::Failed), 1, start));
        assert_eq!(retries.len(), MAX_PENDING);
        assert!(retries.schedule("7".into(), pending("x", Work::Deleted), 2, start));
    }

    #[test]
    fn refusals_end_the_retries_and_the_rest_do_not() {
        let answer = |code: u16| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                ..Default::default()
            }))
        };
        assert!(permanent(&answer(422)));
        assert!(permanent(&answer(403)));
        for retried in [404, 409, 429, 500, 503, 504] {
            assert!(!permanent(&answer(retried)), "{retried}");
        }
    }
}
