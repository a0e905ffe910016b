//! The GCP metadata server: hanging GETs on `instance/preempted` and
//! `instance/maintenance-event`, so a preemption is seen the moment it is announced
//! rather than at the next poll. Each answer's ETag is sent back as `last_etag`; the
//! server answers when the value changes, or after `timeout_sec` with the same value.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use reclaim_model::NoticeKind;
use tokio::sync::Mutex;

use super::{Announced, MetadataError, ok_body, snippet};

const PREEMPTED: &str = "preempted";
const MAINTENANCE: &str = "maintenance-event";

/// The last answer for one key, and since when it has held.
#[derive(Debug, Clone)]
struct Watched {
    value: String,
    etag: String,
    since: Timestamp,
}

pub struct GcpMetadata {
    http: reqwest::Client,
    base: String,
    timeout: Duration,
    /// How long the server may hold a hanging GET.
    wait: Duration,
    /// Deadline after `preempted=TRUE` or a terminating maintenance (GCP: about 30 s).
    notice: SignedDuration,
    state: Mutex<(Option<Watched>, Option<Watched>)>,
}

impl GcpMetadata {
    pub fn new(
        http: reqwest::Client,
        base: &str,
        timeout: Duration,
        wait: Duration,
        notice: SignedDuration,
    ) -> GcpMetadata {
        GcpMetadata {
            http,
            base: base.trim_end_matches('/').to_owned(),
            timeout,
            wait,
            notice,
            state: Mutex::new((None, None)),
        }
    }

    /// The first call reads both values at once; later calls wait until one changes.
    pub async fn announced(&self, now: Timestamp) -> Result<Vec<Announced>, MetadataError> {
        let mut state = self.state.lock().await;
        match (&state.0, &state.1) {
            (Some(preempted), Some(maintenance)) => {
                let (p_etag, m_etag) = (preempted.etag.clone(), maintenance.etag.clone());
                tokio::select! {
                    answer = self.get(PREEMPTED, Some(&p_etag)) => update(&mut state.0, answer?),
                    answer = self.get(MAINTENANCE, Some(&m_etag)) => update(&mut state.1, answer?),
                }
            }
            _ => {
                let (p, m) = tokio::join!(self.get(PREEMPTED, None), self.get(MAINTENANCE, None));
                update(&mut state.0, p?);
                update(&mut state.1, m?);
            }
        }
        Ok(announced_from(
            state.0.as_ref().map(|w| (w.value.as_str(), w.since)),
            state.1.as_ref().map(|w| (w.value.as_str(), w.since)),
            self.notice,
            now,
        ))
    }

    async fn get(
        &self,
        key: &'static str,
        last_etag: Option<&str>,
    ) -> Result<(String, String), MetadataError> {
        let what = format!("GCP GET instance/{key}");
        let mut url = format!("{}/computeMetadata/v1/instance/{key}", self.base);
        let mut timeout = self.timeout;
        if let Some(etag) = last_etag {
            url.push_str(&format!(
                "?wait_for_change=true&last_etag={etag}&timeout_sec={}",
                self.wait.as_secs()
            ));
            timeout += self.wait;
        }
        let response = self
            .http
            .get(url)
            .header("Metadata-Flavor", "Google")
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| super::request_error(&what, e, timeout, ""))?;
        let flavor = response
            .headers()
            .get("metadata-flavor")
            .and_then(|v| v.to_str().ok())
            == Some("Google");
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = ok_body(response, &what, timeout, "").await?;
        let value = body.trim().to_owned();
        let valid = match key {
            PREEMPTED => matches!(value.as_str(), "TRUE" | "FALSE"),
            _ => value.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
        };
        if !flavor || etag.is_empty() || !valid {
            return Err(MetadataError::Garbage {
                what,
                expected: "a metadata server answer (Metadata-Flavor: Google, an ETag, a documented value)",
                detail: format!("{:?}", snippet(&body)),
            });
        }
        Ok((value, etag))
    }
}

fn update(slot: &mut Option<Watched>, (value, etag): (String, String)) {
    let since = match slot {
        Some(w) if w.value == value => w.since,
        _ => Timestamp::now(),
    };
    *slot = Some(Watched { value, etag, since });
}

/// `preempted=TRUE` is a spot interruption, `TERMINATE_ON_HOST_MAINTENANCE` maintenance,
/// both with a deadline `notice` after they were first seen. `MIGRATE_ON_HOST_MAINTENANCE`
/// is a live migration: the pods survive it, so nothing is done.
pub fn announced_from(
    preempted: Option<(&str, Timestamp)>,
    maintenance: Option<(&str, Timestamp)>,
    notice: SignedDuration,
    now: Timestamp,
) -> Vec<Announced> {
    let mut out = Vec::new();
    if let Some(("TRUE", since)) = preempted {
        out.push(Announced {
            kind: NoticeKind::SpotInterruption,
            event_id: "gce-preempted".into(),
            notice_time: since.min(now),
            deadline: Some(since + notice),
        });
    }
    if let Some(("TERMINATE_ON_HOST_MAINTENANCE", since)) = maintenance {
        out.push(Announced {
            kind: NoticeKind::ScheduledMaintenance,
            event_id: "gce-terminate-on-host-maintenance".into(),
            notice_time: since.min(now),
            deadline: Some(since + notice),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preemption_and_terminating_maintenance_are_notices_and_migration_is_not() {
        let since: Timestamp = "2026-01-01T10:00:00Z".parse().unwrap();
        let now: Timestamp = "2026-01-01T10:00:01Z".parse().unwrap();
        let notice = SignedDuration::from_secs(30);
        let announced = announced_from(
            Some(("TRUE", since)),
            Some(("TERMINATE_ON_HOST_MAINTENANCE", since)),
            notice,
            now,
        );
        assert_eq!(announced[0].kind, NoticeKind::SpotInterruption);
        assert_eq!(
            announced[0].deadline,
            Some("2026-01-01T10:00:30Z".parse().unwrap())
        );
        assert_eq!(announced[1].kind, NoticeKind::ScheduledMaintenance);
        assert!(
            announced_from(
                Some(("FALSE", since)),
                Some(("MIGRATE_ON_HOST_MAINTENANCE", since)),
                notice,
                now
            )
            .is_empty()
        );
        assert!(
            announced_from(Some(("FALSE", since)), Some(("NONE", since)), notice, now).is_empty()
        );
    }
}
