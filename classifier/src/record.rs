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

/// Conflicts with the agent's writes tolerated in a row before the write is left to
/// the retry queue.
const CONFLICT_RETRIES: usize = 5;

/// Adds the object marked on `evidence` to its notice's record, once. A record that does
/// not exist (the agent ran with `--dry-run`, or without the CRD) is not an error.
pub(crate) async fn add_verdict(
    client: &Client,
    writer: &str,
    kind: &str,
    namespace: &str,
    name: &str,
    evidence: &Evidence,
) -> kube::Result<()> {
    let Some(event_id) = &evidence.event_id else {
        return Ok(());
    };
    let records = api(client);
    let record = record_name(&evidence.node, event_id);
    let entry = VerdictEntry {
        kind: kind.to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        pod: evidence
            .pod
            .clone()
            .filter(|pod| *pod != format!("{namespace}/{name}")),
        signals: evidence.signals.clone(),
        marked_at: Timestamp::now(),
    };
    let key = entry.key();
    let params = PatchParams {
        field_manager: Some(writer.to_owned()),
        ..PatchParams::default()
    };
    for _ in 0..CONFLICT_RETRIES {
        let found = match records.get_opt(&record).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                tracing::debug!(
                    record,
                    "no Interruption record for this notice (the agent wrote none)"
                );
                return Ok(());
            }
            Err(e) if crd_missing(&e) => {
                report_crd_missing("reclaim-classifier");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let classified: ClassifiedStatus =
            serde_json::from_value(found.data["status"].clone()).unwrap_or_default();
        if classified.verdicts.contains_key(&key) {
            return Ok(());
        }
        let listed = if classified.verdicts.len() < MAX_VERDICTS_LISTED {
            json!({ key.as_str(): entry })
        } else {
            json!({})
        };
        let patch = json!({
            "metadata": {"resourceVersion": found.resource_version()},
            "status": {"retryable": classified.retryable + 1, "verdicts": listed},
        });
        match records.patch(&record, &params, &Patch::Merge(&patch)).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Err(kube::Error::Service(
        format!("the Interruption record {record} kept changing under the write").into(),
    ))
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
