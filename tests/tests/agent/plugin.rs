//! `kubectl reclaim`, found by kubectl on PATH, reading the records that real drains and
//! drills of the agent wrote: history counts equal the records, advise ranks the zones (or
//! says it has not enough data), drill and cancel go through the plugin.

use super::*;
use reclaim_testbed::agent::RunningAgent;
use serde_json::Value;

fn binaries() -> Result<std::path::PathBuf> {
    reclaim_testbed::process::workspace_binaries("kubectl-reclaim")
}

/// `kubectl reclaim <args>`: stdout, or the failure with stderr.
fn reclaim(args: &[&str]) -> Result<String> {
    let mut all = vec!["reclaim"];
    all.extend_from_slice(args);
    let (code, out, err) = ControlPlane::shared().kubectl_with_plugins(&binaries()?, &all)?;
    anyhow::ensure!(
        code == 0,
        "kubectl reclaim {} exited {code}: {err}",
        args.join(" ")
    );
    Ok(out)
}

fn json(args: &[&str]) -> Result<Value> {
    let mut all = args.to_vec();
    all.extend_from_slice(&["-o", "json"]);
    Ok(serde_json::from_str(&reclaim(&all)?)?)
}

async fn agent_on(
    k: &TestKubelet,
    node: &str,
    zone: &str,
    instance_type: &str,
) -> Result<(Simulator, RunningAgent)> {
    k.register_node(
        TestNode::spot(node)
            .label("topology.kubernetes.io/zone", zone)
            .label("node.kubernetes.io/instance-type", instance_type),
    )
    .await?;
    let sim = simulator().await?;
    let agent = start_agent(node, &sim.url(), &["--safety-margin", "5s"]).await?;
    agent.ready().await?;
    Ok((sim, agent))
}

#[tokio::test]
async fn kubectl_reclaim_reads_the_records_of_real_drains_and_drills() -> Result<()> {
    ControlPlane::shared().install_interruption_crd()?;
    let k = kubelet("plugin").await?;
    // Zones of this test's own (the other tests' nodes have none).
    let (zone_a, zone_b) = (format!("{}-a", k.namespace), format!("{}-b", k.namespace));
    let (a, b) = (k.node_name("spot-a"), k.node_name("spot-b"));
    let (_sim_a, agent_a) = agent_on(&k, &a, &zone_a, "m5.xlarge").await?;
    let (sim_b, agent_b) = agent_on(&k, &b, &zone_b, "c5.xlarge").await?;
    k.run_pod(&b, TestPod::new("task").grace_period(1)).await?;
    let _kubelet = Tasks(vec![k.keep_finishing_deletions(&b)]);

    // A reclaim of b, announced by its cloud; a drill on a, through the plugin.
    sim_b
        .state()
        .aws
        .schedule_spot("terminate", Timestamp::now(), SignedDuration::from_secs(20));
    let said = reclaim(&["drill", &a, "--lead", "60s"])?;
    assert!(said.contains("drill started"), "{said}");
    let records = reclaim_service::interruptions::api(k.client());
    let ours = || async {
        Ok::<_, anyhow::Error>(
            records
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .filter(|r| {
                    r.data["spec"]["node"] == a.as_str() || r.data["spec"]["node"] == b.as_str()
                })
                .collect::<Vec<_>>(),
        )
    };
    eventually(WAIT, "b drained and a drilled, on the records", || async {
        // A CRD just installed answers 429 for a moment ("storage is (re)initializing").
        let Ok(records) = ours().await else {
            return Ok(false);
        };
        Ok(records.len() == 2
            && records.iter().any(|r| {
                r.data["spec"]["node"] == b.as_str() && r.data["status"]["phase"] == "Drained"
            })
            && records
                .iter()
                .any(|r| r.data["spec"]["provider"] == "drill"))
    })
    .await?;
    let b_record = ours()
        .await?
        .into_iter()
        .find(|r| r.data["spec"]["node"] == b.as_str())
        .context("b's record")?;
    assert_eq!(
        b_record.data["spec"]["placement"]["zone"],
        zone_b.as_str(),
        "the record says where"
    );
    assert_eq!(
        b_record.data["spec"]["placement"]["instanceType"],
        "c5.xlarge"
    );
    assert!(
        b_record.data["spec"]["nodeAgeSeconds"]
            .as_i64()
            .is_some_and(|s| (0..600).contains(&s))
    );
    assert!(
        b_record.data["spec"]["warningSeconds"]
            .as_i64()
            .is_some_and(|s| (10..=20).contains(&s))
    );

    // The agent observed the node's age with the notice, labelled where the node is.
    assert_eq!(
        agent_b.metric("reclaim_node_age_at_notice_seconds_count"),
        1.0
    );
    assert_eq!(
        agent_b.metric_sum(
            "reclaim_notices_total",
            &[("zone", zone_b.as_str()), ("instance_type", "c5.xlarge")]
        ),
        1.0
    );

    // History: one row per zone, counts as the records say.
    let history = json(&["history", "--since", "1h", "--by", "zone"])?;
    let row = |zone: &str| {
        history
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["group"] == zone)
            .cloned()
    };
    let row_b = row(&zone_b).context("b's zone in the history")?;
    assert_eq!(
        (row_b["interruptions"].as_u64(), row_b["drills"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(
        row_b["podsDrained"],
        b_record.data["status"]["drain"]["podsTotal"]
    );
    assert_eq!(row_b["podsLate"], 0);
    let row_a = row(&zone_a).context("a's zone in the history")?;
    assert_eq!(
        (row_a["interruptions"].as_u64(), row_a["drills"].as_u64()),
        (Some(1), Some(1))
    );
    let by_type = json(&["history", "--since", "1h", "--by", "instance-type"])?;
    assert!(
        by_type
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["group"] == "c5.xlarge")
    );
    let table = reclaim(&["history", "--since", "1h"])?;
    assert!(
        table.starts_with("ZONE") && table.contains(&zone_b),
        "{table}"
    );

    // Advise: minutes of history are not enough by default; ranked when asked to be.
    let thin = json(&["advise", "--since", "1h"])?;
    let zones = |advice: &Value| -> Vec<(String, String)> {
        advice["zones"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["group"] == zone_a.as_str() || r["group"] == zone_b.as_str())
            .map(|r| {
                (
                    r["group"].as_str().unwrap_or("").to_owned(),
                    r["verdict"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    };
    assert!(
        zones(&thin).iter().all(|(_, v)| v == "not enough data"),
        "{thin}"
    );
    assert_eq!(zones(&thin).len(), 2);
    let ranked = json(&["advise", "--since", "1h", "--min-node-hours", "0.0001"])?;
    // a saw a drill, not a reclaim: it ranks before b, which was reclaimed.
    let order: Vec<String> = zones(&ranked).into_iter().map(|(z, _)| z).collect();
    assert_eq!(order, [zone_a.clone(), zone_b.clone()], "{ranked}");
    let text = reclaim(&["advise", "--since", "1h", "--min-node-hours", "0.0001"])?;
    assert!(
        text.contains("Not enough data") || text.contains("Run the next job in"),
        "{text}"
    );

    // Status, and calling the drill off through the plugin.
    let status = json(&["status"])?;
    assert!(
        status["drills"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|d| d["node"] == a.as_str()),
        "{status}"
    );
    reclaim(&["drill", &a, "--cancel"])?;
    // The drill had drained a (nothing to move): its record keeps that phase, and the node
    // is given back.
    eventually(
        WAIT,
        "the drill called off, the node given back",
        || async {
            let node = k.nodes().get(&a).await?;
            Ok(!node.annotations().contains_key("reclaim.dev/drill")
                && reclaim_taints(&node).is_empty())
        },
    )
    .await?;
    // kubectl lists the plugin it found on PATH.
    let (_, listed, _) =
        ControlPlane::shared().kubectl_with_plugins(&binaries()?, &["plugin", "list"])?;
    assert!(listed.contains("kubectl-reclaim"), "{listed}");
    agent_a.stop().await?;
    agent_b.stop().await?;
    Ok(())
}

#[test]
fn kubectl_reclaim_refuses_bad_usage_with_exit_code_2() -> Result<()> {
    let (code, _, err) = ControlPlane::shared()
        .kubectl_with_plugins(&binaries()?, &["reclaim", "history", "--by", "colour"])?;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("colour"), "{err}");
    Ok(())
}
