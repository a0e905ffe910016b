//! `kubectl reclaim advise`: where spot capacity has been reliable, from what the cluster
//! knows. Pure: nodes and records in, a ranking out.
//!
//! **Exposure** is node-hours in the window: a Node that exists counts from its creation (or
//! the window's start) until now; a node that is gone counts only if an Interruption record
//! remembers it, from its notice minus its age at the notice until the notice. So it is
//! approximate: spot nodes removed without a notice (scaled in, lost without warning) and
//! records past the classifier's retention are not counted, which overstates the rate of
//! zones with much churn. **Interruptions** are spot reclaims announced by a cloud (not drills,
//! rebalance recommendations, maintenance or scale-ins). A group with fewer node-hours than
//! the threshold is "not enough data", never ranked.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use reclaim_model::Placement;
use serde::Serialize;
use serde_json::{Value, json};

use crate::records::Record;

/// A node's life, as far as the window sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpan {
    pub node: String,
    pub placement: Placement,
    pub from: Timestamp,
    pub to: Timestamp,
}

/// Nodes that exist (name, placement, creation), and the nodes gone that records remember.
pub fn spans(
    current: &[(String, Placement, Timestamp)],
    records: &[Record],
    now: Timestamp,
) -> Vec<NodeSpan> {
    let mut spans: Vec<NodeSpan> = current
        .iter()
        .map(|(node, placement, created)| NodeSpan {
            node: node.clone(),
            placement: placement.clone(),
            from: *created,
            to: now,
        })
        .collect();
    let present: BTreeSet<&str> = current.iter().map(|(n, _, _)| n.as_str()).collect();
    // A node name reused (a VM recreated) lives once per record; the same life noticed twice
    // (a drill, then the reclaim) counts once, by its longest record.
    let mut gone: BTreeMap<(&str, Timestamp), NodeSpan> = BTreeMap::new();
    for record in records.iter().filter(|r| !present.contains(r.node())) {
        let Some(age) = record.spec.node_age_seconds else {
            continue;
        };
        let to = record.notice_time();
        let Ok(from) = to.checked_sub(jiff::SignedDuration::from_secs(age.max(0))) else {
            continue;
        };
        let span = NodeSpan {
            node: record.node().to_owned(),
            placement: record.spec.placement.clone(),
            from,
            to,
        };
        gone.entry((record.node(), from))
            .and_modify(|s| {
                if span.to > s.to {
                    *s = span.clone()
                }
            })
            .or_insert(span);
    }
    spans.extend(gone.into_values());
    spans
}

/// How a group (a zone, an instance type) has fared.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rating {
    pub group: String,
    pub interruptions: u32,
    pub node_hours: f64,
    /// Interruptions per 1,000 node-hours; none with not enough data.
    pub per_1000_node_hours: Option<f64>,
    /// `ranked` or `not enough data`.
    pub verdict: String,
    /// The AWS Spot Placement Score, when given one for this group (1-10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement_score: Option<u8>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// What `advise` tells.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Advice {
    pub since: Timestamp,
    pub min_node_hours: f64,
    pub zones: Vec<Rating>,
    pub instance_types: Vec<Rating>,
    /// The zone to pin the next job to, and how; none without a ranked zone.
    pub recommendation: Option<Recommendation>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Recommendation {
    pub zone: String,
    pub why: String,
    /// A pod's `spec.affinity` pinning it to the zone.
    pub affinity: Value,
    /// Spark properties pinning driver and executors (spark-submit `--conf`).
    pub spark_conf: Vec<String>,
    /// A SparkApplication's `spec` fields doing the same.
    pub spark_application: Value,
}

/// AWS Spot Placement Scores (`aws ec2 get-spot-placement-scores` output): by zone id when
/// asked per zone, else by region.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scores {
    pub by_zone_id: BTreeMap<String, u8>,
    pub by_region: BTreeMap<String, u8>,
}

/// Scores below this see frequent interruptions (AWS's guidance).
pub const LOW_SCORE: u8 = 6;

impl Scores {
    pub fn parse(text: &str) -> Result<Scores, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let entries = value["SpotPlacementScores"].as_array().ok_or(
            "no SpotPlacementScores list (the output of aws ec2 get-spot-placement-scores)",
        )?;
        let mut scores = Scores::default();
        for entry in entries {
            let score = entry["Score"]
                .as_u64()
                .filter(|s| (1..=10).contains(s))
                .ok_or_else(|| format!("a Score from 1 to 10 in {entry}"))?
                as u8;
            match (
                entry["AvailabilityZoneId"].as_str(),
                entry["Region"].as_str(),
            ) {
                (Some(zone_id), _) => scores.by_zone_id.insert(zone_id.to_owned(), score),
                (None, Some(region)) => scores.by_region.insert(region.to_owned(), score),
                _ => return Err(format!("neither AvailabilityZoneId nor Region in {entry}")),
            };
        }
        Ok(scores)
    }

    fn of(&self, placement: &Placement) -> Option<u8> {
        let zone = placement
            .zone_id
            .as_ref()
            .and_then(|z| self.by_zone_id.get(z));
        zone.or_else(|| {
            placement
                .region
                .as_ref()
                .and_then(|r| self.by_region.get(r))
        })
        .copied()
    }
}

/// Ranks zones and instance types over `[since, now]`; only `instance_type`'s nodes and
/// records when given.
pub fn advise(
    spans: &[NodeSpan],
    records: &[Record],
    since: Timestamp,
    now: Timestamp,
    instance_type: Option<&str>,
    min_node_hours: f64,
    scores: Option<&Scores>,
) -> Advice {
    let of_type =
        |p: &Placement| instance_type.is_none_or(|t| p.instance_type.as_deref() == Some(t));
    let spans: Vec<&NodeSpan> = spans.iter().filter(|s| of_type(&s.placement)).collect();
    let records: Vec<&Record> = records
        .iter()
        .filter(|r| r.is_reclaim() && r.notice_time() >= since && of_type(&r.spec.placement))
        .collect();
    let rate = |key: fn(&Placement) -> Option<&String>| {
        let mut hours: BTreeMap<String, f64> = BTreeMap::new();
        let mut sample: BTreeMap<String, Placement> = BTreeMap::new();
        for span in &spans {
            let Some(group) = key(&span.placement) else {
                continue;
            };
            let from = span.from.max(since);
            let to = span.to.min(now);
            if to > from {
                *hours.entry(group.clone()).or_default() +=
                    to.duration_since(from).as_secs_f64() / 3600.0;
            }
            sample
                .entry(group.clone())
                .or_insert_with(|| span.placement.clone());
        }
        let mut counts: BTreeMap<String, u32> = BTreeMap::new();
        for record in &records {
            if let Some(group) = key(&record.spec.placement) {
                *counts.entry(group.clone()).or_default() += 1;
                sample
                    .entry(group.clone())
                    .or_insert_with(|| record.spec.placement.clone());
            }
        }
        let groups: BTreeSet<&String> = hours.keys().chain(counts.keys()).collect();
        let mut ratings: Vec<Rating> = groups
            .into_iter()
            .map(|group| {
                let node_hours = hours.get(group).copied().unwrap_or(0.0);
                let interruptions = counts.get(group).copied().unwrap_or(0);
                let enough = node_hours >= min_node_hours && node_hours > 0.0;
                let placement_score = scores.and_then(|s| s.of(&sample[group]));
                let mut notes = Vec::new();
                if placement_score.is_some_and(|s| s < LOW_SCORE) {
                    notes.push(format!(
                        "Spot Placement Score below {LOW_SCORE}: interruptions are frequent"
                    ));
                }
                Rating {
                    group: group.clone(),
                    interruptions,
                    node_hours,
                    per_1000_node_hours: enough
                        .then(|| f64::from(interruptions) * 1000.0 / node_hours),
                    verdict: if enough { "ranked" } else { "not enough data" }.into(),
                    placement_score,
                    notes,
                }
            })
            .collect();
        // Ranked first, fewest interruptions per node-hour first, then most exposure.
        ratings.sort_by(|a, b| {
            let rank = |r: &Rating| r.per_1000_node_hours.unwrap_or(f64::INFINITY);
            rank(a)
                .total_cmp(&rank(b))
                .then(b.node_hours.total_cmp(&a.node_hours))
        });
        ratings
    };
    let zones = rate(|p| p.zone.as_ref());
    let instance_types = rate(|p| p.instance_type.as_ref());
    let recommendation = zones
        .iter()
        .filter(|r| r.per_1000_node_hours.is_some())
        .find(|r| r.placement_score.is_none_or(|s| s >= LOW_SCORE))
        .map(recommend);
    Advice {
        since,
        min_node_hours,
        zones,
        instance_types,
        recommendation,
    }
}

fn recommend(best: &Rating) -> Recommendation {
    const ZONE: &str = "topology.kubernetes.io/zone";
    let rate = best.per_1000_node_hours.unwrap_or_default();
    Recommendation {
        zone: best.group.clone(),
        why: format!(
            "{} interruptions in {:.1} node-hours ({rate:.2} per 1,000 node-hours), the lowest rate{}",
            best.interruptions,
            best.node_hours,
            best.placement_score
                .map(|s| format!(", Spot Placement Score {s}"))
                .unwrap_or_default()
        ),
        affinity: json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": ZONE, "operator": "In", "values": [best.group]}]}]}}}),
        spark_conf: vec![format!(
            "spark.kubernetes.node.selector.{ZONE}={}",
            best.group
        )],
        spark_application: json!({
            "driver": {"nodeSelector": {ZONE: best.group}},
            "executor": {"nodeSelector": {ZONE: best.group}},
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::tests::record;

    fn at(t: &str) -> Timestamp {
        t.parse().unwrap()
    }

    fn placed(zone: &str, zone_id: &str) -> Placement {
        Placement {
            zone: Some(zone.into()),
            zone_id: Some(zone_id.into()),
            instance_type: Some("m5.xlarge".into()),
            ..Placement::default()
        }
    }

    #[test]
    fn zones_rank_by_interruptions_per_node_hour_and_thin_ones_are_not_ranked() {
        let now = at("2026-12-07T12:00:00Z");
        let since = at("2026-11-30T12:00:00Z");
        // Two nodes alive all week in a, one in b; one day of c.
        let current = vec![
            (
                "a1".to_owned(),
                placed("us-east-1a", "use1-az1"),
                at("2026-11-01T00:00:00Z"),
            ),
            (
                "a2".to_owned(),
                placed("us-east-1a", "use1-az1"),
                at("2026-11-01T00:00:00Z"),
            ),
            (
                "b1".to_owned(),
                placed("us-east-1b", "use1-az2"),
                at("2026-11-01T00:00:00Z"),
            ),
            (
                "c1".to_owned(),
                placed("us-east-1c", "use1-az3"),
                at("2026-12-07T11:00:00Z"),
            ),
        ];
        // b: three reclaims of nodes now gone, each 10 hours old; a: one; and a drill in a.
        let records = vec![
            record(
                "r1",
                "us-east-1b",
                "m5.xlarge",
                "aws",
                "2026-12-01T00:00:00Z",
                36000,
                1,
                0,
                0,
            ),
            record(
                "r2",
                "us-east-1b",
                "m5.xlarge",
                "aws",
                "2026-12-02T00:00:00Z",
                36000,
                1,
                0,
                0,
            ),
            record(
                "r3",
                "us-east-1b",
                "m5.xlarge",
                "aws",
                "2026-12-03T00:00:00Z",
                36000,
                1,
                0,
                0,
            ),
            record(
                "r4",
                "us-east-1a",
                "m5.xlarge",
                "aws",
                "2026-12-04T00:00:00Z",
                36000,
                1,
                0,
                0,
            ),
            record(
                "d1",
                "us-east-1a",
                "m5.xlarge",
                "drill",
                "2026-12-05T00:00:00Z",
                36000,
                1,
                0,
                0,
            ),
        ];
        let spans = spans(&current, &records, now);
        let advice = advise(&spans, &records, since, now, None, 24.0, None);
        let order: Vec<(&str, &str)> = advice
            .zones
            .iter()
            .map(|r| (r.group.as_str(), r.verdict.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("us-east-1a", "ranked"),
                ("us-east-1b", "ranked"),
                ("us-east-1c", "not enough data")
            ]
        );
        let a = &advice.zones[0];
        assert_eq!(a.interruptions, 1, "the drill is not a reclaim");
        // 2 nodes x 168 h, and 10 h of each gone node (the reclaimed one, the drilled one).
        assert!((a.node_hours - 356.0).abs() < 0.01, "{}", a.node_hours);
        assert_eq!(advice.recommendation.as_ref().unwrap().zone, "us-east-1a");
        assert_eq!(
            advice.recommendation.unwrap().spark_conf,
            ["spark.kubernetes.node.selector.topology.kubernetes.io/zone=us-east-1a"]
        );
        // A low placement score passes the best zone over.
        let scores = Scores::parse(
            r#"{"SpotPlacementScores": [
            {"Region": "us-east-1", "AvailabilityZoneId": "use1-az1", "Score": 3},
            {"Region": "us-east-1", "AvailabilityZoneId": "use1-az2", "Score": 8}]}"#,
        )
        .unwrap();
        let advice = advise(&spans, &records, since, now, None, 24.0, Some(&scores));
        assert_eq!(advice.zones[0].placement_score, Some(3));
        assert!(advice.zones[0].notes[0].contains("below 6"));
        assert_eq!(advice.recommendation.unwrap().zone, "us-east-1b");
        // Nothing ranked: no recommendation.
        let thin = advise(&spans, &records, since, now, None, 10_000.0, None);
        assert!(thin.zones.iter().all(|r| r.verdict == "not enough data"));
        assert_eq!(thin.recommendation, None);
        // Another instance type: nothing known.
        assert!(
            advise(&spans, &records, since, now, Some("c5.large"), 24.0, None)
                .zones
                .is_empty()
        );
    }

    #[test]
    fn an_absurd_or_negative_node_age_in_a_record_is_no_exposure_and_no_panic() {
        let now = at("2026-12-07T12:00:00Z");
        let records = vec![
            record(
                "huge",
                "us-east-1a",
                "m5.xlarge",
                "aws",
                "2026-12-07T00:00:00Z",
                i64::MAX,
                1,
                0,
                0,
            ),
            record(
                "negative",
                "us-east-1b",
                "m5.xlarge",
                "aws",
                "2026-12-07T00:00:00Z",
                -5,
                1,
                0,
                0,
            ),
        ];
        let spans = spans(&[], &records, now);
        assert_eq!(spans.len(), 1, "the age before the year -9999 is left out");
        assert_eq!(spans[0].from, spans[0].to, "a negative age counts as none");
        let advice = advise(
            &spans,
            &records,
            at("2026-12-01T00:00:00Z"),
            now,
            None,
            24.0,
            None,
        );
        assert!(advice.zones.iter().all(|r| r.verdict == "not enough data"));
    }

    #[test]
    fn scores_are_read_from_the_aws_cli_output_and_bad_ones_refused() {
        let regional =
            Scores::parse(r#"{"SpotPlacementScores": [{"Region": "eu-west-1", "Score": 9}]}"#)
                .unwrap();
        assert_eq!(regional.by_region["eu-west-1"], 9);
        for bad in [
            "[]",
            "{}",
            r#"{"SpotPlacementScores": [{"Region": "x", "Score": 11}]}"#,
            r#"{"SpotPlacementScores": [{"Score": 5}]}"#,
        ] {
            assert!(Scores::parse(bad).is_err(), "{bad}");
        }
    }
}
