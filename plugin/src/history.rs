//! `kubectl reclaim history`: interruptions in a window, grouped by where they happened or
//! by the namespaces they touched. Pure: records in, rows out.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Serialize;

use crate::records::Record;

/// What to group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum By {
    Zone,
    InstanceType,
    Pool,
    Namespace,
}

/// One group's interruptions.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub group: String,
    pub interruptions: u32,
    /// Of those, drills.
    pub drills: u32,
    pub pods_drained: u32,
    pub pods_late: u32,
    pub jobs_retryable: u32,
    /// The median age of the nodes at their notice, in hours (none when no record says).
    pub median_node_age_hours: Option<f64>,
}

/// Groups the records noticed at or after `since`; the group a record has no label for is
/// `unknown`. By namespace, a record counts in every namespace it drained or marked.
pub fn history(records: &[Record], since: Timestamp, by: By) -> Vec<Row> {
    let mut rows: BTreeMap<String, (Row, Vec<i64>)> = BTreeMap::new();
    for record in records.iter().filter(|r| r.notice_time() >= since) {
        let drill = record.spec.interruption.notice.provider == reclaim_model::Provider::Drill;
        let age = record.spec.node_age_seconds;
        let mut add = |group: &str, drained: u32, late: u32, retryable: u32| {
            let (row, ages) = rows.entry(group.to_owned()).or_insert_with(|| {
                (
                    Row {
                        group: group.to_owned(),
                        ..Row::default()
                    },
                    Vec::new(),
                )
            });
            row.interruptions += 1;
            row.drills += u32::from(drill);
            row.pods_drained = row.pods_drained.saturating_add(drained);
            row.pods_late = row.pods_late.saturating_add(late);
            row.jobs_retryable = row.jobs_retryable.saturating_add(retryable);
            ages.extend(age);
        };
        let placement = &record.spec.placement;
        let label = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
        match by {
            By::Zone => add(
                &label(&placement.zone),
                record.pods_total,
                record.late,
                record.retryable,
            ),
            By::InstanceType => add(
                &label(&placement.instance_type),
                record.pods_total,
                record.late,
                record.retryable,
            ),
            By::Pool => add(
                &label(&placement.node_pool),
                record.pods_total,
                record.late,
                record.retryable,
            ),
            By::Namespace => {
                let mut namespaces: Vec<&String> = record
                    .pods_by_namespace
                    .keys()
                    .chain(record.retryable_by_namespace.keys())
                    .collect();
                namespaces.sort();
                namespaces.dedup();
                for ns in namespaces {
                    let (drained, late) = record
                        .pods_by_namespace
                        .get(ns)
                        .copied()
                        .unwrap_or_default();
                    let retryable = record
                        .retryable_by_namespace
                        .get(ns)
                        .copied()
                        .unwrap_or_default();
                    add(ns, drained, late, retryable);
                }
            }
        }
    }
    rows.into_values()
        .map(|(mut row, mut ages)| {
            row.median_node_age_hours = median(&mut ages).map(|s| s / 3600.0);
            row
        })
        .collect()
}

fn median(values: &mut [i64]) -> Option<f64> {
    values.sort_unstable();
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2] as f64),
        _ => Some((values[n / 2 - 1] as f64 + values[n / 2] as f64) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::tests::record;

    #[test]
    fn records_are_counted_per_group_within_the_window() {
        let records = vec![
            record(
                "a",
                "us-east-1a",
                "m5.xlarge",
                "aws",
                "2026-12-07T01:00:00Z",
                3600,
                4,
                1,
                2,
            ),
            record(
                "b",
                "us-east-1a",
                "m5.xlarge",
                "drill",
                "2026-12-07T02:00:00Z",
                7200,
                2,
                0,
                1,
            ),
            record(
                "c",
                "us-east-1b",
                "c5.xlarge",
                "aws",
                "2026-12-07T03:00:00Z",
                10800,
                1,
                0,
                0,
            ),
            record(
                "old",
                "us-east-1b",
                "c5.xlarge",
                "aws",
                "2026-11-01T00:00:00Z",
                60,
                9,
                9,
                9,
            ),
        ];
        let since: Timestamp = "2026-12-06T00:00:00Z".parse().unwrap();
        let rows = history(&records, since, By::Zone);
        assert_eq!(rows.len(), 2);
        let a = &rows[0];
        assert_eq!(
            (a.group.as_str(), a.interruptions, a.drills),
            ("us-east-1a", 2, 1)
        );
        assert_eq!((a.pods_drained, a.pods_late, a.jobs_retryable), (6, 1, 3));
        assert_eq!(a.median_node_age_hours, Some(1.5));
        assert_eq!(
            rows[1].interruptions, 1,
            "the old record is outside the window"
        );
        let by_type = history(&records, since, By::InstanceType);
        assert_eq!(
            by_type.iter().map(|r| r.group.as_str()).collect::<Vec<_>>(),
            ["c5.xlarge", "m5.xlarge"]
        );
        let by_namespace = history(&records, since, By::Namespace);
        assert_eq!(by_namespace[0].group, "team-a");
        assert_eq!(by_namespace[0].interruptions, 3);
    }
}
