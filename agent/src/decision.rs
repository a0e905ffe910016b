//! What the agent does about what the provider announces: pure rules over plain values.
//!
//! The node's own annotations are the agent's memory (so a restarted agent resumes
//! instead of starting over): the notice it acted on, and the last notice it retired.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use reclaim_model::{Notice, NoticeKind, Provider};

use crate::imds::Announced;

/// The user's tuning of the rules.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Pods must be gone this long before the announced deadline.
    pub safety_margin: Duration,
    /// Drain on a rebalance recommendation too (by default only taint and cordon).
    pub rebalance_drain: bool,
    /// A rebalance taint/cordon is lifted after this long without a termination.
    pub rebalance_expiry: Duration,
    /// Scheduled maintenance is acted on this long before it starts.
    pub maintenance_lead_time: Duration,
    /// The drain budget for a termination announced without a deadline (ASG).
    pub default_drain_budget: Duration,
}

/// What the node records of the agent's past actions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeRecord {
    /// The notice the agent acted on (`reclaim.dev/notice`).
    pub notice: Option<Notice>,
    /// The notice the agent retired and must not act on again (`reclaim.dev/retired-notice`).
    pub retired_event: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing announced and nothing to undo.
    Idle,
    /// Make sure the node carries this notice (taint, cordon, annotation); drain if it drains.
    Act(Notice),
    /// Lift everything the agent did; `retire` names an event still announced that must
    /// not be acted on again (an expired rebalance recommendation).
    Undo {
        why: &'static str,
        retire: Option<String>,
    },
}

/// How bad a notice is: a worse one replaces a milder one, never the reverse.
fn severity(kind: NoticeKind) -> u8 {
    match kind {
        NoticeKind::Rebalance => 0,
        NoticeKind::ScheduledMaintenance => 1,
        NoticeKind::AsgTermination => 2,
        NoticeKind::SpotInterruption => 3,
    }
}

pub fn decide(
    announced: &[Announced],
    record: &NodeRecord,
    provider: Provider,
    now: Timestamp,
    policy: &Policy,
) -> Decision {
    let lead =
        SignedDuration::try_from(policy.maintenance_lead_time).unwrap_or(SignedDuration::MAX);
    let actionable = announced.iter().filter(|a| {
        record.retired_event.as_deref() != Some(a.event_id.as_str())
            && (a.kind != NoticeKind::ScheduledMaintenance
                || a.deadline.is_none_or(|start| now >= start - lead))
    });
    let worst = actionable.max_by_key(|a| severity(a.kind));

    let Some(current) = &record.notice else {
        return match worst {
            Some(a) => Decision::Act(notice_from(a, provider, now)),
            None => Decision::Idle,
        };
    };
    if let Some(a) = worst.filter(|a| severity(a.kind) > severity(current.kind)) {
        return Decision::Act(notice_from(a, provider, now));
    }
    // Any notice, a spot interruption too, is undone once the provider stops announcing
    // it: a stopped or deallocated spot instance can start again as the same Node, which
    // must not stay cordoned forever. Only a successful poll gets here, so an unreachable
    // metadata service never undoes anything.
    let still_announced = announced.iter().any(|a| a.event_id == current.event_id);
    if !still_announced {
        return Decision::Undo {
            why: "the provider no longer announces the event (canceled, completed, or the instance came back)",
            retire: None,
        };
    }
    let expiry = SignedDuration::try_from(policy.rebalance_expiry).unwrap_or(SignedDuration::MAX);
    if current.kind == NoticeKind::Rebalance && now >= current.detected_at + expiry {
        return Decision::Undo {
            why: "no termination followed the rebalance recommendation in time",
            retire: Some(current.event_id.clone()),
        };
    }
    Decision::Act(current.clone())
}

fn notice_from(a: &Announced, provider: Provider, now: Timestamp) -> Notice {
    Notice {
        provider,
        kind: a.kind,
        event_id: a.event_id.clone(),
        notice_time: a.notice_time,
        deadline: a.deadline,
        detected_at: now,
    }
}

/// Whether a notice of this kind empties the node.
pub fn drains(kind: NoticeKind, policy: &Policy) -> bool {
    kind != NoticeKind::Rebalance || policy.rebalance_drain
}

/// When every pod must be gone: the announced deadline (or the detection time plus the
/// default budget when none was announced) minus the safety margin.
pub fn drain_deadline(notice: &Notice, policy: &Policy) -> Timestamp {
    let margin = SignedDuration::try_from(policy.safety_margin).unwrap_or(SignedDuration::ZERO);
    let budget =
        SignedDuration::try_from(policy.default_drain_budget).unwrap_or(SignedDuration::ZERO);
    let end = notice.deadline.unwrap_or(notice.detected_at + budget);
    end - margin
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            safety_margin: Duration::from_secs(10),
            rebalance_drain: false,
            rebalance_expiry: Duration::from_secs(600),
            maintenance_lead_time: Duration::from_secs(300),
            default_drain_budget: Duration::from_secs(120),
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn announced(kind: NoticeKind, id: &str, deadline: Option<&str>) -> Announced {
        Announced {
            kind,
            event_id: id.into(),
            notice_time: at("2026-01-01T10:00:00Z"),
            deadline: deadline.map(at),
        }
    }

    fn acted(d: Decision) -> Notice {
        match d {
            Decision::Act(n) => n,
            other => panic!("expected Act, got {other:?}"),
        }
    }

    #[test]
    fn nothing_announced_nothing_recorded_is_idle() {
        assert_eq!(
            decide(
                &[],
                &NodeRecord::default(),
                Provider::Aws,
                at("2026-01-01T10:00:00Z"),
                &policy()
            ),
            Decision::Idle
        );
    }

    #[test]
    fn the_worst_announced_event_wins_and_keeps_its_first_detection_time() {
        let now = at("2026-01-01T10:00:05Z");
        let events = [
            announced(NoticeKind::Rebalance, "rebalance-1", None),
            announced(
                NoticeKind::SpotInterruption,
                "spot-1",
                Some("2026-01-01T10:02:00Z"),
            ),
        ];
        let notice = acted(decide(
            &events,
            &NodeRecord::default(),
            Provider::Aws,
            now,
            &policy(),
        ));
        assert_eq!(
            (notice.kind, notice.detected_at),
            (NoticeKind::SpotInterruption, now)
        );
        let record = NodeRecord {
            notice: Some(notice.clone()),
            retired_event: None,
        };
        let later = acted(decide(
            &events,
            &record,
            Provider::Aws,
            at("2026-01-01T10:00:30Z"),
            &policy(),
        ));
        assert_eq!(later, notice, "a restarted agent resumes the same notice");
    }

    #[test]
    fn a_spot_interruption_is_not_downgraded_while_announced_and_undone_when_the_instance_is_back()
    {
        let spot_event = announced(
            NoticeKind::SpotInterruption,
            "spot-1",
            Some("2026-01-01T10:02:00Z"),
        );
        let rebalance = announced(NoticeKind::Rebalance, "rebalance-1", None);
        let now = at("2026-01-01T10:00:00Z");
        let spot = acted(decide(
            std::slice::from_ref(&spot_event),
            &NodeRecord::default(),
            Provider::Aws,
            now,
            &policy(),
        ));
        let record = NodeRecord {
            notice: Some(spot.clone()),
            retired_event: None,
        };
        let later = at("2026-01-01T10:01:00Z");
        let both = [rebalance.clone(), spot_event];
        assert_eq!(
            decide(&both, &record, Provider::Aws, later, &policy()),
            Decision::Act(spot)
        );
        assert!(matches!(
            decide(&[rebalance], &record, Provider::Aws, later, &policy()),
            Decision::Undo { retire: None, .. }
        ));
    }

    #[test]
    fn a_rebalance_expires_and_is_not_acted_on_again() {
        let events = [announced(NoticeKind::Rebalance, "rebalance-1", None)];
        let start = at("2026-01-01T10:00:00Z");
        let notice = acted(decide(
            &events,
            &NodeRecord::default(),
            Provider::Aws,
            start,
            &policy(),
        ));
        assert!(!drains(notice.kind, &policy()));
        let record = NodeRecord {
            notice: Some(notice),
            retired_event: None,
        };
        assert!(matches!(
            decide(
                &events,
                &record,
                Provider::Aws,
                at("2026-01-01T10:09:59Z"),
                &policy()
            ),
            Decision::Act(_)
        ));
        assert_eq!(
            decide(
                &events,
                &record,
                Provider::Aws,
                at("2026-01-01T10:10:00Z"),
                &policy()
            ),
            Decision::Undo {
                why: "no termination followed the rebalance recommendation in time",
                retire: Some("rebalance-1".into())
            }
        );
        let retired = NodeRecord {
            notice: None,
            retired_event: Some("rebalance-1".into()),
        };
        assert_eq!(
            decide(
                &events,
                &retired,
                Provider::Aws,
                at("2026-01-01T10:10:01Z"),
                &policy()
            ),
            Decision::Idle
        );
    }

    #[test]
    fn maintenance_is_acted_on_at_lead_time_and_undone_when_canceled() {
        let events = [announced(
            NoticeKind::ScheduledMaintenance,
            "instance-event-1",
            Some("2026-01-01T11:00:00Z"),
        )];
        let early = at("2026-01-01T10:54:59Z");
        assert_eq!(
            decide(
                &events,
                &NodeRecord::default(),
                Provider::Aws,
                early,
                &policy()
            ),
            Decision::Idle
        );
        let notice = acted(decide(
            &events,
            &NodeRecord::default(),
            Provider::Aws,
            at("2026-01-01T10:55:00Z"),
            &policy(),
        ));
        let record = NodeRecord {
            notice: Some(notice),
            retired_event: None,
        };
        assert!(matches!(
            decide(
                &[],
                &record,
                Provider::Aws,
                at("2026-01-01T10:56:00Z"),
                &policy()
            ),
            Decision::Undo { retire: None, .. }
        ));
    }

    #[test]
    fn the_drain_deadline_is_the_announced_deadline_minus_the_margin_or_a_default_budget() {
        let notice = Notice {
            provider: Provider::Aws,
            kind: NoticeKind::SpotInterruption,
            event_id: "spot-1".into(),
            notice_time: at("2026-01-01T10:00:00Z"),
            deadline: Some(at("2026-01-01T10:02:00Z")),
            detected_at: at("2026-01-01T10:00:01Z"),
        };
        assert_eq!(
            drain_deadline(&notice, &policy()),
            at("2026-01-01T10:01:50Z")
        );
        let asg = Notice {
            kind: NoticeKind::AsgTermination,
            deadline: None,
            ..notice
        };
        assert_eq!(drain_deadline(&asg, &policy()), at("2026-01-01T10:01:51Z"));
    }
}
