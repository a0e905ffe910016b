//! Drills: a reclaim rehearsed on a chosen node, on any cloud, with no cloud tooling.
//!
//! `kubectl annotate node NODE reclaim.dev/drill=spot-interruption` announces a spot
//! interruption with the cloud's usual notice (2 minutes on AWS, 30 seconds on Azure and
//! GCP); `reclaim.dev/drill=spot-interruption,lead=45s` sets another. The agent treats it
//! as a real notice from the provider `drill`, so that everything written about it says
//! it was a drill. Removing the annotation cancels it, at once, like a notice the provider
//! says is over. A real notice always wins over a drill.
//!
//! This module is pure: it turns the annotation's value into the announced event, and
//! keeps that event (its id and deadline) for as long as the value stays the same.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use reclaim_model::{Notice, NoticeKind, Provider};

use crate::imds::Announced;

/// The shortest lead accepted: less leaves no time to drain past the safety margin.
pub const MIN_LEAD: Duration = Duration::from_secs(15);

/// The longest lead accepted.
pub const MAX_LEAD: Duration = Duration::from_secs(3600);

/// The lead of a drill that names none: the notice the cloud itself gives a spot instance.
pub fn usual_lead(cloud: Provider) -> Duration {
    match cloud {
        Provider::Aws | Provider::Drill => Duration::from_secs(120),
        Provider::Azure | Provider::Gcp => Duration::from_secs(30),
    }
}

/// The lead a drill annotation asks for (`None`: the cloud's usual one), or why the value
/// is not a drill.
pub fn parse(value: &str) -> Result<Option<Duration>, String> {
    let mut parts = value.split(',').map(str::trim);
    let kind = parts.next().unwrap_or_default();
    if kind != NoticeKind::SpotInterruption.as_str() {
        return Err(format!(
            "{value:?} is not a drill: the value must be `spot-interruption`, optionally followed by `,lead=<duration>` (e.g. `spot-interruption,lead=45s`)"
        ));
    }
    let mut lead = None;
    for part in parts {
        let Some(text) = part.strip_prefix("lead=") else {
            return Err(format!(
                "{value:?}: unknown drill option {part:?}; the only option is `lead=<duration>`"
            ));
        };
        let parsed = reclaim_service::parse_duration(text)
            .map_err(|e| format!("{value:?}: the lead {e}"))?;
        if !(MIN_LEAD..=MAX_LEAD).contains(&parsed) {
            return Err(format!(
                "{value:?}: the lead must be between {}s and {}s",
                MIN_LEAD.as_secs(),
                MAX_LEAD.as_secs()
            ));
        }
        lead = Some(parsed);
    }
    Ok(lead)
}

/// What the drill annotation announces, remembered across reads.
#[derive(Debug, Default)]
pub struct Drills {
    /// The annotation value seen last, and the event it announced.
    current: Option<(String, Announced)>,
    /// The last value refused, so that it is reported once.
    refused: Option<String>,
}

/// One read of the annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillRead {
    pub announced: Option<Announced>,
    /// Why the value is not a drill, the first time it is read.
    pub refused: Option<String>,
}

impl Drills {
    /// `value`: the annotation now (`None`: absent, or drills are off); `recorded`: the
    /// notice the node carries, so that an agent restarted mid-drill resumes the same
    /// drill rather than starting a new one.
    pub fn read(
        &mut self,
        value: Option<&str>,
        recorded: Option<&Notice>,
        cloud: Provider,
        now: Timestamp,
    ) -> DrillRead {
        let Some(value) = value else {
            self.current = None;
            self.refused = None;
            return DrillRead {
                announced: None,
                refused: None,
            };
        };
        if let Some((seen, announced)) = &self.current
            && seen == value
        {
            return DrillRead {
                announced: Some(announced.clone()),
                refused: None,
            };
        }
        let lead = match parse(value) {
            Ok(lead) => lead.unwrap_or(usual_lead(cloud)),
            Err(why) => {
                self.current = None;
                let first = self.refused.as_deref() != Some(value);
                self.refused = Some(value.to_owned());
                return DrillRead {
                    announced: None,
                    refused: first.then_some(why),
                };
            }
        };
        let announced = match recorded.filter(|n| n.provider == Provider::Drill) {
            Some(notice) => Announced {
                kind: notice.kind,
                event_id: notice.event_id.clone(),
                notice_time: notice.notice_time,
                deadline: notice.deadline,
            },
            None => {
                let start = Timestamp::from_second(now.as_second()).unwrap_or(now);
                Announced {
                    kind: NoticeKind::SpotInterruption,
                    event_id: format!("drill-{start}"),
                    notice_time: start,
                    deadline: Some(start + SignedDuration::try_from(lead).unwrap_or_default()),
                }
            }
        };
        self.current = Some((value.to_owned(), announced.clone()));
        self.refused = None;
        DrillRead {
            announced: Some(announced),
            refused: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    #[test]
    fn the_documented_values_parse_and_others_say_what_is_expected() {
        assert_eq!(parse("spot-interruption"), Ok(None));
        assert_eq!(
            parse("spot-interruption,lead=45s"),
            Ok(Some(Duration::from_secs(45)))
        );
        assert_eq!(
            parse("spot-interruption, lead=2m"),
            Ok(Some(Duration::from_secs(120)))
        );
        assert!(
            parse("rebalance")
                .unwrap_err()
                .contains("spot-interruption")
        );
        assert!(
            parse("spot-interruption,lead=5s")
                .unwrap_err()
                .contains("between 15s")
        );
        assert!(parse("spot-interruption,lead=soon").is_err());
        // Anyone who may patch nodes writes this value: an absurd lead is refused, never a panic.
        assert!(parse("spot-interruption,lead=99999999999999999999s").is_err());
        assert!(
            parse("spot-interruption,deadline=1m")
                .unwrap_err()
                .contains("unknown drill option")
        );
    }

    #[test]
    fn a_drill_keeps_its_event_and_deadline_while_the_annotation_stays() {
        let mut drills = Drills::default();
        let first = drills.read(Some("spot-interruption"), None, Provider::Gcp, at(0));
        let announced = first.announced.unwrap();
        assert_eq!(announced.kind, NoticeKind::SpotInterruption);
        assert!(
            announced.event_id.starts_with("drill-"),
            "{}",
            announced.event_id
        );
        assert_eq!(announced.deadline, Some(at(30)));
        let later = drills.read(Some("spot-interruption"), None, Provider::Gcp, at(7));
        assert_eq!(later.announced, Some(announced.clone()));
        // Removed, then added again: a new drill.
        assert_eq!(
            drills.read(None, None, Provider::Gcp, at(8)).announced,
            None
        );
        let again = drills.read(
            Some("spot-interruption,lead=1m"),
            None,
            Provider::Gcp,
            at(9),
        );
        let again = again.announced.unwrap();
        assert_ne!(again.event_id, announced.event_id);
        assert_eq!(again.deadline, Some(at(69)));
    }

    #[test]
    fn a_restarted_agent_resumes_the_drill_the_node_records() {
        let recorded = Notice {
            provider: Provider::Drill,
            kind: NoticeKind::SpotInterruption,
            event_id: "drill-2027-01-15T08:00:00Z".into(),
            notice_time: at(0),
            deadline: Some(at(120)),
            detected_at: at(0),
        };
        let mut drills = Drills::default();
        let read = drills.read(
            Some("spot-interruption"),
            Some(&recorded),
            Provider::Aws,
            at(50),
        );
        let announced = read.announced.unwrap();
        assert_eq!(announced.event_id, recorded.event_id);
        assert_eq!(announced.deadline, recorded.deadline);
        // A real notice on the node is not a drill to resume.
        let real = Notice {
            provider: Provider::Aws,
            ..recorded
        };
        let mut fresh = Drills::default();
        let read = fresh.read(
            Some("spot-interruption"),
            Some(&real),
            Provider::Aws,
            at(50),
        );
        assert_eq!(read.announced.unwrap().deadline, Some(at(170)));
    }

    #[test]
    fn a_bad_value_is_reported_once_and_announces_nothing() {
        let mut drills = Drills::default();
        let first = drills.read(Some("yes"), None, Provider::Aws, at(0));
        assert!(first.refused.is_some() && first.announced.is_none());
        let second = drills.read(Some("yes"), None, Provider::Aws, at(1));
        assert_eq!(
            second,
            DrillRead {
                announced: None,
                refused: None
            }
        );
        let fixed = drills.read(Some("spot-interruption"), None, Provider::Aws, at(2));
        assert!(fixed.announced.is_some());
    }
}
