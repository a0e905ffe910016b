//! What the metadata service has said, path by path, remembered across polls.
//!
//! Each path is polled on its own (`crate::polling`), so its answers arrive one at a
//! time. This module keeps the latest successful answer of every path, so that a path
//! that fails keeps what it last said instead of dropping it (a failing path can neither
//! raise nor withdraw a notice), and it measures how long an event has been absent from
//! its path's successful answers: a notice missing from one or two answers is a flap,
//! not a withdrawal (`crate::decision`). Pure: no I/O, no clock of its own.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};

use crate::imds::{Announced, MetadataPath, PathReport};

/// Event ids not announced for this long are forgotten.
const FORGET_AFTER: SignedDuration = SignedDuration::from_hours(24);

/// How long an event has been missing from its path's successful answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Absence {
    /// Since when (its last sighting, or the start of the path's current run of
    /// successful polls, whichever is later).
    pub since: Timestamp,
    /// Successful polls of the path since then, none of which announced it.
    pub polls: u64,
}

/// A path whose latest poll failed (or that has not answered yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failing {
    pub path: MetadataPath,
    /// The latest error's label (`timeout`, `server_error`, ...); `None`: not polled yet.
    pub error: Option<&'static str>,
    /// Failed polls in a row.
    pub count: u64,
}

#[derive(Debug, Clone, Default)]
struct PathState {
    /// The latest successful answer.
    report: Option<PathReport>,
    /// Failed polls since the latest success (or since the start), and the last error.
    failures: u64,
    last_error: Option<&'static str>,
    /// Successful polls so far, and when the latest was.
    ok_polls: u64,
    last_ok_at: Option<Timestamp>,
    /// Start of the current run of successful polls: when, and `ok_polls` before it.
    streak_start: Option<(Timestamp, u64)>,
    /// When, and at which successful poll, each event was last announced.
    seen: BTreeMap<String, (Timestamp, u64)>,
}

/// The latest answers of every path the agent polls.
#[derive(Debug, Clone, Default)]
pub struct Sightings {
    paths: BTreeMap<MetadataPath, PathState>,
}

impl Sightings {
    pub fn new(paths: &[MetadataPath]) -> Sightings {
        Sightings {
            paths: paths.iter().map(|p| (*p, PathState::default())).collect(),
        }
    }

    /// Records one poll of `path` at `at`: its answer, or the label of its error.
    /// Returns whether what is announced or ended changed.
    pub fn record(
        &mut self,
        path: MetadataPath,
        answer: Result<PathReport, &'static str>,
        at: Timestamp,
    ) -> bool {
        let state = self.paths.entry(path).or_default();
        match answer {
            Ok(report) => {
                if state.failures > 0 || state.streak_start.is_none() {
                    state.streak_start = Some((at, state.ok_polls));
                }
                state.failures = 0;
                state.ok_polls += 1;
                state.last_ok_at = Some(at);
                for event in &report.announced {
                    state
                        .seen
                        .insert(event.event_id.clone(), (at, state.ok_polls));
                }
                state
                    .seen
                    .retain(|_, (seen, _)| at.duration_since(*seen) < FORGET_AFTER);
                let changed = state.report.as_ref() != Some(&report);
                state.report = Some(report);
                changed
            }
            Err(label) => {
                state.failures += 1;
                state.last_error = Some(label);
                false
            }
        }
    }

    /// Every event announced by the latest successful answer of its path (including
    /// paths failing now, whose last word still stands).
    pub fn announced(&self) -> Vec<Announced> {
        self.reports()
            .flat_map(|r| r.announced.iter().cloned())
            .collect()
    }

    /// Every event explicitly ended by the latest successful answer of its path.
    pub fn ended(&self) -> Vec<String> {
        self.reports()
            .flat_map(|r| r.ended.iter().cloned())
            .collect()
    }

    fn reports(&self) -> impl Iterator<Item = &PathReport> {
        self.paths.values().filter_map(|s| s.report.as_ref())
    }

    /// How long `event_id` has been missing from `path`'s answers; `None` while its
    /// latest answer announces it, or while the path fails or has not answered (then
    /// nobody knows).
    pub fn absence(&self, path: MetadataPath, event_id: &str) -> Option<Absence> {
        let state = self.paths.get(&path)?;
        let report = state.report.as_ref()?;
        let (streak_at, streak_polls) = state.streak_start?;
        if state.failures > 0 || report.announced.iter().any(|a| a.event_id == event_id) {
            return None;
        }
        let (since, polls_then) = match state.seen.get(event_id) {
            Some(&(seen_at, seen_polls)) if seen_at >= streak_at => (seen_at, seen_polls),
            _ => (streak_at, streak_polls),
        };
        Some(Absence {
            since,
            polls: state.ok_polls - polls_then,
        })
    }

    /// When every path had last answered: the oldest path's last success (paths polled
    /// only once count once they have answered); `None` until each has.
    pub fn all_answered_at(&self) -> Option<Timestamp> {
        self.paths
            .iter()
            .filter(|(path, s)| !(path.once() && s.ok_polls > 0))
            .map(|(_, s)| s.last_ok_at)
            .min()
            .unwrap_or(None)
    }

    /// The paths whose latest poll failed or that have not answered yet.
    pub fn failing(&self) -> Vec<Failing> {
        self.paths
            .iter()
            .filter(|(_, s)| s.failures > 0 || s.ok_polls == 0)
            .map(|(path, s)| Failing {
                path: *path,
                error: s.last_error.filter(|_| s.failures > 0),
                count: s.failures,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reclaim_model::NoticeKind;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn spot(id: &str) -> PathReport {
        PathReport {
            announced: vec![Announced {
                kind: NoticeKind::SpotInterruption,
                event_id: id.into(),
                notice_time: at(0),
                deadline: Some(at(120)),
            }],
            ended: Vec::new(),
        }
    }

    const SPOT: MetadataPath = MetadataPath::AwsSpot;
    const MAINTENANCE: MetadataPath = MetadataPath::AwsMaintenance;

    #[test]
    fn a_failing_path_keeps_its_last_word_and_never_hides_another() {
        let mut s = Sightings::new(&[SPOT, MAINTENANCE]);
        assert_eq!(s.failing().len(), 2, "nothing has answered yet");
        for second in 0..5 {
            s.record(MAINTENANCE, Err("server_error"), at(second));
        }
        assert!(
            s.record(SPOT, Ok(spot("a")), at(5)),
            "a new notice is a change"
        );
        assert_eq!(s.announced()[0].event_id, "a");
        assert_eq!(
            s.failing(),
            [Failing {
                path: MAINTENANCE,
                error: Some("server_error"),
                count: 5
            }]
        );
        s.record(SPOT, Err("timeout"), at(6));
        assert_eq!(s.announced().len(), 1, "a failure withdraws nothing");
        assert_eq!(s.absence(SPOT, "a"), None);
    }

    #[test]
    fn absence_counts_successful_polls_since_the_last_sighting_and_restarts_after_a_failure() {
        let mut s = Sightings::new(&[SPOT]);
        s.record(SPOT, Ok(spot("a")), at(0));
        assert_eq!(s.absence(SPOT, "a"), None, "announced");
        s.record(SPOT, Ok(PathReport::default()), at(1));
        s.record(SPOT, Ok(PathReport::default()), at(2));
        assert_eq!(
            s.absence(SPOT, "a"),
            Some(Absence {
                since: at(0),
                polls: 2
            })
        );
        s.record(SPOT, Err("server_error"), at(3));
        assert_eq!(s.absence(SPOT, "a"), None, "unknown while failing");
        s.record(SPOT, Ok(PathReport::default()), at(4));
        assert_eq!(
            s.absence(SPOT, "a"),
            Some(Absence {
                since: at(4),
                polls: 1
            }),
            "a failure breaks the run of successful polls"
        );
        s.record(SPOT, Ok(spot("a")), at(5));
        assert_eq!(s.absence(SPOT, "a"), None, "back: the flap is over");
    }

    #[test]
    fn an_event_never_seen_by_this_process_is_absent_since_the_first_answer() {
        let mut s = Sightings::new(&[SPOT]);
        assert_eq!(s.absence(SPOT, "restored"), None, "no answer yet");
        s.record(SPOT, Ok(PathReport::default()), at(10));
        s.record(SPOT, Ok(PathReport::default()), at(11));
        assert_eq!(
            s.absence(SPOT, "restored"),
            Some(Absence {
                since: at(10),
                polls: 2
            })
        );
    }

    #[test]
    fn only_a_change_of_what_is_said_counts_as_a_change() {
        let mut s = Sightings::new(&[SPOT]);
        assert!(s.record(SPOT, Ok(PathReport::default()), at(0)));
        assert!(!s.record(SPOT, Ok(PathReport::default()), at(1)));
        assert!(s.record(SPOT, Ok(spot("a")), at(2)));
        assert!(!s.record(SPOT, Ok(spot("a")), at(3)));
        assert!(!s.record(SPOT, Err("garbage"), at(4)));
        let ended = PathReport {
            announced: Vec::new(),
            ended: vec!["a".into()],
        };
        assert!(s.record(SPOT, Ok(ended), at(5)));
        assert_eq!(s.ended(), ["a"]);
    }
}
