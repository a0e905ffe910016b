//! Every annotation and record the binaries read that someone other than Reclaim can
//! write, through the functions that read them: the first byte picks which, the rest is
//! the value. Whatever it holds, nothing panics, and what comes out keeps its bounds.
#![no_main]

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use libfuzzer_sys::fuzz_target;
use reclaim_agent::decision::{Policy, drain_deadline, hard_deadline};
use reclaim_agent::drill::{Drills, MAX_LEAD, MIN_LEAD};
use reclaim_classifier::latest::{Finding, recorded_failure, replaces};
use reclaim_classifier::record::listing;
use reclaim_classifier::writer::Marked;
use reclaim_classifier::verdict::{ContainerExit, Failure, classify};
use reclaim_model::interruption::{AgentStatus, ClassifiedStatus};
use reclaim_model::verdict::OwnFailure;
use reclaim_model::{Evidence, Notice, NoticeKind, PodInterruption, Provider};

fn policy() -> Policy {
    Policy {
        safety_margin: Duration::from_secs(10),
        rebalance_drain: false,
        rebalance_expiry: Duration::from_secs(3600),
        maintenance_lead_time: Duration::from_secs(600),
        default_drain_budget: Duration::from_secs(120),
        withdrawal_after: Duration::from_secs(30),
    }
}

/// Killed (exit 137) at `now`, and asked to leave a second before.
fn kill(now: Timestamp) -> Failure {
    Failure {
        exits: vec![ContainerExit {
            code: 137,
            reason: Some("Error".into()),
            finished_at: Some(now),
        }],
        deletion_requested: Some(now - SignedDuration::from_secs(1)),
        ..Failure::default()
    }
}

fn evidence(now: Timestamp) -> Evidence {
    Evidence {
        node: "n".into(),
        notice_kind: NoticeKind::SpotInterruption,
        provider: Some(Provider::Aws),
        event_id: Some("e".into()),
        notice_time: now,
        exit_code: Some(137),
        reason: None,
        signals: vec!["exit-137".into()],
        pod: Some("ns/p".into()),
        failed_at: Some(now),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, value)) = data.split_first() else {
        return;
    };
    let value = String::from_utf8_lossy(value);
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    match which % 5 {
        // The node's drill annotation (whoever may patch Nodes).
        0 => {
            if let Ok(Some(lead)) = reclaim_agent::drill::parse(&value) {
                assert!((MIN_LEAD..=MAX_LEAD).contains(&lead));
            }
            let read = Drills::default().read(Some(&value), None, Provider::Aws, now);
            if let Some(drill) = read.announced {
                assert!(drill.deadline.is_some_and(|d| d > drill.notice_time));
            }
        }
        // The node's notice (whoever may patch Nodes): the agent's deadlines and the
        // classifier's judgment of a kill under it.
        1 => {
            if let Ok(notice) = Notice::from_json(&value) {
                let policy = policy();
                assert!(drain_deadline(&notice, &policy) <= hard_deadline(&notice, &policy));
                classify(&kill(now), None, Some(("n", &notice)), now);
            }
        }
        // A pod's own interruption record (the pod's creator).
        2 => {
            if let Ok(record) = PodInterruption::from_json(&value) {
                classify(&kill(now), Some(&record), None, now);
                let deleted = Failure {
                    deleted: true,
                    ..Failure::default()
                };
                classify(&deleted, Some(&record), None, now);
            }
        }
        // A verdict on an owner (the owner's creator): which failure it describes.
        3 => {
            let (cause, text) = value.split_once('\n').unwrap_or(("spot-interruption", &value));
            let annotations: BTreeMap<String, String> = [
                ("reclaim.dev/cause".to_owned(), cause.to_owned()),
                ("reclaim.dev/evidence".to_owned(), text.to_owned()),
            ]
            .into();
            let recorded = recorded_failure(&annotations);
            assert!(recorded.is_some(), "a cause is a verdict, readable or not");
            replaces(recorded, &Finding::Spot(evidence(now)));
            replaces(
                recorded,
                &Finding::Own(OwnFailure {
                    pod: "ns/p".into(),
                    failed_at: now,
                    why: "OOMKilled".into(),
                }),
            );
        }
        // An Interruption record's status (whoever may write records).
        _ => {
            if let Ok(classified) = serde_json::from_str::<ClassifiedStatus>(&value) {
                let marked = Marked {
                    kind: "Job".into(),
                    namespace: "ns".into(),
                    name: "j".into(),
                };
                if let Some(patch) = listing(&classified, &evidence(now), &[marked], now) {
                    assert!(patch["retryable"].as_u64() >= Some(u64::from(classified.retryable)));
                }
            }
            let _ = serde_json::from_str::<AgentStatus>(&value);
        }
    }
});
