//! What a pod's failure says about the objects that outlive it, and when that replaces
//! what they carry: an object's verdict describes its latest failure. After one executor
//! is reclaimed (which Spark survives) the driver reads "retryable"; a later OOM kill of
//! the driver must not go on reading so. Pure, so the order of failures is tested with
//! plain values.

use std::collections::BTreeMap;

use jiff::Timestamp;
use reclaim_model::Evidence;
use reclaim_model::keys::{CAUSE_ANNOTATION, EVIDENCE_ANNOTATION, RETRYABLE_ANNOTATION};
use reclaim_model::verdict::{OWN_FAILURE_CAUSE, OwnFailure, SPOT_INTERRUPTION_CAUSE};

/// A judged failure, as written on the objects it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Killed by the interruption: retry it.
    Spot(Evidence),
    /// The pod's own failure: written only over an earlier spot-caused verdict.
    Own(OwnFailure),
}

impl Finding {
    /// When the failure happened (`None`: a spot verdict from before that was recorded).
    pub fn failed_at(&self) -> Option<Timestamp> {
        match self {
            Finding::Spot(evidence) => evidence.failed_at,
            Finding::Own(own) => Some(own.failed_at),
        }
    }

    /// The annotations that say it: cause, retryable, evidence.
    pub fn annotations(&self) -> [(&'static str, String); 3] {
        let (cause, retryable, evidence) = match self {
            Finding::Spot(evidence) => (SPOT_INTERRUPTION_CAUSE, "true", to_json(evidence)),
            Finding::Own(own) => (OWN_FAILURE_CAUSE, "false", to_json(own)),
        };
        [
            (CAUSE_ANNOTATION, cause.to_owned()),
            (RETRYABLE_ANNOTATION, retryable.to_owned()),
            (EVIDENCE_ANNOTATION, evidence),
        ]
    }
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("evidence serializes")
}

/// The failure an object's verdict describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// When it happened; `Timestamp::MIN` for a verdict that cannot be read (anyone who
    /// may write the object may have written it), so that any real finding replaces it.
    pub at: Timestamp,
    /// Whether it reads spot-caused.
    pub spot: bool,
}

/// The failure an object's verdict describes, as far as its annotations say.
pub fn recorded_failure(annotations: &BTreeMap<String, String>) -> Option<Recorded> {
    let cause = annotations.get(CAUSE_ANNOTATION)?;
    let evidence = annotations.get(EVIDENCE_ANNOTATION).map(String::as_str);
    let at = match cause.as_str() {
        SPOT_INTERRUPTION_CAUSE => evidence
            .and_then(|e| serde_json::from_str::<Evidence>(e).ok())
            .map(|e| e.failed_at.unwrap_or(e.notice_time)),
        OWN_FAILURE_CAUSE => evidence
            .and_then(|e| serde_json::from_str::<OwnFailure>(e).ok())
            .map(|own| own.failed_at),
        _ => None,
    };
    Some(Recorded {
        at: at.unwrap_or(Timestamp::MIN),
        spot: cause == SPOT_INTERRUPTION_CAUSE,
    })
}

/// Whether `finding` is written over what the object carries: a spot verdict goes on an
/// object without one; any finding replaces a verdict about an earlier failure, and an own
/// failure a spot verdict of the same second (times are whole seconds; when in doubt,
/// not retryable); an own failure is never written where there is nothing to correct
/// (every failed pod's Job would get an annotation and an Event otherwise).
pub fn replaces(recorded: Option<Recorded>, finding: &Finding) -> bool {
    match (recorded, finding) {
        (None, Finding::Spot(_)) => true,
        (None, Finding::Own(_)) => false,
        (Some(recorded), finding) => finding.failed_at().is_some_and(|at| {
            at > recorded.at
                || (at == recorded.at && recorded.spot && matches!(finding, Finding::Own(_)))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reclaim_model::NoticeKind;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn spot(failed_at: &str) -> Finding {
        Finding::Spot(Evidence {
            node: "n1".into(),
            notice_kind: NoticeKind::SpotInterruption,
            provider: None,
            event_id: None,
            notice_time: at("2026-01-01T10:00:00Z"),
            exit_code: Some(137),
            reason: None,
            signals: vec!["exit-137".into()],
            pod: Some("etl/exec-1".into()),
            failed_at: Some(at(failed_at)),
        })
    }

    fn own(failed_at: &str) -> Finding {
        Finding::Own(OwnFailure {
            pod: "etl/driver".into(),
            failed_at: at(failed_at),
            why: "OOMKilled".into(),
        })
    }

    /// The annotations `finding` leaves on an object, read back.
    fn written(finding: &Finding) -> BTreeMap<String, String> {
        finding
            .annotations()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    #[test]
    fn a_later_own_failure_replaces_a_spot_verdict_and_an_earlier_one_does_not() {
        let executor_reclaimed = written(&spot("2026-01-01T10:01:00Z"));
        let recorded = recorded_failure(&executor_reclaimed);
        assert!(replaces(recorded, &own("2026-01-01T10:30:00Z")));
        assert!(!replaces(recorded, &own("2026-01-01T09:00:00Z")));
        assert!(
            replaces(recorded, &own("2026-01-01T10:01:00Z")),
            "the same second: not retryable"
        );
        let own_recorded = recorded_failure(&written(&own("2026-01-01T10:01:00Z")));
        assert!(!replaces(own_recorded, &spot("2026-01-01T10:01:00Z")));
    }

    #[test]
    fn the_latest_failure_wins_whichever_order_they_are_judged_in() {
        // The driver's OOM kill is judged first; the executor's earlier reclaim is judged
        // late (a retry after an outage): the own failure stays.
        let driver_oom = written(&own("2026-01-01T10:30:00Z"));
        assert!(!replaces(
            recorded_failure(&driver_oom),
            &spot("2026-01-01T10:01:00Z")
        ));
        // The job is retried and its next pod reclaimed later: spot again.
        assert!(replaces(
            recorded_failure(&driver_oom),
            &spot("2026-01-01T11:00:00Z")
        ));
    }

    #[test]
    fn an_own_failure_is_written_only_where_a_spot_verdict_needs_correcting() {
        assert!(!replaces(None, &own("2026-01-01T10:30:00Z")));
        assert!(replaces(None, &spot("2026-01-01T10:30:00Z")));
    }

    #[test]
    fn the_same_verdict_is_not_written_twice() {
        let finding = spot("2026-01-01T10:01:00Z");
        assert!(!replaces(recorded_failure(&written(&finding)), &finding));
    }

    #[test]
    fn a_verdict_that_cannot_be_read_is_replaced_and_a_legacy_one_dates_from_its_notice() {
        let forged: BTreeMap<String, String> = [
            (CAUSE_ANNOTATION.to_owned(), "spot-interruption".to_owned()),
            (EVIDENCE_ANNOTATION.to_owned(), "{not json".to_owned()),
        ]
        .into();
        assert_eq!(
            recorded_failure(&forged),
            Some(Recorded {
                at: Timestamp::MIN,
                spot: true
            })
        );
        assert!(replaces(
            recorded_failure(&forged),
            &own("2026-01-01T10:30:00Z")
        ));
        let Finding::Spot(mut legacy) = spot("2026-01-01T10:01:00Z") else {
            unreachable!()
        };
        legacy.failed_at = None;
        assert_eq!(
            recorded_failure(&written(&Finding::Spot(legacy))).map(|r| r.at),
            Some(at("2026-01-01T10:00:00Z"))
        );
        assert_eq!(recorded_failure(&BTreeMap::new()), None);
    }
}
