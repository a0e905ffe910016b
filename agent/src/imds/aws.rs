//! AWS instance metadata (IMDSv2): spot instance-action, rebalance recommendation,
//! scheduled maintenance events and the Auto Scaling target lifecycle state.
//!
//! The session token is cached and renewed before it expires; a 401 (token expired or
//! revoked) renews it and retries the request once. 404 means "no such event" and its
//! XHTML body is never parsed as a notice.

use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use reclaim_model::NoticeKind;
use serde::Deserialize;
use tokio::sync::Mutex;

use super::{
    Announced, MetadataError, MetadataPath, PathReport, ok_body, parse_utc, request_error, snippet,
};

const TOKEN_PATH: &str = "/latest/api/token";
const TOKEN_TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";
const INSTANCE_ACTION: &str = "/latest/meta-data/spot/instance-action";
const REBALANCE: &str = "/latest/meta-data/events/recommendations/rebalance";
const MAINTENANCE: &str = "/latest/meta-data/events/maintenance/scheduled";
const LIFECYCLE: &str = "/latest/meta-data/autoscaling/target-lifecycle-state";
/// AWS gives the spot interruption notice two minutes before the action.
const SPOT_NOTICE_LEAD: SignedDuration = SignedDuration::from_secs(120);
const HOP_LIMIT_HINT: &str = "; without hostNetwork the instance needs an IMDSv2 hop limit of 2 \
     (aws ec2 modify-instance-metadata-options --http-put-response-hop-limit 2), or run the agent with hostNetwork: true";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InstanceAction {
    pub action: String,
    pub time: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceEvent {
    pub code: String,
    /// Free text; for `system-maintenance` it says whether the network or the power is
    /// maintained.
    pub description: String,
    pub state: String,
    pub event_id: String,
    pub not_before: Timestamp,
}

struct Token {
    value: String,
    renew_at: Instant,
}

/// An IMDSv2 client for one instance.
pub struct AwsImds {
    http: reqwest::Client,
    base: String,
    timeout: Duration,
    token_ttl: Duration,
    token: Mutex<Option<Token>>,
}

impl AwsImds {
    /// `base` is e.g. `http://169.254.169.254`; every request times out after `timeout`.
    pub fn new(
        http: reqwest::Client,
        base: &str,
        timeout: Duration,
        token_ttl: Duration,
    ) -> AwsImds {
        AwsImds {
            http,
            base: base.trim_end_matches('/').to_owned(),
            timeout,
            token_ttl,
            token: Mutex::new(None),
        }
    }

    /// One poll of one path: what it announces, or why it could not tell.
    pub async fn poll(
        &self,
        path: MetadataPath,
        now: Timestamp,
    ) -> Result<PathReport, MetadataError> {
        Ok(match path {
            MetadataPath::AwsSpot => spot_report(
                self.get(INSTANCE_ACTION)
                    .await?
                    .map(|b| parse_instance_action(&b))
                    .transpose()?,
            ),
            MetadataPath::AwsRebalance => rebalance_report(
                self.get(REBALANCE)
                    .await?
                    .map(|b| parse_rebalance(&b))
                    .transpose()?,
            ),
            MetadataPath::AwsMaintenance => maintenance_report(
                &self
                    .get(MAINTENANCE)
                    .await?
                    .map(|b| parse_maintenance(&b))
                    .transpose()?
                    .unwrap_or_default(),
                now,
            ),
            MetadataPath::AwsLifecycle => lifecycle_report(
                self.get(LIFECYCLE)
                    .await?
                    .map(|b| parse_lifecycle_state(&b))
                    .transpose()?
                    .as_deref(),
                now,
            ),
            other => unreachable!("{other:?} is not an AWS path"),
        })
    }

    /// This instance's id (`i-` and hex), as IMDS names it; `None` when it names none.
    pub async fn instance_id(&self) -> Result<Option<String>, MetadataError> {
        const PATH: &str = "/latest/meta-data/instance-id";
        let Some(body) = self.get(PATH).await? else {
            return Ok(None);
        };
        let id = body.trim();
        if id.is_empty() {
            return Ok(None);
        }
        parse_instance_id(id)
            .map(|id| Some(id.to_owned()))
            .ok_or_else(|| garbage(PATH, "an instance id (i- and hex)", snippet(&body)))
    }

    /// GET with the session token; `None` on 404. A 401 renews the token and retries once.
    async fn get(&self, path: &str) -> Result<Option<String>, MetadataError> {
        let mut token = self.token().await?;
        for attempt in 0..2 {
            let response = self
                .http
                .get(format!("{}{path}", self.base))
                .header(TOKEN_HEADER, &token)
                .timeout(self.timeout)
                .send()
                .await
                .map_err(|e| request_error(&format!("IMDS {path}"), e, self.timeout, ""))?;
            let status = response.status().as_u16();
            let body = response
                .text()
                .await
                .map_err(|e| request_error(&format!("IMDS {path}"), e, self.timeout, ""))?;
            match status {
                200 => return Ok(Some(body)),
                404 => return Ok(None),
                401 if attempt == 0 => token = self.renewed_token(&token).await?,
                _ => {
                    return Err(MetadataError::Status {
                        what: format!("IMDS GET {path}"),
                        status,
                        body: snippet(&body),
                    });
                }
            }
        }
        unreachable!("the second attempt always returns")
    }

    /// The cached session token, or a new one when it is due for renewal.
    async fn token(&self) -> Result<String, MetadataError> {
        let mut cached = self.token.lock().await;
        match cached.as_ref().filter(|t| Instant::now() < t.renew_at) {
            Some(token) => Ok(token.value.clone()),
            None => self.fetch_token(&mut cached).await,
        }
    }

    /// A token to replace `refused`. The paths are polled concurrently, so several
    /// requests see the same 401: only the first fetches a new token, the others use it.
    async fn renewed_token(&self, refused: &str) -> Result<String, MetadataError> {
        let mut cached = self.token.lock().await;
        match cached.as_ref().filter(|t| t.value != refused) {
            Some(token) => Ok(token.value.clone()),
            None => self.fetch_token(&mut cached).await,
        }
    }

    async fn fetch_token(&self, cached: &mut Option<Token>) -> Result<String, MetadataError> {
        let what = format!("IMDSv2 token request PUT {TOKEN_PATH}");
        let response = self
            .http
            .put(format!("{}{TOKEN_PATH}", self.base))
            .header(TOKEN_TTL_HEADER, self.token_ttl.as_secs().to_string())
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| request_error(&what, e, self.timeout, HOP_LIMIT_HINT))?;
        let body = ok_body(response, &what, self.timeout, HOP_LIMIT_HINT).await?;
        let value = body.trim().to_owned();
        if value.is_empty() || value.contains(char::is_whitespace) {
            return Err(MetadataError::Garbage {
                what,
                expected: "a session token",
                detail: format!("{:?}", snippet(&body)),
            });
        }
        // Renew at 90 % of the lifetime so a token never expires between two polls.
        let renew_at = Instant::now() + self.token_ttl.mul_f64(0.9);
        *cached = Some(Token {
            value: value.clone(),
            renew_at,
        });
        Ok(value)
    }
}

fn garbage(path: &str, expected: &'static str, detail: impl std::fmt::Display) -> MetadataError {
    MetadataError::Garbage {
        what: format!("IMDS {path}"),
        expected,
        detail: detail.to_string(),
    }
}

/// An EC2 instance id: `i-` and 8 or 17 lowercase hex digits.
pub fn parse_instance_id(text: &str) -> Option<&str> {
    let hex = text.strip_prefix("i-")?;
    let valid = matches!(hex.len(), 8 | 17)
        && hex
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
    valid.then_some(text)
}

pub fn parse_instance_action(body: &str) -> Result<InstanceAction, MetadataError> {
    serde_json::from_str(body).map_err(|e| garbage(INSTANCE_ACTION, "instance-action JSON", e))
}

pub fn parse_rebalance(body: &str) -> Result<Timestamp, MetadataError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Rebalance {
        notice_time: Timestamp,
    }
    serde_json::from_str::<Rebalance>(body)
        .map(|r| r.notice_time)
        .map_err(|e| garbage(REBALANCE, "rebalance recommendation JSON", e))
}

pub fn parse_maintenance(body: &str) -> Result<Vec<MaintenanceEvent>, MetadataError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Raw {
        code: String,
        #[serde(default)]
        description: String,
        state: String,
        event_id: String,
        not_before: String,
    }
    let raw: Vec<Raw> = serde_json::from_str(body)
        .map_err(|e| garbage(MAINTENANCE, "a JSON array of events", e))?;
    raw.into_iter()
        .map(|r| {
            let not_before = parse_aws_event_time(&r.not_before).ok_or_else(|| {
                garbage(
                    MAINTENANCE,
                    "event times like \"21 Jan 2019 09:00:43 GMT\"",
                    &r.not_before,
                )
            })?;
            Ok(MaintenanceEvent {
                code: r.code,
                description: r.description,
                state: r.state,
                event_id: r.event_id,
                not_before,
            })
        })
        .collect()
}

/// Maintenance event times look like `21 Jan 2019 09:00:43 GMT`.
fn parse_aws_event_time(text: &str) -> Option<Timestamp> {
    parse_utc("%d %b %Y %H:%M:%S GMT", text)
}

/// The Auto Scaling target lifecycle state: one word (`InService`, `Terminated`), or
/// two joined by a colon (`Warmed:Pending`).
pub fn parse_lifecycle_state(body: &str) -> Result<String, MetadataError> {
    let state = body.trim();
    let valid = !state.is_empty()
        && state.len() <= 64
        && state
            .split(':')
            .all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphabetic()));
    if valid {
        Ok(state.to_owned())
    } else {
        Err(garbage(
            LIFECYCLE,
            "a lifecycle state like InService",
            format!("{:?}", snippet(body)),
        ))
    }
}

const ASG_TERMINATION_EVENT: &str = "asg-target-lifecycle-terminated";

/// A spot instance-action is a spot interruption two minutes before its action. AWS never
/// withdraws one while the instance runs: only its absence (an instance that came back
/// after a stop or hibernation) ends it.
pub fn spot_report(action: Option<InstanceAction>) -> PathReport {
    PathReport {
        announced: action
            .into_iter()
            .map(|spot| Announced {
                kind: NoticeKind::SpotInterruption,
                event_id: format!("instance-action-{}-{}", spot.action, spot.time),
                notice_time: spot.time - SPOT_NOTICE_LEAD,
                deadline: Some(spot.time),
            })
            .collect(),
        ended: Vec::new(),
    }
}

/// A rebalance recommendation has no deadline; it expires by the agent's own rule.
pub fn rebalance_report(notice_time: Option<Timestamp>) -> PathReport {
    PathReport {
        announced: notice_time
            .into_iter()
            .map(|notice_time| Announced {
                kind: NoticeKind::Rebalance,
                event_id: format!("rebalance-{notice_time}"),
                notice_time,
                deadline: None,
            })
            .collect(),
        ended: Vec::new(),
    }
}

/// Active maintenance events are notices (AWS gives no announcement time: `now` stands
/// in); `canceled` and `completed` ones are explicit ends. One kind is not: network
/// maintenance (`system-maintenance` described as such), where "instances lose network
/// connectivity for a brief period" and keep running, so a drain would end work that
/// would have survived. Power maintenance ("unavailable for a brief period of time and
/// then rebooted"), the reboots, stops and retirements, and any code AWS adds later, are
/// drained: the pods would not survive them.
pub fn maintenance_report(events: &[MaintenanceEvent], now: Timestamp) -> PathReport {
    let mut report = PathReport::default();
    for event in events {
        match event.state.as_str() {
            "active" if network_maintenance(event) => {}
            "active" => report.announced.push(Announced {
                kind: NoticeKind::ScheduledMaintenance,
                event_id: event.event_id.clone(),
                notice_time: now,
                deadline: Some(event.not_before),
            }),
            "canceled" | "completed" => report.ended.push(event.event_id.clone()),
            _ => {}
        }
    }
    report
}

/// `system-maintenance` of the network only: the instance keeps running.
fn network_maintenance(event: &MaintenanceEvent) -> bool {
    let description = event.description.to_ascii_lowercase();
    event.code == "system-maintenance"
        && description.contains("network")
        && !description.contains("power")
}

/// `Terminated` is a termination without a deadline; `InService` explicitly ends one
/// (the instance is back in service). Other states say nothing either way.
pub fn lifecycle_report(state: Option<&str>, now: Timestamp) -> PathReport {
    let mut report = PathReport::default();
    match state {
        Some("Terminated") => report.announced.push(Announced {
            kind: NoticeKind::AsgTermination,
            event_id: ASG_TERMINATION_EVENT.into(),
            notice_time: now,
            deadline: None,
        }),
        Some("InService") => report.ended.push(ASG_TERMINATION_EVENT.into()),
        _ => {}
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_action_parses_compact_and_tab_pretty_json() {
        let pretty = "{\n\t\"action\": \"terminate\",\n\t\"time\": \"2020-04-24T17:11:44Z\"\n}";
        let action = parse_instance_action(pretty).unwrap();
        assert_eq!(action.action, "terminate");
        assert_eq!(
            action.time,
            "2020-04-24T17:11:44Z".parse::<Timestamp>().unwrap()
        );
        assert!(
            parse_instance_action(r#"{"action":"stop","time":"2020-04-24T17:11:44Z"}"#).is_ok()
        );
    }

    #[test]
    fn instance_ids_are_i_and_8_or_17_hex_digits() {
        for good in ["i-0123abcd", "i-0123456789abcdef0"] {
            assert_eq!(parse_instance_id(good), Some(good));
        }
        for bad in [
            "",
            "i-",
            "i-0123ABCD",
            "i-0123456789abcdef",
            "0123456789abcdef0",
            "i-0123abcd\n<html>",
        ] {
            assert_eq!(parse_instance_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn an_xhtml_error_page_is_garbage_not_a_notice() {
        let page = "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n<html><head><title>404 - Not Found</title></head></html>";
        let err = parse_instance_action(page).unwrap_err();
        assert_eq!(err.label(), "garbage");
        assert!(err.to_string().contains("instance-action"), "{err}");
        assert!(parse_rebalance(page).is_err());
        assert!(
            parse_maintenance("{}").is_err(),
            "an object is not the documented array"
        );
    }

    #[test]
    fn maintenance_events_parse_aws_dates_and_only_active_ones_are_announced() {
        let body = r#"[
            {"Code": "system-reboot", "Description": "scheduled reboot", "State": "active",
             "EventId": "instance-event-0d59937288b749b32", "NotBefore": "21 Jan 2019 09:00:43 GMT",
             "NotAfter": "21 Jan 2019 09:17:23 GMT", "NotBeforeDeadline": "9 Feb 2019 09:00:43 GMT"},
            {"Code": "instance-stop", "Description": "[Canceled] stop", "State": "canceled",
             "EventId": "instance-event-1", "NotBefore": "1 Feb 2019 09:00:43 GMT"}
        ]"#;
        let events = parse_maintenance(body).unwrap();
        assert_eq!(
            events[0].not_before,
            "2019-01-21T09:00:43Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(
            events[1].not_before,
            "2019-02-01T09:00:43Z".parse::<Timestamp>().unwrap()
        );
        let now: Timestamp = "2019-01-20T00:00:00Z".parse().unwrap();
        let report = maintenance_report(&events, now);
        assert_eq!(report.announced.len(), 1);
        assert_eq!(
            report.announced[0].event_id,
            "instance-event-0d59937288b749b32"
        );
        assert_eq!(report.announced[0].kind, NoticeKind::ScheduledMaintenance);
        assert_eq!(
            report.ended,
            ["instance-event-1"],
            "a canceled event is an explicit end"
        );
        assert!(parse_maintenance("[]").unwrap().is_empty());
    }

    #[test]
    fn network_maintenance_is_not_drained_and_power_maintenance_is() {
        let body = r#"[
            {"Code": "system-maintenance", "Description": "scheduled network maintenance", "State": "active",
             "EventId": "instance-event-network", "NotBefore": "21 Jan 2019 09:00:43 GMT"},
            {"Code": "system-maintenance", "Description": "scheduled power maintenance", "State": "active",
             "EventId": "instance-event-power", "NotBefore": "21 Jan 2019 09:00:43 GMT"},
            {"Code": "system-maintenance", "State": "active",
             "EventId": "instance-event-undescribed", "NotBefore": "21 Jan 2019 09:00:43 GMT"}
        ]"#;
        let events = parse_maintenance(body).unwrap();
        let now: Timestamp = "2019-01-20T00:00:00Z".parse().unwrap();
        let announced: Vec<String> = maintenance_report(&events, now)
            .announced
            .into_iter()
            .map(|a| a.event_id)
            .collect();
        assert_eq!(
            announced,
            ["instance-event-power", "instance-event-undescribed"]
        );
    }

    #[test]
    fn spot_notice_is_two_minutes_before_its_action_and_rebalance_has_no_deadline() {
        let now: Timestamp = "2020-04-24T17:10:00Z".parse().unwrap();
        let spot = spot_report(Some(
            parse_instance_action(r#"{"action":"terminate","time":"2020-04-24T17:11:44Z"}"#)
                .unwrap(),
        ));
        assert_eq!(
            spot.announced[0].notice_time,
            "2020-04-24T17:09:44Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(
            spot.announced[0].deadline,
            Some("2020-04-24T17:11:44Z".parse().unwrap())
        );
        assert!(spot_report(None).announced.is_empty());
        let rebalance = rebalance_report(Some(
            parse_rebalance(r#"{"noticeTime": "2020-04-24T17:05:00Z"}"#).unwrap(),
        ));
        assert_eq!(rebalance.announced[0].kind, NoticeKind::Rebalance);
        assert_eq!(rebalance.announced[0].deadline, None);
        let terminated = lifecycle_report(Some("Terminated"), now);
        assert_eq!(terminated.announced[0].kind, NoticeKind::AsgTermination);
        let back = lifecycle_report(Some("InService"), now);
        assert!(back.announced.is_empty());
        assert_eq!(back.ended, [terminated.announced[0].event_id.clone()]);
        assert!(lifecycle_report(Some("Pending:Wait"), now) == PathReport::default());
    }

    #[test]
    fn lifecycle_states_are_words_and_anything_else_is_garbage() {
        assert_eq!(parse_lifecycle_state("InService\n").unwrap(), "InService");
        assert_eq!(
            parse_lifecycle_state("Warmed:Pending").unwrap(),
            "Warmed:Pending"
        );
        for bad in ["", "<html>", "In Service", ":", "Warmed:", "\u{fffd}"] {
            assert_eq!(
                parse_lifecycle_state(bad).unwrap_err().label(),
                "garbage",
                "{bad:?}"
            );
        }
    }
}
