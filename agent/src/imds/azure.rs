//! Azure Scheduled Events: `GET /metadata/scheduledevents` with `Metadata: true`.
//!
//! Events are broadcast to every VM of a scale set, so only those whose `Resources`
//! name this VM count. The VM's name is read once from the instance metadata
//! (`compute/name`): that is the very string Scheduled Events puts in `Resources`
//! (`<vmss>_<instance id>` for a scale set instance), whereas deriving it from the
//! Node's providerID depends on naming conventions. `--azure-vm-name` overrides it.
//! Until `compute/name` answers, the name derived from the providerID stands in, so a
//! failing `compute/name` never blinds the agent to a preemption.

use std::sync::{Mutex, RwLock};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use reclaim_model::NoticeKind;
use serde::Deserialize;

use super::{Announced, MetadataError, MetadataPath, PathReport, ok_body, parse_utc, snippet};

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
    /// This VM's name as given by `--azure-vm-name`; `None`: ask `compute/name`.
    pub vm_name: Option<String>,
    /// The name derived from the Node's providerID, used until `compute/name` answers.
    pub vm_name_hint: Option<String>,
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

/// This VM's name as Scheduled Events writes it, from an AKS Node's providerID: a scale
/// set instance `.../virtualMachineScaleSets/<vmss>/virtualMachines/<n>` is `<vmss>_<n>`,
/// a standalone VM `.../virtualMachines/<name>` is `<name>`.
pub fn vm_name_from_provider_id(provider_id: &str) -> Option<String> {
    let path = provider_id.strip_prefix("azure://")?;
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let at = |i: usize| parts.get(i).copied().filter(|p| !p.is_empty());
    let vm = parts
        .iter()
        .rposition(|p| p.eq_ignore_ascii_case("virtualMachines"))?;
    let name = at(vm + 1)?;
    match vm
        .checked_sub(2)
        .filter(|i| parts[*i].eq_ignore_ascii_case("virtualMachineScaleSets"))
    {
        Some(i) => Some(format!("{}_{name}", at(i + 1)?)),
        None => Some(name.to_owned()),
    }
}

/// The `compute/name` answer: a VM name (letters, digits, `-`, `_`, `.`).
pub fn parse_compute_name(body: &str) -> Result<String, MetadataError> {
    let name = body.trim();
    let valid = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(name.to_owned())
    } else {
        Err(MetadataError::Garbage {
            what: format!("Azure GET {NAME_PATH}"),
            expected: "a VM name",
            detail: format!("{:?}", snippet(body)),
        })
    }
}

/// The events for `vm_name` as notices: `Preempt` is a spot interruption, `Terminate` a
/// scale-set termination (drained like an ASG one), `Reboot` and `Redeploy` maintenance.
/// Azure has no explicit end: a finished or canceled event vanishes from the document.
pub fn announced_from(
    document: &Document,
    vm_name: &str,
    rules: &AzureRules,
    now: Timestamp,
) -> PathReport {
    let announced = document
        .events
        .iter()
        .filter(|e| e.resources.iter().any(|r| r.eq_ignore_ascii_case(vm_name)))
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
        .collect();
    PathReport {
        announced,
        ended: Vec::new(),
    }
}

pub struct AzureEvents {
    http: reqwest::Client,
    base: String,
    timeout: Duration,
    first_call_timeout: Duration,
    rules: AzureRules,
    /// This VM's name: `--azure-vm-name`, or `compute/name` once it has answered.
    vm_name: RwLock<Option<String>>,
    /// The last DocumentIncarnation seen; `None` before the first answer.
    incarnation: Mutex<Option<u64>>,
}

impl AzureEvents {
    pub fn new(
        http: reqwest::Client,
        base: &str,
        timeout: Duration,
        first_call_timeout: Duration,
        rules: AzureRules,
    ) -> AzureEvents {
        AzureEvents {
            http,
            base: base.trim_end_matches('/').to_owned(),
            timeout,
            first_call_timeout,
            vm_name: RwLock::new(rules.vm_name.clone()),
            rules,
            incarnation: Mutex::new(None),
        }
    }

    /// Whether this VM's name is settled (given, or read from `compute/name`).
    pub fn knows_vm_name(&self) -> bool {
        self.vm_name.read().expect("vm name lock").is_some()
    }

    /// One poll of the events or of `compute/name`.
    pub async fn poll(
        &self,
        path: MetadataPath,
        now: Timestamp,
    ) -> Result<PathReport, MetadataError> {
        match path {
            MetadataPath::AzureEvents => self.events(self.timeout, now).await,
            MetadataPath::AzureComputeName => {
                let name = self.vm_name().await?;
                tracing::info!(vm = %name, "acting on Azure scheduled events for this VM only");
                *self.vm_name.write().expect("vm name lock") = Some(name);
                Ok(PathReport::default())
            }
            other => unreachable!("{other:?} is not an Azure path"),
        }
    }

    /// This VM's name, as `compute/name` says it.
    pub async fn vm_name(&self) -> Result<String, MetadataError> {
        parse_compute_name(&get(&self.http, &self.base, NAME_PATH, self.timeout).await?)
    }

    /// The first call after boot, which can take up to two minutes to answer: made once,
    /// beside the regular polls, with the long timeout.
    pub async fn first_call(&self, now: Timestamp) -> Result<PathReport, MetadataError> {
        self.events(self.first_call_timeout, now).await
    }

    async fn events(&self, timeout: Duration, now: Timestamp) -> Result<PathReport, MetadataError> {
        let document = parse_document(&get(&self.http, &self.base, EVENTS_PATH, timeout).await?)?;
        {
            let mut incarnation = self.incarnation.lock().expect("incarnation lock");
            if *incarnation != Some(document.document_incarnation) {
                tracing::info!(
                    incarnation = document.document_incarnation,
                    events = document.events.len(),
                    "Azure scheduled events changed"
                );
                *incarnation = Some(document.document_incarnation);
            }
        }
        let known = self.vm_name.read().expect("vm name lock").clone();
        let Some(vm_name) = known.or_else(|| self.rules.vm_name_hint.clone()) else {
            return Err(MetadataError::NotYet {
                what: format!("Azure GET {EVENTS_PATH}"),
                detail: "this VM's name is not known yet (instance/compute/name has not answered and the Node's providerID names no VM); set --azure-vm-name".into(),
            });
        };
        Ok(announced_from(&document, &vm_name, &self.rules, now))
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
    timeout: Duration,
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

    const VM: &str = "aks-spot-12345678-vmss_3";

    fn rules() -> AzureRules {
        AzureRules {
            vm_name: None,
            vm_name_hint: None,
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
        let announced = announced_from(&doc, VM, &rules(), now).announced;
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
        assert_eq!(
            announced_from(&doc, VM, &with_freeze, now).announced.len(),
            5
        );
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
            announced_from(&doc, VM, &rules(), now).announced[0].deadline,
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

    #[test]
    fn the_vm_name_is_derived_from_an_aks_provider_id() {
        assert_eq!(
            vm_name_from_provider_id("azure:///subscriptions/0000/resourceGroups/mc_rg/providers/Microsoft.Compute/virtualMachineScaleSets/aks-spot-12345678-vmss/virtualMachines/3").as_deref(),
            Some("aks-spot-12345678-vmss_3")
        );
        assert_eq!(
            vm_name_from_provider_id("azure:///subscriptions/0000/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/spark-vm-1").as_deref(),
            Some("spark-vm-1")
        );
        for not_azure in [
            "aws:///us-east-1a/i-0abc",
            "azure:///subscriptions/0000",
            "azure:///x/virtualMachines/",
            "",
        ] {
            assert_eq!(vm_name_from_provider_id(not_azure), None, "{not_azure:?}");
        }
    }

    #[test]
    fn compute_names_are_names_and_anything_else_is_garbage() {
        assert_eq!(
            parse_compute_name("aks-spot-vmss_3\n").unwrap(),
            "aks-spot-vmss_3"
        );
        for bad in [
            "",
            "  ",
            "<html><body>404</body></html>",
            "a b",
            "{\"name\": 1}",
        ] {
            assert_eq!(
                parse_compute_name(bad).unwrap_err().label(),
                "garbage",
                "{bad:?}"
            );
        }
    }
}
