//! Azure Scheduled Events: `GET /metadata/scheduledevents` with `Metadata: true`.
//!
//! Events are broadcast to every VM of a scale set, so only those whose `Resources`
//! name this VM count. The VM's name is read once from the instance metadata
//! (`compute/name`): that is the very string Scheduled Events puts in `Resources`
//! (`<vmss>_<instance id>` for a scale set instance), whereas deriving it from the
//! Node's providerID depends on naming conventions. `--azure-vm-name` overrides it.

use jiff::{SignedDuration, Timestamp};
use reclaim_model::NoticeKind;
use serde::Deserialize;
use tokio::sync::Mutex;

use super::{Announced, MetadataError, ok_body, parse_utc, snippet};

const EVENTS_PATH: &str = "/metadata/scheduledevents?api-version=2020-07-01";
const NAME_PATH: &str = "/metadata/instance/compute/name?api-version=2021-02-01&format=text";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Document {
    pub document_incarnation: u64,
    pub events: Vec<ScheduledEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduledEvent {
    pub event_id: String,
    pub event_type: String,
    #[serde(default)]
    pub resources: Vec<String>,
    pub event_status: String,
    /// RFC 1123 while Scheduled; empty once Started.
    #[serde(default)]
    pub not_before: String,
}

/// How Scheduled Events map to notices.
#[derive(Debug, Clone)]
pub struct AzureRules {
    pub vm_name: String,
    /// Act on `Freeze` (a pause of a few seconds) as maintenance; ignored by default.
    pub include_freeze: bool,
    /// Deadline of a Started `Preempt` whose NotBefore is already empty.
    pub preemption_notice: SignedDuration,
}

pub fn parse_document(body: &str) -> Result<Document, MetadataError> {
    serde_json::from_str(body).map_err(|e| MetadataError::Garbage {
        what: format!("Azure GET {EVENTS_PATH}"),
        expected: "a Scheduled Events document",
        detail: e.to_string(),
    })
}

/// `Mon, 19 Sep 2016 18:29:47 GMT`
fn parse_rfc1123(text: &str) -> Option<Timestamp> {
    parse_utc("%a, %d %b %Y %H:%M:%S GMT", text)
}

/// The events for this VM as notices: `Preempt` is a spot interruption, `Terminate` a
/// scale-set termination (drained like an ASG one), `Reboot` and `Redeploy` maintenance.
pub fn announced_from(document: &Document, rules: &AzureRules, now: Timestamp) -> Vec<Announced> {
    document
        .events
        .iter()
        .filter(|e| {
            e.resources
                .iter()
                .any(|r| r.eq_ignore_ascii_case(&rules.vm_name))
        })
        .filter_map(|e| {
            let kind = match e.event_type.as_str() {
                "Preempt" => NoticeKind::SpotInterruption,
                "Terminate" => NoticeKind::AsgTermination,
                "Reboot" | "Redeploy" => NoticeKind::ScheduledMaintenance,
                "Freeze" if rules.include_freeze => NoticeKind::ScheduledMaintenance,
                _ => return None,
            };
            let started = if kind == NoticeKind::SpotInterruption {
                now + rules.preemption_notice
            } else {
                now
            };
            Some(Announced {
                kind,
                event_id: e.event_id.clone(),
                notice_time: now,
                deadline: Some(parse_rfc1123(&e.not_before).unwrap_or(started)),
            })
        })
        .collect()
}

pub struct AzureEvents {
    http: reqwest::Client,
    base: String,
    timeout: std::time::Duration,
    first_call_timeout: std::time::Duration,
    rules: AzureRules,
    /// The last DocumentIncarnation seen; `None` before the first answer.
    incarnation: Mutex<Option<u64>>,
}

impl AzureEvents {
    /// Reads this VM's name from the instance metadata, unless `vm_name` is given.
    pub async fn connect(
        http: reqwest::Client,
        base: &str,
        timeout: std::time::Duration,
        first_call_timeout: std::time::Duration,
        mut rules: AzureRules,
    ) -> Result<AzureEvents, MetadataError> {
        let base = base.trim_end_matches('/').to_owned();
        if rules.vm_name.is_empty() {
            rules.vm_name = get(&http, &base, NAME_PATH, timeout)
                .await?
                .trim()
                .to_owned();
        }
        Ok(AzureEvents {
            http,
            base,
            timeout,
            first_call_timeout,
            rules,
            incarnation: Mutex::new(None),
        })
    }

    pub fn vm_name(&self) -> &str {
        &self.rules.vm_name
    }

    pub async fn announced(&self, now: Timestamp) -> Result<Vec<Announced>, MetadataError> {
        let mut incarnation = self.incarnation.lock().await;
        // The first call after boot can take up to two minutes to answer.
        let timeout = if incarnation.is_none() {
            self.first_call_timeout
        } else {
            self.timeout
        };
        let document = parse_document(&get(&self.http, &self.base, EVENTS_PATH, timeout).await?)?;
        if *incarnation != Some(document.document_incarnation) {
            tracing::info!(
                incarnation = document.document_incarnation,
                events = document.events.len(),
                "Azure scheduled events changed"
            );
            *incarnation = Some(document.document_incarnation);
        }
        Ok(announced_from(&document, &self.rules, now))
    }

    /// Tells Azure this VM is ready for the event, so the platform may proceed early.
    pub async fn acknowledge(&self, event_id: &str) -> Result<(), MetadataError> {
        let what = format!("Azure POST {EVENTS_PATH}");
        let body = serde_json::json!({"StartRequests": [{"EventId": event_id}]});
        let response = self
            .http
            .post(format!("{}{EVENTS_PATH}", self.base))
            .header("Metadata", "true")
            .json(&body)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| super::request_error(&what, e, self.timeout, ""))?;
        let status = response.status().as_u16();
        if status != 200 {
            let body = response.text().await.unwrap_or_default();
            return Err(MetadataError::Status {
                what,
                status,
                body: snippet(&body),
            });
        }
        Ok(())
    }
}

async fn get(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    timeout: std::time::Duration,
) -> Result<String, MetadataError> {
    let what = format!("Azure GET {path}");
    let response = http
        .get(format!("{base}{path}"))
        .header("Metadata", "true")
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| super::request_error(&what, e, timeout, ""))?;
    ok_body(response, &what, timeout, "").await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> AzureRules {
        AzureRules {
            vm_name: "aks-spot-12345678-vmss_3".into(),
            include_freeze: false,
            preemption_notice: SignedDuration::from_secs(30),
        }
    }

    fn document(events: serde_json::Value) -> Document {
        parse_document(&serde_json::json!({"DocumentIncarnation": 7, "Events": events}).to_string())
            .unwrap()
    }

    fn event(id: &str, kind: &str, vm: &str, status: &str, not_before: &str) -> serde_json::Value {
        serde_json::json!({
            "EventId": id, "EventType": kind, "ResourceType": "VirtualMachine", "Resources": [vm],
            "EventStatus": status, "NotBefore": not_before, "Description": "", "EventSource": "Platform",
            "DurationInSeconds": -1,
        })
    }

    #[test]
    fn only_this_vms_events_count_and_each_type_maps_to_its_kind() {
        let now: Timestamp = "2016-09-19T18:29:00Z".parse().unwrap();
        let doc = document(serde_json::json!([
            event(
                "a",
                "Preempt",
                "aks-spot-12345678-vmss_3",
                "Scheduled",
                "Mon, 19 Sep 2016 18:29:47 GMT"
            ),
            event(
                "b",
                "Preempt",
                "aks-spot-12345678-vmss_4",
                "Scheduled",
                "Mon, 19 Sep 2016 18:29:47 GMT"
            ),
            event(
                "c",
                "Reboot",
                "AKS-SPOT-12345678-VMSS_3",
                "Scheduled",
                "Mon, 19 Sep 2016 18:44:00 GMT"
            ),
            event(
                "d",
                "Freeze",
                "aks-spot-12345678-vmss_3",
                "Scheduled",
                "Mon, 19 Sep 2016 18:44:00 GMT"
            ),
            event(
                "e",
                "Terminate",
                "aks-spot-12345678-vmss_3",
                "Scheduled",
                "Mon, 19 Sep 2016 18:39:00 GMT"
            ),
            event(
                "f",
                "Redeploy",
                "aks-spot-12345678-vmss_3",
                "Scheduled",
                "Mon, 19 Sep 2016 18:39:00 GMT"
            ),
        ]));
        let announced = announced_from(&doc, &rules(), now);
        let kinds: Vec<_> = announced
            .iter()
            .map(|a| (a.event_id.as_str(), a.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("a", NoticeKind::SpotInterruption),
                ("c", NoticeKind::ScheduledMaintenance),
                ("e", NoticeKind::AsgTermination),
                ("f", NoticeKind::ScheduledMaintenance)
            ]
        );
        assert_eq!(
            announced[0].deadline,
            Some("2016-09-19T18:29:47Z".parse().unwrap())
        );
        let with_freeze = AzureRules {
            include_freeze: true,
            ..rules()
        };
        assert_eq!(announced_from(&doc, &with_freeze, now).len(), 5);
    }

    #[test]
    fn a_started_preemption_with_empty_not_before_gets_the_default_notice() {
        let now: Timestamp = "2026-01-01T10:00:00Z".parse().unwrap();
        let doc = document(serde_json::json!([event(
            "a",
            "Preempt",
            "aks-spot-12345678-vmss_3",
            "Started",
            ""
        )]));
        assert_eq!(
            announced_from(&doc, &rules(), now)[0].deadline,
            Some("2026-01-01T10:00:30Z".parse().unwrap())
        );
    }

    #[test]
    fn a_document_that_is_not_one_is_garbage() {
        assert_eq!(
            parse_document("{\"DocumentIncarnation\": ")
                .unwrap_err()
                .label(),
            "garbage"
        );
        assert_eq!(parse_document("[]").unwrap_err().label(), "garbage");
    }
}
