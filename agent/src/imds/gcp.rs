//! The GCP metadata server: hanging GETs on `instance/preempted` and
//! `instance/maintenance-event`, so a preemption is seen the moment it is announced
//! rather than at the next poll. Each answer's ETag is sent back as `last_etag`; the
//! server answers when the value changes, or after `timeout_sec` with the same value.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use reclaim_model::NoticeKind;
use tokio::sync::Mutex;

use super::{Announced, MetadataError, MetadataPath, PathReport, ok_body, snippet};

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
    /// Deadline after `preempted=TRUE` (GKE Spot: 30 s by default, a setting).
    notice: SignedDuration,
    preempted: Mutex<Option<Watched>>,
    maintenance: Mutex<Option<Watched>>,
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
            preempted: Mutex::new(None),
            maintenance: Mutex::new(None),
        }
    }

    /// One poll of one key: a plain read the first time, then a hanging GET that returns
    /// when the value changes (or after the server's timeout, with the same value).
    pub async fn poll(
        &self,
        path: MetadataPath,
        now: Timestamp,
    ) -> Result<PathReport, MetadataError> {
        let (key, slot) = match path {
            MetadataPath::GcpPreempted => (PREEMPTED, &self.preempted),
            MetadataPath::GcpMaintenance => (MAINTENANCE, &self.maintenance),
            other => unreachable!("{other:?} is not a GCP path"),
        };
        let mut watched = slot.lock().await;
        let last_etag = watched.as_ref().map(|w| w.etag.clone());
        let answer = self.get(key, last_etag.as_deref()).await?;
        update(&mut watched, answer);
        let value = watched.as_ref().map(|w| (w.value.as_str(), w.since));
        let meaning = match path {
            MetadataPath::GcpPreempted => &PREEMPTION,
            _ => &TERMINATING_MAINTENANCE,
        };
        Ok(value_report(meaning, value, self.notice, now))
    }

    /// This instance's name, as the metadata server names it; `None` when it names none.
    pub async fn instance_name(&self) -> Result<Option<String>, MetadataError> {
        let what = "GCP GET instance/name".to_owned();
        let response = self
            .http
            .get(format!("{}/computeMetadata/v1/instance/name", self.base))
            .header("Metadata-Flavor", "Google")
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| super::request_error(&what, e, self.timeout, ""))?;
        if response.status().as_u16() == 404 {
            return Ok(None);
        }
        let body = ok_body(response, &what, self.timeout, "").await?;
        parse_instance_name(&body)
            .map(|name| Some(name.to_owned()))
            .ok_or_else(|| MetadataError::Garbage {
                what,
                expected: "an instance name (RFC 1035: a-z, 0-9, -)",
                detail: format!("{:?}", snippet(&body)),
            })
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
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default();
        let body = ok_body(response, &what, timeout, "").await?;
        let garbage = |detail: String| MetadataError::Garbage {
            what: what.clone(),
            expected: "a metadata server answer (Metadata-Flavor: Google, an ETag, a documented value)",
            detail,
        };
        if !flavor {
            return Err(garbage("no Metadata-Flavor: Google header".into()));
        }
        let etag = parse_etag(&etag)
            .ok_or_else(|| garbage(format!("ETag {:?}", String::from_utf8_lossy(&etag))))?;
        let value =
            parse_value(key, &body).ok_or_else(|| garbage(format!("{:?}", snippet(&body))))?;
        Ok((value, etag))
    }
}

/// A Compute Engine instance name: 1 to 63 of `a-z`, `0-9` and `-`, starting with a letter.
pub fn parse_instance_name(body: &str) -> Option<&str> {
    let name = body.trim();
    let valid = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    valid.then_some(name)
}

/// The value of `key` (`preempted` or `maintenance-event`), if it is one GCP documents.
pub fn parse_value(key: &str, body: &str) -> Option<String> {
    let value = body.trim();
    let documented = match key {
        PREEMPTED => matches!(value, "TRUE" | "FALSE"),
        _ => matches!(
            value,
            "NONE" | "MIGRATE_ON_HOST_MAINTENANCE" | "TERMINATE_ON_HOST_MAINTENANCE"
        ),
    };
    documented.then(|| value.to_owned())
}

/// An ETag as the metadata server sends it: a short token of letters and digits. It goes
/// back into a URL (`last_etag=`), so anything else is refused rather than sent.
pub fn parse_etag(header: &[u8]) -> Option<String> {
    let valid =
        !header.is_empty() && header.len() <= 64 && header.iter().all(u8::is_ascii_alphanumeric);
    valid.then(|| String::from_utf8_lossy(header).into_owned())
}

fn update(slot: &mut Option<Watched>, (value, etag): (String, String)) {
    let since = match slot {
        Some(w) if w.value == value => w.since,
        _ => Timestamp::now(),
    };
    *slot = Some(Watched { value, etag, since });
}

/// What one key's values mean: `announces` is a notice of `kind` (deadline `notice`
/// after it was first seen); any other documented value explicitly ends it.
pub struct KeyMeaning {
    announces: &'static str,
    kind: NoticeKind,
    event_id: &'static str,
    /// The notice GCP documents for this key; `None`: the configured one.
    documented_notice: Option<SignedDuration>,
}

/// `preempted=TRUE` is a spot interruption; `FALSE` ends one (a stopped spot VM that was
/// started again).
pub const PREEMPTION: KeyMeaning = KeyMeaning {
    announces: "TRUE",
    kind: NoticeKind::SpotInterruption,
    event_id: "gce-preempted",
    documented_notice: None,
};

/// `TERMINATE_ON_HOST_MAINTENANCE` is maintenance. `MIGRATE_ON_HOST_MAINTENANCE` is a
/// live migration, which the pods survive, and like `NONE` it ends a terminating one.
/// GCP documents that `maintenance-event` changes 60 s before the maintenance starts
/// ("Query metadata server for maintenance event notices"): not the preemption's notice.
pub const TERMINATING_MAINTENANCE: KeyMeaning = KeyMeaning {
    announces: "TERMINATE_ON_HOST_MAINTENANCE",
    kind: NoticeKind::ScheduledMaintenance,
    event_id: "gce-terminate-on-host-maintenance",
    documented_notice: Some(SignedDuration::from_secs(60)),
};

/// What a key's current value (and since when it has held) says.
pub fn value_report(
    meaning: &KeyMeaning,
    value: Option<(&str, Timestamp)>,
    notice: SignedDuration,
    now: Timestamp,
) -> PathReport {
    let mut report = PathReport::default();
    match value {
        Some((value, since)) if value == meaning.announces => report.announced.push(Announced {
            kind: meaning.kind,
            event_id: meaning.event_id.into(),
            notice_time: since.min(now),
            deadline: since
                .checked_add(meaning.documented_notice.unwrap_or(notice))
                .ok(),
        }),
        Some(_) => report.ended.push(meaning.event_id.into()),
        None => {}
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preemption_and_terminating_maintenance_are_notices_and_their_end_is_explicit() {
        let since: Timestamp = "2026-01-01T10:00:00Z".parse().unwrap();
        let now: Timestamp = "2026-01-01T10:00:01Z".parse().unwrap();
        let notice = SignedDuration::from_secs(30);
        let preempted = value_report(&PREEMPTION, Some(("TRUE", since)), notice, now);
        assert_eq!(preempted.announced[0].kind, NoticeKind::SpotInterruption);
        assert_eq!(
            preempted.announced[0].deadline,
            Some("2026-01-01T10:00:30Z".parse().unwrap())
        );
        let terminating = value_report(
            &TERMINATING_MAINTENANCE,
            Some(("TERMINATE_ON_HOST_MAINTENANCE", since)),
            notice,
            now,
        );
        assert_eq!(
            terminating.announced[0].kind,
            NoticeKind::ScheduledMaintenance
        );
        assert_eq!(
            terminating.announced[0].deadline,
            Some("2026-01-01T10:01:00Z".parse().unwrap()),
            "host maintenance comes 60 s after the value changes, whatever the preemption notice"
        );
        let migrating = value_report(
            &TERMINATING_MAINTENANCE,
            Some(("MIGRATE_ON_HOST_MAINTENANCE", since)),
            notice,
            now,
        );
        assert!(migrating.announced.is_empty());
        assert_eq!(migrating.ended, [TERMINATING_MAINTENANCE.event_id]);
        assert_eq!(
            value_report(&PREEMPTION, Some(("FALSE", since)), notice, now).ended,
            [PREEMPTION.event_id]
        );
        assert_eq!(
            value_report(&PREEMPTION, None, notice, now),
            PathReport::default()
        );
    }

    #[test]
    fn instance_names_follow_rfc_1035() {
        assert_eq!(
            parse_instance_name("gke-spot-pool-7f3a\n"),
            Some("gke-spot-pool-7f3a")
        );
        let long = "a".repeat(64);
        for bad in [
            "",
            "7-starts-with-a-digit",
            "Upper",
            "under_score",
            "<html>",
            long.as_str(),
        ] {
            assert_eq!(parse_instance_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_documented_values_and_plain_etags_are_accepted() {
        assert_eq!(parse_value(PREEMPTED, "TRUE\n").as_deref(), Some("TRUE"));
        assert_eq!(parse_value(MAINTENANCE, "NONE").as_deref(), Some("NONE"));
        for bad in ["", "true", "TRUE FALSE", "<html>"] {
            assert_eq!(parse_value(PREEMPTED, bad), None, "{bad:?}");
        }
        assert_eq!(parse_value(MAINTENANCE, "SOMETHING_NEW"), None);
        assert_eq!(
            parse_etag(b"f3a1b2c3d4e5f607").as_deref(),
            Some("f3a1b2c3d4e5f607")
        );
        for bad in [
            &b""[..],
            b"abc&timeout_sec=0",
            b"\"quoted\"",
            &[0xff, 0x41][..],
        ] {
            assert_eq!(parse_etag(bad), None, "{bad:?}");
        }
    }
}
