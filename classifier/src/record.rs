//! The classifier's side of the Interruption record (see `reclaim_model::interruption`):
//! each object it marks is added to the record of the notice that caused the failure,
//! and records older than the retention are deleted.
//!
//! The classifier writes only `status.retryable` and `status.verdicts`, with merge
//! patches conditioned on the resourceVersion it read, so the agent's fields (written
//! at the same time, during a drain) are never overwritten; a conflict is read again.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::{Client, ResourceExt};
use reclaim_model::Evidence;
use reclaim_model::interruption::{
    ClassifiedStatus, MAX_VERDICTS_LISTED, VerdictEntry, record_name,
};
use reclaim_service::interruptions::{api, crd_missing, report_crd_missing};
use serde_json::json;

use crate::writer::Marked;

/// Conflicts with the agent's writes tolerated in a row before the write is left to
/// the retry queue.
const CONFLICT_RETRIES: usize = 5;

/// How long after a notice its record may still be on its way: the agent creates it
/// when it acts on the notice, from a task of its own that retries every 2 s, and a pod
/// evicted at once can be judged before that write lands (seen on a 1.37 server, whose
/// first reads of a new CRD wait for its watch cache).
const RECORD_AWAITED: SignedDuration = SignedDuration::from_mins(2);

/// Whether the record of a notice issued at `notice_time` may still come: the write is
/// then retried. A notice time in the future (a clock, or a forged value) is not waited for.
fn awaited(notice_time: Timestamp, now: Timestamp) -> bool {
    let age = now.duration_since(notice_time);
    !age.is_negative() && age < RECORD_AWAITED
}

/// Adds the objects `marked` on `evidence` to its notice's record, each once, in one
/// write. A record that does not exist (the agent ran with `--dry-run`, or without the
/// CRD) is not an error once [`RECORD_AWAITED`] has passed since the notice (before, the
/// write is retried); neither is a classifier not allowed to write records (said once).
pub(crate) async fn add_verdicts(
    client: &Client,
    writer: &str,
    evidence: &Evidence,
    marked: &[Marked],
) -> kube::Result<()> {
    let Some(event_id) = &evidence.event_id else {
        return Ok(());
    };
    let records = api(client);
    let record = record_name(&evidence.node, event_id, evidence.notice_time);
    let params = PatchParams {
        field_manager: Some(writer.to_owned()),
        ..PatchParams::default()
    };
    for _ in 0..CONFLICT_RETRIES {
        let found = match records.get_opt(&record).await {
            Ok(Some(found)) => found,
            Ok(None) if awaited(evidence.notice_time, Timestamp::now()) => {
                return Err(kube::Error::Service(
                    format!("the Interruption record {record} is not written yet").into(),
                ));
            }
            Ok(None) => {
                tracing::debug!(
                    record,
                    "no Interruption record for this notice (the agent wrote none)"
                );
                return Ok(());
            }
            Err(e) => return unless_records_are_off(e),
        };
        let classified: ClassifiedStatus =
            serde_json::from_value(found.data["status"].clone()).unwrap_or_default();
        let Some(patch) = listing(&classified, evidence, marked, Timestamp::now()) else {
            return Ok(());
        };
        let patch = json!({
            "metadata": {"resourceVersion": found.resource_version()},
            "status": patch,
        });
        match records.patch(&record, &params, &Patch::Merge(&patch)).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) if crd_missing(&e) => return unless_records_are_off(e),
            // Deleted since it was read (past its retention): nothing left to add to.
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            Err(e) => return unless_records_are_off(e),
        }
    }
    Err(kube::Error::Service(
        format!("the Interruption record {record} kept changing under the write").into(),
    ))
}

/// The CRD missing, or no permission for records: said once, and no error, so that
/// verdicts are never retried for a record that cannot be written.
fn unless_records_are_off(error: kube::Error) -> kube::Result<()> {
    match &error {
        e if crd_missing(e) => report_crd_missing("reclaim-classifier"),
        kube::Error::Api(status) if status.code == 403 => {
            static FORBIDDEN: std::sync::Once = std::sync::Once::new();
            FORBIDDEN.call_once(|| {
                tracing::warn!(error = %error, "reclaim-classifier may not read or write Interruption records, so it adds no verdicts to them; the verdicts themselves are written. Grant interruptions.reclaim.dev get, list, patch, delete (manifests/base/classifier/rbac.yaml)")
            });
        }
        _ => return Err(error),
    }
    Ok(())
}

/// The status fields that add the objects of `marked` the record does not list yet: all
/// of them in `retryable`, as many as fit in `verdicts`; `None` when every one is listed.
pub fn listing(
    classified: &ClassifiedStatus,
    evidence: &Evidence,
    marked: &[Marked],
    now: Timestamp,
) -> Option<serde_json::Value> {
    let mut listed = serde_json::Map::new();
    let mut added = 0;
    for object in marked {
        let entry = VerdictEntry {
            kind: object.kind.clone(),
            namespace: object.namespace.clone(),
            name: object.name.clone(),
            pod: evidence.pod.clone().filter(|pod| {
                *pod != reclaim_model::namespaced_name(&object.namespace, &object.name)
            }),
            signals: evidence.signals.clone(),
            marked_at: now,
        };
        let key = entry.key();
        if classified.verdicts.contains_key(&key) || listed.contains_key(&key) {
            continue;
        }
        added += 1;
        if classified.verdicts.len() + listed.len() < MAX_VERDICTS_LISTED {
            listed.insert(key, json!(entry));
        }
    }
    // The count comes from the record, which others may write: it saturates.
    (added > 0).then(
        || json!({"retryable": classified.retryable.saturating_add(added), "verdicts": listed}),
    )
}

/// Whether a record created at `created` is past `retention` at `now`.
pub fn expired(created: Timestamp, retention: Duration, now: Timestamp) -> bool {
    let retention = SignedDuration::try_from(retention).unwrap_or(SignedDuration::MAX);
    now.duration_since(created) >= retention
}

/// How often the records are looked over: often enough that none outlives its retention
/// by more than a tenth of it, at most every 10 minutes.
pub fn collection_interval(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(600))
}

/// Deletes the records past `retention` (each on its UID, so a record recreated under
/// the same name is kept); returns how many.
pub(crate) async fn collect_garbage(client: &Client, retention: Duration) -> kube::Result<usize> {
    let records = api(client);
    let list = match records.list_metadata(&ListParams::default()).await {
        Ok(list) => list,
        Err(e) if crd_missing(&e) => {
            report_crd_missing("reclaim-classifier");
            return Ok(0);
        }
        Err(e) => return Err(e),
    };
    let now = Timestamp::now();
    let mut deleted = 0;
    for record in list.items {
        let Some(created) = record.metadata.creation_timestamp.as_ref() else {
            continue;
        };
        if !expired(created.0, retention, now) {
            continue;
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: record.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match records.delete(&record.name_any(), &params).await {
            Ok(_) => deleted += 1,
            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_record_is_awaited_only_for_a_while_after_its_notice() {
        let notice: Timestamp = "2026-12-07T10:00:00Z".parse().unwrap();
        let at = |s: i64| notice + SignedDuration::from_secs(s);
        assert!(awaited(notice, at(1)));
        assert!(awaited(notice, at(119)));
        assert!(!awaited(notice, at(120)), "the agent wrote none");
        assert!(
            !awaited(notice, at(-5)),
            "a notice from the future is not waited for"
        );
        let forged: Timestamp = "9999-01-01T00:00:00Z".parse().unwrap();
        assert!(!awaited(forged, notice));
    }

    fn marked(kind: &str, name: &str) -> Marked {
        Marked {
            kind: kind.into(),
            namespace: "etl".into(),
            name: name.into(),
        }
    }

    fn evidence() -> Evidence {
        serde_json::from_value(json!({"node": "n1", "noticeKind": "spot-interruption",
            "noticeTime": "2026-11-01T00:00:00Z", "signals": ["pod-deleted"], "pod": "etl/load-1"}))
        .unwrap()
    }

    #[test]
    fn objects_are_listed_once_and_counted_even_past_the_listing_bound() {
        let now: Timestamp = "2026-11-01T00:01:00Z".parse().unwrap();
        let first = listing(
            &ClassifiedStatus::default(),
            &evidence(),
            &[marked("Pod", "load-1"), marked("Job", "load")],
            now,
        )
        .unwrap();
        assert_eq!(first["retryable"], 2);
        assert_eq!(first["verdicts"]["Job/etl/load"]["pod"], "etl/load-1");
        assert!(
            first["verdicts"]["Pod/etl/load-1"].get("pod").is_none(),
            "the pod itself names no pod"
        );
        let written: ClassifiedStatus = serde_json::from_value(first).unwrap();
        assert_eq!(
            listing(&written, &evidence(), &[marked("Job", "load")], now),
            None,
            "listed already"
        );
        let full = ClassifiedStatus {
            retryable: 150,
            verdicts: (0..MAX_VERDICTS_LISTED)
                .map(|i| {
                    (
                        format!("Job/etl/j{i}"),
                        written.verdicts["Job/etl/load"].clone(),
                    )
                })
                .collect(),
        };
        let more = listing(&full, &evidence(), &[marked("Job", "another")], now).unwrap();
        assert_eq!(
            (
                more["retryable"].as_u64(),
                more["verdicts"].as_object().map(|v| v.len())
            ),
            (Some(151), Some(0))
        );
    }

    #[test]
    fn a_record_expires_once_its_retention_has_passed() {
        let created: Timestamp = "2026-11-01T00:00:00Z".parse().unwrap();
        let month = Duration::from_secs(30 * 86400);
        assert!(!expired(
            created,
            month,
            "2026-11-30T23:59:59Z".parse().unwrap()
        ));
        assert!(expired(
            created,
            month,
            "2026-12-01T00:00:00Z".parse().unwrap()
        ));
    }

    #[test]
    fn records_are_looked_over_a_tenth_of_the_retention_apart_within_bounds() {
        assert_eq!(
            collection_interval(Duration::from_secs(5)),
            Duration::from_secs(1)
        );
        assert_eq!(
            collection_interval(Duration::from_secs(3000)),
            Duration::from_secs(300)
        );
        assert_eq!(
            collection_interval(Duration::from_secs(30 * 86400)),
            Duration::from_secs(600)
        );
    }
}
