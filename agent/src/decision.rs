//! What the agent does about what the provider announces: pure rules over plain values.
//!
//! The node's own annotations are the agent's memory (so a restarted agent resumes
//! instead of starting over): the notice it acted on, and the last notice it retired.
//!
//! An explicit end (a maintenance event `canceled`, a GCP value back to `FALSE`) is
//! undone at once. An absence (a 404 where a notice was, an event gone from a list) is
//! undone only once it has lasted [`Policy::withdrawal_after`] and
//! [`WITHDRAWAL_POLLS`] successful polls: a notice that flaps out of one or two answers
//! (a glitch, a metadata service restart) neither lifts the taint nor stops the drain.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use reclaim_model::{Notice, NoticeKind, Provider};

use crate::imds::Announced;
use crate::observation::Absence;

/// An absent notice is withdrawn only after at least this many successful polls without it
/// (and [`Policy::withdrawal_after`]), so that a slow or hanging path cannot confirm an
/// absence with a single late answer.
pub const WITHDRAWAL_POLLS: u64 = 3;

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
    /// A notice the provider stops announcing (without saying it ended) is undone only
    /// after this long without it.
    pub withdrawal_after: Duration,
}

/// What the metadata service says now, as the rules need it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// Every event announced (a failing path's last answer stands).
    pub announced: Vec<Announced>,
    /// The drill the node's annotation announces (see [`crate::drill`]).
    pub drill: Option<Announced>,
    /// Events the provider explicitly says are over.
    pub ended: Vec<String>,
    /// How long the node's current notice has been missing from its path's answers;
    /// `None` while announced, or while its path fails (nobody knows).
    pub current_absence: Option<Absence>,
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

/// How bad a notice is: a worse one replaces a milder one, never the reverse; of two
/// equally bad ones, the cloud's replaces a drill (its deadline is the real one).
fn severity(provider: Provider, kind: NoticeKind) -> (u8, bool) {
    let rank = match kind {
        NoticeKind::Rebalance => 0,
        NoticeKind::ScheduledMaintenance => 1,
        NoticeKind::AsgTermination => 2,
        NoticeKind::SpotInterruption => 3,
    };
    (rank, provider != Provider::Drill)
}

pub fn decide(
    seen: &Observation,
    record: &NodeRecord,
    provider: Provider,
    now: Timestamp,
    policy: &Policy,
) -> Decision {
    let lead =
        SignedDuration::try_from(policy.maintenance_lead_time).unwrap_or(SignedDuration::MAX);
    let from_cloud = seen.announced.iter().map(|a| (provider, a));
    let from_drill = seen.drill.iter().map(|a| (Provider::Drill, a));
    let actionable = from_cloud.chain(from_drill).filter(|(_, a)| {
        record.retired_event.as_deref() != Some(a.event_id.as_str())
            && !seen.ended.contains(&a.event_id)
            && (a.kind != NoticeKind::ScheduledMaintenance
                // A lead reaching past the beginning of time has begun.
                || a.deadline.is_none_or(|start| {
                    start.checked_sub(lead).map_or(true, |from| now >= from)
                }))
    });
    let worst = actionable.max_by_key(|(p, a)| severity(*p, a.kind));

    let Some(current) = &record.notice else {
        return match worst {
            Some((p, a)) => Decision::Act(notice_from(a, p, now)),
            None => Decision::Idle,
        };
    };
    if let Some((p, a)) =
        worst.filter(|(p, a)| severity(*p, a.kind) > severity(current.provider, current.kind))
    {
        return Decision::Act(notice_from(a, p, now));
    }
    if current.provider == Provider::Drill
        && seen.drill.as_ref().map(|d| &d.event_id) != Some(&current.event_id)
    {
        return Decision::Undo {
            why: "the drill was called off (its annotation removed, or drills turned off)",
            retire: None,
        };
    }
    if seen.ended.contains(&current.event_id) {
        return Decision::Undo {
            why: "the provider says the event is over (canceled, completed, or back in service)",
            retire: None,
        };
    }
    // Any notice, a spot interruption too, is undone once the provider has stopped
    // announcing it for long enough: a stopped or deallocated spot instance can start
    // again as the same Node, which must not stay cordoned forever. A shorter absence is
    // a flap: the notice stands and its drain goes on.
    let still_announced = seen
        .announced
        .iter()
        .chain(&seen.drill)
        .any(|a| a.event_id == current.event_id);
    if !still_announced {
        let after =
            SignedDuration::try_from(policy.withdrawal_after).unwrap_or(SignedDuration::MAX);
        let withdrawn = seen
            .current_absence
            .is_some_and(|a| a.polls >= WITHDRAWAL_POLLS && now.duration_since(a.since) >= after);
        if withdrawn {
            return Decision::Undo {
                why: "the provider stopped announcing the event (withdrawn, or the instance came back)",
                retire: None,
            };
        }
        return Decision::Act(current.clone());
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
    // Times come from a metadata body or an annotation: saturate, never panic.
    hard_deadline(notice, policy)
        .checked_sub(margin)
        .unwrap_or(Timestamp::MIN)
}

/// When the instance goes away: the announced deadline, or the detection time plus the
/// default budget. Deletions are retried until then.
pub fn hard_deadline(notice: &Notice, policy: &Policy) -> Timestamp {
    let budget =
        SignedDuration::try_from(policy.default_drain_budget).unwrap_or(SignedDuration::ZERO);
    notice.deadline.unwrap_or_else(|| {
        notice
            .detected_at
            .checked_add(budget)
            .unwrap_or(Timestamp::MAX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_at_the_ends_of_the_range_saturate_instead_of_panicking() {
        let mut policy = policy();
        policy.maintenance_lead_time = Duration::MAX;
        let mut notice = Notice {
            provider: Provider::Aws,
            kind: NoticeKind::SpotInterruption,
            event_id: "e".into(),
            notice_time: Timestamp::MIN,
            deadline: Some(Timestamp::MIN),
            detected_at: Timestamp::MAX,
        };
        assert_eq!(drain_deadline(&notice, &policy), Timestamp::MIN);
        notice.deadline = None;
        assert_eq!(hard_deadline(&notice, &policy), Timestamp::MAX);
        let maintenance = Announced {
            kind: NoticeKind::ScheduledMaintenance,
            event_id: "m".into(),
            notice_time: Timestamp::MIN,
            deadline: Some(Timestamp::MIN),
        };
        let seen = Observation {
            announced: vec![maintenance],
            ..Observation::default()
        };
        // A lead longer than time itself: the maintenance is within it, acted on at once.
        assert!(matches!(
            decide(
                &seen,
                &NodeRecord::default(),
                Provider::Aws,
                Timestamp::UNIX_EPOCH,
                &policy
            ),
            Decision::Act(_)
        ));
    }

    fn policy() -> Policy {
        Policy {
            safety_margin: Duration::from_secs(10),
            rebalance_drain: false,
            rebalance_expiry: Duration::from_secs(600),
            maintenance_lead_time: Duration::from_secs(300),
            default_drain_budget: Duration::from_secs(120),
            withdrawal_after: Duration::from_secs(60),
        }
    }

    fn seen(events: &[Announced]) -> Observation {
        Observation {
            announced: events.to_vec(),
            ..Observation::default()
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
                &Observation::default(),
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
            &seen(&events),
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
            &seen(&events),
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
            &seen(std::slice::from_ref(&spot_event)),
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
            decide(&seen(&both), &record, Provider::Aws, later, &policy()),
            Decision::Act(spot.clone())
        );
        let gone = |since: &str, polls| Observation {
            announced: vec![rebalance.clone()],
            drill: None,
            ended: Vec::new(),
            current_absence: Some(Absence {
                since: at(since),
                polls,
            }),
        };
        assert_eq!(
            decide(
                &gone("2026-01-01T10:00:58Z", 2),
                &record,
                Provider::Aws,
                later,
                &policy()
            ),
            Decision::Act(spot.clone()),
            "missing from two polls is a flap: the notice stands"
        );
        assert_eq!(
            decide(
                &gone("2026-01-01T09:59:00Z", 2),
                &record,
                Provider::Aws,
                later,
                &policy()
            ),
            Decision::Act(spot.clone()),
            "a long gap with only two answers (a hanging path) proves nothing"
        );
        assert_eq!(
            decide(
                &gone("2026-01-01T10:00:30Z", 30),
                &record,
                Provider::Aws,
                later,
                &policy()
            ),
            Decision::Act(spot),
            "30 s is shorter than the withdrawal period"
        );
        assert!(matches!(
            decide(
                &gone("2026-01-01T10:00:00Z", 60),
                &record,
                Provider::Aws,
                later,
                &policy()
            ),
            Decision::Undo { retire: None, .. }
        ));
    }

    #[test]
    fn a_rebalance_expires_and_is_not_acted_on_again() {
        let events = [announced(NoticeKind::Rebalance, "rebalance-1", None)];
        let start = at("2026-01-01T10:00:00Z");
        let notice = acted(decide(
            &seen(&events),
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
                &seen(&events),
                &record,
                Provider::Aws,
                at("2026-01-01T10:09:59Z"),
                &policy()
            ),
            Decision::Act(_)
        ));
        assert_eq!(
            decide(
                &seen(&events),
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
                &seen(&events),
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
                &seen(&events),
                &NodeRecord::default(),
                Provider::Aws,
                early,
                &policy()
            ),
            Decision::Idle
        );
        let notice = acted(decide(
            &seen(&events),
            &NodeRecord::default(),
            Provider::Aws,
            at("2026-01-01T10:55:00Z"),
            &policy(),
        ));
        let record = NodeRecord {
            notice: Some(notice),
            retired_event: None,
        };
        let canceled = Observation {
            ended: vec!["instance-event-1".into()],
            ..Observation::default()
        };
        assert!(
            matches!(
                decide(
                    &canceled,
                    &record,
                    Provider::Aws,
                    at("2026-01-01T10:56:00Z"),
                    &policy()
                ),
                Decision::Undo { retire: None, .. }
            ),
            "an explicit end is undone at once"
        );
        assert_eq!(
            decide(
                &Observation::default(),
                &record,
                Provider::Aws,
                at("2026-01-01T10:56:00Z"),
                &policy()
            ),
            Decision::Act(record.notice.clone().unwrap()),
            "a path that has not answered again says nothing"
        );
    }

    #[test]
    fn a_drill_is_acted_on_as_a_notice_from_the_provider_drill_and_called_off_at_once() {
        let drill = announced(
            NoticeKind::SpotInterruption,
            "drill-2026-01-01T10:00:00Z",
            Some("2026-01-01T10:02:00Z"),
        );
        let drilled = Observation {
            drill: Some(drill.clone()),
            ..Observation::default()
        };
        let now = at("2026-01-01T10:00:01Z");
        let notice = acted(decide(
            &drilled,
            &NodeRecord::default(),
            Provider::Gcp,
            now,
            &policy(),
        ));
        assert_eq!(notice.provider, Provider::Drill);
        assert_eq!(notice.deadline, drill.deadline);
        let record = NodeRecord {
            notice: Some(notice.clone()),
            retired_event: None,
        };
        assert_eq!(
            decide(&drilled, &record, Provider::Gcp, now, &policy()),
            Decision::Act(notice)
        );
        // The annotation removed: undone on the spot, with no withdrawal delay.
        assert!(matches!(
            decide(
                &Observation::default(),
                &record,
                Provider::Gcp,
                now,
                &policy()
            ),
            Decision::Undo { retire: None, .. }
        ));
    }

    #[test]
    fn a_real_notice_replaces_a_drill_and_a_drill_never_replaces_a_real_one() {
        let now = at("2026-01-01T10:00:05Z");
        let drill = announced(
            NoticeKind::SpotInterruption,
            "drill-1",
            Some("2026-01-01T10:02:00Z"),
        );
        let real = announced(
            NoticeKind::SpotInterruption,
            "spot-1",
            Some("2026-01-01T10:00:35Z"),
        );
        let drilling = NodeRecord {
            notice: Some(notice_from(&drill, Provider::Drill, now)),
            retired_event: None,
        };
        let both = Observation {
            announced: vec![real.clone()],
            drill: Some(drill.clone()),
            ..Observation::default()
        };
        let taken_over = acted(decide(&both, &drilling, Provider::Gcp, now, &policy()));
        assert_eq!(
            (taken_over.provider, taken_over.event_id.as_str()),
            (Provider::Gcp, "spot-1")
        );
        let reclaiming = NodeRecord {
            notice: Some(taken_over.clone()),
            retired_event: None,
        };
        assert_eq!(
            decide(&both, &reclaiming, Provider::Gcp, now, &policy()),
            Decision::Act(taken_over.clone())
        );
        // Removing the drill annotation then leaves the real notice alone.
        assert_eq!(
            decide(&seen(&[real]), &reclaiming, Provider::Gcp, now, &policy()),
            Decision::Act(taken_over)
        );
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
