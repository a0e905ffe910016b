//! `kubectl reclaim`: Reclaim's kubectl plugin. `history` and `advise` read the Interruption
//! records (and the Nodes) to say where spot reclaims happen and where to run next; `drill`
//! and `status` rehearse and watch. Installed as `kubectl-reclaim` on PATH.
//!
//! Exit codes: 0 done, 1 failed, 2 bad usage, 3 Reclaim is not installed (no Interruption
//! CRD), 4 not allowed (the server said 403).

mod advise;
mod cluster;
mod history;
mod output;
mod records;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use jiff::{SignedDuration, Timestamp};

use crate::cluster::Failure;
use crate::output::{Format, structured, table};

#[derive(Debug, Parser)]
#[command(
    name = "kubectl reclaim",
    bin_name = "kubectl reclaim",
    version,
    about = "Where spot reclaims happen, where to run next, and drills: from Reclaim's Interruption records"
)]
struct Cli {
    /// The kubeconfig context to use (default: the current one).
    #[arg(long, global = true)]
    context: Option<String>,
    /// Output format.
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        default_value = "table",
        global = true
    )]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Interruptions, pods drained and late, jobs marked retryable, median node age: per group.
    History {
        /// How far back (`7d`, `12h`).
        #[arg(long, default_value = "7d", value_parser = reclaim_service::parse_duration)]
        since: Duration,
        #[arg(long, value_enum, default_value = "zone")]
        by: history::By,
    },
    /// Zones and instance types ranked by interruptions per node-hour; where to pin the next job.
    Advise {
        #[arg(long, default_value = "30d", value_parser = reclaim_service::parse_duration)]
        since: Duration,
        /// Only nodes of this instance type.
        #[arg(long)]
        instance_type: Option<String>,
        /// `aws ec2 get-spot-placement-scores` output (JSON): scores below 6 are flagged.
        #[arg(long)]
        scores: Option<std::path::PathBuf>,
        /// A group with fewer node-hours than this is "not enough data".
        #[arg(long, default_value_t = 24.0)]
        min_node_hours: f64,
    },
    /// Rehearse a spot reclaim of NODE (needs "create" on drills.reclaim.dev), or call it off.
    Drill {
        node: String,
        /// The notice (`45s`, `2m`; 15 s to 1 h); the cloud's usual one if not given.
        #[arg(long, conflicts_with = "cancel")]
        lead: Option<String>,
        /// Call the drill off and give the node back.
        #[arg(long)]
        cancel: bool,
    },
    /// Agents per node, notices and drills under way, the classifier's leader.
    Status {
        /// Where Reclaim runs.
        #[arg(long, default_value = "reclaim-system")]
        namespace: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(Failure::NotInstalled) => {
            eprintln!(
                "error: Reclaim is not installed in this cluster: the server does not serve interruptions.reclaim.dev (install it: helm install reclaim charts/reclaim)"
            );
            ExitCode::from(3)
        }
        Err(Failure::Forbidden(why)) => {
            eprintln!("error: not allowed: {why}");
            ExitCode::from(4)
        }
        Err(Failure::Other(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn since(window: Duration, now: Timestamp) -> Result<Timestamp, Failure> {
    SignedDuration::try_from(window)
        .ok()
        .and_then(|w| now.checked_sub(w).ok())
        .ok_or_else(|| {
            Failure::Other(anyhow::anyhow!(
                "--since {window:?} reaches before the year -9999"
            ))
        })
}

async fn run(cli: Cli) -> Result<String, Failure> {
    let client = cluster::client(cli.context.as_deref()).await?;
    let now = Timestamp::now();
    match cli.command {
        Command::History { since: window, by } => {
            let records = cluster::records(&client).await?;
            let rows = history::history(&records, since(window, now)?, by);
            if let Some(text) = structured(cli.output, &rows)? {
                return Ok(text);
            }
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.group.clone(),
                        r.interruptions.to_string(),
                        r.drills.to_string(),
                        r.pods_drained.to_string(),
                        r.pods_late.to_string(),
                        r.jobs_retryable.to_string(),
                        r.median_node_age_hours
                            .map_or("-".into(), |h| format!("{h:.1}h")),
                    ]
                })
                .collect();
            let group = format!("{by:?}").to_uppercase();
            Ok(table(
                &[
                    &group,
                    "INTERRUPTIONS",
                    "DRILLS",
                    "PODS",
                    "LATE",
                    "RETRYABLE",
                    "MEDIAN-NODE-AGE",
                ],
                &cells,
            ))
        }
        Command::Advise {
            since: window,
            instance_type,
            scores,
            min_node_hours,
        } => {
            let scores = match scores {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
                    Some(
                        advise::Scores::parse(&text)
                            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
                    )
                }
                None => None,
            };
            let records = cluster::records(&client).await?;
            let nodes = cluster::nodes(&client).await?;
            let spans = advise::spans(&nodes, &records, now);
            let advice = advise::advise(
                &spans,
                &records,
                since(window, now)?,
                now,
                instance_type.as_deref(),
                min_node_hours,
                scores.as_ref(),
            );
            if let Some(text) = structured(cli.output, &advice)? {
                return Ok(text);
            }
            Ok(advice_text(&advice))
        }
        Command::Drill { node, lead, cancel } => {
            cluster::drill(&client, &node, lead.as_deref(), cancel).await?;
            Ok(if cancel {
                format!("drill on {node} called off; the node is given back\n")
            } else {
                format!(
                    "drill started on {node}: kubectl get interruptions -l reclaim.dev/provider=drill\n"
                )
            })
        }
        Command::Status { namespace } => {
            let status = cluster::status(&client, &namespace).await?;
            if let Some(text) = structured(cli.output, &status)? {
                return Ok(text);
            }
            let agents: Vec<Vec<String>> = status
                .agents
                .iter()
                .map(|a| {
                    vec![
                        a.node.clone(),
                        a.pod.clone(),
                        if a.ready { "ready" } else { "not ready" }.into(),
                    ]
                })
                .collect();
            let mut out = table(&["NODE", "AGENT", "STATE"], &agents);
            for (what, notes) in [("notice", &status.notices), ("drill", &status.drills)] {
                for n in notes {
                    out += &format!("{what} on {}: {}\n", n.node, n.value);
                }
            }
            out += &format!(
                "classifier leader: {}\n",
                status.classifier_leader.as_deref().unwrap_or("none")
            );
            Ok(out)
        }
    }
}

fn advice_text(advice: &advise::Advice) -> String {
    let mut out = String::new();
    for (title, ratings) in [
        ("ZONE", &advice.zones),
        ("INSTANCE-TYPE", &advice.instance_types),
    ] {
        let cells: Vec<Vec<String>> = ratings
            .iter()
            .map(|r| {
                vec![
                    r.group.clone(),
                    r.interruptions.to_string(),
                    format!("{:.1}", r.node_hours),
                    r.per_1000_node_hours
                        .map_or_else(|| r.verdict.clone(), |x| format!("{x:.2}")),
                    r.placement_score.map_or("-".into(), |s| s.to_string()),
                    r.notes.join("; "),
                ]
            })
            .collect();
        out += &table(
            &[
                title,
                "INTERRUPTIONS",
                "NODE-HOURS",
                "PER-1000-NODE-HOURS",
                "SCORE",
                "NOTE",
            ],
            &cells,
        );
        out += "\n";
    }
    match &advice.recommendation {
        Some(r) => {
            out += &format!("Run the next job in {}: {}.\n\nPod spec:\n", r.zone, r.why);
            out += &format!(
                "affinity: {}\n",
                serde_json::to_string(&r.affinity).unwrap_or_default()
            );
            out += &format!("Spark: --conf {}\n", r.spark_conf.join(" --conf "));
            out += &format!(
                "SparkApplication spec: {}\n",
                serde_json::to_string(&r.spark_application).unwrap_or_default()
            );
        }
        None => {
            out += &format!(
                "Not enough data to advise: no zone has {} node-hours of history (lower --min-node-hours to rank thinner ones).\n",
                advice.min_node_hours
            )
        }
    }
    out
}
