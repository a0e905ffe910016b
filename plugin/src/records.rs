//! The Interruption records as the plugin reads them. Records are written by agents (and
//! anyone granted them); each is parsed with the model's types and a record that does not
//! parse is reported and left out, never a crash.

use std::collections::BTreeMap;

use jiff::Timestamp;
use reclaim_model::interruption::InterruptionSpec;
use serde_json::Value;

/// One interruption, with what its drain and the classifier made of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub name: String,
    pub spec: InterruptionSpec,
    pub phase: String,
    /// Per namespace: pods the drain had to move, and of those the late ones (listed pods
    /// only: a record lists at most 100; `pods_total` and `late` count them all).
    pub pods_by_namespace: BTreeMap<String, (u32, u32)>,
    pub pods_total: u32,
    pub late: u32,
    /// Objects the classifier marked retryable, and their namespaces (listed ones).
    pub retryable: u32,
    pub retryable_by_namespace: BTreeMap<String, u32>,
}

impl Record {
    /// The record of an Interruption object's `name`, `spec` and `status`.
    pub fn parse(name: &str, spec: &Value, status: &Value) -> Result<Record, String> {
        let spec: InterruptionSpec =
            serde_json::from_value(spec.clone()).map_err(|e| format!("record {name}: {e}"))?;
        let count = |v: &Value| {
            v.as_u64()
                .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
        };
        let drain = &status["drain"];
        let mut pods_by_namespace = BTreeMap::<String, (u32, u32)>::new();
        for pod in drain["pods"].as_array().into_iter().flatten() {
            let entry = pods_by_namespace
                .entry(pod["namespace"].as_str().unwrap_or("?").to_owned())
                .or_default();
            entry.0 = entry.0.saturating_add(1);
            if pod["late"].as_bool() == Some(true) {
                entry.1 = entry.1.saturating_add(1);
            }
        }
        let mut retryable_by_namespace = BTreeMap::<String, u32>::new();
        for verdict in status["verdicts"]
            .as_object()
            .into_iter()
            .flat_map(|v| v.values())
        {
            let n = retryable_by_namespace
                .entry(verdict["namespace"].as_str().unwrap_or("?").to_owned())
                .or_default();
            *n = n.saturating_add(1);
        }
        Ok(Record {
            name: name.to_owned(),
            phase: status["phase"].as_str().unwrap_or("Unknown").to_owned(),
            pods_total: count(&drain["podsTotal"]),
            late: count(&drain["late"]),
            retryable: count(&status["retryable"]),
            pods_by_namespace,
            retryable_by_namespace,
            spec,
        })
    }

    pub fn node(&self) -> &str {
        &self.spec.interruption.node
    }

    pub fn notice_time(&self) -> Timestamp {
        self.spec.interruption.notice.notice_time
    }

    /// A spot reclaim announced by a cloud (not a drill, a rebalance recommendation,
    /// maintenance or a scale-in): what `advise` counts.
    pub fn is_reclaim(&self) -> bool {
        use reclaim_model::{NoticeKind, Provider};
        let notice = &self.spec.interruption.notice;
        notice.provider != Provider::Drill && notice.kind == NoticeKind::SpotInterruption
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use serde_json::json;

    /// A record as an agent writes it, with `pods` drained (in namespace `team-a`), `late`
    /// of them late and `retryable` objects marked.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        name: &str,
        zone: &str,
        instance_type: &str,
        provider: &str,
        noticed: &str,
        age: i64,
        pods: u32,
        late: u32,
        retryable: u32,
    ) -> Record {
        let listed: Vec<Value> = (0..pods)
            .map(|i| json!({"namespace": "team-a", "name": format!("p{i}"), "late": i < late}))
            .collect();
        let verdicts: serde_json::Map<String, Value> = (0..retryable)
            .map(|i| (format!("Pod/team-a/p{i}"), json!({"namespace": "team-a"})))
            .collect();
        let spec = json!({
            "node": format!("node-{name}"), "provider": provider, "kind": "spot-interruption",
            "eventId": name, "noticeTime": noticed, "detectedAt": noticed,
            "placement": {"zone": zone, "instanceType": instance_type},
            "nodeAgeSeconds": age,
        });
        let status = json!({
            "phase": "Drained", "retryable": retryable, "verdicts": verdicts,
            "drain": {"podsTotal": pods, "late": late, "pods": listed},
        });
        Record::parse(name, &spec, &status).unwrap()
    }

    #[test]
    fn a_record_that_does_not_parse_is_an_error_not_a_crash() {
        let bad = Record::parse("x", &json!({"node": 7}), &json!({}));
        assert!(bad.unwrap_err().contains("record x"));
        let absurd = json!({"drain": {"podsTotal": 1u64 << 40}});
        let spec = json!({"node": "n", "provider": "aws", "kind": "spot-interruption",
            "eventId": "e", "noticeTime": "2026-12-07T00:00:00Z", "detectedAt": "2026-12-07T00:00:00Z"});
        assert_eq!(
            Record::parse("y", &spec, &absurd).unwrap().pods_total,
            u32::MAX
        );
    }
}
